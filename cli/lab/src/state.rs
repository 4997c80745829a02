//! Where the lab keeps what it made, and the record of it: one state directory
//! (`/run/probemesh/lab`) holding certificates, logs, the inventory, pid files
//! and `state.json` (every process started, by PID and start time, and the
//! active fault), plus a lock so that two `meshctl lab` commands never change
//! the lab at the same time.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::rules::ProxyMode;

/// The parent of the state directory; it is also what the lock is taken on.
pub const RUN_DIR: &str = "/run/probemesh";

/// The lab's state directory and the paths inside it.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl Default for StateDir {
    fn default() -> Self {
        Self {
            root: Path::new(RUN_DIR).join("lab"),
        }
    }
}

impl StateDir {
    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The CA, coordinator and admin certificates (`meshctl certs init`).
    pub fn tls(&self) -> PathBuf {
        self.root.join("tls")
    }
    /// A probe's own TLS directory (CA certificate, its certificate and key).
    pub fn probe_tls(&self, probe: &str) -> PathBuf {
        self.root.join("probes").join(probe)
    }
    /// Process logs.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// The log of one process.
    pub fn log(&self, process: &str) -> PathBuf {
        self.logs().join(format!("{process}.log"))
    }
    /// Where pid files go.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    /// The pid file of a process that writes one (dnsmasq).
    pub fn pid_file(&self, process: &str) -> PathBuf {
        self.run_dir().join(format!("{process}.pid"))
    }
    /// The inventory the coordinator loads.
    pub fn inventory(&self) -> PathBuf {
        self.root.join("inventory.json")
    }
    /// The coordinator's policy file (`--policy`).
    pub fn policy(&self) -> PathBuf {
        self.root.join("policy.json")
    }
    /// The lab cluster's Kubernetes PKI and kubeconfigs.
    pub fn kube(&self) -> PathBuf {
        self.root.join("kube")
    }
    /// The probe pods' projected ServiceAccount tokens, one `NODE.token` each.
    pub fn kube_tokens(&self) -> PathBuf {
        self.kube().join("tokens")
    }
    /// A kubeconfig with cluster-admin rights (for `kubectl`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.kube().join("admin.kubeconfig")
    }
    /// The coordinator's read-only kubeconfig.
    pub fn coordinator_kubeconfig(&self) -> PathBuf {
        self.kube().join("coordinator.kubeconfig")
    }
    /// The record.
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// Reads the record; `None` when the lab has none (down, or never up).
    pub fn load(&self) -> anyhow::Result<Option<LabState>> {
        let path = self.state_file();
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is damaged; `meshctl lab down` removes it",
                    path.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the record atomically.
    pub fn save(&self, state: &LabState) -> anyhow::Result<()> {
        let path = self.state_file();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }
}

/// A process the lab started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Process id.
    pub pid: i32,
    /// Start time (field 22 of /proc/PID/stat, clock ticks since boot), so a
    /// recycled PID is never mistaken for ours.
    pub start_ticks: u64,
    /// Namespace it runs in (`None`: the host).
    pub netns: Option<String>,
    /// Program and arguments, for `lab status` and humans.
    pub command: String,
}

/// The lab's record (`state.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    /// Processes by role (`coordinator`, `probe-node-1`, `web`, ...).
    #[serde(default)]
    pub processes: BTreeMap<String, ProcessRecord>,
    /// The active fault.
    #[serde(default)]
    pub fault: Option<String>,
    /// `--otlp-endpoint` given to `lab up`, reused when a process restarts.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// How kube-proxy writes the Service rules (`lab up --proxy-mode`);
    /// records from before the option say nothing: iptables.
    #[serde(default)]
    pub proxy_mode: ProxyMode,
    /// The network and processes were all made (`false` while `up` runs).
    #[serde(default)]
    pub complete: bool,
    /// How long the last `up` took, milliseconds.
    #[serde(default)]
    pub bring_up_ms: Option<u64>,
}

/// An exclusive lock over every lab change, held until dropped.
#[derive(Debug)]
pub struct LabLock {
    _lock: Flock<File>,
}

impl LabLock {
    /// Waits for and takes the lab lock (a `flock` on [`RUN_DIR`]).
    pub fn acquire() -> anyhow::Result<Self> {
        std::fs::create_dir_all(RUN_DIR).with_context(|| format!("creating {RUN_DIR}"))?;
        let dir = File::open(RUN_DIR).with_context(|| format!("opening {RUN_DIR}"))?;
        let lock = Flock::lock(dir, FlockArg::LockExclusive)
            .map_err(|(_, errno)| anyhow::anyhow!("locking {RUN_DIR}: {errno}"))?;
        Ok(Self { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let sd = StateDir {
            root: dir.path().to_owned(),
        };
        assert_eq!(sd.load()?, None);
        let mut st = LabState::default();
        st.processes.insert(
            "web".into(),
            ProcessRecord {
                pid: 42,
                start_ticks: 7,
                netns: Some("mesh-pod-web-0".into()),
                command: "meshctl lab serve-web".into(),
            },
        );
        st.fault = Some("mtu-blackhole".into());
        st.proxy_mode = ProxyMode::Nftables;
        sd.save(&st)?;
        assert_eq!(sd.load()?, Some(st));
        std::fs::write(sd.state_file(), "{")?;
        let err = sd.load().expect_err("damaged").to_string();
        assert!(err.contains("meshctl lab down"), "{err}");
        Ok(())
    }

    #[test]
    fn layout_is_under_one_directory() {
        let sd = StateDir::default();
        for p in [
            sd.tls(),
            sd.probe_tls("node-1"),
            sd.log("web"),
            sd.pid_file("dns"),
            sd.inventory(),
            sd.state_file(),
        ] {
            assert!(p.starts_with("/run/probemesh/lab"), "{}", p.display());
        }
    }
}
