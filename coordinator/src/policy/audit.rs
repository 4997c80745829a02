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
/// Longest `target` recorded, in bytes; longer ones are cut and marked `…`.
pub const MAX_TARGET: usize = 256;

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
    rotate_at: u64,
}

impl AuditLog {
    /// Appends to `path` (created if missing), rotating at [`ROTATE_AT`].
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Self::open_rotating_at(path, ROTATE_AT)
    }

    /// Appends to `path`, rotating past `rotate_at` bytes.
    fn open_rotating_at(path: &Path, rotate_at: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file: Some(Mutex::new(Sink {
                path: path.to_owned(),
                file,
                len,
                rotate_at,
            })),
        })
    }

    /// Records one call. A write failure is logged, never fails the call.
    pub fn record(&self, line: &AuditLine<'_>) {
        let cut;
        let line = if line.target.len() > MAX_TARGET {
            let mut end = MAX_TARGET;
            while !line.target.is_char_boundary(end) {
                end -= 1;
            }
            cut = format!("{}…", &line.target[..end]);
            &AuditLine {
                target: &cut,
                ..line.clone()
            }
        } else {
            line
        };
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
        if self.len > 0 && self.len + bytes.len() as u64 > self.rotate_at {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(target: &str) -> AuditLine<'_> {
        AuditLine {
            time_unix_ms: 1,
            identity: "admin",
            role: "operator",
            call: "Control.GetRun",
            target,
            decision: "allow",
            rule: "",
        }
    }

    #[test]
    fn lines_are_appended_across_reopens_cut_to_size_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        AuditLog::open(&path).unwrap().record(&line("one"));
        let long = "é".repeat(400);
        AuditLog::open(&path).unwrap().record(&line(&long));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["target"], "one");
        assert!(lines[1]["target"].as_str().unwrap().len() <= MAX_TARGET + 3);
        assert!(lines[0].get("rule").is_none(), "no rule on an allowed call");

        let rotate_at = 4096;
        let log = AuditLog::open_rotating_at(&path, rotate_at).unwrap();
        let big = "x".repeat(MAX_TARGET);
        let per_line = serde_json::to_string(&line(&big)).unwrap().len() as u64 + 1;
        for _ in 0..=(rotate_at / per_line) {
            log.record(&line(&big));
        }
        let rotated = std::fs::read_to_string(dir.path().join("audit.jsonl.1")).unwrap();
        assert!(rotated.starts_with(&text), "the old lines moved whole");
        assert!(std::fs::metadata(&path).unwrap().len() < rotate_at);
    }
}
