//! meshctl's client configuration file: where the coordinator is and which
//! certificate to present. meshctl reads it (flags and `MESH_*` variables
//! override it); the lab writes it, which is why it lives here.
//!
//! Lives at `$MESH_CONFIG`, else `$XDG_CONFIG_HOME/probemesh/meshctl.json`,
//! else `$HOME/.config/probemesh/meshctl.json`. `meshctl lab up` writes it so
//! that plain `meshctl` talks to the lab afterwards, keeping a file the user
//! wrote aside; `meshctl lab down` removes the lab's and puts that one back.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use probemesh_proto::pki;
use serde::{Deserialize, Serialize};

use crate::state::StateDir;
use crate::topology;

/// `written_by` of the client configuration the lab writes.
const WRITTEN_BY: &str = "lab";

/// Defaults for `--coordinator`, `--tls-dir` and `--identity`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfigFile {
    /// `https://HOST:PORT` of the coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<String>,
    /// Directory holding `ca.pem` and `IDENTITY.pem`/`IDENTITY-key.pem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_dir: Option<PathBuf>,
    /// Certificate name to present (`admin` after `meshctl certs init`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Who wrote the file (`lab` for `meshctl lab up`), so `lab down` removes
    /// only a file it wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<String>,
}

impl ClientConfigFile {
    /// Where the file lives for this user.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("MESH_CONFIG") {
            return Some(PathBuf::from(p));
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(base.join("probemesh").join("meshctl.json"))
    }

    /// Reads the file; a missing file is an empty configuration.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a valid meshctl config file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the file atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path
            .parent()
            .context("config path has no parent directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// Where `up` keeps a file the user wrote while the lab's is in place.
fn config_backup(path: &Path) -> PathBuf {
    path.with_extension("json.before-lab")
}

/// Points plain `meshctl` at the lab. A configuration the user wrote is kept
/// aside and put back by `lab down`.
pub(crate) fn point_at_lab(dir: &StateDir) -> anyhow::Result<Option<PathBuf>> {
    let Some(path) = ClientConfigFile::default_path() else {
        return Ok(None);
    };
    if path.exists() {
        let ours = ClientConfigFile::load(&path)
            .map(|c| c.written_by.as_deref() == Some(WRITTEN_BY))
            .unwrap_or(false);
        if !ours {
            std::fs::rename(&path, config_backup(&path))
                .with_context(|| format!("keeping {} aside", path.display()))?;
        }
    }
    ClientConfigFile {
        coordinator: Some(topology::coordinator_url()),
        tls_dir: Some(dir.tls()),
        identity: Some(pki::ADMIN_NAME.to_owned()),
        written_by: Some(WRITTEN_BY.to_owned()),
    }
    .save(&path)?;
    Ok(Some(path))
}

/// Removes the client configuration if the lab wrote it, and restores the
/// one it kept aside. Returns whether the lab's file was removed.
pub(crate) fn restore_after_lab() -> anyhow::Result<bool> {
    let Some(path) = ClientConfigFile::default_path() else {
        return Ok(false);
    };
    let ours = path.exists()
        && ClientConfigFile::load(&path).is_ok_and(|c| c.written_by.as_deref() == Some(WRITTEN_BY));
    if ours {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let backup = config_backup(&path);
    if backup.exists() && !path.exists() {
        std::fs::rename(&backup, &path).with_context(|| format!("restoring {}", path.display()))?;
    }
    Ok(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_missing_is_empty() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sub").join("meshctl.json");
        assert_eq!(ClientConfigFile::load(&path)?, ClientConfigFile::default());
        let cfg = ClientConfigFile {
            coordinator: Some("https://198.18.255.1:7443".into()),
            tls_dir: Some("/run/probemesh/lab/tls".into()),
            identity: Some("admin".into()),
            written_by: Some("lab".into()),
        };
        cfg.save(&path)?;
        assert_eq!(ClientConfigFile::load(&path)?, cfg);
        Ok(())
    }

    #[test]
    fn garbage_is_a_clear_error() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("meshctl.json");
        std::fs::write(&path, "not json")?;
        let err = ClientConfigFile::load(&path).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("not a valid meshctl config file")));
        Ok(())
    }
}
