//! kairos-store: the durable request ledger of the gateway, on SQLite (default) or PostgreSQL.
//!
//! * [`Store`]: one type over both backends. [`Store::connect`] takes `sqlite://path`,
//!   `sqlite::memory:` or `postgres://...`, creates what is missing and runs the migrations
//!   (`migrations/sqlite`, `migrations/postgres`, embedded at compile time).
//! * [`LedgerRow`]: exactly one row per request, also for errors and client disconnects. The
//!   request id is the primary key and inserts are idempotent (`ON CONFLICT (id) DO NOTHING`),
//!   so a row written twice (retry, spool replay) is stored once.
//! * [`LedgerWriter`] / [`LedgerHandle`]: rows are written off the request path.
//!   [`LedgerHandle::record`] never blocks (a `try_send` into a bounded channel); one writer
//!   task takes the first row, collects up to `max_batch` rows or until `max_delay`, inserts
//!   them in one transaction, and goes straight on while the channel is not empty (it drains
//!   until empty before it sleeps, so a backlog cannot build up one batch per interval).
//!
//! # When the database fails
//!
//! A batch whose insert fails (database down, locked, timed out after 30 s) is appended to
//! the spool file `ledger-spool.jsonl` in `spool_dir` as JSON lines and fsync'd. While the
//! database keeps failing, new batches go to the spool too and the database is retried with
//! capped exponential backoff (50 ms doubling to 5 s). Once a write succeeds the spool is
//! replayed chunk by chunk, interleaved with live traffic, and truncated only after every line
//! has been committed. A spool left by a crash is replayed when the next writer starts.
//! Without `spool_dir` failed batches wait in memory, bounded by `channel_capacity` rows;
//! rows beyond that bound are counted in [`LedgerStats::dropped`].
//!
//! # Durability (test matrix A6, A7, A10)
//!
//! * **SQLite** runs in WAL mode with `synchronous=NORMAL`: a committed batch survives an
//!   application crash (SIGKILL, panic), but the last commits may be lost on an OS crash or
//!   power loss. That is the trade-off chosen for request logs; the future money ledger
//!   (budgets, settlements) will use `synchronous=FULL`, which survives both. `busy_timeout`
//!   is 5 s.
//! * **SIGKILL**: rows still in the channel, and the batch being collected or inserted, are
//!   lost. The bound is the channel contents: while the database keeps up that is at most
//!   about `max_delay` worth of traffic plus one batch. Rows already in the spool survive (it
//!   is fsync'd after every append).
//! * **Graceful shutdown** ([`LedgerWriter::shutdown`]): closes the channel, writes every
//!   queued row (looping until the channel is empty), tries once more to replay the backlog,
//!   and returns the counters. Zero loss when the database is up; with the database down the
//!   rows stay in the spool for the next start (a memory-only backlog is lost and counted).
//!
//! Known limits: one process per spool directory (the spool file is not locked); text values
//! have NUL characters replaced with U+FFFD (PostgreSQL rejects NUL in `TEXT`).

mod error;
pub mod journal;
mod row;
mod spool;
mod store;
mod tenancy;
mod writer;

pub use error::StoreError;
pub use row::{LedgerRow, ListQuery, OutcomeRow, Signal};
pub use spool::SPOOL_FILE_NAME;
pub use store::{MAX_OUTCOMES_PER_PAGE, Store};
pub use tenancy::{
    AuditEntry, CredentialRecord, KeyRecord, Reseal, ResealReport, Scope, UsageSummary,
    WorkspaceRecord,
};
pub use writer::{LedgerHandle, LedgerStats, LedgerWriter, LedgerWriterConfig};

#[cfg(test)]
mod tests;
