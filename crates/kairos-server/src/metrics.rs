//! `GET /metrics`: the Prometheus exposition of everything `kairos_core::metrics` counts, plus
//! gauges of the present (requests in flight, per-target health) set at scrape time.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kairos_core::health::HealthState;
use kairos_core::metrics as m;
use metrics::gauge;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::routes::AppState;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the process-wide Prometheus recorder (once; later calls reuse it) and start its
/// upkeep task, which drains histogram samples so memory stays flat between scrapes. `None` if
/// another recorder was installed first (an embedding program's own).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(m::OVERHEAD.into()), m::OVERHEAD_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(m::REQUEST_DURATION.into()),
                        m::LATENCY_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(m::TTFT.into()), m::LATENCY_BUCKETS)
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics disabled");
                    return None;
                }
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics is disabled");
                return None;
            }
            describe();
            let upkeep = handle.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        tick.tick().await;
                        upkeep.run_upkeep();
                    }
                });
            }
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        m::REQUESTS,
        "Requests finished, by route, HTTP status and outcome."
    );
    describe_histogram!(m::REQUEST_DURATION, Unit::Seconds, "Whole-request latency.");
    describe_histogram!(
        m::OVERHEAD,
        Unit::Seconds,
        "Gateway's own time per request (total minus upstream wait)."
    );
    describe_histogram!(
        m::TTFT,
        Unit::Seconds,
        "Time to the first content token of streams."
    );
    describe_counter!(m::TOKENS, "Billed tokens by provider, model and kind.");
    describe_counter!(m::COST, "Spend in micro-USD by provider and model.");
    describe_counter!(
        m::ATTEMPTS,
        "Upstream attempts by target, outcome and error kind."
    );
    describe_counter!(
        m::RETRIES,
        "Failed attempts followed by a retry of the same target."
    );
    describe_counter!(m::FALLBACKS, "Moves from one target to the next.");
    describe_counter!(
        m::RETRY_BUDGET_EXHAUSTED,
        "Retries refused by the retry budget."
    );
    describe_counter!(
        m::SHED,
        "Requests refused because the in-flight cap was reached."
    );
    describe_gauge!(m::IN_FLIGHT, "Requests in flight.");
    describe_gauge!(m::TARGET_STATE, "1 for the target's current health state.");
    describe_gauge!(
        m::TARGET_ERROR_RATE,
        "Failure share over the health window."
    );
    describe_gauge!(
        m::TARGET_LATENCY,
        Unit::Seconds,
        "EWMA of successful attempt latency."
    );
    describe_gauge!(m::TARGET_CONSECUTIVE_FAILURES, "Consecutive failures.");
    describe_gauge!(m::TARGET_EJECTIONS, "Ejections since the process started.");
}

/// The exposition text, after setting the scrape-time gauges from `st`.
pub fn render(st: &AppState) -> Option<String> {
    let handle = install()?;
    gauge!(m::IN_FLIGHT).set(st.in_flight.load(Ordering::Relaxed) as f64);
    for t in st.gateway.health_snapshot() {
        let target = format!("{}/{}", t.key.provider, t.key.model);
        for (name, s) in [
            ("healthy", HealthState::Healthy),
            ("probing", HealthState::Probing),
            ("cooling", HealthState::Cooling),
            ("ejected", HealthState::Ejected),
        ] {
            gauge!(m::TARGET_STATE, "target" => target.clone(), "state" => name)
                .set(if t.state == s { 1.0 } else { 0.0 });
        }
        gauge!(m::TARGET_ERROR_RATE, "target" => target.clone()).set(t.error_rate);
        gauge!(m::TARGET_CONSECUTIVE_FAILURES, "target" => target.clone())
            .set(f64::from(t.consecutive_failures));
        gauge!(m::TARGET_EJECTIONS, "target" => target.clone()).set(f64::from(t.ejections));
        if let Some(ms) = t.ewma_ms {
            gauge!(m::TARGET_LATENCY, "target" => target).set(ms / 1e3);
        }
    }
    Some(handle.render())
}
