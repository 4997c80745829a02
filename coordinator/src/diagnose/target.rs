//! What a `meshctl probe` TARGET expands to: every address worth testing,
//! the node it lives on, the probe that can answer from that side, and why
//! it was chosen. Pure over the registry and the inventory.
//!
//! - `nodeport:PORT`: every node's address at the NodePort (or one node's),
//!   plus the Service's backend pods and the nodes they run on;
//! - `svc:NS/NAME[:PORT]`: the ClusterIP and port, plus the backend pods at
//!   their target port;
//! - `pod:NS/NAME[:PORT]`: the pod's IP on its node;
//! - `probe:NAME[:PORT]`: the probe's primary address;
//! - `IP[:PORT]`, `HOSTNAME[:PORT]`: as given (a hostname is resolved where
//!   the test runs, and checked by DNS first);
//! - `dns:NAME`: no address, a resolution check only.

use std::fmt;
use std::net::IpAddr;

use probemesh_model::inventory::{Inventory, Service};
use probemesh_model::target::{InvalidTarget, Port, Target};
use probemesh_proto::pb;

use crate::error::Error;
use crate::registry::Registry;
use crate::resolve;

/// What an endpoint is, which decides the checks it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A node's own address (NodePort).
    Node,
    /// A Service's virtual IP: kube-proxy rewrites it, nobody answers ping.
    ClusterIp,
    /// A pod behind a Service.
    Backend,
    /// A pod named directly.
    Pod,
    /// A registered probe's address.
    Probe,
    /// An address or hostname as given.
    Address,
}

impl Role {
    /// The name in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::ClusterIp => "cluster_ip",
            Role::Backend => "backend",
            Role::Pod => "pod",
            Role::Probe => "probe",
            Role::Address => "address",
        }
    }

    /// Pod addresses (routed inside the cluster only).
    pub fn is_pod(self) -> bool {
        matches!(self, Role::Backend | Role::Pod)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One address to test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// IP literal, or a hostname resolved on the testing probe.
    pub host: String,
    /// The port, when the target has one.
    pub port: Option<u16>,
    /// What it is.
    pub role: Role,
    /// The node it lives on, when known.
    pub node: Option<String>,
    /// A probe that can test from this side (`NAME` or
    /// `NAME@pod:NS/POD`), when one is connected or known.
    pub probe: Option<String>,
    /// Why it was chosen.
    pub reason: String,
}

impl Endpoint {
    /// `host:port` or `host`.
    pub fn address(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    /// The address as an IP, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// A TARGET, expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// As the user wrote it.
    pub spec: String,
    /// The addresses to test, the target's own first.
    pub endpoints: Vec<Endpoint>,
    /// The name to resolve (`dns:NAME` and hostname targets).
    pub name: Option<String>,
    /// The Service behind the target (svc: and nodeport: targets).
    pub service: Option<ServiceRef>,
}

/// The Service a target goes through, for NAT-rule checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    /// `NAMESPACE/NAME`.
    pub id: String,
    /// Its ClusterIP.
    pub cluster_ip: IpAddr,
    /// The port asked: the ClusterIP port, or the NodePort.
    pub port: u16,
    /// Whether `port` is a NodePort.
    pub node_port: bool,
}

/// The host that holds an address: the probe on it, and whether the
/// address is one of its pods'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The probe on that host.
    pub probe: String,
    /// A pod's address (in the node's pod network), not the host's own.
    pub pod: bool,
}

impl Resolved {
    /// Who holds `ip`: a node by its address or pod network, else a target
    /// endpoint with a probe (an external host).
    pub fn holder(&self, inventory: Option<&Inventory>, ip: IpAddr) -> Option<Holder> {
        let node = inventory.and_then(|inv| {
            inv.nodes.iter().find_map(|n| {
                let probe = n.probe.clone()?;
                if n.internal_ip == ip {
                    Some(Holder { probe, pod: false })
                } else {
                    n.pod_cidr
                        .is_some_and(|c| c.contains(ip))
                        .then_some(Holder { probe, pod: true })
                }
            })
        });
        node.or_else(|| {
            let probe = self
                .endpoints
                .iter()
                .find(|ep| ep.ip() == Some(ip))?
                .probe
                .as_deref()?;
            Some(match probe.split_once("@pod:") {
                Some((host, _)) => Holder {
                    probe: host.to_owned(),
                    pod: true,
                },
                None => Holder {
                    probe: probe.to_owned(),
                    pod: false,
                },
            })
        })
    }

    /// As it travels in the record.
    pub fn to_pb(&self) -> pb::ResolvedTarget {
        pb::ResolvedTarget {
            spec: self.spec.clone(),
            name: self.name.clone().unwrap_or_default(),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| pb::TargetEndpoint {
                    node: e.node.clone().unwrap_or_default(),
                    ip: e.host.clone(),
                    port: e.port.map_or(0, u32::from),
                    role: e.role.as_str().to_owned(),
                    reason: e.reason.clone(),
                    probe: e.probe.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// Expands `spec`.
pub fn resolve(
    spec: &str,
    registry: &Registry,
    inventory: Option<&Inventory>,
) -> Result<Resolved, Error> {
    let target: Target = spec
        .parse()
        .map_err(|e: InvalidTarget| Error::InvalidRequest(e.to_string()))?;
    let need_inventory = || {
        inventory.ok_or_else(|| {
            Error::InvalidRequest(format!(
                "'{spec}' needs the cluster inventory, and this coordinator has none: start it with --inventory FILE"
            ))
        })
    };
    let mut resolved = Resolved {
        spec: spec.to_owned(),
        endpoints: Vec::new(),
        name: None,
        service: None,
    };
    match target {
        Target::Ip { addr, port } => {
            let (node, probe) = owner_of(addr, registry, inventory);
            resolved.endpoints.push(Endpoint {
                host: addr.to_string(),
                port: port.map(Port::get),
                role: Role::Address,
                node,
                probe,
                reason: "address as given".into(),
            });
        }
        Target::Host { name, port } => {
            resolved.endpoints.push(Endpoint {
                host: name.clone(),
                port: port.map(Port::get),
                role: Role::Address,
                node: None,
                probe: None,
                reason: "hostname, resolved where each test runs".into(),
            });
            resolved.name = Some(name);
        }
        Target::Dns { name } => resolved.name = Some(name),
        Target::Probe { name, port } => {
            let aim = resolve::aim(&format!("probe:{name}"), registry, inventory)?;
            resolved.endpoints.push(Endpoint {
                host: aim.host,
                port: port.map(Port::get),
                role: Role::Probe,
                node: inventory
                    .and_then(|i| i.node_of_probe(&name))
                    .map(|n| n.name.clone()),
                probe: Some(name.clone()),
                reason: format!("primary address of probe {name}"),
            });
        }
        Target::NodePort { node, port } => {
            let inv = need_inventory()?;
            let (svc, svc_port) = inv.nodeport_service(port.get()).ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "no Service exposes NodePort {port} (see the inventory's services)"
                ))
            })?;
            let nodes: Vec<_> = match &node {
                Some(n) => vec![inv.node(n).ok_or_else(|| {
                    Error::InvalidRequest(format!("no node '{n}' in the inventory"))
                })?],
                None => inv.nodes_with_nodeport(port.get()),
            };
            let all = node.is_none();
            for n in nodes {
                resolved.endpoints.push(Endpoint {
                    host: n.internal_ip.to_string(),
                    port: Some(port.get()),
                    role: Role::Node,
                    node: Some(n.name.clone()),
                    probe: n.probe.clone(),
                    reason: if all {
                        format!("NodePort {port} opens on every node; node {}", n.name)
                    } else {
                        format!("NodePort {port} on node {}", n.name)
                    },
                });
            }
            push_backends(&mut resolved, inv, svc, svc_port.target_port);
            resolved.service = Some(ServiceRef {
                id: format!("{}/{}", svc.namespace, svc.name),
                cluster_ip: svc.cluster_ip,
                port: port.get(),
                node_port: true,
            });
        }
        Target::Service {
            namespace,
            name,
            port,
        } => {
            let inv = need_inventory()?;
            let svc = inv.service(&namespace, &name).ok_or_else(|| {
                Error::InvalidRequest(format!("no Service {namespace}/{name} in the inventory"))
            })?;
            let svc_port = match port {
                Some(p) => svc.port(p.get()).ok_or_else(|| {
                    Error::InvalidRequest(format!(
                        "Service {namespace}/{name} has no port {p} (it has {})",
                        svc.ports
                            .iter()
                            .map(|p| p.port.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?,
                None => svc.ports.first().ok_or_else(|| {
                    Error::InvalidRequest(format!("Service {namespace}/{name} has no ports"))
                })?,
            };
            resolved.endpoints.push(Endpoint {
                host: svc.cluster_ip.to_string(),
                port: Some(svc_port.port),
                role: Role::ClusterIp,
                node: None,
                probe: None,
                reason: format!("ClusterIP of Service {namespace}/{name}"),
            });
            push_backends(&mut resolved, inv, svc, svc_port.target_port);
            resolved.service = Some(ServiceRef {
                id: format!("{namespace}/{name}"),
                cluster_ip: svc.cluster_ip,
                port: svc_port.port,
                node_port: false,
            });
        }
        Target::Pod {
            namespace,
            name,
            port,
        } => {
            let inv = need_inventory()?;
            let pod = inv.pod(&namespace, &name).ok_or_else(|| {
                Error::InvalidRequest(format!("no pod {namespace}/{name} in the inventory"))
            })?;
            resolved.endpoints.push(Endpoint {
                host: pod.ip.to_string(),
                port: port.map(Port::get),
                role: Role::Pod,
                node: Some(pod.node.clone()),
                probe: pod_probe(inv, &namespace, &name),
                reason: format!("IP of pod {namespace}/{name} on {}", pod.node),
            });
        }
    }
    Ok(resolved)
}

/// The Service's backend pods at `target_port`.
fn push_backends(resolved: &mut Resolved, inv: &Inventory, svc: &Service, target_port: u16) {
    for e in svc.ready_endpoints() {
        resolved.endpoints.push(Endpoint {
            host: e.ip.to_string(),
            port: Some(if e.port == 0 { target_port } else { e.port }),
            role: Role::Backend,
            node: Some(e.node.clone()),
            probe: pod_probe(inv, &svc.namespace, &e.pod),
            reason: format!(
                "backend {}/{} of Service {}/{} on {}",
                svc.namespace, e.pod, svc.namespace, svc.name, e.node
            ),
        });
    }
}

/// `PROBE@pod:NS/NAME` for a pod whose node has a probe (which enters the
/// pod's network namespace by name or by the pod's address).
pub(crate) fn pod_probe(inv: &Inventory, namespace: &str, name: &str) -> Option<String> {
    let pod = inv.pod(namespace, name)?;
    let probe = inv.node(&pod.node)?.probe.as_deref()?;
    Some(format!("{probe}@pod:{namespace}/{name}"))
}

/// The node and probe that own `addr`: a node's internal IP, or an address
/// a connected probe reported.
fn owner_of(
    addr: IpAddr,
    registry: &Registry,
    inventory: Option<&Inventory>,
) -> (Option<String>, Option<String>) {
    if let Some(n) = inventory.and_then(|i| i.nodes.iter().find(|n| n.internal_ip == addr)) {
        return (Some(n.name.clone()), n.probe.clone());
    }
    let probe = registry.list().into_iter().find(|p| {
        p.interfaces.iter().any(|i| {
            i.addresses
                .iter()
                .any(|a| a.split('/').next().and_then(|ip| ip.parse().ok()) == Some(addr))
        })
    });
    let probe = probe.map(|p| p.name);
    let node = probe
        .as_deref()
        .and_then(|p| inventory?.node_of_probe(p))
        .map(|n| n.name.clone());
    (node, probe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::testing::lab_inventory;

    fn resolve_lab(spec: &str) -> Resolved {
        resolve(
            spec,
            &crate::registry::attached(&["node-1", "node-2", "node-3", "cloudvm-1"]),
            Some(&lab_inventory()),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn nodeport_expands_to_every_node_and_the_backends() {
        let r = resolve_lab("nodeport:30080");
        let summary: Vec<(String, Role, Option<String>)> = r
            .endpoints
            .iter()
            .map(|e| (e.address(), e.role, e.probe.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "198.18.0.11:30080".into(),
                    Role::Node,
                    Some("node-1".into())
                ),
                (
                    "198.18.0.12:30080".into(),
                    Role::Node,
                    Some("node-2".into())
                ),
                (
                    "198.18.0.13:30080".into(),
                    Role::Node,
                    Some("node-3".into())
                ),
                (
                    "198.19.2.10:8080".into(),
                    Role::Backend,
                    Some("node-2@pod:default/web-0".into())
                ),
            ]
        );
        let svc = r.service.unwrap();
        assert_eq!(
            (svc.id.as_str(), svc.port, svc.node_port),
            ("default/web", 30080, true)
        );
        let one = resolve_lab("nodeport:node-2:30080");
        assert_eq!(one.endpoints.len(), 2);
        assert!(one.endpoints[0].reason.contains("node-2"));
    }

    #[tokio::test]
    async fn services_pods_probes_and_names() {
        let svc = resolve_lab("svc:default/web");
        assert_eq!(svc.endpoints[0].address(), "198.18.200.80:80");
        assert_eq!(svc.endpoints[0].role, Role::ClusterIp);
        assert_eq!(svc.endpoints[1].address(), "198.19.2.10:8080");
        let pod = resolve_lab("pod:default/web-0:8080");
        assert_eq!(
            (pod.endpoints[0].node.as_deref(), pod.endpoints[0].role),
            (Some("node-2"), Role::Pod)
        );
        let probe = resolve_lab("probe:node-2");
        assert_eq!(probe.endpoints[0].host, "198.18.0.12");
        assert_eq!(probe.endpoints[0].port, None);
        let dns = resolve_lab("dns:web.default.svc.cluster.local");
        assert!(dns.endpoints.is_empty());
        assert_eq!(dns.name.as_deref(), Some("web.default.svc.cluster.local"));
        let ip = resolve_lab("198.18.0.13:22");
        assert_eq!(ip.endpoints[0].probe.as_deref(), Some("node-3"));
    }

    #[tokio::test]
    async fn unknown_things_are_named_in_the_error() {
        let reg = crate::registry::attached(&["node-1"]);
        let inv = lab_inventory();
        for (spec, says) in [
            ("nodeport:31999", "NodePort 31999"),
            ("svc:default/nope", "default/nope"),
            ("svc:default/web:81", "no port 81"),
            ("pod:default/nope", "default/nope"),
            ("probe:node-9", "node-9"),
            ("nodeport:node-9:30080", "node-9"),
        ] {
            let err = resolve(spec, &reg, Some(&inv)).unwrap_err().to_string();
            assert!(err.contains(says), "{spec}: {err}");
        }
        let err = resolve("svc:default/web", &reg, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--inventory"), "{err}");
    }
}
