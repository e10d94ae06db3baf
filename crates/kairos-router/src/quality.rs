//! The quality model's priors: for each (catalog model, task type) an expected quality with its
//! uncertainty, plus the expected output length per task type and the named quality tiers.
//!
//! **Scale.** `mean` is the probability that the model's answer is preferred to the answer of a
//! fixed reference model (`gpt-4o-2024-05-13`) on a prompt of that task, on the Bradley-Terry /
//! Elo scale of the public leaderboards (400 Elo per factor of 10 in odds). 0.5 = as good as the
//! May-2024 GPT-4o; 0.64 = 100 Elo better; 0.36 = 100 Elo worse. It is comparable across models
//! for one task. `std` is the prior's uncertainty on that scale, and `n_equiv` the pseudo-count of
//! the Beta distribution with that mean and std (`mean*(1-mean)/std^2 - 1`), for Bayesian updates.
//!
//! **Where the numbers come from.** `scripts/derive_quality_priors.py` derives them from the
//! LMArena text leaderboard (data of 2025-12-11, style-controlled ratings, per category) with
//! WildBench (2024-08) as a second opinion, and writes `data/quality_priors.json`, which is
//! embedded here. Catalog models newer than the leaderboards are imputed from the nearest older
//! release of the same product line with a wider `std` (their `source` says `imputed from …`);
//! models without a same-line, same-size rated relative have no prior ([`QualityTable::get`]
//! returns `None`; [`QualityTable::unrated_reason`] says why). `docs/routing-quality.md` explains
//! the method, every mapping decision and the caveats.
//!
//! Config can override any entry ([`QualityTable::with_overrides`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::task::TaskType;

/// The generated priors, embedded at build time.
pub const BUILTIN_JSON: &str = include_str!("../data/quality_priors.json");

/// The JSON schema version this module reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Expected quality of one model on one task type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityEstimate {
    /// Expected quality in `[0, 1]` (see the module docs for the scale).
    pub mean: f64,
    /// Standard deviation of the prior, `> 0`.
    pub std: f64,
    /// Beta pseudo-count with this mean and std: how many observations the prior is worth.
    pub n_equiv: f64,
    /// Provenance of this entry (leaderboard categories, imputation, or `config`).
    pub source: String,
}

impl QualityEstimate {
    /// Builds a validated estimate.
    pub fn new(
        mean: f64,
        std: f64,
        n_equiv: f64,
        source: impl Into<String>,
    ) -> Result<Self, QualityError> {
        let estimate = QualityEstimate {
            mean,
            std,
            n_equiv,
            source: source.into(),
        };
        estimate.validate()?;
        Ok(estimate)
    }

    /// Builds an estimate from a mean and std, with `n_equiv` of the matching Beta distribution.
    /// `std` must be below `sqrt(mean*(1-mean))` (the largest std a Beta with that mean can have).
    pub fn from_mean_std(
        mean: f64,
        std: f64,
        source: impl Into<String>,
    ) -> Result<Self, QualityError> {
        let n_equiv = if std > 0.0 {
            mean * (1.0 - mean) / (std * std) - 1.0
        } else {
            f64::NAN
        };
        if n_equiv.is_nan() || n_equiv <= 0.0 {
            return Err(QualityError::Invalid(format!(
                "std {std} is not achievable by a Beta distribution with mean {mean}"
            )));
        }
        Self::new(mean, std, n_equiv, source)
    }

    /// Checks the invariants: `mean` in `[0, 1]`, `std` in `(0, 0.5]`, `n_equiv >= 0`, all finite.
    pub fn validate(&self) -> Result<(), QualityError> {
        let QualityEstimate {
            mean, std, n_equiv, ..
        } = *self;
        if !(mean.is_finite() && (0.0..=1.0).contains(&mean)) {
            return Err(QualityError::Invalid(format!(
                "mean {mean} is not in [0, 1]"
            )));
        }
        if !(std.is_finite() && std > 0.0 && std <= 0.5) {
            return Err(QualityError::Invalid(format!(
                "std {std} is not in (0, 0.5]"
            )));
        }
        if !(n_equiv.is_finite() && n_equiv >= 0.0) {
            return Err(QualityError::Invalid(format!(
                "n_equiv {n_equiv} is not a finite number >= 0"
            )));
        }
        Ok(())
    }

    /// The Beta prior `(alpha, beta) = (mean * n_equiv, (1 - mean) * n_equiv)`.
    pub fn beta(&self) -> (f64, f64) {
        (self.mean * self.n_equiv, (1.0 - self.mean) * self.n_equiv)
    }
}

/// Errors reading or building quality tables.
#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error("quality priors JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("quality priors schema_version {found}, this build reads {SCHEMA_VERSION}")]
    Schema { found: u32 },
    #[error("quality prior for {model}/{task}: {reason}")]
    Entry {
        model: String,
        task: &'static str,
        reason: String,
    },
    #[error("invalid quality estimate: {0}")]
    Invalid(String),
    #[error("unknown quality tier {0:?} (expected economy, balanced or premium)")]
    UnknownTier(String),
}

/// Expected quality per (model, task type).
#[derive(Debug, Clone)]
pub struct QualityTable {
    models: BTreeMap<String, BTreeMap<TaskType, QualityEstimate>>,
    unrated: BTreeMap<String, String>,
    reference_model: String,
    source: String,
}

#[derive(Deserialize)]
struct RawDoc {
    schema_version: u32,
    provenance: String,
    reference_model: String,
    models: BTreeMap<String, RawModel>,
    #[serde(default)]
    unrated: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawModel {
    tasks: BTreeMap<TaskType, QualityEstimate>,
}

static BUILTIN: LazyLock<QualityTable> = LazyLock::new(|| {
    QualityTable::from_json(BUILTIN_JSON).unwrap_or_else(|err| QualityTable {
        models: BTreeMap::new(),
        unrated: BTreeMap::new(),
        reference_model: String::new(),
        // Unreachable with the shipped file (a test parses it); if it ever happens, every model
        // is unknown and receipts say why instead of the process refusing to start.
        source: format!("built-in quality priors unavailable: {err}"),
    })
});

impl QualityTable {
    /// The priors shipped with this build (parsed once).
    pub fn builtin() -> &'static QualityTable {
        &BUILTIN
    }

    /// Parses a priors document in the format of `data/quality_priors.json` and validates every
    /// entry. Only `schema_version`, `provenance`, `reference_model`, `models.*.tasks` and
    /// `unrated` are read; the other fields document the derivation.
    pub fn from_json(json: &str) -> Result<QualityTable, QualityError> {
        let raw: RawDoc = serde_json::from_str(json)?;
        if raw.schema_version != SCHEMA_VERSION {
            return Err(QualityError::Schema {
                found: raw.schema_version,
            });
        }
        let mut models = BTreeMap::new();
        for (model, entry) in raw.models {
            for (task, estimate) in &entry.tasks {
                estimate.validate().map_err(|err| QualityError::Entry {
                    model: model.clone(),
                    task: task.as_str(),
                    reason: err.to_string(),
                })?;
            }
            models.insert(model, entry.tasks);
        }
        Ok(QualityTable {
            models,
            unrated: raw.unrated,
            reference_model: raw.reference_model,
            source: raw.provenance,
        })
    }

    /// The prior for `model` (a catalog id) on `task`, or `None` when the model has none.
    pub fn get(&self, model: &str, task: TaskType) -> Option<&QualityEstimate> {
        self.models.get(model)?.get(&task)
    }

    /// A copy of this table with `overrides` applied (config wins; new models are added). The
    /// estimates are taken as given: validate them ([`QualityEstimate::validate`]) when reading
    /// config. The provenance line records how many entries were overridden.
    pub fn with_overrides(
        &self,
        overrides: impl IntoIterator<Item = (String, TaskType, QualityEstimate)>,
    ) -> QualityTable {
        let mut table = self.clone();
        let mut count = 0usize;
        for (model, task, estimate) in overrides {
            table.unrated.remove(&model);
            table
                .models
                .entry(model)
                .or_default()
                .insert(task, estimate);
            count += 1;
        }
        if count > 0 {
            let plural = if count == 1 { "" } else { "s" };
            table.source = format!("{} + {count} config override{plural}", self.source);
        }
        table
    }

    /// One provenance line (sources, versions, checksums, scale) for receipts and docs.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The model every quality is measured against (0.5 = parity with it).
    pub fn reference_model(&self) -> &str {
        &self.reference_model
    }

    /// Model ids with at least one prior, sorted.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// Why a catalog model deliberately has no prior (e.g. "code-specialised line; not rated").
    pub fn unrated_reason(&self, model: &str) -> Option<&str> {
        self.unrated.get(model).map(String::as_str)
    }
}

/// Expected visible output tokens of one response for `task`, for cost estimates. Estimates (see
/// `docs/routing-quality.md`); reasoning tokens of reasoning models are not included, and for
/// translation and rewriting the input length is a better guide when known.
pub fn expected_output_tokens(task: TaskType) -> u32 {
    match task {
        TaskType::Code => 400,
        TaskType::Math => 350,
        TaskType::Summarization => 150,
        TaskType::Extraction => 120,
        TaskType::Classification => 20,
        TaskType::Translation => 250,
        TaskType::CreativeWriting => 600,
        TaskType::Rewriting => 250,
        TaskType::OpenQa => 300,
        TaskType::ClosedQa => 100,
        TaskType::Brainstorming => 350,
        TaskType::Chat => 120,
    }
}

/// Named quality bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// GPT-4o-mini class and up: 70 Elo below the reference.
    Economy,
    /// Clearly above the May-2024 GPT-4o (GPT-4.1 / Gemini 2.5 Flash / DeepSeek V3.2 class): 50 Elo
    /// above it.
    Balanced,
    /// The top of the late-2025 leaderboard (Claude Sonnet/Opus 4.5, Gemini 2.5 Pro, Gemini 3,
    /// GPT-5.1): 100 Elo above it.
    Premium,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Economy, Tier::Balanced, Tier::Premium];

    /// The recommended bar on the quality scale (win probability vs the reference).
    pub fn bar(self) -> f64 {
        match self {
            Tier::Economy => 0.40,
            Tier::Balanced => 0.57,
            Tier::Premium => 0.64,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Economy => "economy",
            Tier::Balanced => "balanced",
            Tier::Premium => "premium",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = QualityError;

    /// Case-insensitive; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(trimmed))
            .ok_or_else(|| QualityError::UnknownTier(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn doc() -> Value {
        serde_json::from_str(BUILTIN_JSON).expect("embedded JSON is valid JSON")
    }

    fn mean(model: &str, task: TaskType) -> f64 {
        QualityTable::builtin()
            .get(model, task)
            .unwrap_or_else(|| panic!("no prior for {model}/{}", task.as_str()))
            .mean
    }

    #[test]
    fn embedded_json_parses_and_builtin_is_populated() {
        let table = QualityTable::from_json(BUILTIN_JSON).expect("embedded priors parse");
        assert!(
            table.models().count() >= 40,
            "too few models: {}",
            table.models().count()
        );
        let builtin = QualityTable::builtin();
        assert_eq!(builtin.models().count(), table.models().count());
        assert!(
            builtin.source().starts_with("quality priors v1"),
            "{}",
            builtin.source()
        );
        assert!(builtin.source().contains("LMArena"));
        assert_eq!(builtin.reference_model(), "gpt-4o-2024-05-13");
    }

    #[test]
    fn every_model_has_every_task_with_a_valid_estimate() {
        let table = QualityTable::builtin();
        for model in table.models() {
            for task in TaskType::ALL {
                let e = table
                    .get(model, task)
                    .unwrap_or_else(|| panic!("{model}/{}", task.as_str()));
                assert!(
                    (0.0..=1.0).contains(&e.mean),
                    "{model}/{}: mean {}",
                    task.as_str(),
                    e.mean
                );
                assert!(e.std > 0.0, "{model}/{}: std {}", task.as_str(), e.std);
                assert!(!e.source.is_empty());
                // n_equiv is the Beta pseudo-count of (mean, std), up to the JSON's rounding.
                let n = e.mean * (1.0 - e.mean) / (e.std * e.std) - 1.0;
                assert!(
                    (n - e.n_equiv).abs() <= 0.02 * n.max(1.0) + 0.5,
                    "{model}/{}: {n} vs {}",
                    task.as_str(),
                    e.n_equiv
                );
            }
        }
    }

    #[test]
    fn every_catalog_chat_model_has_a_prior_or_a_reason() {
        let catalog: Value =
            serde_json::from_str(include_str!("../../kairos-core/data/catalog.json"))
                .expect("catalog parses");
        let table = QualityTable::builtin();
        let mut chat = 0;
        for m in catalog["models"].as_array().expect("models array") {
            if m["mode"] != "chat" {
                continue;
            }
            chat += 1;
            let id = m["id"].as_str().expect("id");
            let has_prior = table.get(id, TaskType::Chat).is_some();
            let reason = table.unrated_reason(id);
            assert!(
                has_prior != reason.is_some(),
                "{id}: prior {has_prior}, reason {reason:?}"
            );
        }
        assert_eq!(chat, table.models().count() + table.unrated.len());
    }

    #[test]
    fn expected_output_tokens_cover_every_task_and_match_the_json() {
        let d = doc();
        for task in TaskType::ALL {
            let n = expected_output_tokens(task);
            assert!((10..=2000).contains(&n), "{}: {n}", task.as_str());
            assert_eq!(
                d["expected_output_tokens"][task.as_str()].as_u64(),
                Some(u64::from(n)),
                "{}",
                task.as_str()
            );
        }
        assert!(
            expected_output_tokens(TaskType::Classification)
                < expected_output_tokens(TaskType::Summarization)
        );
        assert!(
            expected_output_tokens(TaskType::Summarization)
                < expected_output_tokens(TaskType::CreativeWriting)
        );
    }

    #[test]
    fn tiers_parse_order_and_match_the_json() {
        let d = doc();
        for tier in Tier::ALL {
            assert_eq!(tier.as_str().parse::<Tier>().expect("parses"), tier);
            assert_eq!(
                d["tiers"][tier.as_str()]["bar"].as_f64(),
                Some(tier.bar()),
                "{tier}"
            );
        }
        assert_eq!(
            " Premium ".parse::<Tier>().expect("case-insensitive"),
            Tier::Premium
        );
        assert!(matches!("gold".parse::<Tier>(), Err(QualityError::UnknownTier(s)) if s == "gold"));
        assert!(
            Tier::Economy.bar() < Tier::Balanced.bar()
                && Tier::Balanced.bar() < Tier::Premium.bar()
        );
        assert_eq!(
            serde_json::to_string(&Tier::Balanced).expect("serialises"),
            "\"balanced\""
        );
    }

    #[test]
    fn frontier_models_beat_small_ones_at_code() {
        for frontier in [
            "claude-sonnet-4-5",
            "gpt-5",
            "claude-opus-4-5",
            "gemini-2.5-pro",
        ] {
            assert!(
                mean(frontier, TaskType::Code) > mean("gpt-4o-mini", TaskType::Code) + 0.1,
                "{frontier} vs gpt-4o-mini"
            );
        }
        assert!(mean("o3", TaskType::Math) > mean("gpt-4o", TaskType::Math) + 0.1);
    }

    #[test]
    fn bigger_sibling_beats_smaller_sibling_on_every_task() {
        let pairs = [
            ("gpt-4o", "gpt-4o-mini"),
            ("gpt-4.1", "gpt-4.1-mini"),
            ("gpt-5", "gpt-5-mini"),
            ("gpt-5-mini", "gpt-5-nano"),
            ("gpt-oss-120b", "gpt-oss-20b"),
            ("claude-opus-4-5", "claude-haiku-4-5"),
            ("claude-sonnet-4-5", "claude-haiku-4-5"),
            ("gemini-2.5-pro", "gemini-2.5-flash"),
            ("gemini-2.5-flash", "gemini-2.5-flash-lite"),
        ];
        for (big, small) in pairs {
            for task in TaskType::ALL {
                assert!(
                    mean(big, task) > mean(small, task),
                    "{big} vs {small} on {}",
                    task.as_str()
                );
            }
        }
    }

    #[test]
    fn imputed_models_are_wider_than_their_source_and_say_so() {
        let table = QualityTable::builtin();
        for (imputed, rated) in [
            ("claude-opus-5", "claude-opus-4-5"),
            ("gpt-5.4", "gpt-5.1"),
            ("gemini-3.1-pro-preview", "gemini-2.5-pro"),
        ] {
            for task in TaskType::ALL {
                let i = table.get(imputed, task).expect("imputed prior");
                let r = table.get(rated, task).expect("rated prior");
                assert!(i.std > r.std, "{imputed} vs {rated} on {}", task.as_str());
                assert!(i.source.starts_with("imputed from "), "{}", i.source);
                assert!(!r.source.starts_with("imputed"), "{}", r.source);
            }
        }
        // More releases away, more uncertain.
        let opus = |m| table.get(m, TaskType::Code).expect("prior").std;
        assert!(
            opus("claude-opus-4-6") < opus("claude-opus-4-8")
                && opus("claude-opus-4-8") < opus("claude-opus-5-5")
        );
    }

    #[test]
    fn unknown_and_unrated_models_have_no_prior() {
        let table = QualityTable::builtin();
        assert!(table.get("no-such-model", TaskType::Chat).is_none());
        assert!(table.unrated_reason("no-such-model").is_none());
        assert!(table.get("codestral-latest", TaskType::Code).is_none());
        assert!(
            table
                .unrated_reason("codestral-latest")
                .is_some_and(|r| r.contains("code"))
        );
    }

    #[test]
    fn overrides_replace_and_add_without_touching_the_original() {
        let base = QualityTable::builtin();
        let before = base.get("gpt-4o", TaskType::Code).cloned().expect("prior");
        let ov = QualityEstimate::from_mean_std(0.9, 0.05, "config").expect("valid");
        let table = base.with_overrides([
            ("gpt-4o".to_owned(), TaskType::Code, ov.clone()),
            ("codestral-latest".to_owned(), TaskType::Code, ov.clone()),
            ("my-local-model".to_owned(), TaskType::Chat, ov.clone()),
        ]);
        assert_eq!(table.get("gpt-4o", TaskType::Code), Some(&ov));
        assert_eq!(
            table.get("gpt-4o", TaskType::Math),
            base.get("gpt-4o", TaskType::Math)
        );
        assert_eq!(table.get("codestral-latest", TaskType::Code), Some(&ov));
        assert!(table.unrated_reason("codestral-latest").is_none());
        assert_eq!(table.get("my-local-model", TaskType::Chat), Some(&ov));
        assert!(table.get("my-local-model", TaskType::Code).is_none());
        assert_eq!(base.get("gpt-4o", TaskType::Code), Some(&before));
        assert_eq!(
            table.source(),
            format!("{} + 3 config overrides", base.source())
        );
        assert_eq!(base.with_overrides([]).source(), base.source());
    }

    #[test]
    fn from_json_rejects_invalid_documents() {
        let entry = |mean: f64, std: f64| {
            format!(
                r#"{{"schema_version":1,"provenance":"t","reference_model":"r",
                   "models":{{"m":{{"tasks":{{"code":{{"mean":{mean},"std":{std},"n_equiv":1,"source":"s"}}}}}}}}}}"#
            )
        };
        let ok = QualityTable::from_json(&entry(0.5, 0.1)).expect("valid document");
        assert_eq!(ok.get("m", TaskType::Code).map(|e| e.mean), Some(0.5));
        assert!(matches!(
            QualityTable::from_json(&entry(1.5, 0.1)),
            Err(QualityError::Entry { .. })
        ));
        assert!(matches!(
            QualityTable::from_json(&entry(0.5, 0.0)),
            Err(QualityError::Entry { .. })
        ));
        let unknown_task = entry(0.5, 0.1).replace("\"code\"", "\"poetry\"");
        assert!(matches!(
            QualityTable::from_json(&unknown_task),
            Err(QualityError::Json(_))
        ));
        let schema = entry(0.5, 0.1).replace("\"schema_version\":1", "\"schema_version\":2");
        assert!(matches!(
            QualityTable::from_json(&schema),
            Err(QualityError::Schema { found: 2 })
        ));
    }

    #[test]
    fn estimate_constructors_validate() {
        assert!(QualityEstimate::new(0.5, 0.1, 10.0, "x").is_ok());
        assert!(QualityEstimate::new(f64::NAN, 0.1, 10.0, "x").is_err());
        assert!(QualityEstimate::new(0.5, 0.1, -1.0, "x").is_err());
        // A Beta with mean 0.5 cannot have std >= 0.5.
        assert!(QualityEstimate::from_mean_std(0.5, 0.5, "x").is_err());
        let e = QualityEstimate::from_mean_std(0.6, 0.05, "x").expect("valid");
        assert!((e.n_equiv - (0.24 / 0.0025 - 1.0)).abs() < 1e-9);
        let (a, b) = e.beta();
        assert!((a / (a + b) - 0.6).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn from_mean_std_round_trips_through_the_beta(mean in 0.01f64..0.99, frac in 0.01f64..0.99) {
            let std = frac * (mean * (1.0 - mean)).sqrt();
            let e = QualityEstimate::from_mean_std(mean, std, "p").expect("valid");
            let (a, b) = e.beta();
            let var = a * b / ((a + b) * (a + b) * (a + b + 1.0));
            prop_assert!((a / (a + b) - mean).abs() < 1e-9);
            prop_assert!((var.sqrt() - std).abs() < 1e-9);
        }
    }

    /// The committed JSON is what the script generates from the data (when both are here).
    #[test]
    fn derive_script_check_passes() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let data =
            root.join("../shared/data/priors/arena-leaderboard/arena_text_ratings_by_category.csv");
        let python = Command::new("python3").arg("--version").output();
        if !data.exists() || python.is_err() {
            println!(
                "SKIP derive_script_check_passes: python3 or {} missing",
                data.display()
            );
            return;
        }
        let out = Command::new("python3")
            .current_dir(&root)
            .args([
                "scripts/derive_quality_priors.py",
                "--check",
                "--markdown",
                "docs/routing-quality.md",
            ])
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "derive_quality_priors.py --check failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
