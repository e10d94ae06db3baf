//! The intent journal: no request that reached a provider is lost to a crash (test matrix A6).
//!
//! Rows reach the database after the request ends, through the batch writer; a process killed
//! with SIGKILL loses the rows of requests still in flight, although the provider saw (and may
//! bill) those calls. So, just before a request's first upstream call, its row as known then
//! (id, key, workspace, model, provider, ...) is appended to `journal-<generation>.log` in the
//! data directory: one `write(2)` of one JSON line, no `fsync` (the page cache survives the
//! death of the process; an OS crash is covered by neither this nor SQLite's
//! `synchronous=NORMAL`, see A10). When the request's final row is committed to the database
//! (or written to the fsync'd spool), its journal entry is released; a generation file is
//! deleted once it is no longer the current one and all its entries are released. Generations
//! rotate every [`ROTATE_AFTER`].
//!
//! At the next start, [`recover`] reads every journal file left, and for each entry without a
//! row in the database inserts one with outcome `interrupted` (status 502, error kind
//! `gateway_interrupted`, cost unknown: to reconcile with the provider's invoice); then the
//! files are removed. Rows are keyed by request id, so recovery never duplicates a row.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::row::LedgerRow;
use crate::store::Store;

/// A new generation file is started after this long.
pub const ROTATE_AFTER: Duration = Duration::from_secs(10);
const PREFIX: &str = "journal-";
const SUFFIX: &str = ".log";

struct Generation {
    path: PathBuf,
    outstanding: u64,
}

struct Inner {
    file: std::fs::File,
    current: u32,
    opened: Instant,
    gens: HashMap<u32, Generation>,
}

/// See the module docs. One per process and data directory.
pub struct Journal {
    dir: PathBuf,
    /// Distinguishes this process's files from a predecessor's (which [`recover`] handles).
    epoch: u128,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("dir", &self.dir).finish()
    }
}

fn file_name(epoch: u128, generation: u32) -> String {
    format!("{PREFIX}{epoch}-{generation:08}{SUFFIX}")
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

impl Journal {
    /// Starts a new journal in `dir` (created if missing). Call [`recover`] first.
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = dir.join(file_name(epoch, 0));
        let file = open_append(&path)?;
        let mut gens = HashMap::new();
        gens.insert(
            0,
            Generation {
                path,
                outstanding: 0,
            },
        );
        Ok(Journal {
            dir: dir.to_owned(),
            epoch,
            inner: Mutex::new(Inner {
                file,
                current: 0,
                opened: Instant::now(),
                gens,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that the request of `row` is about to call a provider. Returns the generation to
    /// [`release`](Self::release) once the final row is durable, or `None` if the entry could
    /// not be written (logged; the request goes on).
    pub fn begin(&self, row: &LedgerRow) -> Option<u32> {
        let mut line = match serde_json::to_vec(row) {
            Ok(l) => l,
            Err(_) => return None,
        };
        line.push(b'\n');
        let mut g = self.lock();
        if g.opened.elapsed() >= ROTATE_AFTER {
            self.rotate(&mut g);
        }
        match g.file.write_all(&line) {
            Ok(()) => {
                let current = g.current;
                if let Some(gen_) = g.gens.get_mut(&current) {
                    gen_.outstanding += 1;
                }
                Some(current)
            }
            Err(e) => {
                tracing::error!(error = %e, "intent journal write failed; this request is not crash-safe");
                None
            }
        }
    }

    fn rotate(&self, g: &mut Inner) {
        let next = g.current.wrapping_add(1);
        let path = self.dir.join(file_name(self.epoch, next));
        match open_append(&path) {
            Ok(f) => {
                let old = g.current;
                g.file = f;
                g.current = next;
                g.opened = Instant::now();
                g.gens.insert(
                    next,
                    Generation {
                        path,
                        outstanding: 0,
                    },
                );
                Self::delete_if_done(g, old);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot rotate the intent journal; appending to the current file");
                g.opened = Instant::now();
            }
        }
    }

    fn delete_if_done(g: &mut Inner, generation: u32) {
        if generation == g.current {
            return;
        }
        if let Some(gen_) = g.gens.get(&generation)
            && gen_.outstanding == 0
        {
            let _ = std::fs::remove_file(&gen_.path);
            g.gens.remove(&generation);
        }
    }

    /// The final row of an entry of `generation` is durable.
    pub fn release(&self, generation: u32) {
        let mut g = self.lock();
        if let Some(gen_) = g.gens.get_mut(&generation) {
            gen_.outstanding = gen_.outstanding.saturating_sub(1);
        }
        Self::delete_if_done(&mut g, generation);
    }

    /// Journal files this process has open or pending deletion (for tests and stats).
    pub fn files(&self) -> usize {
        self.lock().gens.len()
    }
}

/// Inserts an `interrupted` row for every journal entry of a previous process that has no row
/// in the database, then removes the journal files. Returns the number of rows inserted.
pub async fn recover(dir: &Path, store: &Store) -> Result<u64, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut files = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(PREFIX) && name.ends_with(SUFFIX) {
            files.push(e.path());
        }
    }
    let mut recovered = 0;
    for path in files {
        let text = std::fs::read_to_string(&path)?;
        let mut missing = Vec::new();
        for line in text.lines() {
            // A line cut by the crash is simply incomplete JSON: skipped.
            let Ok(mut row) = serde_json::from_str::<LedgerRow>(line) else {
                continue;
            };
            if store.get_request(&row.id).await?.is_some() {
                continue;
            }
            row.outcome = "interrupted".into();
            row.status_code = 502;
            row.error_kind = Some("gateway_interrupted".into());
            row.cost_micros = None;
            row.usage_source = "none".into();
            missing.push(row);
        }
        recovered += store.insert_batch(&missing).await?;
        std::fs::remove_file(&path)?;
    }
    if recovered > 0 {
        tracing::warn!(
            rows = recovered,
            "recovered requests interrupted by a crash from the intent journal (outcome `interrupted`, cost to reconcile)"
        );
    }
    Ok(recovered)
}
