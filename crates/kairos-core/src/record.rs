//! Stage 9, record: exactly one ledger row per request.
//!
//! A [`Recorder`] is created when a request arrives and travels with it (into the stream for
//! streamed responses). It is consumed by [`Recorder::finish`]; if it is dropped instead — the
//! client went away, the handler future was cancelled — its `Drop` writes the row as
//! `client_disconnected` with whatever usage was seen so far. Either way exactly one row is
//! written, and writing never blocks: [`kairos_store::LedgerHandle::record`] only enqueues.
//!
//! When the provider reported no usage, tokens are estimated with a real tokenizer on a blocking
//! thread and the row is marked `usage_source = "estimated"`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kairos_api::openai::{ChatCompletionRequest, EmbeddingInput, Usage};
use kairos_store::{LedgerHandle, LedgerRow};

use crate::catalog::{Price, TokenUsage};
use crate::error::GatewayError;

/// Which inbound API the caller used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundApi {
    OpenAi,
    Anthropic,
}

impl InboundApi {
    pub fn as_str(self) -> &'static str {
        match self {
            InboundApi::OpenAi => "openai",
            InboundApi::Anthropic => "anthropic",
        }
    }
}

/// The route, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Chat,
    Messages,
    Embeddings,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Chat => "chat",
            RouteKind::Messages => "messages",
            RouteKind::Embeddings => "embeddings",
        }
    }
}

/// What the request asked the model to read, kept only to estimate tokens if the provider
/// reports none.
#[derive(Debug, Clone)]
pub enum PromptSource {
    None,
    Chat(Arc<ChatCompletionRequest>),
    Embedding(Arc<EmbeddingInput>),
}

/// Usage as the gateway accounts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// All prompt tokens, cached ones included (OpenAI convention).
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

impl Tokens {
    pub fn from_usage(u: &Usage) -> Tokens {
        Tokens {
            input: u.prompt_tokens,
            output: u.completion_tokens,
            cached: u.cached_tokens(),
            cache_write: u
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cache_write_tokens)
                .unwrap_or(0),
            reasoning: u.reasoning_tokens(),
        }
    }

    /// The split the price table needs (uncached input separately from cache reads/writes).
    pub fn priced(&self) -> TokenUsage {
        let cached = self.cached.min(self.input);
        let write = self.cache_write.min(self.input - cached);
        TokenUsage {
            input: self.input - cached - write,
            output: self.output,
            cached_input: cached,
            cache_write: write,
        }
    }
}

/// Cost in micro-USD, None when the model has no price.
pub fn cost_micros(price: Option<&Price>, t: &Tokens) -> Option<u64> {
    price.and_then(|p| p.cost_micros(&t.priced()))
}

/// Where the usage numbers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    Provider,
    Estimated,
    None,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Provider => "provider",
            UsageSource::Estimated => "estimated",
            UsageSource::None => "none",
        }
    }
}

/// One upstream attempt, as recorded on the ledger row (`attempts_detail`, JSON).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct AttemptRecord {
    /// `provider/model`.
    pub target: String,
    /// `ok`, `error`, or `skipped` (ejected or cooling down: not called).
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    pub latency_us: i64,
    /// This failure was followed by a retry of the same target.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retried: bool,
    /// The request was written and then the connection broke or timed out: the provider may
    /// have run and billed it. To reconcile against the provider's invoice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ambiguous: bool,
}

impl AttemptRecord {
    pub fn ok(target: &str, latency: Duration) -> Self {
        AttemptRecord {
            target: target.to_owned(),
            outcome: "ok".into(),
            status: Some(200),
            error_kind: None,
            latency_us: micros(latency),
            retried: false,
            ambiguous: false,
        }
    }

    pub fn failed(target: &str, e: &GatewayError, latency: Duration, retried: bool) -> Self {
        AttemptRecord {
            target: target.to_owned(),
            outcome: "error".into(),
            status: match e {
                GatewayError::Upstream(crate::error::UpstreamFailure::Status(s)) => Some(s.status),
                _ => None,
            },
            error_kind: Some(e.kind().to_owned()),
            latency_us: micros(latency),
            retried,
            ambiguous: matches!(
                e,
                GatewayError::Upstream(
                    crate::error::UpstreamFailure::Io { .. }
                        | crate::error::UpstreamFailure::Timeout { .. }
                )
            ),
        }
    }

    pub fn skipped(target: &str) -> Self {
        AttemptRecord {
            target: target.to_owned(),
            outcome: "skipped".into(),
            status: None,
            error_kind: Some("target_unavailable".into()),
            latency_us: 0,
            retried: false,
            ambiguous: false,
        }
    }
}

/// How the request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error,
    ClientDisconnected,
}

pub struct Recorder {
    ledger: LedgerHandle,
    row: LedgerRow,
    started: Instant,
    upstream_started: Option<Instant>,
    upstream_time: Duration,
    ttft: Option<Duration>,
    price: Option<Price>,
    /// Provider-reported usage, if any arrived.
    usage: Option<Tokens>,
    /// Visible output seen so far (stream chunks, or the final answer), for estimates.
    output_text: String,
    /// Bytes of visible output seen, including what did not fit in `output_text`.
    output_len: usize,
    prompt: PromptSource,
    metadata: serde_json::Map<String, serde_json::Value>,
    task: Option<&'static str>,
    attempts: Vec<AttemptRecord>,
    fallbacks: u32,
    finished: bool,
    access: Option<std::sync::Arc<crate::tenancy::Access>>,
    spend: Option<crate::spend::SpendHold>,
    /// Provider keys the caller brought for this request only (BYOK), by provider name.
    byok: Vec<(String, secrecy::SecretString)>,
    /// What the request asked of the answer (JSON, tools), for the implicit signal.
    expect: crate::signals::Expect,
    /// What the model answered, for the implicit signal.
    observed: crate::signals::Observed,
    /// The gateway's outcome hook and recent-request memory (chat routes only).
    signals: Option<Arc<crate::signals::Signals>>,
    /// Classify and embed the prompt when the request completes (it was not routed).
    evidence_due: bool,
}

/// The facts known when a request arrives.
pub struct RequestInfo {
    pub id: String,
    pub ts_ms: i64,
    pub started: Instant,
    pub route: RouteKind,
    pub inbound: InboundApi,
    pub key_id: String,
    pub trace_id: String,
}

impl Recorder {
    pub fn new(ledger: LedgerHandle, info: RequestInfo) -> Recorder {
        Recorder {
            ledger,
            row: LedgerRow {
                id: info.id,
                ts_ms: info.ts_ms,
                key_id: info.key_id,
                route: info.route.as_str().to_owned(),
                inbound_api: info.inbound.as_str().to_owned(),
                usage_source: UsageSource::None.as_str().to_owned(),
                trace_id: info.trace_id,
                ..LedgerRow::default()
            },
            started: info.started,
            upstream_started: None,
            upstream_time: Duration::ZERO,
            ttft: None,
            price: None,
            usage: None,
            output_text: String::new(),
            output_len: 0,
            prompt: PromptSource::None,
            metadata: serde_json::Map::new(),
            task: None,
            attempts: Vec::new(),
            fallbacks: 0,
            finished: false,
            access: None,
            spend: None,
            byok: Vec::new(),
            expect: crate::signals::Expect::default(),
            observed: crate::signals::Observed::default(),
            signals: None,
            evidence_due: false,
        }
    }

    /// Report this request's outcomes to the gateway's hook and look for retries and
    /// escalations when it finishes (chat routes).
    pub fn set_signals(&mut self, s: Arc<crate::signals::Signals>) {
        self.signals = Some(s);
    }

    /// A chat request `auto` did not route (a pinned model, a strategy): when it completes, its
    /// prompt is classified and embedded off the request path (on the estimator thread, before
    /// the row is written), so that its outcomes count as task- and prompt-level evidence for
    /// the model that served it. The row is counted in the metrics and its budget settled at
    /// once, as for any other row.
    pub fn defer_evidence(&mut self) {
        self.evidence_due = true;
    }

    /// A complete answer, seen for the implicit signal (first choice).
    pub fn observe_completion(&mut self, c: &kairos_api::openai::ChatCompletion) {
        self.observed.on_completion(c);
    }

    /// A stream chunk, seen for the implicit signal.
    pub fn observe_chunk(&mut self, c: &kairos_api::openai::ChatCompletionChunk) {
        self.observed.on_chunk(c);
    }

    /// What the implicit signal has seen of the answer (native streams feed it piece by piece).
    pub(crate) fn observed_mut(&mut self) -> &mut crate::signals::Observed {
        &mut self.observed
    }

    pub fn id(&self) -> &str {
        &self.row.id
    }

    pub fn trace_id(&self) -> &str {
        &self.row.trace_id
    }

    pub fn set_key(&mut self, key_id: &str) {
        key_id.clone_into(&mut self.row.key_id);
    }

    /// The caller is a virtual key: attribute the row to its workspace, tag it with the key's
    /// metadata, and keep its allowlists for the pipeline.
    pub fn set_access(&mut self, access: std::sync::Arc<crate::tenancy::Access>) {
        access.key_id.clone_into(&mut self.row.key_id);
        self.row.workspace = Some(access.workspace_id.clone());
        if let Some(md) = &access.key.metadata {
            self.add_metadata(md.clone(), false);
        }
        self.access = Some(access);
    }

    pub fn access(&self) -> Option<&std::sync::Arc<crate::tenancy::Access>> {
        self.access.as_ref()
    }

    /// The request's budget reservations and TPM charges, settled when the row is final.
    pub fn set_spend_hold(&mut self, h: crate::spend::SpendHold) {
        self.spend = Some(h);
    }

    pub fn set_requested(&mut self, model: &str, stream: bool) {
        model.clone_into(&mut self.row.requested_model);
        self.row.stream = stream;
    }

    /// Add attribution tags. With `overwrite` false, existing keys are kept (header metadata
    /// is added first and wins over body metadata).
    pub fn add_metadata(&mut self, m: serde_json::Map<String, serde_json::Value>, overwrite: bool) {
        for (k, v) in m {
            if overwrite || !self.metadata.contains_key(&k) {
                self.metadata.insert(k, v);
            }
        }
    }

    /// Keep the routing receipt (and its task) on the row.
    pub fn set_receipt(&mut self, r: &kairos_router::receipt::Receipt) {
        self.task = Some(r.classification.task.as_str());
        self.row.task = Some(r.classification.task.as_str().to_owned());
        self.row.receipt = serde_json::to_string(r).ok();
        self.row.embedding.clone_from(&r.embedding);
    }

    pub fn key_id(&self) -> &str {
        &self.row.key_id
    }

    /// Record one upstream attempt (or a skipped target).
    pub fn add_attempt(&mut self, a: AttemptRecord) {
        crate::metrics::observe_attempt(&a);
        if self.attempts.len() < 64 {
            self.attempts.push(a);
        }
    }

    /// A fallback moved the request to another target.
    pub fn mark_fallback(&mut self) {
        self.fallbacks += 1;
        crate::metrics::fallback();
    }

    /// Upstream calls made so far (skipped targets not counted).
    pub fn attempts_made(&self) -> u32 {
        self.attempts
            .iter()
            .filter(|a| a.outcome != "skipped")
            .count() as u32
    }

    /// How many targets failed (or were skipped) before the one that answered.
    pub fn fallbacks(&self) -> u32 {
        self.fallbacks
    }

    /// The classified task, when the request was routed.
    pub fn task(&self) -> Option<&'static str> {
        self.task
    }

    pub fn set_end_user(&mut self, end_user: Option<String>) {
        self.row.end_user = end_user;
    }

    /// Keys the caller brought (`x-kairos-provider-key`): used for that provider's attempts
    /// of this request only, never stored.
    pub fn set_byok(&mut self, keys: Vec<(String, secrecy::SecretString)>) {
        self.byok = keys;
    }

    /// The key an attempt on `provider` uses instead of the configured one: the caller's own
    /// (BYOK), else the workspace's stored credential. `None`: the configured key.
    pub fn provider_key(&self, provider: &str) -> Option<&str> {
        use secrecy::ExposeSecret;
        if let Some((_, k)) = self.byok.iter().find(|(p, _)| p == provider) {
            return Some(k.expose_secret());
        }
        self.access
            .as_ref()
            .and_then(|a| a.credentials.get(provider))
            .map(|k| k.expose_secret())
    }

    pub fn set_served(&mut self, provider: &str, model: &str, price: Option<Price>) {
        self.row.byok = self.byok.iter().any(|(p, _)| p == provider);
        self.row.provider = Some(provider.to_owned());
        self.row.served_model = Some(model.to_owned());
        self.price = price;
    }

    pub fn set_prompt(&mut self, p: PromptSource) {
        if let PromptSource::Chat(req) = &p {
            self.expect = crate::signals::Expect::of(req);
            self.observed.keep_json = self.expect.json.is_some();
        }
        self.prompt = p;
    }

    pub fn upstream_start(&mut self) {
        if self.row.journal_gen.is_none() {
            // Before the first upstream call: a crash from here on cannot lose this request.
            self.row.journal_gen = self.ledger.journal_begin(&self.row);
        }
        self.row.attempts = self.row.attempts.saturating_add(1);
        self.upstream_started = Some(Instant::now());
    }

    /// Close the current upstream interval (response fully read, or stream ended).
    pub fn upstream_end(&mut self) {
        if let Some(s) = self.upstream_started.take() {
            self.upstream_time += s.elapsed();
        }
    }

    pub fn first_token(&mut self) {
        if self.ttft.is_none() {
            self.ttft = Some(self.started.elapsed());
        }
    }

    pub fn add_output_text(&mut self, s: &str) {
        // Bounded: beyond 1 MiB the estimate scales the prefix's token count by length.
        self.output_len += s.len();
        if self.output_text.len() < 1 << 20 {
            self.output_text.push_str(s);
        }
    }

    pub fn set_usage(&mut self, u: Tokens) {
        self.usage = Some(u);
    }

    pub fn usage(&self) -> Option<Tokens> {
        self.usage
    }

    /// Cost of the provider-reported usage so far (None when unpriced or no usage yet).
    pub fn provider_cost_micros(&self) -> Option<u64> {
        self.usage
            .as_ref()
            .and_then(|u| cost_micros(self.price.as_ref(), u))
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Write the row for a successful request.
    pub fn finish_ok(mut self, status: u16) {
        self.row.status_code = i32::from(status);
        self.row.outcome = "ok".into();
        self.complete(Outcome::Ok);
    }

    /// Write the row for a failed request.
    pub fn finish_err(mut self, err: &GatewayError) {
        self.row.status_code = i32::from(err.status());
        self.row.outcome = "error".into();
        self.row.error_kind = Some(err.kind().to_owned());
        self.complete(Outcome::Error);
    }

    /// Write the row for a stream that started (200 sent) and then failed.
    pub fn finish_stream_err(mut self, err: &GatewayError) {
        self.row.status_code = 200;
        self.row.outcome = match err.kind() {
            "upstream_cut" => "upstream_cut",
            "upstream_stalled" => "upstream_stalled",
            _ => "error",
        }
        .into();
        self.row.error_kind = Some(err.kind().to_owned());
        self.complete(Outcome::Error);
    }

    fn complete(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.upstream_end();
        let total = self.started.elapsed();
        if !self.metadata.is_empty() {
            self.row.metadata = serde_json::to_string(&std::mem::take(&mut self.metadata)).ok();
        }
        if self.attempts.len() > 1 || self.attempts.iter().any(|a| a.outcome != "ok") {
            self.row.attempts_detail = serde_json::to_string(&self.attempts).ok();
        }
        let row = &mut self.row;
        if outcome == Outcome::ClientDisconnected {
            row.outcome = "client_disconnected".into();
            row.status_code = if row.stream && self.ttft.is_some() {
                200
            } else {
                499
            };
            row.error_kind
                .get_or_insert_with(|| "client_disconnected".into());
        }
        row.latency_total_us = micros(total);
        row.latency_upstream_us = (row.attempts > 0).then(|| micros(self.upstream_time));
        row.overhead_us = micros(total.saturating_sub(self.upstream_time));
        row.ttft_us = self.ttft.map(micros);
        let end_ms = row
            .ts_ms
            .saturating_add(i64::try_from(total.as_millis()).unwrap_or(i64::MAX));
        if let Some(s) = crate::signals::implicit_signal(row, &self.expect, &self.observed, end_ms)
        {
            row.signals.push(s);
        }
        let prompt = match &self.prompt {
            PromptSource::Chat(req) => Some(Arc::clone(req)),
            PromptSource::None | PromptSource::Embedding(_) => None,
        };
        let tail = Tail {
            evidence: self.evidence_due && row.task.is_none() && row.embedding.is_none(),
            prompt,
            signals: self.signals.clone(),
            end_ms,
            runtime: tokio::runtime::Handle::try_current().ok(),
        };

        let called_upstream = row.attempts > 0;
        let hold = self.spend.take();
        let markup_pct = self
            .access
            .as_ref()
            .and_then(|a| a.workspace.markup_pct)
            .unwrap_or(0.0);
        match self.usage {
            Some(u) => {
                apply_tokens(row, &u, self.price.as_ref(), UsageSource::Provider);
                account_row(row, hold, markup_pct);
                tail.write_soon(&self.ledger, std::mem::take(row));
            }
            None if called_upstream
                && (outcome == Outcome::Ok
                    || !self.output_text.is_empty()
                    || outcome == Outcome::ClientDisconnected) =>
            {
                // The provider may bill this request but told us nothing: estimate off the
                // async runtime (the tokenizer is CPU work and loads lazily).
                let mut row = std::mem::take(row);
                let prompt = std::mem::replace(&mut self.prompt, PromptSource::None);
                let output = std::mem::take(&mut self.output_text);
                let output_len = self.output_len;
                let price = self.price;
                let ledger = self.ledger.clone();
                let job = move || {
                    let t = estimate(&prompt, &output, output_len);
                    apply_tokens(&mut row, &t, price.as_ref(), UsageSource::Estimated);
                    account_row(&mut row, hold, markup_pct);
                    tail.write(&ledger, row);
                };
                crate::tokens::estimator().submit(Box::new(job));
            }
            None => {
                // Nothing reached a provider (or it failed before generating): no spend.
                row.cost_micros = if called_upstream { None } else { Some(0) };
                account_row(row, hold, markup_pct);
                tail.write_soon(&self.ledger, std::mem::take(row));
            }
        }
    }
}

/// The last steps of a row, after its accounting: the prompt's evidence when it is due, the
/// outcome hook and retry memory, then the ledger.
struct Tail {
    /// Classify and embed `prompt` first (a request `auto` did not route).
    evidence: bool,
    prompt: Option<Arc<ChatCompletionRequest>>,
    signals: Option<Arc<crate::signals::Signals>>,
    end_ms: i64,
    /// The request's runtime (retry and escalation detection runs on it).
    runtime: Option<tokio::runtime::Handle>,
}

impl Tail {
    /// Now, unless the prompt's evidence is due: then in a task on the request's runtime,
    /// which also does the retry and escalation lookup (a task spawned for every chat row
    /// anyway), so that classifying and embedding the prompt (13 µs at 2 KB) costs the request
    /// nothing. (Handing it to the estimator thread instead cost a thread wake-up, 5 µs p50
    /// and 17 µs p90 on a 2-vCPU VM: more than embedding a short prompt.)
    fn write_soon(self, ledger: &LedgerHandle, row: LedgerRow) {
        match (&self.signals, &self.runtime) {
            (Some(signals), Some(rt)) if self.evidence && self.prompt.is_some() => {
                let guard = signals.defer();
                let ledger = ledger.clone();
                rt.clone().spawn(async move {
                    let _guard = guard;
                    let (row, recall) = self.settle_evidence(row);
                    ledger.record(row);
                    if let Some(work) = recall {
                        work.await;
                    }
                });
            }
            _ => self.write(ledger, row),
        }
    }

    /// Here and now (the estimator thread, or a request without a runtime or evidence due).
    fn write(self, ledger: &LedgerHandle, row: LedgerRow) {
        let runtime = self.runtime.clone();
        let (row, recall) = self.settle_evidence(row);
        ledger.record(row);
        if let Some(work) = recall {
            match runtime {
                Some(h) => {
                    h.spawn(work);
                }
                None => tracing::debug!("no runtime: retry and escalation signals skipped"),
            }
        }
    }

    /// The prompt's task and embedding when due, the row's outcomes to the hook; returns the
    /// row and the retry and escalation lookup still to run.
    fn settle_evidence(
        self,
        mut row: LedgerRow,
    ) -> (
        LedgerRow,
        Option<impl std::future::Future<Output = ()> + Send + use<>>,
    ) {
        if self.evidence
            && let Some(req) = &self.prompt
        {
            let (task, embedding) = crate::routing::prompt_evidence(req);
            row.task = Some(task.to_owned());
            row.embedding = embedding;
        }
        let recall = self.signals.as_ref().and_then(|signals| {
            signals.observe_row(&row);
            signals.recall_job(&row, self.prompt, self.end_ms)
        });
        (row, recall)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.finished {
            self.complete(Outcome::ClientDisconnected);
        }
    }
}

/// Every finished row passes here, on the thread that finished it: the markup on managed-key
/// spend, budget settlement, metrics. (Then [`Tail`] writes it.)
fn account_row(row: &mut LedgerRow, hold: Option<crate::spend::SpendHold>, markup_pct: f64) {
    if !row.byok && markup_pct > 0.0 {
        let cost = row.cost_micros.unwrap_or(0).max(0) as f64;
        row.markup_micros = (cost * markup_pct / 100.0).round() as i64;
    }
    if let Some(h) = hold {
        h.finish(row);
    }
    crate::metrics::observe_row(row);
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn apply_tokens(row: &mut LedgerRow, t: &Tokens, price: Option<&Price>, src: UsageSource) {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    row.input_tokens = i(t.input);
    row.output_tokens = i(t.output);
    row.cached_tokens = i(t.cached);
    row.cache_write_tokens = i(t.cache_write);
    row.reasoning_tokens = i(t.reasoning);
    row.usage_source = src.as_str().to_owned();
    row.cost_micros = cost_micros(price, t).map(i);
}

/// Token estimate of a request whose provider reported no usage. `output` is a prefix of the
/// visible output, whose whole length was `output_len` bytes.
fn estimate(prompt: &PromptSource, output: &str, output_len: usize) -> Tokens {
    let input = match prompt {
        PromptSource::None => 0,
        PromptSource::Chat(req) => crate::tokens::chat_prompt(req),
        PromptSource::Embedding(inp) => crate::tokens::embedding_input(inp),
    };
    Tokens {
        input,
        output: scale(crate::tokens::count(output), output.len(), output_len),
        ..Tokens::default()
    }
}

/// `tokens` counted on `prefix_len` bytes, scaled to `total_len` bytes (rounded up).
fn scale(tokens: u64, prefix_len: usize, total_len: usize) -> u64 {
    if prefix_len == 0 || total_len <= prefix_len {
        return tokens;
    }
    (u128::from(tokens) * total_len as u128).div_ceil(prefix_len as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_scale_a_bounded_prefix_to_the_whole_output() {
        assert_eq!(scale(100, 1000, 1000), 100);
        assert_eq!(scale(100, 1000, 500), 100);
        assert_eq!(scale(100, 1000, 3000), 300);
        assert_eq!(scale(1, 3, 4), 2);
        assert_eq!(scale(7, 0, 10), 7);
    }

    #[test]
    fn priced_split_never_underflows() {
        let t = Tokens {
            input: 10,
            output: 5,
            cached: 8,
            cache_write: 8,
            reasoning: 0,
        };
        let p = t.priced();
        assert_eq!((p.input, p.cached_input, p.cache_write), (0, 8, 2));
    }
}
