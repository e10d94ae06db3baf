//! Key lookup + admission for a virtual key (issue 5 target: ≤ 20 µs p50 with Redis on
//! loopback): `Gateway::authenticate` (hash + in-memory key table) followed by what
//! `spend::admit` asks Redis for a limited key: one rate decision over four GCRA limiters (key
//! and workspace RPM/TPM) and one budget reservation over two scopes (key and workspace).
//!
//! With the default `LimitsOptions`, a key in steady use is admitted against this replica's
//! budget and rate leases (in process); the Redis calls (lease refills, validation, the
//! settlement) happen off the admission path. A second run with leases disabled measures the
//! exact per-request path (one Redis script per decision).
//!
//! `KAIROS_BENCH_REDIS_URL=redis://127.0.0.1:6379 cargo bench -p kairos-core --bench admission`
//! (without it, only the Redis-free lookup and the in-process limiter are measured).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use kairos_core::catalog::Catalog;
use kairos_core::config::FileConfig;
use kairos_core::env::MapEnv;
use kairos_core::gateway::Gateway;
use kairos_core::tenancy::{KeyCache, generate_key, key_hash};
use kairos_limits::{BudgetScope, Limits, LimitsOptions, Period, RateCheck};
use kairos_store::{
    AuditEntry, KeyRecord, LedgerWriter, LedgerWriterConfig, Store, WorkspaceRecord,
};
use secrecy::SecretString;

fn audit() -> AuditEntry {
    AuditEntry {
        seq: 0,
        ts_ms: 0,
        actor: "bench".into(),
        workspace_id: None,
        action: "create".into(),
        object_type: "x".into(),
        object_id: "x".into(),
        before_json: None,
        after_json: None,
    }
}

struct Setup {
    gw: Gateway,
    key: String,
    key_id: String,
    ws_id: String,
}

fn setup(rt: &tokio::runtime::Runtime) -> Setup {
    let env = MapEnv::from([("OPENAI_API_KEY", "sk-x")]);
    let cfg = FileConfig::from_env(&env).validate(&env).unwrap();
    rt.block_on(async {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let ws = WorkspaceRecord {
            id: "ws_bench".into(),
            name: "bench".into(),
            settings: r#"{"rpm":1000000000,"tpm":1000000000000,"budget":{"usd":1000000000,"period":"month"}}"#.into(),
            created_ms: 1,
            updated_ms: 1,
            deleted_ms: None,
        };
        store.upsert_workspace(&ws, &audit()).await.unwrap();
        let key = generate_key();
        let k = KeyRecord {
            id: "key_bench".into(),
            workspace_id: ws.id.clone(),
            name: "bench".into(),
            key_hash: key_hash(&key),
            key_prefix: key[..11].to_owned(),
            role: "member".into(),
            settings: r#"{"rpm":1000000000,"tpm":1000000000000,"budget":{"usd":1000000000,"period":"month"}}"#.into(),
            expires_ms: None,
            revoked_ms: None,
            created_ms: 1,
            updated_ms: 1,
        };
        store.upsert_key(&k, &audit()).await.unwrap();
        let (ledger, writer) = LedgerWriter::spawn(store.clone(), LedgerWriterConfig::default());
        std::mem::forget(writer);
        let mut gw = Gateway::new(
            &cfg,
            Catalog::builtin(),
            &SecretString::from("master-key-0123456789"),
            ledger,
        )
        .unwrap();
        gw.set_keys(KeyCache::load(store, None).await.unwrap());
        Setup {
            gw,
            key,
            key_id: k.id,
            ws_id: ws.id,
        }
    })
}

fn checks(s: &Setup) -> Vec<RateCheck> {
    vec![
        RateCheck::new(format!("key:{}:rpm", s.key_id), 1_000_000_000, 1),
        RateCheck::new(format!("key:{}:tpm", s.key_id), 1_000_000_000_000, 1200),
        RateCheck::new(format!("ws:{}:rpm", s.ws_id), 1_000_000_000, 1),
        RateCheck::new(format!("ws:{}:tpm", s.ws_id), 1_000_000_000_000, 1200),
    ]
}

fn scopes(s: &Setup) -> Vec<BudgetScope> {
    vec![
        BudgetScope::new(format!("key:{}", s.key_id), Period::Month, i64::MAX / 4),
        BudgetScope::new(format!("ws:{}", s.ws_id), Period::Month, i64::MAX / 4),
    ]
}

/// Median and p99 of `n` timed runs of `f` (criterion reports means; the target is a p50).
fn percentiles(rt: &tokio::runtime::Runtime, n: usize, mut f: impl FnMut() -> Duration) {
    let _ = rt;
    let mut v: Vec<Duration> = (0..n).map(|_| f()).collect();
    v.sort();
    eprintln!(
        "    p50 {:?}  p90 {:?}  p99 {:?}  (n = {n})",
        v[n / 2],
        v[n * 9 / 10],
        v[n * 99 / 100]
    );
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = setup(&rt);
    let spend: Arc<dyn kairos_limits::SpendSource> = Arc::new(kairos_limits::FnSpendSource(
        |_: BudgetScope, _: i64| async { Ok(0) },
    ));

    c.bench_function("authenticate (virtual key, in-memory table)", |b| {
        b.iter(|| rt.block_on(async { black_box(s.gw.authenticate(Some(&s.key)).await.unwrap()) }))
    });
    eprintln!("authenticate:");
    percentiles(&rt, 20_000, || {
        let t = Instant::now();
        rt.block_on(async { black_box(s.gw.authenticate(Some(&s.key)).await.unwrap()) });
        t.elapsed()
    });

    let local = Limits::local_only(LimitsOptions::default(), spend.clone());
    let mut n = 0u64;
    c.bench_function("authenticate + admission (in-process limits)", |b| {
        b.iter(|| {
            rt.block_on(async {
                n += 1;
                let p = s.gw.authenticate(Some(&s.key)).await.unwrap();
                let d = local.check_rates(&checks(&s)).await;
                let r = local
                    .reserve(&scopes(&s), &format!("r{n}"), 10_000)
                    .await
                    .unwrap();
                let _ = local.release(&r).await;
                black_box((p, d))
            })
        })
    });

    let Ok(url) = std::env::var("KAIROS_BENCH_REDIS_URL") else {
        eprintln!("KAIROS_BENCH_REDIS_URL unset: skipping the Redis benchmarks");
        return;
    };
    let redis = rt
        .block_on(Limits::connect(&url, LimitsOptions::default(), spend))
        .expect("redis");
    // Leases are taken for steady demand only (`lease_warmup`, 1 s by default): warm up for
    // 2 s so that the figures describe a key in steady use, as a hot key in production.
    let warm = Instant::now();
    let mut warm_n = 0u64;
    while warm.elapsed() < Duration::from_secs(2) {
        n += 1;
        warm_n += 1;
        let id = format!("bench-{n}");
        rt.block_on(async {
            let d = redis.check_rates(&checks(&s)).await;
            assert!(d.allowed);
            let r = redis.reserve(&scopes(&s), &id, 10_000).await.unwrap();
            redis.release(&r).await.unwrap();
        });
    }
    eprintln!("(warm-up: {warm_n} admissions in 2 s)");
    eprintln!("authenticate + rate decision + budget reservation (Redis on loopback, leases):");
    percentiles(&rt, 5_000, || {
        n += 1;
        let id = format!("bench-{n}");
        let t = Instant::now();
        let r = rt.block_on(async {
            let p = s.gw.authenticate(Some(&s.key)).await.unwrap();
            let d = redis.check_rates(&checks(&s)).await;
            assert!(d.allowed);
            let r = redis.reserve(&scopes(&s), &id, 10_000).await.unwrap();
            black_box(p);
            r
        });
        let e = t.elapsed();
        rt.block_on(async { redis.release(&r).await.unwrap() });
        e
    });
    let exact = rt
        .block_on(Limits::connect(
            &url,
            LimitsOptions {
                lease_max_age: Duration::ZERO,
                rate_lease_ttl: Duration::ZERO,
                ..LimitsOptions::default()
            },
            Arc::new(kairos_limits::FnSpendSource(
                |_: BudgetScope, _: i64| async { Ok(0) },
            )),
        ))
        .expect("redis");
    eprintln!("authenticate + rate decision + budget reservation (Redis on loopback, no leases):");
    percentiles(&rt, 2_000, || {
        n += 1;
        let id = format!("bench-{n}");
        let t = Instant::now();
        let r = rt.block_on(async {
            let p = s.gw.authenticate(Some(&s.key)).await.unwrap();
            let d = exact.check_rates(&checks(&s)).await;
            assert!(d.allowed);
            let r = exact.reserve(&scopes(&s), &id, 10_000).await.unwrap();
            black_box(p);
            r
        });
        let e = t.elapsed();
        rt.block_on(async { exact.release(&r).await.unwrap() });
        e
    });
    c.bench_function("authenticate + admission (Redis on loopback)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let id = format!("bench-{n}");
                let t = Instant::now();
                let r = rt.block_on(async {
                    let p = s.gw.authenticate(Some(&s.key)).await.unwrap();
                    let d = redis.check_rates(&checks(&s)).await;
                    let r = redis.reserve(&scopes(&s), &id, 10_000).await.unwrap();
                    black_box((p, d));
                    r
                });
                total += t.elapsed();
                rt.block_on(async { redis.release(&r).await.unwrap() });
            }
            total
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
