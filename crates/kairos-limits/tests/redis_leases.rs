//! Budget and rate leases against a real Redis (`KAIROS_TEST_REDIS_URL`; skipped when unset).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestSpend, cleanup, opts, raw_conn, redis_url, unique_prefix};
use kairos_limits::{
    BudgetError, BudgetScope, Finalized, Limits, LimitsOptions, Period, Reservation,
};

/// Options with budget leases taken at once (no warm-up) and validated often.
fn lease_opts(prefix: &str) -> LimitsOptions {
    LimitsOptions {
        lease_warmup: Duration::ZERO,
        lease_validate_interval: Duration::from_millis(100),
        ..opts(prefix)
    }
}

/// The same server, logical database `db` (each flushing test file uses its own).
fn with_db(url: &str, db: u8) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{authority}/{db}")
}

/// Reserves (and settles at `amount`) until a reservation comes from a lease; returns it
/// with the money settled on the way.
async fn leased(
    limits: &Limits,
    scope: &BudgetScope,
    tag: &str,
    amount: i64,
) -> (Reservation, i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut settled = 0;
    for i in 0.. {
        assert!(Instant::now() < deadline, "no lease was taken");
        let r = limits
            .reserve(std::slice::from_ref(scope), &format!("{tag}-{i}"), amount)
            .await
            .unwrap();
        if r.lease_id().is_some() {
            return (r, settled);
        }
        limits.settle(&r, amount).await.unwrap();
        settled += amount;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    unreachable!()
}

/// Three replicas hammer one scope set with sustained traffic: reservations come from leases,
/// and the sum of spend and holds never exceeds the limit. Each request settles its full
/// reservation, so at most limit / amount are admitted.
async fn run_three_replicas(test: &str, limit: i64, amount: i64) -> (u64, u64, u64) {
    let url = redis_url(test).unwrap();
    let prefix = unique_prefix(test);
    let spend = TestSpend::new();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            Limits::connect(&url, lease_opts(&prefix), spend.clone())
                .await
                .unwrap(),
        );
    }
    let scope = BudgetScope::new(format!("ws:{test}"), Period::Month, limit);
    let admitted = Arc::new(AtomicU64::new(0));
    let from_lease = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (ri, limits) in replicas.iter().enumerate() {
        for t in 0..3 {
            let (limits, scope) = (limits.clone(), scope.clone());
            let (admitted, from_lease) = (admitted.clone(), from_lease.clone());
            tasks.push(tokio::spawn(async move {
                let mut misses = 0;
                for i in 0.. {
                    let id = format!("r{ri}-{t}-{i}");
                    match limits
                        .reserve(std::slice::from_ref(&scope), &id, amount)
                        .await
                    {
                        Ok(r) => {
                            misses = 0;
                            admitted.fetch_add(1, Ordering::Relaxed);
                            if r.lease_id().is_some() {
                                from_lease.fetch_add(1, Ordering::Relaxed);
                            }
                            tokio::task::yield_now().await;
                            assert_eq!(
                                limits.settle(&r, amount).await.unwrap(),
                                Finalized::Applied
                            );
                        }
                        Err(BudgetError::Exceeded { .. }) => {
                            // Other replicas may still hold lease money: try a few times.
                            misses += 1;
                            if misses > 20 {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
    }
    // Meanwhile the invariant spent + reserved <= limit holds at every look.
    let watcher = {
        let limits = replicas[0].clone();
        let scope = scope.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                let st = limits.spent(&scope).await.unwrap();
                assert!(
                    st.spent_micros + st.reserved_micros <= limit,
                    "overrun: {st:?}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    watcher.await.unwrap();
    let st = replicas[0].spent(&scope).await.unwrap();
    assert!(st.spent_micros <= limit, "{st:?}");
    let admitted = admitted.load(Ordering::Relaxed);
    assert_eq!(st.spent_micros, i64::try_from(admitted).unwrap() * amount);
    cleanup(&url, &prefix).await;
    (
        admitted,
        from_lease.load(Ordering::Relaxed),
        u64::try_from(limit / amount).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_reservations_never_exceed_the_limit_across_three_replicas() {
    let test = "leased_reservations_never_exceed_the_limit_across_three_replicas";
    if redis_url(test).is_none() {
        return;
    }
    let (admitted, from_lease, max) = run_three_replicas("lease3", 20_000_000, 10_000).await;
    eprintln!("{admitted} admitted of at most {max}, {from_lease} from leases");
    assert!(admitted <= 2000);
    assert!(
        from_lease > admitted / 4,
        "leases were used: {from_lease} of {admitted}"
    );
    // Lease money not used at the end is stranded until its lease retires: bounded.
    assert!(admitted >= max * 8 / 10, "{admitted} admitted of {max}");
}

/// Budget $1, requests reserving $0.01, 3 replicas with leases: at most 100 admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_dollar_budget_admits_at_most_one_hundred_cents_with_leases() {
    let test = "a_one_dollar_budget_admits_at_most_one_hundred_cents_with_leases";
    if redis_url(test).is_none() {
        return;
    }
    let (admitted, from_lease, max) = run_three_replicas("lease1usd", 1_000_000, 10_000).await;
    eprintln!("{admitted} admitted of at most {max}, {from_lease} from leases");
    assert!(admitted <= 100);
}

/// Settle, release and their replays behave for a leased reservation as for an exact one.
#[tokio::test]
async fn leased_settle_release_and_replays() {
    let Some(url) = redis_url("leased_settle_release_and_replays") else {
        return;
    };
    let prefix = unique_prefix("lsr");
    let spend = TestSpend::new();
    let a = Limits::connect(&url, lease_opts(&prefix), spend.clone())
        .await
        .unwrap();
    let b = Limits::connect(&url, lease_opts(&prefix), spend.clone())
        .await
        .unwrap();
    let scope = BudgetScope::new("key:lsr", Period::Day, 100_000_000);
    let (r, mut spent) = leased(&a, &scope, "w", 10_000).await;
    let lease = r.lease_id().unwrap().to_owned();
    assert!(lease.starts_with("lease:"));
    // The lease holds the request's part in Redis: the status counts it as reserved.
    let st = a.spent(&scope).await.unwrap();
    assert!(st.reserved_micros >= 10_000, "{st:?}");
    assert_eq!(st.spent_micros, spent);

    // Settle charges the actual cost once, from any replica; replays change nothing.
    assert_eq!(a.settle(&r, 7_000).await.unwrap(), Finalized::Applied);
    spent += 7_000;
    assert_eq!(
        a.settle(&r, 7_000).await.unwrap(),
        Finalized::AlreadySettled
    );
    assert_eq!(
        b.settle(&r, 7_000).await.unwrap(),
        Finalized::AlreadySettled
    );
    assert_eq!(a.release(&r).await.unwrap(), Finalized::AlreadySettled);
    assert_eq!(a.spent(&scope).await.unwrap().spent_micros, spent);

    // Release drops the request (its part goes back to the lease); a later settle is ignored.
    let r2 = a
        .reserve(std::slice::from_ref(&scope), "rel", 10_000)
        .await
        .unwrap();
    assert!(r2.lease_id().is_some(), "still leased");
    assert_eq!(a.release(&r2).await.unwrap(), Finalized::Applied);
    assert_eq!(a.release(&r2).await.unwrap(), Finalized::AlreadyReleased);
    assert_eq!(
        a.settle(&r2, 9_000).await.unwrap(),
        Finalized::AlreadyReleased
    );
    assert_eq!(a.spent(&scope).await.unwrap().spent_micros, spent);

    // A finalized id cannot be reserved again through the store.
    assert!(matches!(
        b.reserve(std::slice::from_ref(&scope), "rel", 10_000).await,
        Err(BudgetError::AlreadyFinalized { .. })
    ));
    cleanup(&url, &prefix).await;
}

/// FLUSHDB while leases are live: the counters are re-seeded from the ledger with no holds, so
/// the lease is not backed any more. The replica retires it on the first settlement that
/// finds its hold gone, or at its next validation; admissions against the lost lease are
/// bounded by what it had available at the flush.
#[tokio::test]
async fn a_lease_lost_in_a_flush_is_retired_and_the_overrun_is_bounded() {
    let Some(url) = redis_url("a_lease_lost_in_a_flush_is_retired_and_the_overrun_is_bounded")
    else {
        return;
    };
    let url = with_db(&url, 14);
    let prefix = unique_prefix("lflush");
    let spend = TestSpend::new();
    let a = Limits::connect(&url, lease_opts(&prefix), spend.clone())
        .await
        .unwrap();
    let b = Limits::connect(&url, lease_opts(&prefix), spend.clone())
        .await
        .unwrap();
    let limit = 4_000_000;
    let amount = 10_000;
    let scope = BudgetScope::new("key:lflush", Period::Month, limit);
    let (ra, settled_a) = leased(&a, &scope, "wa", amount).await;
    let (rb, settled_b) = leased(&b, &scope, "wb", amount).await;
    let (lease_a, lease_b) = (
        ra.lease_id().unwrap().to_owned(),
        rb.lease_id().unwrap().to_owned(),
    );
    b.settle(&rb, amount).await.unwrap();
    // The ledger has everything settled, and `ra`'s cost, settled below.
    let ledger = settled_a + settled_b + 2 * amount;
    spend.set("key:lflush", ledger);

    let mut conn = raw_conn(&url).await;
    let () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();

    // Replica a: the settlement finds the lease's hold gone and retires the lease at once.
    assert_eq!(a.settle(&ra, amount).await.unwrap(), Finalized::Applied);
    let next = a
        .reserve(std::slice::from_ref(&scope), "a-after", amount)
        .await
        .unwrap();
    assert_ne!(
        next.lease_id(),
        Some(lease_a.as_str()),
        "retired on lease_lost"
    );
    let mut admitted = amount;

    // Replica b: no settlement tells it; its validation does. Reserve (never settle) until
    // the budget is exhausted.
    let mut from_lost = 0i64;
    let t_flush = Instant::now();
    let mut last_lost_use = Duration::ZERO;
    for i in 0.. {
        match b
            .reserve(std::slice::from_ref(&scope), &format!("b-{i}"), amount)
            .await
        {
            Ok(r) => {
                admitted += amount;
                assert_ne!(r.lease_id(), Some(lease_a.as_str()));
                if r.lease_id() == Some(lease_b.as_str()) {
                    from_lost += amount;
                    last_lost_use = t_flush.elapsed();
                }
            }
            Err(BudgetError::Exceeded { .. }) => break,
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!(
        "after the flush: {admitted} admitted, {from_lost} from the lost lease (last use {last_lost_use:?})"
    );
    // A lease is at most 64 requests: the unbacked part is at most one lease per replica.
    assert!(from_lost <= 64 * amount, "{from_lost}");
    // The lost lease stops being used within two validation intervals (plus scheduling).
    assert!(
        last_lost_use < Duration::from_millis(1_000),
        "{last_lost_use:?}"
    );
    // Overrun bound: what Redis admitted after the re-seed is exact; only the lost leases'
    // availability comes on top.
    assert!(
        ledger + admitted <= limit + from_lost,
        "{ledger} + {admitted} > {limit} + {from_lost}"
    );
    let st = b.spent(&scope).await.unwrap();
    assert!(st.spent_micros + st.reserved_micros <= limit, "{st:?}");
    cleanup(&url, &prefix).await;
}

/// A replica that crashes (dropped without releasing) leaves its lease's hold in Redis:
/// money held, never overspent; the hold expires after the reservation ttl.
#[tokio::test]
async fn a_crashed_replicas_lease_holds_until_the_reservation_ttl() {
    let Some(url) = redis_url("a_crashed_replicas_lease_holds_until_the_reservation_ttl") else {
        return;
    };
    let prefix = unique_prefix("lcrash");
    let o = LimitsOptions {
        reservation_ttl: Duration::from_secs(3),
        ..lease_opts(&prefix)
    };
    let spend = TestSpend::new();
    let scope = BudgetScope::new("key:lcrash", Period::Month, 100_000_000);
    let observer = Limits::connect(&url, opts(&prefix), spend.clone())
        .await
        .unwrap();
    let settled = {
        let crashing = Limits::connect(&url, o, spend.clone()).await.unwrap();
        let (_r, settled) = leased(&crashing, &scope, "c", 10_000).await;
        settled
        // dropped here: nothing released or settled
    };
    let t_drop = Instant::now();
    let st = observer.spent(&scope).await.unwrap();
    assert_eq!(st.spent_micros, settled);
    assert!(
        st.reserved_micros >= 40_000,
        "the lease is still held: {st:?}"
    );
    // A lease is at most max_age (capped at ttl / 2) old when used; its hold lives ttl.
    tokio::time::sleep(Duration::from_millis(3_200).saturating_sub(t_drop.elapsed())).await;
    let mut reclaimed = false;
    for _ in 0..40 {
        let st = observer.spent(&scope).await.unwrap();
        if st.reserved_micros == 0 {
            assert_eq!(st.spent_micros, settled);
            reclaimed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reclaimed, "the crashed replica's lease hold expired");
    cleanup(&url, &prefix).await;
}

/// With budget leases disabled every reservation is made in Redis, as before.
#[tokio::test]
async fn lease_max_age_zero_reserves_exactly() {
    let Some(url) = redis_url("lease_max_age_zero_reserves_exactly") else {
        return;
    };
    let prefix = unique_prefix("lzero");
    let o = LimitsOptions {
        lease_max_age: Duration::ZERO,
        ..lease_opts(&prefix)
    };
    let limits = Limits::connect(&url, o, TestSpend::new()).await.unwrap();
    let scope = BudgetScope::new("key:lzero", Period::Month, 100_000_000);
    let total = AtomicI64::new(0);
    for i in 0..200 {
        let r = limits
            .reserve(std::slice::from_ref(&scope), &format!("z{i}"), 10_000)
            .await
            .unwrap();
        assert!(r.lease_id().is_none());
        limits.settle(&r, 10_000).await.unwrap();
        total.fetch_add(10_000, Ordering::Relaxed);
    }
    let st = limits.spent(&scope).await.unwrap();
    assert_eq!(
        (st.spent_micros, st.reserved_micros),
        (total.load(Ordering::Relaxed), 0)
    );
    cleanup(&url, &prefix).await;
}

/// Three instances send 5 000 attempts per second for ~2.5 s to one limiter of `per_minute`
/// (and `burst`); returns (admitted, admitted from a lease, the bound r·(T + ttl) + b, r·T).
async fn rate_run(
    url: &str,
    test: &str,
    ttl: Duration,
    per_minute: u64,
    burst: u64,
) -> (f64, u64, f64, f64) {
    let prefix = unique_prefix(test);
    let check =
        kairos_limits::RateCheck::new(format!("key:{test}:rpm"), per_minute, 1).with_burst(burst);
    let mut limits = Vec::new();
    for _ in 0..3 {
        let o = LimitsOptions {
            rate_lease_ttl: ttl,
            ..opts(&prefix)
        };
        limits.push(Limits::connect(url, o, TestSpend::new()).await.unwrap());
    }
    let mut conn = raw_conn(url).await;
    let admitted = Arc::new(AtomicU64::new(0));
    let leased = Arc::new(AtomicU64::new(0));
    let t0 = common::redis_time_us(&mut conn).await;
    let deadline = Instant::now() + Duration::from_millis(2_500);
    let mut tasks = Vec::new();
    for l in &limits {
        for _ in 0..5 {
            let (l, check) = (l.clone(), check.clone());
            let (admitted, leased) = (admitted.clone(), leased.clone());
            tasks.push(tokio::spawn(async move {
                // 15 tasks, one attempt every 3 ms each: 5 000 attempts per second.
                let mut tick = tokio::time::interval(Duration::from_millis(3));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while Instant::now() < deadline {
                    tick.tick().await;
                    let d = l.check_rates(std::slice::from_ref(&check)).await;
                    assert_eq!(d.backend, kairos_limits::Backend::Redis, "no fallback");
                    if d.allowed {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        if d.leased {
                            leased.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let t1 = common::redis_time_us(&mut conn).await;
    cleanup(url, &prefix).await;
    let secs = (t1 - t0) as f64 / 1e6;
    let rate = per_minute as f64 / 60.0;
    (
        admitted.load(Ordering::Relaxed) as f64,
        leased.load(Ordering::Relaxed),
        rate * (secs + ttl.as_secs_f64()) + burst as f64,
        rate * secs,
    )
}

/// Rate leases: declared slack of one ttl. Three replicas at 5x a limit of 1 000/s (burst
/// 50): over the run, admitted ≤ r·(T + ttl) + b across replicas. (At saturation a lease
/// rarely fits in the bucket: decisions are mostly exact.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_leases_admit_at_most_rate_times_run_plus_ttl_plus_burst() {
    let test = "rate_leases_admit_at_most_rate_times_run_plus_ttl_plus_burst";
    let Some(url) = redis_url(test) else {
        return;
    };
    let ttl = Duration::from_millis(20);
    let (admitted, leased, bound, rt) = rate_run(&url, "rlease", ttl, 60_000, 50).await;
    eprintln!("rate leases: {admitted} admitted ({leased} from leases), bound {bound}, r·T {rt}");
    assert!(admitted <= bound, "{admitted} > r·(T + ttl) + b = {bound}");
    assert!(admitted >= 0.8 * rt, "{admitted} < 0.8·r·T = {}", 0.8 * rt);

    // Below the limit (5 000/s against 10 000/s) most decisions come from leases, and the
    // bound still holds.
    let (admitted, leased, bound, _) = rate_run(&url, "rlease2", ttl, 600_000, 200).await;
    eprintln!(
        "rate leases below the limit: {admitted} admitted ({leased} from leases), bound {bound}"
    );
    assert!(admitted <= bound);
    assert!(
        leased as f64 > admitted / 2.0,
        "{leased} of {admitted} from leases"
    );
}

/// `rate_lease_ttl = 0`: every decision is the exact Redis script, bound r·T + b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_lease_ttl_zero_is_exact() {
    let test = "rate_lease_ttl_zero_is_exact";
    let Some(url) = redis_url(test) else {
        return;
    };
    let (admitted, leased, bound, rt) = rate_run(&url, "rzero", Duration::ZERO, 60_000, 50).await;
    eprintln!("no rate leases: {admitted} admitted, bound {bound}, r·T {rt}");
    assert_eq!(leased, 0);
    assert!(admitted <= bound, "{admitted} > r·T + b = {bound}");
    assert!(admitted >= 0.8 * rt);
}
