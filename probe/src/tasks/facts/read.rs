//! The I/O of node facts: reading kernel files and running iproute2 and
//! iptables-save. Every failure comes back as a one-line reason for the
//! `unavailable` list; nothing here fails the task.
//!
//! Namespaces: files under `/proc/thread-self/net` and `/proc/sys/net`
//! belong to the calling thread's network namespace, and a child process
//! inherits the namespaces of the thread that spawns it, so a task running
//! on a thread that `setns()`'d sees the namespace it entered. `/proc/net`
//! (the process's main thread) and `/sys/class/net` (the namespace that
//! mounted `/sys`) would show the host instead, so neither is used. Reads
//! are blocking on the calling thread on purpose: a `spawn_blocking` pool
//! thread would be in another namespace.

use std::io;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// Longest a helper command (`ip`, `tc`, `iptables-save`) may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest file or command output read, bytes.
const MAX_OUTPUT: usize = 32 * 1024 * 1024;

/// Why a fact could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// The file does not exist (a kernel module not loaded, a feature absent).
    Missing,
    /// Any other reason, in a sentence.
    Other(String),
}

impl Unreadable {
    /// The reason as one line.
    pub fn describe(&self) -> String {
        match self {
            Unreadable::Missing => "not present".to_owned(),
            Unreadable::Other(reason) => reason.clone(),
        }
    }
}

/// Reads a small kernel file.
pub fn file(path: &str) -> Result<String, Unreadable> {
    match std::fs::read(Path::new(path)) {
        Ok(bytes) if bytes.len() > MAX_OUTPUT => Err(Unreadable::Other(format!(
            "{path}: larger than {MAX_OUTPUT} bytes"
        ))),
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Unreadable::Missing),
        Err(e) => Err(Unreadable::Other(format!("{path}: {e}"))),
    }
}

/// The lines of a kernel file that `keep` accepts, reading at most
/// `max_lines` lines (a file such as a full conntrack table can be far
/// larger than anything we want to hold).
pub fn lines_matching(
    path: &str,
    max_lines: usize,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<String>, Unreadable> {
    use std::io::BufRead as _;
    let file = match std::fs::File::open(Path::new(path)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unreadable::Missing),
        Err(e) => return Err(Unreadable::Other(format!("{path}: {e}"))),
    };
    let mut kept = Vec::new();
    for line in io::BufReader::new(file).lines().take(max_lines) {
        let line = line.map_err(|e| Unreadable::Other(format!("{path}: {e}")))?;
        if keep(&line) {
            kept.push(line);
        }
    }
    Ok(kept)
}

/// Runs `program args…` with a [`COMMAND_TIMEOUT`] and returns its stdout;
/// a missing binary, a non-zero exit (with its stderr) or a timeout is an
/// [`Unreadable::Other`]. The child is killed when the timeout fires.
pub async fn command(program: &str, args: &[&str]) -> Result<String, Unreadable> {
    let shown = format!("{program} {}", args.join(" "));
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Unreadable::Other(format!("{program}: not installed")));
        }
        Err(e) => return Err(Unreadable::Other(format!("{shown}: {e}"))),
    };
    let output = match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Err(_) => {
            return Err(Unreadable::Other(format!(
                "{shown}: no answer within {COMMAND_TIMEOUT:?}"
            )));
        }
        Ok(Err(e)) => return Err(Unreadable::Other(format!("{shown}: {e}"))),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().next().unwrap_or("").trim();
        return Err(Unreadable::Other(format!(
            "{shown}: {} {first}",
            output.status
        )));
    }
    if output.stdout.len() > MAX_OUTPUT {
        return Err(Unreadable::Other(format!(
            "{shown}: output larger than {MAX_OUTPUT} bytes"
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_filtered_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "a1\nb2\na3\na4\n").unwrap();
        let path = path.to_str().unwrap();
        assert_eq!(
            lines_matching(path, 3, |l| l.starts_with('a')).unwrap(),
            ["a1", "a3"]
        );
        assert_eq!(
            lines_matching("/proc/mesh-none", 3, |_| true),
            Err(Unreadable::Missing)
        );
    }

    #[test]
    fn missing_files_are_missing() {
        assert_eq!(
            file("/proc/sys/net/netfilter/does_not_exist"),
            Err(Unreadable::Missing)
        );
        assert!(file("/proc/loadavg").is_ok());
    }

    #[tokio::test]
    async fn commands_report_why_they_failed() {
        let missing = command("mesh-t4x-no-such-binary", &[]).await.unwrap_err();
        assert_eq!(missing.describe(), "mesh-t4x-no-such-binary: not installed");
        let failed = command("ip", &["-j", "link", "show", "dev", "mesh-t4x-none"])
            .await
            .unwrap_err();
        assert!(
            failed
                .describe()
                .starts_with("ip -j link show dev mesh-t4x-none: exit status"),
            "{failed:?}"
        );
        assert!(
            command("ip", &["-j", "link", "show"])
                .await
                .unwrap()
                .starts_with('[')
        );
    }
}
