//! The built-in model catalog and cost maths.
//!
//! The catalog maps model names (ids and aliases) to [`ModelEntry`]s: provider, upstream model id,
//! context window, prices and capabilities. The built-in one is generated from litellm's price table by
//! `scripts/derive_catalog.py` into `data/catalog.json` and embedded at compile time; configuration can
//! add or override entries with [`Catalog::insert`]. See `docs/catalog.md`.
//!
//! Prices are integers in **micro-USD per 1M tokens** (USD per token × 10¹²): $2.50 per 1M tokens is
//! `2_500_000`. [`Price::cost_micros`] turns a [`TokenUsage`] into integer micro-USD with checked `u128`
//! arithmetic and a single half-up rounding on the total.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

/// The generated catalog, embedded at compile time.
const BUILTIN_JSON: &str = include_str!("../data/catalog.json");

/// Parsed once, on first use.
static BUILTIN: LazyLock<Result<Catalog, CatalogError>> =
    LazyLock::new(|| Catalog::from_json(BUILTIN_JSON));

/// Prices of one model, in micro-USD per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Uncached input (prompt) tokens.
    pub input: u64,
    /// Output (completion) tokens, reasoning tokens included.
    pub output: u64,
    /// Input tokens read from the provider's prompt cache; `None` bills them at `input`.
    #[serde(default)]
    pub cached_input: Option<u64>,
    /// Input tokens written to the provider's prompt cache (Anthropic's 5-minute cache writes);
    /// `None` bills them at `input`.
    #[serde(default)]
    pub cache_write: Option<u64>,
}

/// Token counts of one request, split by how they are billed.
///
/// `input` counts **uncached** input tokens only; `cached_input` and `cache_write` are not included in
/// it. Providers report usage differently, so build this with [`TokenUsage::from_openai`] (whose
/// `prompt_tokens` includes cached tokens) or [`TokenUsage::from_anthropic`] (whose `input_tokens`
/// excludes cache reads and writes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Uncached input tokens.
    pub input: u64,
    /// Output tokens (including reasoning tokens).
    pub output: u64,
    /// Input tokens served from the prompt cache.
    pub cached_input: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write: u64,
}

impl TokenUsage {
    /// From OpenAI-style usage: `prompt_tokens`, `completion_tokens` and
    /// `prompt_tokens_details.cached_tokens`. `prompt_tokens` includes the cached tokens, so
    /// `input = prompt - cached`; a `cached` larger than `prompt` (a provider bug) is clamped to
    /// `prompt`, so the tokens billed never exceed what the provider reported.
    #[must_use]
    pub fn from_openai(prompt: u64, completion: u64, cached: u64) -> TokenUsage {
        let cached = cached.min(prompt);
        TokenUsage {
            input: prompt - cached,
            output: completion,
            cached_input: cached,
            cache_write: 0,
        }
    }

    /// From Anthropic usage: `input_tokens`, `output_tokens`, `cache_read_input_tokens`,
    /// `cache_creation_input_tokens`. Anthropic's `input_tokens` already excludes cache reads and
    /// writes, so the fields map one to one.
    #[must_use]
    pub fn from_anthropic(
        input: u64,
        output: u64,
        cache_read: u64,
        cache_write: u64,
    ) -> TokenUsage {
        TokenUsage {
            input,
            output,
            cached_input: cache_read,
            cache_write,
        }
    }
}

impl Price {
    /// The cost of `u` in micro-USD: the sum of tokens × price per 1M tokens over the four token
    /// kinds, computed in `u128` with checked arithmetic, then divided by 1,000,000 rounding half up,
    /// once on the total. Cached and cache-write tokens fall back to the `input` price when their own
    /// price is `None`. Returns `None` on overflow (including a result that does not fit in `u64`).
    #[must_use]
    pub fn cost_micros(&self, u: &TokenUsage) -> Option<u64> {
        fn term(tokens: u64, price_per_1m: u64) -> Option<u128> {
            u128::from(tokens).checked_mul(u128::from(price_per_1m))
        }
        let total = term(u.input, self.input)?
            .checked_add(term(
                u.cached_input,
                self.cached_input.unwrap_or(self.input),
            )?)?
            .checked_add(term(u.cache_write, self.cache_write.unwrap_or(self.input))?)?
            .checked_add(term(u.output, self.output)?)?;
        let micros = total.checked_add(500_000)? / 1_000_000;
        u64::try_from(micros).ok()
    }
}

/// What a model can do, as far as routing filters care.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capabilities {
    /// Function / tool calling.
    pub tools: bool,
    /// Image input.
    pub vision: bool,
    /// JSON mode (`response_format: json_object`) or structured outputs.
    pub json_mode: bool,
    /// A reasoning ("thinking") model.
    pub reasoning: bool,
}

/// The kind of endpoint a model serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelMode {
    /// Chat completions / messages.
    Chat,
    /// Embeddings.
    Embedding,
}

/// One model of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The name clients send, e.g. `claude-sonnet-4-5`, `gemini-2.5-flash`.
    pub id: String,
    /// Our provider name: openai, anthropic, gemini, mistral, deepseek, groq, together, openrouter, xai.
    pub provider: String,
    /// The model id the provider's API expects.
    pub upstream_model: String,
    /// Chat or embedding.
    pub mode: ModelMode,
    /// Maximum input tokens.
    #[serde(default)]
    pub context_window: Option<u32>,
    /// Maximum output tokens.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// Prices; `None` when unknown (cost then cannot be computed).
    #[serde(default)]
    pub price: Option<Price>,
    /// Capability flags.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Other names that resolve to this model, e.g. `openai/gpt-4o`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `YYYY-MM-DD` when the provider retires the model, if announced.
    #[serde(default)]
    pub deprecation_date: Option<String>,
    /// Embedding dimensions, for embedding models when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_vector_size: Option<u32>,
}

/// Where a catalog's data came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceInfo {
    /// E.g. `litellm model_prices_and_context_window.json`.
    pub name: String,
    /// E.g. `litellm 1.109.1`.
    pub version: String,
    /// sha256 (hex) of the source file.
    pub sha256: String,
}

/// Why a catalog document was rejected.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Not valid JSON, or not the catalog schema.
    #[error("invalid catalog JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Two entries share an id.
    #[error("duplicate model id `{0}` in catalog")]
    DuplicateId(String),
    /// A name (id or alias) resolves to two entries.
    #[error("catalog name `{name}` is used by both `{first}` and `{second}`")]
    DuplicateName {
        /// The contested name.
        name: String,
        /// The id of the entry that claimed it first.
        first: String,
        /// The id of the entry that claimed it second.
        second: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    source: Option<SourceInfo>,
    models: Vec<ModelEntry>,
}

/// Model names (ids and aliases) → entries, with O(1) exact lookup.
///
/// Cloning is cheap-ish: entries are shared `Arc`s.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    source: Option<SourceInfo>,
    /// Each entry once, by id (sorted iteration).
    by_id: BTreeMap<String, Arc<ModelEntry>>,
    /// Every id and alias → its entry.
    by_name: HashMap<String, Arc<ModelEntry>>,
}

impl Catalog {
    /// The catalog embedded in the binary (`data/catalog.json`). The embedded JSON is validated by the
    /// test suite; should it ever fail to parse, this logs an error and returns an empty catalog.
    #[must_use]
    pub fn builtin() -> Catalog {
        match Catalog::try_builtin() {
            Ok(catalog) => catalog,
            Err(error) => {
                tracing::error!(%error, "the embedded model catalog is invalid; using an empty catalog");
                Catalog::empty()
            }
        }
    }

    /// The embedded catalog, or why it does not parse.
    pub fn try_builtin() -> Result<Catalog, &'static CatalogError> {
        match &*BUILTIN {
            Ok(catalog) => Ok(catalog.clone()),
            Err(error) => Err(error),
        }
    }

    /// A catalog with no models and no source.
    #[must_use]
    pub fn empty() -> Catalog {
        Catalog::default()
    }

    /// Parses a catalog document (`{"source": {...}, "models": [...]}`). Strict: unknown fields,
    /// duplicate ids and names claimed by two entries are errors.
    pub fn from_json(json: &str) -> Result<Catalog, CatalogError> {
        let file: CatalogFile = serde_json::from_str(json)?;
        let mut catalog = Catalog {
            source: file.source,
            ..Catalog::default()
        };
        for entry in file.models {
            let entry = Arc::new(entry);
            if catalog.by_id.contains_key(&entry.id) {
                return Err(CatalogError::DuplicateId(entry.id.clone()));
            }
            catalog.by_id.insert(entry.id.clone(), Arc::clone(&entry));
            for name in std::iter::once(&entry.id).chain(&entry.aliases) {
                match catalog.by_name.get(name) {
                    Some(other) if !Arc::ptr_eq(other, &entry) => {
                        return Err(CatalogError::DuplicateName {
                            name: name.clone(),
                            first: other.id.clone(),
                            second: entry.id.clone(),
                        });
                    }
                    _ => {
                        catalog.by_name.insert(name.clone(), Arc::clone(&entry));
                    }
                }
            }
        }
        Ok(catalog)
    }

    /// Where the data came from (`None` for an empty or hand-built catalog).
    #[must_use]
    pub fn source(&self) -> Option<&SourceInfo> {
        self.source.as_ref()
    }

    /// The entry with this id or alias (exact, case-sensitive).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Arc<ModelEntry>> {
        self.by_name.get(name)
    }

    /// Adds `entry`, or replaces the entry with the same id (config overrides).
    ///
    /// Replacing drops every name that pointed to the old entry, then registers the new entry's id and
    /// aliases. Ids take precedence over aliases: an alias equal to another entry's id is not
    /// registered, while the new entry's id (and aliases) take over names that were another entry's
    /// alias. A taken-over alias is not restored to its previous owner later.
    pub fn insert(&mut self, entry: ModelEntry) {
        let entry = Arc::new(entry);
        if let Some(old) = self.by_id.insert(entry.id.clone(), Arc::clone(&entry)) {
            self.by_name.retain(|_, e| !Arc::ptr_eq(e, &old));
        }
        self.by_name.insert(entry.id.clone(), Arc::clone(&entry));
        for alias in &entry.aliases {
            let shadows_other_id = self
                .by_id
                .get(alias)
                .is_some_and(|owner| !Arc::ptr_eq(owner, &entry));
            if !shadows_other_id {
                self.by_name.insert(alias.clone(), Arc::clone(&entry));
            }
        }
    }

    /// Every entry once, sorted by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ModelEntry>> {
        self.by_id.values()
    }

    /// The number of entries (not names).
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};
    use std::path::PathBuf;
    use std::process::Command;

    use proptest::prelude::*;

    use super::*;

    fn price(input: u64, output: u64) -> Price {
        Price {
            input,
            output,
            cached_input: None,
            cache_write: None,
        }
    }

    fn usage(input: u64, output: u64) -> TokenUsage {
        TokenUsage {
            input,
            output,
            ..TokenUsage::default()
        }
    }

    fn entry(id: &str, aliases: &[&str], input_price: u64) -> ModelEntry {
        ModelEntry {
            id: id.to_owned(),
            provider: "openai".to_owned(),
            upstream_model: id.to_owned(),
            mode: ModelMode::Chat,
            context_window: Some(8192),
            max_output_tokens: None,
            price: Some(price(input_price, input_price)),
            capabilities: Capabilities::default(),
            aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
            deprecation_date: None,
            output_vector_size: None,
        }
    }

    fn builtin_price(id: &str) -> Price {
        let catalog = Catalog::try_builtin().unwrap();
        catalog.get(id).unwrap().price.unwrap()
    }

    // ---- cost maths ----

    #[test]
    fn gpt_4o_known_cost() {
        let p = builtin_price("gpt-4o");
        assert_eq!(
            p,
            Price {
                input: 2_500_000,
                output: 10_000_000,
                cached_input: Some(1_250_000),
                cache_write: None
            }
        );
        // 1,000 × $2.50/1M + 500 × $10/1M = 2,500 + 5,000 µ$.
        assert_eq!(p.cost_micros(&usage(1_000, 500)), Some(7_500));
    }

    #[test]
    fn gpt_4o_mini_rounds_half_up_on_the_total() {
        let p = builtin_price("gpt-4o-mini");
        assert_eq!((p.input, p.output), (150_000, 600_000));
        // (28 × 150,000 + 41 × 600,000) / 1e6 = 28.8 → 29.
        assert_eq!(p.cost_micros(&usage(28, 41)), Some(29));
    }

    #[test]
    fn rounding_is_half_up() {
        assert_eq!(price(500_000, 0).cost_micros(&usage(1, 0)), Some(1)); // 0.5 → 1
        assert_eq!(price(499_999, 0).cost_micros(&usage(1, 0)), Some(0)); // 0.499999 → 0
        assert_eq!(price(1_500_000, 0).cost_micros(&usage(1, 0)), Some(2)); // 1.5 → 2
        assert_eq!(
            price(0, 0).cost_micros(&usage(1_000_000, 1_000_000)),
            Some(0)
        );
        assert_eq!(price(7, 11).cost_micros(&TokenUsage::default()), Some(0));
    }

    #[test]
    fn rounding_happens_once_on_the_total_not_per_component() {
        // Each component is 0.4 µ$ (would round to 0 each); the total 0.8 rounds to 1.
        let p = Price {
            input: 400_000,
            output: 400_000,
            cached_input: None,
            cache_write: None,
        };
        assert_eq!(p.cost_micros(&usage(1, 1)), Some(1));
        // Four components of 0.3 µ$ → 1.2 → 1 (per-component rounding would give 0).
        let p = Price {
            input: 300_000,
            output: 300_000,
            cached_input: Some(300_000),
            cache_write: Some(300_000),
        };
        let u = TokenUsage {
            input: 1,
            output: 1,
            cached_input: 1,
            cache_write: 1,
        };
        assert_eq!(p.cost_micros(&u), Some(1));
    }

    #[test]
    fn openai_cached_tokens_are_billed_at_the_cached_rate() {
        let p = builtin_price("gpt-4o");
        let u = TokenUsage::from_openai(1_000, 500, 400);
        assert_eq!(
            u,
            TokenUsage {
                input: 600,
                output: 500,
                cached_input: 400,
                cache_write: 0
            }
        );
        // 600 × 2.5 + 400 × 1.25 + 500 × 10 = 1,500 + 500 + 5,000.
        assert_eq!(p.cost_micros(&u), Some(7_000));
        // Caching makes it cheaper than the uncached request.
        assert!(p.cost_micros(&u) < p.cost_micros(&TokenUsage::from_openai(1_000, 500, 0)));
    }

    #[test]
    fn openai_cached_larger_than_prompt_is_clamped() {
        let u = TokenUsage::from_openai(100, 7, 250);
        assert_eq!(
            u,
            TokenUsage {
                input: 0,
                output: 7,
                cached_input: 100,
                cache_write: 0
            }
        );
    }

    #[test]
    fn anthropic_cache_reads_and_writes() {
        let p = builtin_price("claude-sonnet-4-5");
        assert_eq!(
            p,
            Price {
                input: 3_000_000,
                output: 15_000_000,
                cached_input: Some(300_000),
                cache_write: Some(3_750_000)
            }
        );
        let u = TokenUsage::from_anthropic(100, 50, 1_000, 2_000);
        assert_eq!(
            u,
            TokenUsage {
                input: 100,
                output: 50,
                cached_input: 1_000,
                cache_write: 2_000
            }
        );
        // 100 × 3 + 50 × 15 + 1,000 × 0.3 + 2,000 × 3.75 = 300 + 750 + 300 + 7,500.
        assert_eq!(p.cost_micros(&u), Some(8_850));
    }

    #[test]
    fn missing_cache_prices_fall_back_to_input() {
        let p = price(2_000_000, 8_000_000);
        let u = TokenUsage {
            input: 10,
            output: 0,
            cached_input: 20,
            cache_write: 30,
        };
        // All 60 input-side tokens at $2/1M = 120 µ$.
        assert_eq!(p.cost_micros(&u), Some(120));
        let with_cached = Price {
            cached_input: Some(500_000),
            ..p
        };
        // 10 × 2 + 20 × 0.5 + 30 × 2 = 90.
        assert_eq!(with_cached.cost_micros(&u), Some(90));
        let with_write = Price {
            cache_write: Some(2_500_000),
            ..p
        };
        // 10 × 2 + 20 × 2 + 30 × 2.5 = 135.
        assert_eq!(with_write.cost_micros(&u), Some(135));
    }

    #[test]
    fn overflow_returns_none() {
        let max = u64::MAX;
        // Exactly u64::MAX µ$ still fits.
        assert_eq!(price(1_000_000, 0).cost_micros(&usage(max, 0)), Some(max));
        // Twice that does not fit in u64.
        assert_eq!(price(2_000_000, 0).cost_micros(&usage(max, 0)), None);
        assert_eq!(price(max, max).cost_micros(&usage(max, max)), None);
        // The u128 sum itself overflows: four terms of ~2^128.
        let p = Price {
            input: max,
            output: max,
            cached_input: Some(max),
            cache_write: Some(max),
        };
        let u = TokenUsage {
            input: max,
            output: max,
            cached_input: max,
            cache_write: max,
        };
        assert_eq!(p.cost_micros(&u), None);
        // Adding the rounding half overflows.
        let p = Price {
            input: max,
            output: max,
            cached_input: Some(0),
            cache_write: Some(0),
        };
        assert_eq!(p.cost_micros(&usage(max, max)), None);
    }

    fn arb_price() -> impl Strategy<Value = Price> {
        (
            0u64..=200_000_000,
            0u64..=800_000_000,
            proptest::option::of(0u64..=200_000_000),
            proptest::option::of(0u64..=200_000_000),
        )
            .prop_map(|(input, output, cached_input, cache_write)| Price {
                input,
                output,
                cached_input,
                cache_write,
            })
    }

    fn arb_usage() -> impl Strategy<Value = TokenUsage> {
        (
            0u64..=10_000_000,
            0u64..=10_000_000,
            0u64..=10_000_000,
            0u64..=10_000_000,
        )
            .prop_map(|(input, output, cached_input, cache_write)| TokenUsage {
                input,
                output,
                cached_input,
                cache_write,
            })
    }

    proptest! {
        #[test]
        fn cost_is_monotonic_in_every_token_kind(p in arb_price(), u in arb_usage(), extra in 0u64..=1_000_000, kind in 0usize..4) {
            let base = p.cost_micros(&u).unwrap();
            let mut more = u;
            match kind {
                0 => more.input += extra,
                1 => more.output += extra,
                2 => more.cached_input += extra,
                _ => more.cache_write += extra,
            }
            prop_assert!(p.cost_micros(&more).unwrap() >= base);
        }

        #[test]
        fn cost_is_monotonic_in_prices(p in arb_price(), u in arb_usage(), extra in 0u64..=1_000_000) {
            let base = p.cost_micros(&u).unwrap();
            let dearer = Price { input: p.input + extra, output: p.output + extra, ..p };
            prop_assert!(dearer.cost_micros(&u).unwrap() >= base);
        }

        #[test]
        fn cost_matches_the_exact_rational_within_half_a_micro(p in arb_price(), u in arb_usage()) {
            let exact: u128 = u128::from(u.input) * u128::from(p.input)
                + u128::from(u.cached_input) * u128::from(p.cached_input.unwrap_or(p.input))
                + u128::from(u.cache_write) * u128::from(p.cache_write.unwrap_or(p.input))
                + u128::from(u.output) * u128::from(p.output);
            let cost = u128::from(p.cost_micros(&u).unwrap());
            // |cost × 1e6 − exact| ≤ 0.5e6, and an exact half rounds up.
            let scaled = cost * 1_000_000;
            prop_assert!(scaled + 500_000 > exact && exact + 500_000 >= scaled);
        }

        #[test]
        fn splitting_a_request_changes_the_total_by_at_most_one(p in arb_price(), a in arb_usage(), b in arb_usage()) {
            let sum = TokenUsage {
                input: a.input + b.input,
                output: a.output + b.output,
                cached_input: a.cached_input + b.cached_input,
                cache_write: a.cache_write + b.cache_write,
            };
            let whole = p.cost_micros(&sum).unwrap();
            let parts = p.cost_micros(&a).unwrap() + p.cost_micros(&b).unwrap();
            prop_assert!(whole.abs_diff(parts) <= 1);
        }

        #[test]
        fn openai_conversion_preserves_the_prompt_total(prompt in any::<u64>(), completion in any::<u64>(), cached in any::<u64>()) {
            let u = TokenUsage::from_openai(prompt, completion, cached);
            prop_assert_eq!(u.input + u.cached_input, prompt);
            prop_assert_eq!(u.output, completion);
            prop_assert_eq!(u.cache_write, 0);
        }

        #[test]
        fn cost_never_panics(p in any::<(u64, u64, Option<u64>, Option<u64>)>(), u in any::<(u64, u64, u64, u64)>()) {
            let p = Price { input: p.0, output: p.1, cached_input: p.2, cache_write: p.3 };
            let u = TokenUsage { input: u.0, output: u.1, cached_input: u.2, cache_write: u.3 };
            let _ = p.cost_micros(&u);
        }
    }

    // ---- the embedded catalog ----

    #[test]
    fn builtin_catalog_parses_and_records_its_source() {
        let catalog = Catalog::try_builtin().unwrap();
        let source = catalog.source().unwrap();
        assert_eq!(source.name, "litellm model_prices_and_context_window.json");
        assert_eq!(source.version, "litellm 1.109.1");
        assert_eq!(source.sha256.len(), 64);
        assert!(
            source
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(Catalog::builtin().len(), catalog.len());
    }

    #[test]
    fn builtin_catalog_covers_enough_chat_models_and_providers() {
        let catalog = Catalog::builtin();
        let chat: Vec<_> = catalog
            .iter()
            .filter(|m| m.mode == ModelMode::Chat)
            .collect();
        assert!(chat.len() >= 45, "only {} chat models", chat.len());
        let providers: BTreeSet<&str> = chat.iter().map(|m| m.provider.as_str()).collect();
        assert!(providers.len() >= 6, "only providers {providers:?}");
        let embeddings = catalog
            .iter()
            .filter(|m| m.mode == ModelMode::Embedding)
            .count();
        assert!(embeddings >= 4, "only {embeddings} embedding models");
        assert!(catalog.len() >= 55);
        let known = [
            "openai",
            "anthropic",
            "gemini",
            "mistral",
            "deepseek",
            "groq",
            "together",
            "openrouter",
            "xai",
        ];
        for m in catalog.iter() {
            assert!(
                known.contains(&m.provider.as_str()),
                "{}: unknown provider {}",
                m.id,
                m.provider
            );
        }
    }

    #[test]
    fn builtin_catalog_ids_and_aliases_are_unique() {
        let catalog = Catalog::builtin();
        let mut names = HashSet::new();
        for m in catalog.iter() {
            assert!(names.insert(m.id.as_str()), "duplicate name {}", m.id);
            for alias in &m.aliases {
                assert!(names.insert(alias.as_str()), "duplicate name {alias}");
            }
        }
        // Every name resolves to the entry that declares it.
        for m in catalog.iter() {
            for name in std::iter::once(&m.id).chain(&m.aliases) {
                assert!(Arc::ptr_eq(catalog.get(name).unwrap(), m), "{name}");
            }
            assert!(
                m.aliases.contains(&format!("{}/{}", m.provider, m.id)),
                "{}: no provider alias",
                m.id
            );
        }
    }

    #[test]
    fn builtin_iteration_is_sorted_by_id_and_yields_each_entry_once() {
        let catalog = Catalog::builtin();
        let ids: Vec<&str> = catalog.iter().map(|m| m.id.as_str()).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(ids, sorted);
        assert_eq!(ids.len(), catalog.len());
    }

    #[test]
    fn every_builtin_model_is_usable() {
        for m in Catalog::builtin().iter() {
            let p = m.price.unwrap_or_else(|| panic!("{}: no price", m.id));
            assert!(
                m.context_window.is_some_and(|c| c > 0),
                "{}: no context window",
                m.id
            );
            assert!(!m.upstream_model.is_empty(), "{}", m.id);
            match m.mode {
                ModelMode::Chat => {
                    assert!(p.output > 0, "{}: free output", m.id);
                    assert!(m.max_output_tokens.is_some(), "{}: no max output", m.id);
                    assert!(m.output_vector_size.is_none(), "{}", m.id);
                }
                ModelMode::Embedding => {
                    assert!(p.input > 0, "{}: free input", m.id);
                    assert_eq!(m.max_output_tokens, None, "{}", m.id);
                }
            }
            // A cache read never costs more than an uncached token.
            assert!(p.cached_input.is_none_or(|c| c <= p.input), "{}", m.id);
            // Catalog deprecations are in the future of the derivation date (2026-11-21) and well formed.
            if let Some(date) = &m.deprecation_date {
                let b = date.as_bytes();
                assert!(
                    b.len() == 10 && b[4] == b'-' && b[7] == b'-',
                    "{}: {date}",
                    m.id
                );
                assert!(date.as_str() >= "2026-11-21", "{}: deprecated {date}", m.id);
            }
        }
    }

    #[test]
    fn builtin_spot_checks() {
        let catalog = Catalog::builtin();
        let sonnet = catalog.get("claude-sonnet-4-5").unwrap();
        assert_eq!(sonnet.provider, "anthropic");
        assert_eq!(sonnet.context_window, Some(200_000));
        assert!(
            sonnet.capabilities.tools
                && sonnet.capabilities.vision
                && sonnet.capabilities.reasoning
        );
        let flash = catalog.get("gemini/gemini-2.5-flash").unwrap();
        assert_eq!(flash.id, "gemini-2.5-flash");
        assert_eq!(flash.provider, "gemini");
        let large = catalog.get("mistral-large").unwrap();
        assert_eq!(large.id, "mistral-large-latest");
        assert_eq!(large.upstream_model, "mistral-large-latest");
        let oss = catalog.get("gpt-oss-120b").unwrap();
        assert_eq!(
            (oss.provider.as_str(), oss.upstream_model.as_str()),
            ("groq", "openai/gpt-oss-120b")
        );
        assert!(Arc::ptr_eq(
            catalog.get("groq/openai/gpt-oss-120b").unwrap(),
            oss
        ));
        let small = catalog.get("text-embedding-3-small").unwrap();
        assert_eq!(small.mode, ModelMode::Embedding);
        assert_eq!(small.output_vector_size, Some(1536));
        assert_eq!(small.price.unwrap().input, 20_000);
        assert!(Arc::ptr_eq(
            catalog.get("openai/gpt-4o").unwrap(),
            catalog.get("gpt-4o").unwrap()
        ));
        // Exact lookup only.
        assert!(catalog.get("GPT-4O").is_none());
        assert!(catalog.get(" gpt-4o").is_none());
        assert!(catalog.get("").is_none());
        // Deprecated before the derivation date: not carried.
        assert!(catalog.get("o4-mini").is_none());
    }

    #[test]
    fn derive_catalog_script_check_passes() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let input =
            root.join("../shared/data/priors/litellm-prices/model_prices_and_context_window.json");
        let python = Command::new("python3").arg("--version").output();
        if !input.is_file() || !python.is_ok_and(|o| o.status.success()) {
            println!(
                "SKIP derive_catalog_script_check_passes: python3 or {} not available",
                input.display()
            );
            return;
        }
        let out = Command::new("python3")
            .current_dir(&root)
            .args([
                "scripts/derive_catalog.py",
                "--check",
                "--markdown",
                "docs/catalog.md",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "derive_catalog.py --check failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // ---- Catalog operations ----

    #[test]
    fn empty_catalog() {
        let catalog = Catalog::empty();
        assert!(catalog.is_empty());
        assert_eq!(catalog.len(), 0);
        assert!(catalog.source().is_none());
        assert!(catalog.get("gpt-4o").is_none());
        assert_eq!(catalog.iter().count(), 0);
    }

    #[test]
    fn insert_adds_a_new_model_with_its_aliases() {
        let mut catalog = Catalog::builtin();
        let before = catalog.len();
        catalog.insert(entry("my-local-llama", &["local/llama"], 0));
        assert_eq!(catalog.len(), before + 1);
        assert_eq!(catalog.get("local/llama").unwrap().id, "my-local-llama");
        assert_eq!(catalog.get("my-local-llama").unwrap().id, "my-local-llama");
        assert_eq!(
            catalog.iter().filter(|m| m.id == "my-local-llama").count(),
            1
        );
    }

    #[test]
    fn insert_overrides_an_entry_and_replaces_its_aliases() {
        let mut catalog = Catalog::builtin();
        let before = catalog.len();
        assert!(catalog.get("openai/gpt-4o").is_some());
        catalog.insert(entry("gpt-4o", &["negotiated/gpt-4o"], 1_000_000));
        assert_eq!(catalog.len(), before);
        let new = catalog.get("gpt-4o").unwrap();
        assert_eq!(new.price.unwrap().input, 1_000_000);
        assert!(Arc::ptr_eq(catalog.get("negotiated/gpt-4o").unwrap(), new));
        // The old entry's alias no longer resolves.
        assert!(catalog.get("openai/gpt-4o").is_none());
        // Other entries are untouched.
        assert_eq!(catalog.get("openai/gpt-4o-mini").unwrap().id, "gpt-4o-mini");
        assert_eq!(catalog.iter().filter(|m| m.id == "gpt-4o").count(), 1);
    }

    #[test]
    fn aliases_never_shadow_another_entrys_id() {
        let mut catalog = Catalog::empty();
        catalog.insert(entry("a", &["shared"], 1));
        catalog.insert(entry("b", &["a", "shared"], 2));
        // "a" is an id: it keeps resolving to entry a.
        assert_eq!(catalog.get("a").unwrap().id, "a");
        // A plain alias is taken over by the most recent insert.
        assert_eq!(catalog.get("shared").unwrap().id, "b");
        // An id takes over a name that was only an alias.
        catalog.insert(entry("shared", &[], 3));
        assert_eq!(catalog.get("shared").unwrap().id, "shared");
        assert_eq!(catalog.get("b").unwrap().id, "b");
        // Re-inserting a does not disturb names now owned by others.
        catalog.insert(entry("a", &["shared", "a2"], 4));
        assert_eq!(catalog.get("shared").unwrap().id, "shared");
        assert_eq!(catalog.get("a2").unwrap().price.unwrap().input, 4);
        assert_eq!(catalog.len(), 3);
        let ids: Vec<&str> = catalog.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "shared"]);
    }

    #[test]
    fn from_json_rejects_duplicates_and_unknown_fields() {
        let model = |id: &str, alias: &str| {
            format!(
                r#"{{"id":"{id}","provider":"openai","upstream_model":"{id}","mode":"chat","aliases":["{alias}"]}}"#
            )
        };
        let doc =
            |models: &[String]| format!(r#"{{"source":null,"models":[{}]}}"#, models.join(","));

        let ok =
            Catalog::from_json(&doc(&[model("x", "openai/x"), model("y", "openai/y")])).unwrap();
        assert_eq!(ok.len(), 2);
        assert!(ok.source().is_none());
        let x = ok.get("x").unwrap();
        assert_eq!(x.price, None);
        assert_eq!(x.capabilities, Capabilities::default());

        assert!(matches!(
            Catalog::from_json(&doc(&[model("x", "a"), model("x", "b")])),
            Err(CatalogError::DuplicateId(id)) if id == "x"
        ));
        assert!(matches!(
            Catalog::from_json(&doc(&[model("x", "same"), model("y", "same")])),
            Err(CatalogError::DuplicateName { name, first, second }) if name == "same" && first == "x" && second == "y"
        ));
        assert!(matches!(
            Catalog::from_json(&doc(&[model("x", "a"), model("y", "x")])),
            Err(CatalogError::DuplicateName { .. })
        ));
        let unknown = r#"{"models":[{"id":"x","provider":"openai","upstream_model":"x","mode":"chat","colour":"red"}]}"#;
        assert!(matches!(
            Catalog::from_json(unknown),
            Err(CatalogError::Json(_))
        ));
        let bad_mode =
            r#"{"models":[{"id":"x","provider":"openai","upstream_model":"x","mode":"audio"}]}"#;
        assert!(matches!(
            Catalog::from_json(bad_mode),
            Err(CatalogError::Json(_))
        ));
        assert!(Catalog::from_json("not json").is_err());
    }

    #[test]
    fn model_entry_round_trips_through_json() {
        for m in Catalog::builtin().iter() {
            let json = serde_json::to_string(&**m).unwrap();
            let back: ModelEntry = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, &**m);
        }
        let json = serde_json::to_value(ModelMode::Embedding).unwrap();
        assert_eq!(json, serde_json::json!("embedding"));
    }
}
