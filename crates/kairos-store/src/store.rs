//! [`Store`]: the request ledger on SQLite or PostgreSQL.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Executor, SqlSafeStr};

use crate::error::StoreError;
use crate::row::{LedgerRow, ListQuery, OutcomeRow};

/// The ledger columns, in insert and select order.
macro_rules! columns {
    () => {
        "id, ts_ms, key_id, workspace, route, inbound_api, requested_model, served_model, \
         provider, stream, status_code, outcome, error_kind, input_tokens, output_tokens, \
         cached_tokens, cache_write_tokens, reasoning_tokens, usage_source, cost_micros, \
         latency_total_us, latency_upstream_us, overhead_us, ttft_us, metadata, end_user, \
         trace_id, attempts, task, receipt, attempts_detail, byok, markup_micros, embedding"
    };
}

/// The outcome columns, in insert and select order.
macro_rules! outcome_columns {
    () => {
        "request_id, metric, model, workspace, key_id, task, embedding, score, weight, source, \
         detail, created_ms, updated_ms"
    };
}

/// Column list as a string (tests check it against [`NUM_COLUMNS`]).
#[cfg(test)]
pub(crate) const COLUMNS: &str = columns!();
/// Number of bind parameters per row in the multi-row insert.
pub(crate) const NUM_COLUMNS: usize = 34;
/// Outcome columns as a string (tests check it against [`NUM_OUTCOME_COLUMNS`]).
#[cfg(test)]
pub(crate) const OUTCOME_COLUMNS: &str = outcome_columns!();
/// Number of bind parameters per outcome in the multi-row upsert.
pub(crate) const NUM_OUTCOME_COLUMNS: usize = 13;
/// Upper bound on `limit` in [`Store::outcomes_since`].
pub const MAX_OUTCOMES_PER_PAGE: u32 = 10_000;

/// SQLite's default `SQLITE_MAX_VARIABLE_NUMBER` since 3.32 (the bundled build keeps it).
pub(crate) const SQLITE_MAX_PARAMS: usize = 32_766;
/// PostgreSQL's wire protocol carries the parameter count in an `i16`-sized field.
pub(crate) const POSTGRES_MAX_PARAMS: usize = 65_535;
/// Rows per `INSERT` statement even when the parameter limit would allow more; one
/// transaction still covers the whole batch.
const MAX_ROWS_PER_STATEMENT: usize = 512;

/// Rows per multi-row `INSERT` statement under a bind-parameter limit.
pub(crate) const fn rows_per_statement(max_params: usize) -> usize {
    rows_per_statement_of(max_params, NUM_COLUMNS)
}

/// Rows of `columns` bind parameters each per statement under a bind-parameter limit.
pub(crate) const fn rows_per_statement_of(max_params: usize, columns: usize) -> usize {
    let by_params = max_params / columns;
    if by_params < MAX_ROWS_PER_STATEMENT {
        by_params
    } else {
        MAX_ROWS_PER_STATEMENT
    }
}

/// Split `rows` into statements of a few fixed sizes (`max`, then 128, 32, 8, 2, 1 rows), so
/// that a handful of distinct SQL texts cover every batch and each stays in the connection's
/// prepared-statement cache. (Chunking by `max` alone gives a new statement text, hence a new
/// prepare, for nearly every batch: profiled at ~1.2% of the gateway's CPU under load.)
pub(crate) fn fixed_chunks<T>(rows: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let max = max.max(1);
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = [max, 128, 32, 8, 2, 1]
            .into_iter()
            .find(|&s| s <= max && s <= rest.len())
            .unwrap_or(1);
        let (head, tail) = rest.split_at(size);
        rest = tail;
        Some(head)
    })
}

/// How long to wait for a pooled connection before failing (the writer then spools).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite `busy_timeout`: how long a writer waits for another writer's lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const SQLITE_MAX_CONNECTIONS: u32 = 4;
const POSTGRES_MAX_CONNECTIONS: u32 = 4;

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "requests",
        include_str!("../migrations/sqlite/0001_requests.sql"),
    ),
    (
        2,
        "routing receipts",
        include_str!("../migrations/sqlite/0002_receipts.sql"),
    ),
    (
        3,
        "attempts",
        include_str!("../migrations/sqlite/0003_attempts.sql"),
    ),
    (
        4,
        "tenancy",
        include_str!("../migrations/sqlite/0004_tenancy.sql"),
    ),
    (
        5,
        "outcomes",
        include_str!("../migrations/sqlite/0005_outcomes.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "requests",
        include_str!("../migrations/postgres/0001_requests.sql"),
    ),
    (
        2,
        "routing receipts",
        include_str!("../migrations/postgres/0002_receipts.sql"),
    ),
    (
        3,
        "attempts",
        include_str!("../migrations/postgres/0003_attempts.sql"),
    ),
    (
        4,
        "tenancy",
        include_str!("../migrations/postgres/0004_tenancy.sql"),
    ),
    (
        5,
        "outcomes",
        include_str!("../migrations/postgres/0005_outcomes.sql"),
    ),
];

/// The migrations of one backend, embedded at compile time.
///
/// This is what `sqlx::migrate!("migrations/<backend>")` would build (same versions,
/// descriptions and checksums), written out because the workspace builds sqlx without its
/// `macros` feature. When adding a migration, add the file and its line here.
fn migrator(migrations: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Replaces NUL characters, which PostgreSQL rejects in `TEXT`, with U+FFFD.
fn clean(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn clean_opt(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(clean)
}

/// Why an outcome cannot be stored (`None`: it can).
fn outcome_problem(o: &OutcomeRow) -> Option<&'static str> {
    if !(o.score.is_finite() && (0.0..=1.0).contains(&o.score)) {
        Some("score must be a number in [0, 1]")
    } else if !(o.weight.is_finite() && o.weight >= 0.0) {
        Some("weight must be a finite number >= 0")
    } else if o.request_id.is_empty() || o.metric.is_empty() || o.model.is_empty() {
        Some("request_id, metric and model must not be empty")
    } else {
        None
    }
}

/// `detail` cut to [`OutcomeRow::MAX_DETAIL_BYTES`] at a character boundary.
fn clip_detail(d: &Option<String>) -> Option<Cow<'_, str>> {
    d.as_deref().map(|s| {
        let mut end = s.len().min(OutcomeRow::MAX_DETAIL_BYTES);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        clean(&s[..end])
    })
}

/// The outcomes carried by `rows` (their [`crate::Signal`]s), valid ones only, one per key (the
/// last one wins, so that a multi-row upsert never touches the same key twice).
fn batch_outcomes(rows: &[LedgerRow]) -> Vec<OutcomeRow> {
    let mut out: Vec<OutcomeRow> = Vec::new();
    for row in rows {
        for s in &row.signals {
            let o = OutcomeRow::from_signal(row, s);
            if let Some(problem) = outcome_problem(&o) {
                tracing::warn!(request_id = %o.request_id, metric = %o.metric, problem, "dropping an invalid outcome");
                continue;
            }
            match out.iter_mut().find(|x| {
                x.request_id == o.request_id && x.metric == o.metric && x.model == o.model
            }) {
                Some(x) => *x = o,
                None => out.push(o),
            }
        }
    }
    out
}
/// The SQL of one backend. Written once as a macro because sqlx has no backend-generic
/// `rows_affected`, and the trait bounds for a generic version are longer than the code.
macro_rules! backend_sql {
    ($db:ty, $greatest:literal, $max_params:expr, $begin_write:literal) => {
        use sqlx::{Pool, QueryBuilder, Row};

        use crate::row::{LedgerRow, ListQuery, OutcomeRow};

        type DbRow = <$db as sqlx::Database>::Row;

        /// One transaction; multi-row `INSERT ... ON CONFLICT (id) DO NOTHING` statements of
        /// at most `rows_per_statement` rows. Returns the number of rows actually inserted.
        pub(crate) async fn insert_batch(
            pool: &Pool<$db>,
            rows: &[LedgerRow],
            rows_per_statement: usize,
        ) -> Result<u64, sqlx::Error> {
            if rows.is_empty() {
                return Ok(0);
            }
            let mut tx = pool.begin().await?;
            let mut inserted = 0;
            for chunk in super::fixed_chunks(rows, rows_per_statement) {
                let mut qb =
                    QueryBuilder::<$db>::new(concat!("INSERT INTO requests (", columns!(), ") "));
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(super::clean(&r.id))
                        .push_bind(r.ts_ms)
                        .push_bind(super::clean(&r.key_id))
                        .push_bind(super::clean_opt(&r.workspace))
                        .push_bind(super::clean(&r.route))
                        .push_bind(super::clean(&r.inbound_api))
                        .push_bind(super::clean(&r.requested_model))
                        .push_bind(super::clean_opt(&r.served_model))
                        .push_bind(super::clean_opt(&r.provider))
                        .push_bind(r.stream)
                        .push_bind(r.status_code)
                        .push_bind(super::clean(&r.outcome))
                        .push_bind(super::clean_opt(&r.error_kind))
                        .push_bind(r.input_tokens)
                        .push_bind(r.output_tokens)
                        .push_bind(r.cached_tokens)
                        .push_bind(r.cache_write_tokens)
                        .push_bind(r.reasoning_tokens)
                        .push_bind(super::clean(&r.usage_source))
                        .push_bind(r.cost_micros)
                        .push_bind(r.latency_total_us)
                        .push_bind(r.latency_upstream_us)
                        .push_bind(r.overhead_us)
                        .push_bind(r.ttft_us)
                        .push_bind(super::clean_opt(&r.metadata))
                        .push_bind(super::clean_opt(&r.end_user))
                        .push_bind(super::clean(&r.trace_id))
                        .push_bind(r.attempts)
                        .push_bind(super::clean_opt(&r.task))
                        .push_bind(super::clean_opt(&r.receipt))
                        .push_bind(super::clean_opt(&r.attempts_detail))
                        .push_bind(r.byok)
                        .push_bind(r.markup_micros)
                        .push_bind(super::clean_opt(&r.embedding));
                });
                qb.push(" ON CONFLICT (id) DO NOTHING");
                inserted += qb.build().execute(&mut *tx).await?.rows_affected();
            }
            let outcomes = super::batch_outcomes(rows);
            let per_statement =
                super::rows_per_statement_of($max_params, super::NUM_OUTCOME_COLUMNS);
            for chunk in super::fixed_chunks(&outcomes, per_statement) {
                upsert_outcomes(&mut *tx, chunk).await?;
            }
            tx.commit().await?;
            Ok(inserted)
        }

        /// One multi-row upsert; `outcomes` must not repeat a key.
        async fn upsert_outcomes(
            conn: &mut <$db as sqlx::Database>::Connection,
            outcomes: &[OutcomeRow],
        ) -> Result<(), sqlx::Error> {
            let mut qb = QueryBuilder::<$db>::new(concat!(
                "INSERT INTO outcomes (",
                outcome_columns!(),
                ") "
            ));
            qb.push_values(outcomes, |mut b, o| {
                b.push_bind(super::clean(&o.request_id))
                    .push_bind(super::clean(&o.metric))
                    .push_bind(super::clean(&o.model))
                    .push_bind(super::clean_opt(&o.workspace))
                    .push_bind(super::clean(&o.key_id))
                    .push_bind(super::clean_opt(&o.task))
                    .push_bind(super::clean_opt(&o.embedding))
                    .push_bind(o.score)
                    .push_bind(o.weight)
                    .push_bind(super::clean(&o.source))
                    .push_bind(super::clip_detail(&o.detail))
                    .push_bind(o.created_ms)
                    .push_bind(o.updated_ms);
            });
            qb.push(concat!(
                " ON CONFLICT (request_id, metric, model) DO UPDATE SET score = excluded.score, \
                 weight = excluded.weight, detail = excluded.detail, updated_ms = ",
                $greatest,
                "(outcomes.updated_ms, excluded.updated_ms)"
            ));
            qb.build().execute(conn).await?;
            Ok(())
        }

        /// Upserts one outcome; `true` when its key existed (an update).
        pub(crate) async fn upsert_outcome(
            pool: &Pool<$db>,
            o: &OutcomeRow,
        ) -> Result<bool, sqlx::Error> {
            // Read then write: on SQLite the transaction must take the write lock at once, or a
            // commit by another connection between the two fails it (SQLITE_BUSY_SNAPSHOT).
            let mut tx = pool.begin_with($begin_write).await?;
            let mut qb =
                QueryBuilder::<$db>::new("SELECT created_ms FROM outcomes WHERE request_id = ");
            qb.push_bind(super::clean(&o.request_id))
                .push(" AND metric = ")
                .push_bind(super::clean(&o.metric))
                .push(" AND model = ")
                .push_bind(super::clean(&o.model));
            let existed = qb.build().fetch_optional(&mut *tx).await?;
            upsert_outcomes(&mut *tx, std::slice::from_ref(o)).await?;
            tx.commit().await?;
            Ok(existed.is_some())
        }

        fn decode_outcome(row: &DbRow) -> Result<OutcomeRow, sqlx::Error> {
            Ok(OutcomeRow {
                request_id: row.try_get("request_id")?,
                metric: row.try_get("metric")?,
                model: row.try_get("model")?,
                workspace: row.try_get("workspace")?,
                key_id: row.try_get("key_id")?,
                task: row.try_get("task")?,
                embedding: row.try_get("embedding")?,
                score: row.try_get("score")?,
                weight: row.try_get("weight")?,
                source: row.try_get("source")?,
                detail: row.try_get("detail")?,
                created_ms: row.try_get("created_ms")?,
                updated_ms: row.try_get("updated_ms")?,
            })
        }

        pub(crate) async fn get_outcome(
            pool: &Pool<$db>,
            request_id: &str,
            metric: &str,
            model: &str,
        ) -> Result<Option<OutcomeRow>, sqlx::Error> {
            let mut qb = QueryBuilder::<$db>::new(concat!(
                "SELECT ",
                outcome_columns!(),
                " FROM outcomes WHERE request_id = "
            ));
            qb.push_bind(request_id)
                .push(" AND metric = ")
                .push_bind(metric)
                .push(" AND model = ")
                .push_bind(model);
            let row = qb.build().fetch_optional(pool).await?;
            row.as_ref().map(decode_outcome).transpose()
        }

        pub(crate) async fn outcomes_since(
            pool: &Pool<$db>,
            updated_ms_at_least: i64,
            limit: u32,
        ) -> Result<Vec<OutcomeRow>, sqlx::Error> {
            let mut qb = QueryBuilder::<$db>::new(concat!(
                "SELECT ",
                outcome_columns!(),
                " FROM outcomes WHERE updated_ms >= "
            ));
            qb.push_bind(updated_ms_at_least)
                .push(" ORDER BY updated_ms, request_id, metric, model LIMIT ")
                .push_bind(i64::from(limit));
            let rows = qb.build().fetch_all(pool).await?;
            rows.iter().map(decode_outcome).collect()
        }

        fn decode(row: &DbRow) -> Result<LedgerRow, sqlx::Error> {
            Ok(LedgerRow {
                id: row.try_get("id")?,
                ts_ms: row.try_get("ts_ms")?,
                key_id: row.try_get("key_id")?,
                workspace: row.try_get("workspace")?,
                route: row.try_get("route")?,
                inbound_api: row.try_get("inbound_api")?,
                requested_model: row.try_get("requested_model")?,
                served_model: row.try_get("served_model")?,
                provider: row.try_get("provider")?,
                stream: row.try_get("stream")?,
                status_code: row.try_get("status_code")?,
                outcome: row.try_get("outcome")?,
                error_kind: row.try_get("error_kind")?,
                input_tokens: row.try_get("input_tokens")?,
                output_tokens: row.try_get("output_tokens")?,
                cached_tokens: row.try_get("cached_tokens")?,
                cache_write_tokens: row.try_get("cache_write_tokens")?,
                reasoning_tokens: row.try_get("reasoning_tokens")?,
                usage_source: row.try_get("usage_source")?,
                cost_micros: row.try_get("cost_micros")?,
                latency_total_us: row.try_get("latency_total_us")?,
                latency_upstream_us: row.try_get("latency_upstream_us")?,
                overhead_us: row.try_get("overhead_us")?,
                ttft_us: row.try_get("ttft_us")?,
                metadata: row.try_get("metadata")?,
                end_user: row.try_get("end_user")?,
                trace_id: row.try_get("trace_id")?,
                attempts: row.try_get("attempts")?,
                task: row.try_get("task")?,
                receipt: row.try_get("receipt")?,
                attempts_detail: row.try_get("attempts_detail")?,
                byok: row.try_get("byok")?,
                markup_micros: row.try_get("markup_micros")?,
                embedding: row.try_get("embedding")?,
                signals: Vec::new(),
                journal_gen: None,
            })
        }

        pub(crate) async fn get_request(
            pool: &Pool<$db>,
            id: &str,
        ) -> Result<Option<LedgerRow>, sqlx::Error> {
            let mut qb = QueryBuilder::<$db>::new(concat!(
                "SELECT ",
                columns!(),
                " FROM requests WHERE id = "
            ));
            qb.push_bind(id);
            let row = qb.build().fetch_optional(pool).await?;
            row.as_ref().map(decode).transpose()
        }

        pub(crate) async fn list_requests(
            pool: &Pool<$db>,
            q: &ListQuery,
        ) -> Result<Vec<LedgerRow>, sqlx::Error> {
            let mut qb = QueryBuilder::<$db>::new(concat!(
                "SELECT ",
                columns!(),
                " FROM requests WHERE 1 = 1"
            ));
            if let Some(key_id) = &q.key_id {
                qb.push(" AND key_id = ").push_bind(key_id.as_str());
            }
            if let Some(model) = &q.model {
                qb.push(" AND served_model = ").push_bind(model.as_str());
            }
            if let Some(since_ms) = q.since_ms {
                qb.push(" AND ts_ms >= ").push_bind(since_ms);
            }
            if let Some(until_ms) = q.until_ms {
                qb.push(" AND ts_ms < ").push_bind(until_ms);
            }
            qb.push(" ORDER BY ts_ms DESC, id DESC LIMIT ")
                .push_bind(i64::from(q.effective_limit()));
            let rows = qb.build().fetch_all(pool).await?;
            rows.iter().map(decode).collect()
        }

        pub(crate) async fn count(pool: &Pool<$db>) -> Result<i64, sqlx::Error> {
            sqlx::query_scalar("SELECT COUNT(*) FROM requests")
                .fetch_one(pool)
                .await
        }
    };
}

mod sqlite_sql {
    backend_sql!(
        sqlx::Sqlite,
        "MAX",
        super::SQLITE_MAX_PARAMS,
        "BEGIN IMMEDIATE"
    );
}

mod postgres_sql {
    backend_sql!(
        sqlx::Postgres,
        "GREATEST",
        super::POSTGRES_MAX_PARAMS,
        "BEGIN"
    );
}

/// The request ledger on SQLite or PostgreSQL. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Store {
    pub(crate) backend: Backend,
}

#[derive(Clone)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl std::fmt::Debug for Store {
    // Deliberately shows no connect options: they may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

enum Scheme {
    Sqlite,
    Postgres,
}

fn scheme(url: &str) -> Result<Scheme, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Scheme::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Scheme::Postgres)
    } else {
        Err(StoreError::Config(
            "unsupported database URL: expected sqlite:... or postgres://...".to_owned(),
        ))
    }
}

fn ssl_mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// A failed TLS negotiation with PostgreSQL becomes a configuration error that says what to
/// check (sqlx's own message names the cause: "server does not support TLS", "invalid peer
/// certificate: UnknownIssuer", ...). Other errors pass unchanged.
fn postgres_connect_error(e: sqlx::Error, mode: PgSslMode) -> StoreError {
    // A refused certificate arrives as an I/O error wrapping the rustls error.
    let cause: Option<String> = match &e {
        sqlx::Error::Tls(cause) => Some(cause.to_string()),
        sqlx::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(ToString::to_string),
        _ => None,
    };
    match cause {
        Some(cause) => StoreError::Config(format!(
            "TLS connection to PostgreSQL failed (sslmode={}): {cause}. sslmode=require and \
             verify-* need a server with TLS enabled; verify-ca and verify-full also need the \
             server's certificate to chain to a built-in root (Mozilla's list) or to \
             sslrootcert=/path/to/ca.pem in the URL; sslmode=disable connects without TLS \
             (docs/config.md)",
            ssl_mode_name(mode)
        )),
        None => StoreError::Database(e),
    }
}

/// `true` for a plain SQL identifier that needs no quoting (`[A-Za-z_][A-Za-z0-9_]*`, at most
/// 63 bytes, PostgreSQL's limit).
fn is_plain_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 63
}

impl Store {
    /// Connects, creates what is missing and runs the migrations.
    ///
    /// * `sqlite://path/to/ledger.db` (`?mode=rwc` optional: the file and its parent directory
    ///   are created when missing unless `mode=ro`), `sqlite::memory:` (one connection; the
    ///   database lives as long as the store).
    /// * `postgres://user@host:port/db` (or `postgresql://`): a pool of a few connections.
    ///   TLS (rustls, ring) follows `sslmode` as in libpq: `disable`, `prefer` (the default:
    ///   TLS when the server offers it, certificate not checked), `require` (TLS or fail,
    ///   certificate not checked), `verify-ca`, `verify-full` (certificate checked against the
    ///   built-in Mozilla roots, or `sslrootcert=/path/ca.pem`; `verify-full` also checks the
    ///   host name). A failed TLS negotiation is a [`StoreError::Config`] that says so.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        match scheme(url)? {
            Scheme::Sqlite => Self::connect_sqlite(url).await,
            Scheme::Postgres => Self::connect_postgres(url, None).await,
        }
    }

    /// PostgreSQL only: creates `schema` if absent and sets `search_path` to it on every pooled
    /// connection, so the tables and the migration history live in that schema (tests use this
    /// for isolation). `schema` must be a plain identifier (`[A-Za-z_][A-Za-z0-9_]*`).
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<Store, StoreError> {
        match scheme(url)? {
            Scheme::Sqlite => Err(StoreError::Config(
                "connect_with_schema is only supported for PostgreSQL".to_owned(),
            )),
            Scheme::Postgres => Self::connect_postgres(url, Some(schema)).await,
        }
    }

    async fn connect_sqlite(url: &str) -> Result<Store, StoreError> {
        let rest = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
        let params: Vec<&str> = params.split('&').collect();
        let in_memory = database == ":memory:" || params.contains(&"mode=memory");
        let read_only = params.contains(&"mode=ro");

        let mut opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid SQLite URL: {e}")))?
            .busy_timeout(SQLITE_BUSY_TIMEOUT);
        let pool_opts = if in_memory {
            // One connection, never recycled: the in-memory database dies with its last
            // connection.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            opts = opts
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            if !read_only {
                opts = opts.create_if_missing(true);
                if let Some(parent) = opts.get_filename().parent()
                    && !parent.as_os_str().is_empty()
                {
                    create_dir_all(parent).await?;
                }
            }
            SqlitePoolOptions::new().max_connections(SQLITE_MAX_CONNECTIONS)
        };
        let pool = pool_opts
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await?;
        migrator(SQLITE_MIGRATIONS).run(&pool).await?;
        Ok(Store {
            backend: Backend::Sqlite(pool),
        })
    }

    async fn connect_postgres(url: &str, schema: Option<&str>) -> Result<Store, StoreError> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        let mode = opts.get_ssl_mode();
        let mut pool_opts = PgPoolOptions::new()
            .max_connections(POSTGRES_MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        if let Some(schema) = schema {
            if !is_plain_identifier(schema) {
                return Err(StoreError::Config(format!(
                    "invalid schema name {schema:?}: expected [A-Za-z_][A-Za-z0-9_]*"
                )));
            }
            let mut conn = sqlx::PgConnection::connect_with(&opts)
                .await
                .map_err(|e| postgres_connect_error(e, mode))?;
            // The identifier was validated above, so quoting it is enough.
            conn.execute(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
            )))
            .await?;
            conn.close().await?;
            let set_search_path = format!("SET search_path TO \"{schema}\"");
            pool_opts = pool_opts.after_connect(move |conn, _meta| {
                let sql = set_search_path.clone();
                Box::pin(async move {
                    conn.execute(AssertSqlSafe(sql)).await?;
                    Ok(())
                })
            });
        }
        let pool = pool_opts
            .connect_with(opts)
            .await
            .map_err(|e| postgres_connect_error(e, mode))?;
        migrator(POSTGRES_MIGRATIONS).run(&pool).await?;
        Ok(Store {
            backend: Backend::Postgres(pool),
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Inserts `rows` in one transaction as multi-row `INSERT`s (chunked under the backend's
    /// bind-parameter limit). Idempotent on `id`: rows whose id exists are skipped, also
    /// duplicates within `rows`. Returns the number of rows actually inserted.
    ///
    /// The rows' [`crate::Signal`]s are upserted into `outcomes` in the same transaction (as by
    /// [`Store::upsert_outcome`], so a replayed row changes nothing); invalid ones are dropped
    /// with a warning rather than failing the batch.
    pub async fn insert_batch(&self, rows: &[LedgerRow]) -> Result<u64, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite(pool) => {
                sqlite_sql::insert_batch(pool, rows, rows_per_statement(SQLITE_MAX_PARAMS)).await?
            }
            Backend::Postgres(pool) => {
                postgres_sql::insert_batch(pool, rows, rows_per_statement(POSTGRES_MAX_PARAMS))
                    .await?
            }
        })
    }

    /// The row with this request id.
    pub async fn get_request(&self, id: &str) -> Result<Option<LedgerRow>, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite(pool) => sqlite_sql::get_request(pool, id).await?,
            Backend::Postgres(pool) => postgres_sql::get_request(pool, id).await?,
        })
    }

    /// Rows matching `q`, newest first (`ts_ms` descending, then `id` descending), at most
    /// [`ListQuery::MAX_LIMIT`].
    pub async fn list_requests(&self, q: &ListQuery) -> Result<Vec<LedgerRow>, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite(pool) => sqlite_sql::list_requests(pool, q).await?,
            Backend::Postgres(pool) => postgres_sql::list_requests(pool, q).await?,
        })
    }

    /// Inserts or updates one outcome (key: request id, metric, model). On conflict `score`,
    /// `weight` and `detail` are replaced, `updated_ms` becomes the later of the stored and the
    /// given value, and `created_ms` is kept. Returns `true` when the key existed (an update).
    /// A score outside [0, 1] (or not finite), a negative weight or an empty key part is a
    /// [`StoreError::Config`]; `detail` is cut to [`OutcomeRow::MAX_DETAIL_BYTES`].
    pub async fn upsert_outcome(&self, o: &OutcomeRow) -> Result<bool, StoreError> {
        if let Some(problem) = outcome_problem(o) {
            return Err(StoreError::Config(format!("invalid outcome: {problem}")));
        }
        Ok(match &self.backend {
            Backend::Sqlite(pool) => sqlite_sql::upsert_outcome(pool, o).await?,
            Backend::Postgres(pool) => postgres_sql::upsert_outcome(pool, o).await?,
        })
    }

    /// Outcomes with `updated_ms >= updated_ms_at_least`, ordered by
    /// `(updated_ms, request_id, metric, model)`, at most `limit` (capped at
    /// [`MAX_OUTCOMES_PER_PAGE`]). To follow the table, call again with the last row's
    /// `updated_ms` and skip the keys already seen at that millisecond.
    pub async fn outcomes_since(
        &self,
        updated_ms_at_least: i64,
        limit: u32,
    ) -> Result<Vec<OutcomeRow>, StoreError> {
        let limit = limit.min(MAX_OUTCOMES_PER_PAGE);
        Ok(match &self.backend {
            Backend::Sqlite(pool) => {
                sqlite_sql::outcomes_since(pool, updated_ms_at_least, limit).await?
            }
            Backend::Postgres(pool) => {
                postgres_sql::outcomes_since(pool, updated_ms_at_least, limit).await?
            }
        })
    }

    /// The outcome of `request_id` by `metric` for `model`.
    pub async fn get_outcome(
        &self,
        request_id: &str,
        metric: &str,
        model: &str,
    ) -> Result<Option<OutcomeRow>, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite(pool) => {
                sqlite_sql::get_outcome(pool, request_id, metric, model).await?
            }
            Backend::Postgres(pool) => {
                postgres_sql::get_outcome(pool, request_id, metric, model).await?
            }
        })
    }

    /// Number of rows in the ledger.
    pub async fn count(&self) -> Result<i64, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite(pool) => sqlite_sql::count(pool).await?,
            Backend::Postgres(pool) => postgres_sql::count(pool).await?,
        })
    }

    /// One round trip to the database (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                pool.execute("SELECT 1").await?;
            }
            Backend::Postgres(pool) => {
                pool.execute("SELECT 1").await?;
            }
        }
        Ok(())
    }

    /// Drops a PostgreSQL schema made by [`Store::connect_with_schema`] (test clean-up). The
    /// name must be lowercase ASCII letters, digits and `_`.
    pub async fn drop_postgres_schema(url: &str, schema: &str) -> Result<(), StoreError> {
        if schema.is_empty()
            || !schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(StoreError::Config(format!(
                "invalid schema name `{schema}`"
            )));
        }
        let mut conn = sqlx::PgConnection::connect(url).await?;
        conn.execute(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .await?;
        conn.close().await?;
        Ok(())
    }

    /// Closes the pool: waits for checked-out connections to come back, then closes them all.
    /// Every later operation on this store (and its clones) fails.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }

    /// Runs raw SQL (tests only: fault injection and inspection).
    #[cfg(test)]
    pub(crate) async fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        let sql = AssertSqlSafe(sql.to_owned());
        match &self.backend {
            Backend::Sqlite(pool) => {
                pool.execute(sql).await?;
            }
            Backend::Postgres(pool) => {
                pool.execute(sql).await?;
            }
        }
        Ok(())
    }

    /// Runs a query returning one text value (tests only: pragmas and settings).
    #[cfg(test)]
    pub(crate) async fn query_text(&self, sql: &str) -> Result<String, StoreError> {
        let sql = AssertSqlSafe(sql.to_owned());
        Ok(match &self.backend {
            Backend::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
            Backend::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
        })
    }
}

async fn create_dir_all(path: &Path) -> Result<(), StoreError> {
    tokio::fs::create_dir_all(path).await?;
    Ok(())
}

#[cfg(test)]
mod chunk_tests {
    use super::*;

    fn rows(n: usize) -> Vec<LedgerRow> {
        (0..n)
            .map(|i| LedgerRow {
                id: i.to_string(),
                ..LedgerRow::default()
            })
            .collect()
    }

    #[test]
    fn fixed_chunks_cover_every_row_with_few_distinct_sizes() {
        let mut sizes = std::collections::BTreeSet::new();
        for n in 0..1500 {
            let r = rows(n);
            let chunks: Vec<&[LedgerRow]> = fixed_chunks(&r, 512).collect();
            assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), n);
            let ids: Vec<&str> = chunks
                .iter()
                .flat_map(|c| c.iter().map(|r| r.id.as_str()))
                .collect();
            assert!(ids.iter().zip(r.iter()).all(|(a, b)| *a == b.id));
            sizes.extend(chunks.iter().map(|c| c.len()));
        }
        assert_eq!(
            sizes.into_iter().collect::<Vec<_>>(),
            vec![1, 2, 8, 32, 128, 512]
        );
    }
}
