//! Metric names and the points where the pipeline emits them, through the `metrics` facade.
//!
//! The binary installs a Prometheus recorder and serves it at `GET /metrics`; without a recorder
//! (unit tests, the library used alone) every call here is a no-op. Request-level metrics are
//! taken from the finished ledger row, so a metric and the ledger can never disagree on what a
//! request was. Gauges about the present (in flight, per-target health) are set at scrape time
//! by the server, from the same snapshot `/admin/health` shows.

use std::collections::HashMap;
use std::sync::{LazyLock, PoisonError, RwLock};

use kairos_store::LedgerRow;
use metrics::{Counter, Histogram, counter, histogram};

use crate::record::AttemptRecord;

/// Requests finished, by `route`, `status` (HTTP status sent) and `outcome` (ledger outcome).
pub const REQUESTS: &str = "kairos_requests_total";
/// Whole-request latency in seconds, by `route` (streams: until the last byte).
pub const REQUEST_DURATION: &str = "kairos_request_duration_seconds";
/// The gateway's own time per request (total minus upstream wait), in seconds.
pub const OVERHEAD: &str = "kairos_gateway_overhead_seconds";
/// Time to the first content token of streams, in seconds, by `provider` and `model`.
pub const TTFT: &str = "kairos_ttft_seconds";
/// Billed tokens, by `provider`, `model` and `kind` (`input`, `output`, `cached`).
pub const TOKENS: &str = "kairos_tokens_total";
/// Spend in micro-USD, by `provider` and `model`.
pub const COST: &str = "kairos_cost_micro_usd_total";
/// Upstream attempts, by `target` (`provider/model`), `outcome` (`ok`, `error`, `skipped`)
/// and `error_kind`.
pub const ATTEMPTS: &str = "kairos_upstream_attempts_total";
/// Failed attempts followed by a retry of the same target, by `target`.
pub const RETRIES: &str = "kairos_retries_total";
/// Moves from one target to the next.
pub const FALLBACKS: &str = "kairos_fallbacks_total";
/// Retries refused because the process-wide retry budget was spent.
pub const RETRY_BUDGET_EXHAUSTED: &str = "kairos_retry_budget_exhausted_total";
/// Requests refused at the door (in-flight cap reached).
pub const SHED: &str = "kairos_shed_total";
/// Requests in flight (gauge, set at scrape time).
pub const IN_FLIGHT: &str = "kairos_in_flight_requests";
/// 1 for the target's current state (`healthy`, `probing`, `cooling`, `ejected`), by `target`.
pub const TARGET_STATE: &str = "kairos_target_state";
/// Failure share over the health window, by `target`.
pub const TARGET_ERROR_RATE: &str = "kairos_target_error_rate";
/// EWMA of successful attempt latency in seconds, by `target`.
pub const TARGET_LATENCY: &str = "kairos_target_latency_ewma_seconds";
/// Consecutive failures, by `target`.
pub const TARGET_CONSECUTIVE_FAILURES: &str = "kairos_target_consecutive_failures";
/// Ejections since the process started, by `target`.
pub const TARGET_EJECTIONS: &str = "kairos_target_ejections";

/// Histogram buckets (seconds) for request and TTFT latency.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Histogram buckets (seconds) for the gateway's own time: microseconds to milliseconds.
pub const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005,
    0.01, 0.05,
];

fn status_label(status: i32) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        402 => "402",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        422 => "422",
        429 => "429",
        499 => "499",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if (200..300).contains(&s) => "2xx",
        s if (400..500).contains(&s) => "4xx",
        _ => "5xx",
    }
}

/// Metric handles resolved once and reused: the registry lookup (hashing the name and labels)
/// and the label allocations happen on the first request of each label set only. Profiled:
/// resolving seven labelled metrics per request cost ~10% of peak throughput.
#[derive(Default)]
struct Handles {
    requests: HashMap<(&'static str, &'static str, &'static str), (Counter, Histogram)>,
    /// provider -> model -> handles.
    models: HashMap<String, HashMap<String, ModelHandles>>,
    /// target -> (outcome, error kind) -> counter.
    attempts: HashMap<String, Vec<(&'static str, String, Counter)>>,
    retries: HashMap<String, Counter>,
}

#[derive(Clone)]
struct ModelHandles {
    ttft: Histogram,
    input: Counter,
    output: Counter,
    cached: Counter,
    cost: Counter,
}

static HANDLES: LazyLock<RwLock<Handles>> = LazyLock::new(|| RwLock::new(Handles::default()));
static OVERHEAD_H: LazyLock<Histogram> = LazyLock::new(|| histogram!(OVERHEAD));
static FALLBACKS_C: LazyLock<Counter> = LazyLock::new(|| counter!(FALLBACKS));

fn handles() -> std::sync::RwLockReadGuard<'static, Handles> {
    HANDLES.read().unwrap_or_else(PoisonError::into_inner)
}

fn handles_mut() -> std::sync::RwLockWriteGuard<'static, Handles> {
    HANDLES.write().unwrap_or_else(PoisonError::into_inner)
}

fn route_label(route: &str) -> &'static str {
    match route {
        "chat" => "chat",
        "messages" => "messages",
        "embeddings" => "embeddings",
        _ => "other",
    }
}

fn outcome_label(outcome: &str) -> &'static str {
    match outcome {
        "ok" => "ok",
        "error" => "error",
        "client_disconnected" => "client_disconnected",
        "upstream_cut" => "upstream_cut",
        "upstream_stalled" => "upstream_stalled",
        "skipped" => "skipped",
        _ => "other",
    }
}

fn model_handles(provider: &str, model: &str) -> ModelHandles {
    if let Some(h) = handles().models.get(provider).and_then(|m| m.get(model)) {
        return h.clone();
    }
    let (p, m) = (provider.to_owned(), model.to_owned());
    let h = ModelHandles {
        ttft: histogram!(TTFT, "provider" => p.clone(), "model" => m.clone()),
        input: counter!(TOKENS, "provider" => p.clone(), "model" => m.clone(), "kind" => "input"),
        output: counter!(TOKENS, "provider" => p.clone(), "model" => m.clone(), "kind" => "output"),
        cached: counter!(TOKENS, "provider" => p.clone(), "model" => m.clone(), "kind" => "cached"),
        cost: counter!(COST, "provider" => p.clone(), "model" => m.clone()),
    };
    handles_mut()
        .models
        .entry(p)
        .or_default()
        .insert(m, h.clone());
    h
}

/// A finished request, just before its row goes to the ledger.
pub fn observe_row(row: &LedgerRow) {
    let key = (
        route_label(&row.route),
        status_label(row.status_code),
        outcome_label(&row.outcome),
    );
    let found = handles().requests.get(&key).cloned();
    let (requests, duration) = found.unwrap_or_else(|| {
        let h = (
            counter!(REQUESTS, "route" => key.0, "status" => key.1, "outcome" => key.2),
            histogram!(REQUEST_DURATION, "route" => key.0),
        );
        handles_mut().requests.insert(key, h.clone());
        h
    });
    requests.increment(1);
    duration.record(row.latency_total_us as f64 / 1e6);
    OVERHEAD_H.record(row.overhead_us as f64 / 1e6);
    let (Some(provider), Some(model)) = (&row.provider, &row.served_model) else {
        return;
    };
    let h = model_handles(provider, model);
    if let Some(t) = row.ttft_us {
        h.ttft.record(t as f64 / 1e6);
    }
    for (c, n) in [
        (&h.input, row.input_tokens),
        (&h.output, row.output_tokens),
        (&h.cached, row.cached_tokens),
    ] {
        if n > 0 {
            c.increment(n as u64);
        }
    }
    if let Some(c) = row.cost_micros.filter(|c| *c > 0) {
        h.cost.increment(c as u64);
    }
}

/// One upstream attempt (or a skipped target).
pub fn observe_attempt(a: &AttemptRecord) {
    let outcome = outcome_label(&a.outcome);
    let kind = a.error_kind.as_deref().unwrap_or("");
    let found = handles().attempts.get(&a.target).and_then(|v| {
        v.iter()
            .find(|(o, k, _)| *o == outcome && k == kind)
            .map(|(_, _, c)| c.clone())
    });
    let c = found.unwrap_or_else(|| {
        let c = counter!(ATTEMPTS,
            "target" => a.target.clone(),
            "outcome" => outcome,
            "error_kind" => kind.to_owned());
        handles_mut()
            .attempts
            .entry(a.target.clone())
            .or_default()
            .push((outcome, kind.to_owned(), c.clone()));
        c
    });
    c.increment(1);
    if a.retried {
        let found = handles().retries.get(&a.target).cloned();
        let c = found.unwrap_or_else(|| {
            let c = counter!(RETRIES, "target" => a.target.clone());
            handles_mut().retries.insert(a.target.clone(), c.clone());
            c
        });
        c.increment(1);
    }
}

pub fn fallback() {
    FALLBACKS_C.increment(1);
}

pub fn retry_budget_exhausted() {
    counter!(RETRY_BUDGET_EXHAUSTED).increment(1);
}

pub fn shed() {
    counter!(SHED).increment(1);
}
