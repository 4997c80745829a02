//! The audit log: one JSON line per Control call (who, what, at what,
//! allowed or denied and by which rule), appended to `STORE/audit.jsonl`
//! or `--audit-log FILE` and fsync'd line by line, so it survives restarts
//! and crashes. Past [`ROTATE_AT`] the file is renamed to `FILE.1`
//! (replacing the previous one) and a new one begun. Without a file the
//! lines go to the coordinator's log (target `audit`).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

/// Size at which the audit file is rotated.
pub const ROTATE_AT: u64 = 64 << 20;

/// One Control call, as recorded.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditLine<'a> {
    /// Milliseconds since the Unix epoch (coordinator clock).
    pub time_unix_ms: i64,
    /// The certificate's name; empty when there was none.
    pub identity: &'a str,
    /// The certificate's role; empty when there was none.
    pub role: &'a str,
    /// `Control.StartRun`, `Control.ListProbes`, ...
    pub call: &'a str,
    /// What the call was about: a run's kind, source and target; a run id;
    /// a token's name.
    pub target: &'a str,
    /// `allow` or `deny`.
    pub decision: &'a str,
    /// The rule or check that denied it.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub rule: &'a str,
}

/// Where audit lines go.
#[derive(Debug, Default)]
pub struct AuditLog {
    file: Option<Mutex<Sink>>,
}

#[derive(Debug)]
struct Sink {
    path: PathBuf,
    file: File,
    len: u64,
}

impl AuditLog {
    /// Appends to `path` (created if missing).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file: Some(Mutex::new(Sink {
                path: path.to_owned(),
                file,
                len,
            })),
        })
    }

    /// Records one call. A write failure is logged, never fails the call.
    pub fn record(&self, line: &AuditLine<'_>) {
        let Ok(mut text) = serde_json::to_string(line) else {
            return;
        };
        let Some(sink) = &self.file else {
            tracing::info!(target: "audit", "{text}");
            return;
        };
        text.push('\n');
        let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = sink.append(text.as_bytes()) {
            tracing::error!(path = %sink.path.display(), error = %e, "cannot write the audit log; the line: {}", text.trim_end());
        }
    }
}

impl Sink {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.len > 0 && self.len + bytes.len() as u64 > ROTATE_AT {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.len = 0;
        }
        self.file.write_all(bytes)?;
        self.file.sync_data()?;
        self.len += bytes.len() as u64;
        Ok(())
    }
}
