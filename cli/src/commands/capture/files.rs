//! A run's capture files on disk: a 0700 staging directory under `--out`
//! that receives the chunks, the merged file written beside the verified
//! ones, and the move to `OUT/RUN_ID/`. Shared by every command whose runs
//! capture. The formats live in `artifacts` and `merge`.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use probemesh_proto::pb;
use probemesh_proto::pb::task_progress::Event;

use super::artifacts::{Artifacts, MERGED_NAME, PART_SUFFIX, PartFile, checked_name};
use super::merge::{MergeHeader, MergeInput, merge_captures};
use super::progress::ProgressBoard;
use super::report::CaptureReport;
use crate::client::Failure;

/// A run's capture files as they arrive: chunks land in a staging
/// directory under `--out`, verified files move to `OUT/RUN_ID/` with
/// `merged.pcapng` beside them. Used by every command whose runs capture.
#[derive(Debug)]
pub struct CaptureFiles {
    out: PathBuf,
    staging: tempfile::TempDir,
    artifacts: Artifacts,
    board: ProgressBoard,
}

impl CaptureFiles {
    /// A staging directory under `out` (created if needed).
    pub fn new(out: &Path) -> Result<Self, Failure> {
        let staging = staging_dir(out)?;
        Ok(Self {
            out: out.to_path_buf(),
            artifacts: Artifacts::new(staging.path().to_path_buf()),
            staging,
            board: ProgressBoard::default(),
        })
    }

    /// Takes one progress event: appends artifact chunks, and returns a
    /// progress line to print when one is due.
    pub fn progress(&mut self, progress: &pb::TaskProgress) -> Option<String> {
        let event = progress.event.as_ref()?;
        if let Event::ArtifactChunk(chunk) = event {
            if let Err(e) = self.artifacts.accept(&progress.probe, chunk) {
                return Some(format!("capture: {}: {e}; discarding it", progress.probe));
            }
            return None;
        }
        self.board.update(&progress.probe, event, Instant::now())
    }

    /// Verifies and saves every observer's file, merges them, and moves
    /// them to `OUT/RUN_ID/`; the report says what was saved and what failed.
    pub fn finish(
        mut self,
        accepted: &pb::RunAccepted,
        record: &pb::RunRecord,
        filter: &str,
    ) -> CaptureReport {
        let mut report = CaptureReport::new(accepted, record, filter, &mut self.artifacts);
        report.artifacts = report.saved().map(|(_, a)| a.to_owned()).collect();
        if report.artifacts.is_empty() {
            return report;
        }
        match write_merged(&report, self.staging.path()) {
            Ok(path) => report.artifacts.push(path.display().to_string()),
            Err(e) => report.fail(e),
        }
        // The files are verified: from here on they are kept, under the run
        // id when it is a plain name and the move succeeds, else where they are.
        let staging_path = self.staging.keep();
        let dir = self.out.join(&report.run_id);
        let moved = if checked_name(&report.run_id).is_err() {
            Err(format!(
                "the run id {:?} is not a plain name",
                report.run_id
            ))
        } else {
            fs::rename(&staging_path, &dir).map_err(|e| e.to_string())
        };
        match moved {
            Ok(()) => report.relocate(&staging_path, &dir),
            Err(e) => report.fail(format!(
                "cannot move the captures to {}: {e}; they are in {}",
                dir.display(),
                staging_path.display()
            )),
        }
        report
    }
}

/// A fresh 0700 directory under `out` (created if needed) that receives
/// the `.part` files; it becomes `out/RUN_ID` at the end, and is deleted
/// with everything in it if the command fails before.
fn staging_dir(out: &Path) -> Result<tempfile::TempDir, Failure> {
    let usage = |e: io::Error| Failure::usage(format!("cannot use --out {}: {e}", out.display()));
    fs::create_dir_all(out).map_err(usage)?;
    let dir = tempfile::Builder::new()
        .prefix(".capture-")
        .tempdir_in(out)
        .map_err(usage)?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).map_err(usage)?;
    Ok(dir)
}

/// Merges the saved files into `dir/merged.pcapng` (0600, written under a
/// `.part` name and renamed once complete).
fn write_merged(report: &CaptureReport, dir: &Path) -> Result<PathBuf, String> {
    let mut files = Vec::new();
    for (observer, path) in report.saved() {
        let bytes = fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        files.push((observer, bytes));
    }
    let inputs: Vec<MergeInput<'_>> = files
        .iter()
        .map(|(o, bytes)| MergeInput {
            probe: &o.probe,
            clock_offset_ns: o.clock_offset_ns,
            clock_error_ns: o.clock_error_ns,
            pcapng: bytes,
        })
        .collect();
    let path = dir.join(MERGED_NAME);
    let mut part = PartFile::create(dir.join(format!("{MERGED_NAME}{PART_SUFFIX}")))
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let header = MergeHeader {
        run_id: &report.run_id,
        filter: &report.filter,
    };
    merge_captures(&inputs, header, io::BufWriter::new(&mut part.file))
        .map_err(|e| e.to_string())?;
    part.commit(&path)
        .map_err(|e| format!("cannot save {}: {e}", path.display()))?;
    Ok(path)
}
