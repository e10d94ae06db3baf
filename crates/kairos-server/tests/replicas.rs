//! Scale-out for real (issue 5): three `kairos serve` processes on their own ports, sharing the
//! local PostgreSQL and Redis, behave as one gateway for keys, revocations, budgets and rate
//! limits. Skips (visibly) unless KAIROS_TEST_POSTGRES_URL and KAIROS_TEST_REDIS_URL are set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kairos_testkit::{Behavior, MockConfig, MockServer};
use serde_json::{Value, json};

const MASTER: &str = "kr-replicas-master-key-0123456789";

struct Replica {
    child: tokio::process::Child,
    url: String,
    admin: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn spawn_replica(
    dir: &std::path::Path,
    n: usize,
    db: &str,
    redis: &str,
    mock: &str,
) -> Replica {
    let (port, admin_port) = (free_port(), free_port());
    let cfg = dir.join(format!("kairos-{n}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
[storage]
data_dir = "{data}"
[auth]
master_key = "env:KAIROS_MASTER_KEY"
[logging]
level = "warn"
[resilience]
retry_attempts = 1
[providers.openai]
kind = "openai"
base_url = "{mock}/v1"
api_key = "env:OPENAI_API_KEY"
"#,
            data = dir.join(format!("data-{n}")).display(),
        ),
    )
    .unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_clear()
        .env("KAIROS_MASTER_KEY", MASTER)
        .env("OPENAI_API_KEY", "sk-replicas-test")
        .env("KAIROS_DATABASE_URL", db)
        .env("KAIROS_REDIS_URL", redis)
        .env("KAIROS_REDIS_TIMEOUT_MS", "2000")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kairos serve");
    let r = Replica {
        child,
        url: format!("http://127.0.0.1:{port}"),
        admin: format!("http://127.0.0.1:{admin_port}"),
    };
    let http = reqwest::Client::new();
    let t = Instant::now();
    loop {
        if let Ok(resp) = http.get(format!("{}/readyz", r.url)).send().await
            && resp.status() == 200
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "replica {n} not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r
}

async fn admin_post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let r = http
        .post(url)
        .bearer_auth(MASTER)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

async fn burst(urls: &[String], key: &str, n: usize, body: Value) -> Vec<u16> {
    let http = reqwest::Client::new();
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (http, url, key, body, barrier) = (
            http.clone(),
            urls[i % urls.len()].clone(),
            key.to_owned(),
            body.clone(),
            barrier.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// The test URLs (or a visible skip) and a fresh PostgreSQL schema for one test: (PostgreSQL
/// URL, Redis URL, schema, a database URL whose connections use the schema).
async fn backends(test: &str, prefix: &str) -> Option<(String, String, String, String)> {
    let (Ok(pg), Ok(redis)) = (
        std::env::var("KAIROS_TEST_POSTGRES_URL"),
        std::env::var("KAIROS_TEST_REDIS_URL"),
    ) else {
        eprintln!("SKIP {test}: KAIROS_TEST_POSTGRES_URL or KAIROS_TEST_REDIS_URL unset");
        return None;
    };
    let schema = format!(
        "{prefix}_{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    kairos_store::Store::connect_with_schema(&pg, &schema)
        .await
        .expect("postgres");
    let sep = if pg.contains('?') { '&' } else { '?' };
    let db = format!("{pg}{sep}options=-c%20search_path%3D{schema}");
    Some((pg, redis, schema, db))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_serve_processes_behave_as_one_gateway() {
    let Some((pg, redis, schema, db)) =
        backends("three_serve_processes_behave_as_one_gateway", "kt_replicas").await
    else {
        return;
    };
    let mock = MockServer::start(MockConfig {
        defaults: Behavior {
            headers_delay_ms: 500,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    for n in 1..=3 {
        replicas.push(spawn_replica(dir.path(), n, &db, &redis, &mock.url()).await);
    }
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    let http = reqwest::Client::new();

    // A workspace with a $1 budget and a key, created on replica 1.
    let ws = admin_post(
        &http,
        format!("{}/admin/v1/workspaces", replicas[0].admin),
        json!({"name": "team-a", "settings": {"budget": {"usd": 1.0, "period": "month"}}}),
    )
    .await;
    let ws = ws["id"].as_str().unwrap().to_owned();
    let k = admin_post(
        &http,
        format!("{}/admin/v1/workspaces/{ws}/keys", replicas[0].admin),
        json!({"name": "svc"}),
    )
    .await;
    let (key_id, key) = (
        k["id"].as_str().unwrap().to_owned(),
        k["key"].as_str().unwrap().to_owned(),
    );

    // A1: 200 concurrent requests reserving just over $0.01 each, over the three processes.
    let out = burst(
        &urls,
        &key,
        200,
        json!({"model": "gpt-4o", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let admitted = out.iter().filter(|s| **s == 200).count();
    let refused = out.iter().filter(|s| **s == 402).count();
    eprintln!(
        "A1 over 3 processes: {admitted} admitted, {refused} refused (402), mock calls {}",
        mock.call_count()
    );
    assert!(admitted <= 100);
    assert_eq!(admitted, 99, "{out:?}");
    assert_eq!(refused, 101, "{out:?}");
    assert_eq!(mock.call_count(), admitted);

    // Z3: revoked on replica 2, refused by every replica within the bound.
    let r = http
        .post(format!(
            "{}/admin/v1/keys/{key_id}/revoke",
            replicas[1].admin
        ))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = Instant::now();
    for url in &urls {
        loop {
            let s = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body(json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).to_string())
                .send()
                .await
                .unwrap()
                .status();
            if s == 401 {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{url} still accepts a revoked key"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("revocation seen by all 3 processes after {:?}", t.elapsed());

    // R1: a key limited to 30 requests per minute, hammered through all three processes: the
    // limit holds for the sum, not per process.
    let k2 = admin_post(
        &http,
        format!("{}/admin/v1/workspaces/{ws}/keys", replicas[2].admin),
        json!({"name": "limited", "settings": {"rpm": 30}}),
    )
    .await;
    let key2 = k2["key"].as_str().unwrap().to_owned();
    let out = burst(
        &urls,
        &key2,
        90,
        json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let ok = out.iter().filter(|s| **s == 200 || **s == 402).count();
    let limited = out.iter().filter(|s| **s == 429).count();
    eprintln!("R1 over 3 processes: {ok} passed the limiter, {limited} got 429");
    assert_eq!(limited, 60, "{out:?}");
    drop(replicas);
    let _ = kairos_store::Store::drop_postgres_schema(&pg, &schema).await;
}

/// Budget leases under steady load across three `kairos serve` processes: after the warm-up,
/// admissions are decided in process against per-replica leases (the metric says so), and the
/// workspace's budget is still never overrun: the ledger's spend, Redis' view and the mock's own
/// count agree, and the last requests are refused with 402.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_admission_never_overruns_a_budget_across_three_processes() {
    let Some((pg, redis, schema, db)) = backends(
        "leased_admission_never_overruns_a_budget_across_three_processes",
        "kt_leases",
    )
    .await
    else {
        return;
    };
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    for n in 1..=3 {
        replicas.push(spawn_replica(dir.path(), n, &db, &redis, &mock.url()).await);
    }
    let http = reqwest::Client::new();
    let budget_usd = 0.3;
    let ws = admin_post(
        &http,
        format!("{}/admin/v1/workspaces", replicas[0].admin),
        json!({"name": "steady", "settings": {"budget": {"usd": budget_usd, "period": "month"}}}),
    )
    .await;
    let ws = ws["id"].as_str().unwrap().to_owned();
    let k = admin_post(
        &http,
        format!("{}/admin/v1/workspaces/{ws}/keys", replicas[0].admin),
        json!({"name": "svc"}),
    )
    .await;
    let key = k["key"].as_str().unwrap().to_owned();
    // Each request reserves ~$0.001 (gpt-4o, 100 output tokens at most) and costs ~$0.0001
    // (the mock's short answer): ~3,000 requests, so that the leases' 1 s warm-up passes. Two
    // client loops per replica until each has seen three 402s in a row.
    let body = json!({"model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (http, url, key, body) = (
            http.clone(),
            replicas[i % 3].url.clone(),
            key.clone(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut refused, mut in_a_row) = (0usize, 0usize, 0);
            let t = Instant::now();
            while in_a_row < 3 && t.elapsed() < Duration::from_secs(60) {
                let s = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                match s {
                    200 => {
                        ok += 1;
                        in_a_row = 0;
                    }
                    402 => {
                        refused += 1;
                        in_a_row += 1;
                    }
                    other => panic!("unexpected status {other}"),
                }
            }
            (ok, refused)
        }));
    }
    let (mut admitted, mut refused) = (0, 0);
    for t in tasks {
        let (o, r) = t.await.unwrap();
        admitted += o;
        refused += r;
    }
    // Leases were used, on more than one replica.
    let mut leased = Vec::new();
    for r in &replicas {
        let text = http
            .get(format!("{}/metrics", r.url))
            .bearer_auth(MASTER)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let n: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("kairos_limits_decisions_total")
                    && l.contains("check=\"budget\"")
                    && l.contains("decided_by=\"lease\"")
            })
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum();
        leased.push(n);
    }
    // The ledger has every request, refused ones included (rows are written in batches: wait
    // for them).
    let t = Instant::now();
    let usage = loop {
        let v: Value = http
            .get(format!(
                "{}/admin/v1/workspaces/{ws}/usage?since_ms=0",
                replicas[2].admin
            ))
            .bearer_auth(MASTER)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["usage"]["requests"].as_u64() == Some((admitted + refused) as u64) {
            break v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "ledger: {v}, admitted {admitted}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let spend = usage["usage"]["spend_micros"].as_i64().unwrap();
    let budget = (budget_usd * 1e6) as i64;
    eprintln!(
        "leases over 3 processes: {admitted} admitted, {refused} refused (402), lease decisions per replica {leased:?}, spend {spend} of {budget} micro-USD, mock calls {}",
        mock.call_count()
    );
    assert_eq!(mock.call_count(), admitted);
    assert!(spend <= budget, "overrun: {spend} > {budget}");
    assert!(
        spend >= budget / 2,
        "the budget was not used: {spend} of {budget}"
    );
    assert!(refused >= 18, "every client ends on three 402s: {refused}");
    assert!(
        leased.iter().filter(|n| **n > 0.0).count() >= 2,
        "leases were not used: {leased:?}"
    );
    drop(replicas);
    let _ = kairos_store::Store::drop_postgres_schema(&pg, &schema).await;
}
