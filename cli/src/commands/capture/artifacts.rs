//! The artifact assembler: SHA-256-checked chunks appended to a `.part`
//! file, verified against what the probe announced and renamed into place;
//! never a partial file under a final name. It does not merge or report.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use probemesh_proto::pb;
use sha2::{Digest, Sha256};

/// Name of the merged file inside `OUT/RUN_ID`.
pub const MERGED_NAME: &str = "merged.pcapng";
/// Suffix of an artifact still being received.
pub(super) const PART_SUFFIX: &str = ".part";

/// Why an artifact was rejected. Its `.part` file is deleted whenever one
/// of these is raised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ArtifactError {
    #[error("artifact name {name:?} is not a plain file name")]
    BadName { name: String },
    #[error("{name}: chunk at offset {got}, expected offset {expected} (a chunk went missing)")]
    Gap {
        name: String,
        expected: u64,
        got: u64,
    },
    #[error("{name}: chunk at offset {offset} fails its SHA-256 check (corrupted in transit)")]
    ChunkDigest { name: String, offset: u64 },
    #[error("{name}: sent by both {first} and {second}")]
    TwoSenders {
        name: String,
        first: String,
        second: String,
    },
    #[error("{name}: received {got} bytes, the probe announced {expected}")]
    Size {
        name: String,
        expected: u64,
        got: u64,
    },
    #[error("{name}: SHA-256 of the received file is {got}, the probe announced {expected}")]
    Digest {
        name: String,
        expected: String,
        got: String,
    },
    #[error("{name}: announced but no data arrived")]
    Missing { name: String },
    #[error("{name}: the run ended before the probe announced the file complete")]
    Unfinished { name: String },
    #[error("{name}: cannot {op} {}: {message}", path.display())]
    Io {
        name: String,
        op: &'static str,
        path: PathBuf,
        message: String,
    },
}

/// A `.part` file being appended to; dropping it deletes the `.part`
/// (after a successful [`PartFile::commit`] there is nothing left to delete).
#[derive(Debug)]
pub(super) struct PartFile {
    path: PathBuf,
    pub(super) file: File,
    received: u64,
    hasher: Sha256,
}

impl PartFile {
    pub(super) fn create(path: PathBuf) -> io::Result<Self> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Self {
            path,
            file,
            received: 0,
            hasher: Sha256::new(),
        })
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.hasher.update(data);
        self.received += data.len() as u64;
        Ok(())
    }

    pub(super) fn commit(self, to: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        fs::rename(&self.path, to)
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Where one artifact stands. Transitions: `Receiving` → `Saved` when the
/// probe's result announces a matching size and SHA-256; `Receiving` →
/// `Failed` on any bad chunk or mismatch (the `.part` is deleted).
#[derive(Debug)]
enum ArtifactState {
    /// Chunks arrive in order and are appended to `<name>.part`.
    Receiving(PartFile),
    /// Verified and renamed to its final name.
    Saved(PathBuf),
    /// Rejected; later chunks are ignored.
    Failed(ArtifactError),
}

#[derive(Debug)]
struct Artifact {
    probe: String,
    state: ArtifactState,
}

/// Every artifact of a run, in one directory.
#[derive(Debug)]
pub(super) struct Artifacts {
    dir: PathBuf,
    items: BTreeMap<String, Artifact>,
}

impl Artifacts {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            items: BTreeMap::new(),
        }
    }

    /// Appends a chunk sent by `probe`. An error fails the artifact (and
    /// deletes its `.part`); later chunks of a failed artifact are ignored.
    pub(super) fn accept(
        &mut self,
        probe: &str,
        chunk: &pb::ArtifactChunk,
    ) -> Result<(), ArtifactError> {
        let name = checked_name(&chunk.name)?;
        let dir = &self.dir;
        let artifact = self.items.entry(name.to_owned()).or_insert_with(|| {
            let path = dir.join(format!("{name}{PART_SUFFIX}"));
            let state = match PartFile::create(path.clone()) {
                Ok(part) => ArtifactState::Receiving(part),
                Err(e) => ArtifactState::Failed(io_error(name, "create", &path, &e)),
            };
            Artifact {
                probe: probe.to_owned(),
                state,
            }
        });
        let result = match &mut artifact.state {
            // Later chunks of a rejected (or already saved) artifact change nothing.
            ArtifactState::Failed(_) | ArtifactState::Saved(_) => return Ok(()),
            _ if artifact.probe != probe => Err(ArtifactError::TwoSenders {
                name: name.to_owned(),
                first: artifact.probe.clone(),
                second: probe.to_owned(),
            }),
            ArtifactState::Receiving(part) => append_chunk(name, part, chunk),
        };
        if let Err(e) = &result {
            artifact.state = ArtifactState::Failed(e.clone());
        }
        result
    }

    /// The probe's result announced `info`: verify and move the file to
    /// its final name, or delete it.
    pub(super) fn finish(
        &mut self,
        probe: &str,
        info: &pb::ArtifactInfo,
    ) -> Result<PathBuf, ArtifactError> {
        let name = checked_name(&info.name)?;
        let Some(artifact) = self.items.get_mut(name) else {
            return Err(ArtifactError::Missing {
                name: name.to_owned(),
            });
        };
        if artifact.probe != probe {
            return Err(ArtifactError::TwoSenders {
                name: name.to_owned(),
                first: artifact.probe.clone(),
                second: probe.to_owned(),
            });
        }
        let placeholder = ArtifactState::Failed(ArtifactError::Unfinished {
            name: name.to_owned(),
        });
        let outcome = match std::mem::replace(&mut artifact.state, placeholder) {
            ArtifactState::Failed(e) => Err(e),
            ArtifactState::Saved(path) => Ok(path),
            ArtifactState::Receiving(part) => verify_and_commit(name, part, info, &self.dir),
        };
        artifact.state = match &outcome {
            Ok(path) => ArtifactState::Saved(path.clone()),
            Err(e) => ArtifactState::Failed(e.clone()),
        };
        outcome
    }

    /// Fails every artifact no result announced (deleting its `.part`).
    pub(super) fn abandon_unfinished(&mut self) {
        for (name, artifact) in &mut self.items {
            if matches!(artifact.state, ArtifactState::Receiving(_)) {
                artifact.state =
                    ArtifactState::Failed(ArtifactError::Unfinished { name: name.clone() });
            }
        }
    }
}

fn append_chunk(
    name: &str,
    part: &mut PartFile,
    chunk: &pb::ArtifactChunk,
) -> Result<(), ArtifactError> {
    if chunk.offset != part.received {
        return Err(ArtifactError::Gap {
            name: name.to_owned(),
            expected: part.received,
            got: chunk.offset,
        });
    }
    if Sha256::digest(&chunk.data).as_slice() != chunk.sha256.as_slice() {
        return Err(ArtifactError::ChunkDigest {
            name: name.to_owned(),
            offset: chunk.offset,
        });
    }
    part.append(&chunk.data)
        .map_err(|e| io_error(name, "write", &part.path, &e))
}

fn verify_and_commit(
    name: &str,
    part: PartFile,
    info: &pb::ArtifactInfo,
    dir: &Path,
) -> Result<PathBuf, ArtifactError> {
    if part.received != info.size_bytes {
        return Err(ArtifactError::Size {
            name: name.to_owned(),
            expected: info.size_bytes,
            got: part.received,
        });
    }
    let digest = part.hasher.clone().finalize();
    if digest.as_slice() != info.sha256.as_slice() {
        return Err(ArtifactError::Digest {
            name: name.to_owned(),
            expected: hex::encode(&info.sha256),
            got: hex::encode(digest),
        });
    }
    let path = dir.join(name);
    part.commit(&path)
        .map_err(|e| io_error(name, "save", &path, &e))?;
    Ok(path)
}

/// The name as a plain file name inside the run directory, or an error:
/// no separators, no hidden or reserved names.
pub(super) fn checked_name(name: &str) -> Result<&str, ArtifactError> {
    let plain = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.ends_with(PART_SUFFIX)
        && name != MERGED_NAME
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    if plain {
        Ok(name)
    } else {
        Err(ArtifactError::BadName {
            name: name.to_owned(),
        })
    }
}

fn io_error(name: &str, op: &'static str, path: &Path, e: &io::Error) -> ArtifactError {
    ArtifactError::Io {
        name: name.to_owned(),
        op,
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use test_case::test_case;

    pub(crate) fn chunk(name: &str, offset: u64, data: &[u8]) -> pb::ArtifactChunk {
        pb::ArtifactChunk {
            name: name.into(),
            offset,
            data: data.to_vec(),
            sha256: Sha256::digest(data).to_vec(),
        }
    }

    pub(crate) fn info(name: &str, content: &[u8]) -> pb::ArtifactInfo {
        pb::ArtifactInfo {
            name: name.into(),
            size_bytes: content.len() as u64,
            sha256: Sha256::digest(content).to_vec(),
        }
    }

    pub(crate) fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn chunks_in_order_become_a_verified_0600_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut artifacts = Artifacts::new(dir.path().to_path_buf());
        artifacts
            .accept("node-1", &chunk("node-1.pcapng", 0, b"hello "))
            .expect("first chunk");
        assert_eq!(names_in(dir.path()), vec!["node-1.pcapng.part"]);
        artifacts
            .accept("node-1", &chunk("node-1.pcapng", 6, b"world"))
            .expect("second chunk");
        let path = artifacts
            .finish("node-1", &info("node-1.pcapng", b"hello world"))
            .expect("verified");
        assert_eq!(path, dir.path().join("node-1.pcapng"));
        assert_eq!(fs::read(&path).expect("read"), b"hello world");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(names_in(dir.path()), vec!["node-1.pcapng"]);
    }

    #[test]
    fn a_gap_in_offsets_fails_the_artifact_and_removes_the_part() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut artifacts = Artifacts::new(dir.path().to_path_buf());
        artifacts
            .accept("node-1", &chunk("n.pcapng", 0, b"abc"))
            .expect("first chunk");
        let err = artifacts
            .accept("node-1", &chunk("n.pcapng", 4, b"e"))
            .expect_err("gap");
        assert_eq!(
            err,
            ArtifactError::Gap {
                name: "n.pcapng".into(),
                expected: 3,
                got: 4
            }
        );
        assert!(names_in(dir.path()).is_empty());
        // Later chunks are ignored and the result reports the first error.
        artifacts
            .accept("node-1", &chunk("n.pcapng", 3, b"d"))
            .expect("ignored");
        assert!(names_in(dir.path()).is_empty());
        let finish = artifacts.finish("node-1", &info("n.pcapng", b"abcde"));
        assert_eq!(finish, Err(err));
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn a_corrupt_chunk_fails_the_artifact_and_removes_the_part() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut artifacts = Artifacts::new(dir.path().to_path_buf());
        artifacts
            .accept("node-1", &chunk("n.pcapng", 0, b"abc"))
            .expect("first chunk");
        let mut bad = chunk("n.pcapng", 3, b"def");
        bad.data[1] ^= 0xff;
        let err = artifacts.accept("node-1", &bad).expect_err("corrupt");
        assert_eq!(
            err,
            ArtifactError::ChunkDigest {
                name: "n.pcapng".into(),
                offset: 3
            }
        );
        assert!(err.to_string().contains("SHA-256"), "{err}");
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn a_size_mismatch_removes_the_part_and_saves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut artifacts = Artifacts::new(dir.path().to_path_buf());
        artifacts
            .accept("node-1", &chunk("n.pcapng", 0, b"abc"))
            .expect("chunk");
        let err = artifacts
            .finish("node-1", &info("n.pcapng", b"abcd"))
            .expect_err("short");
        assert_eq!(
            err,
            ArtifactError::Size {
                name: "n.pcapng".into(),
                expected: 4,
                got: 3
            }
        );
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn a_whole_file_digest_mismatch_removes_the_part() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut artifacts = Artifacts::new(dir.path().to_path_buf());
        artifacts
            .accept("node-1", &chunk("n.pcapng", 0, b"abc"))
            .expect("chunk");
        let err = artifacts
            .finish("node-1", &info("n.pcapng", b"xyz"))
            .expect_err("digest");
        assert!(matches!(err, ArtifactError::Digest { .. }), "{err}");
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn unfinished_and_unannounced_artifacts_leave_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut artifacts = Artifacts::new(dir.path().to_path_buf());
        artifacts
            .accept("node-1", &chunk("n.pcapng", 0, b"abc"))
            .expect("chunk");
        artifacts.abandon_unfinished();
        assert!(names_in(dir.path()).is_empty());
        let err = artifacts
            .finish("node-2", &info("other.pcapng", b"abc"))
            .expect_err("never sent");
        assert!(matches!(err, ArtifactError::Missing { .. }), "{err}");
    }

    #[test_case("../etc/passwd" ; "parent path")]
    #[test_case("a/b.pcapng" ; "separator")]
    #[test_case(".hidden" ; "hidden")]
    #[test_case("" ; "empty")]
    #[test_case("merged.pcapng" ; "reserved")]
    #[test_case("x.part" ; "part suffix")]
    fn artifact_names_stay_inside_the_run_directory(name: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut artifacts = Artifacts::new(dir.path().to_path_buf());
        let err = artifacts
            .accept("node-1", &chunk(name, 0, b"abc"))
            .expect_err("bad name");
        assert!(matches!(err, ArtifactError::BadName { .. }), "{err}");
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn a_second_sender_fails_the_artifact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut artifacts = Artifacts::new(dir.path().to_path_buf());
        artifacts
            .accept("node-1", &chunk("n.pcapng", 0, b"abc"))
            .expect("chunk");
        let err = artifacts
            .accept("node-2", &chunk("n.pcapng", 3, b"def"))
            .expect_err("two senders");
        assert!(matches!(err, ArtifactError::TwoSenders { .. }), "{err}");
        assert!(names_in(dir.path()).is_empty());
    }
}
