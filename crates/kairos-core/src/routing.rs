//! Stage 5 for `model="auto"` (also `kairos/auto`): classify, build the candidate list, run the
//! funnel ([`kairos_router::funnel::route`]) and write the receipt.
//!
//! Everything the decision depends on is passed in (request, options, catalog, quality table,
//! config), so the same code serves live requests and the dry run (`POST /v1/route`).

use kairos_api::openai::{
    ChatCompletionRequest, ContentPart, MessageContent, ResponseFormat, Role,
};
use kairos_router::TaskType;
use kairos_router::classifier::{Classification, Classifier, ClassifierInput};
use kairos_router::embed::{Embedder, quantize};
use kairos_router::funnel::{
    BarSource, Candidate, Decision, Prices, RouteInput, route, tasks_to_check,
};
use kairos_router::learn::{Learner, Query};
use kairos_router::quality::{QualityEstimate, QualityTable, Tier, expected_output_tokens};
use kairos_router::receipt::{
    BarInfo, ClassificationInfo, LearningInfo, Receipt, ReceiptContext, Sources, TaskProb,
    TokenEstimate,
};
use serde::{Deserialize, Serialize};

use crate::catalog::ModelMode;
use crate::error::{ClientError, GatewayError};
use crate::gateway::{Gateway, Resolved};

/// The model names that ask for routing.
pub fn is_auto(model: &str) -> bool {
    model == "auto" || model == "kairos/auto"
}

/// Deployment routing settings (`[routing]` in the config file).
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    pub default_bar: f64,
    pub default_tier: Option<String>,
    /// The baseline for savings; None: the best-quality candidate for the task.
    pub reference_model: Option<String>,
    /// Models `auto` may choose; None: every routable chat model.
    pub candidates: Option<Vec<String>>,
    /// Quality estimates overriding the built-in priors.
    pub quality_overrides: Vec<(String, TaskType, QualityEstimate)>,
    /// Value of a successful answer in USD (the value rule); None: cheapest that clears the bar.
    pub answer_value_usd: Option<f64>,
    /// The learner's tunables.
    pub learning: kairos_router::learn::LearnConfig,
    /// Learn from outcomes at all.
    pub learning_enabled: bool,
    /// How often outcomes are re-read from the database.
    pub learning_refresh: std::time::Duration,
    /// Embed the prompts of pinned-model and strategy requests too, so their outcomes count as
    /// prompt-level evidence for the model that served them.
    pub learning_embed_pinned: bool,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            default_bar: Tier::Balanced.bar(),
            default_tier: Some("balanced".into()),
            reference_model: None,
            candidates: None,
            quality_overrides: Vec::new(),
            answer_value_usd: None,
            learning: kairos_router::learn::LearnConfig::default(),
            learning_enabled: true,
            learning_refresh: std::time::Duration::from_secs(2),
            learning_embed_pinned: true,
        }
    }
}

/// A quality bar given as a number in [0, 1] or a tier name.
pub fn parse_bar(s: &str) -> Option<(f64, Option<String>)> {
    let s = s.trim();
    if let Ok(t) = s.parse::<Tier>() {
        return Some((t.bar(), Some(s.to_ascii_lowercase())));
    }
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && (0.0..=1.0).contains(&v)).then_some((v, None))
}

/// Per-request routing options, from `x-kairos-*` headers and the body's `kairos` object
/// (body wins).
#[derive(Debug, Clone, Default)]
pub struct RouteOptions {
    pub bar: Option<(f64, Option<String>, BarSource)>,
    pub max_cost_usd: Option<f64>,
    pub models: Option<Vec<String>>,
    /// Provider allowlist for this request (provider names from the config).
    pub providers: Option<Vec<String>>,
    pub strict: bool,
    /// `false`: routing off, the reference model serves.
    pub disabled: bool,
    /// A configured strategy to use instead of the model (`x-kairos-config`).
    pub strategy: Option<String>,
    /// Per-request total timeout (`x-kairos-timeout-ms`; can only lower the configured one).
    pub timeout: Option<std::time::Duration>,
    /// Value of a successful answer in USD (`x-kairos-answer-value-usd`, `kairos.value_usd`).
    pub value_usd: Option<f64>,
    /// The caller's workspace, whose learned state routes the request (set by the pipeline from
    /// the virtual key; "" for requests without one).
    pub workspace: String,
    /// Never explore (dry runs).
    pub no_explore: bool,
}

/// The body's `kairos` object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyOptions {
    quality: Option<serde_json::Value>,
    max_cost_usd: Option<f64>,
    models: Option<Vec<String>>,
    providers: Option<Vec<String>>,
    strict: Option<bool>,
    route: Option<bool>,
    value_usd: Option<f64>,
}

impl RouteOptions {
    /// Merge the body's `kairos` options over these (header) options.
    pub fn with_body(
        mut self,
        body: Option<&serde_json::Value>,
    ) -> Result<RouteOptions, GatewayError> {
        let Some(v) = body else { return Ok(self) };
        let b: BodyOptions = serde_json::from_value(v.clone()).map_err(|e| {
            GatewayError::invalid(format!("invalid `kairos` options: {e}"), Some("kairos"))
        })?;
        if let Some(q) = b.quality {
            let parsed = match &q {
                serde_json::Value::Number(n) => n.as_f64().and_then(|f| parse_bar(&f.to_string())),
                serde_json::Value::String(s) => parse_bar(s),
                _ => None,
            };
            let (v, tier) = parsed.ok_or_else(|| {
                GatewayError::invalid(
                    "`kairos.quality` must be a number between 0 and 1 or one of economy, balanced, premium",
                    Some("kairos.quality"),
                )
            })?;
            self.bar = Some((v, tier, BarSource::Body));
        }
        if let Some(c) = b.max_cost_usd {
            check_cost(c, "kairos.max_cost_usd")?;
            self.max_cost_usd = Some(c);
        }
        if let Some(m) = b.models {
            if m.is_empty() || m.len() > 256 {
                return Err(GatewayError::invalid(
                    "`kairos.models` must list 1 to 256 models",
                    Some("kairos.models"),
                ));
            }
            self.models = Some(m);
        }
        if let Some(p) = b.providers {
            if p.is_empty() || p.len() > 64 {
                return Err(GatewayError::invalid(
                    "`kairos.providers` must list 1 to 64 providers",
                    Some("kairos.providers"),
                ));
            }
            self.providers = Some(p);
        }
        if let Some(s) = b.strict {
            self.strict = s;
        }
        if let Some(r) = b.route {
            self.disabled = !r;
        }
        if let Some(v) = b.value_usd {
            check_value(v, "kairos.value_usd")?;
            self.value_usd = Some(v);
        }
        Ok(self)
    }
}

/// The value of an answer must be a positive, finite amount of USD (at most 1,000,000).
pub fn check_value(v: f64, param: &str) -> Result<(), GatewayError> {
    if v.is_finite() && v > 0.0 && v <= 1e6 {
        Ok(())
    } else {
        Err(GatewayError::invalid(
            format!("`{param}` must be a positive amount of USD (at most 1000000)"),
            Some(param),
        ))
    }
}

/// A USD ceiling must be a finite, non-negative amount.
pub fn check_cost(c: f64, param: &str) -> Result<(), GatewayError> {
    if c.is_finite() && (0.0..1.0e6).contains(&c) {
        Ok(())
    } else {
        Err(GatewayError::invalid(
            format!("`{param}` must be a USD amount of at least 0"),
            Some(param),
        ))
    }
}

/// What `auto` reads from a request: the classifier's input and the text it embeds.
struct PromptView {
    system: String,
    last_user: String,
    /// Characters of text in all messages.
    chars: usize,
    has_images: bool,
    has_tools: bool,
    json_mode: bool,
}

impl PromptView {
    fn of(req: &ChatCompletionRequest) -> PromptView {
        let mut v = PromptView {
            system: String::new(),
            last_user: String::new(),
            chars: 0,
            has_images: false,
            has_tools: req.tools.as_ref().is_some_and(|t| !t.is_empty()),
            json_mode: matches!(
                req.response_format,
                Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })
            ),
        };
        for m in &req.messages {
            let Some(c) = &m.content else { continue };
            let text = c.text();
            v.chars += text.len();
            v.has_images |= match c {
                MessageContent::Parts(p) => {
                    p.iter().any(|x| matches!(x, ContentPart::ImageUrl { .. }))
                }
                MessageContent::Text(_) => false,
            };
            match m.role {
                Role::System | Role::Developer => {
                    if !v.system.is_empty() {
                        v.system.push('\n');
                    }
                    v.system.push_str(&text);
                }
                Role::User => v.last_user = text.into_owned(),
                Role::Assistant | Role::Tool | Role::Function => {}
            }
        }
        v
    }

    fn classify(&self, n_messages: usize) -> Classification {
        Classifier::builtin().classify(&ClassifierInput {
            system: &self.system,
            last_user: &self.last_user,
            context_chars: self.chars,
            n_messages,
            has_tools: self.has_tools,
            json_mode: self.json_mode,
            has_images: self.has_images,
        })
    }

    /// The text the learner embeds: the last user message, else the system prompt.
    fn embed_text(&self) -> &str {
        if self.last_user.is_empty() {
            &self.system
        } else {
            &self.last_user
        }
    }
}

/// What `auto` would have learned from a request it did not route (a pinned model or a
/// strategy), so that the request's outcomes count as evidence for the model that served it:
/// the task the classifier gives it, and the quantised embedding of the text `auto` embeds
/// (`None` when the text has no known token). Computed when the request completes, off the
/// request path (see `Recorder::defer_evidence`).
pub fn prompt_evidence(req: &ChatCompletionRequest) -> (&'static str, Option<String>) {
    let view = PromptView::of(req);
    let cls = view.classify(req.messages.len());
    let embedder = Embedder::builtin();
    let mut emb = vec![0f32; embedder.dim()];
    embedder.embed(view.embed_text(), &mut emb);
    let emb = emb.iter().any(|x| *x != 0.0).then(|| quantize(&emb));
    (cls.task.as_str(), emb)
}

/// A cheap input-token estimate for routing (≈ 4 characters per token; the ledger later records
/// the provider's real count).
fn estimate_input_tokens(chars: usize, req: &ChatCompletionRequest) -> u64 {
    let tools = req
        .tools
        .as_ref()
        .map_or(0, |t| serde_json::to_string(t).map_or(0, |s| s.len()));
    ((chars + tools) as u64).div_ceil(4) + 4 * req.messages.len() as u64
}

/// The state routing runs on. The candidate list (prices, capabilities and the quality of every
/// model for every task) is built once at startup: looking the priors up per request cost ~25 µs
/// for 40 models (480 string-keyed hash lookups), more than the whole decision.
pub struct Router {
    pub config: RoutingConfig,
    pub quality: QualityTable,
    /// Chat models `auto` may choose, with their routing facts (all `allowed`, `healthy`).
    base: Vec<Candidate>,
    /// Where each of `base` is served, same order.
    targets: Vec<Resolved>,
    /// Learned quality per workspace (the signal loop), fed from the outcomes table.
    pub learner: std::sync::Arc<Learner>,
}

impl Router {
    pub fn new(config: RoutingConfig, listing: &[Resolved]) -> Router {
        let quality = QualityTable::builtin().with_overrides(config.quality_overrides.clone());
        let mut base = Vec::new();
        let mut targets = Vec::new();
        for r in listing {
            if r.entry.mode != ModelMode::Chat {
                continue;
            }
            if let Some(list) = &config.candidates
                && !list.iter().any(|m| m == &r.entry.id)
            {
                continue;
            }
            let mut q = [None; 12];
            for t in TaskType::ALL {
                q[t.index()] = quality.get(&r.entry.id, t).map(|e| (e.mean, e.std));
            }
            base.push(Candidate {
                model: r.entry.id.clone(),
                provider: r.provider.name.clone(),
                prices: r.entry.price.map(|p| Prices {
                    input: p.input,
                    output: p.output,
                }),
                context_window: r.entry.context_window,
                tools: r.entry.capabilities.tools,
                vision: r.entry.capabilities.vision,
                json_mode: r.entry.capabilities.json_mode,
                allowed: true,
                healthy: true,
                latency_ms: None,
                quality: q,
            });
            targets.push(r.clone());
        }
        let learner = std::sync::Arc::new(Learner::new(config.learning));
        Router {
            config,
            quality,
            base,
            targets,
            learner,
        }
    }
}

/// A workspace's learned state, for `GET /admin/v1/workspaces/{id}/learning`: where its own
/// outcomes have taken over from the priors.
#[derive(Debug, Clone, Serialize)]
pub struct LearningSummary {
    pub workspace: String,
    /// Whether routing uses learned estimates (`[routing.learning] enabled`).
    pub enabled: bool,
    /// Share of `auto` requests that explore.
    pub explore: f64,
    /// Distinct outcomes recorded for the workspace.
    pub outcomes: u64,
    /// Embedded outcomes held for the prompt-level (neighbour) estimates.
    pub embedded_points: usize,
    /// Per (task type, model) with outcomes: the task-level estimate (before any prompt-level
    /// evidence) against the prior.
    pub estimates: Vec<LearnedRow>,
    /// Per model: outcome weight recorded without a task type (pinned requests); it counts in
    /// the model level of every task's estimate.
    pub untasked: Vec<UntaskedRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LearnedRow {
    pub task: TaskType,
    pub model: String,
    /// Summed outcome weight (explicit feedback 1 each, implicit signals less).
    pub outcomes: f64,
    /// The global prior's mean for (model, task); `null` for a model the quality table does
    /// not rate.
    pub prior_mean: Option<f64>,
    /// The learned estimate and its 90% interval.
    pub mean: f64,
    pub low: f64,
    pub high: f64,
    /// Share of the estimate that is still the prior (0: all the workspace's data).
    pub prior_share: f64,
    pub dominated_by: kairos_router::learn::Dominance,
}

#[derive(Debug, Clone, Serialize)]
pub struct UntaskedRow {
    pub model: String,
    pub outcomes: f64,
}

impl Router {
    /// The learned state of `workspace` (empty lists when it has no outcome yet).
    pub fn learning_summary(&self, workspace: &str) -> LearningSummary {
        let obs = self
            .learner
            .observed(workspace)
            .unwrap_or(kairos_router::learn::Observed {
                outcomes: 0,
                points: 0,
                pairs: Vec::new(),
            });
        let mut estimates = Vec::new();
        let mut untasked = Vec::new();
        for (task, model, w) in &obs.pairs {
            let Some(task) = task else {
                untasked.push(UntaskedRow {
                    model: model.clone(),
                    outcomes: *w,
                });
                continue;
            };
            let prior = match self.base.iter().find(|c| &c.model == model) {
                Some(c) => c.quality,
                None => {
                    let mut q = [None; 12];
                    for t in TaskType::ALL {
                        q[t.index()] = self.quality.get(model, t).map(|e| (e.mean, e.std));
                    }
                    q
                }
            };
            let est = self.learner.estimate(
                workspace,
                &[*task],
                None,
                &[Query {
                    model,
                    prior: &prior,
                }],
            );
            let Some(e) = est.first().and_then(|v| v.first()) else {
                continue;
            };
            estimates.push(LearnedRow {
                task: *task,
                model: model.clone(),
                outcomes: *w,
                prior_mean: e.prior_mean,
                mean: e.mean,
                low: e.low,
                high: e.high,
                prior_share: e.prior_share,
                dominated_by: e.dominated_by,
            });
        }
        LearningSummary {
            workspace: workspace.to_owned(),
            enabled: self.config.learning_enabled,
            explore: self.learner.config().explore,
            outcomes: obs.outcomes,
            embedded_points: obs.points,
            estimates,
            untasked,
        }
    }

    /// Run the funnel on the learned estimates for this prompt (or on the priors when learning
    /// is off). Returns the decision, the receipt's learning section and the prompt's quantised
    /// embedding for the ledger row.
    fn decide(
        &self,
        input: &RouteInput,
        candidates: &[Candidate],
        text: &str,
        opts: &RouteOptions,
    ) -> (Decision, Option<LearningInfo>, Option<String>) {
        if !self.config.learning_enabled {
            return (route(input, candidates), None, None);
        }
        let embedder = Embedder::builtin();
        let mut emb = vec![0f32; embedder.dim()];
        embedder.embed(text, &mut emb);
        let has_embedding = emb.iter().any(|x| *x != 0.0);
        let tasks = tasks_to_check(input);
        let queries: Vec<Query<'_>> = candidates
            .iter()
            .map(|c| Query {
                model: &c.model,
                prior: &c.quality,
            })
            .collect();
        let ws = opts.workspace.as_str();
        let est = self
            .learner
            .estimate(ws, &tasks, has_embedding.then_some(&emb[..]), &queries);
        // The learned estimates replace the priors for the tasks checked. A model with neither a
        // prior nor any outcome in this workspace stays without evidence (as without learning).
        let mut learned: Vec<Candidate> = candidates.to_vec();
        for (c, e) in learned.iter_mut().zip(&est) {
            for (t, ev) in tasks.iter().zip(e) {
                if c.quality[t.index()].is_some() || ev.outcomes > 0 || ev.neighbours > 0 {
                    c.quality[t.index()] = Some((ev.mean, ev.std()));
                }
            }
        }
        let explore_share = self.learner.config().explore;
        let explore = !input.strict
            && !opts.no_explore
            && explore_share > 0.0
            && rand::random::<f64>() < explore_share;
        let mut greedy_choice = None;
        let mut decision = if explore {
            let mut rng = rand::rng();
            let mut sampled = learned.clone();
            for (c, e) in sampled.iter_mut().zip(&est) {
                let draws = kairos_router::learn::Evidence::sample_tasks(e, &mut rng);
                for (t, d) in tasks.iter().zip(draws) {
                    if let Some(q) = c.quality[t.index()].as_mut() {
                        q.0 = d;
                    }
                }
            }
            let greedy = route(input, &learned);
            greedy_choice = greedy.chosen().map(|c| c.model.clone());
            route(input, &sampled)
        } else {
            route(input, &learned)
        };
        for (o, e) in decision.candidates.iter_mut().zip(est) {
            o.evidence = e.into_iter().next();
        }
        let info = LearningInfo {
            workspace: ws.to_owned(),
            workspace_outcomes: self.learner.outcomes(ws) as u64,
            exploration: explore,
            greedy_choice: greedy_choice
                .filter(|g| decision.chosen().is_none_or(|c| &c.model != g)),
            value_usd: input.value_usd,
            embedder: embedder.version().to_owned(),
        };
        (decision, Some(info), has_embedding.then(|| quantize(&emb)))
    }
}

impl Gateway {
    /// Classify and route `req`; returns the chosen target and the receipt. Fails (with the
    /// receipt) when nothing can be chosen.
    pub fn route_auto(
        &self,
        req: &ChatCompletionRequest,
        opts: &RouteOptions,
        request_id: &str,
    ) -> Result<(std::sync::Arc<crate::strategy::Node>, Receipt), (GatewayError, Option<Receipt>)>
    {
        let router = &self.router;
        let view = PromptView::of(req);
        let cls = view.classify(req.messages.len());
        let input_tokens = estimate_input_tokens(view.chars, req);
        let expected = u64::from(expected_output_tokens(cls.task));
        let output_tokens = req
            .output_cap()
            .map_or(expected, |cap| expected.min(u64::from(cap)));
        let (bar, tier, bar_source) = match &opts.bar {
            Some((v, t, s)) => (*v, t.clone(), *s),
            None => (
                router.config.default_bar,
                router.config.default_tier.clone(),
                BarSource::Default,
            ),
        };
        let max_cost_micros = opts.max_cost_usd.map(|c| (c * 1e6).floor() as u64);

        // Candidates: the prebuilt list, narrowed by the request and marked with the targets'
        // health (a copy only when something differs from the prebuilt list).
        let available: Vec<bool> = router
            .targets
            .iter()
            .map(|r| {
                self.health.is_available(&crate::health::TargetKey {
                    provider: std::sync::Arc::from(r.provider.name.as_str()),
                    model: std::sync::Arc::from(r.entry.id.as_str()),
                })
            })
            .collect();
        let narrowed: Option<Vec<Candidate>> =
            (opts.models.is_some() || opts.providers.is_some() || available.iter().any(|a| !a))
                .then(|| {
                    router
                        .base
                        .iter()
                        .zip(&router.targets)
                        .zip(&available)
                        .map(|((c, r), ok)| {
                            let mut c = c.clone();
                            c.healthy = *ok;
                            c.allowed = opts.models.as_ref().is_none_or(|m| {
                                m.iter()
                                    .any(|x| x == &r.entry.id || r.entry.aliases.contains(x))
                            }) && opts
                                .providers
                                .as_ref()
                                .is_none_or(|p| p.iter().any(|x| x == &r.provider.name));
                            c
                        })
                        .collect()
                });
        let candidates: &[Candidate] = narrowed.as_deref().unwrap_or(&router.base);
        let resolved = &router.targets;
        let mut probs: Vec<(TaskType, f32)> = TaskType::ALL
            .into_iter()
            .map(|t| (t, cls.probs[t.index()]))
            .collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        let input = RouteInput {
            task: cls.task,
            confidence: cls.confidence,
            probs: cls.probs,
            input_tokens,
            output_tokens,
            needs_tools: view.has_tools,
            needs_vision: view.has_images,
            needs_json: view.json_mode,
            bar,
            bar_source,
            max_cost_micros,
            strict: opts.strict,
            value_usd: opts.value_usd.or(router.config.answer_value_usd),
        };
        let (decision, learning, embedding) =
            router.decide(&input, candidates, view.embed_text(), opts);
        let ctx = ReceiptContext {
            request_id,
            requested_model: &req.model,
            classification: ClassificationInfo {
                task: cls.task,
                confidence: cls.confidence,
                classifier: Classifier::builtin().version().to_owned(),
                top: probs
                    .iter()
                    .take(3)
                    .map(|(t, p)| TaskProb { task: *t, p: *p })
                    .collect(),
            },
            bar: BarInfo {
                value: bar,
                source: bar_source,
                tier,
            },
            max_cost_micros,
            strict: opts.strict,
            estimate: TokenEstimate {
                input_tokens,
                output_tokens,
            },
            reference_model: router.config.reference_model.as_deref(),
            sources: Sources {
                quality: router.quality.source().to_owned(),
                prices: self
                    .catalog()
                    .source()
                    .map(|s| format!("{} ({})", s.name, s.version))
                    .unwrap_or_else(|| "config".into()),
            },
        };
        if opts.disabled {
            // Routing off: the reference model serves (configured, else best expected quality).
            let mut receipt = Receipt::new(ctx, decision);
            receipt.routed = false;
            let Some(reference) = receipt.reference.as_ref().map(|r| r.model.clone()) else {
                return Err((
                    no_route("routing is off and there is no reference model"),
                    Some(receipt),
                ));
            };
            let idx = candidates.iter().position(|c| c.model == reference);
            receipt.chosen = Some(reference.clone());
            return match idx {
                Some(i) => Ok((
                    std::sync::Arc::new(crate::dispatch::single(
                        resolved[i].clone(),
                        self.retry_defaults.clone(),
                    )),
                    receipt,
                )),
                None => Err((
                    no_route("the reference model is not routable"),
                    Some(receipt),
                )),
            };
        }
        let chosen = decision.chosen;
        let runners_up = runners_up(&decision, 2);
        let mut receipt = Receipt::new(ctx, decision);
        receipt.learning = learning;
        receipt.embedding = embedding;
        match chosen {
            Some(i) => {
                // The chosen model first, then the runners-up as its fallbacks.
                let children: Vec<std::sync::Arc<crate::strategy::Node>> = std::iter::once(i)
                    .chain(runners_up)
                    .map(|j| {
                        std::sync::Arc::new(crate::dispatch::single(
                            resolved[j].clone(),
                            self.retry_defaults.clone(),
                        ))
                    })
                    .collect();
                let plan = if children.len() == 1 {
                    children[0].clone()
                } else {
                    std::sync::Arc::new(crate::strategy::Node::Fallback {
                        children,
                        triggers: crate::strategy::Triggers::default(),
                    })
                };
                Ok((plan, receipt))
            }
            None => {
                let why = if candidates.is_empty() {
                    "no model is available for routing (none configured, or none allowed)"
                } else if opts.strict {
                    "no model meets the quality bar and the cost ceiling (strict routing)"
                } else {
                    "no model passed the capability, policy and health checks"
                };
                Err((no_route(why), Some(receipt)))
            }
        }
    }
}

/// The fallbacks of a routing decision: the survivors that lost on cost (cheapest first), or,
/// when no candidate cleared the bar, the other eligible candidates by quality.
fn runners_up(d: &kairos_router::funnel::Decision, n: usize) -> Vec<usize> {
    use kairos_router::funnel::DropReason;
    let Some(chosen) = d.chosen else {
        return Vec::new();
    };
    let mut v: Vec<usize> = d
        .candidates
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            *i != chosen
                && if d.bar_met {
                    matches!(
                        c.reason,
                        Some(DropReason::Costlier { .. } | DropReason::LowerValue { .. })
                    )
                } else {
                    matches!(
                        c.reason,
                        Some(
                            DropReason::BelowBar { .. }
                                | DropReason::OverCost { .. }
                                | DropReason::NoQualityEvidence
                        )
                    )
                }
        })
        .map(|(i, _)| i)
        .collect();
    if d.bar_met {
        v.sort_by_key(|&i| d.candidates[i].estimated_cost_micros.unwrap_or(u64::MAX));
    } else {
        v.sort_by(|&a, &b| {
            d.candidates[b]
                .expected_quality
                .unwrap_or(0.0)
                .total_cmp(&d.candidates[a].expected_quality.unwrap_or(0.0))
        });
    }
    v.truncate(n);
    v
}

fn no_route(why: &str) -> GatewayError {
    GatewayError::Client(ClientError::NoRoute {
        message: why.to_owned(),
    })
}

impl Gateway {
    /// `POST /v1/route`: the receipt for `req` without calling any model. The request is routed
    /// as `auto` whatever its `model` says.
    pub fn dry_run(
        &self,
        req: &ChatCompletionRequest,
        opts: RouteOptions,
    ) -> Result<Receipt, GatewayError> {
        crate::pipeline::validate_chat(req)?;
        let mut opts = opts.with_body(req.kairos.as_ref())?;
        opts.no_explore = true;
        let id = crate::pipeline::new_request_id();
        match self.route_auto(req, &opts, &id) {
            Ok((_, receipt)) | Err((_, Some(receipt))) => Ok(receipt),
            Err((e, None)) => Err(e),
        }
    }
}

/// The receipt stored on a ledger row, with what actually happened filled in (status, tokens,
/// cost, and the saving against the reference model priced at the actual token counts).
pub fn receipt_from_row(
    row: &kairos_store::LedgerRow,
    catalog: &crate::catalog::Catalog,
) -> Option<Receipt> {
    let mut r: Receipt = serde_json::from_str(row.receipt.as_deref()?).ok()?;
    let cost = row.cost_micros.map(|c| c as f64 / 1e6);
    let saving = r.reference.as_ref().and_then(|reference| {
        let entry = catalog.get(&reference.model)?;
        let t = crate::record::Tokens {
            input: u64::try_from(row.input_tokens).ok()?,
            output: u64::try_from(row.output_tokens).ok()?,
            cached: u64::try_from(row.cached_tokens).ok()?,
            cache_write: u64::try_from(row.cache_write_tokens).ok()?,
            reasoning: 0,
        };
        let ref_cost = crate::record::cost_micros(entry.price.as_ref(), &t)? as f64 / 1e6;
        Some(ref_cost - cost?)
    });
    r.actual = Some(kairos_router::receipt::Actual {
        status_code: row.status_code,
        outcome: row.outcome.clone(),
        cost_usd: cost,
        input_tokens: row.input_tokens,
        output_tokens: row.output_tokens,
        saving_vs_reference_usd: saving,
    });
    Some(r)
}
