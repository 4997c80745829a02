//! The lab's lifecycle: `up` (network, certificates, processes, client
//! configuration; rolled back on failure), `down` (from any half-state),
//! `status`, and executing fault actions. [`Lab`] is defined here; each
//! concern adds its methods in its own module:
//! - `up`: bring-up and its rollback;
//! - `processes`: the lab's long-lived processes, started, awaited, registered;
//! - `down`: teardown;
//! - `status`: what is there;
//! - `inject`: a fault's actions, applied and undone.

mod down;
mod inject;
mod processes;
mod status;
mod up;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use probemesh_proto::pki;

use crate::rules::ProxyMode;
use crate::state::{LabState, StateDir};
use crate::system;
use crate::topology::{self, HOST_VETH};

pub use down::DownReport;
pub use status::{InterfaceStatus, NamespaceStatus, ProcessStatus, StatusReport};
pub use up::UpReport;

/// SIGTERM → SIGKILL grace.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The lab on this machine: its state directory and the binaries it runs.
#[derive(Debug, Clone)]
pub struct Lab {
    dir: StateDir,
    meshctl: PathBuf,
    bin_dir: PathBuf,
}

impl Lab {
    /// The lab of this machine, run with the binaries next to this meshctl.
    pub fn new() -> anyhow::Result<Self> {
        let meshctl = std::env::current_exe().context("locating the meshctl binary")?;
        let bin_dir = meshctl
            .parent()
            .context("the meshctl binary has no parent directory")?
            .to_owned();
        Ok(Self {
            dir: StateDir::default(),
            meshctl,
            bin_dir,
        })
    }

    /// The global flags that point a meshctl at the lab coordinator as admin.
    pub fn client_flags(&self) -> Vec<String> {
        vec![
            "--coordinator".to_owned(),
            topology::coordinator_url(),
            "--tls-dir".to_owned(),
            self.dir.tls().display().to_string(),
            "--identity".to_owned(),
            pki::ADMIN_NAME.to_owned(),
        ]
    }

    /// Refuses to run without root, the system tools (`nft` too in
    /// nftables mode) or the probemesh binaries.
    fn preflight(&self, mode: ProxyMode) -> anyhow::Result<()> {
        let nft = [("nft", "nftables")];
        let needed = match mode {
            ProxyMode::Iptables => &nft[..0],
            ProxyMode::Nftables => &nft[..],
        };
        let missing: Vec<String> = system::REQUIRED_TOOLS
            .iter()
            .chain(needed)
            .filter(|(tool, _)| system::which(tool).is_none())
            .map(|(tool, package)| format!("{tool} (package {package})"))
            .collect();
        if !missing.is_empty() {
            bail!(
                "the lab needs {}; install them (e.g. `apt-get install iproute2 iptables procps dnsmasq-base nftables`)",
                missing.join(", ")
            );
        }
        for bin in ["mesh-coordinator", "mesh-probe"] {
            let path = self.bin_dir.join(bin);
            if !path.is_file() {
                bail!(
                    "{} is missing: build every binary (`cargo build --workspace --bins`) so that it sits next to meshctl",
                    path.display()
                );
            }
        }
        Ok(())
    }

    /// Whether the recorded lab is complete and every part of it is present.
    fn healthy(&self, state: &LabState) -> bool {
        state.complete
            && topology::namespaces()
                .iter()
                .all(|ns| system::netns_exists(ns))
            && system::host_link_exists(HOST_VETH)
            && state.processes.values().all(system::alive)
    }

    /// Whether any trace of a lab exists.
    fn anything_present(&self) -> bool {
        self.dir.root().exists()
            || system::host_link_exists(HOST_VETH)
            || topology::namespaces()
                .iter()
                .any(|ns| system::netns_exists(ns))
    }

    /// The recorded lab's proxy mode; the default (iptables) when no lab is
    /// recorded or its record cannot be read.
    pub fn proxy_mode(&self) -> ProxyMode {
        self.dir
            .load()
            .ok()
            .flatten()
            .map(|s| s.proxy_mode)
            .unwrap_or_default()
    }

    /// Loads the state of a complete lab, or explains how to get one.
    pub fn require_up(&self) -> anyhow::Result<LabState> {
        match self.dir.load()? {
            Some(state) if state.complete => Ok(state),
            _ => bail!("the lab is not up: run `meshctl lab up` first"),
        }
    }

    /// Runs a meshctl subcommand against the lab coordinator; returns
    /// (exit code, stdout, stderr).
    pub async fn meshctl_output(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let out = tokio::process::Command::new(&self.meshctl)
            .args(self.client_flags())
            .args(args)
            .env_remove("MESH_OUTPUT")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("running meshctl {}", args.join(" ")))?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
