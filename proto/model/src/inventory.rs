//! The cluster inventory file (`mesh-coordinator --inventory FILE`): the nodes,
//! pods and Services of a cluster, shaped like the Kubernetes objects they
//! stand for, so that `nodeport:`, `svc:`, `pod:` and `probe:` targets resolve
//! the same way from a file (the lab, a cluster without API access) as from
//! the Kubernetes API.
//!
//! This module is plain data plus lookups: it reads JSON and answers
//! questions, it does not watch the file or talk to Kubernetes.
//!
//! ```json
//! { "nodes": [{ "name": "node-1", "internal_ip": "198.18.0.11", "pod_cidr": "198.19.1.0/24",
//!               "probe": "node-1", "kube_proxy": { "phase": "Running" } }],
//!   "pods": [{ "namespace": "default", "name": "web-0", "ip": "198.19.2.10", "node": "node-2",
//!              "netns": "mesh-pod-web-0" }],
//!   "services": [{ "namespace": "default", "name": "web", "cluster_ip": "198.18.200.80",
//!                  "ports": [{ "name": "http", "protocol": "TCP", "port": 80,
//!                              "target_port": 8080, "node_port": 30080 }],
//!                  "endpoints": [{ "pod": "web-0", "ip": "198.19.2.10", "port": 8080,
//!                                  "node": "node-2" }] }] }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A cluster: its nodes, pods and Services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Every node of the cluster.
    #[serde(default)]
    pub nodes: Vec<Node>,
    /// The pods probemesh may be asked about (not necessarily all of them).
    #[serde(default)]
    pub pods: Vec<Pod>,
    /// Services with their ports and ready endpoints.
    #[serde(default)]
    pub services: Vec<Service>,
}

/// A Kubernetes node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Node name (`metadata.name`).
    pub name: String,
    /// The registered `InternalIP` (`status.addresses`): the address other
    /// nodes expect this node's traffic, including overlay packets, to come from.
    pub internal_ip: IpAddr,
    /// Every address the node registered (`status.addresses`), `InternalIP`
    /// included; empty when the source lists only the `InternalIP`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    /// `spec.podCIDR`: the pod addresses allocated on this node; absent
    /// where the CNI allocates pod addresses itself (Calico, Cilium's
    /// cluster pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<Cidr>,
    /// Name of the probe running on this node, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// State of the node's kube-proxy pod, which owns its Service NAT rules;
    /// absent when no kube-proxy pod is known for the node (a cluster whose
    /// CNI replaces kube-proxy, or a source that does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_proxy: Option<KubeProxy>,
}

/// One entry of a node's `status.addresses`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The address.
    pub address: IpAddr,
}

/// The kube-proxy pod of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeProxy {
    /// `status.phase` of the pod.
    pub phase: PodPhase,
    /// `status.reason`, or the reason of the failing condition (e.g.
    /// `Evicted`, `Unschedulable`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The scheduler's or kubelet's message, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `namespace/name` of the pod, when the source names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// `spec.priorityClassName`; `None` when the source says the pod has
    /// none (see [`KubeProxy::priority_known`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class: Option<String>,
    /// Whether the source reports `spec.priorityClassName` at all (the
    /// Kubernetes API does; an inventory file may not).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub priority_known: bool,
}

impl KubeProxy {
    /// Whether the pod is not running (so the node's Service rules are not
    /// being kept).
    pub fn is_down(&self) -> bool {
        self.phase != PodPhase::Running
    }

    /// One sentence on the pod of `node`: its phase, reason, message and,
    /// when known, its priority class, e.g. "kube-proxy on node-3 (pod
    /// kube-system/kube-proxy-n3) is Pending (Unschedulable: 0/3 nodes are
    /// available ...); it has no priorityClassName, ...".
    pub fn describe(&self, node: &str) -> String {
        let pod = match &self.pod {
            Some(p) => format!("kube-proxy on {node} (pod {p})"),
            None => format!("kube-proxy on {node}"),
        };
        let mut out = format!("{pod} is {}", self.phase);
        match (&self.reason, &self.message) {
            (Some(r), Some(m)) => out.push_str(&format!(" ({r}: {m})")),
            (Some(r), None) => out.push_str(&format!(" ({r})")),
            (None, Some(m)) => out.push_str(&format!(" ({m})")),
            (None, None) => out.push_str(" (no reason given)"),
        }
        if self.priority_known {
            match &self.priority_class {
                Some(c) => out.push_str(&format!("; its priorityClassName is {c}")),
                None => out.push_str(
                    "; it has no priorityClassName, so the scheduler will not preempt other pods to place it",
                ),
            }
        }
        out
    }
}

/// A pod's `status.phase`, spelled as Kubernetes spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PodPhase {
    /// Accepted but not (yet) running, e.g. unschedulable or evicted.
    Pending,
    /// Bound to a node and running.
    Running,
    /// All containers exited successfully.
    Succeeded,
    /// A container exited with an error.
    Failed,
    /// The node stopped reporting.
    Unknown,
}

impl fmt::Display for PodPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
            PodPhase::Unknown => "Unknown",
        })
    }
}

/// A pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `status.podIP`.
    pub ip: IpAddr,
    /// `spec.nodeName`.
    pub node: String,
    /// Name of the pod's network namespace under `/run/netns` (the lab names
    /// them; on a real node the probe finds it from the container runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// `spec.dnsPolicy` and `spec.dnsConfig`, when the source reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<PodDns>,
}

/// How a pod's resolver is configured (`spec.dnsPolicy`, `spec.dnsConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodDns {
    /// `ClusterFirst`, `ClusterFirstWithHostNet`, `Default` or `None`.
    pub policy: String,
    /// `dnsConfig.nameservers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// `dnsConfig.searches`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<String>,
}

/// A Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.clusterIP`.
    pub cluster_ip: IpAddr,
    /// `spec.ports`.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// The endpoints (EndpointSlice), one per backend address and port;
    /// [`Endpoint::ready`] says which receive Service traffic.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// One entry of a Service's `spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// Port name (`http`, `dns`, `dns-tcp`).
    pub name: String,
    /// Transport protocol.
    pub protocol: Protocol,
    /// The ClusterIP port.
    pub port: u16,
    /// The port on the backend pods.
    pub target_port: u16,
    /// The NodePort opened on every node, if the Service has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

/// A backend of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Name of the backing pod (in the Service's namespace).
    pub pod: String,
    /// The pod's address.
    pub ip: IpAddr,
    /// The pod's port.
    pub port: u16,
    /// The node the pod runs on.
    pub node: String,
    /// `conditions.ready` of the EndpointSlice entry; only ready endpoints
    /// receive Service traffic.
    #[serde(default = "ready_by_default", skip_serializing_if = "is_true")]
    pub ready: bool,
}

fn ready_by_default() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A Service port's protocol, spelled as Kubernetes spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
}

/// An address block such as `198.19.1.0/24` (IPv4 or IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// A block from its first address and prefix length; refuses a prefix
    /// longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, InvalidInventory> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(InvalidInventory::Cidr(format!("{addr}/{prefix}")));
        }
        Ok(Self { addr, prefix })
    }

    /// The address as written (normally the first one of the block).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this block (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = InvalidInventory;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidInventory::Cidr(s.to_owned());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        Self::new(addr, prefix).map_err(|_| bad())
    }
}

impl TryFrom<String> for Cidr {
    type Error = InvalidInventory;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> Self {
        c.to_string()
    }
}

/// Why an inventory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("reading inventory {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not inventory JSON.
    #[error("inventory {path} is not valid inventory JSON: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why parsing stopped.
        source: serde_json::Error,
    },
    /// The file parses but contradicts itself.
    #[error("inventory {path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The contradiction.
        source: InvalidInventory,
    },
}

/// A contradiction inside an inventory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInventory {
    /// An address block that does not parse.
    #[error("'{0}' is not an address block (write e.g. 198.19.1.0/24)")]
    Cidr(String),
    /// Two objects share a name.
    #[error("{kind} '{name}' appears twice")]
    Duplicate {
        /// `node`, `pod` or `service`.
        kind: &'static str,
        /// The repeated (namespaced) name.
        name: String,
    },
    /// A reference to a node that is not listed.
    #[error("{what} names node '{node}', which is not in the inventory")]
    UnknownNode {
        /// Who refers to it.
        what: String,
        /// The missing node.
        node: String,
    },
    /// Port 0 somewhere.
    #[error("{0} has port 0")]
    ZeroPort(String),
}

impl Inventory {
    /// Reads and checks an inventory file.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let inventory: Inventory =
            serde_json::from_slice(&bytes).map_err(|source| LoadError::Parse {
                path: path.to_owned(),
                source,
            })?;
        inventory.validate().map_err(|source| LoadError::Invalid {
            path: path.to_owned(),
            source,
        })?;
        Ok(inventory)
    }

    /// Checks that names are unique, references point at listed nodes and
    /// no port is 0.
    pub fn validate(&self) -> Result<(), InvalidInventory> {
        let mut nodes = HashSet::new();
        for n in &self.nodes {
            if !nodes.insert(n.name.as_str()) {
                return Err(InvalidInventory::Duplicate {
                    kind: "node",
                    name: n.name.clone(),
                });
            }
        }
        let known = |what: String, node: &str| {
            if nodes.contains(node) {
                Ok(())
            } else {
                Err(InvalidInventory::UnknownNode {
                    what,
                    node: node.to_owned(),
                })
            }
        };
        let mut pods = HashSet::new();
        for p in &self.pods {
            if !pods.insert((p.namespace.as_str(), p.name.as_str())) {
                return Err(InvalidInventory::Duplicate {
                    kind: "pod",
                    name: format!("{}/{}", p.namespace, p.name),
                });
            }
            known(format!("pod {}/{}", p.namespace, p.name), &p.node)?;
        }
        let mut services = HashSet::new();
        for s in &self.services {
            let id = format!("{}/{}", s.namespace, s.name);
            if !services.insert((s.namespace.as_str(), s.name.as_str())) {
                return Err(InvalidInventory::Duplicate {
                    kind: "service",
                    name: id,
                });
            }
            for p in &s.ports {
                if p.port == 0 || p.target_port == 0 || p.node_port == Some(0) {
                    return Err(InvalidInventory::ZeroPort(format!(
                        "service {id} port '{}'",
                        p.name
                    )));
                }
            }
            for e in &s.endpoints {
                if e.port == 0 {
                    return Err(InvalidInventory::ZeroPort(format!(
                        "service {id} endpoint {}",
                        e.pod
                    )));
                }
                known(format!("service {id} endpoint {}", e.pod), &e.node)?;
            }
        }
        Ok(())
    }

    /// The node whose pod network holds `ip`, with that network.
    pub fn node_owning(&self, ip: IpAddr) -> Option<(&Node, Cidr)> {
        self.nodes
            .iter()
            .find_map(|n| n.pod_cidr.filter(|c| c.contains(ip)).map(|c| (n, c)))
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node whose probe is called `probe`.
    pub fn node_of_probe(&self, probe: &str) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.probe.as_deref() == Some(probe))
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    /// The Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
    }

    /// The Service and port that own NodePort `port`, if any does.
    pub fn nodeport_service(&self, port: u16) -> Option<(&Service, &ServicePort)> {
        self.services.iter().find_map(|s| {
            s.ports
                .iter()
                .find(|p| p.node_port == Some(port))
                .map(|p| (s, p))
        })
    }

    /// The nodes where NodePort `port` should answer: every node when a
    /// Service owns that NodePort (kube-proxy opens it cluster-wide), none
    /// otherwise. Whether each node's kube-proxy actually runs is in
    /// [`Node::kube_proxy`].
    pub fn nodes_with_nodeport(&self, port: u16) -> Vec<&Node> {
        if self.nodeport_service(port).is_some() {
            self.nodes.iter().collect()
        } else {
            Vec::new()
        }
    }
}

impl Service {
    /// The endpoints that receive Service traffic.
    pub fn ready_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(|e| e.ready)
    }

    /// The port called `name`.
    pub fn port_named(&self, name: &str) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The ClusterIP port numbered `port` (any protocol; TCP first).
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        let mut matching = self.ports.iter().filter(|p| p.port == port);
        let first = matching.next()?;
        if first.protocol == Protocol::Tcp {
            return Some(first);
        }
        matching
            .find(|p| p.protocol == Protocol::Tcp)
            .or(Some(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    const LAB: &str = r#"{
      "nodes": [
        {"name": "node-1", "internal_ip": "198.18.0.11", "pod_cidr": "198.19.1.0/24",
         "probe": "node-1", "kube_proxy": {"phase": "Running"}},
        {"name": "node-2", "internal_ip": "198.18.0.12", "pod_cidr": "198.19.2.0/24",
         "probe": "node-2", "kube_proxy": {"phase": "Running"}},
        {"name": "node-3", "internal_ip": "198.18.0.13", "pod_cidr": "198.19.3.0/24",
         "probe": "node-3", "kube_proxy": {"phase": "Pending", "reason": "Evicted"}}
      ],
      "pods": [
        {"namespace": "default", "name": "web-0", "ip": "198.19.2.10", "node": "node-2",
         "netns": "mesh-pod-web-0"},
        {"namespace": "kube-system", "name": "dns-0", "ip": "198.19.1.53", "node": "node-1"}
      ],
      "services": [
        {"namespace": "default", "name": "web", "cluster_ip": "198.18.200.80",
         "ports": [{"name": "http", "protocol": "TCP", "port": 80, "target_port": 8080,
                    "node_port": 30080}],
         "endpoints": [{"pod": "web-0", "ip": "198.19.2.10", "port": 8080, "node": "node-2"}]},
        {"namespace": "kube-system", "name": "kube-dns", "cluster_ip": "198.18.200.10",
         "ports": [{"name": "dns", "protocol": "UDP", "port": 53, "target_port": 53},
                   {"name": "dns-tcp", "protocol": "TCP", "port": 53, "target_port": 53}],
         "endpoints": [{"pod": "dns-0", "ip": "198.19.1.53", "port": 53, "node": "node-1"}]}
      ]
    }"#;

    fn lab() -> Inventory {
        let inv: Inventory = serde_json::from_str(LAB).expect("fixture parses");
        inv.validate().expect("fixture is consistent");
        inv
    }

    #[test]
    fn lookups_find_what_the_lab_declares() {
        let inv = lab();
        let n3 = inv.node("node-3").expect("node-3");
        let kp = n3.kube_proxy.as_ref().expect("kube-proxy");
        assert!(kp.is_down());
        assert_eq!(kp.phase, PodPhase::Pending);
        assert_eq!(kp.reason.as_deref(), Some("Evicted"));
        assert_eq!(
            kp.describe("node-3"),
            "kube-proxy on node-3 is Pending (Evicted)",
            "an inventory file that does not report the priority class says nothing about it"
        );
        assert_eq!(
            inv.node_owning("198.19.2.10".parse().expect("ip"))
                .map(|(n, _)| n.name.as_str()),
            Some("node-2")
        );
        assert_eq!(
            inv.node_of_probe("node-2").map(|n| n.name.as_str()),
            Some("node-2")
        );
        let web0 = inv.pod("default", "web-0").expect("web-0");
        assert_eq!(web0.netns.as_deref(), Some("mesh-pod-web-0"));
        assert!(
            inv.node("node-2")
                .and_then(|n| n.pod_cidr)
                .is_some_and(|c| c.contains(web0.ip))
        );
        assert!(inv.pod("kube-system", "web-0").is_none());
        let web = inv.service("default", "web").expect("web");
        assert_eq!(web.cluster_ip.to_string(), "198.18.200.80");
        assert_eq!(web.port(80).map(|p| p.target_port), Some(8080));
        let dns = inv.service("kube-system", "kube-dns").expect("kube-dns");
        assert_eq!(dns.port(53).map(|p| p.protocol), Some(Protocol::Tcp));
        assert_eq!(
            dns.port_named("dns").map(|p| p.protocol),
            Some(Protocol::Udp)
        );
    }

    #[test]
    fn nodeports_open_on_every_node_or_none() {
        let inv = lab();
        let names: Vec<_> = inv
            .nodes_with_nodeport(30080)
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["node-1", "node-2", "node-3"]);
        assert!(inv.nodes_with_nodeport(30081).is_empty());
        assert_eq!(
            inv.nodeport_service(30080)
                .map(|(s, p)| (s.name.as_str(), p.port)),
            Some(("web", 80))
        );
    }

    #[test]
    fn round_trips_through_json() {
        let inv = lab();
        let again: Inventory =
            serde_json::from_str(&serde_json::to_string(&inv).expect("serializes"))
                .expect("parses");
        assert_eq!(again, inv);
        let json = serde_json::to_value(&inv).expect("serializes");
        assert_eq!(json["services"][1]["ports"][0]["protocol"], "UDP");
        assert_eq!(json["nodes"][0]["pod_cidr"], "198.19.1.0/24");
        assert_eq!(json["nodes"][0]["kube_proxy"]["phase"], "Running");
    }

    #[test]
    fn load_reports_the_file_and_the_contradiction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("inventory.json");
        assert!(matches!(
            Inventory::load(&path),
            Err(LoadError::Read { .. })
        ));
        std::fs::write(&path, "{\"nodes\": 3}").expect("write");
        assert!(matches!(
            Inventory::load(&path),
            Err(LoadError::Parse { .. })
        ));
        let mut bad = lab();
        bad.pods[0].node = "node-9".into();
        std::fs::write(&path, serde_json::to_vec(&bad).expect("serializes")).expect("write");
        let err = Inventory::load(&path)
            .expect_err("unknown node")
            .to_string();
        assert!(
            err.contains("pod default/web-0 names node 'node-9'"),
            "{err}"
        );
        assert!(err.contains("inventory.json"), "{err}");
        std::fs::write(&path, LAB).expect("write");
        assert_eq!(Inventory::load(&path).expect("loads"), lab());
    }

    #[test]
    fn duplicates_and_zero_ports_are_refused() {
        let mut inv = lab();
        inv.nodes.push(inv.nodes[0].clone());
        assert!(matches!(
            inv.validate(),
            Err(InvalidInventory::Duplicate { kind: "node", .. })
        ));
        let mut inv = lab();
        inv.services[0].ports[0].node_port = Some(0);
        assert!(matches!(inv.validate(), Err(InvalidInventory::ZeroPort(_))));
    }

    #[test_case("198.19.1.0/24", "198.19.1.200", true)]
    #[test_case("198.19.1.0/24", "198.19.2.1", false)]
    #[test_case("198.18.0.0/15", "198.19.255.255", true)]
    #[test_case("0.0.0.0/0", "203.0.113.1", true)]
    #[test_case("198.18.0.11/32", "198.18.0.11", true)]
    #[test_case("fd00::/8", "fd12::1", true)]
    #[test_case("fd00::/8", "198.19.1.1", false)]
    fn cidr_contains(cidr: &str, ip: &str, expected: bool) {
        let cidr: Cidr = cidr.parse().expect("cidr");
        assert_eq!(cidr.contains(ip.parse().expect("ip")), expected);
    }

    #[test_case("198.19.1.0" ; "no prefix")]
    #[test_case("198.19.1.0/33" ; "prefix too long")]
    #[test_case("node-1/24" ; "not an address")]
    #[test_case("198.19.1.0/x" ; "prefix not a number")]
    fn bad_cidrs_are_refused(s: &str) {
        assert_eq!(s.parse::<Cidr>(), Err(InvalidInventory::Cidr(s.to_owned())));
    }
}
