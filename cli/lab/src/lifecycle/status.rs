//! `lab status`: the namespaces, processes and interfaces that are there,
//! read from the system, and whether they make a whole lab. Changes nothing.

use std::path::PathBuf;

use serde::Serialize;

use super::Lab;
use crate::rules::ProxyMode;
use crate::system;
use crate::topology::{self, HOST_VETH};

/// `lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// `up`, `down` or `partial`.
    pub state: &'static str,
    /// The active fault.
    pub fault: Option<String>,
    /// How kube-proxy writes the Service rules (`iptables`, `nftables`);
    /// absent when no lab is recorded.
    pub proxy_mode: Option<ProxyMode>,
    /// The coordinator URL.
    pub coordinator: String,
    /// The coordinator's web view (`meshctl web-token` prints the link
    /// that opens it).
    pub web: String,
    /// The state directory.
    pub state_dir: PathBuf,
    /// A kubeconfig for the lab's Kubernetes API (`kubectl --kubeconfig
    /// PATH get nodes`), once the lab serves it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Duration of the last bring-up, milliseconds.
    pub bring_up_ms: Option<u64>,
    /// Every lab namespace and whether it exists.
    pub namespaces: Vec<NamespaceStatus>,
    /// Every recorded process.
    pub processes: Vec<ProcessStatus>,
    /// Interfaces with their MTU and addresses, read from the namespaces.
    pub interfaces: Vec<InterfaceStatus>,
}

/// A namespace in `lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct NamespaceStatus {
    /// Name.
    pub name: &'static str,
    /// Exists.
    pub present: bool,
}

/// A process in `lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStatus {
    /// Role.
    pub name: String,
    /// Namespace (`None`: host).
    pub netns: Option<String>,
    /// PID.
    pub pid: i32,
    /// Still running.
    pub alive: bool,
}

/// An interface in `lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct InterfaceStatus {
    /// Namespace (`host` for the host's lab link).
    pub netns: String,
    /// Interface name.
    pub interface: String,
    /// MTU.
    pub mtu: u32,
    /// IPv4 addresses with prefix.
    pub addresses: Vec<String>,
}

impl Lab {
    /// `lab status`.
    pub async fn status(&self) -> anyhow::Result<StatusReport> {
        let state = self.dir.load()?;
        let namespaces: Vec<NamespaceStatus> = topology::namespaces()
            .into_iter()
            .map(|name| NamespaceStatus {
                name,
                present: system::netns_exists(name),
            })
            .collect();
        let processes: Vec<ProcessStatus> = state
            .iter()
            .flat_map(|s| s.processes.iter())
            .map(|(name, rec)| ProcessStatus {
                name: name.clone(),
                netns: rec.netns.clone(),
                pid: rec.pid,
                alive: system::alive(rec),
            })
            .collect();
        let mut interfaces = Vec::new();
        if system::host_link_exists(HOST_VETH) {
            interfaces.extend(read_interfaces(None).await);
        }
        for ns in namespaces.iter().filter(|n| n.present) {
            interfaces.extend(read_interfaces(Some(ns.name)).await);
        }
        let any = namespaces.iter().any(|n| n.present) || state.is_some();
        let healthy = state.as_ref().is_some_and(|s| self.healthy(s));
        Ok(StatusReport {
            state: if healthy {
                "up"
            } else if any {
                "partial"
            } else {
                "down"
            },
            fault: state.as_ref().and_then(|s| s.fault.clone()),
            proxy_mode: state.as_ref().map(|s| s.proxy_mode),
            coordinator: topology::coordinator_url(),
            web: format!("https://{}/", topology::web_view_addr()),
            state_dir: self.dir.root().to_owned(),
            kubeconfig: Some(self.dir.admin_kubeconfig()).filter(|p| p.exists()),
            bring_up_ms: state.as_ref().and_then(|s| s.bring_up_ms),
            namespaces,
            processes,
            interfaces,
        })
    }
}

/// The interfaces (but `lo`) of a namespace, or the host's lab link.
async fn read_interfaces(netns: Option<&str>) -> Vec<InterfaceStatus> {
    let out = match netns {
        Some(ns) => system::run("ip", &["-j", "-n", ns, "addr", "show"], None).await,
        None => system::run("ip", &["-j", "addr", "show", "dev", HOST_VETH], None).await,
    };
    let Ok(value) = out.map(|o| serde_json::from_str::<serde_json::Value>(&o).unwrap_or_default())
    else {
        return Vec::new();
    };
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l.get("ifname").and_then(|n| n.as_str()) != Some("lo"))
        .map(|l| InterfaceStatus {
            netns: netns.unwrap_or("host").to_owned(),
            interface: l
                .get("ifname")
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_owned(),
            mtu: l
                .get("mtu")
                .and_then(serde_json::Value::as_u64)
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or_default(),
            addresses: l
                .get("addr_info")
                .and_then(|a| a.as_array())
                .into_iter()
                .flatten()
                .filter(|a| a.get("family").and_then(|f| f.as_str()) == Some("inet"))
                .filter_map(|a| {
                    Some(format!(
                        "{}/{}",
                        a.get("local")?.as_str()?,
                        a.get("prefixlen")?.as_u64()?
                    ))
                })
                .collect(),
        })
        .collect()
}
