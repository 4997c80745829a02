//! Running work inside another network namespace (a pod's, or any
//! `ip netns` one), by namespace file or by PID.
//!
//! `setns(2)` changes the namespace of the calling thread only, so the work
//! runs on a dedicated `std::thread` that enters the namespace first and then
//! drives its own current-thread tokio runtime: sockets opened there live in
//! the namespace, and neither the probe's tokio workers nor any other task
//! ever see it. Threads that runtime starts (its blocking pool, e.g. for name
//! resolution) are spawned from the namespaced thread and inherit it.
//!
//! Entering requires `CAP_SYS_ADMIN` (the probe runs as root on nodes).

use std::fs::File;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use tokio::sync::oneshot;
use tracing::Instrument;

/// Where a network namespace is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsTarget {
    /// A namespace file: `/run/netns/NAME` (bind-mounted by `ip netns`) or
    /// `/proc/PID/ns/net`.
    Path(PathBuf),
    /// The namespace of process `PID` (`/proc/PID/ns/net`).
    Pid(u32),
}

impl NetnsTarget {
    /// The namespace file to open.
    pub fn path(&self) -> PathBuf {
        match self {
            NetnsTarget::Path(path) => path.clone(),
            NetnsTarget::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }
}

/// Most processes looked at when searching for a namespace by address.
const MAX_PROCESSES: usize = 100_000;
/// Most distinct namespaces whose addresses are read in one search.
const MAX_NAMESPACES: usize = 10_000;

/// A process whose network namespace holds `ip` as a local address (found
/// through `/proc/PID/net/fib_trie`, one read per distinct namespace; needs
/// the host's PID namespace, as the probe DaemonSet has). The probe's own
/// namespace comes last, so a pod address wins over the host's.
pub fn process_holding(ip: std::net::IpAddr) -> Option<u32> {
    let own = std::fs::read_link("/proc/self/ns/net").ok();
    let mut seen = std::collections::HashSet::new();
    let mut host = None;
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten().take(MAX_PROCESSES) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if !seen.insert(ns.clone()) || seen.len() > MAX_NAMESPACES {
            continue;
        }
        let Ok(trie) = std::fs::read_to_string(format!("/proc/{pid}/net/fib_trie")) else {
            continue;
        };
        if local_addresses(&trie).contains(&ip) {
            if Some(&ns) == own.as_ref() {
                host = Some(pid);
            } else {
                return Some(pid);
            }
        }
    }
    host
}

/// The local addresses (`/32 host LOCAL` entries) of a `fib_trie` listing.
fn local_addresses(trie: &str) -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut last: Option<std::net::IpAddr> = None;
    for line in trie.lines() {
        let line = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if let Ok(ip) = line.parse() {
            last = Some(ip);
        } else if line.starts_with("/32 host LOCAL")
            && let Some(ip) = last
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

/// Why work could not run in a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file does not exist (the pod or process is gone). Not
    /// retryable.
    #[error("network namespace {path}{label} does not exist (pod gone?)")]
    Missing {
        /// The namespace file.
        path: String,
        /// `" (pod NS/NAME)"` or empty.
        label: String,
    },
    /// The namespace file exists but cannot be opened.
    #[error("opening network namespace {path}: {source}")]
    Open {
        /// The namespace file.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// `setns` refused: not a network namespace file (`EINVAL`), or no
    /// `CAP_SYS_ADMIN` (`EPERM`).
    #[error("setns({path}, CLONE_NEWNET) failed: {errno}")]
    Enter {
        /// The namespace file.
        path: String,
        /// The errno, printed as `EINVAL: Invalid argument`.
        errno: Errno,
    },
    /// The thread or its runtime could not be started. Retryable.
    #[error("starting a {what} for network namespace {path}: {source}")]
    Start {
        /// "thread" or "tokio runtime".
        what: &'static str,
        /// The namespace file.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// The namespaced thread ended without a result (it panicked).
    #[error("the work in network namespace {path} ended without a result")]
    Lost {
        /// The namespace file.
        path: String,
    },
}

impl NetnsError {
    /// True when the request itself was wrong (the namespace does not exist),
    /// as opposed to this host failing to do the work.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, NetnsError::Missing { .. })
    }
}

/// An open network namespace file; holding it keeps the namespace alive
/// even if its name is deleted.
#[derive(Debug)]
pub struct Namespace {
    file: File,
    path: String,
}

impl Namespace {
    /// Opens the namespace file of `target` (no privilege needed to open).
    /// `label` (e.g. "pod default/web-0", may be empty) only decorates the
    /// error of a missing namespace.
    pub fn open(target: &NetnsTarget, label: &str) -> Result<Self, NetnsError> {
        let path = target.path();
        let shown = path.display().to_string();
        match File::open(&path) {
            Ok(file) => Ok(Self { file, path: shown }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(NetnsError::Missing {
                path: shown,
                label: if label.is_empty() {
                    String::new()
                } else {
                    format!(" ({label})")
                },
            }),
            Err(source) => Err(NetnsError::Open {
                path: shown,
                source,
            }),
        }
    }

    /// The namespace file, as opened.
    pub fn path(&self) -> &Path {
        Path::new(&self.path)
    }

    /// Moves the calling thread into this namespace (for good). Requires
    /// `CAP_SYS_ADMIN`. Call it only on a thread you own.
    fn enter_current_thread(&self) -> Result<(), NetnsError> {
        setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|errno| NetnsError::Enter {
            path: self.path.clone(),
            errno,
        })
    }
}

/// Runs the future `make` builds on a new thread that has entered `ns`,
/// driven by a current-thread tokio runtime (I/O and time enabled) of that
/// thread, and returns its output. The current tracing span follows the work.
///
/// Stop the work the way you would stop it anywhere (e.g. a cancellation
/// token it watches): dropping the returned future does not stop the thread.
pub async fn run_in<F, Fut, T>(ns: Namespace, make: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let path = ns.path.clone();
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("netns-task".to_owned())
        .spawn(move || {
            let outcome = in_thread(&ns, make, span);
            if tx.send(outcome).is_err() {
                tracing::debug!(path = %ns.path, "nobody waits for the namespaced work any more");
            }
        })
        .map_err(|source| NetnsError::Start {
            what: "thread",
            path: path.clone(),
            source,
        })?;
    rx.await.unwrap_or(Err(NetnsError::Lost { path }))
}

/// The body of the namespaced thread.
fn in_thread<F, Fut, T>(ns: &Namespace, make: F, span: tracing::Span) -> Result<T, NetnsError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    ns.enter_current_thread()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| NetnsError::Start {
            what: "tokio runtime",
            path: ns.path.clone(),
            source,
        })?;
    let output = runtime.block_on(make().instrument(span));
    // Do not wait for blocking-pool threads (a stuck resolver call): the
    // result is ready and the thread must end.
    runtime.shutdown_background();
    Ok(output)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fib_trie_local_addresses_are_read() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 198.19.2.0/24 2 0 2\n        |-- 198.19.2.0\n           /24 link UNICAST\n        |-- 198.19.2.10\n           /32 host LOCAL\nLocal:\n     |-- 127.0.0.1\n        /32 host LOCAL\n";
        let got = super::local_addresses(trie);
        assert_eq!(
            got,
            vec![
                "198.19.2.10".parse::<std::net::IpAddr>().expect("ip"),
                "127.0.0.1".parse().expect("ip")
            ]
        );
    }

    #[test]
    fn this_hosts_loopback_is_found_in_this_namespace() {
        let me = super::process_holding("127.0.0.1".parse().expect("ip"));
        assert!(me.is_some(), "no process holds 127.0.0.1");
        assert_eq!(
            super::process_holding("198.18.254.254".parse().expect("ip")),
            None
        );
    }

    use super::*;

    #[test]
    fn pids_map_to_proc_files() {
        assert_eq!(
            NetnsTarget::Pid(42).path(),
            PathBuf::from("/proc/42/ns/net")
        );
        let p = NetnsTarget::Path("/run/netns/x".into());
        assert_eq!(p.path(), PathBuf::from("/run/netns/x"));
    }

    #[test]
    fn a_missing_namespace_says_so() {
        let target = NetnsTarget::Path("/run/netns/mesh-t4x-absent".into());
        let err = Namespace::open(&target, "").unwrap_err();
        assert!(err.is_invalid_input());
        assert_eq!(
            err.to_string(),
            "network namespace /run/netns/mesh-t4x-absent does not exist (pod gone?)"
        );
        let err = Namespace::open(&target, "pod default/web-0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "network namespace /run/netns/mesh-t4x-absent (pod default/web-0) does not exist (pod gone?)"
        );
    }

    #[tokio::test]
    async fn a_file_that_is_no_namespace_is_refused_by_setns() {
        let ns = Namespace::open(&NetnsTarget::Path("/proc/self/status".into()), "").unwrap();
        let err = run_in(ns, || async {}).await.unwrap_err();
        assert!(!err.is_invalid_input());
        assert!(
            err.to_string()
                .starts_with("setns(/proc/self/status, CLONE_NEWNET) failed: EINVAL"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn our_own_namespace_runs_the_work_on_another_thread() {
        if std::env::var("MESH_SKIP_NETNS").is_ok_and(|v| v == "1") {
            return;
        }
        let ns = Namespace::open(&NetnsTarget::Path("/proc/self/ns/net".into()), "").unwrap();
        assert_eq!(ns.path(), Path::new("/proc/self/ns/net"));
        let caller = std::thread::current().id();
        let (thread, answer) = run_in(ns, || async {
            tokio::task::yield_now().await;
            (std::thread::current().id(), 42)
        })
        .await
        .unwrap();
        assert_ne!(thread, caller);
        assert_eq!(answer, 42);
    }
}
