//! U23: Redis down or silent. Rate limits answer from the replica-local limiter within the
//! timeout (and say so), budgets fail closed, the metrics count it, and Redis is used again
//! once it answers.
//!
//! The tests in this file share one process-wide metrics recorder, so they compare counters
//! before and after rather than absolute values.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{Proxy, TestSpend, black_hole, closed_port, redis_url, server_addr, unique_prefix};
use kairos_limits::{
    BUDGET_UNAVAILABLE_TOTAL, Backend, BudgetError, BudgetScope, Limits, LimitsOptions, Period,
    RATE_FALLBACK_TOTAL, RateCheck,
};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

type Counters = Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>;

/// Sums counters by name, over all labels.
struct TestRecorder(Counters);

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let c = self
            .0
            .lock()
            .unwrap()
            .entry(key.name().to_owned())
            .or_default()
            .clone();
        Counter::from_arc(c)
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn counter(name: &str) -> u64 {
    static COUNTERS: OnceLock<Counters> = OnceLock::new();
    let counters = COUNTERS.get_or_init(|| {
        let counters = Counters::default();
        metrics::set_global_recorder(TestRecorder(counters.clone())).unwrap();
        counters
    });
    counters
        .lock()
        .unwrap()
        .get(name)
        .map_or(0, |c| c.load(Ordering::SeqCst))
}

fn fast_opts(prefix: &str) -> LimitsOptions {
    LimitsOptions {
        key_prefix: prefix.to_owned(),
        redis_timeout: Duration::from_millis(50),
        connect_timeout: Duration::from_millis(300),
        breaker_cooldown: Duration::from_millis(200),
        ..LimitsOptions::default()
    }
}

/// The outer bound only proves the call returns (it would hang forever otherwise); it is not
/// a latency assertion.
async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("the call did not return")
}

async fn assert_degraded(limits: &Limits, rounds: usize) {
    let check = RateCheck::new("key:u23:rpm", 60, 1).with_burst(2);
    let scope = BudgetScope::new("key:u23", Period::Day, 1_000_000);
    let fallbacks = counter(RATE_FALLBACK_TOTAL);
    let unavailable = counter(BUDGET_UNAVAILABLE_TOTAL);
    let mut allowed = 0;
    for _ in 0..rounds {
        let d = bounded(limits.check_rates(std::slice::from_ref(&check))).await;
        assert_eq!(d.backend, Backend::Local);
        allowed += usize::from(d.allowed);
    }
    // The local limiter really limits: burst 2, one per second.
    assert!((2..=3).contains(&allowed), "{allowed} of {rounds}");
    assert!(counter(RATE_FALLBACK_TOTAL) >= fallbacks + rounds as u64);

    let err = bounded(limits.reserve(std::slice::from_ref(&scope), "u23-req", 1_000))
        .await
        .unwrap_err();
    assert!(matches!(err, BudgetError::Unavailable { .. }), "{err:?}");
    assert!(matches!(
        bounded(limits.spent(&scope)).await,
        Err(BudgetError::Unavailable { .. })
    ));
    assert!(counter(BUDGET_UNAVAILABLE_TOTAL) >= unavailable + 2);
}

#[tokio::test]
async fn nothing_listening_connect_fails_and_lazy_falls_back() {
    let addr = closed_port().await;
    let url = format!("redis://{addr}");
    let spend = TestSpend::new();
    let prefix = unique_prefix("closed");
    let err = bounded(Limits::connect(&url, fast_opts(&prefix), spend.clone())).await;
    assert!(err.is_err(), "connect must report that Redis is down");

    let limits = Limits::connect_lazy(&url, fast_opts(&prefix), spend).unwrap();
    assert_eq!(limits.backend(), Backend::Redis);
    assert_degraded(&limits, 5).await;
}

#[tokio::test]
async fn a_server_that_never_answers_falls_back_within_the_timeout() {
    let (addr, hole) = black_hole().await;
    let url = format!("redis://{addr}");
    let spend = TestSpend::new();
    let prefix = unique_prefix("hole");
    let err = bounded(Limits::connect(&url, fast_opts(&prefix), spend.clone())).await;
    assert!(err.is_err(), "connect gives up after connect_timeout");

    let limits = Limits::connect_lazy(&url, fast_opts(&prefix), spend).unwrap();
    // Enough calls to go through the timeout path, open the breaker and skip Redis.
    assert_degraded(&limits, 6).await;
    hole.abort();
}

/// A live connection goes silent (the proxy freezes): calls time out to the fallback, budgets
/// fail closed; once the proxy answers again, Redis decides again and nothing was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_falls_back_then_recovers() {
    let Some(url) = redis_url("a_silent_connection_falls_back_then_recovers") else {
        return;
    };
    let proxy = Proxy::start(server_addr(&url).await).await;
    let prefix = unique_prefix("silent");
    let opts = LimitsOptions {
        // Generous while healthy (a loaded CI machine), short enough to test the fallback.
        redis_timeout: Duration::from_millis(250),
        ..fast_opts(&prefix)
    };
    let limits = Limits::connect(&proxy.url(), opts, TestSpend::new())
        .await
        .unwrap();
    let scope = BudgetScope::new("key:silent", Period::Day, 1_000_000);
    let check = RateCheck::new("key:silent:rpm", 600, 1);
    assert_eq!(
        limits
            .check_rates(std::slice::from_ref(&check))
            .await
            .backend,
        Backend::Redis
    );
    let held = limits
        .reserve(std::slice::from_ref(&scope), "before", 100_000)
        .await
        .unwrap();

    proxy.freeze(true);
    let fallbacks = counter(RATE_FALLBACK_TOTAL);
    for _ in 0..5 {
        let d = bounded(limits.check_rates(std::slice::from_ref(&check))).await;
        assert_eq!(d.backend, Backend::Local);
        assert!(d.allowed);
    }
    assert!(counter(RATE_FALLBACK_TOTAL) >= fallbacks + 5);
    assert!(matches!(
        bounded(limits.reserve(std::slice::from_ref(&scope), "during", 1)).await,
        Err(BudgetError::Unavailable { .. })
    ));
    assert!(matches!(
        bounded(limits.settle(&held, 1)).await,
        Err(BudgetError::Unavailable { .. })
    ));

    proxy.freeze(false);
    let mut back = false;
    for _ in 0..100 {
        let d = bounded(limits.check_rates(std::slice::from_ref(&check))).await;
        if d.backend == Backend::Redis {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "Redis is used again once it answers");
    // Nothing was lost while Redis was away, and the failed settlement can be retried.
    let st = bounded(limits.spent(&scope)).await.unwrap();
    assert_eq!((st.spent_micros, st.reserved_micros), (0, 100_000));
    bounded(limits.settle(&held, 80_000)).await.unwrap();
    let st = bounded(limits.spent(&scope)).await.unwrap();
    assert_eq!((st.spent_micros, st.reserved_micros), (80_000, 0));
}
