//! Outcomes the gateway observes by itself (implicit signals), and the hook that hands every
//! outcome to the learner.
//!
//! * **The implicit outcome** of a request (metric `implicit`, weight [`IMPLICIT_WEIGHT`]): for
//!   chat requests (`/v1/chat/completions`, `/v1/messages`, streamed or not) whose row has a
//!   served model, computed when the request finishes from what the [`crate::record::Recorder`]
//!   saw ([`Expect`]: what the request asked for; [`Observed`]: what the model answered) by
//!   [`judge`]. It travels on the ledger row ([`kairos_store::LedgerRow::signals`]) and the
//!   writer upserts it in the row's own transaction (also through the spool), so it is as durable
//!   as the row and never written on the request path.
//! * **Retries** (metric `implicit_retry`) and **escalations** (metric `implicit_escalation`),
//!   weight [`RETRY_WEIGHT`] / [`ESCALATION_WEIGHT`], score 0, on the *earlier* request: the same
//!   key sending the same messages again within [`RETRY_WINDOW`] after an answer, or the same key
//!   continuing a conversation (same system prompt and first user message) that `auto` routed,
//!   within [`ESCALATION_WINDOW`], pinned to another model. The recent requests are remembered
//!   in process ([`Recent`], bounded, with expiry): **per replica** — a retry that lands on
//!   another replica is not seen. These outcomes are upserted off the request path (a spawned
//!   task); a failure is logged, not retried.
//! * **The hook**: [`OutcomeSink`] (`Gateway::outcome_sink`) passes every outcome — explicit
//!   feedback, implicit, retry, escalation — to the subscribed [`OutcomeObserver`]s as soon as it
//!   is known (before it is durable), so a learner can update at once.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use kairos_api::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, ResponseFormat, Role,
    ToolKind,
};
use kairos_store::{LedgerRow, OutcomeRow, Signal, Store};
use sha2::{Digest, Sha256};

/// Weight of the per-request implicit outcome (explicit feedback weighs 1.0).
pub const IMPLICIT_WEIGHT: f64 = 0.25;
/// Weight of a retry outcome.
pub const RETRY_WEIGHT: f64 = 0.5;
/// Weight of an escalation outcome.
pub const ESCALATION_WEIGHT: f64 = 0.5;
/// The same prompt again within this time after an answer counts as a retry.
pub const RETRY_WINDOW: Duration = Duration::from_secs(120);
/// A pinned request within this time after an `auto` answer of the same conversation counts as
/// an escalation.
pub const ESCALATION_WINDOW: Duration = Duration::from_secs(600);
/// Requests remembered per replica for retries and for escalations (each).
pub const RECENT_CAPACITY: usize = 100_000;

pub const METRIC_IMPLICIT: &str = "implicit";
pub const METRIC_RETRY: &str = "implicit_retry";
pub const METRIC_ESCALATION: &str = "implicit_escalation";
pub const SOURCE_IMPLICIT: &str = "implicit";
pub const SOURCE_EXPLICIT: &str = "explicit";

/// Score of an answer cut off by the output limit.
pub const SCORE_LENGTH: f64 = 0.3;
/// Score of an answer stopped by a content filter.
pub const SCORE_CONTENT_FILTER: f64 = 0.2;
/// Score of a refusal.
pub const SCORE_REFUSAL: f64 = 0.1;
/// Score of a successful, unremarkable answer (a weak positive).
pub const SCORE_OK: f64 = 0.8;

/// Visible text kept for the refusal check when no JSON was asked for.
const TEXT_PREFIX: usize = 8 * 1024;
/// Text kept for the JSON check (longer answers are not checked).
const JSON_MAX: usize = 1 << 20;
/// Tool-call arguments kept per call (longer ones are not checked).
const TOOL_ARGS_MAX: usize = 256 * 1024;
/// Tool calls kept per answer.
const MAX_CALLS: usize = 64;

// ---------------------------------------------------------------------------------------------
// The hook

/// Receives outcomes as soon as the gateway knows them. Called on the request's task or the
/// feedback handler's: it must be quick and never block (queue the work elsewhere).
pub trait OutcomeObserver: Send + Sync {
    fn observe(&self, outcome: &OutcomeRow);
}

impl<F: Fn(&OutcomeRow) + Send + Sync> OutcomeObserver for F {
    fn observe(&self, outcome: &OutcomeRow) {
        self(outcome)
    }
}

/// Where outcomes go in process: every subscribed [`OutcomeObserver`] (none by default).
/// Cheap to clone; clones share the subscribers.
#[derive(Clone, Default)]
pub struct OutcomeSink {
    observers: Arc<RwLock<Vec<Arc<dyn OutcomeObserver>>>>,
}

impl std::fmt::Debug for OutcomeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeSink")
            .field("observers", &self.len())
            .finish()
    }
}

impl OutcomeSink {
    /// Adds an observer; it sees every outcome from now on.
    pub fn subscribe(&self, o: Arc<dyn OutcomeObserver>) {
        self.observers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(o);
    }

    /// Hands `outcome` to every observer.
    pub fn observe(&self, outcome: &OutcomeRow) {
        let observers = self
            .observers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for o in observers.iter() {
            o.observe(outcome);
        }
    }

    /// Number of observers.
    pub fn len(&self) -> usize {
        self.observers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---------------------------------------------------------------------------------------------
// What the request asked for

/// The output format a request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonExpect {
    /// `response_format: json_object`: any valid JSON.
    Object,
    /// `response_format: json_schema`: valid JSON with the schema's required top-level keys.
    Schema { required: Vec<String> },
}

/// A tool the request offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSpec {
    pub name: String,
    /// Required parameters (the top-level `required` of its JSON schema).
    pub required: Vec<String>,
    /// A custom tool: free-form input, not JSON.
    pub free_form: bool,
}

/// What the request asked of the answer, as far as the implicit signal checks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    pub json: Option<JsonExpect>,
    pub tools: Vec<ToolSpec>,
}

fn required_of(schema: Option<&serde_json::Value>) -> Vec<String> {
    schema
        .and_then(|s| s.get("required"))
        .and_then(|r| r.as_array())
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Expect {
    pub fn of(req: &ChatCompletionRequest) -> Expect {
        let json = match &req.response_format {
            Some(ResponseFormat::JsonObject) => Some(JsonExpect::Object),
            Some(ResponseFormat::JsonSchema { json_schema }) => Some(JsonExpect::Schema {
                required: required_of(json_schema.schema.as_ref()),
            }),
            Some(ResponseFormat::Text) | None => None,
        };
        let tools = req
            .tools
            .iter()
            .flatten()
            .filter_map(|t| match t.kind {
                ToolKind::Function => t.function.as_ref().map(|f| ToolSpec {
                    name: f.name.clone(),
                    required: required_of(f.parameters.as_ref()),
                    free_form: false,
                }),
                ToolKind::Custom => t
                    .custom
                    .as_ref()
                    .and_then(|c| c.get("name"))
                    .and_then(|n| n.as_str())
                    .map(|n| ToolSpec {
                        name: n.to_owned(),
                        required: Vec::new(),
                        free_form: true,
                    }),
            })
            .collect();
        Expect { json, tools }
    }
}

// ---------------------------------------------------------------------------------------------
// What the model answered

/// One tool call of the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedCall {
    pub index: u32,
    pub name: String,
    pub arguments: String,
    /// The arguments were longer than what is kept: not checked.
    pub truncated: bool,
}

/// What the model answered (first choice only), bounded. Fed by the recorder from complete
/// answers, stream chunks or native Anthropic events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub finish_reason: Option<String>,
    /// The visible text (a prefix: [`JSON_MAX`] bytes when JSON was asked for, else
    /// [`TEXT_PREFIX`]).
    pub text: String,
    /// Bytes of visible text seen, also beyond what was kept.
    pub text_len: usize,
    /// The answer carried an explicit refusal (OpenAI `refusal`).
    pub refusal: bool,
    pub calls: Vec<ObservedCall>,
    /// Keep up to [`JSON_MAX`] bytes of text (JSON was asked for).
    pub keep_json: bool,
}

impl Observed {
    pub fn add_text(&mut self, s: &str) {
        self.text_len += s.len();
        let cap = if self.keep_json {
            JSON_MAX
        } else {
            TEXT_PREFIX
        };
        if self.text.len() < cap {
            let mut end = s.len().min(cap - self.text.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.text.push_str(&s[..end]);
        }
    }

    pub fn add_refusal(&mut self, s: &str) {
        if !s.is_empty() {
            self.refusal = true;
        }
    }

    pub fn set_finish(&mut self, reason: &str) {
        self.finish_reason = Some(reason.to_owned());
    }

    fn call(&mut self, index: u32) -> Option<&mut ObservedCall> {
        if let Some(i) = self.calls.iter().position(|c| c.index == index) {
            return self.calls.get_mut(i);
        }
        if self.calls.len() >= MAX_CALLS {
            return None;
        }
        self.calls.push(ObservedCall {
            index,
            ..ObservedCall::default()
        });
        self.calls.last_mut()
    }

    /// A tool call starts (or its name arrives).
    pub fn tool_name(&mut self, index: u32, name: &str) {
        if let Some(c) = self.call(index) {
            c.name.push_str(name);
        }
    }

    /// A piece of a tool call's arguments.
    pub fn tool_args(&mut self, index: u32, args: &str) {
        if let Some(c) = self.call(index) {
            if c.arguments.len() + args.len() > TOOL_ARGS_MAX {
                c.truncated = true;
            } else {
                c.arguments.push_str(args);
            }
        }
    }

    /// A complete (non-streamed) answer.
    pub fn on_completion(&mut self, c: &ChatCompletion) {
        let Some(choice) = c
            .choices
            .iter()
            .find(|ch| ch.index == 0)
            .or(c.choices.first())
        else {
            return;
        };
        let m = &choice.message;
        if let Some(t) = &m.content {
            self.add_text(t);
        }
        if let Some(r) = &m.refusal {
            self.add_refusal(r);
        }
        for (i, call) in m.tool_calls.iter().flatten().enumerate() {
            let i = i as u32;
            self.tool_name(i, &call.function.name);
            self.tool_args(i, &call.function.arguments);
        }
        if let Some(f) = &choice.finish_reason {
            self.set_finish(f.as_str());
        }
    }

    /// One stream chunk.
    pub fn on_chunk(&mut self, c: &ChatCompletionChunk) {
        for ch in c.choices.iter().filter(|ch| ch.index == 0) {
            let d = &ch.delta;
            if let Some(t) = &d.content {
                self.add_text(t);
            }
            if let Some(r) = &d.refusal {
                self.add_refusal(r);
            }
            for call in d.tool_calls.iter().flatten() {
                if let Some(f) = &call.function {
                    if let Some(n) = &f.name {
                        self.tool_name(call.index, n);
                    }
                    if let Some(a) = &f.arguments {
                        self.tool_args(call.index, a);
                    }
                }
            }
            if let Some(f) = &ch.finish_reason {
                self.set_finish(f.as_str());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The verdict

/// How the request ended, as far as the implicit signal is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The answer arrived whole.
    Ok,
    /// The model failed after the stream started (`upstream_cut`, `upstream_stalled`).
    ModelFailed(&'static str),
    /// Anything else (client disconnects, caller errors, upstream errors before an answer):
    /// no implicit outcome.
    Other,
}

impl Ending {
    /// From a ledger row's `outcome`.
    pub fn of_outcome(outcome: &str) -> Ending {
        match outcome {
            "ok" => Ending::Ok,
            "upstream_cut" => Ending::ModelFailed("upstream_cut"),
            "upstream_stalled" => Ending::ModelFailed("upstream_stalled"),
            _ => Ending::Other,
        }
    }
}

/// The implicit outcome of one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The lowest score of the rules that fired, or [`SCORE_OK`].
    pub score: f64,
    /// The rules that fired (`ok` when none did).
    pub reasons: Vec<&'static str>,
}

/// Phrases that open (or make up most of) a refusal. Compared lowercase, with `’` as `'`.
pub const REFUSAL_PHRASES: &[&str] = &[
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "i am sorry, but i cannot",
    "i am sorry, but i can't",
    "sorry, but i can't",
    "sorry, i can't help with",
    "sorry, i cannot help with",
    "i cannot help with",
    "i can't help with",
    "i can't assist with",
    "i cannot assist with",
    "i'm unable to help with",
    "i am unable to help with",
    "i'm not able to help with",
    "i won't be able to help with",
    "i can't comply with",
    "i cannot comply with",
    "i must decline",
    "as an ai",
];

/// A refusal: the text starts with a refusal phrase (within its first 100 characters), or is
/// short (at most 300 bytes) and contains one.
pub fn is_refusal(text: &str) -> bool {
    let t = text.trim();
    let short = t.len() <= 300;
    let head: String = t
        .chars()
        .take(300)
        .map(|c| if c == '\u{2019}' { '\'' } else { c })
        .flat_map(char::to_lowercase)
        .collect();
    REFUSAL_PHRASES.iter().any(|p| {
        head.find(p)
            .is_some_and(|at| short || head[..at].chars().count() < 100)
    })
}

fn json_reasons(expect: &JsonExpect, text: &str, out: &mut Vec<(&'static str, f64)>) {
    match serde_json::from_str::<serde_json::Value>(text) {
        Err(_) => out.push(("invalid_json", 0.0)),
        Ok(v) => {
            if let JsonExpect::Schema { required } = expect
                && !required.is_empty()
            {
                let ok = v
                    .as_object()
                    .is_some_and(|o| required.iter().all(|k| o.contains_key(k)));
                if !ok {
                    out.push(("json_missing_keys", 0.0));
                }
            }
        }
    }
}

fn tool_reasons(expect: &Expect, calls: &[ObservedCall], out: &mut Vec<(&'static str, f64)>) {
    for c in calls {
        let Some(spec) = expect.tools.iter().find(|t| t.name == c.name) else {
            out.push(("unknown_tool", 0.0));
            continue;
        };
        if spec.free_form || c.truncated {
            continue;
        }
        let args = if c.arguments.trim().is_empty() {
            "{}"
        } else {
            c.arguments.as_str()
        };
        match serde_json::from_str::<serde_json::Value>(args) {
            Ok(serde_json::Value::Object(o)) => {
                if spec.required.iter().any(|k| !o.contains_key(k)) {
                    out.push(("tool_missing_param", 0.0));
                }
            }
            Ok(_) | Err(_) => out.push(("tool_args_invalid_json", 0.0)),
        }
    }
}

/// The implicit outcome of an answer; `None` when the request ended in a way that says nothing
/// about the model ([`Ending::Other`]).
pub fn judge(expect: &Expect, obs: &Observed, ending: Ending) -> Option<Verdict> {
    match ending {
        Ending::Other => return None,
        Ending::ModelFailed(why) => {
            return Some(Verdict {
                score: 0.0,
                reasons: vec![why],
            });
        }
        Ending::Ok => {}
    }
    let mut fired: Vec<(&'static str, f64)> = Vec::new();
    match obs.finish_reason.as_deref() {
        Some("length") => fired.push(("length", SCORE_LENGTH)),
        Some("content_filter") => fired.push(("content_filter", SCORE_CONTENT_FILTER)),
        _ => {}
    }
    let has_text = !obs.text.trim().is_empty() || obs.text_len > obs.text.len();
    if !has_text && obs.calls.is_empty() && !obs.refusal {
        fired.push(("empty", 0.0));
    }
    if obs.refusal || (has_text && is_refusal(&obs.text)) {
        fired.push(("refusal", SCORE_REFUSAL));
    }
    if let Some(j) = &expect.json
        && obs.calls.is_empty()
        && has_text
        && obs.text_len == obs.text.len()
    {
        json_reasons(j, &obs.text, &mut fired);
    }
    tool_reasons(expect, &obs.calls, &mut fired);
    if fired.is_empty() {
        return Some(Verdict {
            score: SCORE_OK,
            reasons: vec!["ok"],
        });
    }
    let score = fired.iter().map(|(_, s)| *s).fold(f64::INFINITY, f64::min);
    Some(Verdict {
        score,
        reasons: fired.into_iter().map(|(r, _)| r).collect(),
    })
}

/// The implicit [`Signal`] of a finished request's row, if it gets one: chat routes
/// (`chat`, `messages`) with a served model whose ending says something about the model.
pub fn implicit_signal(
    row: &LedgerRow,
    expect: &Expect,
    obs: &Observed,
    at_ms: i64,
) -> Option<Signal> {
    if !matches!(row.route.as_str(), "chat" | "messages") {
        return None;
    }
    let model = row.served_model.as_ref()?;
    let v = judge(expect, obs, Ending::of_outcome(&row.outcome))?;
    Some(Signal {
        metric: METRIC_IMPLICIT.to_owned(),
        model: model.clone(),
        score: v.score,
        weight: IMPLICIT_WEIGHT,
        source: SOURCE_IMPLICIT.to_owned(),
        detail: Some(v.reasons.join(",")),
        at_ms,
    })
}

// ---------------------------------------------------------------------------------------------
// Retries and escalations

/// 128 bits of a SHA-256.
pub type Digest128 = [u8; 16];

fn feed_message(h: &mut Sha256, m: &ChatMessage) {
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(m.role.as_str().as_bytes());
    field(
        m.content
            .as_ref()
            .map(|c| c.text())
            .unwrap_or_default()
            .as_bytes(),
    );
    field(m.name.as_deref().unwrap_or_default().as_bytes());
    field(m.tool_call_id.as_deref().unwrap_or_default().as_bytes());
    for c in m.tool_calls.iter().flatten() {
        field(c.function.name.as_bytes());
        field(c.function.arguments.as_bytes());
    }
}

fn finish(h: Sha256) -> Digest128 {
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The prompt: every message's role, text, name and tool calls (the same messages give the
/// same digest on `/v1/chat/completions` and `/v1/messages`).
pub fn prompt_digest(messages: &[ChatMessage]) -> Digest128 {
    let mut h = Sha256::new();
    h.update(b"prompt\0");
    for m in messages {
        feed_message(&mut h, m);
    }
    finish(h)
}

/// The conversation: its system (and developer) messages and its first user message.
pub fn conversation_digest(messages: &[ChatMessage]) -> Option<Digest128> {
    let first_user = messages.iter().find(|m| m.role == Role::User)?;
    let mut h = Sha256::new();
    h.update(b"conversation\0");
    for m in messages
        .iter()
        .filter(|m| matches!(m.role, Role::System | Role::Developer))
    {
        feed_message(&mut h, m);
    }
    feed_message(&mut h, first_user);
    Some(finish(h))
}

/// A map whose entries expire `ttl_ms` after they were written, holding at most `cap` of them
/// (the oldest go first).
#[derive(Debug)]
struct TtlMap<K, V> {
    map: HashMap<K, (V, i64)>,
    /// Keys in write order with their write time (stale duplicates are skipped).
    order: VecDeque<(K, i64)>,
    ttl_ms: i64,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> TtlMap<K, V> {
    fn new(ttl_ms: i64, cap: usize) -> Self {
        TtlMap {
            map: HashMap::new(),
            order: VecDeque::new(),
            ttl_ms,
            cap: cap.max(1),
        }
    }

    fn get(&self, k: &K, now_ms: i64) -> Option<&V> {
        self.map
            .get(k)
            .filter(|(_, at)| now_ms - at <= self.ttl_ms)
            .map(|(v, _)| v)
    }

    fn insert(&mut self, k: K, v: V, now_ms: i64) {
        self.map.insert(k.clone(), (v, now_ms));
        self.order.push_back((k, now_ms));
        self.evict(now_ms);
    }

    fn evict(&mut self, now_ms: i64) {
        if self.order.len() > 2 * self.cap {
            // Rewrites left stale keys behind: rebuild the order from the live entries.
            let mut live: Vec<(K, i64)> = self
                .map
                .iter()
                .map(|(k, (_, at))| (k.clone(), *at))
                .collect();
            live.sort_by_key(|(_, at)| *at);
            self.order = live.into();
        }
        while let Some((k, at)) = self.order.front() {
            let current = self.map.get(k).is_some_and(|(_, t)| t == at);
            if current {
                if now_ms - at <= self.ttl_ms && self.map.len() <= self.cap {
                    break;
                }
                self.map.remove(k);
            }
            self.order.pop_front();
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// A finished request, as remembered for later retries and escalations.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recalled {
    pub request_id: String,
    pub key_id: String,
    pub workspace: Option<String>,
    pub task: Option<String>,
    pub embedding: Option<String>,
    pub model: String,
    pub ts_ms: i64,
    pub end_ms: i64,
}

impl Recalled {
    fn outcome(&self, metric: &str, weight: f64, detail: String, now_ms: i64) -> OutcomeRow {
        OutcomeRow {
            request_id: self.request_id.clone(),
            metric: metric.to_owned(),
            model: self.model.clone(),
            workspace: self.workspace.clone(),
            key_id: self.key_id.clone(),
            task: self.task.clone(),
            embedding: self.embedding.clone(),
            score: 0.0,
            weight,
            source: SOURCE_IMPLICIT.to_owned(),
            detail: Some(detail),
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }
}

/// A finished chat request, for [`Recent::process`].
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub request: Recalled,
    /// The row's `outcome` (`ok`, `error`, ...).
    pub outcome: String,
    /// Routed by `auto` (the row has a receipt).
    pub routed: bool,
    pub prompt: Digest128,
    pub conversation: Option<Digest128>,
}

type RecentKey = (String, Digest128);

/// The recent requests of this replica, for retries and escalations. Bounded
/// ([`RECENT_CAPACITY`] each) and expiring ([`RETRY_WINDOW`], [`ESCALATION_WINDOW`]).
#[derive(Debug)]
pub struct Recent {
    inner: Mutex<RecentInner>,
}

#[derive(Debug)]
struct RecentInner {
    /// Answered requests by (key, prompt).
    by_prompt: TtlMap<RecentKey, Recalled>,
    /// Answered `auto` requests by (key, conversation).
    by_conversation: TtlMap<RecentKey, Recalled>,
}

impl Default for Recent {
    fn default() -> Self {
        Recent::new(RECENT_CAPACITY)
    }
}

impl Recent {
    pub fn new(cap: usize) -> Recent {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Recent {
            inner: Mutex::new(RecentInner {
                by_prompt: TtlMap::new(ms(RETRY_WINDOW), cap),
                by_conversation: TtlMap::new(ms(ESCALATION_WINDOW), cap),
            }),
        }
    }

    /// Remembered entries (prompts, conversations).
    pub fn len(&self) -> (usize, usize) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (g.by_prompt.len(), g.by_conversation.len())
    }

    /// Notes a finished request; returns the outcomes it implies for earlier requests: a retry
    /// (same key and prompt, started at most [`RETRY_WINDOW`] after an earlier answer ended)
    /// and an escalation (a request that was not routed, served by another model than the
    /// earlier `auto` answer of the same key and conversation, started at most
    /// [`ESCALATION_WINDOW`] after it ended). Only answered requests (`ok`) are remembered.
    pub fn process(&self, f: &Finished, now_ms: i64) -> Vec<OutcomeRow> {
        let r = &f.request;
        let mut out = Vec::new();
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let pk = (r.key_id.clone(), f.prompt);
        if let Some(prev) = g.by_prompt.get(&pk, r.ts_ms) {
            out.extend(retry_of(prev, f, now_ms));
        }
        let ck = f.conversation.map(|c| (r.key_id.clone(), c));
        if !f.routed
            && let Some(ck) = &ck
            && let Some(prev) = g.by_conversation.get(ck, r.ts_ms)
        {
            out.extend(escalation_of(prev, f, now_ms));
        }
        if f.outcome == "ok" {
            g.by_prompt.insert(pk, r.clone(), r.end_ms);
            if f.routed
                && let Some(ck) = ck
            {
                g.by_conversation.insert(ck, r.clone(), r.end_ms);
            }
        }
        out
    }
}

/// `f` came within `window` after `prev` ended.
fn follows(prev: &Recalled, f: &Finished, window: Duration) -> bool {
    let r = &f.request;
    prev.request_id != r.request_id
        && r.ts_ms >= prev.end_ms
        && (r.ts_ms - prev.end_ms) as u128 <= window.as_millis()
}

/// `prev` (the same prompt from the same key) was retried by `f`.
fn retry_of(prev: &Recalled, f: &Finished, now_ms: i64) -> Option<OutcomeRow> {
    follows(prev, f, RETRY_WINDOW).then(|| {
        prev.outcome(
            METRIC_RETRY,
            RETRY_WEIGHT,
            format!("retried by {}", f.request.request_id),
            now_ms,
        )
    })
}

/// `prev` (an `auto` answer in the same conversation) was escalated by `f` (pinned).
fn escalation_of(prev: &Recalled, f: &Finished, now_ms: i64) -> Option<OutcomeRow> {
    (follows(prev, f, ESCALATION_WINDOW) && prev.model != f.request.model).then(|| {
        prev.outcome(
            METRIC_ESCALATION,
            ESCALATION_WEIGHT,
            format!(
                "escalated to {} by {}",
                f.request.model, f.request.request_id
            ),
            now_ms,
        )
    })
}

/// [`Recent::process`] on the memory the replicas share in Redis, for requests made with a
/// virtual key (the master key's id is the same in every deployment, so its requests stay in
/// the replica's own memory). `None` when Redis did not answer the first call: the caller then
/// uses its own memory.
async fn process_shared(
    limits: &kairos_limits::Limits,
    f: &Finished,
    now_ms: i64,
) -> Option<Vec<OutcomeRow>> {
    let r = &f.request;
    let hex = |d: &Digest128| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let me = serde_json::to_vec(r).ok()?;
    let ok = f.outcome == "ok";
    let mut out = Vec::new();
    let pk = format!("recent:p:{}:{}", r.key_id, hex(&f.prompt));
    let prev = limits
        .shared_swap(&pk, ok.then_some(me.as_slice()), RETRY_WINDOW)
        .await?;
    if let Some(prev) = prev.and_then(|b| serde_json::from_slice::<Recalled>(&b).ok()) {
        out.extend(retry_of(&prev, f, now_ms));
    }
    if let Some(c) = &f.conversation {
        let ck = format!("recent:c:{}:{}", r.key_id, hex(c));
        if !f.routed {
            let prev = limits.shared_swap(&ck, None, ESCALATION_WINDOW).await;
            if let Some(prev) = prev
                .flatten()
                .and_then(|b| serde_json::from_slice::<Recalled>(&b).ok())
            {
                out.extend(escalation_of(&prev, f, now_ms));
            }
        } else if ok {
            let _ = limits.shared_swap(&ck, Some(&me), ESCALATION_WINDOW).await;
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// The gateway's signal state

/// What the gateway keeps for outcomes: the hook, the recent requests, and the store the
/// retry and escalation outcomes are written to.
#[derive(Debug, Default)]
pub struct Signals {
    sink: OutcomeSink,
    recent: Recent,
    store: OnceLock<Store>,
    /// Redis, when the replicas share one: their recent requests are remembered there.
    shared: OnceLock<kairos_limits::Limits>,
    /// Rows whose last steps run in a spawned task (see [`Signals::defer`]).
    deferred: std::sync::atomic::AtomicUsize,
}

impl Signals {
    pub fn new() -> Signals {
        Signals::default()
    }

    pub fn sink(&self) -> &OutcomeSink {
        &self.sink
    }

    pub fn recent(&self) -> &Recent {
        &self.recent
    }

    /// The store retry and escalation outcomes are written to (set once at startup; without
    /// one they only reach the sink).
    pub fn set_store(&self, store: Store) {
        let _ = self.store.set(store);
    }

    /// Remember recent requests of virtual keys in `limits`' Redis (shared by the replicas, so
    /// a retry or an escalation sent to another replica is seen), when it has one.
    pub fn set_shared(&self, limits: &kairos_limits::Limits) {
        if limits.backend() == kairos_limits::Backend::Redis {
            let _ = self.shared.set(limits.clone());
        }
    }

    /// Retries and escalations `f` reveals, from the shared memory when there is one (and the
    /// request was made with a virtual key), else from this replica's.
    async fn recall(&self, f: &Finished, now_ms: i64) -> Vec<OutcomeRow> {
        if let Some(limits) = self.shared.get()
            && f.request.workspace.is_some()
            && let Some(out) = process_shared(limits, f, now_ms).await
        {
            return out;
        }
        self.recent.process(f, now_ms)
    }

    /// The row's own outcomes (the implicit one), to the sink.
    pub(crate) fn observe_row(&self, row: &LedgerRow) {
        for s in &row.signals {
            self.sink.observe(&OutcomeRow::from_signal(row, s));
        }
    }

    /// The work that finds the retries and escalations this row reveals (hashing the prompt,
    /// the recent-request memory, upserts), to run off the request path. `None` when there is
    /// nothing to look for.
    pub(crate) fn recall_job(
        self: &Arc<Self>,
        row: &LedgerRow,
        prompt: Option<Arc<ChatCompletionRequest>>,
        end_ms: i64,
    ) -> Option<impl std::future::Future<Output = ()> + Send + use<>> {
        let (Some(prompt), Some(model)) = (prompt, row.served_model.clone()) else {
            return None;
        };
        if !matches!(row.route.as_str(), "chat" | "messages") {
            return None;
        }
        let request = Recalled {
            request_id: row.id.clone(),
            key_id: row.key_id.clone(),
            workspace: row.workspace.clone(),
            task: row.task.clone(),
            embedding: row.embedding.clone(),
            model,
            ts_ms: row.ts_ms,
            end_ms,
        };
        let outcome = row.outcome.clone();
        let routed = row.receipt.is_some();
        let me = Arc::clone(self);
        Some(async move {
            let f = Finished {
                request,
                outcome,
                routed,
                prompt: prompt_digest(&prompt.messages),
                conversation: conversation_digest(&prompt.messages),
            };
            for o in me.recall(&f, end_ms).await {
                me.sink.observe(&o);
                if let Some(store) = me.store.get()
                    && let Err(error) = store.upsert_outcome(&o).await
                {
                    tracing::warn!(
                        %error,
                        request_id = %o.request_id,
                        metric = %o.metric,
                        "could not write an implicit outcome"
                    );
                }
            }
        })
    }

    /// Counts a row whose last steps run in a spawned task, until the guard is dropped
    /// ([`Signals::drain_deferred`] waits for them).
    pub(crate) fn defer(self: &Arc<Self>) -> DeferredGuard {
        self.deferred
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        DeferredGuard(Arc::clone(self))
    }

    /// Waits (at most `limit`) until no row is left in a spawned task: shutdown calls it
    /// before draining the ledger writer.
    pub async fn drain_deferred(&self, limit: Duration) {
        let until = tokio::time::Instant::now() + limit;
        while self.deferred.load(std::sync::atomic::Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// See [`Signals::defer`].
pub(crate) struct DeferredGuard(Arc<Signals>);

impl Drop for DeferredGuard {
    fn drop(&mut self) {
        self.0
            .deferred
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn drain_deferred_waits_for_rows_in_spawned_tasks() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let s = Arc::new(Signals::new());
        let guard = s.defer();
        let done = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&done);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            d.store(true, Ordering::SeqCst);
            drop(guard);
        });
        s.drain_deferred(Duration::from_secs(5)).await;
        assert!(done.load(Ordering::SeqCst));
    }
    use serde_json::json;

    fn req(v: serde_json::Value) -> ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    fn expect(v: serde_json::Value) -> Expect {
        let mut base = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        for (k, val) in v.as_object().unwrap() {
            base[k] = val.clone();
        }
        Expect::of(&req(base))
    }

    fn answer(text: &str, finish: &str) -> Observed {
        let mut o = Observed::default();
        o.add_text(text);
        o.set_finish(finish);
        o
    }

    fn call(name: &str, args: &str) -> Observed {
        let mut o = Observed::default();
        o.tool_name(0, name);
        o.tool_args(0, args);
        o.set_finish("tool_calls");
        o
    }

    fn tools() -> serde_json::Value {
        json!({"tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "now"}},
            {"type": "custom", "custom": {"name": "shell"}}
        ]})
    }

    #[test]
    fn every_rule_scores_as_specified() {
        let plain = Expect::default();
        let json_obj = expect(json!({"response_format": {"type": "json_object"}}));
        let json_schema = expect(
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "required": ["name", "age"]}}}}),
        );
        let with_tools = expect(tools());
        let mut refusal_field = answer("", "stop");
        refusal_field.add_refusal("I can't do that.");
        let mut empty_json = Observed {
            keep_json: true,
            ..Observed::default()
        };
        empty_json.set_finish("stop");
        /// (what, request, answer, ending, expected (score, reasons)).
        type Case<'a> = (
            &'a str,
            &'a Expect,
            Observed,
            Ending,
            Option<(f64, &'a str)>,
        );
        #[rustfmt::skip]
        let cases: Vec<Case<'_>> = vec![
            ("plain answer", &plain, answer("Paris is the capital of France.", "stop"), Ending::Ok, Some((SCORE_OK, "ok"))),
            ("no finish reason", &plain, answer("Hello", ""), Ending::Ok, Some((SCORE_OK, "ok"))),
            ("cut off", &plain, answer("Once upon a", "length"), Ending::Ok, Some((SCORE_LENGTH, "length"))),
            ("content filter", &plain, answer("", "content_filter"), Ending::Ok, Some((0.0, "content_filter,empty"))),
            ("content filter with text", &plain, answer("partial", "content_filter"), Ending::Ok, Some((SCORE_CONTENT_FILTER, "content_filter"))),
            ("empty", &plain, answer("", "stop"), Ending::Ok, Some((0.0, "empty"))),
            ("whitespace only", &plain, answer("  \n ", "stop"), Ending::Ok, Some((0.0, "empty"))),
            ("refusal phrase", &plain, answer("I'm sorry, but I can't help with that request.", "stop"), Ending::Ok, Some((SCORE_REFUSAL, "refusal"))),
            ("refusal field", &plain, refusal_field, Ending::Ok, Some((SCORE_REFUSAL, "refusal"))),
            ("json ok", &json_obj, answer("{\"a\": 1}", "stop"), Ending::Ok, Some((SCORE_OK, "ok"))),
            ("json array ok", &json_obj, answer(" [1, 2] ", "stop"), Ending::Ok, Some((SCORE_OK, "ok"))),
            ("json invalid", &json_obj, answer("Sure! {\"a\": 1}", "stop"), Ending::Ok, Some((0.0, "invalid_json"))),
            ("json fenced", &json_obj, answer("```json\n{\"a\": 1}\n```", "stop"), Ending::Ok, Some((0.0, "invalid_json"))),
            ("json cut", &json_obj, answer("{\"a\": ", "length"), Ending::Ok, Some((0.0, "length,invalid_json"))),
            ("json empty", &json_obj, empty_json, Ending::Ok, Some((0.0, "empty"))),
            ("schema ok", &json_schema, answer("{\"name\": \"a\", \"age\": 3, \"x\": 1}", "stop"), Ending::Ok, Some((SCORE_OK, "ok"))),
            ("schema missing key", &json_schema, answer("{\"name\": \"a\"}", "stop"), Ending::Ok, Some((0.0, "json_missing_keys"))),
            ("schema not an object", &json_schema, answer("[\"name\", \"age\"]", "stop"), Ending::Ok, Some((0.0, "json_missing_keys"))),
            ("tool call ok", &with_tools, call("get_weather", "{\"city\": \"Paris\"}"), Ending::Ok, Some((SCORE_OK, "ok"))),
            ("tool call, no parameters", &with_tools, call("now", ""), Ending::Ok, Some((SCORE_OK, "ok"))),
            ("custom tool, free text", &with_tools, call("shell", "ls -la"), Ending::Ok, Some((SCORE_OK, "ok"))),
            ("tool args not JSON", &with_tools, call("get_weather", "{city: Paris"), Ending::Ok, Some((0.0, "tool_args_invalid_json"))),
            ("tool args not an object", &with_tools, call("get_weather", "[1]"), Ending::Ok, Some((0.0, "tool_args_invalid_json"))),
            ("tool not offered", &with_tools, call("delete_everything", "{}"), Ending::Ok, Some((0.0, "unknown_tool"))),
            ("tool without any offered", &plain, call("get_weather", "{\"city\": \"x\"}"), Ending::Ok, Some((0.0, "unknown_tool"))),
            ("tool missing required", &with_tools, call("get_weather", "{\"unit\": \"C\"}"), Ending::Ok, Some((0.0, "tool_missing_param"))),
            ("tool call skips json check", &json_obj, { let mut o = call("get_weather", "{}"); o.keep_json = true; o }, Ending::Ok, Some((0.0, "unknown_tool"))),
            ("stream cut", &plain, answer("Once", ""), Ending::ModelFailed("upstream_cut"), Some((0.0, "upstream_cut"))),
            ("stream stalled", &plain, answer("", ""), Ending::ModelFailed("upstream_stalled"), Some((0.0, "upstream_stalled"))),
            ("client gone", &plain, answer("Once", ""), Ending::Other, None),
        ];
        for (what, e, o, ending, want) in cases {
            let got = judge(e, &o, ending);
            match (got, want) {
                (None, None) => {}
                (Some(v), Some((score, reasons))) => {
                    assert!((v.score - score).abs() < 1e-9, "{what}: {v:?}");
                    assert_eq!(v.reasons.join(","), reasons, "{what}");
                }
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn refusal_phrases() {
        for (text, refusal) in [
            ("I'm sorry, but I can't help with that.", true),
            ("I’m sorry, but I can’t assist with this request.", true),
            ("I cannot help with creating malware.", true),
            ("As an AI, I don't have personal opinions.", true),
            ("  i can't assist with that", true),
            (
                "Sorry, I can't help with that. Is there something else?",
                true,
            ),
            ("I must decline to answer.", true),
            // Mostly a refusal: short, phrase not first.
            ("Unfortunately, I cannot help with that.", true),
            (
                "Here is the summary you asked for: the council approved the budget.",
                false,
            ),
            (
                "You can't help with everything, but here is a plan: 1. ...",
                false,
            ),
            ("", false),
        ] {
            assert_eq!(is_refusal(text), refusal, "{text}");
        }
        // A long answer that mentions a phrase deep inside is not a refusal.
        let long = format!(
            "{} Some people say \"I cannot help with that\" too often.",
            "This is a detailed, helpful explanation. ".repeat(20)
        );
        assert!(!is_refusal(&long));
        // A long answer that opens with a refusal is one.
        let opens = format!("I'm sorry, but I can't do that. {}", "Filler. ".repeat(100));
        assert!(is_refusal(&opens));
    }

    #[test]
    fn expectations_come_from_the_request() {
        let e = expect(tools());
        assert_eq!(e.json, None);
        assert_eq!(e.tools.len(), 3);
        assert_eq!(e.tools[0].required, vec!["city".to_owned()]);
        assert!(e.tools[1].required.is_empty());
        assert!(e.tools[2].free_form);
        let e = expect(
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
        );
        assert_eq!(e.json, Some(JsonExpect::Schema { required: vec![] }));
        let e = expect(json!({"response_format": {"type": "text"}}));
        assert_eq!(e.json, None);
    }

    #[test]
    fn observations_from_completions_and_chunks_agree() {
        let completion: ChatCompletion = serde_json::from_value(json!({
            "id": "c", "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "t", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}]
        }))
        .unwrap();
        let mut a = Observed::default();
        a.on_completion(&completion);
        let chunks = [
            json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [{"index": 0, "id": "t", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]}),
            json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\""}}]}}]}),
            json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":\"Paris\"}"}}]}}]}),
            json!({"id": "c", "model": "m", "choices": [{"index": 1, "delta": {"content": "other choice"}}]}),
            json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        ];
        let mut b = Observed::default();
        for c in chunks {
            b.on_chunk(&serde_json::from_value(c).unwrap());
        }
        assert_eq!(a, b);
        assert_eq!(b.calls[0].arguments, "{\"city\":\"Paris\"}");
        assert_eq!(b.text, "");
    }

    #[test]
    fn observed_text_is_bounded() {
        let mut o = Observed::default();
        o.add_text(&"é".repeat(TEXT_PREFIX));
        assert!(o.text.len() <= TEXT_PREFIX);
        assert_eq!(o.text_len, 2 * TEXT_PREFIX);
        // A long answer that was not kept whole is not empty, and not JSON-checked.
        let e = Expect {
            json: Some(JsonExpect::Object),
            tools: vec![],
        };
        o.set_finish("stop");
        assert_eq!(judge(&e, &o, Ending::Ok).unwrap().reasons, vec!["ok"]);
        let mut calls = Observed::default();
        for i in 0..(MAX_CALLS as u32 + 10) {
            calls.tool_name(i, "f");
        }
        assert_eq!(calls.calls.len(), MAX_CALLS);
        calls.tool_args(0, &"x".repeat(TOOL_ARGS_MAX + 1));
        assert!(calls.calls[0].truncated);
    }

    fn msgs(v: serde_json::Value) -> Vec<ChatMessage> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn digests() {
        let a = msgs(
            json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]),
        );
        let b = msgs(
            json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
        );
        let c = msgs(
            json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}]),
        );
        let d = msgs(
            json!([{"role": "system", "content": "be long"}, {"role": "user", "content": "hi"}]),
        );
        assert_eq!(
            prompt_digest(&a),
            prompt_digest(&b),
            "same text, other shape"
        );
        assert_ne!(prompt_digest(&a), prompt_digest(&c));
        assert_eq!(
            conversation_digest(&a),
            conversation_digest(&c),
            "same conversation"
        );
        assert_ne!(conversation_digest(&a), conversation_digest(&d));
        assert_eq!(
            conversation_digest(&msgs(json!([{"role": "system", "content": "x"}]))),
            None
        );
        // Field boundaries matter.
        let e = msgs(json!([{"role": "user", "content": "ab", "name": "c"}]));
        let f = msgs(json!([{"role": "user", "content": "a", "name": "bc"}]));
        assert_ne!(prompt_digest(&e), prompt_digest(&f));
    }

    fn finished(id: &str, ts: i64, model: &str, routed: bool, p: u8, conv: u8) -> Finished {
        Finished {
            request: Recalled {
                request_id: id.into(),
                key_id: "k".into(),
                workspace: Some("w".into()),
                task: routed.then(|| "coding".into()),
                embedding: Some("e".into()),
                model: model.into(),
                ts_ms: ts,
                end_ms: ts + 1_000,
            },
            outcome: "ok".into(),
            routed,
            prompt: [p; 16],
            conversation: Some([conv; 16]),
        }
    }

    #[test]
    fn retries_and_escalations_land_on_the_earlier_request() {
        struct Case {
            what: &'static str,
            first: Finished,
            second: Finished,
            want: Vec<(&'static str, &'static str)>,
        }
        let other_key = {
            let mut f = finished("b", 10_000, "m1", false, 1, 1);
            f.request.key_id = "other".into();
            f
        };
        let failed_first = {
            let mut f = finished("a", 0, "m1", false, 1, 1);
            f.outcome = "error".into();
            f
        };
        #[rustfmt::skip]
        let cases = vec![
            Case { what: "retry", first: finished("a", 0, "m1", false, 1, 1), second: finished("b", 10_000, "m1", false, 1, 1), want: vec![("a", METRIC_RETRY)] },
            Case { what: "retry at the window's end", first: finished("a", 0, "m1", false, 1, 1), second: finished("b", 121_000, "m1", false, 1, 1), want: vec![("a", METRIC_RETRY)] },
            Case { what: "too late for a retry", first: finished("a", 0, "m1", false, 1, 1), second: finished("b", 121_001, "m1", false, 1, 1), want: vec![] },
            Case { what: "concurrent, not a retry", first: finished("a", 0, "m1", false, 1, 1), second: finished("b", 500, "m1", false, 1, 1), want: vec![] },
            Case { what: "other prompt", first: finished("a", 0, "m1", false, 1, 1), second: finished("b", 10_000, "m1", false, 2, 1), want: vec![] },
            Case { what: "other key", first: finished("a", 0, "m1", false, 1, 1), second: other_key, want: vec![] },
            Case { what: "the earlier one failed", first: failed_first, second: finished("b", 10_000, "m1", false, 1, 1), want: vec![] },
            Case { what: "escalation", first: finished("a", 0, "m1", true, 1, 7), second: finished("b", 30_000, "m2", false, 2, 7), want: vec![("a", METRIC_ESCALATION)] },
            Case { what: "escalation and retry", first: finished("a", 0, "m1", true, 1, 7), second: finished("b", 30_000, "m2", false, 1, 7), want: vec![("a", METRIC_RETRY), ("a", METRIC_ESCALATION)] },
            Case { what: "pinned to the same model", first: finished("a", 0, "m1", true, 1, 7), second: finished("b", 30_000, "m1", false, 2, 7), want: vec![] },
            Case { what: "routed again", first: finished("a", 0, "m1", true, 1, 7), second: finished("b", 30_000, "m2", true, 2, 7), want: vec![] },
            Case { what: "escalation too late", first: finished("a", 0, "m1", true, 1, 7), second: finished("b", 601_001, "m2", false, 2, 7), want: vec![] },
            Case { what: "the earlier was pinned", first: finished("a", 0, "m1", false, 1, 7), second: finished("b", 30_000, "m2", false, 2, 7), want: vec![] },
            Case { what: "other conversation", first: finished("a", 0, "m1", true, 1, 7), second: finished("b", 30_000, "m2", false, 2, 8), want: vec![] },
        ];
        for c in cases {
            let recent = Recent::new(100);
            assert!(recent.process(&c.first, 1).is_empty(), "{}", c.what);
            let out = recent.process(&c.second, 2);
            let got: Vec<(&str, &str)> = out
                .iter()
                .map(|o| (o.request_id.as_str(), o.metric.as_str()))
                .collect();
            assert_eq!(got, c.want, "{}", c.what);
            for o in &out {
                assert_eq!(o.score, 0.0);
                assert_eq!(o.weight, 0.5);
                assert_eq!(o.source, "implicit");
                assert_eq!(o.model, "m1");
                assert_eq!(o.key_id, "k");
                assert_eq!(o.workspace.as_deref(), Some("w"));
                assert_eq!((o.created_ms, o.updated_ms), (2, 2));
                assert!(o.detail.as_deref().unwrap().contains("by b"), "{o:?}");
            }
        }
    }

    #[test]
    fn the_memory_is_bounded_and_expires() {
        let recent = Recent::new(10);
        for i in 0..100u8 {
            recent.process(
                &finished(&format!("r{i}"), i64::from(i), "m", true, i, i),
                0,
            );
        }
        assert_eq!(recent.len(), (10, 10));
        let mut m: TtlMap<u8, u8> = TtlMap::new(100, 10);
        m.insert(1, 1, 0);
        assert_eq!(m.get(&1, 100), Some(&1));
        assert_eq!(m.get(&1, 101), None);
        // Rewriting a key keeps one entry and its newest time.
        for t in 0..50 {
            m.insert(1, 2, t);
        }
        assert_eq!(m.len(), 1);
        assert!(m.order.len() <= 20);
        assert_eq!(m.get(&1, 149), Some(&2));
        m.insert(2, 2, 1_000);
        assert_eq!(m.len(), 1, "expired entries go");
        // Rewrites never crowd out new keys.
        let mut m: TtlMap<u32, u32> = TtlMap::new(1_000_000, 10);
        for round in 0..5u32 {
            for k in 0..10u32 {
                m.insert(k, round, i64::from(round * 10 + k));
            }
        }
        assert_eq!(m.len(), 10);
        assert!((0..10).all(|k| m.get(&k, 100) == Some(&4)));
        for k in 100..130u32 {
            m.insert(k, 0, 1_000 + i64::from(k));
            assert_eq!(m.get(&k, 1_000 + i64::from(k)), Some(&0));
            assert!(m.len() <= 10 && m.order.len() <= 20);
        }
    }

    #[test]
    fn the_sink_reaches_every_observer() {
        let sink = OutcomeSink::default();
        assert!(sink.is_empty());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        sink.subscribe(Arc::new(move |o: &OutcomeRow| {
            s2.lock().unwrap().push(o.metric.clone());
        }));
        let clone = sink.clone();
        clone.observe(&OutcomeRow {
            metric: "score".into(),
            ..OutcomeRow::default()
        });
        assert_eq!(*seen.lock().unwrap(), vec!["score".to_owned()]);
        assert_eq!(sink.len(), 1);
    }

    #[test]
    fn implicit_signal_only_for_chat_rows_with_a_served_model() {
        let obs = answer("fine", "stop");
        let e = Expect::default();
        let mut row = LedgerRow {
            id: "r".into(),
            route: "chat".into(),
            outcome: "ok".into(),
            served_model: Some("m".into()),
            ..LedgerRow::default()
        };
        let s = implicit_signal(&row, &e, &obs, 9).unwrap();
        assert_eq!(
            (
                s.metric.as_str(),
                s.model.as_str(),
                s.score,
                s.weight,
                s.source.as_str(),
                s.detail.as_deref(),
                s.at_ms
            ),
            (
                "implicit",
                "m",
                SCORE_OK,
                IMPLICIT_WEIGHT,
                "implicit",
                Some("ok"),
                9
            )
        );
        row.route = "messages".into();
        assert!(implicit_signal(&row, &e, &obs, 9).is_some());
        row.route = "embeddings".into();
        assert!(implicit_signal(&row, &e, &obs, 9).is_none());
        row.route = "chat".into();
        row.served_model = None;
        assert!(implicit_signal(&row, &e, &obs, 9).is_none());
        row.served_model = Some("m".into());
        row.outcome = "client_disconnected".into();
        assert!(implicit_signal(&row, &e, &obs, 9).is_none());
        row.outcome = "error".into();
        assert!(implicit_signal(&row, &e, &obs, 9).is_none());
        row.outcome = "upstream_cut".into();
        assert_eq!(implicit_signal(&row, &e, &obs, 9).unwrap().score, 0.0);
    }
}
