//! Rate limits against a real Redis (`KAIROS_TEST_REDIS_URL`; skipped when unset).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestSpend, opts, raw_conn, redis_time_us, redis_url, unique_prefix};
use kairos_limits::{Backend, Limits, RateCheck};
use tokio::time::MissedTickBehavior;

async fn replicas(url: &str, prefix: &str, n: usize) -> Vec<Limits> {
    let mut out = Vec::new();
    for _ in 0..n {
        // Each instance has its own connection, like a replica.
        out.push(
            Limits::connect(url, opts(prefix), TestSpend::new())
                .await
                .unwrap(),
        );
    }
    out
}

/// R1 across replicas: three instances hammer one limiter at 5x its rate for ~2.5 s. The
/// admitted count is at most r·T + b, with T measured on the Redis clock around the run, and
/// at least 0.9·r·T.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_three_replicas_never_admit_more_than_rate_plus_burst() {
    let Some(url) = redis_url("r1_three_replicas_never_admit_more_than_rate_plus_burst") else {
        return;
    };
    let prefix = unique_prefix("r1");
    let per_minute: u64 = 3_000; // 50 per second
    let burst: u64 = 10;
    let check = RateCheck::new("key:r1:rpm", per_minute, 1).with_burst(burst);
    let limits = replicas(&url, &prefix, 3).await;
    let mut conn = raw_conn(&url).await;

    let admitted = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let tasks_per_replica = 5;
    // 5 × 50/s = 250 attempts per second over 15 tasks: one every 60 ms per task.
    let period = Duration::from_millis(60);
    let t0 = redis_time_us(&mut conn).await;
    let deadline = Instant::now() + Duration::from_millis(2_500);
    let mut tasks = Vec::new();
    for l in &limits {
        for _ in 0..tasks_per_replica {
            let l = l.clone();
            let check = check.clone();
            let admitted = admitted.clone();
            let attempts = attempts.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                while Instant::now() < deadline {
                    tick.tick().await;
                    let d = l.check_rates(std::slice::from_ref(&check)).await;
                    assert_eq!(d.backend, Backend::Redis, "no fallback in this test");
                    attempts.fetch_add(1, Ordering::Relaxed);
                    if d.allowed {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let t1 = redis_time_us(&mut conn).await;
    let secs = (t1 - t0) as f64 / 1e6;
    let rate = per_minute as f64 / 60.0;
    let admitted = admitted.load(Ordering::Relaxed) as f64;
    let attempts = attempts.load(Ordering::Relaxed) as f64;
    let upper = rate * secs + burst as f64;
    let lower = 0.9 * rate * secs;
    assert!(
        admitted <= upper,
        "admitted {admitted} > r·T + b = {upper} (T = {secs} s)"
    );
    assert!(
        admitted >= lower,
        "admitted {admitted} < 0.9·r·T = {lower} (T = {secs} s, {attempts} attempts)"
    );
    assert!(
        attempts > 2.0 * admitted,
        "the limiter was really overloaded"
    );
}

/// A decision that fails on one limiter charges none of them (atomic multi-limiter check),
/// and the denial carries retry-after and the RateLimit headers.
#[tokio::test]
async fn a_denied_multi_limiter_check_charges_nothing() {
    let Some(url) = redis_url("a_denied_multi_limiter_check_charges_nothing") else {
        return;
    };
    let prefix = unique_prefix("multi");
    let limits = replicas(&url, &prefix, 2).await;
    // One unit per minute: nothing regenerates during the test.
    let key_rpm = RateCheck::new("key:k1:rpm", 1, 1).with_burst(10);
    let ws_rpm = RateCheck::new("ws:w1:rpm", 1, 1).with_burst(1);
    let key_tpm = RateCheck::new("key:k1:tpm", 1, 500).with_burst(1_000);

    let d = limits[0]
        .check_rates(&[key_rpm.clone(), ws_rpm.clone(), key_tpm.clone()])
        .await;
    assert!(d.allowed);
    assert_eq!(d.backend, Backend::Redis);
    assert_eq!(
        d.limiters.iter().map(|l| l.remaining).collect::<Vec<_>>(),
        vec![9, 0, 500]
    );

    // From the other replica: the workspace limiter is exhausted.
    let d = limits[1]
        .check_rates(&[key_rpm.clone(), ws_rpm.clone(), key_tpm.clone()])
        .await;
    assert!(!d.allowed);
    assert!(d.limiters[0].allowed && !d.limiters[1].allowed && d.limiters[2].allowed);
    let wait = d.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    let headers = d.headers();
    assert_eq!(headers[0], ("RateLimit-Limit", "1".to_owned()));
    assert_eq!(headers[1], ("RateLimit-Remaining", "0".to_owned()));
    let retry: u64 = headers
        .iter()
        .find(|(n, _)| *n == "Retry-After")
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert!((56..=60).contains(&retry), "{retry}");

    // Neither the key RPM nor the key TPM limiter was charged by the denial: 9 requests and
    // 500 tokens are still there, exactly.
    for _ in 0..9 {
        assert!(
            limits[1]
                .check_rates(std::slice::from_ref(&key_rpm))
                .await
                .allowed
        );
    }
    assert!(
        !limits[0]
            .check_rates(std::slice::from_ref(&key_rpm))
            .await
            .allowed
    );
    let tpm_500 = RateCheck::new("key:k1:tpm", 1, 500).with_burst(1_000);
    assert!(
        limits[0]
            .check_rates(std::slice::from_ref(&tpm_500))
            .await
            .allowed
    );
    let tpm_1 = RateCheck::new("key:k1:tpm", 1, 1).with_burst(1_000);
    assert!(
        !limits[0]
            .check_rates(std::slice::from_ref(&tpm_1))
            .await
            .allowed
    );
}

/// R4: TPM post-correction in Redis gives back and charges, never below a full bucket.
#[tokio::test]
async fn tpm_adjust_moves_the_shared_tat() {
    let Some(url) = redis_url("tpm_adjust_moves_the_shared_tat") else {
        return;
    };
    let prefix = unique_prefix("adjust");
    let limits = replicas(&url, &prefix, 2).await;
    let tpm = |cost| RateCheck::new("key:k:tpm", 1, cost).with_burst(1_000);

    assert!(limits[0].check_rates(&[tpm(1_000)]).await.allowed);
    assert!(!limits[1].check_rates(&[tpm(1)]).await.allowed);
    // Estimated 1 000, used 400: give 600 back (from the other replica).
    limits[1].adjust_rate("key:k:tpm", 1, -600).await;
    assert!(limits[0].check_rates(&[tpm(600)]).await.allowed);
    assert!(!limits[0].check_rates(&[tpm(1)]).await.allowed);
    // Giving back more than was charged only empties the bucket.
    limits[0].adjust_rate("key:k:tpm", 1, -1_000_000).await;
    assert!(limits[1].check_rates(&[tpm(1_000)]).await.allowed);
    assert!(!limits[1].check_rates(&[tpm(1)]).await.allowed);
    // Used 5 more than estimated: charged, to be waited out (5 + 1 minutes at 1/min).
    limits[0].adjust_rate("key:k:tpm", 1, 5).await;
    let d = limits[0].check_rates(&[tpm(1)]).await;
    let wait = d.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(355) && wait <= Duration::from_secs(360),
        "{wait:?}"
    );
}

/// A11: the limiter's key holds only its TAT, on the Redis clock, and expires when the bucket
/// is full again.
#[tokio::test]
async fn the_limiter_key_holds_only_a_tat_on_the_redis_clock() {
    let Some(url) = redis_url("the_limiter_key_holds_only_a_tat_on_the_redis_clock") else {
        return;
    };
    let prefix = unique_prefix("tat");
    let limits = replicas(&url, &prefix, 1).await;
    let mut conn = raw_conn(&url).await;
    let before = redis_time_us(&mut conn).await;
    // 60 per minute: a request adds exactly 1 s.
    let d = limits[0]
        .check_rates(&[RateCheck::new("k", 60, 1).with_burst(5)])
        .await;
    assert!(d.allowed);
    let after = redis_time_us(&mut conn).await;
    let key = format!("{prefix}rl:k");
    let kind: String = redis::cmd("TYPE")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "string");
    let tat: u64 = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        tat >= before + 1_000_000 && tat <= after + 1_000_000,
        "TAT {tat} not in Redis time [{before}, {after}] + 1 s"
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= 2_000, "{pttl}");
}

/// The replicas' shared short-lived memory: one replica's write is the next one's previous
/// value, a read does not change it, it expires after its TTL, and a local-only instance has
/// none.
#[tokio::test]
async fn shared_memory_is_seen_by_every_replica_and_expires() {
    let Some(url) = redis_url("shared_memory_is_seen_by_every_replica_and_expires") else {
        return;
    };
    let prefix = unique_prefix("mem");
    let limits = replicas(&url, &prefix, 2).await;
    let ttl = Duration::from_millis(300);
    assert_eq!(
        limits[0].shared_swap("k", Some(b"one"), ttl).await,
        Some(None)
    );
    assert_eq!(
        limits[1].shared_swap("k", None, ttl).await,
        Some(Some(b"one".to_vec()))
    );
    assert_eq!(
        limits[1].shared_swap("k", Some(b"two"), ttl).await,
        Some(Some(b"one".to_vec()))
    );
    assert_eq!(
        limits[0].shared_swap("k", None, ttl).await,
        Some(Some(b"two".to_vec()))
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(limits[0].shared_swap("k", None, ttl).await, Some(None));
    let local = Limits::local_only(opts(&prefix), TestSpend::new());
    assert_eq!(local.shared_swap("k", Some(b"x"), ttl).await, None);
    common::cleanup(&url, &prefix).await;
}
