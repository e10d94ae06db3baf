//! Configuration: the TOML file (`kairos.toml`), zero-config from the environment, and the
//! validated runtime [`Config`].
//!
//! Two steps. [`FileConfig`] is the file as written (`deny_unknown_fields`: a typo is an error,
//! never a silently ignored option). [`FileConfig::validate`] turns it into a [`Config`] or
//! reports EVERY problem at once, each with its path (`providers.openai.base_url: ...`).
//! Secrets are referenced, never inlined (`api_key = "env:OPENAI_API_KEY"` or `"file:/run/key"`),
//! and live in [`secrecy::SecretString`], which redacts itself in `Debug` and never serialises.
//!
//! The `KAIROS_*` environment overrides are all in [`crate::env`].

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use kairos_providers::client::BaseUrl;
use secrecy::SecretString;
use serde::Deserialize;

use crate::catalog::{Capabilities, ModelEntry, ModelMode, Price};
use crate::env::EnvSource;

// ---------------------------------------------------------------------------------------------
// The file
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSection>,
    #[serde(default)]
    pub models: Vec<ModelSection>,
    #[serde(default)]
    pub logging: LoggingSection,
    #[serde(default)]
    pub routing: RoutingSection,
    /// Named routing strategies (fallback, loadbalance, conditional), see [`crate::strategy`].
    #[serde(default)]
    pub strategies: BTreeMap<String, crate::strategy::StrategySection>,
    #[serde(default)]
    pub resilience: ResilienceSection,
}

/// `[resilience]`: retry and health defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResilienceSection {
    /// Attempts per target, the first one included (default 3: two retries).
    pub retry_attempts: Option<u32>,
    pub base_backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    /// A provider's Retry-After longer than this moves on instead of waiting (default 5000).
    pub retry_after_cap_ms: Option<u64>,
    pub retry_on_status: Option<Vec<u16>>,
    /// Allow one resend to the same target after an ambiguous failure (connection lost or no
    /// headers in time after the request was written: the provider may have run and billed
    /// it). Default false.
    pub retry_ambiguous: Option<bool>,
    /// Retries in flight may be at most this share of active requests (default 0.2)...
    pub retry_budget_ratio: Option<f64>,
    /// ...but always at least this many (default 3).
    pub retry_budget_min: Option<u32>,
    /// Consecutive failures that eject a target (default 5).
    pub eject_after_failures: Option<u32>,
    /// First ejection length; doubles per repeated ejection (default 30000).
    pub base_ejection_ms: Option<u64>,
    /// Window of the error rate used for load-balancing weights (default 30000).
    pub error_window_ms: Option<u64>,
    /// Longest pause a provider's Retry-After may impose on a target (default 60000).
    pub max_cooldown_ms: Option<u64>,
}

/// `[routing]`: how `model="auto"` decides.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSection {
    /// Default quality bar: a number in [0, 1] or `economy` / `balanced` / `premium`.
    pub default_quality: Option<QualitySetting>,
    /// The baseline model for savings (default: the best-quality candidate for the task).
    pub reference_model: Option<String>,
    /// Models `auto` may choose (default: every routable chat model).
    pub candidates: Option<Vec<String>>,
    /// Quality estimates overriding the built-in priors.
    #[serde(default)]
    pub quality: Vec<QualityOverrideSection>,
    /// What a successful answer is worth, in USD: `auto` then picks the candidate with the highest
    /// expected value (`value · quality − cost`) among those that clear the bar, instead of the
    /// cheapest. Per request: `x-kairos-answer-value-usd` / `kairos.value_usd`.
    pub answer_value_usd: Option<f64>,
    /// `[routing.learning]`: the signal loop (learned quality per workspace and prompt).
    #[serde(default)]
    pub learning: LearningSection,
}

/// `[routing.learning]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearningSection {
    /// Learn from outcomes (default true). Off: routing uses the priors only.
    pub enabled: Option<bool>,
    /// Share of `auto` requests that explore uncertain candidates (Thompson sampling); never
    /// for `strict` requests. Default 0.05.
    pub explore: Option<f64>,
    /// Neighbouring past prompts per model in the prompt-level estimate (default 20).
    pub neighbours: Option<usize>,
    /// Upper bound on a prior's worth, in outcomes (default 10).
    pub prior_strength_cap: Option<f64>,
    /// Embedded outcomes kept per workspace for the neighbour search (default 4096).
    pub max_points: Option<usize>,
    /// Outcome keys remembered per workspace for idempotent replacement (default 262144; the
    /// oldest are forgotten first, their contribution stays). Bounds the learner's memory.
    pub max_outcomes: Option<usize>,
    /// How often each replica reads new outcomes from the database, in ms (default 2000).
    pub refresh_ms: Option<u64>,
    /// Embed the prompts of pinned-model and strategy requests too (default true), so that
    /// their outcomes are prompt-level evidence for the model that served them.
    pub embed_pinned: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum QualitySetting {
    Number(f64),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityOverrideSection {
    pub model: String,
    pub task: String,
    pub mean: f64,
    pub std: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<String>,
    /// The admin API listener (`off` disables it). Keep it on loopback or a private network.
    pub admin_listen: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub header_read_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub shutdown_grace_ms: Option<u64>,
    pub max_in_flight: Option<u64>,
    /// Cap on one upstream response (a non-stream body, or all bytes of a stream).
    pub max_response_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub data_dir: Option<String>,
    /// `sqlite://...`, `postgres://...`, or a secret reference (`env:NAME`) to one.
    pub database_url: Option<String>,
    /// `redis://...` (or a secret reference): rate limits and budget counters shared by the
    /// replicas. Unset: kept in process.
    pub redis_url: Option<String>,
    /// Longest wait for one Redis decision before rate limits fall back to the local limiter
    /// and budgets refuse (default 50).
    pub redis_timeout_ms: Option<u64>,
    /// Budget leases: longest use of one block of budget reserved in Redis (default 30000;
    /// 0: every reservation is a Redis call).
    pub budget_lease_max_age_ms: Option<u64>,
    /// How often a live budget lease is confirmed in Redis (default 500).
    pub budget_lease_validate_ms: Option<u64>,
    /// Steady demand a scope set needs before a budget lease is taken (default 1000).
    pub budget_lease_warmup_ms: Option<u64>,
    /// Rate leases: longest use of a block of rate units (default 20; 0: exact GCRA).
    pub rate_lease_ttl_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Secret reference to the master key.
    pub master_key: Option<String>,
    /// Secret reference (`env:NAME`, `file:PATH`) to the vault keyring that encrypts
    /// workspaces' provider credentials (`KAIROS_SECRET_KEY` overrides it).
    pub secret_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSection {
    /// `error|warn|info|debug|trace` or an `EnvFilter` directive.
    pub level: Option<String>,
    /// `text` or `json`.
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    pub kind: String,
    pub base_url: Option<String>,
    /// Secret reference (`env:NAME` / `file:PATH`).
    pub api_key: Option<String>,
    /// Azure OpenAI `api-version`.
    pub api_version: Option<String>,
    /// Ask OpenAI-compatible upstreams for usage on streams (`stream_options.include_usage`).
    pub stream_usage: Option<bool>,
    /// Static headers added to every upstream request (e.g. OpenRouter's `HTTP-Referer`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Whether the built-in catalog's models for this provider kind are served by this provider.
    pub catalog: Option<bool>,
    pub connect_timeout_ms: Option<u64>,
    /// Time to the first response byte (headers).
    pub ttfb_timeout_ms: Option<u64>,
    /// Longest silence allowed between two chunks of a stream.
    pub stream_idle_timeout_ms: Option<u64>,
    /// `max_tokens` sent to upstreams that require one when the caller gives none.
    pub default_max_tokens: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub id: String,
    pub provider: String,
    pub upstream_model: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `chat` (default) or `embedding`.
    pub mode: Option<String>,
    pub context_window: Option<u32>,
    pub max_output_tokens: Option<u32>,
    pub price: Option<PriceSection>,
    pub capabilities: Option<CapabilitiesSection>,
}

/// USD per million tokens.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSection {
    pub input: f64,
    pub output: f64,
    pub cached_input: Option<f64>,
    pub cache_write: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesSection {
    #[serde(default)]
    pub tools: bool,
    #[serde(default)]
    pub vision: bool,
    #[serde(default)]
    pub json_mode: bool,
    #[serde(default)]
    pub reasoning: bool,
}

// ---------------------------------------------------------------------------------------------
// Provider kinds
// ---------------------------------------------------------------------------------------------

/// The provider kinds KairosRoute knows, with their wire API and public defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    OpenAi,
    Azure,
    Anthropic,
    Gemini,
    Mistral,
    DeepSeek,
    Groq,
    Together,
    OpenRouter,
    Xai,
    Ollama,
    Vllm,
    /// Any other server speaking the OpenAI Chat Completions API.
    OpenAiCompatible,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 13] = [
        ProviderKind::OpenAi,
        ProviderKind::Azure,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::Mistral,
        ProviderKind::DeepSeek,
        ProviderKind::Groq,
        ProviderKind::Together,
        ProviderKind::OpenRouter,
        ProviderKind::Xai,
        ProviderKind::Ollama,
        ProviderKind::Vllm,
        ProviderKind::OpenAiCompatible,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Azure => "azure",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Mistral => "mistral",
            ProviderKind::DeepSeek => "deepseek",
            ProviderKind::Groq => "groq",
            ProviderKind::Together => "together",
            ProviderKind::OpenRouter => "openrouter",
            ProviderKind::Xai => "xai",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Vllm => "vllm",
            ProviderKind::OpenAiCompatible => "openai_compatible",
        }
    }

    pub fn parse(s: &str) -> Option<ProviderKind> {
        ProviderKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The public endpoint, or None when the operator must give one.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderKind::Mistral => Some("https://api.mistral.ai/v1"),
            ProviderKind::DeepSeek => Some("https://api.deepseek.com/v1"),
            ProviderKind::Groq => Some("https://api.groq.com/openai/v1"),
            ProviderKind::Together => Some("https://api.together.xyz/v1"),
            ProviderKind::OpenRouter => Some("https://openrouter.ai/api/v1"),
            ProviderKind::Xai => Some("https://api.x.ai/v1"),
            ProviderKind::Ollama => Some("http://localhost:11434/v1"),
            ProviderKind::Azure | ProviderKind::Vllm | ProviderKind::OpenAiCompatible => None,
        }
    }

    /// Whether the provider refuses requests without a key.
    pub fn needs_key(self) -> bool {
        !matches!(
            self,
            ProviderKind::Ollama | ProviderKind::Vllm | ProviderKind::OpenAiCompatible
        )
    }

    /// The provider name used by the built-in catalog for models of this kind.
    pub fn catalog_name(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi | ProviderKind::Azure => Some("openai"),
            ProviderKind::Anthropic => Some("anthropic"),
            ProviderKind::Gemini => Some("gemini"),
            ProviderKind::Mistral => Some("mistral"),
            ProviderKind::DeepSeek => Some("deepseek"),
            ProviderKind::Groq => Some("groq"),
            ProviderKind::Together => Some("together"),
            ProviderKind::OpenRouter => Some("openrouter"),
            ProviderKind::Xai => Some("xai"),
            ProviderKind::Ollama | ProviderKind::Vllm | ProviderKind::OpenAiCompatible => None,
        }
    }

    /// Environment variables of the zero-config start: (key var, base-URL var).
    pub fn env_vars(self) -> (Option<&'static str>, Option<&'static str>) {
        match self {
            ProviderKind::OpenAi => (Some("OPENAI_API_KEY"), Some("OPENAI_BASE_URL")),
            ProviderKind::Azure => (Some("AZURE_OPENAI_API_KEY"), Some("AZURE_OPENAI_ENDPOINT")),
            ProviderKind::Anthropic => (Some("ANTHROPIC_API_KEY"), Some("ANTHROPIC_BASE_URL")),
            ProviderKind::Gemini => (Some("GEMINI_API_KEY"), Some("GEMINI_BASE_URL")),
            ProviderKind::Mistral => (Some("MISTRAL_API_KEY"), Some("MISTRAL_BASE_URL")),
            ProviderKind::DeepSeek => (Some("DEEPSEEK_API_KEY"), Some("DEEPSEEK_BASE_URL")),
            ProviderKind::Groq => (Some("GROQ_API_KEY"), Some("GROQ_BASE_URL")),
            ProviderKind::Together => (Some("TOGETHER_API_KEY"), Some("TOGETHER_BASE_URL")),
            ProviderKind::OpenRouter => (Some("OPENROUTER_API_KEY"), Some("OPENROUTER_BASE_URL")),
            ProviderKind::Xai => (Some("XAI_API_KEY"), Some("XAI_BASE_URL")),
            ProviderKind::Ollama => (None, Some("OLLAMA_BASE_URL")),
            ProviderKind::Vllm => (Some("VLLM_API_KEY"), Some("VLLM_BASE_URL")),
            ProviderKind::OpenAiCompatible => (None, None),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The validated runtime config
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    /// None: generate one at first start and keep it in the data dir.
    pub master_key: Option<SecretString>,
    /// The vault keyring's specification (`kid:base64,...`).
    pub secret_key: Option<SecretString>,
    pub providers: Vec<ProviderConfig>,
    /// Models added or overridden by config (applied on top of the built-in catalog).
    pub models: Vec<ModelEntry>,
    pub logging: LoggingConfig,
    pub routing: crate::routing::RoutingConfig,
    pub strategies: BTreeMap<String, crate::strategy::StrategySection>,
    pub resilience: Resilience,
}

/// Validated `[resilience]`.
#[derive(Debug, Clone)]
pub struct Resilience {
    pub retry: crate::retry::RetryPolicy,
    pub budget_ratio: f64,
    pub budget_min: u32,
    pub health: crate::health::HealthConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `None`: no admin listener.
    pub admin_listen: Option<SocketAddr>,
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    /// Upper bound on one request, stream included.
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_in_flight: usize,
    pub max_response_bytes: usize,
}

#[derive(Debug)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    /// None: SQLite at `<data_dir>/kairos.db`.
    pub database_url: Option<SecretString>,
    /// None: rate limits and budgets in process.
    pub redis_url: Option<SecretString>,
    pub redis_timeout: Duration,
    /// Lease settings of the rate limits and budgets (`kairos_limits::LimitsOptions`).
    pub leases: LeaseConfig,
}

/// `[storage]` lease settings, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    pub budget_lease_max_age: Duration,
    pub budget_lease_validate: Duration,
    pub budget_lease_warmup: Duration,
    pub rate_lease_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct LoggingConfig {
    pub level: String,
    pub json: bool,
}

#[derive(Debug)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: BaseUrl,
    pub api_key: Option<SecretString>,
    pub api_version: Option<String>,
    pub stream_usage: bool,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub catalog: bool,
    pub connect_timeout: Duration,
    pub ttfb_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub default_max_tokens: u32,
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One problem, with the path of the offending setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

/// Every problem found, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.0))]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

fn render(issues: &[ConfigIssue]) -> String {
    let mut s = format!(
        "{} configuration error{}:",
        issues.len(),
        if issues.len() == 1 { "" } else { "s" }
    );
    for i in issues {
        s.push_str(&format!("\n  {}: {}", i.path, i.message));
    }
    s
}

struct Issues(Vec<ConfigIssue>);

impl Issues {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

impl FileConfig {
    /// Parse TOML text. Syntax and type errors name the offending key path.
    pub fn parse(text: &str) -> Result<FileConfig, ConfigErrors> {
        let de = toml::Deserializer::parse(text).map_err(|e| {
            ConfigErrors(vec![ConfigIssue {
                path: "(file)".into(),
                message: one_line(&e.to_string()),
            }])
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ConfigErrors(vec![ConfigIssue {
                path: if path == "." { "(file)".into() } else { path },
                message: one_line(&e.into_inner().to_string()),
            }])
        })
    }

    pub fn load(path: &std::path::Path) -> Result<FileConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigIssue {
                path: path.display().to_string(),
                message: format!("cannot read the file: {e}"),
            }])
        })?;
        FileConfig::parse(&text)
    }

    /// The zero-config file: one provider per conventional environment variable that is set.
    pub fn from_env(env: &dyn EnvSource) -> FileConfig {
        let mut cfg = FileConfig::default();
        for kind in ProviderKind::ALL {
            let (key_var, url_var) = kind.env_vars();
            let key = key_var.and_then(|v| env.get(v)).filter(|v| !v.is_empty());
            let url = url_var.and_then(|v| env.get(v)).filter(|v| !v.is_empty());
            let configured = match kind {
                // Key-less local servers are configured by their URL alone.
                ProviderKind::Ollama => url.is_some(),
                ProviderKind::Vllm => url.is_some(),
                ProviderKind::Azure => key.is_some() && url.is_some(),
                ProviderKind::OpenAiCompatible => false,
                _ => key.is_some(),
            };
            if !configured {
                continue;
            }
            let mut p = ProviderSection {
                kind: kind.as_str().to_owned(),
                base_url: url,
                api_key: key_var
                    .filter(|_| key.is_some())
                    .map(|v| format!("env:{v}")),
                ..Default::default()
            };
            if kind == ProviderKind::Azure {
                p.api_version = env.get("AZURE_OPENAI_API_VERSION");
            }
            if kind == ProviderKind::Gemini && p.api_key.is_none() {
                p.api_key = env
                    .get("GOOGLE_API_KEY")
                    .map(|_| "env:GOOGLE_API_KEY".to_owned());
            }
            cfg.providers.insert(kind.as_str().to_owned(), p);
        }
        if !cfg.providers.contains_key("gemini")
            && env.get("GOOGLE_API_KEY").is_some_and(|k| !k.is_empty())
        {
            cfg.providers.insert(
                "gemini".into(),
                ProviderSection {
                    kind: "gemini".into(),
                    base_url: env.get("GEMINI_BASE_URL"),
                    api_key: Some("env:GOOGLE_API_KEY".into()),
                    ..Default::default()
                },
            );
        }
        cfg
    }

    /// Validate everything and build the runtime config. `env` resolves `env:` references and
    /// supplies the `KAIROS_*` overrides.
    pub fn validate(self, env: &dyn EnvSource) -> Result<Config, ConfigErrors> {
        let mut issues = Issues(Vec::new());
        let ov = crate::env::Overrides::read(env);

        // server
        let listen_s = ov
            .listen
            .clone()
            .or(self.server.listen.clone())
            .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let listen = match listen_s.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                issues.push(
                    if ov.listen.is_some() {
                        "KAIROS_LISTEN"
                    } else {
                        "server.listen"
                    },
                    format!("`{listen_s}` is not an address like 127.0.0.1:8080"),
                );
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }
        };
        let admin_s = ov
            .admin_listen
            .clone()
            .or(self.server.admin_listen.clone())
            .unwrap_or_else(|| "127.0.0.1:8091".to_owned());
        let admin_listen = if admin_s == "off" {
            None
        } else {
            match admin_s.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    issues.push(
                        if ov.admin_listen.is_some() {
                            "KAIROS_ADMIN_LISTEN"
                        } else {
                            "server.admin_listen"
                        },
                        format!("`{admin_s}` is not an address like 127.0.0.1:8091 (or `off`)"),
                    );
                    None
                }
            }
        };
        let max_body = self.server.max_body_bytes.unwrap_or(4 * 1024 * 1024);
        if !(1024..=256 * 1024 * 1024).contains(&max_body) {
            issues.push(
                "server.max_body_bytes",
                "must be between 1024 and 268435456",
            );
        }
        let ms = |v: Option<u64>, default: u64, path: &str, issues: &mut Issues| {
            let v = v.unwrap_or(default);
            if v == 0 || v > 24 * 3600 * 1000 {
                issues.push(path, "must be between 1 ms and 24 h");
            }
            Duration::from_millis(v)
        };
        let server = ServerConfig {
            listen,
            admin_listen,
            max_body_bytes: max_body as usize,
            header_read_timeout: ms(
                self.server.header_read_timeout_ms,
                10_000,
                "server.header_read_timeout_ms",
                &mut issues,
            ),
            request_timeout: ms(
                self.server.request_timeout_ms,
                600_000,
                "server.request_timeout_ms",
                &mut issues,
            ),
            shutdown_grace: ms(
                self.server.shutdown_grace_ms,
                30_000,
                "server.shutdown_grace_ms",
                &mut issues,
            ),
            max_in_flight: match self.server.max_in_flight {
                None => 10_000,
                Some(v) if v >= 1 => v as usize,
                Some(_) => {
                    issues.push("server.max_in_flight", "must be at least 1");
                    10_000
                }
            },
            max_response_bytes: match self.server.max_response_bytes {
                None => 64 * 1024 * 1024,
                Some(v) if (1024..=1 << 32).contains(&v) => v as usize,
                Some(_) => {
                    issues.push(
                        "server.max_response_bytes",
                        "must be between 1 KiB and 4 GiB",
                    );
                    64 * 1024 * 1024
                }
            },
        };

        // storage
        let data_dir = PathBuf::from(
            ov.data_dir
                .clone()
                .or(self.storage.data_dir.clone())
                .unwrap_or_else(|| "./.kairos".to_owned()),
        );
        let database_url = match ov.database_url.clone() {
            Some(u) => Some(u),
            None => match &self.storage.database_url {
                Some(r) => resolve_maybe_secret(r, env, "storage.database_url", &mut issues),
                None => None,
            },
        };
        let redis_url = match ov.redis_url.clone() {
            Some(u) => Some(u),
            None => match &self.storage.redis_url {
                Some(r) => resolve_maybe_secret(r, env, "storage.redis_url", &mut issues),
                None => None,
            },
        };
        let redis_timeout_ms = ov
            .redis_timeout_ms
            .as_deref()
            .map(|v| v.parse::<u64>().unwrap_or(0))
            .or(self.storage.redis_timeout_ms)
            .unwrap_or(50);
        if !(1..=60_000).contains(&redis_timeout_ms) {
            issues.push(
                "storage.redis_timeout_ms",
                "must be between 1 and 60000 (KAIROS_REDIS_TIMEOUT_MS likewise)",
            );
        }
        let redis_timeout = Duration::from_millis(redis_timeout_ms.clamp(1, 60_000));
        let mut lease_ms =
            |value: Option<u64>, default: u64, key: &'static str, lo: u64, hi: u64| {
                let v = value.unwrap_or(default);
                if !(lo..=hi).contains(&v) {
                    issues.push(key, format!("must be between {lo} and {hi}"));
                }
                Duration::from_millis(v.clamp(lo, hi))
            };
        let leases = LeaseConfig {
            budget_lease_max_age: lease_ms(
                self.storage.budget_lease_max_age_ms,
                30_000,
                "storage.budget_lease_max_age_ms",
                0,
                300_000,
            ),
            budget_lease_validate: lease_ms(
                self.storage.budget_lease_validate_ms,
                500,
                "storage.budget_lease_validate_ms",
                10,
                60_000,
            ),
            budget_lease_warmup: lease_ms(
                self.storage.budget_lease_warmup_ms,
                1_000,
                "storage.budget_lease_warmup_ms",
                0,
                600_000,
            ),
            rate_lease_ttl: lease_ms(
                self.storage.rate_lease_ttl_ms,
                20,
                "storage.rate_lease_ttl_ms",
                0,
                1_000,
            ),
        };
        if let Some(u) = &redis_url
            && !(u.starts_with("redis://") || u.starts_with("rediss://"))
        {
            issues.push(
                if ov.redis_url.is_some() {
                    "KAIROS_REDIS_URL"
                } else {
                    "storage.redis_url"
                },
                "must be a redis://host:port URL",
            );
        }
        if let Some(u) = &database_url
            && !(u.starts_with("sqlite:")
                || u.starts_with("postgres://")
                || u.starts_with("postgresql://"))
        {
            issues.push(
                if ov.database_url.is_some() {
                    "KAIROS_DATABASE_URL"
                } else {
                    "storage.database_url"
                },
                "must start with sqlite:, postgres:// or postgresql://",
            );
        }

        // auth
        let secret_key = match ov.secret_key.clone() {
            Some(k) => Some(k),
            None => self
                .auth
                .secret_key
                .as_deref()
                .and_then(|r| resolve_secret(r, env, "auth.secret_key", &mut issues)),
        };
        if let Some(k) = &secret_key
            && let Err(e) = kairos_vault::Keyring::parse_with_origin(k, "KAIROS_SECRET_KEY")
        {
            issues.push(
                if ov.secret_key.is_some() {
                    "KAIROS_SECRET_KEY"
                } else {
                    "auth.secret_key"
                },
                e.to_string(),
            );
        }
        let master_key = match ov.master_key.clone() {
            Some(k) => Some(k),
            None => self
                .auth
                .master_key
                .as_deref()
                .and_then(|r| resolve_secret(r, env, "auth.master_key", &mut issues)),
        };
        if let Some(k) = &master_key
            && k.len() < 16
        {
            issues.push(
                "auth.master_key",
                "the master key must be at least 16 characters",
            );
        }

        // logging
        let logging = LoggingConfig {
            level: ov
                .log
                .clone()
                .or(self.logging.level.clone())
                .unwrap_or_else(|| "info".to_owned()),
            json: match ov.log_format.as_deref().or(self.logging.format.as_deref()) {
                None | Some("text") => false,
                Some("json") => true,
                Some(other) => {
                    issues.push(
                        "logging.format",
                        format!("`{other}`: expected text or json"),
                    );
                    false
                }
            },
        };

        // providers
        let mut providers = Vec::new();
        for (name, p) in &self.providers {
            let path = format!("providers.{name}");
            if !valid_name(name) {
                issues.push(
                    &path,
                    "provider names use lowercase letters, digits, '-' and '_' (max 64)",
                );
            }
            let Some(kind) = ProviderKind::parse(&p.kind) else {
                issues.push(
                    format!("{path}.kind"),
                    format!(
                        "unknown provider kind `{}`; expected one of: {}",
                        p.kind,
                        ProviderKind::ALL.map(ProviderKind::as_str).join(", ")
                    ),
                );
                continue;
            };
            let base_s = p
                .base_url
                .clone()
                .or_else(|| kind.default_base_url().map(str::to_owned));
            let base_url = match base_s {
                None => {
                    issues.push(
                        format!("{path}.base_url"),
                        format!("required for kind `{}`", kind.as_str()),
                    );
                    None
                }
                Some(s) => match BaseUrl::parse(&s) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        issues.push(format!("{path}.base_url"), e);
                        None
                    }
                },
            };
            let api_key = p
                .api_key
                .as_deref()
                .and_then(|r| resolve_secret(r, env, &format!("{path}.api_key"), &mut issues));
            if p.api_key.is_none() && kind.needs_key() {
                issues.push(
                    format!("{path}.api_key"),
                    format!(
                        "required for kind `{}` (e.g. api_key = \"env:{}\")",
                        kind.as_str(),
                        kind.env_vars().0.unwrap_or("API_KEY")
                    ),
                );
            }
            if kind == ProviderKind::Azure
                && p.api_version.as_deref().is_some_and(|v| !valid_name(v))
            {
                issues.push(format!("{path}.api_version"), "invalid api-version");
            }
            let mut headers = Vec::new();
            for (k, v) in &p.headers {
                let hp = format!("{path}.headers.{k}");
                let lower = k.to_ascii_lowercase();
                if matches!(
                    lower.as_str(),
                    "authorization"
                        | "x-api-key"
                        | "api-key"
                        | "x-goog-api-key"
                        | "host"
                        | "content-length"
                        | "transfer-encoding"
                        | "connection"
                ) {
                    issues.push(
                        &hp,
                        "this header is managed by the gateway; put keys in api_key",
                    );
                    continue;
                }
                match (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    (Ok(n), Ok(val)) => headers.push((n, val)),
                    _ => issues.push(&hp, "not a valid header name/value (no CR/LF)"),
                }
            }
            let mut dur = |v: Option<u64>, d: u64, field: &str| {
                ms(v, d, &format!("{path}.{field}"), &mut issues)
            };
            let connect_timeout = dur(p.connect_timeout_ms, 10_000, "connect_timeout_ms");
            let ttfb_timeout = dur(p.ttfb_timeout_ms, 120_000, "ttfb_timeout_ms");
            let stream_idle_timeout =
                dur(p.stream_idle_timeout_ms, 120_000, "stream_idle_timeout_ms");
            let default_max_tokens = p.default_max_tokens.unwrap_or(4096);
            if default_max_tokens == 0 {
                issues.push(format!("{path}.default_max_tokens"), "must be at least 1");
            }
            if let Some(base_url) = base_url {
                providers.push(ProviderConfig {
                    name: name.clone(),
                    kind,
                    base_url,
                    api_key: api_key.map(SecretString::from),
                    api_version: p.api_version.clone(),
                    stream_usage: p.stream_usage.unwrap_or(true),
                    headers,
                    catalog: p.catalog.unwrap_or(kind.catalog_name().is_some()),
                    connect_timeout,
                    ttfb_timeout,
                    stream_idle_timeout,
                    default_max_tokens,
                });
            }
        }

        // models
        let mut models = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let path = format!("models[{i}]");
            if m.id.is_empty()
                || m.id.len() > 200
                || m.id.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                issues.push(
                    format!("{path}.id"),
                    "must be 1-200 characters without spaces or control characters",
                );
            }
            for name in std::iter::once(&m.id).chain(m.aliases.iter()) {
                if !seen.insert(name.clone()) {
                    issues.push(&path, format!("the name `{name}` is used twice"));
                }
            }
            if !self.providers.contains_key(&m.provider) {
                issues.push(
                    format!("{path}.provider"),
                    format!("no provider named `{}` is configured", m.provider),
                );
            }
            let mode = match m.mode.as_deref() {
                None | Some("chat") => ModelMode::Chat,
                Some("embedding") => ModelMode::Embedding,
                Some(o) => {
                    issues.push(
                        format!("{path}.mode"),
                        format!("`{o}`: expected chat or embedding"),
                    );
                    ModelMode::Chat
                }
            };
            let price = m.price.as_ref().and_then(|p| {
                let conv = |v: f64, field: &str, issues: &mut Issues| -> Option<u64> {
                    if v.is_finite() && (0.0..=100_000.0).contains(&v) {
                        Some((v * 1_000_000.0).round() as u64)
                    } else {
                        issues.push(
                            format!("{path}.price.{field}"),
                            "must be a USD amount per million tokens between 0 and 100000",
                        );
                        None
                    }
                };
                let input = conv(p.input, "input", &mut issues);
                let output = conv(p.output, "output", &mut issues);
                let cached = p.cached_input.map(|v| conv(v, "cached_input", &mut issues));
                let write = p.cache_write.map(|v| conv(v, "cache_write", &mut issues));
                Some(Price {
                    input: input?,
                    output: output?,
                    cached_input: cached.flatten(),
                    cache_write: write.flatten(),
                })
            });
            let caps = m.capabilities.as_ref().map_or(
                Capabilities {
                    tools: true,
                    vision: false,
                    json_mode: true,
                    reasoning: false,
                },
                |c| Capabilities {
                    tools: c.tools,
                    vision: c.vision,
                    json_mode: c.json_mode,
                    reasoning: c.reasoning,
                },
            );
            models.push(ModelEntry {
                id: m.id.clone(),
                provider: m.provider.clone(),
                upstream_model: m.upstream_model.clone().unwrap_or_else(|| m.id.clone()),
                mode,
                context_window: m.context_window,
                max_output_tokens: m.max_output_tokens,
                price,
                capabilities: caps,
                aliases: m.aliases.clone(),
                deprecation_date: None,
                output_vector_size: None,
            });
        }

        // routing
        let mut routing = crate::routing::RoutingConfig::default();
        if let Some(q) = &self.routing.default_quality {
            let parsed = match q {
                QualitySetting::Number(n) => crate::routing::parse_bar(&n.to_string()),
                QualitySetting::Name(s) => crate::routing::parse_bar(s),
            };
            match parsed {
                Some((v, tier)) => {
                    routing.default_bar = v;
                    routing.default_tier = tier;
                }
                None => issues.push(
                    "routing.default_quality",
                    "expected a number between 0 and 1 or one of economy, balanced, premium",
                ),
            }
        }
        routing.reference_model = self.routing.reference_model.clone();
        routing.candidates = self.routing.candidates.clone();
        if let Some(v) = self.routing.answer_value_usd {
            if v.is_finite() && v > 0.0 && v <= 1e6 {
                routing.answer_value_usd = Some(v);
            } else {
                issues.push(
                    "routing.answer_value_usd",
                    "must be a positive amount of USD (at most 1000000)",
                );
            }
        }
        {
            let l = &self.routing.learning;
            let d = kairos_router::learn::LearnConfig::default();
            let cfg = kairos_router::learn::LearnConfig {
                k: l.neighbours.unwrap_or(d.k),
                prior_cap: l.prior_strength_cap.unwrap_or(d.prior_cap),
                max_points: l.max_points.unwrap_or(d.max_points),
                max_outcomes: l.max_outcomes.unwrap_or(d.max_outcomes),
                explore: match ov.explore.as_deref() {
                    Some(v) => v.parse::<f64>().unwrap_or(f64::NAN),
                    None => l.explore.unwrap_or(d.explore),
                },
                ..d
            };
            match cfg.validate() {
                Ok(()) => routing.learning = cfg,
                Err(e) => issues.push("routing.learning", format!("{e} (KAIROS_EXPLORE likewise)")),
            }
            routing.learning_enabled = l.enabled.unwrap_or(true);
            routing.learning_embed_pinned = l.embed_pinned.unwrap_or(true);
            match l.refresh_ms {
                Some(ms) if !(100..=600_000).contains(&ms) => issues.push(
                    "routing.learning.refresh_ms",
                    "must be between 100 and 600000",
                ),
                Some(ms) => routing.learning_refresh = std::time::Duration::from_millis(ms),
                None => {}
            }
        }
        for (i, q) in self.routing.quality.iter().enumerate() {
            let path = format!("routing.quality[{i}]");
            let Some(task) = kairos_router::TaskType::parse(&q.task) else {
                issues.push(
                    format!("{path}.task"),
                    format!(
                        "unknown task `{}`; expected one of: {}",
                        q.task,
                        kairos_router::TaskType::ALL.map(|t| t.as_str()).join(", ")
                    ),
                );
                continue;
            };
            let std = q.std.unwrap_or(0.05);
            if !(q.mean.is_finite() && (0.0..=1.0).contains(&q.mean)) {
                issues.push(format!("{path}.mean"), "must be between 0 and 1");
                continue;
            }
            if !(std.is_finite() && std > 0.0 && std <= 1.0) {
                issues.push(format!("{path}.std"), "must be above 0 and at most 1");
                continue;
            }
            routing.quality_overrides.push((
                q.model.clone(),
                task,
                kairos_router::quality::QualityEstimate {
                    mean: q.mean,
                    std,
                    n_equiv: (q.mean * (1.0 - q.mean) / (std * std)).max(1.0),
                    source: "config".into(),
                },
            ));
        }

        // strategies
        let mut strategy_issues = Vec::new();
        crate::strategy::validate_strategies(&self.strategies, &mut strategy_issues);
        issues.0.extend(strategy_issues);
        for name in self.strategies.keys() {
            if self
                .models
                .iter()
                .any(|m| &m.id == name || m.aliases.contains(name))
            {
                issues.push(
                    format!("strategies.{name}"),
                    "a model of [[models]] has the same name; strategy names are used as model names",
                );
            }
        }

        // resilience
        let r = &self.resilience;
        let mut retry = crate::retry::RetryPolicy::default();
        if let Some(a) = r.retry_attempts {
            if (1..=10).contains(&a) {
                retry.max_attempts = a;
            } else {
                issues.push("resilience.retry_attempts", "must be between 1 and 10");
            }
        }
        if let Some(v) = r.base_backoff_ms {
            retry.base_backoff = Duration::from_millis(v);
        }
        if let Some(v) = r.max_backoff_ms {
            retry.max_backoff = Duration::from_millis(v);
        }
        if retry.max_backoff < retry.base_backoff {
            issues.push(
                "resilience.max_backoff_ms",
                "must be at least base_backoff_ms",
            );
        }
        if let Some(v) = r.retry_after_cap_ms {
            retry.retry_after_cap = Duration::from_millis(v);
        }
        if let Some(v) = r.retry_ambiguous {
            retry.retry_ambiguous = v;
        }
        if let Some(v) = &r.retry_on_status {
            if v.iter().any(|c| !(400..=599).contains(c)) {
                issues.push(
                    "resilience.retry_on_status",
                    "only error statuses (400-599)",
                );
            }
            retry.on_status = v.clone();
        }
        let budget_ratio = r.retry_budget_ratio.unwrap_or(0.2);
        if !(budget_ratio.is_finite() && (0.0..=1.0).contains(&budget_ratio)) {
            issues.push("resilience.retry_budget_ratio", "must be between 0 and 1");
        }
        let mut health = crate::health::HealthConfig::default();
        if let Some(v) = r.eject_after_failures {
            if v == 0 {
                issues.push("resilience.eject_after_failures", "must be at least 1");
            }
            health.consecutive_failures_to_eject = v;
        }
        if let Some(v) = r.base_ejection_ms {
            health.base_ejection = Duration::from_millis(v);
        }
        if let Some(v) = r.error_window_ms {
            health.window = Duration::from_millis(v.max(1));
        }
        if let Some(v) = r.max_cooldown_ms {
            health.max_retry_after = Duration::from_millis(v);
        }
        let resilience = Resilience {
            retry,
            budget_ratio,
            budget_min: r.retry_budget_min.unwrap_or(3),
            health,
        };

        if !issues.0.is_empty() {
            return Err(ConfigErrors(issues.0));
        }
        Ok(Config {
            strategies: self.strategies.clone(),
            resilience,
            server,
            storage: StorageConfig {
                data_dir,
                database_url: database_url.map(SecretString::from),
                redis_url: redis_url.map(SecretString::from),
                redis_timeout,
                leases,
            },
            master_key: master_key.map(SecretString::from),
            secret_key: secret_key.map(SecretString::from),
            providers,
            models,
            logging,
            routing,
        })
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// Resolve `env:NAME` / `file:PATH`. Inline literals are refused so that secrets never sit in a
/// config file that ends up in git.
fn resolve_secret(r: &str, env: &dyn EnvSource, path: &str, issues: &mut Issues) -> Option<String> {
    if let Some(var) = r.strip_prefix("env:") {
        match env.get(var) {
            Some(v) if !v.is_empty() => Some(v),
            _ => {
                issues.push(path, format!("the environment variable `{var}` is not set"));
                None
            }
        }
    } else if let Some(file) = r.strip_prefix("file:") {
        match std::fs::read_to_string(file) {
            Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
            Ok(_) => {
                issues.push(path, format!("the file `{file}` is empty"));
                None
            }
            Err(e) => {
                issues.push(path, format!("cannot read `{file}`: {e}"));
                None
            }
        }
    } else {
        issues.push(
            path,
            "secrets must be references: \"env:VARIABLE\" or \"file:/path\" (inline secrets are refused)",
        );
        None
    }
}

/// Like [`resolve_secret`] but a plain value is accepted too (a database URL without a password).
fn resolve_maybe_secret(
    r: &str,
    env: &dyn EnvSource,
    path: &str,
    issues: &mut Issues,
) -> Option<String> {
    if r.starts_with("env:") || r.starts_with("file:") {
        resolve_secret(r, env, path, issues)
    } else {
        Some(r.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::MapEnv;

    #[test]
    fn reports_every_problem_with_its_path() {
        let text = r#"
[server]
listen = "nowhere"
[providers.openai]
kind = "openai"
api_key = "sk-inline-secret"
[providers.local]
kind = "vllm"
[providers.weird]
kind = "banana"
[providers.az]
kind = "azure"
base_url = "https://user:pw@x.openai.azure.com"
api_key = "env:AZ_KEY"
headers = { "Authorization" = "Bearer x" }
[[models]]
id = "m1"
provider = "ghost"
price = { input = -1.0, output = 2.0 }
"#;
        let f = FileConfig::parse(text).unwrap();
        let err = f.validate(&MapEnv::default()).unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|i| i.path.as_str()).collect();
        for p in [
            "server.listen",
            "providers.openai.api_key",
            "providers.local.base_url",
            "providers.weird.kind",
            "providers.az.base_url",
            "providers.az.api_key",
            "providers.az.headers.Authorization",
            "models[0].provider",
            "models[0].price.input",
        ] {
            assert!(paths.contains(&p), "missing {p} in {paths:?}");
        }
        let text = err.to_string();
        assert!(!text.contains("sk-inline-secret"), "{text}");
    }

    #[test]
    fn unknown_fields_and_wrong_types_name_the_path() {
        let err = FileConfig::parse("[server]\nlisten_addr = \"x\"\n").unwrap_err();
        assert_eq!(err.0[0].path, "server.listen_addr");
        assert!(err.0[0].message.contains("listen_addr"), "{err}");
        let err = FileConfig::parse(
            "[providers.openai]\nkind = \"openai\"\nttfb_timeout_ms = \"soon\"\n",
        )
        .unwrap_err();
        assert_eq!(err.0[0].path, "providers.openai.ttfb_timeout_ms");
    }

    #[test]
    fn zero_config_from_env() {
        let env = MapEnv::from([
            ("OPENAI_API_KEY", "sk-test"),
            ("ANTHROPIC_API_KEY", "sk-ant"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/"),
            ("OLLAMA_BASE_URL", "http://127.0.0.1:11434/v1"),
            ("KAIROS_LISTEN", "127.0.0.1:0"),
        ]);
        let cfg = FileConfig::from_env(&env).validate(&env).unwrap();
        let names: Vec<&str> = cfg.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["anthropic", "ollama", "openai"]);
        let anth = &cfg.providers[0];
        assert_eq!(anth.base_url.to_string(), "http://127.0.0.1:9");
        assert_eq!(cfg.server.listen.port(), 0);
        let openai = &cfg.providers[2];
        assert_eq!(openai.base_url.to_string(), "https://api.openai.com/v1");
        assert!(format!("{:?}", openai.api_key).contains("REDACTED"));
    }

    #[test]
    fn example_file_is_valid() {
        let text = include_str!("../../../kairos.example.toml");
        let f = FileConfig::parse(text).unwrap();
        let env = MapEnv::from([
            ("OPENAI_API_KEY", "sk-test"),
            ("ANTHROPIC_API_KEY", "sk-ant"),
            ("GEMINI_API_KEY", "g"),
            ("KAIROS_MASTER_KEY", "kr-master-0123456789abcdef"),
        ]);
        f.validate(&env).unwrap();
    }

    #[test]
    fn lease_settings_have_defaults_and_are_range_checked() {
        let env = MapEnv::from([("OPENAI_API_KEY", "sk-test")]);
        let cfg = FileConfig::parse("").unwrap().validate(&env).unwrap();
        assert_eq!(
            cfg.storage.leases.budget_lease_max_age,
            Duration::from_secs(30)
        );
        assert_eq!(cfg.storage.leases.rate_lease_ttl, Duration::from_millis(20));
        let cfg =
            FileConfig::parse("[storage]\nbudget_lease_max_age_ms = 0\nrate_lease_ttl_ms = 0\n")
                .unwrap()
                .validate(&env)
                .unwrap();
        assert!(cfg.storage.leases.budget_lease_max_age.is_zero());
        assert!(cfg.storage.leases.rate_lease_ttl.is_zero());
        let err = FileConfig::parse(
            "[storage]\nrate_lease_ttl_ms = 5000\nbudget_lease_validate_ms = 1\n",
        )
        .unwrap()
        .validate(&env)
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("storage.rate_lease_ttl_ms"), "{text}");
        assert!(text.contains("storage.budget_lease_validate_ms"), "{text}");
    }
}
