//! `kairos eval routing`: replay a dataset of prompts with known per-model outcomes through the
//! real router and report quality retained against cost saved (see `docs/routing.md (offline evaluation)`).
//!
//! This module is the CLI glue: it reads the JSONL, classifies the prompts with the built-in
//! classifier, picks the quality estimates (built-in priors, or fitted on a training split),
//! drives the bar sweep with a progress bar, prints the tables and writes `--json` / `--plot`.
//! The computations are in [`kairos_router::eval`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kairos_api::openai::{ChatMessage, Role};
use kairos_core::catalog::Catalog;
use kairos_router::TaskType;
use kairos_router::classifier::{Classifier, ClassifierInput};
use kairos_router::eval::{
    self, BarRun, FIT_PRIOR_WEIGHT, Line, Model, Outcome, Prompt, QualityRow, Report, TaskRow,
};
use kairos_router::funnel::Prices;
use kairos_router::quality::{QualityTable, expected_output_tokens};
use serde::{Deserialize, Serialize};

/// `kairos eval ...`
#[derive(Debug, Subcommand)]
pub enum EvalCmd {
    /// Replay prompts with known per-model outcomes through the router at a sweep of quality
    /// bars; report quality retained vs cost saved (docs/routing.md (offline evaluation)).
    Routing(RoutingArgs),
}

/// `kairos eval routing` options.
#[derive(Debug, Clone, Args)]
pub struct RoutingArgs {
    /// The dataset: JSONL, an optional meta line then one prompt per line (docs/routing.md (offline evaluation)).
    #[arg(long)]
    pub data: PathBuf,
    /// The baseline model [default: the meta line's `reference`, else the best on average].
    #[arg(long)]
    pub reference: Option<String>,
    /// Only route among these models (comma-separated) [default: all the dataset's].
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Fit per-(model, task) quality on a training split even when the built-in priors cover
    /// the models (always done when they do not).
    #[arg(long)]
    pub fit: bool,
    /// Fraction of the prompts used to fit quality estimates; only the rest is evaluated.
    #[arg(long, default_value_t = 0.5)]
    pub split: f64,
    /// Seed of the (hash-based, order-independent) train/test split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of quality bars, evenly spaced over [0, 1].
    #[arg(long, default_value_t = 101)]
    pub steps: usize,
    /// Also write the full report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw quality vs cost (router, single models, oracle, zero router) to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also evaluate warm routing (the signal loop): replay the training split as traffic with
    /// feedback on the chosen model only and exploration on, then route the test split on the
    /// learned state; swept over the value of a good answer (the value rule).
    #[arg(long)]
    pub warm: bool,
    /// Share of training decisions that explore (Thompson sampling) in the warm replay
    /// [default: the gateway's default, `[routing.learning] explore`].
    #[arg(long)]
    pub explore: Option<f64>,
    /// Range of the value of a good answer swept by --warm, in USD, as LO:HI (8 steps per decade).
    #[arg(long, default_value = "0.0001:1")]
    pub values: String,
}

/// Runs `kairos eval ...`; errors are printed to stderr.
pub fn run(cmd: EvalCmd) -> ExitCode {
    let EvalCmd::Routing(args) = cmd;
    match routing(&args, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "kairos eval routing: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The dataset

/// The optional first line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaLine {
    #[serde(rename = "kind")]
    _kind: serde::de::IgnoredAny,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    models: BTreeMap<String, MetaModel>,
    #[serde(default)]
    reference: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaModel {
    #[serde(default)]
    input_usd_per_mtok: Option<f64>,
    #[serde(default)]
    output_usd_per_mtok: Option<f64>,
}

/// One prompt line. Unknown fields are ignored (keep your own columns, e.g. a subject).
#[derive(Debug, Deserialize)]
struct RecordLine {
    id: String,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    input_tokens: Option<u64>,
    /// The request's output cap (`max_tokens`), if it had one: the router budgets
    /// `min(expected output for the task, max_tokens)`, as the gateway does.
    #[serde(default)]
    max_tokens: Option<u64>,
    outcomes: BTreeMap<String, OutcomeLine>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeLine {
    quality: f64,
    #[serde(default)]
    output_tokens: Option<u64>,
}

/// What the router sees of a prompt.
#[derive(Debug, Default)]
struct Text {
    system: String,
    last_user: String,
    chars: usize,
    n_messages: usize,
    has_images: bool,
}

#[derive(Debug)]
struct Record {
    line: usize,
    id: String,
    text: Text,
    task: Option<TaskType>,
    input_tokens: Option<u64>,
    max_tokens: Option<u64>,
    outcomes: BTreeMap<String, OutcomeLine>,
}

/// A parsed dataset: its models (with prices) and prompts, before classification.
#[derive(Debug)]
pub struct Dataset {
    pub name: Option<String>,
    pub models: Vec<Model>,
    /// Where each model's prices came from (`meta line` or `catalog`).
    pub price_sources: Vec<&'static str>,
    pub reference: usize,
    records: Vec<Record>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

fn usd_to_micros(usd: f64, what: &str) -> Result<u64, String> {
    if usd.is_finite() && usd >= 0.0 {
        Ok((usd * 1e6).round() as u64)
    } else {
        Err(format!("{what}: a price must be a number of USD >= 0"))
    }
}

fn text_of(r: &RecordLine) -> Result<Text, String> {
    match (&r.prompt, &r.messages) {
        (Some(_), Some(_)) => Err("give `prompt` or `messages`, not both".into()),
        (Some(p), None) => Ok(Text {
            last_user: p.clone(),
            chars: p.len(),
            n_messages: 1,
            ..Text::default()
        }),
        (None, Some(msgs)) => {
            // As the gateway reads a chat request (kairos_core::routing).
            let mut t = Text {
                n_messages: msgs.len(),
                ..Text::default()
            };
            for m in msgs {
                let Some(c) = &m.content else { continue };
                let text = c.text();
                t.chars += text.len();
                t.has_images |= c.has_images();
                match m.role {
                    Role::System | Role::Developer => {
                        if !t.system.is_empty() {
                            t.system.push('\n');
                        }
                        t.system.push_str(&text);
                    }
                    Role::User => t.last_user = text.into_owned(),
                    Role::Assistant | Role::Tool | Role::Function => {}
                }
            }
            Ok(t)
        }
        (None, None) if r.task.is_some() => Ok(Text::default()),
        (None, None) => {
            Err("no `prompt` or `messages` to classify (or give a `task` label)".into())
        }
    }
}

/// Parses the JSONL (see `docs/routing.md (offline evaluation)`). `only`: keep these models; `reference`: the
/// `--reference` flag. Prices not on the meta line come from `catalog`.
pub fn parse_dataset(
    src: &str,
    catalog: &Catalog,
    only: Option<&[String]>,
    reference: Option<&str>,
) -> Result<Dataset, String> {
    let mut meta: Option<MetaLine> = None;
    let mut records = Vec::new();
    let mut ids = HashSet::new();
    for (i, raw) in src.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| format!("line {line}: not JSON: {e}"))?;
        if v.get("kind").and_then(|k| k.as_str()) == Some("meta") {
            if meta.is_some() || !records.is_empty() {
                return Err(format!(
                    "line {line}: the meta line must be the first line, once"
                ));
            }
            meta = Some(
                serde_json::from_value(v).map_err(|e| format!("line {line}: meta line: {e}"))?,
            );
            continue;
        }
        let r: RecordLine = serde_json::from_value(v).map_err(|e| format!("line {line}: {e}"))?;
        let text = text_of(&r).map_err(|e| format!("line {line} (id {:?}): {e}", r.id))?;
        let task = match &r.task {
            Some(t) => Some(TaskType::parse(t).ok_or_else(|| {
                format!(
                    "line {line}: unknown task {t:?} (expected one of {})",
                    TaskType::ALL.map(TaskType::as_str).join(", ")
                )
            })?),
            None => None,
        };
        if !ids.insert(r.id.clone()) {
            return Err(format!("line {line}: duplicate id {:?}", r.id));
        }
        for (m, o) in &r.outcomes {
            if !(o.quality.is_finite() && (0.0..=1.0).contains(&o.quality)) {
                return Err(format!(
                    "line {line}: outcome of {m:?}: quality must be in [0, 1]"
                ));
            }
        }
        records.push(Record {
            line,
            id: r.id,
            text,
            task,
            input_tokens: r.input_tokens,
            max_tokens: r.max_tokens,
            outcomes: r.outcomes,
        });
    }
    if records.is_empty() {
        return Err("no prompts in the dataset".into());
    }
    let meta_models = meta.as_ref().map(|m| &m.models);
    // The models: the meta line's, else every model with an outcome; narrowed by `only`.
    let mut names: Vec<String> = match meta_models {
        Some(m) if !m.is_empty() => m.keys().cloned().collect(),
        _ => records
            .iter()
            .flat_map(|r| r.outcomes.keys().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    if let Some(only) = only {
        for o in only {
            if !names.contains(o) {
                return Err(format!(
                    "--models: {o:?} is not a model of the dataset ({})",
                    names.join(", ")
                ));
            }
        }
        names.retain(|n| only.contains(n));
    }
    if names.is_empty() {
        return Err("no models".into());
    }
    let mut models = Vec::new();
    let mut price_sources = Vec::new();
    for name in &names {
        let given = meta_models.and_then(|m| m.get(name));
        let catalog_price = catalog.get(name).and_then(|e| e.price);
        let given = given.map(|g| (g.input_usd_per_mtok, g.output_usd_per_mtok));
        let (input, output, source) = match (given, catalog_price) {
            (Some((Some(i), Some(o))), _) => (
                usd_to_micros(i, name)?,
                usd_to_micros(o, name)?,
                "meta line",
            ),
            (Some((Some(_), None) | (None, Some(_))), _) => {
                return Err(format!(
                    "meta line: {name:?}: give both input_usd_per_mtok and output_usd_per_mtok"
                ));
            }
            (_, Some(p)) => (p.input, p.output, "catalog"),
            (_, None) => {
                return Err(format!(
                    "no price for {name:?}: it is not in the built-in catalog; give input_usd_per_mtok and output_usd_per_mtok on the meta line"
                ));
            }
        };
        models.push(Model {
            name: name.clone(),
            prices: Prices { input, output },
        });
        price_sources.push(source);
    }
    for r in &records {
        if let Some(missing) = names.iter().find(|n| !r.outcomes.contains_key(*n)) {
            return Err(format!(
                "line {} (id {:?}): no outcome for {missing:?}",
                r.line, r.id
            ));
        }
    }
    let wanted = reference
        .map(str::to_owned)
        .or_else(|| meta.as_ref().and_then(|m| m.reference.clone()));
    let reference = match wanted {
        Some(w) => names.iter().position(|n| *n == w).ok_or_else(|| {
            format!(
                "reference model {w:?} is not among the models ({})",
                names.join(", ")
            )
        })?,
        // The best on average over the whole file (ties: the dearer one).
        None => {
            let mean = |m: &str| {
                records
                    .iter()
                    .filter_map(|r| r.outcomes.get(m))
                    .map(|o| o.quality)
                    .sum::<f64>()
            };
            (0..names.len())
                .max_by(|&a, &b| {
                    mean(&names[a])
                        .total_cmp(&mean(&names[b]))
                        .then(models[a].prices.input.cmp(&models[b].prices.input))
                })
                .unwrap_or(0)
        }
    };
    Ok(Dataset {
        name: meta.and_then(|m| m.name),
        models,
        price_sources,
        reference,
        records,
    })
}

/// The gateway's input-token estimate (kairos_core::routing): ≈ 4 bytes per token plus 4 per
/// message.
fn estimate_input_tokens(t: &Text) -> u64 {
    (t.chars as u64).div_ceil(4) + 4 * t.n_messages as u64
}

/// Classifies (or takes the label of) every record and attaches the outcomes in model order.
fn classify(
    ds: &Dataset,
    classifier: &Classifier,
    progress: &ProgressBar,
    embed: bool,
) -> Vec<Prompt> {
    let embedder = kairos_router::embed::Embedder::builtin();
    ds.records
        .iter()
        .map(|r| {
            let (task, confidence, probs) = match r.task {
                Some(t) => {
                    let mut p = [0.0; 12];
                    p[t.index()] = 1.0;
                    (t, 1.0, p)
                }
                None => {
                    let c = classifier.classify(&ClassifierInput {
                        system: &r.text.system,
                        last_user: &r.text.last_user,
                        context_chars: r.text.chars,
                        n_messages: r.text.n_messages,
                        has_tools: false,
                        json_mode: false,
                        has_images: r.text.has_images,
                    });
                    (c.task, c.confidence, c.probs)
                }
            };
            let est_output_tokens = u64::from(expected_output_tokens(task))
                .min(r.max_tokens.unwrap_or(u64::MAX))
                .max(1);
            let outcomes = ds
                .models
                .iter()
                .map(|m| {
                    let o = &r.outcomes[&m.name];
                    Outcome {
                        quality: o.quality,
                        output_tokens: o.output_tokens.unwrap_or(est_output_tokens),
                    }
                })
                .collect();
            progress.inc(1);
            Prompt {
                id: r.id.clone(),
                task,
                confidence,
                probs,
                input_tokens: r
                    .input_tokens
                    .unwrap_or_else(|| estimate_input_tokens(&r.text)),
                est_output_tokens,
                outcomes,
                // What the gateway embeds: the last user message (else the system prompt).
                embedding: if !embed {
                    Vec::new()
                } else if r.text.last_user.is_empty() {
                    embedder.embed_vec(&r.text.system)
                } else {
                    embedder.embed_vec(&r.text.last_user)
                },
            }
        })
        .collect()
}

/// How the router's quality estimates were obtained.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum QualitySource {
    /// The built-in priors (catalog models); every prompt is evaluated.
    Priors { provenance: String },
    /// Fitted per (model, task) on the training split; only the test split is evaluated.
    Fit {
        train_fraction: f64,
        seed: u64,
        prior_weight: f64,
    },
}

/// Built-in priors per model (resolved through the catalog's aliases), if every model has some.
fn builtin_quality(models: &[Model], catalog: &Catalog) -> Option<Vec<QualityRow>> {
    let table = QualityTable::builtin();
    let mut rows = Vec::new();
    for m in models {
        let id = catalog
            .get(&m.name)
            .map_or(m.name.as_str(), |e| e.id.as_str());
        let mut row = [None; 12];
        for t in TaskType::ALL {
            row[t.index()] = table.get(id, t).map(|q| (q.mean, q.std));
        }
        if row.iter().all(Option::is_none) {
            return None;
        }
        rows.push(row);
    }
    Some(rows)
}

// ---------------------------------------------------------------------------------------------
// The command

/// The `--json` document.
#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    data: String,
    name: Option<&'a str>,
    price_sources: Vec<(&'a str, &'static str)>,
    /// The built-in classifier's version (results depend on it unless every prompt has a label).
    classifier: &'a str,
    quality_source: &'a QualitySource,
    n_train: usize,
    n_test: usize,
    steps: usize,
    /// Per routing task: prompts, observed mean outcome and the router's estimate per model (in
    /// the order of `report.models`).
    tasks: &'a [TaskRow],
    report: &'a Report,
    /// `--warm`: the value-rule sweeps with learning (warm) and without (task-level estimates).
    #[serde(skip_serializing_if = "Option::is_none")]
    warm: Option<&'a WarmReport>,
}

/// `--warm` results.
#[derive(Debug, Serialize)]
pub struct WarmReport {
    pub explore: f64,
    pub learner: kairos_router::learn::LearnConfig,
    pub embedder: String,
    /// Learned per-prompt estimates from the replayed training traffic (feedback on the chosen
    /// model only).
    pub warm: eval::ValueSweep,
    /// Task-level estimates fitted on every training outcome of every model (no per-prompt
    /// signal), same value rule.
    pub cold: eval::ValueSweep,
    pub n_train: usize,
    pub n_test: usize,
}

/// Parses `LO:HI` (USD).
fn parse_values(s: &str) -> Result<(f64, f64), String> {
    let bad = || format!("--values {s}: expected LO:HI, two positive amounts of USD with LO < HI");
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let lo: f64 = a.trim().parse().map_err(|_| bad())?;
    let hi: f64 = b.trim().parse().map_err(|_| bad())?;
    if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && hi > lo) {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// Runs `f` over `items` on every core (the sweep's points are independent).
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|sc| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| sc.spawn(|| c.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// The `--warm` sweeps on the split's prompts.
fn warm_report(
    args: &RoutingArgs,
    ds: &Dataset,
    train: &[Prompt],
    test: &[Prompt],
    fitted: &[QualityRow],
) -> Result<WarmReport, String> {
    let (lo, hi) = parse_values(&args.values)?;
    let mut learn = kairos_router::learn::LearnConfig::default();
    if let Some(e) = args.explore {
        if !(0.0..=1.0).contains(&e) {
            return Err("--explore must be in [0, 1]".into());
        }
        learn.explore = e;
    }
    let embedder = kairos_router::embed::Embedder::builtin();
    // Production traffic is not sorted: replay the training prompts in a seeded random order.
    let mut train = train.to_vec();
    train.sort_by(|a, b| {
        eval::split_unit(&a.id, args.seed ^ 0x5eed)
            .total_cmp(&eval::split_unit(&b.id, args.seed ^ 0x5eed))
    });
    // Priors: the built-in ones where every model has them, else none (0.5, weak).
    let priors = builtin_quality(&ds.models, &Catalog::builtin())
        .unwrap_or_else(|| vec![[None; 12]; ds.models.len()]);
    let base = eval::candidates(&ds.models, &priors);
    let values = eval::value_grid(lo, hi, 8);
    let pb = progress_bar(values.len(), "warm replay", args.quiet);
    let warm_runs = par_map(&values, |&v| {
        let r = eval::warm_run(&train, test, &base, learn, v, args.seed);
        pb.inc(1);
        r
    });
    pb.finish_and_clear();
    let cold_cands = eval::candidates(&ds.models, fitted);
    let cold_runs: Vec<_> = values
        .iter()
        .map(|&v| eval::cold_value_run(test, &cold_cands, v))
        .collect();
    Ok(WarmReport {
        explore: learn.explore,
        learner: learn,
        embedder: embedder.version().to_owned(),
        warm: eval::value_sweep(test, &ds.models, ds.reference, &warm_runs),
        cold: eval::value_sweep(test, &ds.models, ds.reference, &cold_runs),
        n_train: train.len(),
        n_test: test.len(),
    })
}

/// The `--warm` section of the text report.
fn render_warm(w: &WarmReport, ds: &Dataset) -> String {
    let (n_train, n_test) = (w.n_train, w.n_test);
    let mut s = String::new();
    let names: Vec<&str> = ds.models.iter().map(|m| short(&m.name)).collect();
    let _ = writeln!(
        s,
        "\nWarm routing (the signal loop; value rule: the candidate with the highest value x quality - cost)"
    );
    let _ = writeln!(
        s,
        "  replay: {n_train} training prompts as traffic, feedback on the chosen model only, {:.0}% exploration (Thompson sampling);",
        w.explore * 100.0
    );
    let _ = writeln!(
        s,
        "  then {n_test} test prompts routed on the learned state (no exploration, no learning); embeddings: {}",
        w.embedder
    );
    let _ = writeln!(
        s,
        "  learner: k={} neighbours, shrink {} outcomes to the task level, prior worth <= {} outcomes",
        w.learner.k, w.learner.knn_shrink, w.learner.prior_cap
    );
    let _ = writeln!(
        s,
        "  {:>10}  {:>8} {:>8}  {:>8} {:>8}  {:>13}  {:>8}  observed ({})",
        "value $",
        "retained",
        "saved",
        "cold ret",
        "cold sav",
        "calls",
        "explored",
        names.join(" / ")
    );
    for (r, c) in w.warm.rows.iter().zip(&w.cold.rows) {
        let calls: Vec<String> = r.line.calls_pct.iter().map(|x| format!("{x:.1}")).collect();
        let obs: Vec<String> = r.observed.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            s,
            "  {:>10.5}  {:>8} {:>8}  {:>8} {:>8}  {:>13}  {:>8}  {}",
            r.value_usd,
            opt_pct(r.line.retained_pct),
            opt_pct(r.line.saved_pct),
            opt_pct(c.line.retained_pct),
            opt_pct(c.line.saved_pct),
            calls.join(" / "),
            r.explored,
            obs.join(" / ")
        );
    }
    let head = |label: &str, sw: &eval::ValueSweep| {
        let f = |r: &Option<eval::ValueRow>| match r {
            Some(r) => format!(
                "{} saved (value ${:.5}, {} retained)",
                opt_pct(r.line.saved_pct),
                r.value_usd,
                opt_pct(r.line.retained_pct)
            ),
            None => "no point reaches it".into(),
        };
        format!(
            "  {label}: at >= 95% of reference quality {}; at >= 99% {}\n",
            f(&sw.at_95),
            f(&sw.at_99)
        )
    };
    s.push_str("\nHeadline (value sweep, max cost saved vs always-reference)\n");
    s.push_str(&head("with learning (warm)", &w.warm));
    s.push_str(&head("without learning (task-level fit)", &w.cold));
    s
}

fn progress_bar(len: usize, msg: &'static str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    // Draws on stderr, and only when stderr is a terminal.
    let pb = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg:>11} [{bar:40}] {pos}/{len} ({eta})") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg);
    pb
}

/// `kairos eval routing`, printing the tables to `out`.
fn routing(args: &RoutingArgs, out: &mut dyn std::io::Write) -> Result<(), String> {
    if !(args.split > 0.0 && args.split < 1.0) {
        return Err("--split must be in (0, 1)".into());
    }
    if args.steps < 2 {
        return Err("--steps must be at least 2".into());
    }
    if let Some(p) = &args.plot
        && !p.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg"))
    {
        return Err(format!(
            "--plot {}: only SVG is supported (name the file *.svg)",
            p.display()
        ));
    }
    let src = std::fs::read_to_string(&args.data)
        .map_err(|e| format!("cannot read {}: {e}", args.data.display()))?;
    let catalog = Catalog::builtin();
    let ds = parse_dataset(
        &src,
        &catalog,
        args.models.as_deref(),
        args.reference.as_deref(),
    )
    .map_err(|e| format!("{}: {e}", args.data.display()))?;

    let pb = progress_bar(ds.len(), "classifying", args.quiet);
    let prompts = classify(&ds, Classifier::builtin(), &pb, args.warm);
    pb.finish_and_clear();

    let priors = if args.fit {
        None
    } else {
        builtin_quality(&ds.models, &catalog)
    };
    let (source, quality, train, test) = match priors {
        Some(q) => (
            QualitySource::Priors {
                provenance: QualityTable::builtin().source().to_owned(),
            },
            q,
            Vec::new(),
            prompts,
        ),
        None => {
            let (train, test): (Vec<Prompt>, Vec<Prompt>) = prompts
                .into_iter()
                .partition(|p| eval::in_train(&p.id, args.seed, args.split));
            if train.is_empty() || test.is_empty() {
                return Err(format!(
                    "the split left {} prompts to fit and {} to evaluate: use more data or another --split",
                    train.len(),
                    test.len()
                ));
            }
            let q = eval::fit_quality(&train, ds.models.len());
            let s = QualitySource::Fit {
                train_fraction: args.split,
                seed: args.seed,
                prior_weight: FIT_PRIOR_WEIGHT,
            };
            (s, q, train, test)
        }
    };

    let cands = eval::candidates(&ds.models, &quality);
    let bars: Vec<f64> = (0..args.steps)
        .map(|i| i as f64 / (args.steps - 1) as f64)
        .collect();
    let pb = progress_bar(bars.len() * test.len(), "routing", args.quiet);
    let runs: Vec<BarRun> = bars
        .iter()
        .map(|&bar| {
            let r = eval::run_bar(&test, &cands, bar, ds.reference);
            pb.inc(test.len() as u64);
            r
        })
        .collect();
    pb.finish_and_clear();

    let report = eval::report(&test, &ds.models, ds.reference, &runs);
    let tasks = eval::task_breakdown(&train, &test, &quality);
    let warm = if args.warm {
        let (tr, te) = if train.is_empty() {
            // Priors covered the models: split now (learning needs a training half).
            test.iter()
                .cloned()
                .partition(|p| eval::in_train(&p.id, args.seed, args.split))
        } else {
            (train.clone(), test.clone())
        };
        if tr.is_empty() || te.is_empty() {
            return Err("--warm: the split left no training or no test prompts".into());
        }
        let fitted = eval::fit_quality(&tr, ds.models.len());
        Some(warm_report(args, &ds, &tr, &te, &fitted)?)
    } else {
        None
    };
    let mut text = render(&args.data, &ds, &source, train.len(), &tasks, &report);
    if let Some(w) = &warm {
        text.push_str(&render_warm(w, &ds));
    }
    out.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write the report: {e}"))?;

    if let Some(path) = &args.json {
        let doc = JsonReport {
            data: args.data.display().to_string(),
            name: ds.name.as_deref(),
            price_sources: ds
                .models
                .iter()
                .map(|m| m.name.as_str())
                .zip(ds.price_sources.iter().copied())
                .collect(),
            classifier: Classifier::builtin().version(),
            quality_source: &source,
            n_train: train.len(),
            n_test: test.len(),
            steps: args.steps,
            tasks: &tasks,
            report: &report,
            warm: warm.as_ref(),
        };
        let json = serde_json::to_string_pretty(&doc).map_err(|e| format!("JSON: {e}"))?;
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let title = ds.name.clone().unwrap_or_else(|| file_name(&args.data));
        let svg = plot_svg(&report, &title)?;
        std::fs::write(path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Text output

fn opt_pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}%"))
}

fn opt_num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

fn usd(v: f64) -> String {
    if v >= 100.0 {
        format!("${v:.0}")
    } else if v >= 1.0 {
        format!("${v:.2}")
    } else {
        format!("${v:.4}")
    }
}

fn calls(l: &Line) -> String {
    l.calls_pct
        .iter()
        .map(|c| format!("{c:.1}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Consecutive bars with the same outcome (quality, cost, calls), merged.
struct Merged {
    first_bar: f64,
    last_bar: f64,
    row: usize,
    bar_met_lo: f64,
    bar_met_hi: f64,
}

fn merged_rows(report: &Report) -> Vec<Merged> {
    let mut out: Vec<Merged> = Vec::new();
    for (i, row) in report.sweep.iter().enumerate() {
        match out.last_mut() {
            Some(last) if report.sweep[last.row].line == row.line => {
                last.last_bar = row.bar;
                last.bar_met_lo = last.bar_met_lo.min(row.bar_met_pct);
                last.bar_met_hi = last.bar_met_hi.max(row.bar_met_pct);
            }
            _ => out.push(Merged {
                first_bar: row.bar,
                last_bar: row.bar,
                row: i,
                bar_met_lo: row.bar_met_pct,
                bar_met_hi: row.bar_met_pct,
            }),
        }
    }
    out
}

/// The report as text tables.
pub fn render(
    data: &Path,
    ds: &Dataset,
    source: &QualitySource,
    n_train: usize,
    tasks: &[TaskRow],
    r: &Report,
) -> String {
    let mut s = String::new();
    let names: Vec<&str> = ds.models.iter().map(|m| m.name.as_str()).collect();
    let _ = writeln!(
        s,
        "kairos eval routing: {}{}",
        data.display(),
        ds.name
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    );
    let labelled = ds.records.iter().filter(|r| r.task.is_some()).count();
    let _ = writeln!(
        s,
        "  tasks: {} prompts classified by the built-in classifier ({}), {labelled} labelled in the data",
        ds.len() - labelled,
        Classifier::builtin().version()
    );
    match source {
        QualitySource::Fit {
            train_fraction,
            seed,
            prior_weight,
        } => {
            let _ = writeln!(
                s,
                "  {} prompts: {n_train} fit the quality estimates (--split {train_fraction}, --seed {seed}), {} evaluated",
                n_train + r.n_prompts,
                r.n_prompts
            );
            let _ = writeln!(
                s,
                "  quality estimates: per (model, task) means of the training outcomes, shrunk to the model's mean ({prior_weight} pseudo-observations)"
            );
        }
        QualitySource::Priors { provenance } => {
            let _ = writeln!(s, "  {} prompts, all evaluated", r.n_prompts);
            let _ = writeln!(s, "  quality estimates: built-in priors ({provenance})");
        }
    }
    for (m, src) in ds.models.iter().zip(&ds.price_sources) {
        let _ = writeln!(
            s,
            "  {}: ${}/${} per 1M tokens in/out ({src})",
            m.name,
            m.prices.input as f64 / 1e6,
            m.prices.output as f64 / 1e6
        );
    }
    let _ = writeln!(s, "  reference: {}; cheapest: {}", r.reference, r.cheapest);
    let _ = writeln!(
        s,
        "  calls columns: % of prompts sent to {}",
        names.join(" / ")
    );

    let _ = writeln!(s, "\nSingle models and the oracle (evaluated prompts)");
    let labels: Vec<String> = r
        .models
        .iter()
        .map(|m| {
            let tag = if m.name == r.reference {
                " (reference)"
            } else if m.name == r.cheapest {
                " (cheapest)"
            } else {
                ""
            };
            format!("always {}{tag}", m.name)
        })
        .collect();
    let oracle_label = "oracle (cheapest model with the best outcome)";
    let w = labels
        .iter()
        .map(String::len)
        .chain([oracle_label.len()])
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        s,
        "  {:<w$} {:>8} {:>9} {:>10} {:>7}  calls",
        "line", "quality", "retained", "cost", "saved"
    );
    let mut row = |label: &str, l: &Line| {
        let _ = writeln!(
            s,
            "  {label:<w$} {:>8.4} {:>9} {:>10} {:>7}  {}",
            l.quality,
            opt_pct(l.retained_pct),
            usd(l.cost_usd),
            opt_pct(l.saved_pct),
            calls(l)
        );
    };
    for (m, label) in r.models.iter().zip(&labels) {
        row(label, &m.line);
    }
    row(oracle_label, &r.oracle);

    let two = r.two_model.is_some();
    let _ = writeln!(
        s,
        "\nRouter: the real funnel at each quality bar (consecutive bars with the same outcome merged)"
    );
    let _ = writeln!(
        s,
        "  {:<11} {:>8} {:>9} {:>10} {:>7} {:>13} {:>9}{}  calls",
        "bar",
        "quality",
        "retained",
        "cost",
        "saved",
        "bar met",
        "zero rtr",
        if two { "      PGR" } else { "" }
    );
    for m in merged_rows(r) {
        let row = &r.sweep[m.row];
        let bars = if m.first_bar == m.last_bar {
            format!("{:.2}", m.first_bar)
        } else {
            format!("{:.2}-{:.2}", m.first_bar, m.last_bar)
        };
        let met = if m.bar_met_lo == m.bar_met_hi {
            format!("{:.1}%", m.bar_met_lo)
        } else {
            format!("{:.0}-{:.0}%", m.bar_met_lo, m.bar_met_hi)
        };
        let _ = writeln!(
            s,
            "  {bars:<11} {:>8.4} {:>9} {:>10} {:>7} {met:>13} {:>9}{}  {}",
            row.line.quality,
            opt_pct(row.line.retained_pct),
            usd(row.line.cost_usd),
            opt_pct(row.line.saved_pct),
            opt_num(row.zero_router_quality, 4),
            if two {
                format!(" {:>8}", opt_num(row.pgr, 3))
            } else {
                String::new()
            },
            calls(&row.line)
        );
    }

    let _ = writeln!(s, "\nHeadline (max cost saved vs always-{})", r.reference);
    for (level, op, zero) in [
        (
            95,
            &r.headline.router_at_95,
            r.headline.zero_router_saved_pct_at_95,
        ),
        (
            99,
            &r.headline.router_at_99,
            r.headline.zero_router_saved_pct_at_99,
        ),
    ] {
        let router = op.as_ref().map_or_else(
            || "no bar reaches it".to_owned(),
            |o| {
                format!(
                    "{:.1}% saved (bar {:.2}, {:.1}% retained)",
                    o.saved_pct, o.bar, o.retained_pct
                )
            },
        );
        let _ = writeln!(
            s,
            "  at >= {level}% of reference quality: router {router}; zero router {}",
            opt_pct(zero)
        );
    }
    let _ = writeln!(
        s,
        "  AIQ over {}..{}: router {}, zero router {}",
        usd(r.aiq.cost_lo_usd),
        usd(r.aiq.cost_hi_usd),
        opt_num(r.aiq.router, 4),
        opt_num(r.aiq.zero_router, 4)
    );
    if let Some(t) = &r.two_model {
        let _ = writeln!(
            s,
            "\nRouteLLM metrics (weak {} {:.4}, strong {} {:.4}; x = % of calls to the strong model)",
            t.weak, t.weak_quality, t.strong, t.strong_quality
        );
        let _ = writeln!(
            s,
            "  router:  APGR {}  CPT(20%) {}  CPT(50%) {}  CPT(80%) {}",
            opt_num(t.apgr, 4),
            opt_pct(t.cpt20_pct),
            opt_pct(t.cpt50_pct),
            opt_pct(t.cpt80_pct)
        );
        let _ = writeln!(
            s,
            "  optimal: APGR {}  CPT(50%) {}  CPT(80%) {}   (random mixing: APGR 0.5, CPT(x) = x)",
            opt_num(t.optimal_apgr, 4),
            opt_pct(t.optimal_cpt50_pct),
            opt_pct(t.optimal_cpt80_pct)
        );
    }

    let _ = writeln!(
        s,
        "\nPer routing task: prompts (train/test), observed mean outcome on the test prompts | router's estimate"
    );
    for t in tasks {
        let obs = t
            .observed
            .iter()
            .map(|q| opt_num(*q, 3))
            .collect::<Vec<_>>()
            .join(" / ");
        let est = t
            .estimated
            .iter()
            .map(|q| opt_num(*q, 3))
            .collect::<Vec<_>>()
            .join(" / ");
        let _ = writeln!(
            s,
            "  {:<17} {:>6}/{:<6} {obs} | {est}",
            t.task.as_str(),
            t.n_train,
            t.n_test
        );
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Plot

fn short(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// Quality against cost (as % of always-reference) as an SVG document.
pub fn plot_svg(r: &Report, title: &str) -> Result<String, String> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};

    let ref_cost = r
        .models
        .iter()
        .find(|m| m.name == r.reference)
        .map_or(0.0, |m| m.line.cost_usd);
    if ref_cost <= 0.0 {
        return Err("--plot: the reference model costs nothing on this data".into());
    }
    let x = |c: f64| 100.0 * c / ref_cost;
    let ref_q = r
        .models
        .iter()
        .find(|m| m.name == r.reference)
        .map_or(0.0, |m| m.line.quality);

    let mut router: Vec<(f64, f64)> = r
        .sweep
        .iter()
        .map(|row| (x(row.line.cost_usd), row.line.quality))
        .collect();
    router.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    router.dedup();
    let zero: Vec<(f64, f64)> = r.zero_router.iter().map(|&(c, q)| (x(c), q)).collect();
    let singles: Vec<(String, f64, f64)> = r
        .models
        .iter()
        .map(|m| {
            (
                short(&m.name).to_owned(),
                x(m.line.cost_usd),
                m.line.quality,
            )
        })
        .collect();
    let oracle = (x(r.oracle.cost_usd), r.oracle.quality);

    let all_q = router
        .iter()
        .map(|p| p.1)
        .chain(singles.iter().map(|s| s.2))
        .chain([oracle.1, 0.95 * ref_q]);
    let (qlo, qhi) = all_q.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), q| {
        (a.min(q), b.max(q))
    });
    let pad = ((qhi - qlo) * 0.08).max(0.01);
    let xmax = router
        .iter()
        .map(|p| p.0)
        .chain(singles.iter().map(|s| s.1))
        .fold(100.0f64, f64::max)
        * 1.06;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (820, 520)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| format!("--plot: {e}");
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{title}: quality vs cost"), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..xmax, (qlo - pad)..(qhi + pad))
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(format!("cost, % of always-{}", short(&r.reference)))
            .y_desc("mean quality")
            .x_label_formatter(&|v| format!("{v:.0}%"))
            .max_light_lines(1)
            .draw()
            .map_err(e)?;

        let grey = RGBColor(140, 140, 140);
        for (level, color) in [
            (0.95, RGBColor(200, 160, 60)),
            (0.99, RGBColor(120, 170, 90)),
        ] {
            chart
                .draw_series(LineSeries::new(
                    [(0.0, level * ref_q), (xmax, level * ref_q)],
                    color.stroke_width(1),
                ))
                .map_err(e)?
                .label(format!("{:.0}% of reference quality", level * 100.0))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(1))
                });
        }
        chart
            .draw_series(DashedLineSeries::new(
                zero.clone(),
                8,
                6,
                grey.stroke_width(2),
            ))
            .map_err(e)?
            .label("zero router (mixing single models)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], grey.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(router.clone(), BLUE.stroke_width(2)))
            .map_err(e)?
            .label("router (quality-bar sweep)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(router.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
            .map_err(e)?;
        chart
            .draw_series(
                singles
                    .iter()
                    .map(|(_, c, q)| Circle::new((*c, *q), 5, BLACK.filled())),
            )
            .map_err(e)?
            .label("single models")
            .legend(|(x, y)| Circle::new((x + 9, y), 4, BLACK.filled()));
        chart
            // Names beside their points (to the left in the right half of the chart).
            .draw_series(singles.iter().map(|(name, c, q)| {
                let right = *c > xmax / 2.0;
                let h = if right { HPos::Right } else { HPos::Left };
                let style = ("sans-serif", 13)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(h, VPos::Top));
                EmptyElement::at((*c, *q))
                    + Text::new(name.clone(), (if right { -8 } else { 8 }, 6), style)
            }))
            .map_err(e)?;
        chart
            .draw_series(std::iter::once(TriangleMarker::new(
                oracle,
                7,
                RED.filled(),
            )))
            .map_err(e)?
            .label("oracle")
            .legend(|(x, y)| TriangleMarker::new((x + 9, y), 5, RED.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(grey)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = r#"{"kind":"meta","name":"tiny","models":{"cheap":{"input_usd_per_mtok":1,"output_usd_per_mtok":2},"strong":{"input_usd_per_mtok":10,"output_usd_per_mtok":20}},"reference":"strong"}
{"id":"a","prompt":"Write a Python function that reverses a list.","input_tokens":100,"outcomes":{"cheap":{"quality":1,"output_tokens":50},"strong":{"quality":1,"output_tokens":40}}}
{"id":"b","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"What is 17 * 23?"}]}],"outcomes":{"cheap":{"quality":0},"strong":{"quality":1}}}
{"id":"c","task":"chat","input_tokens":10,"subject":"ignored","outcomes":{"cheap":{"quality":0.5,"output_tokens":5},"strong":{"quality":0.75,"output_tokens":5}}}
"#;

    #[test]
    fn parses_meta_prompts_messages_and_labels() {
        let ds = parse_dataset(DATA, &Catalog::empty(), None, None).unwrap();
        assert_eq!(ds.name.as_deref(), Some("tiny"));
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.models[0].name, "cheap");
        assert_eq!(
            ds.models[1].prices,
            Prices {
                input: 10_000_000,
                output: 20_000_000
            }
        );
        assert_eq!(ds.price_sources, vec!["meta line", "meta line"]);
        assert_eq!(ds.models[ds.reference].name, "strong");
        let b = &ds.records[1].text;
        assert_eq!(b.system, "Be brief.");
        assert_eq!(b.last_user, "What is 17 * 23?");
        assert_eq!(b.n_messages, 2);
        assert_eq!(estimate_input_tokens(b), (9u64 + 16).div_ceil(4) + 8);
        assert_eq!(ds.records[2].task, Some(TaskType::Chat));

        let prompts = classify(&ds, Classifier::builtin(), &ProgressBar::hidden(), false);
        assert_eq!(prompts[2].task, TaskType::Chat);
        assert_eq!(prompts[2].confidence, 1.0);
        // Missing output tokens: the task's expected length, as the router budgets.
        let expected = u64::from(expected_output_tokens(prompts[1].task));
        assert_eq!(prompts[1].outcomes[0].output_tokens, expected);
        assert_eq!(prompts[1].input_tokens, 15);
        assert_eq!(prompts[0].outcomes[1].output_tokens, 40);
    }

    #[test]
    fn rejects_bad_data_with_the_line() {
        let catalog = Catalog::empty();
        let missing = DATA.replace(r#","strong":{"quality":1}}"#, "}");
        let e = parse_dataset(&missing, &catalog, None, None).unwrap_err();
        assert!(
            e.contains("line 3") && e.contains("no outcome for \"strong\""),
            "{e}"
        );
        let no_price = DATA.replace(r#""input_usd_per_mtok":1,"output_usd_per_mtok":2"#, "");
        let e = parse_dataset(&no_price, &catalog, None, None).unwrap_err();
        assert!(e.contains("no price for \"cheap\""), "{e}");
        let dup = format!("{DATA}{}\n", DATA.lines().nth(1).unwrap());
        assert!(
            parse_dataset(&dup, &catalog, None, None)
                .unwrap_err()
                .contains("duplicate id")
        );
        let bad_q = DATA.replace(r#""quality":0.5"#, r#""quality":1.5"#);
        assert!(
            parse_dataset(&bad_q, &catalog, None, None)
                .unwrap_err()
                .contains("line 4")
        );
        let bad_task = DATA.replace(r#""task":"chat""#, r#""task":"poetry""#);
        assert!(
            parse_dataset(&bad_task, &catalog, None, None)
                .unwrap_err()
                .contains("unknown task")
        );
        let e = parse_dataset(DATA, &catalog, None, Some("nope")).unwrap_err();
        assert!(e.contains("reference model \"nope\""), "{e}");
        let e = parse_dataset(DATA, &catalog, Some(&["other".to_owned()]), None).unwrap_err();
        assert!(e.contains("--models"), "{e}");
    }

    #[test]
    fn prices_come_from_the_catalog_when_the_meta_line_has_none() {
        let data = r#"{"id":"x","prompt":"hi","outcomes":{"gpt-4o-mini":{"quality":0.5},"gpt-4o":{"quality":1}}}"#;
        let catalog = Catalog::builtin();
        let ds = parse_dataset(data, &catalog, None, None).unwrap();
        let mini = ds
            .models
            .iter()
            .position(|m| m.name == "gpt-4o-mini")
            .unwrap();
        let price = catalog.get("gpt-4o-mini").unwrap().price.unwrap();
        assert_eq!(ds.models[mini].prices.input, price.input);
        assert_eq!(ds.price_sources[mini], "catalog");
        // No meta reference: the best on average.
        assert_eq!(ds.models[ds.reference].name, "gpt-4o");
        // Catalog models have priors, so no split is needed.
        assert!(builtin_quality(&ds.models, &catalog).is_some());
        let unknown = [Model {
            name: "my-model".into(),
            prices: Prices {
                input: 1,
                output: 1,
            },
        }];
        assert!(builtin_quality(&unknown, &catalog).is_none());
    }

    #[test]
    fn end_to_end_writes_table_json_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("d.jsonl");
        // 40 prompts, two labelled tasks: the cheap model is perfect on math, poor on chat.
        let mut s = String::from(
            r#"{"kind":"meta","name":"tiny","models":{"cheap":{"input_usd_per_mtok":1,"output_usd_per_mtok":1},"strong":{"input_usd_per_mtok":10,"output_usd_per_mtok":10}},"reference":"strong"}"#,
        );
        s.push('\n');
        for i in 0..40 {
            let (task, q) = if i % 2 == 0 {
                ("math", 1)
            } else {
                ("chat", i32::from(i % 4 == 1))
            };
            s.push_str(&format!(
                r#"{{"id":"p{i}","task":"{task}","input_tokens":1000,"outcomes":{{"cheap":{{"quality":{q},"output_tokens":0}},"strong":{{"quality":1,"output_tokens":0}}}}}}"#
            ));
            s.push('\n');
        }
        std::fs::write(&data, s).unwrap();
        let json = dir.path().join("r.json");
        let plot = dir.path().join("r.svg");
        let args = RoutingArgs {
            data,
            reference: None,
            models: None,
            fit: false,
            split: 0.5,
            seed: 1,
            steps: 21,
            json: Some(json.clone()),
            plot: Some(plot.clone()),
            quiet: true,
            warm: false,
            explore: None,
            values: "0.0001:1".into(),
        };
        let mut table = Vec::new();
        routing(&args, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("always strong (reference)"), "{table}");
        assert!(table.contains("RouteLLM metrics (weak cheap"), "{table}");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["quality_source"]["kind"], "fit");
        let n_test = v["n_test"].as_u64().unwrap();
        assert_eq!(v["n_train"].as_u64().unwrap() + n_test, 40);
        assert_eq!(v["report"]["sweep"].as_array().unwrap().len(), 21);
        // Bar 0: all cheap; the last bar: nothing clears 1.0, so the best estimate (strong).
        assert_eq!(v["report"]["sweep"][0]["calls_pct"][0], 100.0);
        assert_eq!(v["report"]["sweep"][20]["calls_pct"][1], 100.0);
        // Somewhere in between the router sends chat to strong and math to cheap: full quality
        // at about half the cost.
        let best = &v["report"]["headline"]["router_at_99"];
        assert_eq!(best["retained_pct"], 100.0);
        assert!(best["saved_pct"].as_f64().unwrap() > 40.0, "{best}");
        assert!(v["report"]["two_model"]["apgr"].as_f64().unwrap() > 0.5);
        let svg = std::fs::read_to_string(&plot).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("oracle") && svg.contains("zero router"));

        let bad = RoutingArgs {
            plot: Some(dir.path().join("r.png")),
            ..args
        };
        assert!(
            routing(&bad, &mut Vec::new())
                .unwrap_err()
                .contains("only SVG")
        );
    }

    #[test]
    fn warm_mode_learns_what_the_task_label_cannot_tell() {
        // One task label for every prompt; the cheap model is right about cats and wrong about
        // quantum physics. Task-level estimates see 50% for cheap everywhere; the learner, fed
        // only the chosen model's outcome, must learn to keep cats on the cheap model.
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("w.jsonl");
        let mut s = String::from(
            r#"{"kind":"meta","name":"warm","models":{"cheap":{"input_usd_per_mtok":0.1,"output_usd_per_mtok":0.1},"strong":{"input_usd_per_mtok":10,"output_usd_per_mtok":30}},"reference":"strong"}"#,
        );
        s.push('\n');
        let cats = [
            "cats",
            "kittens",
            "a tabby cat",
            "cat food",
            "my cat's whiskers",
        ];
        let physics = [
            "quantum chromodynamics",
            "gluon fields",
            "quark confinement",
            "the Higgs mechanism",
            "lattice QCD",
        ];
        for i in 0..400 {
            let (prompt, q) = if i % 2 == 0 {
                (
                    format!(
                        "Tell me something nice about {} (question {i}).",
                        cats[i / 2 % 5]
                    ),
                    1,
                )
            } else {
                (
                    format!("Explain {} in detail (question {i}).", physics[i / 2 % 5]),
                    0,
                )
            };
            s.push_str(&format!(
                r#"{{"id":"w{i}","task":"open_qa","prompt":{},"input_tokens":200,"max_tokens":50,"outcomes":{{"cheap":{{"quality":{q},"output_tokens":50}},"strong":{{"quality":1,"output_tokens":50}}}}}}"#,
                serde_json::to_string(&prompt).unwrap()
            ));
            s.push('\n');
        }
        std::fs::write(&data, s).unwrap();
        let json = dir.path().join("w.json");
        let args = RoutingArgs {
            data,
            reference: None,
            models: None,
            fit: false,
            split: 0.5,
            seed: 3,
            steps: 11,
            json: Some(json.clone()),
            plot: None,
            quiet: true,
            warm: true,
            explore: Some(0.1),
            values: "0.0001:1".into(),
        };
        let mut table = Vec::new();
        routing(&args, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("Warm routing"), "{table}");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let warm = &v["warm"]["warm"]["at_99"];
        let cold = &v["warm"]["cold"]["at_99"];
        let saved = |x: &serde_json::Value| x["saved_pct"].as_f64().unwrap_or(0.0);
        // Cold: 99% quality needs strong everywhere (cheap is a coin flip per the task label).
        assert!(saved(cold) < 5.0, "{cold}");
        // Warm: cats stay on the cheap model at full quality, about half the cost saved.
        assert!(saved(warm) > 40.0, "warm {warm}\n{table}");
        // The replay explored, and observed both models.
        let rows = v["warm"]["warm"]["rows"].as_array().unwrap();
        assert!(rows.iter().all(|r| r["explored"].as_u64().unwrap() > 0));
        assert!(
            rows.iter().any(|r| r["observed"][0].as_u64().unwrap() > 0
                && r["observed"][1].as_u64().unwrap() > 0)
        );
        // Bad --values.
        let bad = RoutingArgs {
            values: "1:0.1".into(),
            json: None,
            ..args
        };
        assert!(
            routing(&bad, &mut Vec::new())
                .unwrap_err()
                .contains("--values")
        );
    }
}
