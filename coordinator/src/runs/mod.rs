//! Run history: what was run, by whom, with what result, and where each run
//! is in its life.
//!
//! Kept in memory (the newest [`MAX_RUNS`]). With `--store DIR` every record
//! is also appended to `DIR/runs.pb` as a checksummed frame ([`frame`]) and
//! fsync'd before it counts: a record that cannot be written is an error to
//! the caller, never a silent loss. A run is recorded when it starts
//! (`running`) and again when it ends (`done` or `failed`); the later record
//! of a run id supersedes the earlier one.
//!
//! Opening a store checks that the directory can really be written (a file
//! is written, fsync'd and removed), reads the file (skipping and reporting
//! damaged records, keeping those after them), rewrites a file of the old
//! unframed format as frames (the original kept as `runs.pb.legacy`), cuts a
//! torn write off the end, and marks every run still `running` as
//! `interrupted`: the coordinator stopped before it ended.
//!
//! It keeps records; when a run starts and how it ends is decided above it
//! (the `execute` module).

mod frame;
pub mod live;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use probemesh_proto::{compat, pb};

use crate::bounds;
use crate::error::{Error, Result};

/// Runs kept in memory.
pub const MAX_RUNS: usize = 1_000;

/// The run file, in the store directory.
const FILE_NAME: &str = "runs.pb";
/// Where a converted file of the old format is kept.
const LEGACY_NAME: &str = "runs.pb.legacy";
/// Written, fsync'd and removed at open to prove the directory writable.
const WRITE_TEST_NAME: &str = ".probemesh-write-test";

/// The run history. Clones share it.
#[derive(Debug, Default, Clone)]
pub struct RunStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    history: History,
    /// `None` for an in-memory store.
    file: Option<RunFile>,
}

/// The newest record of each run, in the order the runs were first seen.
#[derive(Debug, Default)]
struct History {
    by_seq: BTreeMap<u64, pb::RunRecord>,
    seq_of: HashMap<String, u64>,
    next_seq: u64,
}

/// The open run file.
#[derive(Debug)]
struct RunFile {
    path: PathBuf,
    file: File,
    /// Bytes known written and synced.
    len: u64,
}

impl RunStore {
    /// An in-memory store.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// A store persisted in `dir/runs.pb`, loading what is already there.
    /// Refused when `dir` cannot be written.
    pub fn open(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|source| Error::StoreUnwritable {
            what: "create the store directory".into(),
            path: dir.clone(),
            source,
        })?;
        prove_writable(&dir)?;
        let path = dir.join(FILE_NAME);
        let read_err = |source| Error::Store {
            op: "read run store",
            path: path.clone(),
            source,
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(read_err(source)),
        };
        let legacy = frame::is_legacy(&bytes);
        let scan = if legacy {
            frame::scan_legacy(&bytes)
        } else {
            frame::scan(&bytes)
        };
        for d in &scan.damaged {
            tracing::warn!(
                path = %path.display(),
                offset = d.offset,
                skipped_bytes = d.skipped,
                "run store: skipped a damaged record; the records after it are kept"
            );
        }
        if legacy {
            convert_legacy(&dir, &path, &scan.records)?;
        } else {
            cut_torn_tail(&path, scan.readable_end(bytes.len()), bytes.len())?;
        }
        let mut history = History::default();
        for mut record in scan.records {
            // Records from before the check/verdict enums.
            compat::upgrade(&mut record);
            history.upsert(record);
        }
        let file = RunFile::open(&dir, path.clone())?;
        let store = Self {
            inner: Arc::new(Mutex::new(Inner {
                history,
                file: Some(file),
            })),
        };
        let interrupted = store.interrupt_running()?;
        tracing::info!(
            path = %path.display(),
            runs = store.lock().history.by_seq.len(),
            damaged_records = scan.damaged.len(),
            skipped_bytes = scan.damaged.iter().map(|d| d.skipped).sum::<usize>(),
            interrupted,
            converted_from_legacy = legacy,
            "run store loaded"
        );
        Ok(store)
    }

    /// Records a run (written and synced first, when persisted), superseding
    /// an earlier record of the same run id. On error nothing is kept, on
    /// disk or in memory.
    pub fn insert(&self, record: pb::RunRecord) -> Result<()> {
        self.lock().record(record)
    }

    /// [`RunStore::insert`] on the blocking pool: writing and syncing a file
    /// can take a while on a busy disk, and must not hold an async thread.
    pub async fn write(&self, record: pb::RunRecord) -> Result<()> {
        let store = self.clone();
        let what = what_failed(&record);
        match tokio::task::spawn_blocking(move || store.insert(record)).await {
            Ok(written) => written,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down: the write never ran.
            Err(e) => Err(Error::StoreUnwritable {
                what,
                path: self.path().unwrap_or_default(),
                source: std::io::Error::other(e),
            }),
        }
    }

    /// Keeps `record` in memory only: what this coordinator knows of a run
    /// whose record could not be written. After a restart the run shows as
    /// its last written record says (a start record: `interrupted`).
    pub fn note(&self, record: pb::RunRecord) {
        self.lock().history.upsert(record);
    }

    /// Marks every run recorded `running` as `interrupted` (written like any
    /// record) and returns how many: at open, for runs the coordinator was
    /// running when it stopped. Holds the store while it does, so no run
    /// ends in between.
    pub fn interrupt_running(&self) -> Result<usize> {
        let mut inner = self.lock();
        let running: Vec<pb::RunRecord> = inner
            .history
            .by_seq
            .values()
            .filter(|r| r.state() == pb::RunState::Running)
            .cloned()
            .collect();
        let count = running.len();
        for mut record in running {
            record.set_state(pb::RunState::Interrupted);
            inner.record(record)?;
        }
        Ok(count)
    }

    /// The page of the history after run `token` (from the newest when
    /// empty), newest first, at most `size` runs ([`bounds::page`]).
    pub fn page(&self, token: &str, size: usize) -> Result<bounds::Page<pb::RunRecord>> {
        let inner = self.lock();
        bounds::page(
            inner.history.by_seq.values().rev(),
            |r| &r.run_id,
            token,
            size,
            bounds::fit_run,
        )
    }

    /// One run by id, or by a unique prefix of its id.
    pub fn get(&self, run_id: &str) -> Option<pb::RunRecord> {
        let inner = self.lock();
        let history = &inner.history;
        if let Some(r) = history
            .seq_of
            .get(run_id)
            .and_then(|seq| history.by_seq.get(seq))
        {
            return Some(r.clone());
        }
        let mut matches = history
            .by_seq
            .values()
            .filter(|r| r.run_id.starts_with(run_id));
        match (matches.next(), matches.next()) {
            (Some(one), None) if !run_id.is_empty() => Some(one.clone()),
            _ => None,
        }
    }

    /// The run file, for a persisted store.
    fn path(&self) -> Option<PathBuf> {
        self.lock().file.as_ref().map(|f| f.path.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    /// Writes `record` (when persisted), then keeps it.
    fn record(&mut self, record: pb::RunRecord) -> Result<()> {
        if let Some(file) = self.file.as_mut() {
            file.append(&record)
                .map_err(|source| Error::StoreUnwritable {
                    what: what_failed(&record),
                    path: file.path.clone(),
                    source,
                })?;
        }
        self.history.upsert(record);
        Ok(())
    }
}

/// What writing `record` was for, as an error says it.
fn what_failed(record: &pb::RunRecord) -> String {
    let id = &record.run_id;
    match record.state() {
        pb::RunState::Running => format!("record the start of run {id}"),
        pb::RunState::Interrupted => format!("record run {id} as interrupted"),
        _ => format!("record the end of run {id}"),
    }
}

impl History {
    /// Keeps `record` as its run's newest, dropping the oldest run past
    /// [`MAX_RUNS`].
    fn upsert(&mut self, record: pb::RunRecord) {
        if let Some(seq) = self.seq_of.get(&record.run_id) {
            self.by_seq.insert(*seq, record);
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seq_of.insert(record.run_id.clone(), seq);
        self.by_seq.insert(seq, record);
        if self.by_seq.len() > MAX_RUNS
            && let Some((_, oldest)) = self.by_seq.pop_first()
        {
            self.seq_of.remove(&oldest.run_id);
        }
    }
}

impl RunFile {
    /// Opens `path` for appending (creating it, and syncing `dir` so the new
    /// entry survives a crash).
    fn open(dir: &Path, path: PathBuf) -> Result<Self> {
        let unwritable = |source| Error::StoreUnwritable {
            what: "open the run file".into(),
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(unwritable)?;
        let len = file.metadata().map_err(unwritable)?.len();
        sync_dir(dir)?;
        Ok(Self { path, file, len })
    }

    /// Appends `record` as one frame and syncs it. A failed write is cut off
    /// again, so no torn frame stays behind the next record.
    fn append(&mut self, record: &pb::RunRecord) -> std::io::Result<()> {
        let frame = frame::encode(record);
        match self
            .file
            .write_all(&frame)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => {
                self.len += frame.len() as u64;
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = self.file.set_len(self.len) {
                    tracing::warn!(path = %self.path.display(), error = %cut, "could not cut a failed write off the run file; the next open skips it");
                }
                Err(e)
            }
        }
    }
}

/// Writes, syncs and removes a file in `dir`: permission bits do not say
/// whether a full or read-only file system takes a write (and root ignores
/// them), so this asks the file system itself.
fn prove_writable(dir: &Path) -> Result<()> {
    let test = dir.join(WRITE_TEST_NAME);
    let unwritable = |source| Error::StoreUnwritable {
        what: "write a test file".into(),
        path: dir.to_owned(),
        source,
    };
    let mut file = File::create(&test).map_err(unwritable)?;
    let written = file
        .write_all(b"probemesh store write test\n")
        .and_then(|()| file.sync_all());
    drop(file);
    let removed = std::fs::remove_file(&test);
    written.map_err(unwritable)?;
    removed.map_err(unwritable)
}

/// Rewrites a file of the old format as frames: the new file is written and
/// synced beside it, the original kept as `runs.pb.legacy`, then the new one
/// renamed over `path`; a crash at any point leaves either file whole.
fn convert_legacy(dir: &Path, path: &Path, records: &[pb::RunRecord]) -> Result<()> {
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let legacy = dir.join(LEGACY_NAME);
    let err = |what: &str, path: &Path, source| Error::StoreUnwritable {
        what: format!("convert the run file to the framed format ({what})"),
        path: path.to_owned(),
        source,
    };
    let bytes: Vec<u8> = records.iter().flat_map(frame::encode).collect();
    let mut file = File::create(&tmp).map_err(|e| err("create", &tmp, e))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| err("write", &tmp, e))?;
    match std::fs::remove_file(&legacy) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("replace the old copy", &legacy, e)),
    }
    std::fs::hard_link(path, &legacy).map_err(|e| err("keep the original", &legacy, e))?;
    std::fs::rename(&tmp, path).map_err(|e| err("rename", path, e))?;
    sync_dir(dir)?;
    tracing::warn!(
        path = %path.display(),
        legacy = %legacy.display(),
        records = records.len(),
        "run store: converted a file of the old format (no checksums) to frames; the original is kept"
    );
    Ok(())
}

/// Cuts a torn write (a damaged stretch reaching the end) off the file, so
/// the next record follows the last whole one.
fn cut_torn_tail(path: &Path, readable_end: usize, len: usize) -> Result<()> {
    if readable_end == len {
        return Ok(());
    }
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| {
            f.set_len(readable_end as u64)?;
            f.sync_all()
        })
        .map_err(|source| Error::StoreUnwritable {
            what: "cut a torn write off the end of the run file".into(),
            path: path.to_owned(),
            source,
        })?;
    tracing::warn!(path = %path.display(), offset = readable_end, cut_bytes = len - readable_end, "run store: cut a torn write off the end");
    Ok(())
}

/// Syncs the directory itself, so entries created or renamed in it persist.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::StoreUnwritable {
            what: "sync the store directory".into(),
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests;
