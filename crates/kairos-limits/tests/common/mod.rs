//! Helpers shared by the integration tests. Each test file uses a part of them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kairos_limits::{BudgetScope, LimitsOptions, SpendFuture, SpendSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The Redis URL of the tests, or `None` (after saying so on stderr) to skip.
///
/// The message is written to the stderr handle directly: the test harness captures
/// `eprintln!` of passing tests, and a skip must be visible in a plain `cargo test` run.
pub fn redis_url(test: &str) -> Option<String> {
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

/// The same server, logical database 15 (only the flush test uses it).
pub fn with_db15(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{authority}/15")
}

/// `host:port` of the URL's server.
pub async fn server_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap()
}

/// A key prefix no other test (or test process) uses.
pub fn unique_prefix(test: &str) -> String {
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

/// Options for correctness tests: generous timeouts, so that a loaded machine does not turn
/// a Redis decision into a fallback.
pub fn opts(prefix: &str) -> LimitsOptions {
    LimitsOptions {
        key_prefix: prefix.to_owned(),
        redis_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ..LimitsOptions::default()
    }
}

/// A plain connection for looking at Redis directly.
pub async fn raw_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Deletes every key under `prefix` (lifetime counters never expire on their own).
pub async fn cleanup(url: &str, prefix: &str) {
    let mut conn = raw_conn(url).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// Redis `TIME` in microseconds.
pub async fn redis_time_us(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    s * 1_000_000 + us
}

/// A ledger double: a settable spend per scope, and a log of what was asked.
#[derive(Default)]
pub struct TestSpend {
    by_scope: Mutex<HashMap<String, i64>>,
    calls: Mutex<Vec<(String, i64)>>,
}

impl TestSpend {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set(&self, scope: &str, spent: i64) {
        self.by_scope
            .lock()
            .unwrap()
            .insert(scope.to_owned(), spent);
    }

    pub fn calls(&self) -> Vec<(String, i64)> {
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
        let v = self
            .by_scope
            .lock()
            .unwrap()
            .get(&scope.id)
            .copied()
            .unwrap_or(0);
        Box::pin(async move { Ok(v) })
    }
}

/// A TCP proxy in front of Redis that can be frozen: it keeps accepting and reading, but
/// forwards nothing until thawed (a server that accepts and never answers).
pub struct Proxy {
    pub addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let gate = frozen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(copy_gated(cr, sw, gate.clone()));
                tokio::spawn(copy_gated(sr, cw, gate.clone()));
            }
        });
        Self { addr, frozen, task }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn copy_gated(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bounded: a frozen proxy is thawed by the test, or the test ends (runtime dropped).
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A listener that accepts connections and never answers; connections are held open until
/// the returned task is aborted.
pub async fn black_hole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

/// A port on which nothing listens (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}
