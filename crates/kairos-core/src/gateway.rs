//! The gateway: configured providers, the model table, and construction from [`Config`].
//!
//! The request pipeline itself is in [`crate::pipeline`]; this module holds what it runs on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use kairos_api::openai::{ModelList, ModelObject};
use kairos_providers::adapter::{Adapter, ApiKind};
use kairos_providers::client::{BaseUrl, ClientOptions, HttpClient};
use kairos_providers::openai::{AuthStyle, OpenAiAdapter, PathStyle};
use kairos_store::LedgerHandle;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::catalog::{Catalog, ModelEntry, ModelMode};
use crate::config::{Config, ProviderConfig, ProviderKind};
use crate::error::{ClientError, GatewayError, InternalError};

/// One configured upstream, ready to call.
pub struct ProviderRuntime {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: BaseUrl,
    api_key: Option<SecretString>,
    pub adapter: Arc<dyn Adapter>,
    /// Operator-configured static headers (never anything from the caller).
    pub static_headers: HeaderMap,
    pub ttfb_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub default_max_tokens: u32,
}

impl std::fmt::Debug for ProviderRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRuntime")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url.to_string())
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .finish_non_exhaustive()
    }
}

impl ProviderRuntime {
    pub fn api(&self) -> ApiKind {
        self.adapter.api()
    }

    /// The key, for the adapter to put in its auth header. Nowhere else.
    pub(crate) fn api_key(&self) -> Option<&str> {
        self.api_key.as_ref().map(|k| k.expose_secret())
    }

    fn from_config(p: &ProviderConfig) -> ProviderRuntime {
        let adapter: Arc<dyn Adapter> = match p.kind {
            ProviderKind::Anthropic => Arc::new(kairos_providers::anthropic::AnthropicAdapter),
            ProviderKind::Gemini => Arc::new(kairos_providers::gemini::GeminiAdapter::default()),
            ProviderKind::Azure => Arc::new(OpenAiAdapter {
                auth: AuthStyle::ApiKeyHeader,
                paths: PathStyle::AzureDeployment {
                    api_version: p.api_version.clone().unwrap_or_else(|| "2024-10-21".into()),
                },
                stream_usage: p.stream_usage,
                forward_extra: true,
            }),
            ProviderKind::OpenAi
            | ProviderKind::Mistral
            | ProviderKind::DeepSeek
            | ProviderKind::Groq
            | ProviderKind::Together
            | ProviderKind::OpenRouter
            | ProviderKind::Xai
            | ProviderKind::Ollama
            | ProviderKind::Vllm
            | ProviderKind::OpenAiCompatible => Arc::new(OpenAiAdapter {
                stream_usage: p.stream_usage,
                ..OpenAiAdapter::default()
            }),
        };
        let mut static_headers = HeaderMap::new();
        for (k, v) in &p.headers {
            static_headers.insert(k.clone(), v.clone());
        }
        ProviderRuntime {
            name: p.name.clone(),
            kind: p.kind,
            base_url: p.base_url.clone(),
            api_key: p.api_key.clone(),
            adapter,
            static_headers,
            ttfb_timeout: p.ttfb_timeout,
            stream_idle_timeout: p.stream_idle_timeout,
            default_max_tokens: p.default_max_tokens,
        }
    }

    /// Headers every request to this provider carries besides the adapter's: the operator's
    /// static ones and the gateway request id (so provider-side logs can be correlated).
    pub(crate) fn outbound_headers(&self, request_id: &str) -> HeaderMap {
        let mut h = self.static_headers.clone();
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(HeaderName::from_static("x-kairos-request-id"), v);
        }
        h
    }
}

/// A model name resolved to what serves it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub entry: Arc<ModelEntry>,
    pub provider: Arc<ProviderRuntime>,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Never the key itself.
    pub key_id: String,
    /// The master key (every workspace, every object).
    pub admin: bool,
    /// A virtual key: its workspace, role, allowlists and limits.
    pub access: Option<Arc<crate::tenancy::Access>>,
}

impl Principal {
    /// May this caller read (or give feedback on) a request made by `key_id` in `workspace`?
    /// The master key: any request. A virtual key: its own requests; with the `admin` role,
    /// also every request of its own workspace (never another workspace's).
    pub fn may_access_request(&self, key_id: &str, workspace: Option<&str>) -> bool {
        if self.admin || self.key_id == key_id {
            return true;
        }
        self.access.as_ref().is_some_and(|a| {
            a.role == crate::tenancy::Role::Admin && workspace == Some(a.workspace_id.as_str())
        })
    }
}

/// Caps that protect the gateway.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_response_bytes: usize,
    pub request_timeout: Duration,
}

pub struct Gateway {
    pub(crate) providers: HashMap<String, Arc<ProviderRuntime>>,
    /// Model id or alias -> route.
    pub(crate) routes: HashMap<String, Resolved>,
    /// One entry per routable model, sorted by id (for `GET /v1/models`).
    listing: Vec<Resolved>,
    catalog: Catalog,
    pub(crate) client: HttpClient,
    pub(crate) ledger: LedgerHandle,
    pub(crate) router: crate::routing::Router,
    /// Provider health, shared by all requests of this process.
    pub(crate) health: crate::health::HealthRegistry,
    pub(crate) retry_budget: crate::retry::RetryBudget,
    pub(crate) retry_defaults: crate::retry::RetryPolicy,
    /// Compiled `[strategies]`, by name.
    pub(crate) strategies: std::collections::BTreeMap<String, Arc<crate::strategy::Node>>,
    /// Virtual keys (None: master key only).
    keys: Option<crate::tenancy::KeyCache>,
    /// Rate limits and budgets of virtual keys.
    pub(crate) spend_limits: Option<kairos_limits::Limits>,
    master_key_hash: [u8; 32],
    pub(crate) limits: Limits,
    /// Outcomes: the learner's hook and the recent requests (retries, escalations).
    pub(crate) signals: Arc<crate::signals::Signals>,
}

impl Gateway {
    /// Build from a validated config. `catalog` is the built-in catalog (tests pass their own).
    /// Fails when a strategy names a model that is not available.
    pub fn new(
        cfg: &Config,
        catalog: Catalog,
        master_key: &SecretString,
        ledger: LedgerHandle,
    ) -> Result<Gateway, crate::config::ConfigErrors> {
        let mut providers: HashMap<String, Arc<ProviderRuntime>> = HashMap::new();
        let mut connect_timeout = Duration::from_secs(10);
        for p in &cfg.providers {
            connect_timeout = connect_timeout.min(p.connect_timeout);
            providers.insert(p.name.clone(), Arc::new(ProviderRuntime::from_config(p)));
        }
        let client = HttpClient::new(&ClientOptions {
            connect_timeout,
            ..ClientOptions::default()
        });

        // Catalog models go to the configured provider of their kind (the one named like the
        // kind if there are several, else the first by name).
        let mut by_catalog_name: HashMap<&str, Arc<ProviderRuntime>> = HashMap::new();
        let mut names: Vec<&ProviderConfig> = cfg.providers.iter().filter(|p| p.catalog).collect();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        for p in names {
            if let Some(cn) = p.kind.catalog_name() {
                let rt = providers[&p.name].clone();
                match by_catalog_name.get(cn) {
                    Some(existing) if existing.name == cn => {}
                    _ if p.name == cn || !by_catalog_name.contains_key(cn) => {
                        by_catalog_name.insert(cn, rt);
                    }
                    _ => {}
                }
            }
        }
        let mut routes: HashMap<String, Resolved> = HashMap::new();
        let mut listing_ids: Vec<String> = Vec::new();
        let mut add = |entry: Arc<ModelEntry>,
                       provider: Arc<ProviderRuntime>,
                       routes: &mut HashMap<String, Resolved>| {
            let r = Resolved {
                entry: entry.clone(),
                provider,
            };
            for name in std::iter::once(&entry.id).chain(entry.aliases.iter()) {
                routes.insert(name.clone(), r.clone());
            }
            listing_ids.push(entry.id.clone());
        };
        for entry in catalog.iter() {
            if let Some(p) = by_catalog_name.get(entry.provider.as_str()) {
                add(entry.clone(), p.clone(), &mut routes);
            }
        }
        for m in &cfg.models {
            if let Some(p) = providers.get(&m.provider) {
                add(Arc::new(m.clone()), p.clone(), &mut routes);
            }
        }
        let mut listing: Vec<Resolved> = Vec::new();
        listing_ids.sort();
        listing_ids.dedup();
        for id in listing_ids {
            if let Some(r) = routes.get(&id)
                && r.entry.id == id
            {
                listing.push(r.clone());
            }
        }

        let mut gw = Gateway {
            router: crate::routing::Router::new(cfg.routing.clone(), &listing),
            health: crate::health::HealthRegistry::new(cfg.resilience.health.clone()),
            retry_budget: crate::retry::RetryBudget::new(
                cfg.resilience.budget_ratio,
                cfg.resilience.budget_min,
            ),
            retry_defaults: cfg.resilience.retry.clone(),
            strategies: std::collections::BTreeMap::new(),
            keys: None,
            spend_limits: None,
            providers,
            routes,
            listing,
            catalog,
            client,
            ledger,
            master_key_hash: Sha256::digest(master_key.expose_secret().as_bytes()).into(),
            limits: Limits {
                max_response_bytes: cfg.server.max_response_bytes,
                request_timeout: cfg.server.request_timeout,
            },
            signals: Arc::new(crate::signals::Signals::new()),
        };
        let compiled = crate::strategy::compile(&cfg.strategies, &gw.retry_defaults, &|name| {
            gw.resolve(name, ModelMode::Chat).ok()
        });
        match compiled {
            Ok(s) => gw.strategies = s,
            Err(issues) => return Err(crate::config::ConfigErrors(issues)),
        }
        Ok(gw)
    }

    /// Per-target health (for the admin endpoint).
    pub fn health_snapshot(&self) -> Vec<crate::health::TargetHealth> {
        self.health.snapshot()
    }

    pub fn ledger(&self) -> &LedgerHandle {
        &self.ledger
    }

    /// Every routable model once, sorted by id.
    pub fn listing(&self) -> &[Resolved] {
        &self.listing
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn provider_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.providers.keys().cloned().collect();
        v.sort();
        v
    }

    /// Stage 1, authenticate. The master key is compared by hash in constant time; virtual keys
    /// are looked up by hash in the in-memory key table ([`crate::tenancy::KeyCache`]). The raw
    /// value never reaches a log, an error or a cache key.
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<Principal, GatewayError> {
        let unauthorized = || GatewayError::Client(ClientError::Unauthorized);
        let Some(key) = presented.map(str::trim).filter(|k| !k.is_empty()) else {
            return Err(unauthorized());
        };
        let h: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        if bool::from(h.ct_eq(&self.master_key_hash)) {
            return Ok(Principal {
                key_id: "master".into(),
                admin: true,
                access: None,
            });
        }
        // Virtual keys are `kr-` + 43 characters; anything far off that shape is not one.
        let (Some(keys), true) = (&self.keys, key.starts_with("kr-") && key.len() <= 128) else {
            return Err(unauthorized());
        };
        match keys.authenticate(key).await {
            Ok(a) => Ok(Principal {
                key_id: a.key_id.clone(),
                admin: false,
                access: Some(Arc::new(a)),
            }),
            Err(crate::tenancy::KeyRejection::Invalid) => Err(unauthorized()),
            Err(crate::tenancy::KeyRejection::StoreUnavailable) => Err(GatewayError::Internal(
                InternalError::Unavailable("the key store".into()),
            )),
        }
    }

    /// Enables virtual keys (the master key always works).
    pub fn set_keys(&mut self, keys: crate::tenancy::KeyCache) {
        self.keys = Some(keys);
    }

    pub fn keys(&self) -> Option<&crate::tenancy::KeyCache> {
        self.keys.as_ref()
    }

    /// The outcome hook: every outcome (explicit feedback, the implicit signal of each chat
    /// request, retries, escalations) is handed to its subscribers as soon as it is known.
    /// Subscribe the learner here ([`crate::signals::OutcomeSink::subscribe`]).
    pub fn outcome_sink(&self) -> &crate::signals::OutcomeSink {
        self.signals.sink()
    }

    /// The learner `auto` routes on (per-workspace learned quality).
    /// The learned state of one workspace (see [`crate::routing::LearningSummary`]).
    pub fn learning_summary(&self, workspace: &str) -> crate::routing::LearningSummary {
        self.router.learning_summary(workspace)
    }

    pub fn learner(&self) -> &Arc<kairos_router::learn::Learner> {
        &self.router.learner
    }

    /// Whether `[routing.learning] enabled` (the learner is fed and consulted).
    pub fn learning_enabled(&self) -> bool {
        self.router.config.learning_enabled
    }

    /// How often replicas re-read outcomes.
    pub fn learning_refresh(&self) -> std::time::Duration {
        self.router.config.learning_refresh
    }

    /// Retry and escalation outcomes are written to `store` (off the request path).
    pub fn set_outcome_store(&self, store: kairos_store::Store) {
        self.signals.set_store(store);
    }

    /// Waits (at most `limit`) for rows whose last steps (classifying and embedding the prompt
    /// of a pinned request) still run in a spawned task; shutdown calls it before draining the
    /// ledger.
    pub async fn drain_deferred_rows(&self, limit: std::time::Duration) {
        self.signals.drain_deferred(limit).await;
    }

    /// Enables rate limits and budgets for virtual keys.
    pub fn set_limits(&mut self, limits: kairos_limits::Limits) {
        self.signals.set_shared(&limits);
        self.spend_limits = Some(limits);
    }

    /// Stage 4b: rate limits and budget reservation (see [`crate::spend`]).
    pub(crate) async fn admit_spend(
        &self,
        rec: &mut crate::record::Recorder,
        plan: &crate::strategy::Node,
        prompt_bytes: impl FnOnce() -> usize,
        max_out: Option<u32>,
    ) -> Result<(), GatewayError> {
        let Some(limits) = &self.spend_limits else {
            return Ok(());
        };
        if rec.access().is_none() {
            return Ok(());
        }
        let mut entries = Vec::new();
        plan.for_each_leaf(&mut |l| entries.push(l.resolved.entry.clone()));
        let refs: Vec<&ModelEntry> = entries.iter().map(|e| e.as_ref()).collect();
        crate::spend::admit(limits, rec, &refs, prompt_bytes, max_out).await
    }

    /// Resolve a requested model name to its provider and catalog entry.
    pub fn resolve(&self, model: &str, mode: ModelMode) -> Result<Resolved, GatewayError> {
        let r = match self.routes.get(model) {
            Some(r) => r.clone(),
            None => self.resolve_dynamic(model)?,
        };
        if r.entry.mode != mode {
            return Err(GatewayError::Client(ClientError::WrongModelMode {
                model: model.to_owned(),
                expected: match mode {
                    ModelMode::Chat => "chat",
                    ModelMode::Embedding => "embedding",
                },
            }));
        }
        Ok(r)
    }

    /// `<provider>/<upstream model>` for any configured provider, priced from the catalog when
    /// the catalog knows that model for that provider's kind, else unpriced.
    fn resolve_dynamic(&self, model: &str) -> Result<Resolved, GatewayError> {
        let unknown = |hint: Option<String>| {
            GatewayError::Client(ClientError::UnknownModel {
                model: crate::pipeline::clip(model, 200),
                hint,
            })
        };
        if let Some((prefix, rest)) = model.split_once('/')
            && let Some(p) = self.providers.get(prefix)
            && !rest.is_empty()
        {
            let known = p.kind.catalog_name().and_then(|cn| {
                self.catalog
                    .iter()
                    .find(|e| e.provider == cn && (e.upstream_model == rest || e.id == rest))
                    .cloned()
            });
            let entry = match known {
                Some(e) => {
                    let mut e = (*e).clone();
                    e.id = model.to_owned();
                    e
                }
                None => ModelEntry {
                    id: model.to_owned(),
                    provider: p.name.clone(),
                    upstream_model: rest.to_owned(),
                    mode: if rest.contains("embed") {
                        ModelMode::Embedding
                    } else {
                        ModelMode::Chat
                    },
                    context_window: None,
                    max_output_tokens: None,
                    price: None,
                    capabilities: crate::catalog::Capabilities {
                        tools: true,
                        vision: true,
                        json_mode: true,
                        reasoning: false,
                    },
                    aliases: Vec::new(),
                    deprecation_date: None,
                    output_vector_size: None,
                },
            };
            return Ok(Resolved {
                entry: Arc::new(entry),
                provider: p.clone(),
            });
        }
        // Known to the catalog but its provider is not configured: say how to enable it.
        if let Some(e) = self.catalog.get(model) {
            let var = ProviderKind::parse(&e.provider)
                .and_then(|k| k.env_vars().0)
                .unwrap_or("the provider's API key");
            return Err(unknown(Some(format!(
                "its provider `{}` is not configured (set {var} or add it to the config file)",
                e.provider
            ))));
        }
        Err(unknown(None))
    }

    /// `GET /v1/models`: every routable model, in the OpenAI list shape plus catalog facts.
    pub fn models(&self) -> ModelList {
        let data = self
            .listing
            .iter()
            .map(|r| ModelObject {
                id: r.entry.id.clone(),
                object: "model".into(),
                created: 0,
                owned_by: r.provider.name.clone(),
                context_window: r.entry.context_window,
                max_output_tokens: r.entry.max_output_tokens,
                pricing: r.entry.price.as_ref().map(|p| {
                    let usd = |m: u64| m as f64 / 1_000_000.0;
                    serde_json::json!({
                        "input_usd_per_mtok": usd(p.input),
                        "output_usd_per_mtok": usd(p.output),
                        "cached_input_usd_per_mtok": p.cached_input.map(usd),
                        "cache_write_usd_per_mtok": p.cache_write.map(usd),
                    })
                }),
                capabilities: Some(serde_json::json!({
                    "tools": r.entry.capabilities.tools,
                    "vision": r.entry.capabilities.vision,
                    "json_mode": r.entry.capabilities.json_mode,
                    "reasoning": r.entry.capabilities.reasoning,
                })),
                mode: Some(
                    match r.entry.mode {
                        ModelMode::Chat => "chat",
                        ModelMode::Embedding => "embedding",
                    }
                    .into(),
                ),
            })
            .collect();
        ModelList {
            object: "list".into(),
            data,
        }
    }
}
