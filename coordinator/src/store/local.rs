//! The local store: the state of one coordinator in `--store DIR`, or in
//! memory only without it.
//!
//! | file | what | how it is written |
//! |---|---|---|
//! | `runs.pb` | run records | checksummed frames, appended and fsync'd ([`crate::runs`]) |
//! | `tokens.json` | join tokens | whole, to a temporary file, fsync'd and renamed ([`crate::tokens`]) |
//! | `revoked.json` | revocations | the same ([`crate::revocation::FileStore`]) |
//! | `issued.jsonl` | certificates signed | one JSON line each, appended and fsync'd, mode 0600 |
//!
//! Nobody else writes these files, so [`StateStore::follow_revocations`]
//! has nothing to follow.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use probemesh_proto::pb;
use probemesh_proto::pki::CertAuthority;
use probemesh_proto::token::JoinToken;
use tokio::sync::mpsc;

use super::{IssuedCertificate, StateStore};
use crate::bounds::Page;
use crate::error::{Error, Result};
use crate::revocation::{FileStore, Revocation};
use crate::runs::RunStore;
use crate::tokens::TokenStore;

/// Certificates remembered in memory for [`StateStore::certificate`] (the
/// newest); older ones are looked up in `issued.jsonl`.
const ISSUED_IN_MEMORY: usize = 10_000;

/// The issued-certificates file, in the store directory.
const ISSUED_FILE: &str = "issued.jsonl";

/// The state of one coordinator.
#[derive(Debug)]
pub struct LocalStore {
    dir: Option<PathBuf>,
    runs: RunStore,
    tokens: TokenStore,
    revoked: Mutex<Revoked>,
    issued: Arc<Mutex<Issued>>,
}

/// The revocation list as stored.
#[derive(Debug)]
struct Revoked {
    list: Vec<Revocation>,
    file: Option<FileStore>,
}

/// The certificates signed: the newest in memory, every one in the file.
#[derive(Debug, Default)]
struct Issued {
    recent: VecDeque<IssuedCertificate>,
    by_serial: HashMap<String, IssuedCertificate>,
    file: Option<(PathBuf, File)>,
}

impl LocalStore {
    /// State kept in memory only: lost when the process ends.
    pub fn in_memory() -> Self {
        Self {
            dir: None,
            runs: RunStore::in_memory(),
            tokens: TokenStore::in_memory(),
            revoked: Mutex::new(Revoked {
                list: Vec::new(),
                file: None,
            }),
            issued: Arc::default(),
        }
    }

    /// The state in `dir`, loading what is already there. Refused when
    /// `dir` cannot be written or a file cannot be read.
    pub fn open(dir: PathBuf) -> Result<Self> {
        let runs = RunStore::open(dir.clone())?;
        let tokens = TokenStore::open(dir.clone())?;
        let file = FileStore::new(dir.clone());
        let list = file.load()?;
        let path = dir.join(ISSUED_FILE);
        let issued = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| Error::StoreUnwritable {
                what: "open the issued-certificates file".into(),
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            dir: Some(dir),
            runs,
            tokens,
            revoked: Mutex::new(Revoked {
                list,
                file: Some(file),
            }),
            issued: Arc::new(Mutex::new(Issued {
                file: Some((path, issued)),
                ..Issued::default()
            })),
        })
    }

    fn revoked(&self) -> MutexGuard<'_, Revoked> {
        self.revoked.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[tonic::async_trait]
impl StateStore for LocalStore {
    fn describe(&self) -> String {
        match &self.dir {
            Some(dir) => format!("the local store in {}", dir.display()),
            None => "memory only (no --store)".into(),
        }
    }

    async fn write_run(&self, record: pb::RunRecord) -> Result<()> {
        self.runs.write(record).await
    }

    fn note_run(&self, record: pb::RunRecord) {
        self.runs.note(record);
    }

    async fn run(&self, run_id: &str) -> Result<Option<pb::RunRecord>> {
        Ok(self.runs.get(run_id))
    }

    async fn runs_page(&self, token: &str, size: usize) -> Result<Page<pb::RunRecord>> {
        self.runs.page(token, size)
    }

    async fn create_token(
        &self,
        name: &str,
        ttl: Duration,
        ca: &CertAuthority,
        now_unix_ms: i64,
    ) -> Result<pb::CreateJoinTokenResponse> {
        self.tokens.create(name, ttl, ca, now_unix_ms)
    }

    async fn withdraw_tokens(&self, name: &str) -> Result<u32> {
        self.tokens.withdraw(name)
    }

    async fn redeem_token(&self, token: &JoinToken, now_unix_ms: i64) -> Result<String> {
        self.tokens.redeem(token, now_unix_ms)
    }

    async fn revocations(&self) -> Result<Vec<Revocation>> {
        Ok(self.revoked().list.clone())
    }

    async fn add_revocation(&self, revocation: &Revocation) -> Result<()> {
        let mut revoked = self.revoked();
        let mut next = revoked.list.clone();
        next.push(revocation.clone());
        if let Some(file) = &revoked.file {
            file.save(&next)?;
        }
        revoked.list = next;
        Ok(())
    }

    fn follow_revocations(&self) -> Option<mpsc::Receiver<Revocation>> {
        None
    }

    async fn record_certificate(&self, certificate: &IssuedCertificate) -> Result<()> {
        let issued = Arc::clone(&self.issued);
        let certificate = certificate.clone();
        tokio::task::spawn_blocking(move || {
            issued
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(certificate)
        })
        .await
        .map_err(|e| Error::ServerTask(format!("recording a certificate: {e}")))?
    }

    async fn certificate(&self, serial: &str) -> Result<Option<IssuedCertificate>> {
        let issued = Arc::clone(&self.issued);
        let serial = serial.to_owned();
        tokio::task::spawn_blocking(move || {
            issued
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .find(&serial)
        })
        .await
        .map_err(|e| Error::ServerTask(format!("looking up a certificate: {e}")))?
    }
}

impl Issued {
    /// Appends `certificate` to the file (synced) and remembers it.
    fn record(&mut self, certificate: IssuedCertificate) -> Result<()> {
        if let Some((path, file)) = self.file.as_mut() {
            let mut line = serde_json::to_vec(&certificate).map_err(|e| Error::Store {
                op: "encode an issued certificate",
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
            line.push(b'\n');
            file.write_all(&line)
                .and_then(|()| file.sync_data())
                .map_err(|source| Error::StoreUnwritable {
                    what: format!(
                        "record certificate {} of '{}'",
                        certificate.serial, certificate.name
                    ),
                    path: path.clone(),
                    source,
                })?;
        }
        if self.recent.len() >= ISSUED_IN_MEMORY
            && let Some(oldest) = self.recent.pop_front()
        {
            self.by_serial.remove(&oldest.serial);
        }
        self.by_serial
            .insert(certificate.serial.clone(), certificate.clone());
        self.recent.push_back(certificate);
        Ok(())
    }

    /// The certificate with `serial`: from memory, else from the file.
    fn find(&self, serial: &str) -> Result<Option<IssuedCertificate>> {
        if let Some(found) = self.by_serial.get(serial) {
            return Ok(Some(found.clone()));
        }
        let Some((path, _)) = &self.file else {
            return Ok(None);
        };
        let read_err = |source| Error::Store {
            op: "read the issued-certificates file",
            path: path.clone(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(read_err)?;
            // A line torn by a crash mid-write is skipped.
            if let Ok(certificate) = serde_json::from_str::<IssuedCertificate>(&line)
                && certificate.serial == serial
            {
                return Ok(Some(certificate));
            }
        }
        Ok(None)
    }
}
