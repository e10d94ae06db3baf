//! Shared state of one mock: configuration, scripts, the ledger and the request log.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::behavior::Behavior;

/// Mock configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockConfig {
    /// If set, OpenAI routes require `Authorization: Bearer <key>` (Azure routes: `api-key: <key>`).
    pub openai_key: Option<String>,
    /// Further keys the OpenAI routes accept besides `openai_key` (workspace credentials and
    /// BYOK keys in tests).
    pub openai_extra_keys: Vec<String>,
    /// If set, Anthropic routes require `x-api-key: <key>`.
    pub anthropic_key: Option<String>,
    /// If set, Gemini routes require `x-goog-api-key: <key>`. A `?key=` query parameter is
    /// refused (401) and flagged in the request log.
    pub gemini_key: Option<String>,
    /// Behaviour when no script or directive applies.
    pub defaults: Behavior,
    /// Share of default-behaviour requests (no script, no directive) answered with
    /// `fault_status` instead: a flapping provider for resilience benchmarks. Deterministic (a
    /// hash of a request counter), so runs are repeatable.
    pub fault_rate: f64,
    /// The status of those faults (default 503).
    pub fault_status: u16,
    /// Keep the request log and the ledger (off for benchmarks).
    pub record: bool,
    /// Demo mode: friendlier default answers (set realistic latencies in `defaults`, see
    /// [`MockConfig::demo`]).
    pub demo: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            openai_key: None,
            openai_extra_keys: Vec::new(),
            anthropic_key: None,
            gemini_key: None,
            defaults: Behavior::default(),
            fault_rate: 0.0,
            fault_status: 503,
            record: true,
            demo: false,
        }
    }
}

impl MockConfig {
    /// Demo mode with realistic latencies ([`Behavior::demo_latency`]).
    pub fn demo() -> Self {
        Self {
            defaults: Behavior::demo_latency(),
            demo: true,
            ..Self::default()
        }
    }

    /// For load benchmarks: no request log, no ledger.
    pub fn bench() -> Self {
        Self {
            record: false,
            ..Self::default()
        }
    }
}

/// One call as the provider would invoice it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BilledCall {
    /// The `x-kairos-request-id` request header, if sent.
    pub request_id: Option<String>,
    /// `openai`, `anthropic` or `gemini`.
    pub api: String,
    /// Request path.
    pub route: String,
    /// Model (Azure: the deployment; Gemini: the model in the path).
    pub model: String,
    /// Whether the response was streamed.
    pub stream: bool,
    /// Response status.
    pub status: u16,
    /// Input tokens billed, cached ones included (Anthropic's wire `input_tokens` is
    /// `prompt_tokens - cached_tokens`, as at the real API).
    pub prompt_tokens: u32,
    /// Output tokens billed; for streams only those of the content events actually written.
    pub completion_tokens: u32,
    /// Cached input tokens billed (part of `prompt_tokens`).
    pub cached_tokens: u32,
    /// The whole response was written (false for errors, cut, stalled, aborted or
    /// disconnected streams).
    pub completed: bool,
}

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// All headers, in order (values lossily decoded).
    pub headers: Vec<(String, String)>,
    /// Body, lossily decoded, capped at 256 KiB.
    pub body: String,
    /// Milliseconds since the server started.
    pub at_ms: u64,
    /// The request carried an API key in the query string (`?key=`): a key leak into URLs.
    pub key_in_query: bool,
}

impl ReceivedRequest {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Cap for recorded bodies.
pub(crate) const BODY_LOG_CAP: usize = 256 * 1024;

#[derive(Default)]
struct Scripts {
    fifo: VecDeque<Behavior>,
    by_model: HashMap<String, VecDeque<Behavior>>,
}

#[derive(Default)]
struct Ledger {
    /// Bumped by `reset` so that streams still running do not write into the new ledger.
    epoch: u64,
    calls: Vec<BilledCall>,
}

/// Where a ledger entry lives, for updates while a stream runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LedgerSlot {
    epoch: u64,
    index: usize,
}

pub(crate) struct Inner {
    pub(crate) cfg: MockConfig,
    /// Number of queued behaviours (FIFO and per model): read without a lock on the hot path.
    queued: AtomicUsize,
    scripts: Mutex<Scripts>,
    ledger: Mutex<Ledger>,
    requests: Mutex<Vec<ReceivedRequest>>,
    calls: AtomicUsize,
    /// Counter behind `fault_rate`.
    faults: AtomicU64,
    disconnects: AtomicUsize,
    ids: AtomicU64,
    started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A cheap, cloneable handle on one mock's state: scripts, ledger, request log and counters.
/// [`crate::MockServer`] derefs to it; use it directly with [`crate::serve_with`].
#[derive(Clone)]
pub struct MockHandle {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for MockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockHandle")
            .field("calls", &self.call_count())
            .field("disconnects", &self.disconnects())
            .finish_non_exhaustive()
    }
}

impl MockHandle {
    /// A fresh state for this configuration.
    pub fn new(cfg: MockConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                cfg,
                queued: AtomicUsize::new(0),
                scripts: Mutex::default(),
                ledger: Mutex::default(),
                requests: Mutex::default(),
                calls: AtomicUsize::new(0),
                faults: AtomicU64::new(0),
                disconnects: AtomicUsize::new(0),
                ids: AtomicU64::new(1),
                started: Instant::now(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MockConfig {
        &self.inner.cfg
    }

    /// Queue a behaviour for the next inference request on any route.
    pub fn push(&self, b: Behavior) {
        let mut s = lock(&self.inner.scripts);
        s.fifo.push_back(b);
        self.inner.queued.fetch_add(1, Ordering::Release);
    }

    /// Queue a behaviour for the next inference request for this model.
    pub fn push_for_model(&self, model: &str, b: Behavior) {
        let mut s = lock(&self.inner.scripts);
        s.by_model.entry(model.to_owned()).or_default().push_back(b);
        self.inner.queued.fetch_add(1, Ordering::Release);
    }

    /// A copy of the ledger, in arrival order.
    pub fn ledger(&self) -> Vec<BilledCall> {
        lock(&self.inner.ledger).calls.clone()
    }

    /// A copy of the request log, in arrival order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.inner.requests).clone()
    }

    /// Inference requests received (chat, messages, generate, embeddings; not model lists,
    /// token counts or control calls), whatever their outcome. Counted even with `record: false`.
    pub fn call_count(&self) -> usize {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// Responses whose body (or pending response) the client dropped before completion.
    pub fn disconnects(&self) -> usize {
        self.inner.disconnects.load(Ordering::Relaxed)
    }

    /// Forget scripts, ledger, request log and counters.
    pub fn reset(&self) {
        {
            let mut s = lock(&self.inner.scripts);
            s.fifo.clear();
            s.by_model.clear();
            self.inner.queued.store(0, Ordering::Release);
        }
        {
            let mut l = lock(&self.inner.ledger);
            l.epoch += 1;
            l.calls.clear();
        }
        lock(&self.inner.requests).clear();
        self.inner.calls.store(0, Ordering::Relaxed);
        self.inner.disconnects.store(0, Ordering::Relaxed);
    }

    // ---- crate-internal ----

    pub(crate) fn record(&self) -> bool {
        self.inner.cfg.record
    }

    pub(crate) fn count_call(&self) {
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_disconnect(&self) {
        self.inner.disconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.inner.ids.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes the scripted behaviour for this request, if any: model-specific first, then FIFO.
    pub(crate) fn take_script(&self, model: &str) -> Option<Behavior> {
        if self.inner.queued.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut s = lock(&self.inner.scripts);
        let mut taken = None;
        if let Some(q) = s.by_model.get_mut(model) {
            taken = q.pop_front();
            if q.is_empty() {
                s.by_model.remove(model);
            }
        }
        if taken.is_none() {
            taken = s.fifo.pop_front();
        }
        if taken.is_some() {
            self.inner.queued.fetch_sub(1, Ordering::Release);
        }
        taken
    }

    pub(crate) fn defaults(&self) -> Cow<'_, Behavior> {
        let cfg = &self.inner.cfg;
        if cfg.fault_rate > 0.0 {
            let n = self.inner.faults.fetch_add(1, Ordering::Relaxed);
            // splitmix64 of the counter -> uniform in [0, 1).
            let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            if ((z >> 11) as f64 / (1u64 << 53) as f64) < cfg.fault_rate {
                return Cow::Owned(Behavior {
                    status: cfg.fault_status,
                    ..cfg.defaults.clone()
                });
            }
        }
        Cow::Borrowed(&cfg.defaults)
    }

    pub(crate) fn log_request(&self, req: ReceivedRequest) {
        lock(&self.inner.requests).push(req);
    }

    /// Appends a ledger entry (when recording) and returns its slot.
    pub(crate) fn bill(&self, call: BilledCall) -> Option<LedgerSlot> {
        if !self.record() {
            return None;
        }
        let mut l = lock(&self.inner.ledger);
        l.calls.push(call);
        Some(LedgerSlot {
            epoch: l.epoch,
            index: l.calls.len() - 1,
        })
    }

    /// Updates a stream's entry: completion tokens written so far, and whether it completed.
    pub(crate) fn update_bill(&self, slot: LedgerSlot, completion_tokens: u32, completed: bool) {
        let mut l = lock(&self.inner.ledger);
        if l.epoch != slot.epoch {
            return;
        }
        if let Some(call) = l.calls.get_mut(slot.index) {
            call.completion_tokens = completion_tokens;
            call.completed = completed;
        }
    }
}
