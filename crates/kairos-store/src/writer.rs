//! The batch writer: takes ledger rows off the request path and writes them in batches.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::row::LedgerRow;
use crate::spool::{Backlog, insert_timed};
use crate::store::Store;

/// First retry delay after a failed database write; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Settings of [`LedgerWriter`].
#[derive(Clone, Debug)]
pub struct LedgerWriterConfig {
    /// Rows that can wait between [`LedgerHandle::record`] and the writer task (default 65,536).
    /// Also the bound of the in-memory backlog used without a spool. At least 1.
    pub channel_capacity: usize,
    /// Rows per transaction (default 512). At least 1.
    pub max_batch: usize,
    /// How long the writer waits for a batch to fill after its first row (default 20 ms).
    pub max_delay: Duration,
    /// Directory of the spool file `ledger-spool.jsonl`, where batches go while the database
    /// fails. `None` keeps them in memory (bounded by `channel_capacity`, lost on exit).
    pub spool_dir: Option<PathBuf>,
    /// The intent journal ([`crate::journal`]): entries are released once their rows are
    /// durable. `None`: no crash recovery of in-flight requests.
    pub journal: Option<Arc<crate::journal::Journal>>,
}

impl PartialEq for LedgerWriterConfig {
    fn eq(&self, o: &Self) -> bool {
        self.channel_capacity == o.channel_capacity
            && self.max_batch == o.max_batch
            && self.max_delay == o.max_delay
            && self.spool_dir == o.spool_dir
            && match (&self.journal, &o.journal) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for LedgerWriterConfig {}

impl Default for LedgerWriterConfig {
    fn default() -> Self {
        LedgerWriterConfig {
            channel_capacity: 65_536,
            max_batch: 512,
            max_delay: Duration::from_millis(20),
            spool_dir: None,
            journal: None,
        }
    }
}

/// Counters of a writer, since it was spawned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerStats {
    /// Rows committed to the database straight from the channel.
    pub written: u64,
    /// Rows put into the backlog (spool file or memory) because the database failed.
    pub spooled: u64,
    /// Rows committed to the database from the backlog (including a spool left by an earlier
    /// run, and rows that turned out to be there already).
    pub replayed: u64,
    /// Rows lost: channel full or writer stopped, memory backlog full, unparsable spool lines,
    /// memory backlog left at shutdown.
    pub dropped: u64,
    /// Rows waiting in the channel now.
    pub queue_len: u64,
    /// Rows waiting in the backlog now (spool file plus memory).
    pub backlog: u64,
}

#[derive(Default)]
struct Shared {
    written: AtomicU64,
    spooled: AtomicU64,
    replayed: AtomicU64,
    dropped: AtomicU64,
    backlog: AtomicU64,
}

impl Shared {
    fn snapshot(&self, queue_len: u64) -> LedgerStats {
        LedgerStats {
            written: self.written.load(Ordering::Relaxed),
            spooled: self.spooled.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            queue_len,
            backlog: self.backlog.load(Ordering::Relaxed),
        }
    }

    fn add_dropped(&self, n: u64) -> u64 {
        self.dropped.fetch_add(n, Ordering::Relaxed) + n
    }
}

#[expect(
    clippy::large_enum_variant,
    reason = "nearly every message is a row; boxing would add an allocation per request"
)]
enum Msg {
    Row(LedgerRow),
    Flush(oneshot::Sender<()>),
}

/// The sending side: cheap to clone, one per request path.
#[derive(Clone)]
pub struct LedgerHandle {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    journal: Option<Arc<crate::journal::Journal>>,
}

impl std::fmt::Debug for LedgerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerHandle")
            .field("stats", &self.stats())
            .finish()
    }
}

impl LedgerHandle {
    /// Journals a request about to call a provider (see [`crate::journal`]); the returned
    /// generation goes on its row.
    pub fn journal_begin(&self, row: &LedgerRow) -> Option<u32> {
        self.journal.as_ref().and_then(|j| j.begin(row))
    }

    /// Queues a row for the writer. Never blocks and never awaits: if the channel is full (or
    /// the writer has stopped) the row is counted in [`LedgerStats::dropped`] and an error is
    /// logged (rate-limited). With a working spool the channel only fills if the writer cannot
    /// even append to the spool as fast as requests arrive.
    pub fn record(&self, row: LedgerRow) {
        let (row, reason) = match self.tx.try_send(Msg::Row(row)) {
            Ok(()) => return,
            Err(TrySendError::Full(Msg::Row(row))) => (row, "ledger channel full"),
            Err(TrySendError::Closed(Msg::Row(row))) => (row, "ledger writer stopped"),
            Err(TrySendError::Full(Msg::Flush(_)) | TrySendError::Closed(Msg::Flush(_))) => {
                return;
            }
        };
        let total = self.shared.add_dropped(1);
        if total.is_power_of_two() || total.is_multiple_of(10_000) {
            tracing::error!(
                request_id = %row.id,
                dropped_total = total,
                "{reason}: ledger row dropped"
            );
        }
    }

    /// Waits until every row recorded before this call is committed or in the backlog, and
    /// tries to replay the backlog now (ignoring the retry backoff). For tests and shutdown
    /// paths, not for the request path. Returns at once if the writer has stopped.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            // An error means the writer stopped; there is nothing left to wait for.
            let _ = done.await;
        }
    }

    /// Current counters.
    pub fn stats(&self) -> LedgerStats {
        let queue_len = self.tx.max_capacity() - self.tx.capacity();
        self.shared.snapshot(queue_len as u64)
    }
}

/// The writer task. Keep it and call [`LedgerWriter::shutdown`] on graceful shutdown; if it is
/// dropped instead, the task keeps running until every [`LedgerHandle`] is dropped.
#[must_use = "call LedgerWriter::shutdown on graceful shutdown to flush the ledger"]
pub struct LedgerWriter {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LedgerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerWriter")
            .field("stats", &self.shared.snapshot(0))
            .finish_non_exhaustive()
    }
}

impl LedgerWriter {
    /// Spawns the writer task on the current tokio runtime (panics outside one, like
    /// `tokio::spawn`). The task first replays a spool left by a previous run, if any.
    pub fn spawn(store: Store, cfg: LedgerWriterConfig) -> (LedgerHandle, LedgerWriter) {
        let capacity = cfg.channel_capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let shared = Arc::new(Shared::default());
        let journal_for_handle = cfg.journal.clone();
        let task = Task {
            journal: cfg.journal,
            store,
            rx,
            shutdown: Some(shutdown_rx),
            max_batch: cfg.max_batch.max(1),
            max_delay: cfg.max_delay,
            shared: Arc::clone(&shared),
            spool_dir: cfg.spool_dir,
            memory_cap: capacity,
            retry_at: None,
            backoff: MIN_BACKOFF,
        };
        let task = tokio::spawn(task.run());
        let handle = LedgerHandle {
            tx,
            shared: Arc::clone(&shared),
            journal: journal_for_handle,
        };
        (
            handle,
            LedgerWriter {
                shutdown: shutdown_tx,
                task,
                shared,
            },
        )
    }

    /// Closes the channel (later [`LedgerHandle::record`] calls count as dropped), writes every
    /// row still queued, tries once more to replay the backlog, and returns the final counters.
    /// Rows still in the spool file afterwards are replayed by the next writer on the same
    /// spool directory; a memory backlog that could not be written is counted as dropped.
    pub async fn shutdown(self) -> LedgerStats {
        // An error means the task already ended (every handle dropped).
        let _ = self.shutdown.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the ledger writer task failed");
        }
        self.shared.snapshot(0)
    }
}

#[expect(
    clippy::large_enum_variant,
    reason = "carries a Msg by value on its way into the batch"
)]
enum Next {
    Msg(Msg),
    /// The channel is closed and empty.
    Closed,
    /// The collection deadline passed.
    Deadline,
    /// Time to work on the backlog.
    BacklogDue,
}

struct Task {
    journal: Option<Arc<crate::journal::Journal>>,
    store: Store,
    rx: mpsc::Receiver<Msg>,
    shutdown: Option<oneshot::Receiver<()>>,
    max_batch: usize,
    max_delay: Duration,
    shared: Arc<Shared>,
    /// The backlog is opened when the task starts (it touches the filesystem).
    spool_dir: Option<PathBuf>,
    memory_cap: usize,
    /// `Some`: the database failed; do not try it before this instant.
    retry_at: Option<Instant>,
    /// Delay before the next retry after the next failure.
    backoff: Duration,
}

async fn wait_shutdown(rx: &mut Option<oneshot::Receiver<()>>) -> bool {
    match rx {
        Some(rx) => rx.await.is_ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Task {
    async fn run(mut self) {
        let mut backlog = Backlog::open(self.spool_dir.as_deref(), self.memory_cap).await;
        if !backlog.is_empty() {
            tracing::info!(
                rows = backlog.len(),
                "replaying the ledger spool left by a previous run"
            );
        }
        self.shared.backlog.store(backlog.len(), Ordering::Relaxed);
        let mut batch: Vec<LedgerRow> = Vec::with_capacity(self.max_batch);
        let mut acks: Vec<oneshot::Sender<()>> = Vec::new();

        loop {
            // Wait for the first message, or for backlog work while idle.
            let backlog_at = if backlog.is_empty() {
                None
            } else {
                Some(self.retry_at.unwrap_or_else(Instant::now))
            };
            match self.next(None, backlog_at).await {
                Next::Msg(msg) => take(msg, &mut batch, &mut acks),
                Next::Closed => break,
                Next::BacklogDue => {
                    self.replay_step(&mut backlog).await;
                    continue;
                }
                Next::Deadline => continue,
            }
            // Collect up to max_batch rows or until max_delay; a flush request ends the batch.
            // `None` (an absurdly large max_delay): wait for a full batch, a flush or shutdown.
            let deadline = Instant::now().checked_add(self.max_delay);
            while batch.len() < self.max_batch && acks.is_empty() {
                let msg = match self.rx.try_recv() {
                    Ok(msg) => msg,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => match self.next(deadline, None).await {
                        Next::Msg(msg) => msg,
                        Next::Closed | Next::Deadline | Next::BacklogDue => break,
                    },
                };
                take(msg, &mut batch, &mut acks);
            }
            self.write(&mut backlog, &mut batch).await;
            if !acks.is_empty() {
                self.drain_backlog(&mut backlog).await;
                for ack in acks.drain(..) {
                    // The flusher may have given up waiting; that is fine.
                    let _ = ack.send(());
                }
            } else if !backlog.is_empty() && self.retry_at.is_none() {
                // Interleave replay with live traffic: one chunk per live batch.
                self.replay_step(&mut backlog).await;
            }
            // Loop: the next message is taken at once if the channel is not empty, so the
            // writer drains until empty before it sleeps.
        }

        // The channel is closed and empty.
        self.drain_backlog(&mut backlog).await;
        let lost = backlog.discard_memory();
        if lost > 0 {
            self.shared.add_dropped(lost);
            tracing::error!(
                rows = lost,
                "ledger writer stopped with unwritten rows in the memory backlog; they are lost"
            );
        }
        if !backlog.is_empty() {
            tracing::warn!(
                rows = backlog.len(),
                "ledger writer stopped with rows in the spool; the next start replays them"
            );
        }
        self.shared.backlog.store(backlog.len(), Ordering::Relaxed);
    }

    /// The next message, or `Deadline` at `deadline`, or `BacklogDue` at `backlog_at`. A
    /// shutdown request closes the channel (buffered messages are still delivered, then
    /// `Closed`).
    async fn next(&mut self, deadline: Option<Instant>, backlog_at: Option<Instant>) -> Next {
        loop {
            tokio::select! {
                // Shutdown first: under sustained load the channel is never empty.
                biased;
                requested = wait_shutdown(&mut self.shutdown) => {
                    self.shutdown = None;
                    if requested {
                        self.rx.close();
                    }
                    // Otherwise the LedgerWriter was dropped: keep running until every handle
                    // is dropped.
                }
                msg = self.rx.recv() => {
                    return match msg {
                        Some(msg) => Next::Msg(msg),
                        None => Next::Closed,
                    };
                }
                () = sleep_until(deadline) => return Next::Deadline,
                () = sleep_until(backlog_at) => return Next::BacklogDue,
            }
        }
    }

    fn release(&self, gens: &[u32]) {
        if let Some(j) = &self.journal {
            for g in gens {
                j.release(*g);
            }
        }
    }

    /// Writes the batch to the database, or to the backlog while the database is failing.
    async fn write(&mut self, backlog: &mut Backlog, batch: &mut Vec<LedgerRow>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let db_allowed = self.retry_at.is_none_or(|at| Instant::now() >= at);
        let gens: Vec<u32> = batch.iter().filter_map(|r| r.journal_gen).collect();
        if db_allowed {
            match insert_timed(&self.store, batch).await {
                Ok(_) => {
                    self.shared.written.fetch_add(n, Ordering::Relaxed);
                    self.note_success();
                    batch.clear();
                    self.release(&gens);
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, rows = n, "ledger insert failed; rows go to the backlog");
                    self.note_failure();
                }
            }
        }
        let rows = std::mem::replace(batch, Vec::with_capacity(self.max_batch));
        let appended = backlog.append(rows).await;
        self.shared
            .spooled
            .fetch_add(appended.stored, Ordering::Relaxed);
        if self.spool_dir.is_some() && appended.dropped == 0 {
            // In the fsync'd spool: as durable as the database for a crash.
            self.release(&gens);
        }
        if appended.dropped > 0 {
            let total = self.shared.add_dropped(appended.dropped);
            tracing::error!(
                rows = appended.dropped,
                dropped_total = total,
                "ledger memory backlog full; rows dropped"
            );
        }
        self.shared.backlog.store(backlog.len(), Ordering::Relaxed);
    }

    /// Moves one chunk of the backlog into the database. Returns `false` on failure.
    async fn replay_step(&mut self, backlog: &mut Backlog) -> bool {
        let ok = match backlog.replay_step(&self.store).await {
            Ok(replayed) => {
                self.shared
                    .replayed
                    .fetch_add(replayed.rows, Ordering::Relaxed);
                if replayed.corrupt > 0 {
                    self.shared.add_dropped(replayed.corrupt);
                }
                if replayed.rows > 0 {
                    self.note_success();
                }
                if backlog.is_empty() {
                    tracing::info!("ledger backlog replayed");
                }
                true
            }
            Err(error) => {
                self.note_failure();
                tracing::warn!(
                    %error,
                    backlog = backlog.len(),
                    retry_in_ms = self.retry_at.map(|at| at.saturating_duration_since(Instant::now()).as_millis()),
                    "ledger database still failing"
                );
                false
            }
        };
        self.shared.backlog.store(backlog.len(), Ordering::Relaxed);
        ok
    }

    /// Replays until the backlog is empty or the database fails (ignores the backoff).
    async fn drain_backlog(&mut self, backlog: &mut Backlog) {
        while !backlog.is_empty() {
            if !self.replay_step(backlog).await {
                break;
            }
        }
    }

    fn note_success(&mut self) {
        self.retry_at = None;
        self.backoff = MIN_BACKOFF;
    }

    fn note_failure(&mut self) {
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

fn take(msg: Msg, batch: &mut Vec<LedgerRow>, acks: &mut Vec<oneshot::Sender<()>>) {
    match msg {
        Msg::Row(row) => batch.push(row),
        Msg::Flush(ack) => acks.push(ack),
    }
}
