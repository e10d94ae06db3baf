//! Budgets against a real Redis (`KAIROS_TEST_REDIS_URL`; skipped when unset).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestSpend, cleanup, opts, raw_conn, redis_url, unique_prefix, with_db15};
use kairos_limits::{Backend, BudgetError, BudgetScope, Finalized, Limits, Period};

/// A1: a $1 budget, 200 concurrent reservations of 1 cent through 3 replicas released
/// together by a barrier: exactly 100 are admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_concurrent_reservations_across_replicas_admit_exactly_the_budget() {
    let Some(url) =
        redis_url("a1_concurrent_reservations_across_replicas_admit_exactly_the_budget")
    else {
        return;
    };
    let prefix = unique_prefix("a1");
    let spend = TestSpend::new();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            Limits::connect(&url, opts(&prefix), spend.clone())
                .await
                .unwrap(),
        );
    }
    let scope = BudgetScope::new("ws:a1", Period::Month, 1_000_000);
    let barrier = Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let limits = replicas[i % 3].clone();
        let scope = scope.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            limits.reserve(&[scope], &format!("req-{i}"), 10_000).await
        }));
    }
    let (mut ok, mut exceeded) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.backend(), Backend::Redis);
                ok += 1;
            }
            Err(BudgetError::Exceeded {
                remaining_micros, ..
            }) => {
                assert_eq!(remaining_micros, 0);
                exceeded += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, exceeded), (100, 100));
    let st = replicas[0].spent(&scope).await.unwrap();
    assert_eq!(
        (st.spent_micros, st.reserved_micros, st.remaining_micros),
        (0, 1_000_000, 0)
    );
    // Concurrent first use seeded once per racing replica at most, and they agreed.
    assert!(!spend.calls().is_empty());
}

/// A8: replaying a settlement (from any replica) charges once; release drops the hold and a
/// later settlement of the same request is ignored; a finalized id cannot reserve again.
#[tokio::test]
async fn a8_settle_is_idempotent_and_release_drops_the_hold() {
    let Some(url) = redis_url("a8_settle_is_idempotent_and_release_drops_the_hold") else {
        return;
    };
    let prefix = unique_prefix("a8");
    let spend = TestSpend::new();
    let a = Limits::connect(&url, opts(&prefix), spend.clone())
        .await
        .unwrap();
    let b = Limits::connect(&url, opts(&prefix), spend.clone())
        .await
        .unwrap();
    let key = BudgetScope::new("key:8", Period::Day, 1_000_000);
    let ws = BudgetScope::new("ws:8", Period::Lifetime, 5_000_000);
    let scopes = [key.clone(), ws.clone()];

    let r = a.reserve(&scopes, "req-1", 200_000).await.unwrap();
    assert_eq!(r.scopes()[0].remaining_micros, 800_000);
    assert_eq!(r.scopes()[1].remaining_micros, 4_800_000);
    assert_eq!(a.settle(&r, 120_000).await.unwrap(), Finalized::Applied);
    assert_eq!(
        b.settle(&r, 120_000).await.unwrap(),
        Finalized::AlreadySettled
    );
    assert_eq!(
        a.settle(&r, 999_999).await.unwrap(),
        Finalized::AlreadySettled
    );
    for s in &scopes {
        let st = b.spent(s).await.unwrap();
        assert_eq!(
            (st.spent_micros, st.reserved_micros),
            (120_000, 0),
            "{}",
            s.id
        );
    }
    assert!(matches!(
        b.reserve(&scopes, "req-1", 1).await,
        Err(BudgetError::AlreadyFinalized { .. })
    ));

    let r2 = b.reserve(&scopes, "req-2", 300_000).await.unwrap();
    assert_eq!(a.spent(&key).await.unwrap().reserved_micros, 300_000);
    assert_eq!(a.release(&r2).await.unwrap(), Finalized::Applied);
    assert_eq!(b.release(&r2).await.unwrap(), Finalized::AlreadyReleased);
    assert_eq!(
        b.settle(&r2, 50_000).await.unwrap(),
        Finalized::AlreadyReleased
    );
    let st = a.spent(&key).await.unwrap();
    assert_eq!(
        (st.spent_micros, st.reserved_micros, st.remaining_micros),
        (120_000, 0, 880_000)
    );

    // Reserving again under the same id (before finalization) replaces the amount.
    let r3 = a.reserve(&scopes, "req-3", 100_000).await.unwrap();
    let r3 = b.reserve(&scopes, r3.request_id(), 40_000).await.unwrap();
    assert_eq!(a.spent(&key).await.unwrap().reserved_micros, 40_000);
    assert_eq!(a.settle(&r3, 40_000).await.unwrap(), Finalized::Applied);
    assert_eq!(a.spent(&key).await.unwrap().spent_micros, 160_000);
    cleanup(&url, &prefix).await;
}

/// Reservations are all-or-nothing across scopes, and the failing scope is named.
#[tokio::test]
async fn a_reservation_failing_in_one_scope_holds_nothing_anywhere() {
    let Some(url) = redis_url("a_reservation_failing_in_one_scope_holds_nothing_anywhere") else {
        return;
    };
    let prefix = unique_prefix("allornothing");
    let limits = Limits::connect(&url, opts(&prefix), TestSpend::new())
        .await
        .unwrap();
    let key = BudgetScope::new("key:x", Period::Month, 1_000_000);
    let ws = BudgetScope::new("ws:x", Period::Day, 100_000);
    match limits
        .reserve(&[key.clone(), ws.clone()], "r", 150_000)
        .await
    {
        Err(BudgetError::Exceeded {
            scope_id,
            period,
            limit_micros,
            remaining_micros,
        }) => {
            assert_eq!(
                (scope_id.as_str(), period, limit_micros, remaining_micros),
                ("ws:x", Period::Day, 100_000, 100_000)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(limits.spent(&key).await.unwrap().reserved_micros, 0);
    assert_eq!(limits.spent(&ws).await.unwrap().reserved_micros, 0);
}

/// A9: Redis is a cache. After a flush (Redis restart) the next reservation re-seeds from the
/// ledger: the remaining budget is what the ledger says, never a fresh full budget.
/// Runs on logical database 15 and flushes only that database (FLUSHDB), so tests using
/// database 0 in parallel are untouched.
#[tokio::test]
async fn a9_after_a_flush_counters_are_reseeded_from_the_ledger() {
    let Some(url) = redis_url("a9_after_a_flush_counters_are_reseeded_from_the_ledger") else {
        return;
    };
    let url = with_db15(&url);
    let prefix = unique_prefix("a9");
    let spend = TestSpend::new();
    spend.set("key:9", 250_000);
    let limits = Limits::connect(&url, opts(&prefix), spend.clone())
        .await
        .unwrap();
    let scope = BudgetScope::new("key:9", Period::Month, 1_000_000);

    let r = limits
        .reserve(std::slice::from_ref(&scope), "r1", 100_000)
        .await
        .unwrap();
    assert_eq!(r.scopes()[0].remaining_micros, 650_000);
    assert_eq!(spend.calls().len(), 1);
    let period_start = r.scopes()[0].period_start_unix_s;
    assert_eq!(spend.calls()[0], ("key:9".to_owned(), period_start));
    assert_eq!(
        limits.settle(&r, 150_000).await.unwrap(),
        Finalized::Applied
    );
    assert_eq!(limits.spent(&scope).await.unwrap().spent_micros, 400_000);

    // Redis loses everything. The ledger has the 400 000 (it is the system of record).
    let mut conn = raw_conn(&url).await;
    let () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    spend.set("key:9", 400_000);

    // 700 000 would fit a budget wrongly reset to 0; it must not.
    assert!(matches!(
        limits
            .reserve(std::slice::from_ref(&scope), "r2", 700_000)
            .await,
        Err(BudgetError::Exceeded {
            remaining_micros: 600_000,
            ..
        })
    ));
    assert_eq!(spend.calls().len(), 2, "re-seeded once");
    assert_eq!(spend.calls()[1], ("key:9".to_owned(), period_start));
    let r3 = limits
        .reserve(std::slice::from_ref(&scope), "r3", 600_000)
        .await
        .unwrap();
    assert_eq!(r3.scopes()[0].remaining_micros, 0);
    let st = limits.spent(&scope).await.unwrap();
    assert_eq!(
        (st.spent_micros, st.reserved_micros, st.remaining_micros),
        (400_000, 600_000, 0)
    );
    assert_eq!(
        spend.calls().len(),
        2,
        "the seeded counter is used from then on"
    );
}

/// A seeded counter is not overwritten by a late seeder (SET NX semantics): two replicas that
/// both saw the counter missing agree on the first value.
#[tokio::test]
async fn concurrent_seeders_agree_on_the_first_value() {
    let Some(url) = redis_url("concurrent_seeders_agree_on_the_first_value") else {
        return;
    };
    let prefix = unique_prefix("seed");
    let first = TestSpend::new();
    first.set("ws:s", 300_000);
    let late = TestSpend::new();
    late.set("ws:s", 0);
    let a = Limits::connect(&url, opts(&prefix), first.clone())
        .await
        .unwrap();
    let b = Limits::connect(&url, opts(&prefix), late.clone())
        .await
        .unwrap();
    let scope = BudgetScope::new("ws:s", Period::Day, 1_000_000);
    assert_eq!(a.spent(&scope).await.unwrap().spent_micros, 300_000);
    // `b` finds the counter: it never asks its (disagreeing) ledger.
    assert_eq!(b.spent(&scope).await.unwrap().spent_micros, 300_000);
    assert!(late.calls().is_empty());
}

/// Expired reservations are reclaimed by the next script run, and a late settlement of an
/// expired reservation still charges its actual cost, once.
#[tokio::test]
async fn expired_reservations_are_reclaimed() {
    let Some(url) = redis_url("expired_reservations_are_reclaimed") else {
        return;
    };
    let prefix = unique_prefix("expiry");
    let mut o = opts(&prefix);
    o.reservation_ttl = Duration::from_secs(1);
    let limits = Limits::connect(&url, o, TestSpend::new()).await.unwrap();
    let scope = BudgetScope::new("key:e", Period::Lifetime, 1_000_000);

    let stuck = limits
        .reserve(std::slice::from_ref(&scope), "stuck", 900_000)
        .await
        .unwrap();
    assert!(matches!(
        limits
            .reserve(std::slice::from_ref(&scope), "next", 200_000)
            .await,
        Err(BudgetError::Exceeded {
            remaining_micros: 100_000,
            ..
        })
    ));
    // Wait out the 1 s expiry (a wait for a deadline, not a timing assertion).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let st = limits.spent(&scope).await.unwrap();
    assert_eq!((st.spent_micros, st.reserved_micros), (0, 0));
    let next = limits
        .reserve(std::slice::from_ref(&scope), "next", 200_000)
        .await
        .unwrap();
    assert_eq!(next.scopes()[0].remaining_micros, 800_000);

    let mut conn = raw_conn(&url).await;
    let index_len: u64 = redis::cmd("ZCARD")
        .arg(format!("{prefix}bg:lifetime:0:rx:key:e"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(index_len, 1, "only `next` is indexed");

    assert_eq!(
        limits.settle(&stuck, 50_000).await.unwrap(),
        Finalized::Applied
    );
    assert_eq!(
        limits.settle(&stuck, 50_000).await.unwrap(),
        Finalized::AlreadySettled
    );
    let st = limits.spent(&scope).await.unwrap();
    assert_eq!((st.spent_micros, st.reserved_micros), (50_000, 200_000));
    cleanup(&url, &prefix).await;
}
