//! A6: `kill -9` of a gateway with streams in flight, then a restart on the same data directory:
//! every call the provider saw has exactly one ledger row (the interrupted ones from the intent
//! journal), none is missing, none is doubled.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kairos_testkit::{Behavior, MockConfig, MockServer};
use serde_json::json;

const MASTER: &str = "kr-crash-master-key-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn serve(cfg: &std::path::Path, url: &str) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["serve", "--config"])
        .arg(cfg)
        .env_clear()
        .env("KAIROS_MASTER_KEY", MASTER)
        .env("OPENAI_API_KEY", "sk-crash-test")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kairos serve");
    let http = reqwest::Client::new();
    let t = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await
            && r.status() == 200
        {
            return child;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "gateway not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_streams_in_flight_loses_no_request() {
    let mock = MockServer::start(MockConfig {
        defaults: Behavior {
            chunks: 40,
            itl_ms: 100,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let cfg = dir.path().join("kairos.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "off"
[storage]
data_dir = "{data}"
[auth]
master_key = "env:KAIROS_MASTER_KEY"
[logging]
level = "warn"
[providers.openai]
kind = "openai"
base_url = "{mock}/v1"
api_key = "env:OPENAI_API_KEY"
"#,
            data = dir.path().join("data").display(),
            mock = mock.url(),
        ),
    )
    .unwrap();
    let mut gw = serve(&cfg, &url).await;
    let http = reqwest::Client::new();
    // A few quick requests that complete, then 40 streams that take 4 s each.
    for _ in 0..5 {
        let r = http
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(MASTER)
            .header("content-type", "application/json")
            .body(json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "[[mock {\"chunks\": 2}]] hi"}]}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let mut streams = Vec::new();
    for _ in 0..40 {
        let (http, url) = (http.clone(), url.clone());
        streams.push(tokio::spawn(async move {
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(MASTER)
                .header("content-type", "application/json")
                .body(json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "tell me a story"}]}).to_string())
                .send()
                .await;
            if let Ok(r) = r {
                let _ = r.bytes().await;
            }
        }));
    }
    let t = Instant::now();
    while mock.call_count() < 45 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "streams did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SIGKILL: no drain, no flush.
    gw.start_kill().unwrap();
    let _ = gw.wait().await;
    for s in streams {
        let _ = s.await;
    }
    let called: HashSet<String> = mock
        .ledger()
        .iter()
        .filter_map(|c| c.request_id.clone())
        .collect();
    assert_eq!(called.len(), 45);

    // Restart on the same data directory: recovery runs before the listener opens.
    let gw2 = serve(&cfg, &url).await;
    let store = kairos_store::Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("data").join("kairos.db").display()
    ))
    .await
    .unwrap();
    let rows = store
        .list_requests(&kairos_store::ListQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), rows.len(), "duplicate rows");
    let missing: Vec<&String> = called.difference(&ids).collect();
    assert!(
        missing.is_empty(),
        "{} calls without a row: {missing:?}",
        missing.len()
    );
    let interrupted = rows.iter().filter(|r| r.outcome == "interrupted").count();
    eprintln!(
        "{} rows for {} upstream calls; {interrupted} recovered as interrupted",
        rows.len(),
        called.len()
    );
    assert!(
        interrupted >= 40,
        "the in-flight streams were not recovered"
    );
    for r in rows.iter().filter(|r| r.outcome == "interrupted") {
        assert_eq!(r.error_kind.as_deref(), Some("gateway_interrupted"));
        assert_eq!(r.provider.as_deref(), Some("openai"));
        assert!(
            r.cost_micros.is_none(),
            "an interrupted call's cost is to reconcile"
        );
    }
    // The journal files of the first process are gone.
    let left = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal-"))
        .count();
    assert_eq!(left, 1, "only the new process's journal remains");
    drop(gw2);
}
