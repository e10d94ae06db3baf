//! The writer's backlog: rows that could not be written to the database yet.
//!
//! With a spool directory the backlog is an append-only JSON-lines file
//! (`ledger-spool.jsonl`, one [`LedgerRow`] per line, fsync'd after every append). Without one,
//! or when appending to the file fails, rows wait in a bounded in-memory queue.
//!
//! Replay goes chunk by chunk from a byte offset, so the writer can interleave it with live
//! traffic; the offset only moves after a chunk's transaction committed, and the file is
//! truncated only once every line has been committed. Inserts are idempotent on the request id,
//! so replaying a line twice (a crash between commit and truncate, duplicate lines) is harmless.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::StoreError;
use crate::row::LedgerRow;
use crate::store::Store;

/// File name of the spool inside the spool directory.
pub const SPOOL_FILE_NAME: &str = "ledger-spool.jsonl";

/// Rows per replay transaction.
const REPLAY_CHUNK: usize = 1024;

/// Upper bound on one database operation of the writer. A hung statement must not stall the
/// ledger forever: on timeout the rows go to the backlog like on any other failure.
pub(crate) const DB_OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the writer could not move rows into the database.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database operation timed out after {0:?}")]
    Timeout(Duration),
    #[error("spool I/O error: {0}")]
    Io(#[from] io::Error),
}

/// `store.insert_batch(rows)` bounded by [`DB_OP_TIMEOUT`].
pub(crate) async fn insert_timed(store: &Store, rows: &[LedgerRow]) -> Result<u64, WriteError> {
    match tokio::time::timeout(DB_OP_TIMEOUT, store.insert_batch(rows)).await {
        Ok(res) => Ok(res?),
        Err(_) => Err(WriteError::Timeout(DB_OP_TIMEOUT)),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// Result of [`Backlog::append`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    /// Rows now in the backlog (file or memory).
    pub stored: u64,
    /// Rows lost: the memory backlog was full.
    pub dropped: u64,
}

/// Result of one successful [`Backlog::replay_step`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// Rows committed to the database (including ones that already existed there).
    pub rows: u64,
    /// Spool lines that did not parse as a row and were skipped.
    pub corrupt: u64,
}

struct SpoolFile {
    path: PathBuf,
    /// File length as far as this process knows (it is the only writer).
    len: u64,
    /// Bytes before this offset have been committed to the database.
    offset: u64,
    /// Rows between `offset` and `len` (for stats).
    rows: u64,
}

pub(crate) struct Backlog {
    spool: Option<SpoolFile>,
    memory: VecDeque<LedgerRow>,
    memory_cap: usize,
}

impl Backlog {
    /// Opens (creating if needed) the spool in `dir`. If that fails, logs the error and keeps the
    /// backlog in memory only. `memory_cap` bounds the in-memory queue.
    pub(crate) async fn open(dir: Option<&Path>, memory_cap: usize) -> Backlog {
        let spool = match dir {
            None => None,
            Some(dir) => {
                let dir = dir.to_path_buf();
                let shown = dir.display().to_string();
                match blocking(move || open_spool(&dir)).await {
                    Ok(spool) => Some(spool),
                    Err(error) => {
                        tracing::error!(
                            %error,
                            spool_dir = %shown,
                            "cannot open the ledger spool; failed batches will be kept in memory only"
                        );
                        None
                    }
                }
            }
        };
        Backlog {
            spool,
            memory: VecDeque::new(),
            memory_cap,
        }
    }

    /// Rows waiting for the database.
    pub(crate) fn len(&self) -> u64 {
        self.spool.as_ref().map_or(0, |s| s.rows) + self.memory.len() as u64
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.memory.is_empty() && self.spool.as_ref().is_none_or(|s| s.offset >= s.len)
    }

    /// Forgets the memory backlog; returns how many rows were in it.
    pub(crate) fn discard_memory(&mut self) -> u64 {
        let n = self.memory.len() as u64;
        self.memory.clear();
        n
    }

    /// Appends rows to the spool file (fsync'd), or to the memory backlog when there is no spool
    /// or the append failed.
    pub(crate) async fn append(&mut self, rows: Vec<LedgerRow>) -> Appended {
        if rows.is_empty() {
            return Appended::default();
        }
        if let Some(spool) = &mut self.spool {
            match spool.append(&rows).await {
                Ok(()) => {
                    return Appended {
                        stored: rows.len() as u64,
                        dropped: 0,
                    };
                }
                Err(error) => tracing::error!(
                    %error,
                    rows = rows.len(),
                    "cannot append to the ledger spool; keeping the rows in memory"
                ),
            }
        }
        let space = self.memory_cap.saturating_sub(self.memory.len());
        let n = rows.len();
        self.memory.extend(rows.into_iter().take(space));
        let stored = n.min(space);
        Appended {
            stored: stored as u64,
            dropped: (n - stored) as u64,
        }
    }

    /// Moves up to one chunk of the backlog into the database (memory first, then the spool
    /// file). On error nothing is consumed.
    pub(crate) async fn replay_step(&mut self, store: &Store) -> Result<Replayed, WriteError> {
        if !self.memory.is_empty() {
            let n = self.memory.len().min(REPLAY_CHUNK);
            insert_timed(store, &self.memory.make_contiguous()[..n]).await?;
            self.memory.drain(..n);
            return Ok(Replayed {
                rows: n as u64,
                corrupt: 0,
            });
        }
        match &mut self.spool {
            Some(spool) if spool.offset < spool.len => spool.replay_chunk(store).await,
            _ => Ok(Replayed::default()),
        }
    }
}

impl SpoolFile {
    async fn append(&mut self, rows: &[LedgerRow]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(rows.len() * 512);
        for row in rows {
            serde_json::to_writer(&mut buf, row)?;
            buf.push(b'\n');
        }
        let path = self.path.clone();
        let expected_len = self.len;
        self.len = blocking(move || append_blocking(&path, &buf, expected_len)).await?;
        self.rows += rows.len() as u64;
        Ok(())
    }

    async fn replay_chunk(&mut self, store: &Store) -> Result<Replayed, WriteError> {
        let path = self.path.clone();
        let offset = self.offset;
        let chunk = blocking(move || read_chunk(&path, offset, REPLAY_CHUNK)).await?;
        if !chunk.rows.is_empty() {
            insert_timed(store, &chunk.rows).await?;
        }
        let lines = chunk.rows.len() as u64 + chunk.corrupt;
        if chunk.consumed == 0 {
            // The file ends before the length we know: it was cut behind our back.
            self.len = self.offset;
        }
        self.offset += chunk.consumed;
        self.rows = self.rows.saturating_sub(lines);
        if self.offset >= self.len {
            // Everything up to the end has been committed: start over with an empty file.
            let path = self.path.clone();
            blocking(move || truncate_blocking(&path)).await?;
            self.offset = 0;
            self.len = 0;
            self.rows = 0;
        }
        Ok(Replayed {
            rows: chunk.rows.len() as u64,
            corrupt: chunk.corrupt,
        })
    }
}

/// Creates the directory and file if missing, repairs a torn last line (a crash during an
/// append) by terminating it, and counts the pending lines.
fn open_spool(dir: &Path) -> io::Result<SpoolFile> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(SPOOL_FILE_NAME);
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)?;
    let mut len = file.metadata()?.len();
    let mut rows = 0;
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
            file.sync_data()?;
            len += 1;
        }
        file.seek(SeekFrom::Start(0))?;
        let mut reader = BufReader::new(&file);
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if !line.trim_ascii().is_empty() {
                rows += 1;
            }
        }
    }
    if !existed {
        // Make the new directory entry durable too.
        File::open(dir)?.sync_all()?;
    }
    Ok(SpoolFile {
        path,
        len,
        offset: 0,
        rows,
    })
}

/// Appends `buf` and fsyncs. On failure, cuts the file back to its previous length so a torn
/// write cannot glue a partial line to the next append. Returns the new length.
fn append_blocking(path: &Path, buf: &[u8], expected_len: u64) -> io::Result<u64> {
    let mut file = OpenOptions::new().append(true).create(true).open(path)?;
    let before = file.metadata()?.len();
    if before != expected_len {
        tracing::warn!(
            expected_len,
            actual_len = before,
            "the ledger spool changed size behind the writer's back (another process using the same spool_dir?)"
        );
    }
    let result = file.write_all(buf).and_then(|()| file.sync_data());
    if let Err(error) = result {
        if let Err(cut) = file.set_len(before) {
            tracing::error!(error = %cut, "cannot cut back a failed ledger spool append");
        }
        return Err(error);
    }
    Ok(before + buf.len() as u64)
}

struct Chunk {
    rows: Vec<LedgerRow>,
    corrupt: u64,
    consumed: u64,
}

/// Reads up to `max_rows` lines starting at byte `offset`.
fn read_chunk(path: &Path, offset: u64, max_rows: usize) -> io::Result<Chunk> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(file);
    let mut chunk = Chunk {
        rows: Vec::new(),
        corrupt: 0,
        consumed: 0,
    };
    let mut line = Vec::new();
    while chunk.rows.len() + (chunk.corrupt as usize) < max_rows {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let line_offset = offset + chunk.consumed;
        chunk.consumed += n as u64;
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_slice::<LedgerRow>(text) {
            Ok(row) => chunk.rows.push(row),
            Err(error) => {
                tracing::error!(
                    %error,
                    line_offset,
                    "skipping a corrupt line in the ledger spool"
                );
                chunk.corrupt += 1;
            }
        }
    }
    Ok(chunk)
}

fn truncate_blocking(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(0)?;
    file.sync_all()
}
