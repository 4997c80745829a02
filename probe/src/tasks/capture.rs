//! The capture task: runs the capture engine ([`crate::capture`]) for the
//! coordinator and streams its pcapng file back.
//!
//! Lifecycle: the engine runs on a thread of its own ([`spawn_capture`]),
//! started from the task's thread, so it captures in the task's network
//! namespace (`Task.netns` puts the whole task on a thread inside it). Its
//! `Armed` and `Progress` events go out as `CaptureArmed` and
//! `CaptureProgress` as they come. When it ends normally the file, written
//! to [`capture_dir`], goes out as `ArtifactChunk`s of [`CHUNK_BYTES`] in
//! order, each with its SHA-256, and is deleted; the result carries the
//! whole file's SHA-256. A cancel reaches the engine through a child of the
//! task's token: the engine deletes its file, and a cancel while streaming
//! deletes it here; either way the task ends with `KIND_CANCELLED`.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::context::{Progress, TaskContext};
use super::error::{Error, Result};
use crate::capture::{
    Arming, Artifact, CaptureControl, CaptureError, CaptureEvent, CaptureOutcome, CaptureRequest,
    CaptureSpec, spawn_capture,
};

/// Bytes of file per `ArtifactChunk` (the last one may be shorter).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Name of the capture directory under the temporary directory.
pub const CAPTURE_DIR_NAME: &str = "probemesh-captures";
/// The probe's name in the file when the task does not know it.
const UNNAMED_PROBE: &str = "probe";
/// Longest part of a task id kept in a file name, bytes.
const MAX_STEM: usize = 64;

/// A validated capture task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureTaskSpec {
    /// What to capture, within the engine's hard limits.
    pub capture: CaptureSpec,
    /// When to arm the rings (an instant at most
    /// [`crate::capture::spec::MAX_ARM_AHEAD`] ahead, which the engine
    /// checks when the task runs).
    pub arming: Arming,
    /// The task's id (`Task.task_id`), part of the file's local name.
    pub task_id: String,
    /// The run it belongs to (`Task.run_id`), written in the file's comment.
    pub run: String,
    /// The probe's clock against the coordinator's, for the file's comment.
    pub clock_note: String,
    /// How often running totals are reported, 100 ms..=60 s.
    pub progress_every: Duration,
}

/// A capture file as it was streamed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamedArtifact {
    /// The name the chunks and the result carry (`PROBE.pcapng`).
    pub name: String,
    /// Size, bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: [u8; 32],
}

/// Where captures are written before they are streamed back:
/// `$TMPDIR/probemesh-captures` (created mode 0700 on first use).
pub fn capture_dir() -> PathBuf {
    std::env::temp_dir().join(CAPTURE_DIR_NAME)
}

/// Runs a capture task in the calling thread's network namespace. Requires
/// `CAP_NET_RAW`. Bounded by the spec's duration (≤ 10 min) plus the arming
/// delay (≤ 60 s) plus the time the link takes to carry the file.
pub(crate) async fn task(
    spec: &CaptureTaskSpec,
    context: &TaskContext,
    progress: &Progress<CaptureTaskEvent>,
    cancel: &CancellationToken,
) -> Result<(CaptureOutcome, StreamedArtifact)> {
    let dir = capture_dir();
    prepare_dir(&dir)?;
    let probe = if context.probe_name.is_empty() {
        UNNAMED_PROBE
    } else {
        context.probe_name.as_str()
    };
    let output = dir.join(file_name(&spec.task_id));
    let request = CaptureRequest {
        spec: spec.capture.clone(),
        arming: spec.arming,
        probe: probe.to_owned(),
        run: spec.run.clone(),
        clock: spec.clock_note.clone(),
        output,
        progress_every: spec.progress_every,
    };
    let control = CaptureControl {
        stop: context.stop.clone(),
        cancel: cancel.child_token(),
        arm: context.arm.clone(),
    };
    let mut handle = spawn_capture(request, control)?;
    while let Some(event) = handle.next_event().await {
        progress
            .send(CaptureTaskEvent::Capture(event), cancel)
            .await;
    }
    let outcome = handle.outcome().await?;
    let _remove = RemoveOnDrop(outcome.artifact.path.clone());
    let name = if context.probe_name.is_empty() {
        outcome
            .artifact
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    } else {
        format!("{}.pcapng", context.probe_name)
    };
    let streamed = stream(&outcome.artifact, name, progress, cancel)
        .await
        .map_err(|error| match error {
            StreamError::Cancelled => Error::Capture(CaptureError::Cancelled {
                packets: outcome.packets(),
            }),
            StreamError::Io(source) => Error::Artifact {
                op: "streaming the capture file",
                path: outcome.artifact.path.clone(),
                source,
            },
        })?;
    tracing::debug!(
        packets = outcome.packets(),
        drops = outcome.drops(),
        bytes = streamed.size,
        "capture streamed"
    );
    Ok((outcome, streamed))
}

/// What a capture task reports as it happens, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureTaskEvent {
    /// Set up and waiting for its instant, the rings went live, or the
    /// running totals.
    Capture(CaptureEvent),
    /// One piece of the finished file, in file order.
    Chunk(ArtifactChunk),
}

/// A piece of the capture file streamed back after the capture.
#[derive(Clone, PartialEq, Eq)]
pub struct ArtifactChunk {
    /// The file's name, e.g. `node-1.pcapng`.
    pub name: String,
    /// Where `data` starts in the file, bytes.
    pub offset: u64,
    /// The bytes (at most [`CHUNK_BYTES`]).
    pub data: Vec<u8>,
    /// SHA-256 of `data`.
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for ArtifactChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactChunk")
            .field("name", &self.name)
            .field("offset", &self.offset)
            .field("len", &self.data.len())
            .finish_non_exhaustive()
    }
}

/// Why streaming a file stopped.
#[derive(Debug)]
enum StreamError {
    /// The task was cancelled.
    Cancelled,
    /// Reading failed, or the file is not what the engine wrote.
    Io(io::Error),
}

/// Sends `artifact` as chunks named `name`, in order, and checks that what
/// was sent is what the engine wrote.
async fn stream(
    artifact: &Artifact,
    name: String,
    progress: &Progress<CaptureTaskEvent>,
    cancel: &CancellationToken,
) -> Result<StreamedArtifact, StreamError> {
    let file = tokio::fs::File::open(&artifact.path)
        .await
        .map_err(StreamError::Io)?;
    let mut reader = tokio::io::BufReader::with_capacity(CHUNK_BYTES, file);
    let mut whole = Sha256::new();
    let mut check = crc32fast::Hasher::new();
    let mut offset = 0u64;
    loop {
        let mut data = Vec::with_capacity(CHUNK_BYTES);
        let read = (&mut reader)
            .take(CHUNK_BYTES as u64)
            .read_to_end(&mut data)
            .await
            .map_err(StreamError::Io)?;
        if read == 0 {
            break;
        }
        whole.update(&data);
        check.update(&data);
        let sha256 = Sha256::digest(&data).into();
        let chunk = ArtifactChunk {
            name: name.clone(),
            offset,
            data,
            sha256,
        };
        progress.send(CaptureTaskEvent::Chunk(chunk), cancel).await;
        if cancel.is_cancelled() {
            return Err(StreamError::Cancelled);
        }
        offset += read as u64;
    }
    if offset != artifact.bytes || check.finalize() != artifact.crc32 {
        return Err(StreamError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the file changed after the capture ({offset} bytes read, {} written)",
                artifact.bytes
            ),
        )));
    }
    Ok(StreamedArtifact {
        name,
        size: offset,
        sha256: whole.finalize().into(),
    })
}

/// Deletes a finished capture file when the task is done with it.
#[derive(Debug)]
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_file(&self.0)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), %error, "cannot delete a capture file");
        }
    }
}

/// A local file name for the task's capture: its id made safe, and a
/// per-process counter so that two tasks never share a file.
fn file_name(task_id: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let stem: String = task_id
        .chars()
        .take(MAX_STEM)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let stem = if stem.is_empty() { "capture" } else { &stem };
    format!("{stem}-{}.pcapng", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Creates `dir` mode 0700, or checks that the existing one is a directory
/// of this process's user that nobody else can enter (captures can hold
/// what passes on the wire).
fn prepare_dir(dir: &Path) -> Result<()> {
    let fail = |op, source| Error::Artifact {
        op,
        path: dir.to_path_buf(),
        source,
    };
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(fail("creating the capture directory", error)),
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| fail("checking the capture directory", e))?;
    let uid = effective_uid().map_err(|e| fail("checking the capture directory", e))?;
    if !meta.is_dir() || meta.mode() & 0o077 != 0 || meta.uid() != uid {
        return Err(fail(
            "using the capture directory",
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "not a private directory (mode {:o}, owner {}; want a directory of mode 0700 owned by uid {uid})",
                    meta.mode() & 0o7777,
                    meta.uid()
                ),
            ),
        ));
    }
    Ok(())
}

/// This process's effective user id, from `/proc/self/status`.
fn effective_uid() -> io::Result<u32> {
    let status = fs::read_to_string("/proc/self/status")?;
    parse_effective_uid(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no Uid line in /proc/self/status",
        )
    })
}

/// The effective uid of a `/proc/PID/status` text (the second field of
/// its `Uid:` line).
fn parse_effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `len` bytes and the artifact the engine would report for it.
    fn artifact(dir: &Path, len: usize) -> Artifact {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let path = dir.join("a.pcapng");
        fs::write(&path, &data).unwrap();
        Artifact {
            path,
            bytes: len as u64,
            crc32: crc32fast::hash(&data),
        }
    }

    fn chunks(
        rx: &mut tokio::sync::mpsc::Receiver<CaptureTaskEvent>,
    ) -> Vec<probemesh_proto::pb::ArtifactChunk> {
        let mut chunks = Vec::new();
        while let Ok(event) = rx.try_recv() {
            match event {
                CaptureTaskEvent::Chunk(c) => chunks.push(c.into()),
                other => panic!("{other:?}"),
            }
        }
        chunks
    }

    #[tokio::test]
    async fn a_file_goes_out_in_ordered_checksummed_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let artifact = artifact(dir.path(), 2 * CHUNK_BYTES + 1000);
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let progress = Progress::new(tx);
        let streamed = stream(
            &artifact,
            "p.pcapng".into(),
            &progress,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(streamed.size, artifact.bytes);
        let file = fs::read(&artifact.path).unwrap();
        assert_eq!(streamed.sha256, <[u8; 32]>::from(Sha256::digest(&file)));
        let chunks = chunks(&mut rx);
        let sizes: Vec<(u64, usize)> = chunks.iter().map(|c| (c.offset, c.data.len())).collect();
        assert_eq!(
            sizes,
            [(0, CHUNK_BYTES), (65_536, CHUNK_BYTES), (131_072, 1000)]
        );
        for chunk in &chunks {
            assert_eq!(chunk.name, "p.pcapng");
            assert_eq!(chunk.sha256, Sha256::digest(&chunk.data).to_vec());
        }
    }

    #[tokio::test]
    async fn a_file_that_changed_or_a_cancel_stops_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let mut artifact = artifact(dir.path(), 1000);
        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        let progress = Progress::new(tx);
        let cancel = CancellationToken::new();
        artifact.crc32 ^= 1;
        let err = stream(&artifact, "p".into(), &progress, &cancel)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StreamError::Io(ref e) if e.kind() == io::ErrorKind::InvalidData),
            "{err:?}"
        );
        cancel.cancel();
        let err = stream(&artifact, "p".into(), &progress, &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, StreamError::Cancelled), "{err:?}");
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        let a = file_name("run-1/../../etc");
        let b = file_name("run-1/../../etc");
        assert!(a.starts_with("run-1_______etc-"), "{a}");
        assert!(a.ends_with(".pcapng"));
        assert_ne!(a, b);
        assert!(file_name("").starts_with("capture-"));
        assert!(file_name(&"x".repeat(300)).len() < MAX_STEM + 30);
    }

    #[test]
    fn the_effective_uid_is_the_second_field() {
        let status = "Name:\tmesh-probe\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(parse_effective_uid("Name: x\n"), None);
        assert!(effective_uid().is_ok());
    }

    #[test]
    fn a_shared_directory_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("captures");
        prepare_dir(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        prepare_dir(&dir).unwrap();
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
        let err = prepare_dir(&dir).unwrap_err();
        assert!(err.to_string().contains("not a private directory"), "{err}");
    }
}
