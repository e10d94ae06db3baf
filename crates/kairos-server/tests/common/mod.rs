//! Test harness: the mock upstream and a gateway on port 0, configured through the same TOML
//! path and startup code as `kairos serve`, with canary secrets as keys.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::StreamExt;
use kairos_api::sse::{SseDecoder, SseEvent};
use kairos_core::config::FileConfig;
use kairos_core::env::MapEnv;
use kairos_server::startup::{Running, StartOptions, start};
use kairos_store::{LedgerRow, ListQuery};
use kairos_testkit::{MockConfig, MockServer};

pub const MASTER: &str = "kr-canary-master-5f1d2c3b4a596877";
pub const OPENAI_KEY: &str = "sk-canary-openai-0a1b2c3d4e5f";
pub const ANTHROPIC_KEY: &str = "sk-ant-canary-9f8e7d6c5b4a";
pub const GEMINI_KEY: &str = "AIza-canary-gemini-13579bdf";

pub struct Gw {
    pub mock: MockServer,
    pub run: Running,
    pub url: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub fn env() -> MapEnv {
    MapEnv::from([
        ("KAIROS_MASTER_KEY", MASTER),
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ("GEMINI_API_KEY", GEMINI_KEY),
        // No exploration unless a test asks (`start_env(&[("KAIROS_EXPLORE", "1")], ..)`):
        // routed choices must be deterministic.
        ("KAIROS_EXPLORE", "0"),
    ])
}

pub async fn start_gw() -> Gw {
    start_with("", MockConfig::default()).await
}

thread_local! {
    /// Environment variables added to the next gateways started on this thread.
    static EXTRA_ENV: std::cell::RefCell<Vec<(String, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Start gateways with these extra environment variables (e.g. `KAIROS_REDIS_URL`).
pub async fn start_env(env: &[(&str, &str)], mock_cfg: &mut MockConfig) -> Gw {
    EXTRA_ENV.with(|e| {
        *e.borrow_mut() = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    });
    let gw = start_inner_raw(NO_RETRY, "", mock_cfg, None, "").await;
    EXTRA_ENV.with(|e| e.borrow_mut().clear());
    gw
}

/// The default harness disables retries (`[resilience] retry_attempts = 1`) so that one scripted
/// upstream failure is one observable failure; the resilience tests configure their own.
pub const NO_RETRY: &str = "[resilience]\nretry_attempts = 1\n";

/// Start mock + gateway. `extra` is appended to the generated TOML (use `{mock}` for the mock
/// URL); provider sections may be extended with dotted keys, e.g.
/// `providers.openai.stream_idle_timeout_ms = 300` is not valid TOML after a table, so pass
/// overrides as `[providers.openai]` keys through `provider_extra` instead.
pub async fn start_with(extra: &str, mut mock_cfg: MockConfig) -> Gw {
    start_full(extra, "", &mut mock_cfg).await
}

/// Like [`start_with`] but `extra` may configure `[resilience]` itself (retries on by default).
pub async fn start_resilient(extra: &str, mut mock_cfg: MockConfig) -> Gw {
    start_inner_raw(extra, "", &mut mock_cfg, None, "").await
}

/// [`start_resilient`] with keys added to every provider section.
pub async fn start_inner_with(extra: &str, provider_extra: &str, mock_cfg: &mut MockConfig) -> Gw {
    start_inner_raw(extra, provider_extra, mock_cfg, None, "").await
}

/// The default harness with keys added to `[server]`.
pub async fn start_with_server(server_extra: &str, mut mock_cfg: MockConfig) -> Gw {
    start_inner_raw(NO_RETRY, "", &mut mock_cfg, None, server_extra).await
}

pub async fn start_full(extra: &str, provider_extra: &str, mock_cfg: &mut MockConfig) -> Gw {
    start_inner(extra, provider_extra, mock_cfg, None).await
}

/// A gateway whose ledger is at `database_url` (set through `KAIROS_DATABASE_URL`, as in
/// production).
pub async fn start_db(database_url: &str, mock_cfg: &mut MockConfig) -> Gw {
    start_inner("", "", mock_cfg, Some(database_url)).await
}

/// [`start_db`] with `extra` appended to the configuration.
pub async fn start_db_with(database_url: &str, extra: &str, mock_cfg: &mut MockConfig) -> Gw {
    start_inner(extra, "", mock_cfg, Some(database_url)).await
}

async fn start_inner(
    extra: &str,
    provider_extra: &str,
    mock_cfg: &mut MockConfig,
    db: Option<&str>,
) -> Gw {
    let extra = format!("{NO_RETRY}{extra}");
    start_inner_raw(&extra, provider_extra, mock_cfg, db, "").await
}

async fn start_inner_raw(
    extra: &str,
    provider_extra: &str,
    mock_cfg: &mut MockConfig,
    db: Option<&str>,
    server_extra: &str,
) -> Gw {
    mock_cfg.openai_key = Some(OPENAI_KEY.into());
    mock_cfg.anthropic_key = Some(ANTHROPIC_KEY.into());
    mock_cfg.gemini_key = Some(GEMINI_KEY.into());
    let mock = MockServer::start(mock_cfg.clone()).await.expect("mock");
    let dir = tempfile::tempdir().expect("tempdir");
    let m = mock.url();
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
max_body_bytes = 65536
shutdown_grace_ms = 5000
{server_extra}
[storage]
data_dir = "{dir}"
[auth]
master_key = "env:KAIROS_MASTER_KEY"
[providers.openai]
kind = "openai"
base_url = "{m}/v1"
api_key = "env:OPENAI_API_KEY"
{provider_extra}
[providers.anthropic]
kind = "anthropic"
base_url = "{m}"
api_key = "env:ANTHROPIC_API_KEY"
{provider_extra}
[providers.gemini]
kind = "gemini"
base_url = "{m}"
api_key = "env:GEMINI_API_KEY"
{provider_extra}
{extra}
"#,
        dir = dir.path().display(),
        extra = extra.replace("{mock}", &m),
    );
    let mut env = env();
    if let Some(db) = db {
        env.0.insert("KAIROS_DATABASE_URL".into(), db.into());
    }
    for (k, v) in EXTRA_ENV.with(|e| e.borrow().clone()) {
        env.0.insert(k, v);
    }
    let cfg = FileConfig::parse(&toml)
        .and_then(|f| f.validate(&env))
        .unwrap_or_else(|e| panic!("config: {e}\n{toml}"));
    let run = start(cfg, StartOptions::default()).await.expect("start");
    let url = format!("http://{}", run.addr);
    Gw {
        mock,
        run,
        url,
        http: reqwest::Client::new(),
        dir,
    }
}

impl Gw {
    /// The admin API's base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.run.admin_addr.expect("admin listener"))
    }

    /// An admin API call with `key` as bearer (`None`: no credentials).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut b = self
            .http
            .request(method, format!("{}{}", self.admin_url(), path));
        if let Some(k) = key {
            b = b.bearer_auth(k);
        }
        if let Some(v) = body {
            b = b
                .header("content-type", "application/json")
                .body(v.to_string());
        }
        let r = b.send().await.expect("admin send");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// A chat completion with `key` as bearer.
    pub async fn chat_as(&self, key: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.url))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("send")
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{}", self.url, path))
            .bearer_auth(MASTER)
            .header("content-type", "application/json")
    }

    pub async fn chat(&self, body: serde_json::Value) -> reqwest::Response {
        self.post("/v1/chat/completions")
            .body(body.to_string())
            .send()
            .await
            .expect("send")
    }

    /// Wait until the ledger holds a row for `id` (rows are written off the request path; a
    /// row with estimated usage is computed on a blocking thread first).
    pub async fn row(&self, id: &str) -> LedgerRow {
        for _ in 0..400 {
            self.run.ledger.flush().await;
            if let Some(r) = self.run.store.get_request(id).await.expect("store") {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no ledger row for {id}");
    }

    /// `GET /v1/receipts/{id}` with the master key, once the request's row is written.
    pub async fn receipt(&self, id: &str) -> serde_json::Value {
        self.row(id).await;
        let r = self
            .http
            .get(format!("{}/v1/receipts/{id}", self.url))
            .bearer_auth(MASTER)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        r.json().await.expect("receipt JSON")
    }

    pub async fn rows(&self) -> Vec<LedgerRow> {
        self.run.ledger.flush().await;
        self.run
            .store
            .list_requests(&ListQuery {
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .expect("list")
    }
}

pub fn request_id(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-kairos-request-id")
        .expect("x-kairos-request-id")
        .to_str()
        .unwrap()
        .to_owned()
}

/// Read a whole SSE response into events (fails the test on a transport error unless
/// `allow_broken`).
pub async fn sse_events(resp: reqwest::Response) -> Vec<SseEvent> {
    let mut dec = SseDecoder::default();
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.expect("body");
        dec.feed(&chunk);
        while let Some(ev) = dec.next_event().expect("sse") {
            out.push(ev);
        }
    }
    assert!(!dec.has_partial(), "stream ended mid-event");
    out
}

pub fn user(text: &str) -> serde_json::Value {
    serde_json::json!([{"role": "user", "content": text}])
}

/// Creates a workspace with the master key; returns its id.
pub async fn workspace(gw: &Gw, name: &str, settings: serde_json::Value) -> String {
    let (s, v) = gw
        .admin(
            reqwest::Method::POST,
            "/admin/v1/workspaces",
            Some(MASTER),
            Some(serde_json::json!({"name": name, "settings": settings})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// Creates a key with `by` as admin; returns (id, key).
pub async fn key(gw: &Gw, by: &str, ws: &str, body: serde_json::Value) -> (String, String) {
    let (s, v) = gw
        .admin(
            reqwest::Method::POST,
            &format!("/admin/v1/workspaces/{ws}/keys"),
            Some(by),
            Some(body),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    (
        v["id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    )
}

/// A fresh PostgreSQL schema (migrated) on `pg` for one test; returns its name and a URL whose
/// connections use it.
pub async fn pg_schema(pg: &str, tag: &str) -> (String, String) {
    let schema = format!(
        "kt_{tag}_{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    kairos_store::Store::connect_with_schema(pg, &schema)
        .await
        .expect("postgres");
    let sep = if pg.contains('?') { '&' } else { '?' };
    (
        schema.clone(),
        format!("{pg}{sep}options=-c%20search_path%3D{schema}"),
    )
}
