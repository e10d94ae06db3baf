use super::*;
use proptest::prelude::*;

fn user(text: &str) -> ClassifierInput<'_> {
    ClassifierInput {
        system: "",
        last_user: text,
        context_chars: text.chars().count(),
        n_messages: 1,
        has_tools: false,
        json_mode: false,
        has_images: false,
    }
}

fn classify(text: &str) -> Classification {
    Classifier::builtin().classify(&user(text))
}

#[test]
fn builtin_weights_load() {
    let c = Classifier::builtin();
    assert!(c.version().starts_with("tc1-"), "{}", c.version());
    assert_eq!(c.version().len(), 4 + 16);
    // The same bytes give the same version.
    let again = Classifier::from_bytes(BUILTIN_BYTES).unwrap();
    assert_eq!(again.version(), c.version());
    assert!(
        BUILTIN_BYTES.len() < 1024 * 1024,
        "weights should stay under 1 MB"
    );
}

/// Obvious requests, written for this test (not taken from the training material).
const OBVIOUS: &[(TaskType, &str)] = &[
    (
        TaskType::Code,
        "Write a Python function that returns the factorial of n using recursion.",
    ),
    (
        TaskType::Code,
        "Why does my JavaScript code print undefined?\n\nfunction f() { let x = 1; }\nconsole.log(f());",
    ),
    (TaskType::Code, "How do I sort a HashMap by value in Rust?"),
    (
        TaskType::Code,
        "Write a SQL query that lists all customers who placed more than three orders last month.",
    ),
    (TaskType::Math, "What is 348 multiplied by 27?"),
    (TaskType::Math, "Solve for x: 5x - 7 = 3x + 9."),
    (
        TaskType::Math,
        "Tom has 3 times as many marbles as Jerry. Together they have 48 marbles. How many does Jerry have?",
    ),
    (TaskType::Math, "Find the derivative of x^4 - 2x^2 + 7."),
    (
        TaskType::Summarization,
        "Summarize this article in two sentences:\n\nThe city council met on Thursday to discuss the \
         new budget. After a long debate, members agreed to increase spending on public parks by \
         ten percent while cutting the road maintenance budget. The mayor said the decision \
         reflects what residents asked for in last year's survey. Opposition members warned that \
         potholes would get worse. The budget takes effect in January.",
    ),
    (
        TaskType::Summarization,
        "Can you give me a brief summary of the following report?\n\nSales in the third quarter \
         rose by 8 percent compared with the same period last year, driven mainly by strong demand \
         in Asia. Costs also increased because of higher shipping prices. The company expects the \
         fourth quarter to be similar and keeps its forecast for the full year unchanged.",
    ),
    (
        TaskType::Extraction,
        "Extract all the person names and dates from this text: On 4 May, Laura Chen met David \
         Okafor in Lagos; they signed the agreement on 9 May.",
    ),
    (
        TaskType::Extraction,
        "Return a JSON object with the fields name, email and phone from this signature: \
         Best, Peter Novak | peter.novak@example.org | +1 555 0100",
    ),
    (
        TaskType::Classification,
        "Classify the sentiment of this review as positive, negative or neutral: The food was cold \
         and the waiter was rude.",
    ),
    (
        TaskType::Classification,
        "Is this email spam or not spam? 'Congratulations, you won a free cruise! Click the link to \
         claim it now.'",
    ),
    (
        TaskType::Translation,
        "Translate into Spanish: Where is the nearest train station?",
    ),
    (
        TaskType::Translation,
        "Please translate this sentence to German: I would like a cup of coffee.",
    ),
    (
        TaskType::Translation,
        "Translate to English: Je ne sais pas où se trouve la gare.",
    ),
    (
        TaskType::CreativeWriting,
        "Write a poem about the sea at sunrise.",
    ),
    (
        TaskType::CreativeWriting,
        "Write a short story about a robot who wants to become a chef.",
    ),
    (
        TaskType::Rewriting,
        "Rewrite this email to sound more professional: hey, cant make it tmrw, lets do next week",
    ),
    (
        TaskType::Rewriting,
        "Fix the grammar in this sentence: She don't like going to school on mondays.",
    ),
    (
        TaskType::OpenQa,
        "Who was the first person to walk on the Moon?",
    ),
    (TaskType::OpenQa, "What is the capital of Portugal?"),
    (TaskType::OpenQa, "How do volcanoes form?"),
    (
        TaskType::ClosedQa,
        "Based on the passage below, when did the museum open?\n\nPassage: The Riverside Museum \
         was designed by Zaha Hadid and opened to the public in June 2011. It houses Glasgow's \
         transport collection and won the European Museum of the Year award in 2013.",
    ),
    (
        TaskType::ClosedQa,
        "Context: The company was founded in 1998 by two engineers in Oslo. It now employs 400 \
         people and sells marine sensors worldwide.\n\nQuestion: According to the context, where \
         was the company founded?",
    ),
    (
        TaskType::Brainstorming,
        "Give me 10 ideas for a company team-building day.",
    ),
    (
        TaskType::Brainstorming,
        "Brainstorm some names for my new pet hamster.",
    ),
    (TaskType::Chat, "Hi! How are you doing today?"),
    (TaskType::Chat, "Thanks, that was really helpful!"),
    (TaskType::Chat, "I'm feeling a bit lonely tonight."),
];

#[test]
fn obvious_examples_classify_correctly() {
    let mut failures = Vec::new();
    for &(want, text) in OBVIOUS {
        let c = classify(text);
        if c.task != want {
            failures.push(format!(
                "{text:?}: want {}, got {} ({:.2})",
                want.as_str(),
                c.task.as_str(),
                c.confidence
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "misclassified:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_class_has_an_obvious_example() {
    for t in TaskType::ALL {
        assert!(OBVIOUS.iter().any(|&(c, _)| c == t), "{}", t.as_str());
    }
}

#[test]
fn system_prompt_carries_the_task() {
    let c = Classifier::builtin().classify(&ClassifierInput {
        system: "You are a translator. Translate everything the user writes into Italian.",
        last_user: "The meeting has been moved to Thursday afternoon.",
        context_chars: 120,
        n_messages: 2,
        ..ClassifierInput::default()
    });
    assert_eq!(c.task, TaskType::Translation, "{c:?}");
}

#[test]
fn probabilities_sum_to_one_and_confidence_is_the_max() {
    for &(_, text) in OBVIOUS {
        let c = classify(text);
        let sum: f32 = c.probs.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "{sum}");
        assert_eq!(c.confidence, c.probs[c.task.index()]);
        assert!(c.probs.iter().all(|&p| p <= c.confidence));
    }
}

#[test]
fn classification_is_deterministic() {
    let text = "Summarize the main points of our call and list the action items.";
    let a = classify(text);
    let b = classify(text);
    assert_eq!(a, b);
    let fresh = Classifier::from_bytes(BUILTIN_BYTES).unwrap();
    assert_eq!(fresh.classify(&user(text)), a);
}

#[test]
fn empty_input_is_chat_with_low_confidence() {
    for text in ["", "   \n\t ", "?!..."] {
        let c = classify(text);
        assert_eq!(c.task, TaskType::Chat, "{text:?}");
        assert_eq!(c.confidence, EMPTY_INPUT_CHAT_PROB);
        assert!(c.confidence < 0.3);
        let sum: f32 = c.probs.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5);
        assert!(Classifier::builtin().logits(&user(text)).is_none());
    }
    // A system prompt alone is text to classify.
    let c = Classifier::builtin().classify(&ClassifierInput {
        system: "Translate the user's text into French.",
        ..ClassifierInput::default()
    });
    assert_ne!(c.confidence, EMPTY_INPUT_CHAT_PROB);
}

#[test]
fn confident_on_clear_cases_less_on_vague_ones() {
    let clear = classify("Translate into French: I love reading books in the garden.");
    assert!(clear.confidence > 0.8, "{clear:?}");
    let vague = classify("help");
    assert!(vague.confidence < clear.confidence, "{vague:?}");
}

#[test]
fn huge_prompts_are_capped_not_rejected() {
    let doc = "The committee reviewed the annual report and discussed the budget. ".repeat(20_000);
    let text = format!("Summarize the following document:\n\n{doc}");
    let c = classify(&text);
    assert!(c.probs.iter().all(|p| p.is_finite()));
    let sum: f32 = c.probs.iter().sum();
    assert!((sum - 1.0).abs() < 1e-4);
    assert_eq!(c.task, TaskType::Summarization, "{c:?}");
}

#[test]
fn from_bytes_rejects_bad_files() {
    assert_eq!(
        Classifier::from_bytes(b"nope").unwrap_err(),
        ClassifierError::Truncated
    );
    assert_eq!(
        Classifier::from_bytes(b"NOTAMODELFILE....").unwrap_err(),
        ClassifierError::BadMagic
    );
    // Truncated weights.
    let cut = &BUILTIN_BYTES[..BUILTIN_BYTES.len() - 1];
    assert_eq!(
        Classifier::from_bytes(cut).unwrap_err(),
        ClassifierError::Truncated
    );
    // Trailing bytes.
    let mut long = BUILTIN_BYTES.to_vec();
    long.push(0);
    assert!(matches!(
        Classifier::from_bytes(&long).unwrap_err(),
        ClassifierError::Invalid(_)
    ));
    // Another featuriser version.
    let mut other = BUILTIN_BYTES.to_vec();
    other[8..12].copy_from_slice(&(features::FEATURIZER_VERSION + 1).to_le_bytes());
    assert!(matches!(
        Classifier::from_bytes(&other).unwrap_err(),
        ClassifierError::FeaturizerVersion { .. }
    ));
}

#[test]
fn raw_model_round_trips() {
    let raw = RawModel::from_bytes(BUILTIN_BYTES).unwrap();
    assert_eq!(raw.to_bytes(), BUILTIN_BYTES);
    let small = RawModel {
        buckets_log2: 10,
        temperature: 1.5,
        weight_scale: 0.01,
        bias: [0.5; N_CLASSES],
        weights: vec![3; (1 << 10) * N_CLASSES],
    };
    let c = Classifier::from_bytes(&small.to_bytes()).unwrap();
    // Equal weights and biases everywhere: a uniform answer, first class on ties.
    let out = c.classify(&user("anything at all"));
    assert!(out.probs.iter().all(|&p| (p - 1.0 / 12.0).abs() < 1e-6));
    assert_eq!(out.task, TaskType::Code);
}

#[test]
fn untrained_fallback_is_uniform() {
    let c = Classifier::untrained();
    assert_eq!(c.version(), "untrained");
    let out = c.classify(&user("hello there"));
    assert!(out.probs.iter().all(|&p| (p - 1.0 / 12.0).abs() < 1e-6));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_input_gives_a_distribution(
        system in "\\PC{0,200}",
        text in "\\PC{0,2000}",
        n_messages in 0usize..50,
        has_tools: bool,
        json_mode: bool,
        has_images: bool,
    ) {
        let input = ClassifierInput {
            system: &system,
            last_user: &text,
            context_chars: system.len() + text.len() + 17,
            n_messages,
            has_tools,
            json_mode,
            has_images,
        };
        let c = Classifier::builtin().classify(&input);
        let sum: f32 = c.probs.iter().sum();
        prop_assert!((sum - 1.0).abs() < 1e-4);
        prop_assert!(c.probs.iter().all(|p| p.is_finite() && *p >= 0.0));
        prop_assert_eq!(c.confidence, c.probs[c.task.index()]);
        prop_assert_eq!(Classifier::builtin().classify(&input), c);
    }
}
