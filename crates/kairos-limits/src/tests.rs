//! Tests of `Limits` that need the crate's internals: the local-only store end to end, and the
//! Redis period maths driven through the test-only time override of the budget scripts.
//!
//! The Redis tests read `KAIROS_TEST_REDIS_URL` and skip (with a visible message) when unset.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::redis_store::BUDGET_PRELUDE;

#[derive(Default)]
struct TestSpend {
    by_scope: Mutex<HashMap<String, i64>>,
    calls: Mutex<Vec<(String, i64)>>,
}

impl TestSpend {
    fn with(scope: &str, spent: i64) -> Arc<Self> {
        let s = Self::default();
        s.set(scope, spent);
        Arc::new(s)
    }

    fn set(&self, scope: &str, spent: i64) {
        self.by_scope
            .lock()
            .unwrap()
            .insert(scope.to_owned(), spent);
    }

    fn calls(&self) -> Vec<(String, i64)> {
        self.calls.lock().unwrap().clone()
    }
}

impl SpendSource for TestSpend {
    fn spent_since<'a>(
        &'a self,
        scope: &'a BudgetScope,
        period_start_unix_s: i64,
    ) -> SpendFuture<'a> {
        self.calls
            .lock()
            .unwrap()
            .push((scope.id.clone(), period_start_unix_s));
        let v = self.by_scope.lock().unwrap().get(&scope.id).copied();
        Box::pin(async move { Ok(v.unwrap_or(0)) })
    }
}

/// The Redis URL, or `None` after a skip message written to the stderr handle directly (the
/// harness would capture `eprintln!` of a passing test).
fn redis_url(test: &str) -> Option<String> {
    use std::io::Write;
    match std::env::var("KAIROS_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: set KAIROS_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379)"
            );
            None
        }
    }
}

fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "kt:{test}:{}:{nanos}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn test_opts(prefix: String) -> LimitsOptions {
    LimitsOptions {
        key_prefix: prefix,
        // Correctness tests, not timing tests: a loaded CI machine must not turn into a fallback.
        redis_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ..LimitsOptions::default()
    }
}

// ---------- local_only ----------

#[tokio::test]
async fn local_only_rates_are_local_and_atomic() {
    let limits = Limits::local_only(LimitsOptions::default(), Arc::new(TestSpend::default()));
    assert_eq!(limits.backend(), Backend::Local);
    let a = RateCheck::new("a", 1, 1).with_burst(3);
    let b = RateCheck::new("b", 1, 1).with_burst(1);
    let d = limits.check_rates(&[a.clone(), b.clone()]).await;
    assert!(d.allowed);
    assert_eq!(d.backend, Backend::Local);
    assert!(!limits.check_rates(&[a.clone(), b.clone()]).await.allowed);
    // `a` was charged once, not twice.
    assert!(limits.check_rates(std::slice::from_ref(&a)).await.allowed);
    assert!(limits.check_rates(std::slice::from_ref(&a)).await.allowed);
    assert!(!limits.check_rates(std::slice::from_ref(&a)).await.allowed);
    limits.adjust_rate("a", 1, -1).await;
    assert!(limits.check_rates(std::slice::from_ref(&a)).await.allowed);
    assert!(
        limits.check_rates(&[]).await.allowed,
        "no limiter, no limit"
    );
}

#[tokio::test]
async fn local_only_budget_seeds_reserves_and_settles_once() {
    let spend = TestSpend::with("key:1", 400_000);
    let limits = Limits::local_only(LimitsOptions::default(), spend.clone());
    let key = BudgetScope::new("key:1", Period::Month, 1_000_000);
    let ws = BudgetScope::new("ws:1", Period::Day, 10_000_000);

    let r = limits
        .reserve(&[key.clone(), ws.clone()], "req-1", 500_000)
        .await
        .unwrap();
    assert_eq!(r.backend(), Backend::Local);
    assert_eq!(r.scopes()[0].remaining_micros, 100_000);
    assert_eq!(r.min_remaining_micros(), Some(100_000));
    assert_eq!(spend.calls().len(), 2, "both counters seeded once");

    let err = limits
        .reserve(&[ws.clone(), key.clone()], "req-2", 200_000)
        .await
        .unwrap_err();
    match err {
        BudgetError::Exceeded {
            scope_id,
            remaining_micros,
            ..
        } => {
            assert_eq!(scope_id, "key:1");
            assert_eq!(remaining_micros, 100_000);
        }
        other => panic!("{other:?}"),
    }
    // Nothing was held in ws:1 by the failed reservation.
    let st = limits.spent(&ws).await.unwrap();
    assert_eq!((st.spent_micros, st.reserved_micros), (0, 500_000));

    assert_eq!(
        limits.settle(&r, 300_000).await.unwrap(),
        Finalized::Applied
    );
    assert_eq!(
        limits.settle(&r, 300_000).await.unwrap(),
        Finalized::AlreadySettled
    );
    assert_eq!(limits.release(&r).await.unwrap(), Finalized::AlreadySettled);
    let st = limits.spent(&key).await.unwrap();
    assert_eq!(
        (st.spent_micros, st.reserved_micros, st.remaining_micros),
        (700_000, 0, 300_000)
    );
    assert!(matches!(
        limits.reserve(std::slice::from_ref(&key), "req-1", 1).await,
        Err(BudgetError::AlreadyFinalized { .. })
    ));

    let r3 = limits
        .reserve(std::slice::from_ref(&key), "req-3", 300_000)
        .await
        .unwrap();
    assert_eq!(limits.release(&r3).await.unwrap(), Finalized::Applied);
    assert_eq!(
        limits.settle(&r3, 10).await.unwrap(),
        Finalized::AlreadyReleased
    );
    let st = limits.spent(&key).await.unwrap();
    assert_eq!((st.spent_micros, st.reserved_micros), (700_000, 0));
    assert_eq!(spend.calls().len(), 2, "no further seeding");
}

#[tokio::test]
async fn local_only_concurrent_reservations_admit_exactly_the_budget() {
    let limits = Limits::local_only(LimitsOptions::default(), Arc::new(TestSpend::default()));
    let scope = BudgetScope::new("ws:a1", Period::Lifetime, 1_000_000);
    let barrier = Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let limits = limits.clone();
        let scope = scope.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            limits.reserve(&[scope], &format!("r{i}"), 10_000).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(BudgetError::Exceeded { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 100);
}

#[tokio::test]
async fn invalid_calls_and_merged_scopes() {
    let limits = Limits::local_only(LimitsOptions::default(), Arc::new(TestSpend::default()));
    let s = BudgetScope::new("k", Period::Day, 100);
    assert!(matches!(
        limits.reserve(std::slice::from_ref(&s), "", 1).await,
        Err(BudgetError::Invalid(_))
    ));
    assert!(matches!(
        limits.reserve(std::slice::from_ref(&s), "r", -1).await,
        Err(BudgetError::Invalid(_))
    ));
    // The same scope twice is held once, under the smaller limit.
    let tighter = BudgetScope::new("k", Period::Day, 50);
    let r = limits
        .reserve(&[s.clone(), tighter.clone()], "r", 50)
        .await
        .unwrap();
    assert_eq!(r.scopes().len(), 1);
    assert_eq!(r.scopes()[0].remaining_micros, 0);
    assert!(matches!(
        limits.settle(&r, -5).await,
        Err(BudgetError::Invalid(_))
    ));
    let none = limits.reserve(&[], "r0", 10).await.unwrap();
    assert!(none.scopes().is_empty());
    assert_eq!(limits.settle(&none, 10).await.unwrap(), Finalized::Applied);
}

#[tokio::test]
async fn a_failing_spend_source_fails_the_reservation() {
    let source = FnSpendSource(|_scope: BudgetScope, _start: i64| async {
        Err::<i64, SpendSourceError>("ledger down".into())
    });
    let limits = Limits::local_only(LimitsOptions::default(), Arc::new(source));
    let err = limits
        .reserve(&[BudgetScope::new("k", Period::Day, 100)], "r", 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BudgetError::Source { ref scope_id, .. } if scope_id == "k"),
        "{err:?}"
    );
}

#[test]
fn connect_lazy_needs_a_runtime() {
    let err = Limits::connect_lazy(
        "redis://127.0.0.1:1",
        LimitsOptions::default(),
        Arc::new(TestSpend::default()),
    )
    .unwrap_err();
    assert!(matches!(err, LimitsError::NoRuntime));
}

// ---------- Redis: the Lua period maths ----------

/// The Lua `period_bounds` and `Period::bounds_at` agree on every instant around month and
/// year ends, leap days and century years, from 1970 to 2400.
#[tokio::test]
async fn lua_period_bounds_match_rust() {
    let Some(url) = redis_url("lua_period_bounds_match_rust") else {
        return;
    };
    let limits = Limits::connect(
        &url,
        test_opts(unique_prefix("lua")),
        Arc::new(TestSpend::default()),
    )
    .await
    .unwrap();
    let redis = limits.inner.redis.as_ref().unwrap();
    let probe = redis::Script::new(&format!(
        "{BUDGET_PRELUDE}\n{}",
        r"
        local out = {}
        for i = 2, #ARGV do
          local id, s, e = period_bounds(ARGV[1], tonumber(ARGV[i]))
          table.insert(out, id); table.insert(out, s); table.insert(out, e)
        end
        return out"
    ));
    let mut instants = Vec::new();
    for y in [
        1970, 1999, 2000, 2023, 2024, 2025, 2038, 2099, 2100, 2104, 2399,
    ] {
        for m in 1..=12 {
            let start = days_from_civil(y, m, 1) * SECONDS_PER_DAY;
            instants.extend([start - 1, start, start + 1, start + 43_200]);
        }
    }
    instants.retain(|t| *t >= 0);
    // A pseudo-random spread as well.
    let mut x: i64 = 0x2545_f491;
    for _ in 0..500 {
        x = (x.wrapping_mul(6_364_136_223_846_793) + 1_442_695_040_888_963) & 0x7fff_ffff_ffff;
        instants.push(x % 13_000_000_000);
    }
    for period in [Period::Day, Period::Month, Period::Lifetime] {
        let mut conn = redis.test_connection();
        let mut inv = probe.prepare_invoke();
        inv.arg(period.as_str());
        for t in &instants {
            inv.arg(*t);
        }
        let out: Vec<i64> = inv.invoke_async(&mut conn).await.unwrap();
        assert_eq!(out.len(), instants.len() * 3);
        for (t, lua) in instants.iter().zip(out.chunks_exact(3)) {
            let rust = period.bounds_at(*t);
            let rust = [rust.id, rust.start_unix_s, rust.end_unix_s.unwrap_or(-1)];
            assert_eq!(lua, rust, "{period} at {t}");
        }
    }
}

/// Month rollover through the real reserve script with a time override: the last second of
/// February and the first of March are different periods, each seeded from the ledger with its
/// own period start; February's spend does not count in March.
#[tokio::test]
async fn month_rollover_in_redis_opens_a_new_seeded_period() {
    let Some(url) = redis_url("month_rollover_in_redis_opens_a_new_seeded_period") else {
        return;
    };
    let spend = TestSpend::with("key:m", 900_000);
    let limits = Limits::connect(&url, test_opts(unique_prefix("month")), spend.clone())
        .await
        .unwrap();
    let scope = BudgetScope::new("key:m", Period::Month, 1_000_000);
    let feb = days_from_civil(2024, 2, 1) * SECONDS_PER_DAY;
    let mar = days_from_civil(2024, 3, 1) * SECONDS_PER_DAY;

    let r = limits
        .reserve_at(
            std::slice::from_ref(&scope),
            "feb-1",
            100_000,
            Some(mar - 1),
        )
        .await
        .unwrap();
    assert_eq!(r.scopes()[0].period_start_unix_s, feb);
    assert_eq!(r.scopes()[0].period_id, 2024 * 12 + 1);
    assert_eq!(r.scopes()[0].remaining_micros, 0);
    assert!(matches!(
        limits
            .reserve_at(std::slice::from_ref(&scope), "feb-2", 1, Some(mar - 1))
            .await,
        Err(BudgetError::Exceeded { .. })
    ));

    // One second later: March. The ledger says nothing was spent in March yet.
    spend.set("key:m", 0);
    let r2 = limits
        .reserve_at(std::slice::from_ref(&scope), "mar-1", 1_000_000, Some(mar))
        .await
        .unwrap();
    assert_eq!(r2.scopes()[0].period_start_unix_s, mar);
    assert_eq!(r2.scopes()[0].period_id, 2024 * 12 + 2);
    assert_eq!(
        spend.calls(),
        vec![("key:m".to_owned(), feb), ("key:m".to_owned(), mar)]
    );

    // A February settlement after the rollover is charged to February.
    assert_eq!(limits.settle(&r, 50_000).await.unwrap(), Finalized::Applied);
    let feb_status = limits.spent_at(&scope, Some(mar - 1)).await.unwrap();
    assert_eq!(
        (feb_status.spent_micros, feb_status.reserved_micros),
        (950_000, 0)
    );
    let mar_status = limits.spent_at(&scope, Some(mar)).await.unwrap();
    assert_eq!(
        (
            mar_status.spent_micros,
            mar_status.reserved_micros,
            mar_status.period_start_unix_s
        ),
        (0, 1_000_000, mar)
    );

    // Day periods roll over at midnight UTC the same way.
    let day = BudgetScope::new("key:d", Period::Day, 10);
    let d1 = limits
        .reserve_at(std::slice::from_ref(&day), "d-1", 10, Some(mar - 1))
        .await
        .unwrap();
    let d2 = limits
        .reserve_at(std::slice::from_ref(&day), "d-2", 10, Some(mar))
        .await
        .unwrap();
    assert_eq!(d1.scopes()[0].period_start_unix_s, mar - SECONDS_PER_DAY);
    assert_eq!(d2.scopes()[0].period_start_unix_s, mar);
}

/// Counters of a finished period expire `grace` after its end; lifetime counters never do.
#[tokio::test]
async fn redis_counters_expire_after_their_period() {
    let Some(url) = redis_url("redis_counters_expire_after_their_period") else {
        return;
    };
    let prefix = unique_prefix("ttl");
    let limits = Limits::connect(
        &url,
        test_opts(prefix.clone()),
        Arc::new(TestSpend::default()),
    )
    .await
    .unwrap();
    let day = BudgetScope::new("s", Period::Day, 10);
    let life = BudgetScope::new("s", Period::Lifetime, 10);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let r = limits
        .reserve(&[day.clone(), life.clone()], "r", 1)
        .await
        .unwrap();
    let b = Period::Day.bounds_at(now);
    let mut conn = limits.inner.redis.as_ref().unwrap().test_connection();
    let day_key = format!("{prefix}bg:day:{}:h:s", r.scopes()[0].period_id);
    let expire_at: i64 = redis::cmd("EXPIRETIME")
        .arg(&day_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let grace = limits.options().grace_s() as i64;
    assert_eq!(expire_at, b.end_unix_s.unwrap() + grace);
    let life_ttl: i64 = redis::cmd("TTL")
        .arg(format!("{prefix}bg:lifetime:0:h:s"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(life_ttl, -1, "lifetime counters do not expire");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut conn)
        .await
        .unwrap();
}
