//! The request pipeline, as plain async functions over a [`Recorder`] (the request's context and
//! its ledger row). The stages, in order:
//!
//! | # | stage | here |
//! |---|---|---|
//! | 1 | authenticate | [`Gateway::authenticate`] (called by the server before the body is parsed) |
//! | 2 | admit | budgets and rate limits: not yet (issue 5) |
//! | 3 | guard_in | [`validate_chat`]: bad input and forbidden fields, no upstream call |
//! | 4 | cache_lookup | not yet |
//! | 5 | route | [`Gateway::resolve`] (pinned models; `auto` comes with issue 3) |
//! | 6 | dispatch | [`Gateway::dispatch_chat`]: one attempt; a stream is primed to its first upstream event before the 200 is sent |
//! | 7 | guard_out | not yet |
//! | 8 | cache_store | not yet |
//! | 9 | record | [`Recorder`]: exactly one ledger row, also on error and disconnect |

use std::sync::Arc;
use std::time::Instant;

use kairos_api::openai::{
    ChatCompletion, ChatCompletionRequest, EmbeddingRequest, EmbeddingResponse, Role,
};
use kairos_providers::adapter::{Target, TranslateError};
use kairos_providers::client::{BodyError, read_body};

use crate::catalog::ModelMode;
use crate::dispatch::{AttemptLimits, Exec};
use secrecy::{ExposeSecret, SecretString};

use crate::error::{ClientError, GatewayError, UpstreamFailure};
use crate::gateway::{Gateway, Resolved};
use crate::record::{PromptSource, Recorder, Tokens};
use crate::routing::RouteOptions;
use crate::strategy::Node;
pub use crate::stream::{ChatStream, EventReader, NativeStream};

/// Facts about a reply the server puts in response headers.
#[derive(Debug, Clone)]
pub struct ReplyMeta {
    pub request_id: String,
    pub provider: String,
    /// The model id that served the request (catalog id).
    pub model: String,
    /// Known for complete replies; streams report it in their final usage chunk.
    pub cost_micros: Option<u64>,
    /// Unknown request fields not forwarded because the upstream is not OpenAI-compatible.
    pub dropped_params: Vec<String>,
    pub attempts: u32,
    /// Set when the request was routed (`model="auto"`): the classified task. The receipt id
    /// is the request id.
    pub task: Option<&'static str>,
    /// Targets that failed or were skipped before the one that answered.
    pub fallbacks: u32,
}

pub enum ChatReply {
    Complete(Box<ChatCompletion>, ReplyMeta),
    Stream(Box<ChatStream>, ReplyMeta),
}

/// Fields that would let a caller pick the upstream host or smuggle credentials (test-matrix
/// I6, CVE-2024-6587). Rejected on every route.
const FORBIDDEN_FIELDS: &[&str] = &[
    "api_base",
    "base_url",
    "api_key",
    "api_version",
    "custom_host",
    "custom_llm_provider",
    "headers",
    "extra_headers",
    "organization",
    "azure_endpoint",
    "azure_ad_token",
    "endpoint",
    "url",
    "host",
    "proxy",
    "credentials",
    "vertex_credentials",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "auth",
    "authorization",
    "x-api-key",
];

/// Caps on request shape (test-matrix I5): enough for any real workload, small enough that one
/// request cannot make the gateway do unbounded work.
pub const MAX_MESSAGES: usize = 10_000;
pub const MAX_TOOLS: usize = 512;
pub const MAX_N: u32 = 16;
pub const MAX_STOP: usize = 16;
pub const MAX_OUTPUT_TOKENS: u32 = 2_000_000;

pub fn clip(s: &str, n: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

/// Refuse routing/credential fields and odd names among a request's unknown top-level fields.
pub(crate) fn check_extra(
    extra: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), GatewayError> {
    for (k, _) in extra {
        let lower = k.to_ascii_lowercase();
        if FORBIDDEN_FIELDS.contains(&lower.as_str())
            || lower.starts_with("aws_")
            || lower.starts_with("vertex_")
            || lower.ends_with("_api_key")
            || lower.ends_with("_base_url")
        {
            return Err(GatewayError::Client(ClientError::ForbiddenField {
                field: clip(k, 64),
            }));
        }
        if k.is_empty()
            || k.len() > 64
            || !k
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(GatewayError::invalid(
                format!("unknown request field `{}`", clip(k, 64)),
                Some(&clip(k, 64)),
            ));
        }
    }
    Ok(())
}

fn range(v: Option<f64>, lo: f64, hi: f64, name: &str) -> Result<(), GatewayError> {
    match v {
        Some(x) if !(x.is_finite() && (lo..=hi).contains(&x)) => Err(GatewayError::invalid(
            format!("`{name}` must be between {lo} and {hi}"),
            Some(name),
        )),
        _ => Ok(()),
    }
}

/// Stage 3 (guard_in, input half): everything a request must satisfy before it may cost money.
pub fn validate_chat(req: &ChatCompletionRequest) -> Result<(), GatewayError> {
    if req.model.is_empty() {
        return Err(GatewayError::invalid("`model` is required", Some("model")));
    }
    if req.model.len() > 256 || req.model.chars().any(char::is_control) {
        return Err(GatewayError::invalid(
            "`model` is not a valid model name",
            Some("model"),
        ));
    }
    if req.messages.is_empty() {
        return Err(GatewayError::invalid(
            "`messages` must contain at least one message",
            Some("messages"),
        ));
    }
    if req.messages.len() > MAX_MESSAGES {
        return Err(GatewayError::invalid(
            format!("`messages` has more than {MAX_MESSAGES} entries"),
            Some("messages"),
        ));
    }
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::Tool if m.tool_call_id.is_none() => {
                return Err(GatewayError::invalid(
                    "a `tool` message needs `tool_call_id`",
                    Some(&format!("messages[{i}].tool_call_id")),
                ));
            }
            Role::User | Role::System | Role::Developer if m.content.is_none() => {
                return Err(GatewayError::invalid(
                    format!("a `{}` message needs `content`", m.role.as_str()),
                    Some(&format!("messages[{i}].content")),
                ));
            }
            _ => {}
        }
    }
    if req.tools.as_ref().is_some_and(|t| t.len() > MAX_TOOLS) {
        return Err(GatewayError::invalid(
            format!("`tools` has more than {MAX_TOOLS} entries"),
            Some("tools"),
        ));
    }
    if let Some(tools) = &req.tools {
        for (i, t) in tools.iter().enumerate() {
            if t.kind == kairos_api::openai::ToolKind::Function && t.function.is_none() {
                return Err(GatewayError::invalid(
                    "a function tool needs `function`",
                    Some(&format!("tools[{i}].function")),
                ));
            }
        }
    }
    if let Some(n) = req.n
        && !(1..=MAX_N).contains(&n)
    {
        return Err(GatewayError::invalid(
            format!("`n` must be between 1 and {MAX_N}"),
            Some("n"),
        ));
    }
    for (name, v) in [
        ("max_tokens", req.max_tokens),
        ("max_completion_tokens", req.max_completion_tokens),
    ] {
        if let Some(v) = v
            && !(1..=MAX_OUTPUT_TOKENS).contains(&v)
        {
            return Err(GatewayError::invalid(
                format!("`{name}` must be between 1 and {MAX_OUTPUT_TOKENS}"),
                Some(name),
            ));
        }
    }
    range(req.temperature, 0.0, 2.0, "temperature")?;
    range(req.top_p, 0.0, 1.0, "top_p")?;
    range(req.frequency_penalty, -2.0, 2.0, "frequency_penalty")?;
    range(req.presence_penalty, -2.0, 2.0, "presence_penalty")?;
    if req.top_logprobs.is_some_and(|v| v > 20) {
        return Err(GatewayError::invalid(
            "`top_logprobs` must be at most 20",
            Some("top_logprobs"),
        ));
    }
    if let Some(stop) = &req.stop {
        let v = stop.to_vec();
        if v.len() > MAX_STOP {
            return Err(GatewayError::invalid(
                format!("`stop` has more than {MAX_STOP} entries"),
                Some("stop"),
            ));
        }
    }
    if let Some(md) = &req.metadata {
        if md.len() > 16 {
            return Err(GatewayError::invalid(
                "`metadata` has more than 16 keys",
                Some("metadata"),
            ));
        }
        for (k, v) in md {
            if k.len() > 64 || v.as_str().is_none_or(|s| s.len() > 512) {
                return Err(GatewayError::invalid(
                    "`metadata` values must be strings of at most 512 characters with keys of at most 64",
                    Some("metadata"),
                ));
            }
        }
    }
    if req.user.as_ref().is_some_and(|u| u.len() > 256) {
        return Err(GatewayError::invalid(
            "`user` is longer than 256 characters",
            Some("user"),
        ));
    }
    check_extra(&req.extra)?;
    if let Some(so) = &req.stream_options {
        check_extra(&so.extra)?;
    }
    Ok(())
}

pub fn validate_embeddings(req: &EmbeddingRequest) -> Result<(), GatewayError> {
    if req.model.is_empty() {
        return Err(GatewayError::invalid("`model` is required", Some("model")));
    }
    if req.input.is_empty() {
        return Err(GatewayError::invalid(
            "`input` must not be empty",
            Some("input"),
        ));
    }
    if req.input.len() > 2048 {
        return Err(GatewayError::invalid(
            "`input` has more than 2048 entries",
            Some("input"),
        ));
    }
    if req.dimensions.is_some_and(|d| d == 0 || d > 65_536) {
        return Err(GatewayError::invalid(
            "`dimensions` must be between 1 and 65536",
            Some("dimensions"),
        ));
    }
    check_extra(&req.extra)
}

fn translate_err(e: TranslateError) -> GatewayError {
    GatewayError::Client(ClientError::InvalidRequest {
        message: e.message,
        param: e.param,
    })
}

/// The adapter's view of one attempt: `key` is the caller's or the workspace's provider key
/// when there is one ([`override_key`]), else the configured key is used.
/// The caller's (BYOK) or the workspace's key for `r`'s provider, copied out of the recorder.
pub(crate) fn override_key(rec: &Recorder, r: &Resolved) -> Option<SecretString> {
    rec.provider_key(&r.provider.name)
        .map(|k| SecretString::from(k.to_owned()))
}

pub(crate) fn target<'a>(r: &'a Resolved, key: &'a Option<SecretString>) -> Target<'a> {
    Target {
        provider: &r.provider.name,
        upstream_model: &r.entry.upstream_model,
        api_key: key
            .as_ref()
            .map(|k| k.expose_secret())
            .or_else(|| r.provider.api_key()),
        default_max_tokens: r
            .entry
            .max_output_tokens
            .map_or(r.provider.default_max_tokens, |m| {
                m.min(r.provider.default_max_tokens)
            }),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A new request id (UUID v7: time-ordered, so ledger inserts stay index-friendly).
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Start-of-request facts for a [`Recorder`].
pub fn request_info(
    route: crate::record::RouteKind,
    inbound: crate::record::InboundApi,
    trace_id: Option<String>,
    started: Instant,
) -> crate::record::RequestInfo {
    let id = new_request_id();
    crate::record::RequestInfo {
        trace_id: trace_id.unwrap_or_else(|| id.clone()),
        id,
        ts_ms: now_ms(),
        started,
        route,
        inbound,
        key_id: "-".into(),
    }
}

impl Gateway {
    /// Stages 3-9 for a chat request. Writes the ledger row itself for complete replies and
    /// errors; a stream carries the recorder and writes the row when it ends or is dropped.
    pub async fn chat(
        &self,
        mut rec: Recorder,
        req: ChatCompletionRequest,
        opts: RouteOptions,
    ) -> Result<ChatReply, GatewayError> {
        rec.set_requested(&req.model, req.is_stream());
        rec.set_signals(self.signals.clone());
        let end_user = req.user.clone();
        let md = req
            .metadata
            .as_ref()
            .map(|m| serde_json::Value::Object(m.clone()));
        merge_attribution(&mut rec, md, end_user);
        let result = self.chat_inner(&mut rec, req, opts).await;
        Self::settle(rec, result)
    }

    /// Hand the recorder on: complete replies and errors write the row now, a stream carries it.
    pub(crate) fn settle(
        rec: Recorder,
        result: Result<Dispatched, GatewayError>,
    ) -> Result<ChatReply, GatewayError> {
        match result {
            Ok(Dispatched::Complete(resp, meta)) => {
                rec.finish_ok(200);
                Ok(ChatReply::Complete(resp, meta))
            }
            Ok(Dispatched::Stream(mut stream, meta)) => {
                stream.rec = Some(rec);
                Ok(ChatReply::Stream(stream, meta))
            }
            Err(e) => {
                rec.finish_err(&e);
                Err(e)
            }
        }
    }

    async fn chat_inner(
        &self,
        rec: &mut Recorder,
        req: ChatCompletionRequest,
        opts: RouteOptions,
    ) -> Result<Dispatched, GatewayError> {
        validate_chat(&req)?;
        let deadline = self.deadline(opts.timeout);
        let plan = self.resolve_or_route(rec, &req, opts)?;
        self.admit_spend(
            rec,
            &plan,
            || serde_json::to_vec(&req.messages).map_or(0, |v| v.len()),
            req.output_cap(),
        )
        .await?;
        self.chat_resolved(rec, req, plan, deadline).await
    }

    /// Stage 5: the plan. A strategy (`x-kairos-config`, or a strategy name as the model), a
    /// pinned model (one target, retried), or `auto`: classified and routed, the chosen model
    /// first and the runners-up as its fallbacks; the receipt is recorded on the request's row
    /// (also when routing fails).
    pub(crate) fn resolve_or_route(
        &self,
        rec: &mut Recorder,
        req: &ChatCompletionRequest,
        opts: RouteOptions,
    ) -> Result<Arc<Node>, GatewayError> {
        if !crate::routing::is_auto(&req.model)
            && self.router.config.learning_enabled
            && self.router.config.learning_embed_pinned
        {
            rec.defer_evidence();
        }
        if let Some(name) = &opts.strategy {
            return self.strategies.get(name).cloned().ok_or_else(|| {
                GatewayError::invalid(
                    format!("no strategy named `{}` (x-kairos-config)", clip(name, 64)),
                    Some("x-kairos-config"),
                )
            });
        }
        if let Some(plan) = self.strategies.get(&req.model) {
            return Ok(plan.clone());
        }
        if !crate::routing::is_auto(&req.model) {
            let r = self.resolve(&req.model, ModelMode::Chat)?;
            if let Some(a) = rec.access()
                && !a.allows(&[&req.model, &r.entry.id], &r.provider.name)
            {
                return Err(GatewayError::Client(ClientError::ModelNotAllowed {
                    model: clip(&req.model, 200),
                }));
            }
            return Ok(Arc::new(crate::dispatch::single(
                r,
                self.retry_defaults.clone(),
            )));
        }
        let mut opts = opts.with_body(req.kairos.as_ref())?;
        if let Some(a) = rec.access() {
            opts.workspace.clone_from(&a.workspace_id);
            // The key's allowlists narrow the candidates; the caller can narrow further.
            if let Some(allowed) = &a.allowed_models {
                opts.models = Some(match opts.models.take() {
                    Some(m) => m.into_iter().filter(|x| allowed.contains(x)).collect(),
                    None => allowed.iter().cloned().collect(),
                });
            }
            if let Some(allowed) = &a.allowed_providers {
                opts.providers = Some(match opts.providers.take() {
                    Some(p) => p.into_iter().filter(|x| allowed.contains(x)).collect(),
                    None => allowed.iter().cloned().collect(),
                });
            }
        }
        match self.route_auto(req, &opts, rec.id()) {
            Ok((plan, receipt)) => {
                rec.set_receipt(&receipt);
                Ok(plan)
            }
            Err((e, receipt)) => {
                if let Some(r) = receipt {
                    rec.set_receipt(&r);
                }
                Err(e)
            }
        }
    }

    /// The request deadline: the configured request timeout, lowered by `x-kairos-timeout-ms`.
    pub(crate) fn deadline(
        &self,
        opts_timeout: Option<std::time::Duration>,
    ) -> tokio::time::Instant {
        let t = opts_timeout.map_or(self.limits.request_timeout, |t| {
            t.min(self.limits.request_timeout)
        });
        tokio::time::Instant::now() + t
    }

    /// Stages 6-9 for a chat request whose plan is known.
    pub(crate) async fn chat_resolved(
        &self,
        rec: &mut Recorder,
        req: ChatCompletionRequest,
        plan: Arc<Node>,
        deadline: tokio::time::Instant,
    ) -> Result<Dispatched, GatewayError> {
        let req = Arc::new(req);
        rec.set_prompt(PromptSource::Chat(req.clone()));
        let key_id = rec.key_id().to_owned();
        let task = rec.task();
        let facts_req = req.clone();
        let facts = move |field: &str| -> Option<serde_json::Value> {
            match field {
                "model" => Some(serde_json::Value::from(facts_req.model.clone())),
                "user" => facts_req.user.clone().map(serde_json::Value::from),
                "key" => Some(serde_json::Value::from(key_id.clone())),
                "stream" => Some(serde_json::Value::from(facts_req.is_stream())),
                "task" => task.map(serde_json::Value::from),
                f => f
                    .strip_prefix("metadata.")
                    .and_then(|k| facts_req.metadata.as_ref()?.get(k).cloned()),
            }
        };
        let _inflight = self.retry_budget.request_started();
        let x = Exec {
            req: &req,
            deadline,
            facts: &facts,
        };
        // A plan of one target never leaves the request with nothing: an ejected target is
        // still called (a provider's explicit Retry-After is still respected).
        let force = matches!(plan.as_ref(), Node::Leaf(_));
        self.exec_node(rec, &x, &plan, false, force).await
    }

    /// One upstream attempt: send `up` to `r`'s provider with the outbound headers, and turn a
    /// non-2xx answer into a classified error (its body read, capped). Returns the 2xx
    /// response's body and the request deadline.
    pub(crate) async fn send_attempt(
        &self,
        rec: &mut Recorder,
        r: &Resolved,
        up: kairos_providers::adapter::UpstreamRequest,
        limits: &AttemptLimits,
    ) -> Result<hyper::body::Incoming, GatewayError> {
        let headers = r.provider.outbound_headers(rec.id());
        rec.set_served(&r.provider.name, &r.entry.id, r.entry.price);
        rec.upstream_start();
        let remaining = limits
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let resp = self
            .client
            .send(
                &r.provider.base_url,
                up,
                &headers,
                limits.ttfb.min(remaining),
            )
            .await
            .map_err(|e| GatewayError::from_send(&r.provider.name, e))?;
        let status = resp.status().as_u16();
        let (parts, body) = resp.into_parts();
        if !(200..300).contains(&status) {
            let body = read_body(body, 64 * 1024, limits.idle)
                .await
                .unwrap_or_default();
            rec.upstream_end();
            let e = r
                .provider
                .adapter
                .upstream_error(status, &parts.headers, &body);
            return Err(GatewayError::Upstream(UpstreamFailure::Status(e)));
        }
        Ok(body)
    }

    /// The reply facts for a request served by `r`.
    pub(crate) fn meta(rec: &Recorder, r: &Resolved, dropped_params: Vec<String>) -> ReplyMeta {
        ReplyMeta {
            request_id: rec.id().to_owned(),
            provider: r.provider.name.clone(),
            model: r.entry.id.clone(),
            cost_micros: None,
            dropped_params,
            attempts: 1,
            task: rec.task(),
            fallbacks: 0,
        }
    }

    /// Stage 6, dispatch: one attempt against one target. (Retries and fallbacks: issue 4.)
    /// One attempt against one target.
    pub(crate) async fn dispatch_chat(
        &self,
        rec: &mut Recorder,
        req: &ChatCompletionRequest,
        r: &Resolved,
        limits: AttemptLimits,
    ) -> Result<Dispatched, GatewayError> {
        let stream = req.is_stream();
        let key = override_key(rec, r);
        let t = target(r, &key);
        let up = r
            .provider
            .adapter
            .chat_request(req, &t, stream)
            .map_err(translate_err)?;
        let dropped_params = if r.provider.api() == kairos_providers::adapter::ApiKind::OpenAi {
            Vec::new()
        } else {
            req.extra.keys().cloned().collect()
        };
        let body = self.send_attempt(rec, r, up, &limits).await?;
        let mut meta = Self::meta(rec, r, dropped_params);
        if stream {
            let reader = EventReader::new(
                body,
                &r.provider.name,
                limits.idle,
                limits.deadline.into_std(),
                self.limits.max_response_bytes,
            );
            let mut s = ChatStream::new(reader, r.provider.adapter.chat_stream_decoder(&t));
            s.prime(rec, limits.hold_for_content).await?;
            return Ok(Dispatched::Stream(Box::new(s), meta));
        }
        let body = read_body(body, self.limits.max_response_bytes, limits.ttfb)
            .await
            .map_err(|e| match e {
                BodyError::Idle => GatewayError::Upstream(UpstreamFailure::Timeout {
                    provider: r.provider.name.clone(),
                }),
                other => GatewayError::from_body(&r.provider.name, other),
            })?;
        rec.upstream_end();
        let mut resp = r
            .provider
            .adapter
            .chat_response(&body, &t)
            .map_err(|e| GatewayError::from_decode(&r.provider.name, e))?;
        for c in &resp.choices {
            if let Some(text) = &c.message.content {
                rec.add_output_text(text);
            }
            if let Some(calls) = &c.message.tool_calls {
                for call in calls {
                    rec.add_output_text(&call.function.arguments);
                }
            }
        }
        rec.observe_completion(&resp);
        if let Some(u) = resp.usage.as_mut() {
            rec.set_usage(Tokens::from_usage(u));
            meta.cost_micros = rec.provider_cost_micros();
            u.cost = meta.cost_micros.map(usd);
        }
        Ok(Dispatched::Complete(Box::new(resp), meta))
    }

    /// Embeddings: stages 3-9 without streaming.
    pub async fn embeddings(
        &self,
        mut rec: Recorder,
        req: EmbeddingRequest,
    ) -> Result<(EmbeddingResponse, ReplyMeta), GatewayError> {
        rec.set_requested(&req.model, false);
        merge_attribution(&mut rec, None, req.user.clone());
        match self.embeddings_inner(&mut rec, req).await {
            Ok(v) => {
                rec.finish_ok(200);
                Ok(v)
            }
            Err(e) => {
                rec.finish_err(&e);
                Err(e)
            }
        }
    }

    async fn embeddings_inner(
        &self,
        rec: &mut Recorder,
        req: EmbeddingRequest,
    ) -> Result<(EmbeddingResponse, ReplyMeta), GatewayError> {
        validate_embeddings(&req)?;
        let r = self.resolve(&req.model, ModelMode::Embedding)?;
        if let Some(a) = rec.access()
            && !a.allows(&[&req.model, &r.entry.id], &r.provider.name)
        {
            return Err(GatewayError::Client(ClientError::ModelNotAllowed {
                model: clip(&req.model, 200),
            }));
        }
        let plan = crate::dispatch::single(r.clone(), self.retry_defaults.clone());
        self.admit_spend(
            rec,
            &plan,
            || serde_json::to_vec(&req.input).map_or(0, |v| v.len()),
            Some(0),
        )
        .await?;
        rec.set_served(&r.provider.name, &r.entry.id, r.entry.price);
        let key = override_key(rec, &r);
        let t = target(&r, &key);
        let up = r
            .provider
            .adapter
            .embeddings_request(&req, &t)
            .map_err(translate_err)?;
        let limits = AttemptLimits {
            ttfb: r.provider.ttfb_timeout,
            idle: r.provider.stream_idle_timeout,
            deadline: self.deadline(None),
            hold_for_content: false,
        };
        let body = self.send_attempt(rec, &r, up, &limits).await?;
        let body = read_body(body, self.limits.max_response_bytes, limits.ttfb)
            .await
            .map_err(|e| GatewayError::from_body(&r.provider.name, e))?;
        rec.upstream_end();
        let mut resp = r
            .provider
            .adapter
            .embeddings_response(&body, &req, &t)
            .map_err(|e| GatewayError::from_decode(&r.provider.name, e))?;
        let mut meta = Self::meta(rec, &r, Vec::new());
        if resp.usage.prompt_tokens > 0 {
            rec.set_usage(Tokens {
                input: resp.usage.prompt_tokens,
                ..Tokens::default()
            });
            meta.cost_micros = rec.provider_cost_micros();
        } else {
            // Some providers (Gemini) report no token counts for embeddings: estimate.
            let input = Arc::new(req.input);
            let input2 = input.clone();
            let n = tokio::task::spawn_blocking(move || crate::tokens::embedding_input(&input2))
                .await
                .unwrap_or(0);
            rec.set_prompt(PromptSource::Embedding(input));
            resp.usage.prompt_tokens = n;
            resp.usage.total_tokens = n;
            // The recorder estimates again for the ledger (marked `estimated`); the cost header
            // uses the same number.
            meta.cost_micros = r.entry.price.as_ref().and_then(|p| {
                p.cost_micros(
                    &Tokens {
                        input: n,
                        ..Tokens::default()
                    }
                    .priced(),
                )
            });
        }
        Ok((resp, meta))
    }
}

/// Body `metadata`/`user` join the attribution the server took from `x-kairos-metadata`;
/// header keys win over body keys.
fn merge_attribution(
    rec: &mut Recorder,
    body_md: Option<serde_json::Value>,
    end_user: Option<String>,
) {
    if let Some(serde_json::Value::Object(m)) = body_md {
        rec.add_metadata(m, false);
    }
    if end_user.is_some() {
        rec.set_end_user(end_user);
    }
}

pub(crate) fn usd(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
}

pub(crate) enum Dispatched {
    Complete(Box<ChatCompletion>, ReplyMeta),
    Stream(Box<ChatStream>, ReplyMeta),
}

impl Dispatched {
    pub(crate) fn meta_mut(&mut self) -> &mut ReplyMeta {
        match self {
            Dispatched::Complete(_, m) | Dispatched::Stream(_, m) => m,
        }
    }
}

fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<ChatStream>();
    is_send::<NativeStream>();
}
