//! The featuriser: the ONE function that turns a request into hashed features, used both by
//! inference ([`super::Classifier::classify`]) and by the training example
//! (`examples/train_classifier.rs`), so there is no train/serve skew.
//!
//! Text is tokenised byte by byte without allocating: runs of ASCII letters/digits (lowercased)
//! and two-byte UTF-8 letters (Latin-1 lowercased) form words; every other non-space character
//! (ASCII punctuation, CJK characters, symbols, emoji) is a token of its own; newlines and
//! indentation are tokens; digit-only words collapse to a shape token by length (`<num1>`..`<num4+>`).
//! Each token is FNV-1a-hashed on the fly and mixed into a namespace, giving four feature groups:
//!
//! * `Body`: unigrams and bigrams of the last user message (with start/end markers),
//! * `System`: unigrams and bigrams of the system text,
//! * `Edge`: unigrams and bigrams of the first and of the last [`EDGE_TOKENS`] tokens of the
//!   last user message (where instructions live: "Summarize this: ..." / "... Translate to German."),
//! * `Struct`: bucketed structural facts (lengths, message count, tools, JSON mode, images,
//!   densities of newlines, digits, code punctuation and non-ASCII bytes, final character).
//!
//! Text groups are L2-normalised (each feature weighs `1/sqrt(n)` for the `n` features its
//! group emitted), structural features weigh 1. Long texts are capped (first
//! [`USER_HEAD_BYTES`] + last [`USER_TAIL_BYTES`] of the user message, first
//! [`SYSTEM_HEAD_BYTES`] + last [`SYSTEM_TAIL_BYTES`] of the system text), so the cost is linear
//! in the prompt size up to the cap and constant after it.
//!
//! Changing anything here changes the features: bump [`FEATURIZER_VERSION`] and retrain.

use super::ClassifierInput;

/// Stored in the weights file; a weights file made for another featuriser is rejected.
pub const FEATURIZER_VERSION: u32 = 2;
/// Bytes featurised from the start of the last user message.
pub const USER_HEAD_BYTES: usize = 8 * 1024;
/// Bytes featurised from the end of the last user message (when it is longer than head + tail).
pub const USER_TAIL_BYTES: usize = 2 * 1024;
/// Bytes featurised from the start of the system text.
pub const SYSTEM_HEAD_BYTES: usize = 3 * 1024;
/// Bytes featurised from the end of the system text.
pub const SYSTEM_TAIL_BYTES: usize = 1024;
/// Tokens at each edge of the user message that also feed the `Edge` group.
pub const EDGE_TOKENS: usize = 16;
/// Number of feature groups.
pub const N_GROUPS: usize = 4;

/// Feature groups; each has its own normalisation (see [`GroupCounts::values`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Group {
    Body = 0,
    System = 1,
    Edge = 2,
    Struct = 3,
}

/// Receives every feature as a 32-bit hash; the model reduces it to a bucket.
pub trait FeatureSink {
    fn add(&mut self, group: Group, hash: u32);
}

/// What [`featurize`] emitted: features per group and word tokens seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCounts {
    pub features: [u32; N_GROUPS],
    /// Word tokens (letters/digits/CJK; not punctuation) in the user and system text. Zero
    /// means there is nothing to classify.
    pub words: u32,
}

impl GroupCounts {
    /// The value every feature of a group carries: `1/sqrt(n)` for the text groups (an
    /// L2-normalised bag), 1 for structural features.
    pub fn values(&self) -> [f32; N_GROUPS] {
        let norm = |n: u32| if n == 0 { 0.0 } else { 1.0 / (n as f32).sqrt() };
        [
            norm(self.features[0]),
            norm(self.features[1]),
            norm(self.features[2]),
            1.0,
        ]
    }
}

// Namespaces (arbitrary odd constants) keep the groups' hashes apart.
const NS_BODY_UNI: u32 = 0x1b87_3593;
const NS_BODY_BI: u32 = 0x2c1b_3c6d;
const NS_SYS_UNI: u32 = 0x3e12_1a95;
const NS_SYS_BI: u32 = 0x4d2f_9b17;
const NS_HEAD_UNI: u32 = 0x5bd1_e995;
const NS_HEAD_BI: u32 = 0x6a09_e667;
const NS_TAIL_UNI: u32 = 0x7f4a_7c15;
const NS_TAIL_BI: u32 = 0x8ebc_6af1;
const NS_STRUCT: u32 = 0x9e37_79b9;

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// Language names (lowercased ASCII). Each becomes the one token `<lang>`, so "into Swahili"
/// looks like "into French" even if no training example named Swahili.
const LANGUAGE_NAMES: [&str; 112] = [
    "afrikaans",
    "albanian",
    "amharic",
    "arabic",
    "armenian",
    "azerbaijani",
    "basque",
    "belarusian",
    "bengali",
    "bosnian",
    "bulgarian",
    "burmese",
    "cantonese",
    "catalan",
    "cebuano",
    "chinese",
    "croatian",
    "czech",
    "danish",
    "dutch",
    "english",
    "esperanto",
    "estonian",
    "farsi",
    "filipino",
    "finnish",
    "flemish",
    "french",
    "galician",
    "georgian",
    "german",
    "greek",
    "gujarati",
    "haitian",
    "hausa",
    "hawaiian",
    "hebrew",
    "hindi",
    "hmong",
    "hungarian",
    "icelandic",
    "igbo",
    "indonesian",
    "irish",
    "italian",
    "japanese",
    "javanese",
    "kannada",
    "kazakh",
    "khmer",
    "korean",
    "kurdish",
    "kyrgyz",
    "lao",
    "latin",
    "latvian",
    "lithuanian",
    "luxembourgish",
    "macedonian",
    "malagasy",
    "malay",
    "malayalam",
    "maltese",
    "mandarin",
    "maori",
    "marathi",
    "mongolian",
    "nepali",
    "norwegian",
    "pashto",
    "persian",
    "polish",
    "portuguese",
    "punjabi",
    "romanian",
    "russian",
    "samoan",
    "serbian",
    "shona",
    "sindhi",
    "sinhala",
    "slovak",
    "slovenian",
    "somali",
    "spanish",
    "sundanese",
    "swahili",
    "swedish",
    "tagalog",
    "tajik",
    "tamil",
    "tatar",
    "telugu",
    "thai",
    "tibetan",
    "turkish",
    "turkmen",
    "ukrainian",
    "urdu",
    "uyghur",
    "uzbek",
    "vietnamese",
    "welsh",
    "xhosa",
    "yiddish",
    "yoruba",
    "zulu",
    "castilian",
    "brazilian",
    "swiss",
    "scots",
    "galego",
];

const fn fnv_str(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < b.len() {
        h = (h ^ b[i] as u32).wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

/// [`LANGUAGE_NAMES`] hashed and sorted, for a binary search per word.
const LANGUAGE_HASHES: [u32; LANGUAGE_NAMES.len()] = {
    let mut a = [0u32; LANGUAGE_NAMES.len()];
    let mut i = 0;
    while i < a.len() {
        a[i] = fnv_str(LANGUAGE_NAMES[i]);
        i += 1;
    }
    // Insertion sort (const context).
    let mut i = 1;
    while i < a.len() {
        let mut j = i;
        while j > 0 && a[j - 1] > a[j] {
            let t = a[j];
            a[j] = a[j - 1];
            a[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    a
};

/// Special token hashes (values chosen to be unlike FNV outputs of short strings; their exact
/// values only matter for stability).
const TOK_BOS: u32 = 0xb05b_05b0;
const TOK_EOS: u32 = 0xe05e_05e0;
const TOK_GAP: u32 = 0x6a96_a960;
const TOK_NL: u32 = 0x0a0a_0a0a;
const TOK_INDENT: u32 = 0x1d1d_1d1d;
const TOK_NUM: [u32; 4] = [0x4e00_0001, 0x4e00_0002, 0x4e00_0003, 0x4e00_0004];
const TOK_LANG: u32 = 0x1a46_1a46;

#[inline]
fn fnv_step(h: u32, b: u8) -> u32 {
    (h ^ u32::from(b)).wrapping_mul(FNV_PRIME)
}

/// MurmurHash3's 32-bit finaliser.
#[inline]
fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[inline]
fn uni(ns: u32, t: u32) -> u32 {
    fmix(t ^ ns)
}

#[inline]
fn bi(ns: u32, a: u32, b: u32) -> u32 {
    fmix(fmix(a ^ ns).wrapping_add(b.wrapping_mul(0x9e37_79b1)))
}

#[inline]
fn structural(id: u32, bucket: u32) -> u32 {
    fmix(fmix(id ^ NS_STRUCT).wrapping_add(bucket))
}

/// Byte statistics of the featurised user text.
#[derive(Default, Clone, Copy)]
struct Stats {
    bytes: u32,
    newlines: u32,
    digits: u32,
    code_punct: u32,
    non_ascii: u32,
    words: u32,
}

/// Length of the UTF-8 sequence starting with lead byte `b` (1 for a stray continuation byte,
/// which cannot happen in a `&str` we cut at char boundaries).
#[inline]
fn utf8_len(b: u8) -> usize {
    match b {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

/// The word being read.
struct Word {
    hash: u32,
    len: usize,
    all_digits: bool,
}

impl Word {
    fn new() -> Word {
        Word {
            hash: FNV_OFFSET,
            len: 0,
            all_digits: true,
        }
    }

    #[inline]
    fn flush(&mut self, stats: &mut Stats, emit: &mut impl FnMut(u32)) {
        if self.len > 0 {
            emit(if self.all_digits {
                TOK_NUM[self.len.min(4) - 1]
            } else if self.len <= 13 && LANGUAGE_HASHES.binary_search(&self.hash).is_ok() {
                TOK_LANG
            } else {
                self.hash
            });
            stats.words += 1;
        }
        *self = Word::new();
    }
}

/// Tokenises `text`, calling `emit` with each token's hash. Allocation-free.
fn tokenize(text: &[u8], stats: &mut Stats, emit: &mut impl FnMut(u32)) {
    let n = text.len();
    let mut i = 0;
    let mut w = Word::new();
    stats.bytes += n as u32;

    while i < n {
        let b = text[i];
        if b.is_ascii_alphanumeric() {
            if b.is_ascii_digit() {
                stats.digits += 1;
            } else {
                w.all_digits = false;
            }
            w.hash = fnv_step(w.hash, b.to_ascii_lowercase());
            w.len += 1;
            i += 1;
            continue;
        }
        if (0xc3..=0xdf).contains(&b) {
            // Two-byte letters: Latin-1 supplement letters, Latin extended, Greek, Cyrillic,
            // Hebrew, Arabic. Lowercase Latin-1 capitals (U+00C0..U+00DE except U+00D7).
            let mut c = text.get(i + 1).copied().unwrap_or(0x80);
            if b == 0xc3 && (0x80..=0x9e).contains(&c) && c != 0x97 {
                c += 0x20;
            }
            w.hash = fnv_step(fnv_step(w.hash, b), c);
            w.len += 1;
            w.all_digits = false;
            stats.non_ascii += 2;
            i += 2;
            continue;
        }
        w.flush(stats, emit);
        match b {
            b'\n' => {
                stats.newlines += 1;
                emit(TOK_NL);
                let mut j = i + 1;
                while j < n && (text[j] == b' ' || text[j] == b'\t') {
                    j += 1;
                }
                if j - (i + 1) >= 2 {
                    emit(TOK_INDENT);
                }
                i = j;
            }
            b' ' | b'\t' | b'\r' | 0x0b | 0x0c => i += 1,
            0x00..=0x7f => {
                if matches!(
                    b,
                    b'{' | b'}' | b'(' | b')' | b'[' | b']' | b';' | b'=' | b'<' | b'>' | b'_'
                ) {
                    stats.code_punct += 1;
                }
                emit(fnv_step(FNV_OFFSET, b));
                i += 1;
            }
            _ => {
                // Any other character (CJK, symbols, emoji, typographic punctuation) is a
                // token of its own. Characters in scripts without spaces count as words.
                let len = utf8_len(b).min(n - i);
                let mut h = FNV_OFFSET;
                for &c in &text[i..i + len] {
                    h = fnv_step(h, c);
                }
                emit(h);
                stats.non_ascii += len as u32;
                if len >= 3 && b >= 0xe3 {
                    stats.words += 1;
                }
                i += len;
            }
        }
    }
    w.flush(stats, emit);
}

/// The capped view of a text: `(head, tail)`, where `tail` is empty unless the text is longer
/// than `head_cap + tail_cap`. Both are cut at char boundaries.
fn capped(s: &str, head_cap: usize, tail_cap: usize) -> (&[u8], &[u8]) {
    if s.len() <= head_cap + tail_cap {
        return (s.as_bytes(), &[]);
    }
    let mut h = head_cap;
    while !s.is_char_boundary(h) {
        h -= 1;
    }
    let mut t = s.len() - tail_cap;
    while !s.is_char_boundary(t) {
        t += 1;
    }
    (&s.as_bytes()[..h], &s.as_bytes()[t..])
}

struct Counting<'a, S: FeatureSink> {
    sink: &'a mut S,
    counts: [u32; N_GROUPS],
}

impl<S: FeatureSink> Counting<'_, S> {
    #[inline]
    fn add(&mut self, g: Group, h: u32) {
        self.counts[g as usize] += 1;
        self.sink.add(g, h);
    }
}

fn log2_bucket(x: u64, max: u32) -> u32 {
    if x == 0 { 0 } else { (x.ilog2() + 1).min(max) }
}

/// Bucket of `part / whole` in per-mille steps: 0, <1%, <2%, <5%, <10%, <20%, <40%, more.
fn ratio_bucket(part: u32, whole: u32) -> u32 {
    if part == 0 || whole == 0 {
        return 0;
    }
    let pm = u64::from(part) * 1000 / u64::from(whole);
    match pm {
        0..10 => 1,
        10..20 => 2,
        20..50 => 3,
        50..100 => 4,
        100..200 => 5,
        200..400 => 6,
        _ => 7,
    }
}

/// Featurises a request, sending every feature to `sink`. Deterministic and allocation-free.
pub fn featurize<S: FeatureSink>(input: &ClassifierInput<'_>, sink: &mut S) -> GroupCounts {
    let mut c = Counting {
        sink,
        counts: [0; N_GROUPS],
    };

    // The last user message: body, head edge and tail edge.
    let mut stats = Stats::default();
    let mut prev = TOK_BOS;
    let mut pos = 0usize;
    let mut ring = [0u32; EDGE_TOKENS];
    {
        let (head, tail) = capped(input.last_user, USER_HEAD_BYTES, USER_TAIL_BYTES);
        let mut on_token = |t: u32| {
            c.add(Group::Body, uni(NS_BODY_UNI, t));
            c.add(Group::Body, bi(NS_BODY_BI, prev, t));
            if pos < EDGE_TOKENS {
                c.add(Group::Edge, uni(NS_HEAD_UNI, t));
                c.add(Group::Edge, bi(NS_HEAD_BI, prev, t));
            }
            ring[pos % EDGE_TOKENS] = t;
            pos += 1;
            prev = t;
        };
        tokenize(head, &mut stats, &mut on_token);
        if !tail.is_empty() {
            on_token(TOK_GAP);
            tokenize(tail, &mut stats, &mut on_token);
        }
    }
    if pos > 0 {
        c.add(Group::Body, bi(NS_BODY_BI, prev, TOK_EOS));
        let n_tail = pos.min(EDGE_TOKENS);
        let mut tprev = if pos <= EDGE_TOKENS { TOK_BOS } else { 0 };
        for k in 0..n_tail {
            let t = ring[(pos - n_tail + k) % EDGE_TOKENS];
            c.add(Group::Edge, uni(NS_TAIL_UNI, t));
            if k > 0 || pos <= EDGE_TOKENS {
                c.add(Group::Edge, bi(NS_TAIL_BI, tprev, t));
            }
            tprev = t;
        }
        c.add(Group::Edge, bi(NS_TAIL_BI, tprev, TOK_EOS));
    }

    // The system text.
    let mut sys_stats = Stats::default();
    {
        let (head, tail) = capped(input.system, SYSTEM_HEAD_BYTES, SYSTEM_TAIL_BYTES);
        let mut sprev = TOK_BOS;
        let mut spos = 0usize;
        let mut on_token = |t: u32| {
            c.add(Group::System, uni(NS_SYS_UNI, t));
            c.add(Group::System, bi(NS_SYS_BI, sprev, t));
            // Also in the body's namespace: "Translate into French" means the same in the
            // system text as in the user message, and the user side has far more examples.
            c.add(Group::System, uni(NS_BODY_UNI, t));
            c.add(Group::System, bi(NS_BODY_BI, sprev, t));
            // And the opening tokens as an instruction opening ("Translate the following...").
            if spos < EDGE_TOKENS {
                c.add(Group::System, uni(NS_HEAD_UNI, t));
                c.add(Group::System, bi(NS_HEAD_BI, sprev, t));
            }
            spos += 1;
            sprev = t;
        };
        tokenize(head, &mut sys_stats, &mut on_token);
        if !tail.is_empty() {
            on_token(TOK_GAP);
            tokenize(tail, &mut sys_stats, &mut on_token);
        }
    }

    // Structural features.
    let user_len = input.last_user.len();
    let sys_len = input.system.len();
    let extra = input.context_chars.saturating_sub(user_len + sys_len);
    c.add(
        Group::Struct,
        structural(1, log2_bucket(user_len as u64, 16)),
    );
    c.add(
        Group::Struct,
        structural(2, log2_bucket(sys_len as u64, 14)),
    );
    c.add(Group::Struct, structural(3, log2_bucket(extra as u64, 16)));
    c.add(
        Group::Struct,
        structural(4, log2_bucket(input.n_messages as u64, 5)),
    );
    if input.has_tools {
        c.add(Group::Struct, structural(5, 1));
    }
    if input.json_mode {
        c.add(Group::Struct, structural(6, 1));
    }
    if input.has_images {
        c.add(Group::Struct, structural(7, 1));
    }
    c.add(
        Group::Struct,
        structural(8, log2_bucket(u64::from(stats.newlines), 6)),
    );
    c.add(
        Group::Struct,
        structural(9, ratio_bucket(stats.digits, stats.bytes)),
    );
    c.add(
        Group::Struct,
        structural(10, ratio_bucket(stats.code_punct, stats.bytes)),
    );
    c.add(
        Group::Struct,
        structural(11, ratio_bucket(stats.non_ascii, stats.bytes)),
    );
    let last = input
        .last_user
        .trim_end()
        .as_bytes()
        .last()
        .copied()
        .unwrap_or(0);
    let last_class = match last {
        0 => 0,
        b'?' => 1,
        b':' => 2,
        b'.' => 3,
        b'!' => 4,
        b'}' | b')' | b']' | b';' => 5,
        b'"' | b'\'' | b'`' => 6,
        c if c.is_ascii_alphanumeric() => 7,
        _ => 8,
    };
    c.add(Group::Struct, structural(12, last_class));

    GroupCounts {
        features: c.counts,
        words: stats.words + sys_stats.words,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(Vec<(Group, u32)>);
    impl FeatureSink for Collect {
        fn add(&mut self, group: Group, hash: u32) {
            self.0.push((group, hash));
        }
    }

    fn input<'a>(system: &'a str, user: &'a str) -> ClassifierInput<'a> {
        ClassifierInput {
            system,
            last_user: user,
            context_chars: system.len() + user.len(),
            n_messages: 1 + usize::from(!system.is_empty()),
            has_tools: false,
            json_mode: false,
            has_images: false,
        }
    }

    fn tokens(s: &str) -> Vec<u32> {
        let mut v = Vec::new();
        tokenize(s.as_bytes(), &mut Stats::default(), &mut |t| v.push(t));
        v
    }

    fn fnv(s: &str) -> u32 {
        s.bytes().fold(FNV_OFFSET, fnv_step)
    }

    #[test]
    fn tokenizer_lowercases_splits_punctuation_and_collapses_numbers() {
        assert_eq!(
            tokens("Hello, WORLD 42!"),
            vec![fnv("hello"), fnv(","), fnv("world"), TOK_NUM[1], fnv("!")]
        );
        assert_eq!(
            tokens("x1 12345 snake_case"),
            vec![fnv("x1"), TOK_NUM[3], fnv("snake"), fnv("_"), fnv("case")]
        );
        // Latin-1 capitals lowercase; CJK characters are tokens of their own.
        assert_eq!(tokens("ÉTÉ"), tokens("été"));
        assert_eq!(tokens("翻译").len(), 2);
        // Language names are one token.
        assert_eq!(tokens("into Swahili"), vec![fnv("into"), TOK_LANG]);
        assert_eq!(tokens("French"), tokens("german"));
        // Newline and indentation tokens.
        assert_eq!(
            tokens("a\n    b"),
            vec![fnv("a"), TOK_NL, TOK_INDENT, fnv("b")]
        );
    }

    #[test]
    fn capping_cuts_at_char_boundaries() {
        let s = "é".repeat(10_000);
        let (h, t) = capped(&s, USER_HEAD_BYTES, USER_TAIL_BYTES);
        assert!(std::str::from_utf8(h).is_ok());
        assert!(std::str::from_utf8(t).is_ok());
        assert!(h.len() <= USER_HEAD_BYTES && t.len() <= USER_TAIL_BYTES);
        assert!(h.len() >= USER_HEAD_BYTES - 1 && t.len() >= USER_TAIL_BYTES - 1);
        let short = "abc";
        assert_eq!(capped(short, 8, 8), (short.as_bytes(), &[][..]));
    }

    #[test]
    fn long_inputs_are_bounded() {
        let long = "word ".repeat(100_000);
        let mut sink = Collect(Vec::new());
        let counts = featurize(&input("", &long), &mut sink);
        // (8 KB + 2 KB) / 5 bytes per word, two body features each, plus the gap.
        assert!(counts.features[Group::Body as usize] < 4_200);
        assert_eq!(sink.0.len() as u32, counts.features.iter().sum::<u32>());
    }

    /// Golden test: the featuriser's output must not change without a FEATURIZER_VERSION bump
    /// and a retrain. If you changed the featuriser on purpose, bump the version, retrain and
    /// update these numbers.
    #[test]
    fn featurizer_is_stable() {
        let mut sink = Collect(Vec::new());
        let inp = ClassifierInput {
            system: "You are a helpful assistant.",
            last_user: "Summarize the following article in 3 sentences:\n\n    Prices rose 4.5% in März; 東京 said \"no\".",
            context_chars: 500,
            n_messages: 3,
            has_tools: true,
            json_mode: false,
            has_images: false,
        };
        let counts = featurize(&inp, &mut sink);
        let digest = sink.0.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &(g, x)| {
            (h ^ (u64::from(x) << 8 | g as u64)).wrapping_mul(0x0100_0000_01b3)
        });
        assert_eq!(counts.features, [55, 36, 64, 10]);
        assert_eq!(counts.words, 22);
        assert_eq!(digest, 18_097_416_478_464_770_137);
    }
}
