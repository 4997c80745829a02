//! `lab down`: stops every lab process and removes everything the lab made,
//! from whatever half-state it finds; harmless when nothing is there.

use anyhow::Context as _;
use serde::Serialize;

use super::{Lab, STOP_GRACE};
use crate::client_config;
use crate::state::{LabState, ProcessRecord};
use crate::system;
use crate::topology::{self, HOST_VETH};

/// What `down` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownReport {
    /// Processes that were running and were stopped.
    pub processes_stopped: usize,
    /// Namespaces deleted.
    pub namespaces_removed: Vec<String>,
    /// The host veth was deleted.
    pub host_link_removed: bool,
    /// The state directory was removed.
    pub state_removed: bool,
    /// The client configuration written by `up` was removed.
    pub client_config_removed: bool,
}

impl DownReport {
    /// Whether anything was there to remove.
    pub fn removed_anything(&self) -> bool {
        self.processes_stopped > 0
            || !self.namespaces_removed.is_empty()
            || self.host_link_removed
            || self.state_removed
            || self.client_config_removed
    }
}

impl Lab {
    /// `lab down`: stops every lab process and removes everything the lab
    /// made, whatever state it is in. Harmless when nothing is there.
    pub async fn down(&self) -> anyhow::Result<DownReport> {
        let mut report = DownReport::default();
        let state = match self.dir.load() {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                eprintln!("lab: {e:#}; cleaning up without it");
                LabState::default()
            }
        };
        let recorded: Vec<ProcessRecord> = state.processes.values().cloned().collect();
        report.processes_stopped += system::stop(&recorded, STOP_GRACE).await;
        let mut leftovers = Vec::new();
        for ns in topology::namespaces() {
            if system::netns_exists(ns) {
                leftovers.extend(system::leftover_processes(ns).await);
            }
        }
        report.processes_stopped += system::stop(&leftovers, STOP_GRACE).await;

        if system::host_link_exists(HOST_VETH) {
            if let Err(e) = system::run("ip", &["link", "del", HOST_VETH], None).await
                && system::host_link_exists(HOST_VETH)
            {
                return Err(e);
            }
            report.host_link_removed = true;
        }
        let present: Vec<&str> = topology::namespaces()
            .into_iter()
            .filter(|ns| system::netns_exists(ns))
            .collect();
        if !present.is_empty() {
            let script: Vec<String> = present.iter().map(|ns| format!("netns del {ns}")).collect();
            let result = system::run(
                "ip",
                &["-force", "-batch", "-"],
                Some(&(script.join("\n") + "\n")),
            )
            .await;
            let still: Vec<&str> = present
                .iter()
                .copied()
                .filter(|ns| system::netns_exists(ns))
                .collect();
            if !still.is_empty() {
                return Err(result
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("namespaces remain")))
                .with_context(|| format!("deleting namespaces {}", still.join(", ")));
            }
            report.namespaces_removed = present.iter().map(|s| (*s).to_owned()).collect();
        }
        system::remove_resolv_confs(&topology::resolv_conf_namespaces())?;
        report.client_config_removed = client_config::restore_after_lab()?;
        if self.dir.root().exists() {
            std::fs::remove_dir_all(self.dir.root())
                .with_context(|| format!("removing {}", self.dir.root().display()))?;
            report.state_removed = true;
        }
        Ok(report)
    }
}
