//! A TLS directory on disk: where each file lives, and how files are written (staged under a
//! temporary name, synced, then linked or renamed into place; keys mode 0600, directories
//! 0700). It knows nothing of certificates.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{Error, Result};

/// A directory of probemesh TLS material.
///
/// Layout: `ca.pem`, `ca-key.pem`, and `NAME.pem` / `NAME-key.pem` per identity
/// (`coordinator`, `admin`, probes...). A `NAME.pem` may hold the leaf followed by its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsDir {
    root: PathBuf,
}

impl TlsDir {
    /// A TLS directory at `path` (nothing is read or created).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { root: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `DIR/ca.pem`: the CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// `DIR/ca-key.pem`: the CA private key (only where certificates are issued).
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca-key.pem")
    }

    /// `DIR/NAME.pem`: the certificate (chain) of identity `name`.
    pub fn cert(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.pem"))
    }

    /// `DIR/NAME-key.pem`: the private key of identity `name`.
    pub fn key(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}-key.pem"))
    }
}

/// Writes `contents` to `path` atomically (temporary file in the same directory, fsync, rename
/// over any existing file). `private` files (keys) get mode 0600, others 0644. A missing parent
/// directory is created with mode 0700.
pub fn write_atomic(path: &Path, contents: &[u8], private: bool) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    StagedFile::write(path, contents, private)?.commit(true, "")
}

/// Writes `contents` to `path` like [`write_atomic`] but never replaces anything: an existing
/// `path` (even one created meanwhile) is [`Error::AlreadyExists`] with `hint`.
pub fn write_new(path: &Path, contents: &[u8], private: bool, hint: &'static str) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    StagedFile::write(path, contents, private)?.commit(false, hint)
}

/// Reads a whole text file; a missing file is reported with `hint` (how to create it).
pub(crate) fn read_text(path: &Path, hint: &str) -> Result<String> {
    fs::read_to_string(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            Error::MissingFile {
                path: path.to_path_buf(),
                hint: hint.to_owned(),
            }
        } else {
            Error::ReadFile {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

#[cfg(unix)]
pub(super) fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| Error::WriteFile {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(not(unix))]
pub(super) fn create_private_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|source| Error::WriteFile {
        path: path.to_path_buf(),
        source,
    })
}

/// A file fully written and synced under a temporary name next to its destination; removed on
/// drop unless committed by rename.
pub(super) struct StagedFile {
    tmp: PathBuf,
    dest: PathBuf,
}

impl StagedFile {
    pub(super) fn write(dest: &Path, contents: &[u8], private: bool) -> Result<Self> {
        let file_name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{file_name}.tmp-{:016x}", rand::random::<u64>()));
        let werr = |source| Error::WriteFile {
            path: tmp.clone(),
            source,
        };
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if private { 0o600 } else { 0o644 });
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut file = options.open(&tmp).map_err(werr)?;
        let staged = Self {
            tmp: tmp.clone(),
            dest: dest.to_path_buf(),
        };
        file.write_all(contents).map_err(werr)?;
        file.sync_all().map_err(werr)?;
        Ok(staged)
    }

    /// Moves the file into place. Without `replace`, an existing destination is an error
    /// (checked atomically with a hard link where the filesystem supports it).
    pub(super) fn commit(&self, replace: bool, hint: &'static str) -> Result<()> {
        let werr = |source| Error::WriteFile {
            path: self.dest.clone(),
            source,
        };
        let exists = || Error::AlreadyExists {
            path: self.dest.clone(),
            hint,
        };
        if replace {
            return fs::rename(&self.tmp, &self.dest).map_err(werr);
        }
        match fs::hard_link(&self.tmp, &self.dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(exists()),
            Err(_) if self.dest.exists() => Err(exists()),
            Err(_) => fs::rename(&self.tmp, &self.dest).map_err(werr),
        }
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        // Already renamed into place, or linked and now redundant: either way it goes.
        let _ = fs::remove_file(&self.tmp);
    }
}
