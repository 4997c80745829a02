//! Run history: what was run, by whom, with what result.
//!
//! Kept in memory, newest last, bounded; with `--store DIR` every finished
//! run is also appended to `DIR/runs.pb` (length-delimited `RunRecord`s) and
//! read back at start-up.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use probemesh_proto::pb;
use prost::Message as _;

use crate::bounds;
use crate::error::{Error, Result};

/// Runs kept in memory.
pub const MAX_RUNS: usize = 1_000;

/// The run history.
#[derive(Debug, Default)]
pub struct RunStore {
    runs: Mutex<VecDeque<pb::RunRecord>>,
    file: Option<PathBuf>,
}

impl RunStore {
    /// An in-memory store.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// A store persisted in `dir/runs.pb`, loading what is already there.
    pub fn open(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|source| Error::Store {
            op: "create store directory",
            path: dir.clone(),
            source,
        })?;
        let file = dir.join("runs.pb");
        let mut runs = VecDeque::new();
        match std::fs::read(&file) {
            Ok(bytes) => {
                let mut buf = bytes.as_slice();
                while !buf.is_empty() {
                    match pb::RunRecord::decode_length_delimited(&mut buf) {
                        Ok(mut r) => {
                            // Records from before the check/verdict enums.
                            probemesh_proto::compat::upgrade(&mut r);
                            push_bounded(&mut runs, r)
                        }
                        Err(e) => {
                            tracing::warn!(path = %file.display(), error = %e, "run store has a damaged tail; ignoring it");
                            break;
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Store {
                    op: "read run store",
                    path: file,
                    source,
                });
            }
        }
        Ok(Self {
            runs: Mutex::new(runs),
            file: Some(file),
        })
    }

    /// Records a finished run.
    pub fn insert(&self, record: pb::RunRecord) -> Result<()> {
        if let Some(path) = &self.file {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| {
                    f.write_all(&record.encode_length_delimited_to_vec())
                        .map(|()| f)
                })
                .map_err(|source| Error::Store {
                    op: "append to run store",
                    path: path.clone(),
                    source,
                })?;
            f.flush().map_err(|source| Error::Store {
                op: "flush run store",
                path: path.clone(),
                source,
            })?;
        }
        push_bounded(&mut self.lock(), record);
        Ok(())
    }

    /// The newest `limit` runs, newest first (`0` means all kept).
    pub fn list(&self, limit: usize) -> Vec<pb::RunRecord> {
        let runs = self.lock();
        let limit = if limit == 0 { runs.len() } else { limit };
        runs.iter().rev().take(limit).cloned().collect()
    }

    /// The page of the history after run `token` (from the newest when
    /// empty), newest first, at most `size` runs ([`bounds::page`]).
    pub fn page(&self, token: &str, size: usize) -> Result<bounds::Page<pb::RunRecord>> {
        let runs = self.lock();
        bounds::page(
            runs.iter().rev(),
            |r| &r.run_id,
            token,
            size,
            bounds::fit_run,
        )
    }

    /// One run by id, or by a unique prefix of its id.
    pub fn get(&self, run_id: &str) -> Option<pb::RunRecord> {
        let runs = self.lock();
        if let Some(r) = runs.iter().find(|r| r.run_id == run_id) {
            return Some(r.clone());
        }
        let mut matches = runs.iter().filter(|r| r.run_id.starts_with(run_id));
        match (matches.next(), matches.next()) {
            (Some(one), None) if !run_id.is_empty() => Some(one.clone()),
            _ => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<pb::RunRecord>> {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn push_bounded(runs: &mut VecDeque<pb::RunRecord>, record: pb::RunRecord) {
    if runs.len() == MAX_RUNS {
        runs.pop_front();
    }
    runs.push_back(record);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> pb::RunRecord {
        pb::RunRecord {
            run_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn lists_newest_first_and_finds_by_prefix() {
        let store = RunStore::in_memory();
        store.insert(record("aaaa1111")).unwrap();
        store.insert(record("bbbb2222")).unwrap();
        store.insert(record("aaaa3333")).unwrap();
        let ids: Vec<_> = store.list(2).into_iter().map(|r| r.run_id).collect();
        assert_eq!(ids, ["aaaa3333", "bbbb2222"]);
        assert_eq!(
            store.get("bbbb").map(|r| r.run_id).as_deref(),
            Some("bbbb2222")
        );
        assert!(store.get("aaaa").is_none(), "ambiguous prefix");
        assert!(store.get("").is_none());
    }

    #[test]
    fn persists_across_reopen_and_survives_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RunStore::open(dir.path().into()).unwrap();
            store.insert(record("one")).unwrap();
            store.insert(record("two")).unwrap();
        }
        let path = dir.path().join("runs.pb");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0x40, 0x01]);
        std::fs::write(&path, bytes).unwrap();
        let store = RunStore::open(dir.path().into()).unwrap();
        let ids: Vec<_> = store.list(0).into_iter().map(|r| r.run_id).collect();
        assert_eq!(ids, ["two", "one"]);
    }

    #[test]
    fn is_bounded() {
        let store = RunStore::in_memory();
        for i in 0..(MAX_RUNS + 5) {
            store.insert(record(&i.to_string())).unwrap();
        }
        assert_eq!(store.list(0).len(), MAX_RUNS);
        assert!(store.get("0").is_none());
    }

    #[test]
    #[allow(deprecated)]
    fn records_stored_with_string_verdicts_read_with_enums() {
        let dir = tempfile::tempdir().unwrap();
        let old = pb::RunRecord {
            diagnosis: Some(pb::Diagnosis {
                verdict: Some(pb::Verdict {
                    legacy_class: "mtu_blackhole".into(),
                    ..Default::default()
                }),
                checks: vec![pb::Check {
                    legacy_name: "icmp".into(),
                    legacy_status: "ok".into(),
                    legacy_direction: "forward".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..record("old")
        };
        std::fs::write(
            dir.path().join("runs.pb"),
            old.encode_length_delimited_to_vec(),
        )
        .unwrap();
        let store = RunStore::open(dir.path().into()).unwrap();
        let d = store.get("old").unwrap().diagnosis.unwrap();
        assert_eq!(d.verdict.unwrap().class(), pb::VerdictClass::MtuBlackhole);
        assert_eq!(d.checks[0].status(), pb::CheckStatus::Ok);
        assert_eq!(d.checks[0].direction(), pb::CheckDirection::Forward);
    }
}
