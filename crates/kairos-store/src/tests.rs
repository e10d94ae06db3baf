//! Behaviour tests, each written once and run on every available backend: SQLite always,
//! PostgreSQL when `KAIROS_TEST_POSTGRES_URL` is set (each test in a fresh schema, dropped at
//! the end).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, Executor};

use crate::store::{
    COLUMNS, NUM_COLUMNS, NUM_OUTCOME_COLUMNS, OUTCOME_COLUMNS, POSTGRES_MAX_PARAMS,
    SQLITE_MAX_PARAMS, rows_per_statement,
};
use crate::{
    LedgerRow, LedgerStats, LedgerWriter, LedgerWriterConfig, ListQuery, OutcomeRow,
    SPOOL_FILE_NAME, Signal, Store, StoreError,
};

// ---------------------------------------------------------------------------------------------
// Harness

enum Kind {
    Sqlite { url: String },
    Postgres { url: String, schema: String },
}

/// One backend for one test: a fresh database (SQLite file in a temp dir, or a PostgreSQL
/// schema) and a temp dir for spools.
struct TestDb {
    store: Store,
    kind: Kind,
    dir: tempfile::TempDir,
}

impl TestDb {
    fn name(&self) -> &'static str {
        self.store.backend()
    }

    /// A second, independent pool on the same database.
    async fn reconnect(&self) -> Store {
        match &self.kind {
            Kind::Sqlite { url } => Store::connect(url).await.unwrap(),
            Kind::Postgres { url, schema } => {
                Store::connect_with_schema(url, schema).await.unwrap()
            }
        }
    }

    fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    fn spool_file(&self) -> PathBuf {
        self.spool_dir().join(SPOOL_FILE_NAME)
    }

    /// Makes every insert fail (the table disappears) until [`TestDb::restore_table`].
    async fn break_table(&self) {
        self.store
            .execute_raw("ALTER TABLE requests RENAME TO requests_offline")
            .await
            .unwrap();
    }

    async fn restore_table(&self) {
        self.store
            .execute_raw("ALTER TABLE requests_offline RENAME TO requests")
            .await
            .unwrap();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Kind::Postgres { url, schema } = &self.kind else {
            return;
        };
        // Drop the schema from a separate thread with its own runtime: Drop cannot await, and
        // this also runs when the test panicked.
        let (url, schema) = (url.clone(), schema.clone());
        let result = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                conn.execute(AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                )))
                .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(result, Ok(Ok(()))) {
            eprintln!("warning: could not drop test schema: {result:?}");
        }
    }
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

async fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("ledger.db").display()
    );
    let store = Store::connect(&url).await.unwrap();
    TestDb {
        store,
        kind: Kind::Sqlite { url },
        dir,
    }
}

async fn postgres_db(url: String) -> TestDb {
    let schema = format!("kairos_test_{}", unique_suffix());
    let store = Store::connect_with_schema(&url, &schema).await.unwrap();
    TestDb {
        store,
        kind: Kind::Postgres { url, schema },
        dir: tempfile::tempdir().unwrap(),
    }
}

/// The backends to run a behaviour test on.
async fn backends() -> Vec<TestDb> {
    let mut dbs = vec![sqlite_db().await];
    match std::env::var("KAIROS_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => dbs.push(postgres_db(url).await),
        _ => eprintln!("SKIP: KAIROS_TEST_POSTGRES_URL unset; the PostgreSQL variant is not run"),
    }
    dbs
}

/// Fails the test instead of hanging it.
async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("timed out")
}

/// A row with every optional field set.
fn full_row(i: usize) -> LedgerRow {
    LedgerRow {
        id: format!("req-{i:08}"),
        ts_ms: 1_700_000_000_000 + i as i64,
        key_id: format!("key-{}", i % 3),
        workspace: Some("ws-1".to_owned()),
        route: "chat".to_owned(),
        inbound_api: "openai".to_owned(),
        requested_model: "gpt-4o".to_owned(),
        served_model: Some(format!("model-{}", i % 2)),
        provider: Some("openai".to_owned()),
        stream: i.is_multiple_of(2),
        status_code: 200,
        outcome: "ok".to_owned(),
        error_kind: Some("none".to_owned()),
        input_tokens: 10 + i as i64,
        output_tokens: 20,
        cached_tokens: 3,
        cache_write_tokens: 4,
        reasoning_tokens: 5,
        usage_source: "provider".to_owned(),
        cost_micros: Some(1234),
        latency_total_us: 100_000,
        latency_upstream_us: Some(90_000),
        overhead_us: 250,
        ttft_us: Some(40_000),
        metadata: Some(r#"{"team":"a","tags":["x","y"]}"#.to_owned()),
        end_user: Some("user-7".to_owned()),
        trace_id: format!("trace-{i}"),
        attempts: 1,
        task: Some("summarization".into()),
        receipt: Some(r#"{"chosen":"m"}"#.into()),
        attempts_detail: Some(r#"[{"target":"p/m","outcome":"ok"}]"#.into()),
        byok: true,
        markup_micros: 42,
        embedding: Some(format!("q1:{i}:AAECAw==")),
        signals: Vec::new(),
        journal_gen: None,
    }
}

/// A row with every optional field `None`.
fn bare_row(i: usize) -> LedgerRow {
    LedgerRow {
        id: format!("bare-{i:08}"),
        ts_ms: 1_600_000_000_000 + i as i64,
        key_id: "master".to_owned(),
        workspace: None,
        route: "messages".to_owned(),
        inbound_api: "anthropic".to_owned(),
        requested_model: "claude".to_owned(),
        served_model: None,
        provider: None,
        stream: false,
        status_code: 499,
        outcome: "client_disconnected".to_owned(),
        error_kind: None,
        input_tokens: 0,
        output_tokens: 0,
        cached_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        usage_source: "none".to_owned(),
        cost_micros: None,
        latency_total_us: 7,
        latency_upstream_us: None,
        overhead_us: 7,
        ttft_us: None,
        metadata: None,
        end_user: None,
        trace_id: String::new(),
        attempts: 0,
        task: None,
        receipt: None,
        attempts_detail: None,
        byok: false,
        markup_micros: 0,
        embedding: None,
        signals: Vec::new(),
        journal_gen: None,
    }
}

fn rows(n: usize) -> Vec<LedgerRow> {
    (0..n).map(full_row).collect()
}

fn cfg(spool_dir: Option<PathBuf>) -> LedgerWriterConfig {
    LedgerWriterConfig {
        spool_dir,
        ..LedgerWriterConfig::default()
    }
}

fn spool_lines(path: &Path) -> usize {
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().filter(|l| !l.trim().is_empty()).count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => panic!("reading the spool: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Store

#[test]
fn column_list_matches_the_bind_count() {
    assert_eq!(COLUMNS.split(',').count(), NUM_COLUMNS);
}

#[test]
fn statements_stay_under_the_bind_parameter_limits() {
    let sqlite = rows_per_statement(SQLITE_MAX_PARAMS);
    let postgres = rows_per_statement(POSTGRES_MAX_PARAMS);
    assert!(sqlite >= 1 && sqlite * NUM_COLUMNS <= 32_766);
    assert!(postgres >= 1 && postgres * NUM_COLUMNS <= 65_535);
    assert_eq!(rows_per_statement(NUM_COLUMNS * 3 + 1), 3);
}

#[tokio::test]
async fn round_trip_of_every_field() {
    for db in backends().await {
        let mut extreme = full_row(1);
        extreme.id = "extreme".to_owned();
        extreme.ts_ms = i64::MAX;
        extreme.input_tokens = i64::MAX;
        extreme.cost_micros = Some(i64::MIN);
        extreme.status_code = i32::MIN;
        extreme.attempts = i32::MAX;
        extreme.requested_model = "модель 🚀 'quoted' \"double\" \\ back".to_owned();
        let written = vec![full_row(1), full_row(2), bare_row(1), extreme];
        assert_eq!(
            db.store.insert_batch(&written).await.unwrap(),
            4,
            "{}",
            db.name()
        );
        for row in &written {
            let read = db.store.get_request(&row.id).await.unwrap();
            assert_eq!(read.as_ref(), Some(row), "{}", db.name());
        }
        assert_eq!(db.store.get_request("missing").await.unwrap(), None);
        assert_eq!(db.store.count().await.unwrap(), 4);
    }
}

#[tokio::test]
async fn nul_characters_are_replaced_not_rejected() {
    for db in backends().await {
        let mut row = full_row(1);
        row.end_user = Some("a\0b".to_owned());
        row.metadata = Some("{\"k\":\"\0\"}".to_owned());
        row.requested_model = "m\0".to_owned();
        assert_eq!(
            db.store
                .insert_batch(std::slice::from_ref(&row))
                .await
                .unwrap(),
            1
        );
        let read = db.store.get_request(&row.id).await.unwrap().unwrap();
        assert_eq!(
            read.end_user.as_deref(),
            Some("a\u{FFFD}b"),
            "{}",
            db.name()
        );
        assert_eq!(read.metadata.as_deref(), Some("{\"k\":\"\u{FFFD}\"}"));
        assert_eq!(read.requested_model, "m\u{FFFD}");
    }
}

#[tokio::test]
async fn inserts_are_idempotent_on_the_request_id() {
    for db in backends().await {
        let first = full_row(1);
        let mut second = first.clone();
        second.output_tokens = 999;
        assert_eq!(
            db.store
                .insert_batch(std::slice::from_ref(&first))
                .await
                .unwrap(),
            1
        );
        // Same id again, even with other content: skipped, the first write wins.
        assert_eq!(
            db.store.insert_batch(&[second]).await.unwrap(),
            0,
            "{}",
            db.name()
        );
        // Duplicates inside one batch, and a mix of new and existing ids.
        let batch = vec![full_row(2), full_row(2), first.clone(), full_row(3)];
        assert_eq!(db.store.insert_batch(&batch).await.unwrap(), 2);
        assert_eq!(db.store.count().await.unwrap(), 3);
        assert_eq!(db.store.get_request(&first.id).await.unwrap(), Some(first));
        assert_eq!(db.store.insert_batch(&[]).await.unwrap(), 0);
    }
}

/// 5,000 rows × 28 columns = 140,000 bind parameters, far over SQLite's 32,766 (and
/// PostgreSQL's 65,535): this only works because insert_batch chunks the statement.
#[tokio::test]
async fn one_insert_batch_call_above_the_bind_parameter_limit() {
    for db in backends().await {
        let many = rows(5_000);
        assert!(many.len() * NUM_COLUMNS > 65_535);
        assert_eq!(
            db.store.insert_batch(&many).await.unwrap(),
            5_000,
            "{}",
            db.name()
        );
        assert_eq!(db.store.count().await.unwrap(), 5_000);
        assert_eq!(db.store.insert_batch(&many).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn list_filters_and_ordering() {
    for db in backends().await {
        let mut all = Vec::new();
        for i in 0..30 {
            let mut row = full_row(i);
            row.ts_ms = 1_000 + (i as i64 / 2); // pairs share a timestamp: the id breaks ties
            row.key_id = if i % 3 == 0 { "k0" } else { "k1" }.to_owned();
            row.served_model = if i % 5 == 0 {
                None
            } else {
                Some(if i % 2 == 0 { "even" } else { "odd" }.to_owned())
            };
            all.push(row);
        }
        db.store.insert_batch(&all).await.unwrap();

        let newest_first = |mut v: Vec<LedgerRow>| {
            v.sort_by(|a, b| (b.ts_ms, &b.id).cmp(&(a.ts_ms, &a.id)));
            v.into_iter().map(|r| r.id).collect::<Vec<_>>()
        };
        let ids = |v: Vec<LedgerRow>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let list = |q: ListQuery| {
            let store = db.store.clone();
            async move { store.list_requests(&q).await.unwrap() }
        };

        let got = list(ListQuery::default()).await;
        assert_eq!(ids(got), newest_first(all.clone()), "{}", db.name());

        let got = list(ListQuery {
            key_id: Some("k0".to_owned()),
            ..ListQuery::default()
        })
        .await;
        let want: Vec<_> = all.iter().filter(|r| r.key_id == "k0").cloned().collect();
        assert_eq!(ids(got), newest_first(want));

        let got = list(ListQuery {
            model: Some("even".to_owned()),
            since_ms: Some(1_005),
            until_ms: Some(1_012),
            ..ListQuery::default()
        })
        .await;
        let want: Vec<_> = all
            .iter()
            .filter(|r| {
                r.served_model.as_deref() == Some("even") && r.ts_ms >= 1_005 && r.ts_ms < 1_012
            })
            .cloned()
            .collect();
        assert!(!want.is_empty());
        assert_eq!(ids(got), newest_first(want));

        let got = list(ListQuery {
            key_id: Some("k1".to_owned()),
            model: Some("odd".to_owned()),
            limit: Some(3),
            ..ListQuery::default()
        })
        .await;
        let want: Vec<_> = all
            .iter()
            .filter(|r| r.key_id == "k1" && r.served_model.as_deref() == Some("odd"))
            .cloned()
            .collect();
        assert_eq!(ids(got), newest_first(want)[..3].to_vec());

        let got = list(ListQuery {
            key_id: Some("nobody".to_owned()),
            ..ListQuery::default()
        })
        .await;
        assert!(got.is_empty());
    }
}

#[tokio::test]
async fn list_limit_defaults_and_caps() {
    assert_eq!(ListQuery::default().effective_limit(), 100);
    let big = ListQuery {
        limit: Some(50_000),
        ..ListQuery::default()
    };
    assert_eq!(big.effective_limit(), 1_000);
    for db in backends().await {
        db.store.insert_batch(&rows(1_100)).await.unwrap();
        assert_eq!(
            db.store
                .list_requests(&ListQuery::default())
                .await
                .unwrap()
                .len(),
            100
        );
        assert_eq!(
            db.store.list_requests(&big).await.unwrap().len(),
            1_000,
            "{}",
            db.name()
        );
    }
}

#[tokio::test]
async fn ping_succeeds_and_fails_after_close() {
    for db in backends().await {
        db.store.ping().await.unwrap();
        let other = db.reconnect().await;
        other.ping().await.unwrap();
        other.close().await;
        let err = other.ping().await.unwrap_err();
        assert_eq!(err.kind(), "store_database", "{}", db.name());
        assert!(err.retryable());
        // Closing the second pool left the first one alone.
        db.store.ping().await.unwrap();
    }
}

#[tokio::test]
async fn reconnecting_keeps_the_data_and_reruns_no_migration() {
    for db in backends().await {
        db.store.insert_batch(&rows(3)).await.unwrap();
        let again = db.reconnect().await;
        assert_eq!(again.count().await.unwrap(), 3, "{}", db.name());
    }
}

#[tokio::test]
async fn sqlite_creates_the_directory_and_sets_wal_and_normal_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/ledger.db");
    let store = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(store.backend(), "sqlite");
    assert!(path.exists());
    let journal = store
        .query_text("SELECT journal_mode FROM pragma_journal_mode")
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    // 1 = NORMAL (2 would be FULL).
    let sync = store
        .query_text("SELECT CAST(synchronous AS TEXT) FROM pragma_synchronous")
        .await
        .unwrap();
    assert_eq!(sync, "1");
    let busy = store
        .query_text("SELECT CAST(timeout AS TEXT) FROM pragma_busy_timeout")
        .await
        .unwrap();
    assert_eq!(busy, "5000");
}

#[tokio::test]
async fn sqlite_in_memory() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.insert_batch(&rows(10)).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 10);
    // A second in-memory store is a different database.
    let other = Store::connect("sqlite::memory:").await.unwrap();
    assert_eq!(other.count().await.unwrap(), 0);
}

#[tokio::test]
async fn bad_urls_and_schema_names_are_config_errors() {
    let err = Store::connect("mysql://localhost/x").await.unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err}");
    assert!(!err.retryable());
    let err = Store::connect_with_schema("sqlite::memory:", "s")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err}");
    // Validated before any connection attempt (port 1 is never listened on).
    for bad in ["", "1abc", "a-b", "a\"b", "a b", &"x".repeat(64)] {
        let err = Store::connect_with_schema("postgres://postgres@127.0.0.1:1/x", bad)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Config(_)), "{bad:?}: {err}");
    }
    let err = Store::connect("sqlite://x.db?mode=bogus")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err}");
}

#[tokio::test]
async fn postgres_url_password_does_not_leak_into_errors() {
    // Port 1: connection refused, no server needed.
    let err = Store::connect("postgres://user:s3cret-pw@127.0.0.1:1/db")
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("s3cret-pw"), "{err}");
    assert!(!format!("{err:?}").contains("s3cret-pw"), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL over TLS (`sslmode`)

/// A stand-in for a PostgreSQL server without TLS: answers every SSLRequest with `N` (as a
/// server with `ssl = off` does) and counts the connections. Returns its port.
async fn server_without_tls() -> (u16, std::sync::Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                // SSLRequest: length 8, code 80877103.
                let mut req = [0u8; 8];
                if sock.read_exact(&mut req).await.is_ok()
                    && req == [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]
                {
                    let _ = sock.write_all(b"N").await;
                }
                // Then wait for the client to give up (a startup message is never answered).
                let mut rest = [0u8; 256];
                while matches!(sock.read(&mut rest).await, Ok(n) if n > 0) {}
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn sslmode_require_against_a_server_without_tls_fails_at_once_naming_tls() {
    let (port, seen) = server_without_tls().await;
    for mode in ["require", "verify-ca", "verify-full"] {
        let url = format!("postgres://kairos:pw@127.0.0.1:{port}/db?sslmode={mode}");
        let t = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(20), Store::connect(&url))
            .await
            .expect("a refused TLS upgrade must fail, not hang")
            .unwrap_err();
        // Well before the pool's acquire timeout: the failure is not retried.
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{mode}: {:?}",
            t.elapsed()
        );
        assert!(matches!(err, StoreError::Config(_)), "{mode}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("TLS") && msg.contains("server does not support TLS"),
            "{mode}: {msg}"
        );
        assert!(msg.contains(&format!("sslmode={mode}")), "{msg}");
        assert!(!msg.contains("pw@"), "{msg}");
    }
    assert_eq!(
        seen.load(Ordering::Relaxed),
        3,
        "one attempt per URL, no retry loop"
    );
    let err = Store::connect("postgres://u@127.0.0.1:1/db?sslmode=sometimes")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err}");
}

/// Whether this connection to PostgreSQL is encrypted (`pg_stat_ssl`).
async fn connection_uses_tls(store: &Store) -> bool {
    let crate::store::Backend::Postgres(pool) = &store.backend else {
        panic!("not PostgreSQL");
    };
    sqlx::query_scalar::<_, bool>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Against the test server: `disable` and `prefer` connect whether or not the server has TLS
/// (`disable` in clear); `require` connects encrypted when it has TLS and fails naming TLS when
/// it has not; `verify-full` never silently accepts a certificate that does not chain to a
/// known root (the test server's is usually self-signed).
#[tokio::test]
async fn postgres_sslmodes_against_the_test_server() {
    let Ok(pg) = std::env::var("KAIROS_TEST_POSTGRES_URL") else {
        eprintln!("SKIP postgres_sslmodes_against_the_test_server: KAIROS_TEST_POSTGRES_URL unset");
        return;
    };
    let with_mode = |mode: &str| {
        let sep = if pg.contains('?') { '&' } else { '?' };
        format!("{pg}{sep}sslmode={mode}")
    };
    let disabled = within(postgres_db(with_mode("disable"))).await;
    assert!(!connection_uses_tls(&disabled.store).await);
    disabled.store.insert_batch(&[full_row(1)]).await.unwrap();
    let preferred = within(postgres_db(with_mode("prefer"))).await;
    let server_has_tls = connection_uses_tls(&preferred.store).await;
    preferred.store.insert_batch(&[full_row(1)]).await.unwrap();
    eprintln!(
        "the test server {} TLS",
        if server_has_tls { "offers" } else { "has no" }
    );

    let schema = format!("kairos_test_{}", unique_suffix());
    let required = within(Store::connect_with_schema(&with_mode("require"), &schema)).await;
    if server_has_tls {
        let required = TestDb {
            store: required.unwrap(),
            kind: Kind::Postgres {
                url: pg.clone(),
                schema,
            },
            dir: tempfile::tempdir().unwrap(),
        };
        assert!(connection_uses_tls(&required.store).await);
        required.store.insert_batch(&[full_row(1)]).await.unwrap();
        assert_eq!(required.store.count().await.unwrap(), 1);
        // verify-full: the server's certificate is checked; a self-signed one (the usual
        // test setup) is refused with a TLS error. If it does verify, it is encrypted.
        let schema = format!("kairos_test_{}", unique_suffix());
        match within(Store::connect_with_schema(
            &with_mode("verify-full"),
            &schema,
        ))
        .await
        {
            Err(e) => {
                assert!(matches!(e, StoreError::Config(_)), "{e:?}");
                assert!(e.to_string().contains("TLS"), "{e}");
                eprintln!("verify-full refused the test server's certificate: {e}");
            }
            Ok(store) => {
                let verified = TestDb {
                    store,
                    kind: Kind::Postgres {
                        url: pg.clone(),
                        schema,
                    },
                    dir: tempfile::tempdir().unwrap(),
                };
                assert!(connection_uses_tls(&verified.store).await);
            }
        }
        // verify-ca with the server's own certificate as the root (`sslrootcert`), when this
        // process can read it (same host): checked and accepted.
        let cert_file: String = {
            let crate::store::Backend::Postgres(pool) = &required.store.backend else {
                unreachable!()
            };
            sqlx::query_scalar("SELECT current_setting('ssl_cert_file')")
                .fetch_one(pool)
                .await
                .unwrap()
        };
        if std::fs::read(&cert_file).is_ok() {
            let schema = format!("kairos_test_{}", unique_suffix());
            let url = with_mode(&format!("verify-ca&sslrootcert={cert_file}"));
            let store = within(Store::connect_with_schema(&url, &schema))
                .await
                .unwrap_or_else(|e| panic!("verify-ca with sslrootcert={cert_file}: {e}"));
            let verified = TestDb {
                store,
                kind: Kind::Postgres {
                    url: pg.clone(),
                    schema,
                },
                dir: tempfile::tempdir().unwrap(),
            };
            assert!(connection_uses_tls(&verified.store).await);
        } else {
            eprintln!("SKIP verify-ca with sslrootcert: {cert_file} is not readable here");
        }
    } else {
        let err = required.unwrap_err();
        assert!(
            err.to_string().contains("server does not support TLS"),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Writer

#[tokio::test]
async fn writer_drains_until_empty_across_batch_boundaries() {
    for db in backends().await {
        let max_batch = 16;
        let n = 3 * max_batch + 7;
        // A max_delay of an hour: if the writer slept between full batches (the LiteLLM
        // #23452 bug) or waited for the timer, flush would time out.
        let (handle, writer) = LedgerWriter::spawn(
            db.store.clone(),
            LedgerWriterConfig {
                max_batch,
                max_delay: Duration::from_secs(3600),
                ..cfg(None)
            },
        );
        for row in rows(n) {
            handle.record(row);
        }
        within(handle.flush()).await;
        assert_eq!(db.store.count().await.unwrap(), n as i64, "{}", db.name());
        let stats = handle.stats();
        assert_eq!(stats.written, n as u64);
        assert_eq!(stats.queue_len, 0);
        let stats = within(writer.shutdown()).await;
        assert_eq!(
            stats,
            LedgerStats {
                written: n as u64,
                ..LedgerStats::default()
            }
        );
    }
}

#[tokio::test]
async fn extreme_config_values_do_not_break_the_writer() {
    let db = sqlite_db().await;
    let (handle, writer) = LedgerWriter::spawn(
        db.store.clone(),
        LedgerWriterConfig {
            channel_capacity: 0, // raised to 1
            max_batch: 0,        // raised to 1
            max_delay: Duration::MAX,
            spool_dir: None,
            journal: None,
        },
    );
    handle.record(full_row(1));
    within(handle.flush()).await;
    handle.record(full_row(2));
    let stats = within(writer.shutdown()).await;
    assert_eq!((stats.written, stats.dropped), (2, 0));
}

#[tokio::test]
async fn writer_with_default_config_writes_every_row_by_shutdown() {
    for db in backends().await {
        let n = 3 * 512 + 7;
        let (handle, writer) = LedgerWriter::spawn(db.store.clone(), cfg(None));
        let clone = handle.clone();
        for (i, row) in rows(n).into_iter().enumerate() {
            if i % 2 == 0 {
                handle.record(row);
            } else {
                clone.record(row);
            }
        }
        let stats = within(writer.shutdown()).await;
        assert_eq!(stats.written, n as u64, "{}", db.name());
        assert_eq!(stats.dropped, 0);
        assert_eq!(db.store.count().await.unwrap(), n as i64);
    }
}

#[tokio::test]
async fn shutdown_flushes_everything_without_waiting_for_the_timer() {
    for db in backends().await {
        let (handle, writer) = LedgerWriter::spawn(
            db.store.clone(),
            LedgerWriterConfig {
                max_batch: 10_000,
                max_delay: Duration::from_secs(3600),
                ..cfg(Some(db.spool_dir()))
            },
        );
        for row in rows(100) {
            handle.record(row);
        }
        // Let the writer take the first row and start waiting for the batch to fill.
        tokio::task::yield_now().await;
        let stats = within(writer.shutdown()).await;
        assert_eq!(stats.written, 100, "{}", db.name());
        assert_eq!(stats.dropped, 0);
        assert_eq!(stats.backlog, 0);
        assert_eq!(db.store.count().await.unwrap(), 100);
        // After shutdown the channel is closed: record drops and counts.
        handle.record(full_row(1_000));
        assert_eq!(handle.stats().dropped, 1);
        within(handle.flush()).await; // returns at once
    }
}

#[tokio::test]
async fn record_never_blocks_and_counts_drops_when_the_channel_is_full() {
    // current-thread runtime: the writer task cannot run until this test awaits, so the
    // channel fills deterministically.
    for db in backends().await {
        let (handle, writer) = LedgerWriter::spawn(
            db.store.clone(),
            LedgerWriterConfig {
                channel_capacity: 4,
                ..cfg(None)
            },
        );
        for row in rows(14) {
            handle.record(row);
        }
        let stats = handle.stats();
        assert_eq!(stats.queue_len, 4, "{}", db.name());
        assert_eq!(stats.dropped, 10);
        let stats = within(writer.shutdown()).await;
        assert_eq!(stats.written, 4);
        assert_eq!(stats.dropped, 10);
        assert_eq!(db.store.count().await.unwrap(), 4);
    }
}

#[tokio::test]
async fn failed_batches_go_to_the_spool_and_are_replayed_on_recovery() {
    for db in backends().await {
        let (handle, writer) = LedgerWriter::spawn(db.store.clone(), cfg(Some(db.spool_dir())));
        handle.record(full_row(0));
        within(handle.flush()).await;
        assert_eq!(handle.stats().written, 1);

        db.break_table().await;
        for row in (1..=40).map(full_row) {
            handle.record(row);
        }
        within(handle.flush()).await;
        let stats = handle.stats();
        assert_eq!(stats.spooled, 40, "{}: {stats:?}", db.name());
        assert_eq!(stats.backlog, 40);
        assert_eq!(stats.replayed, 0);
        assert_eq!(spool_lines(&db.spool_file()), 40);
        // More rows while the database is still down also go to the spool.
        for row in (41..=50).map(full_row) {
            handle.record(row);
        }
        within(handle.flush()).await;
        assert_eq!(handle.stats().spooled, 50);
        assert_eq!(spool_lines(&db.spool_file()), 50);

        db.restore_table().await;
        within(handle.flush()).await;
        let stats = handle.stats();
        assert_eq!(stats.replayed, 50, "{}: {stats:?}", db.name());
        assert_eq!(stats.backlog, 0);
        assert_eq!(spool_lines(&db.spool_file()), 0);
        assert_eq!(std::fs::metadata(db.spool_file()).unwrap().len(), 0);
        assert_eq!(db.store.count().await.unwrap(), 51);

        // Back to normal: new rows go straight to the database.
        for row in (51..60).map(full_row) {
            handle.record(row);
        }
        let stats = within(writer.shutdown()).await;
        assert_eq!(stats.written, 10, "{}: {stats:?}", db.name());
        assert_eq!(stats.dropped, 0);
        assert_eq!(db.store.count().await.unwrap(), 60);
        for i in 0..60 {
            assert_eq!(
                db.store.get_request(&full_row(i).id).await.unwrap(),
                Some(full_row(i))
            );
        }
    }
}

#[tokio::test]
async fn the_next_writer_replays_a_left_spool_without_duplicates() {
    for db in backends().await {
        // A writer whose database is gone: everything goes to the spool.
        let dead = db.reconnect().await;
        dead.close().await;
        let (handle, writer) = LedgerWriter::spawn(dead, cfg(Some(db.spool_dir())));
        for row in rows(30) {
            handle.record(row);
        }
        let stats = within(writer.shutdown()).await;
        assert_eq!(stats.written, 0, "{}", db.name());
        assert_eq!(stats.spooled, 30);
        assert_eq!(stats.backlog, 30);
        assert_eq!(stats.dropped, 0);
        assert_eq!(spool_lines(&db.spool_file()), 30);

        // A8: duplicate every line, add a corrupt line and a torn last line (a crash during an
        // append), and pretend an earlier replay committed some rows before the crash.
        let text = std::fs::read_to_string(db.spool_file()).unwrap();
        let torn = &text[..text.find('\n').unwrap() / 2];
        std::fs::write(db.spool_file(), format!("{text}not json\n{text}{torn}")).unwrap();
        db.store.insert_batch(&rows(5)).await.unwrap();

        let (handle, writer) = LedgerWriter::spawn(db.store.clone(), cfg(Some(db.spool_dir())));
        within(handle.flush()).await;
        let stats = within(writer.shutdown()).await;
        assert_eq!(stats.replayed, 60, "{}: {stats:?}", db.name());
        assert_eq!(stats.dropped, 2, "the corrupt and the torn line");
        assert_eq!(stats.backlog, 0);
        assert_eq!(db.store.count().await.unwrap(), 30);
        assert_eq!(std::fs::metadata(db.spool_file()).unwrap().len(), 0);
        for i in 0..30 {
            assert_eq!(
                db.store.get_request(&full_row(i).id).await.unwrap(),
                Some(full_row(i))
            );
        }
    }
}

#[tokio::test]
async fn spool_replay_on_spawn_happens_without_any_new_traffic() {
    for db in backends().await {
        let dead = db.reconnect().await;
        dead.close().await;
        let (handle, writer) = LedgerWriter::spawn(dead, cfg(Some(db.spool_dir())));
        for row in rows(3_000) {
            handle.record(row);
        }
        within(writer.shutdown()).await;
        assert_eq!(spool_lines(&db.spool_file()), 3_000);

        // No record, no flush: the writer replays (several chunks) on its own.
        let (handle, writer) = LedgerWriter::spawn(db.store.clone(), cfg(Some(db.spool_dir())));
        within(async {
            while handle.stats().replayed < 3_000 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert_eq!(db.store.count().await.unwrap(), 3_000, "{}", db.name());
        let stats = within(writer.shutdown()).await;
        assert_eq!(stats.replayed, 3_000);
        assert_eq!(stats.backlog, 0);
    }
}

#[tokio::test]
async fn without_a_spool_failed_batches_wait_in_bounded_memory() {
    for db in backends().await {
        let (handle, writer) = LedgerWriter::spawn(
            db.store.clone(),
            LedgerWriterConfig {
                channel_capacity: 8,
                ..cfg(None)
            },
        );
        db.break_table().await;
        for row in rows(5) {
            handle.record(row);
        }
        within(handle.flush()).await;
        let stats = handle.stats();
        assert_eq!(
            (stats.spooled, stats.backlog, stats.dropped),
            (5, 5, 0),
            "{}",
            db.name()
        );
        for row in (5..10).map(full_row) {
            handle.record(row);
        }
        within(handle.flush()).await;
        let stats = handle.stats();
        // The memory backlog holds channel_capacity = 8 rows; 2 are dropped.
        assert_eq!((stats.spooled, stats.backlog, stats.dropped), (8, 8, 2));

        db.restore_table().await;
        within(handle.flush()).await;
        let stats = handle.stats();
        assert_eq!((stats.replayed, stats.backlog), (8, 0));
        assert_eq!(db.store.count().await.unwrap(), 8);
        within(writer.shutdown()).await;
    }
}

#[tokio::test]
async fn shutdown_with_the_database_down_keeps_rows_in_the_spool_or_counts_them() {
    for db in backends().await {
        // With a spool: kept for the next start, not dropped.
        let dead = db.reconnect().await;
        dead.close().await;
        let (handle, writer) = LedgerWriter::spawn(dead.clone(), cfg(Some(db.spool_dir())));
        for row in rows(7) {
            handle.record(row);
        }
        let stats = within(writer.shutdown()).await;
        assert_eq!(
            (stats.spooled, stats.backlog, stats.dropped),
            (7, 7, 0),
            "{}",
            db.name()
        );

        // Without: the memory backlog is lost at shutdown and counted.
        let (handle, writer) = LedgerWriter::spawn(dead, cfg(None));
        for row in rows(7) {
            handle.record(row);
        }
        let stats = within(writer.shutdown()).await;
        assert_eq!((stats.spooled, stats.backlog, stats.dropped), (7, 0, 7));
    }
}

#[tokio::test]
async fn an_unusable_spool_dir_falls_back_to_memory() {
    for db in backends().await {
        // A regular file where the directory should be.
        let not_a_dir = db.dir.path().join("file");
        std::fs::write(&not_a_dir, "x").unwrap();
        let (handle, writer) = LedgerWriter::spawn(db.store.clone(), cfg(Some(not_a_dir)));
        db.break_table().await;
        for row in rows(3) {
            handle.record(row);
        }
        within(handle.flush()).await;
        assert_eq!(handle.stats().backlog, 3, "{}", db.name());
        db.restore_table().await;
        let stats = within(writer.shutdown()).await;
        assert_eq!((stats.replayed, stats.dropped), (3, 0));
        assert_eq!(db.store.count().await.unwrap(), 3);
    }
}

#[tokio::test]
async fn dropping_the_writer_detaches_it_and_it_ends_with_the_last_handle() {
    for db in backends().await {
        let (handle, writer) = LedgerWriter::spawn(db.store.clone(), cfg(None));
        drop(writer);
        handle.record(full_row(1));
        within(handle.flush()).await;
        assert_eq!(handle.stats().written, 1, "{}", db.name());
        assert_eq!(handle.stats().dropped, 0);
        drop(handle);
        assert_eq!(db.store.count().await.unwrap(), 1);
    }
}

#[tokio::test]
async fn the_journal_recovers_interrupted_requests_once() {
    let db = sqlite_db().await;
    let dir = tempfile::tempdir().unwrap();
    let j = crate::journal::Journal::open(dir.path()).unwrap();
    let done = full_row(1);
    let cut = full_row(2);
    assert_eq!(j.begin(&done), Some(0));
    assert_eq!(j.begin(&cut), Some(0));
    // Row 1 reached the database before the "crash"; row 2 did not.
    db.store
        .insert_batch(std::slice::from_ref(&done))
        .await
        .unwrap();
    drop(j);
    let n = crate::journal::recover(dir.path(), &db.store)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let row = db.store.get_request(&cut.id).await.unwrap().unwrap();
    assert_eq!(row.outcome, "interrupted");
    assert_eq!(row.error_kind.as_deref(), Some("gateway_interrupted"));
    assert_eq!(row.cost_micros, None);
    assert_eq!(
        db.store
            .get_request(&done.id)
            .await
            .unwrap()
            .unwrap()
            .outcome,
        done.outcome
    );
    // The files are gone: a second recovery finds nothing.
    assert_eq!(
        crate::journal::recover(dir.path(), &db.store)
            .await
            .unwrap(),
        0
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_released_entry_leaves_no_file_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let j = crate::journal::Journal::open(dir.path()).unwrap();
    let g = j.begin(&full_row(1)).unwrap();
    j.release(g);
    // The current generation is kept even when empty; older ones are deleted when released.
    assert_eq!(j.files(), 1);
}

// ---------------------------------------------------------------------------------------------
// Outcomes

fn outcome(request: &str, metric: &str, model: &str, score: f64, at: i64) -> OutcomeRow {
    OutcomeRow {
        request_id: request.to_owned(),
        metric: metric.to_owned(),
        model: model.to_owned(),
        workspace: Some("ws-1".into()),
        key_id: "key-1".into(),
        task: Some("coding".into()),
        embedding: Some("q1:AAEC".into()),
        score,
        weight: 1.0,
        source: "explicit".into(),
        detail: Some("fine 👍".into()),
        created_ms: at,
        updated_ms: at,
    }
}

/// `row` carrying one implicit signal.
fn with_signal(mut row: LedgerRow, score: f64) -> LedgerRow {
    row.signals.push(Signal {
        metric: "implicit".into(),
        model: row.served_model.clone().unwrap_or_else(|| "m".into()),
        score,
        weight: 0.25,
        source: "implicit".into(),
        detail: Some("length".into()),
        at_ms: row.ts_ms + 5,
    });
    row
}

#[test]
fn outcome_column_list_matches_the_bind_count() {
    assert_eq!(OUTCOME_COLUMNS.split(',').count(), NUM_OUTCOME_COLUMNS);
}

#[tokio::test]
async fn outcomes_upsert_once_per_key_and_keep_created_ms() {
    for db in backends().await {
        let first = outcome("r1", "score", "gpt-4o", 0.5, 1_000);
        assert!(
            !db.store.upsert_outcome(&first).await.unwrap(),
            "{}",
            db.name()
        );
        assert_eq!(
            db.store.get_outcome("r1", "score", "gpt-4o").await.unwrap(),
            Some(first.clone())
        );
        // Same key again: updated in place, created_ms kept.
        let mut second = outcome("r1", "score", "gpt-4o", 1.0, 2_000);
        second.detail = None;
        second.weight = 0.5;
        assert!(
            db.store.upsert_outcome(&second).await.unwrap(),
            "{}",
            db.name()
        );
        let read = db
            .store
            .get_outcome("r1", "score", "gpt-4o")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.score, 1.0);
        assert_eq!(read.weight, 0.5);
        assert_eq!(read.detail, None);
        assert_eq!((read.created_ms, read.updated_ms), (1_000, 2_000));
        // An older write never moves updated_ms backwards.
        let older = outcome("r1", "score", "gpt-4o", 0.0, 1_500);
        assert!(db.store.upsert_outcome(&older).await.unwrap());
        let read = db
            .store
            .get_outcome("r1", "score", "gpt-4o")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((read.score, read.updated_ms), (0.0, 2_000));
        // Another metric or model is another outcome.
        assert!(
            !db.store
                .upsert_outcome(&outcome("r1", "accuracy", "gpt-4o", 0.2, 3_000))
                .await
                .unwrap()
        );
        assert!(
            !db.store
                .upsert_outcome(&outcome("r1", "score", "claude", 0.2, 3_000))
                .await
                .unwrap()
        );
        assert_eq!(db.store.outcomes_since(0, 100).await.unwrap().len(), 3);
        assert_eq!(
            db.store
                .get_outcome("r1", "score", "missing")
                .await
                .unwrap(),
            None
        );
    }
}

#[tokio::test]
async fn invalid_outcomes_are_refused_and_long_details_cut() {
    for db in backends().await {
        for bad in [
            outcome("r", "score", "m", f64::NAN, 1),
            outcome("r", "score", "m", 1.5, 1),
            outcome("r", "score", "m", -0.1, 1),
            OutcomeRow {
                weight: f64::INFINITY,
                ..outcome("r", "score", "m", 0.5, 1)
            },
            outcome("", "score", "m", 0.5, 1),
            outcome("r", "", "m", 0.5, 1),
        ] {
            let e = db.store.upsert_outcome(&bad).await.unwrap_err();
            assert!(matches!(e, StoreError::Config(_)), "{}: {e}", db.name());
        }
        assert!(db.store.outcomes_since(0, 10).await.unwrap().is_empty());
        let mut long = outcome("r", "score", "m", 0.5, 1);
        long.detail = Some("é".repeat(OutcomeRow::MAX_DETAIL_BYTES));
        long.key_id = "k\0".into();
        db.store.upsert_outcome(&long).await.unwrap();
        let read = db
            .store
            .get_outcome("r", "score", "m")
            .await
            .unwrap()
            .unwrap();
        let d = read.detail.unwrap();
        assert_eq!(d.len(), OutcomeRow::MAX_DETAIL_BYTES, "{}", db.name());
        assert!(d.chars().all(|c| c == 'é'));
        assert_eq!(read.key_id, "k\u{FFFD}");
    }
}

#[tokio::test]
async fn outcomes_since_is_ordered_and_limited() {
    for db in backends().await {
        for (req, metric, model, at) in [
            ("b", "score", "m", 20),
            ("a", "score", "m", 20),
            ("a", "implicit", "m", 20),
            ("z", "score", "m", 10),
            ("c", "score", "m", 30),
            ("a", "implicit", "l", 20),
        ] {
            db.store
                .upsert_outcome(&outcome(req, metric, model, 0.5, at))
                .await
                .unwrap();
        }
        let keys = |v: Vec<OutcomeRow>| -> Vec<String> {
            v.into_iter()
                .map(|o| format!("{}:{}/{}/{}", o.updated_ms, o.request_id, o.metric, o.model))
                .collect()
        };
        assert_eq!(
            keys(db.store.outcomes_since(0, 100).await.unwrap()),
            [
                "10:z/score/m",
                "20:a/implicit/l",
                "20:a/implicit/m",
                "20:a/score/m",
                "20:b/score/m",
                "30:c/score/m"
            ],
            "{}",
            db.name()
        );
        assert_eq!(
            keys(db.store.outcomes_since(20, 2).await.unwrap()),
            ["20:a/implicit/l", "20:a/implicit/m"]
        );
        assert_eq!(
            keys(db.store.outcomes_since(21, 100).await.unwrap()),
            ["30:c/score/m"]
        );
        assert!(db.store.outcomes_since(31, 100).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn signals_on_rows_become_outcomes_in_the_same_batch() {
    for db in backends().await {
        let row = with_signal(full_row(1), 0.3);
        let mut bad = with_signal(full_row(2), f64::NAN);
        bad.signals.push(Signal {
            metric: "implicit_x".into(),
            score: 0.0,
            ..bad.signals[0].clone()
        });
        // Duplicates in one batch (the same row twice, with its signal) are one outcome.
        let batch = vec![row.clone(), row.clone(), bad.clone()];
        assert_eq!(
            db.store.insert_batch(&batch).await.unwrap(),
            2,
            "{}",
            db.name()
        );
        let model = row.served_model.clone().unwrap();
        let o = db
            .store
            .get_outcome(&row.id, "implicit", &model)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.score, 0.3);
        assert_eq!(o.weight, 0.25);
        assert_eq!(o.source, "implicit");
        assert_eq!(o.detail.as_deref(), Some("length"));
        assert_eq!(o.workspace, row.workspace);
        assert_eq!(o.key_id, row.key_id);
        assert_eq!(o.task, row.task);
        assert_eq!(o.embedding, row.embedding);
        assert_eq!((o.created_ms, o.updated_ms), (row.ts_ms + 5, row.ts_ms + 5));
        // The invalid signal was dropped, its row and its valid sibling kept.
        let bad_model = bad.served_model.clone().unwrap();
        assert_eq!(
            db.store
                .get_outcome(&bad.id, "implicit", &bad_model)
                .await
                .unwrap(),
            None
        );
        assert!(
            db.store
                .get_outcome(&bad.id, "implicit_x", &bad_model)
                .await
                .unwrap()
                .is_some()
        );
        // Replaying the row changes nothing; the row read back carries no signals.
        assert_eq!(
            db.store
                .insert_batch(std::slice::from_ref(&row))
                .await
                .unwrap(),
            0
        );
        assert_eq!(db.store.outcomes_since(0, 100).await.unwrap().len(), 2);
        let read = db.store.get_request(&row.id).await.unwrap().unwrap();
        assert!(read.signals.is_empty());
        assert_eq!(read.embedding, row.embedding);
    }
}

#[tokio::test]
async fn spooled_rows_keep_their_signals() {
    for db in backends().await {
        let (handle, writer) = LedgerWriter::spawn(db.store.clone(), cfg(Some(db.spool_dir())));
        db.break_table().await;
        for i in 0..5 {
            handle.record(with_signal(full_row(i), 0.1 * i as f64));
        }
        within(handle.flush()).await;
        assert_eq!(handle.stats().spooled, 5, "{}", db.name());
        assert!(db.store.outcomes_since(0, 100).await.unwrap().is_empty());
        let spool = std::fs::read_to_string(db.spool_file()).unwrap();
        assert!(
            spool.contains("\"signals\""),
            "the spool line carries the signals"
        );
        db.restore_table().await;
        within(handle.flush()).await;
        within(writer.shutdown()).await;
        let outcomes = db.store.outcomes_since(0, 100).await.unwrap();
        assert_eq!(outcomes.len(), 5, "{}", db.name());
        for i in 0..5 {
            let r = full_row(i);
            let o = db
                .store
                .get_outcome(&r.id, "implicit", r.served_model.as_deref().unwrap())
                .await
                .unwrap()
                .unwrap();
            assert!((o.score - 0.1 * i as f64).abs() < 1e-9);
        }
    }
}

/// A read-then-write upsert must not fail when another connection commits in between (SQLite:
/// the transaction takes the write lock at once).
#[tokio::test]
async fn outcome_upserts_succeed_while_the_writer_commits() {
    for db in backends().await {
        let store = db.store.clone();
        let batches = tokio::spawn(async move {
            for i in 0..40 {
                store
                    .insert_batch(&[with_signal(full_row(i), 0.5)])
                    .await
                    .unwrap();
            }
        });
        let mut upserts = Vec::new();
        for i in 0..40 {
            let store = db.store.clone();
            upserts.push(tokio::spawn(async move {
                store
                    .upsert_outcome(&outcome(&format!("u{}", i % 10), "score", "m", 0.5, i))
                    .await
            }));
        }
        for u in upserts {
            within(u).await.unwrap().unwrap();
        }
        within(batches).await.unwrap();
        assert_eq!(
            db.store.outcomes_since(0, 1000).await.unwrap().len(),
            50,
            "{}",
            db.name()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Provider credentials: re-sealing after a key rotation

mod reseal {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::{AuditEntry, CredentialRecord, Reseal, ResealReport, WorkspaceRecord};

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    const K9: &str = "k9:QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";

    fn ring(spec: &str) -> kairos_vault::Keyring {
        kairos_vault::Keyring::parse(spec).unwrap()
    }

    fn aad(ws: &str, provider: &str) -> String {
        format!("{ws}/{provider}")
    }

    fn entry(ws: &str, action: &str, id: &str) -> AuditEntry {
        AuditEntry {
            seq: 0,
            ts_ms: 1,
            actor: "test".into(),
            workspace_id: Some(ws.into()),
            action: action.into(),
            object_type: "credential".into(),
            object_id: id.into(),
            before_json: None,
            after_json: None,
        }
    }

    async fn add_workspace(store: &Store, id: &str) {
        let w = WorkspaceRecord {
            id: id.into(),
            name: id.into(),
            settings: "{}".into(),
            created_ms: 1,
            updated_ms: 1,
            deleted_ms: None,
        };
        store
            .upsert_workspace(&w, &entry(id, "create", id))
            .await
            .unwrap();
    }

    async fn put(store: &Store, ws: &str, provider: &str, sealed: String) {
        let c = CredentialRecord {
            workspace_id: ws.into(),
            provider: provider.into(),
            sealed,
            created_ms: 10,
            updated_ms: 20,
        };
        let id = aad(ws, provider);
        store
            .put_credential(&c, &entry(ws, "create", &id))
            .await
            .unwrap();
    }

    /// What the gateway decides for each credential (kairos-core's `reseal_credentials`).
    fn decide(ring: &kairos_vault::Keyring) -> impl FnMut(&CredentialRecord) -> Reseal + '_ {
        move |c| match ring.rotate(&c.sealed, &aad(&c.workspace_id, &c.provider)) {
            Ok(new) if new == c.sealed => Reseal::Current,
            Ok(new) => Reseal::Replace {
                audit: Box::new(entry(
                    &c.workspace_id,
                    "reseal",
                    &aad(&c.workspace_id, &c.provider),
                )),
                sealed: new,
            },
            Err(_) => Reseal::Failed,
        }
    }

    async fn opened(store: &Store, ring: &kairos_vault::Keyring, ws: &str, p: &str) -> String {
        let c = store.credential(ws, p).await.unwrap().unwrap();
        ring.open(&c.sealed, &aad(ws, p))
            .unwrap()
            .expose_secret()
            .to_owned()
    }

    #[tokio::test]
    async fn a_rotation_reseals_old_blobs_reports_unopenable_ones_and_is_idempotent() {
        for db in backends().await {
            let s = &db.store;
            let name = db.name();
            let (k1, k21, k2) = (ring(K1), ring(&format!("{K2},{K1}")), ring(K2));
            for ws in ["ws_a", "ws_b"] {
                add_workspace(s, ws).await;
            }
            put(
                s,
                "ws_a",
                "openai",
                k1.seal("sk-a-openai", &aad("ws_a", "openai")).unwrap(),
            )
            .await;
            put(
                s,
                "ws_a",
                "anthropic",
                k1.seal("sk-a-anth", &aad("ws_a", "anthropic")).unwrap(),
            )
            .await;
            // Already under the new key.
            put(
                s,
                "ws_b",
                "gemini",
                k2.seal("sk-b-gem", &aad("ws_b", "gemini")).unwrap(),
            )
            .await;
            // Under a key that is in no keyring used here.
            let lost = ring(K9).seal("sk-b-lost", &aad("ws_b", "openai")).unwrap();
            put(s, "ws_b", "openai", lost.clone()).await;
            let audit_before = s.audit_log(None, 1000).await.unwrap().len();

            let r = within(s.reseal_credentials(decide(&k21))).await.unwrap();
            assert_eq!(
                r,
                ResealReport {
                    resealed: 2,
                    current: 1,
                    failed: vec!["ws_b/openai".into()],
                },
                "{name}"
            );
            // The unopenable blob is untouched; the others are under k2, timestamps kept.
            let all = s.credentials(None).await.unwrap();
            let lost_now = all
                .iter()
                .find(|c| c.workspace_id == "ws_b" && c.provider == "openai");
            assert_eq!(lost_now.unwrap().sealed, lost, "{name}");
            for c in all.iter().filter(|c| c.sealed != lost) {
                assert_eq!(
                    kairos_vault::blob_kid(&c.sealed),
                    Some("k2"),
                    "{name}: {c:?}"
                );
                assert_eq!((c.created_ms, c.updated_ms), (10, 20), "{name}");
            }
            // One audit entry per re-sealed credential, in its workspace.
            let audit = s.audit_log(None, 1000).await.unwrap();
            assert_eq!(audit.len(), audit_before + 2, "{name}");
            assert!(
                audit[..2]
                    .iter()
                    .all(|a| a.action == "reseal" && a.workspace_id.as_deref() == Some("ws_a"))
            );

            // Idempotent.
            let again = within(s.reseal_credentials(decide(&k21))).await.unwrap();
            assert_eq!((again.resealed, again.current), (0, 3), "{name}");
            assert_eq!(again.failed, ["ws_b/openai"], "{name}");
            assert_eq!(
                s.audit_log(None, 1000).await.unwrap().len(),
                audit_before + 2
            );

            // The old key can go: k2 alone opens every re-sealed credential.
            assert_eq!(opened(s, &k2, "ws_a", "openai").await, "sk-a-openai");
            assert_eq!(opened(s, &k2, "ws_a", "anthropic").await, "sk-a-anth");
            assert_eq!(opened(s, &k2, "ws_b", "gemini").await, "sk-b-gem");
            let only_k2 = within(s.reseal_credentials(decide(&k2))).await.unwrap();
            assert_eq!((only_k2.resealed, only_k2.current), (0, 3), "{name}");
        }
    }

    #[tokio::test]
    async fn the_swap_only_replaces_the_blob_that_was_read() {
        for db in backends().await {
            let s = &db.store;
            let name = db.name();
            add_workspace(s, "ws_a").await;
            put(s, "ws_a", "openai", "kv1:k1:old".into()).await;
            let n = s.audit_log(None, 1000).await.unwrap().len();
            let e = entry("ws_a", "reseal", "ws_a/openai");
            // Stale expectation: nothing changes, no audit entry.
            assert!(
                !s.swap_credential("ws_a", "openai", "kv1:k1:other", "kv1:k2:new", &e)
                    .await
                    .unwrap(),
                "{name}"
            );
            assert!(
                !s.swap_credential("ws_a", "nope", "kv1:k1:old", "x", &e)
                    .await
                    .unwrap()
            );
            let c = s.credential("ws_a", "openai").await.unwrap().unwrap();
            assert_eq!(c.sealed, "kv1:k1:old", "{name}");
            assert_eq!(s.audit_log(None, 1000).await.unwrap().len(), n);
            // The blob that was read: swapped, with its audit entry.
            assert!(
                s.swap_credential("ws_a", "openai", "kv1:k1:old", "kv1:k2:new", &e)
                    .await
                    .unwrap(),
                "{name}"
            );
            let c = s.credential("ws_a", "openai").await.unwrap().unwrap();
            assert_eq!(
                (c.sealed.as_str(), c.created_ms, c.updated_ms),
                ("kv1:k2:new", 10, 20)
            );
            assert_eq!(s.audit_log(None, 1000).await.unwrap().len(), n + 1);
        }
    }

    /// A credential replaced between the run's read and its swap is not overwritten: the run
    /// decides again on the new blob.
    #[tokio::test]
    async fn a_concurrent_replacement_is_not_overwritten() {
        for db in backends().await {
            let name = db.name();
            let k1 = ring(K1);
            let k21 = ring(&format!("{K2},{K1}"));
            add_workspace(&db.store, "ws_a").await;
            put(
                &db.store,
                "ws_a",
                "openai",
                k1.seal("sk-old", &aad("ws_a", "openai")).unwrap(),
            )
            .await;
            // The replacement, written by "another replica" (own pool, own runtime) while the
            // run is deciding on the old blob. It is sealed with k1 too (a replica that still
            // seals with the old key), so it needs a re-seal of its own.
            let replacement = k1.seal("sk-new", &aad("ws_a", "openai")).unwrap();
            let kind = match &db.kind {
                Kind::Sqlite { url } => (url.clone(), None),
                Kind::Postgres { url, schema } => (url.clone(), Some(schema.clone())),
            };
            let mut calls = 0;
            let mut inner = decide(&k21);
            let r = within(db.store.reseal_credentials(|c| {
                calls += 1;
                if calls == 1 {
                    let (url, schema, sealed) =
                        (kind.0.clone(), kind.1.clone(), replacement.clone());
                    std::thread::spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .unwrap();
                        rt.block_on(async {
                            let other = match schema {
                                None => Store::connect(&url).await.unwrap(),
                                Some(s) => Store::connect_with_schema(&url, &s).await.unwrap(),
                            };
                            put(&other, "ws_a", "openai", sealed).await;
                        });
                    })
                    .join()
                    .unwrap();
                }
                inner(c)
            }))
            .await
            .unwrap();
            assert_eq!(calls, 2, "{name}: decided again after the swap missed");
            assert_eq!((r.resealed, r.current, r.failed.len()), (1, 0, 0), "{name}");
            let c = db
                .store
                .credential("ws_a", "openai")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(kairos_vault::blob_kid(&c.sealed), Some("k2"));
            assert_eq!(
                ring(K2)
                    .open(&c.sealed, &aad("ws_a", "openai"))
                    .unwrap()
                    .expose_secret(),
                "sk-new",
                "{name}: the concurrent replacement survives"
            );
        }
    }
}
