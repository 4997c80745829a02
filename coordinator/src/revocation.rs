//! The revocation list: certificates withdrawn with `meshctl certs revoke`,
//! checked on every stream attach and every Control call (by `authz`).
//!
//! Revoking a NAME revokes every certificate of that name issued up to the
//! revocation, so a certificate issued afterwards works (issue time is
//! `notBefore` plus the backdate every probemesh certificate carries; one
//! issued within the same second counts as revoked). Revoking a SERIAL
//! revokes that one certificate. The list is kept by the state store (the
//! `store` module: `revoked.json` in `--store DIR` through [`FileStore`], or
//! etcd) and served from memory here ([`Revocations`]), so the check on
//! every call never waits for a store.

use std::path::PathBuf;
use std::sync::RwLock;

use probemesh_proto::identity::Identity;
use probemesh_proto::pki::BACKDATE;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One revocation: a name or a serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Every certificate of this name issued up to `revoked_unix_ms` (empty
    /// when `serial` is set).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The certificate with this serial, lowercase hex (empty when `name` is set).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serial: String,
    /// When it was revoked (coordinator clock).
    pub revoked_unix_ms: i64,
    /// Who revoked it.
    pub by: String,
}

impl Revocation {
    /// Whether this revocation withdraws `id`'s certificate.
    pub fn covers(&self, id: &Identity) -> bool {
        self.covers_cert(&id.name, &id.serial, id.not_before_unix)
    }

    /// Whether this revocation withdraws the certificate of `name` with
    /// `serial`, valid from `not_before_unix` (a viewer token names its
    /// certificate so).
    pub fn covers_cert(&self, name: &str, serial: &str, not_before_unix: i64) -> bool {
        if !self.serial.is_empty() {
            return self.serial == serial;
        }
        let issued_unix = not_before_unix.saturating_add(BACKDATE.whole_seconds());
        self.name == name && issued_unix <= self.revoked_unix_ms.div_euclid(1_000)
    }
}

/// `DIR/revoked.json`.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// The list in `dir/revoked.json`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            path: dir.join("revoked.json"),
        }
    }

    fn error(&self, op: &'static str, e: impl std::fmt::Display) -> Error {
        Error::Store {
            op,
            path: self.path.clone(),
            source: std::io::Error::other(e.to_string()),
        }
    }
}

impl FileStore {
    /// The stored list (empty when there is none yet).
    pub fn load(&self) -> Result<Vec<Revocation>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| self.error("parse revocation list", e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.error("read revocation list", e)),
        }
    }

    /// Replaces the stored list with `list`, atomically.
    pub fn save(&self, list: &[Revocation]) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(list).map_err(|e| self.error("encode revocation list", e))?;
        probemesh_proto::pki::write_atomic(&self.path, &bytes, true)
            .map_err(|e| self.error("write revocation list", e))
    }
}

/// The list in memory: what every call is checked against.
#[derive(Debug, Default)]
pub struct Revocations {
    list: RwLock<Vec<Revocation>>,
}

impl Revocations {
    /// The list `list`.
    pub fn new(list: Vec<Revocation>) -> Self {
        Self {
            list: RwLock::new(list),
        }
    }

    /// Adds `revocation` unless it is already listed; returns whether it
    /// was new. Add only what the store holds.
    pub fn add(&self, revocation: Revocation) -> bool {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        if list.contains(&revocation) {
            return false;
        }
        list.push(revocation);
        true
    }

    /// The revocation that withdraws `id`'s certificate, if any.
    pub fn find(&self, id: &Identity) -> Option<Revocation> {
        self.find_cert(&id.name, &id.serial, id.not_before_unix)
    }

    /// The revocation that withdraws the certificate of `name` with
    /// `serial`, valid from `not_before_unix`, if any.
    pub fn find_cert(&self, name: &str, serial: &str, not_before_unix: i64) -> Option<Revocation> {
        self.list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|r| r.covers_cert(name, serial, not_before_unix))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use probemesh_proto::identity::{CertFingerprint, Role};

    use super::*;

    fn cert(name: &str, serial: &str, not_before_unix: i64) -> Identity {
        Identity {
            name: name.into(),
            role: Role::Probe,
            fingerprint: CertFingerprint::from_bytes([0; 32]),
            serial: serial.into(),
            not_before_unix,
            not_after_unix: not_before_unix + 3_600,
        }
    }

    fn by_name(name: &str, revoked_unix_ms: i64) -> Revocation {
        Revocation {
            name: name.into(),
            serial: String::new(),
            revoked_unix_ms,
            by: "admin".into(),
        }
    }

    #[test]
    fn a_name_revokes_what_was_issued_before_a_serial_only_itself() {
        let backdate = BACKDATE.whole_seconds();
        // Issued at 1000 s (notBefore 1000 - backdate), revoked at 1000.5 s.
        let old = cert("node-1", "aa", 1_000 - backdate);
        let reissued = cert("node-1", "bb", 1_001 - backdate);
        let r = by_name("node-1", 1_000_500);
        assert!(r.covers(&old));
        assert!(!r.covers(&reissued));
        assert!(!r.covers(&cert("node-2", "cc", 0)));
        let s = Revocation {
            name: String::new(),
            serial: "bb".into(),
            ..r
        };
        assert!(s.covers(&reissued) && !s.covers(&old));
    }

    #[test]
    fn the_file_store_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Revocations::new(FileStore::new(dir.path().into()).load().unwrap());
        let list = open();
        assert!(list.find(&cert("node-1", "aa", 0)).is_none());
        FileStore::new(dir.path().into())
            .save(&[by_name("node-1", 500_000)])
            .unwrap();
        let reopened = open();
        assert_eq!(
            reopened.find(&cert("node-1", "aa", 0)),
            Some(by_name("node-1", 500_000))
        );
        let file = dir.path().join("revoked.json");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
