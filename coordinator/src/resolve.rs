//! Turns what the user named into what a probe task can use: a source
//! (`PROBE` or `PROBE@pod:NS/NAME`, the latter a network namespace on that
//! probe's node) and a target (an address or a hostname the probe resolves
//! itself), through the registry and the cluster inventory.

use std::net::IpAddr;

use probemesh_model::inventory::Inventory;
use probemesh_model::target::{Port, Target};
use probemesh_proto::pb;

use crate::error::Error;
use crate::registry::Registry;

/// Where a task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The probe that runs it.
    pub probe: String,
    /// The pod namespace to enter, if any.
    pub netns: Option<pb::NetnsRef>,
}

/// Parses and resolves `PROBE[@pod:NAMESPACE/NAME]`.
pub fn source(spec: &str, inventory: Option<&Inventory>) -> Result<Source, Error> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(Error::InvalidRequest("--from PROBE is required".into()));
    }
    let Some((probe, pod)) = spec.split_once('@') else {
        return Ok(Source {
            probe: spec.to_owned(),
            netns: None,
        });
    };
    let Ok(Target::Pod {
        namespace,
        name,
        port: None,
    }) = pod.parse::<Target>()
    else {
        return Err(Error::InvalidRequest(format!(
            "'{spec}': after '@' give the pod as pod:NAMESPACE/NAME, e.g. node-3@pod:default/client-3"
        )));
    };
    let inventory = inventory.ok_or_else(no_inventory(spec))?;
    let pod = inventory.pod(&namespace, &name).ok_or_else(|| {
        Error::InvalidRequest(format!("no pod {namespace}/{name} in the inventory"))
    })?;
    let node = inventory.node(&pod.node);
    let runs_on = node
        .and_then(|n| n.probe.as_deref())
        .unwrap_or(pod.node.as_str());
    if runs_on != probe {
        return Err(Error::InvalidRequest(format!(
            "pod {namespace}/{name} runs on node {} (probe {runs_on}), not on {probe}: use --from {runs_on}@pod:{namespace}/{name}",
            pod.node
        )));
    }
    // The inventory names the namespace (a file), or the probe finds the
    // one holding the pod's address (the Kubernetes API names none).
    let target = match &pod.netns {
        Some(netns) if netns.starts_with('/') => pb::netns_ref::Target::Path(netns.clone()),
        Some(netns) => pb::netns_ref::Target::Path(format!("/run/netns/{netns}")),
        None => pb::netns_ref::Target::PodIp(pod.ip.to_string()),
    };
    Ok(Source {
        probe: probe.to_owned(),
        netns: Some(pb::NetnsRef {
            target: Some(target),
            label: format!("pod {namespace}/{name}"),
        }),
    })
}

/// Where a tool task is aimed, as the probe will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aim {
    /// An IP literal or a hostname resolved on the probe.
    pub host: String,
    /// The port, when the spec gave or implied one.
    pub port: Option<Port>,
    /// The probe behind the address, when the target is `probe:NAME`.
    pub probe: Option<String>,
    /// Why this address was chosen, for the user.
    pub reason: String,
}

impl Aim {
    fn new(host: impl Into<String>, port: Option<Port>, reason: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            probe: None,
            reason: reason.into(),
        }
    }
}

/// Resolves a TARGET spec for a tool task.
pub fn aim(spec: &str, registry: &Registry, inventory: Option<&Inventory>) -> Result<Aim, Error> {
    let target: Target = spec
        .parse()
        .map_err(|e: probemesh_model::target::InvalidTarget| {
            Error::InvalidRequest(e.to_string())
        })?;
    match target {
        Target::Ip { addr, port } => Ok(Aim::new(addr.to_string(), port, "literal address")),
        Target::Host { name, port } => Ok(Aim::new(name, port, "hostname, resolved on the probe")),
        Target::Probe { name, port } => {
            let hello = registry
                .hello(&name)
                .ok_or_else(|| Error::UnknownProbe(name.clone()))?;
            let addr = probe_address(&name, &hello.interfaces, inventory).ok_or_else(|| {
                Error::InvalidRequest(format!("probe '{name}' reported no usable IPv4 address"))
            })?;
            Ok(Aim {
                probe: Some(name.clone()),
                ..Aim::new(addr.to_string(), port, format!("address of probe {name}"))
            })
        }
        Target::Dns { .. } => Err(Error::InvalidRequest(format!(
            "'{spec}' is a resolution check: use `meshctl dig --from PROBE NAME`"
        ))),
        Target::NodePort { node, port } => {
            let inv = inventory.ok_or_else(no_inventory(spec))?;
            let nodes = inv.nodes_with_nodeport(port.get());
            if nodes.is_empty() {
                return Err(Error::InvalidRequest(format!(
                    "no Service exposes NodePort {port}"
                )));
            }
            let chosen = match &node {
                Some(n) => inv.node(n).ok_or_else(|| {
                    Error::InvalidRequest(format!("no node '{n}' in the inventory"))
                })?,
                None => nodes[0],
            };
            let reason = match node {
                Some(_) => format!("node {}'s address, NodePort {port}", chosen.name),
                None => format!(
                    "node {} (first of {} nodes exposing NodePort {port}; use nodeport:NODE:{port} for another)",
                    chosen.name,
                    nodes.len()
                ),
            };
            Ok(Aim::new(chosen.internal_ip.to_string(), Some(port), reason))
        }
        Target::Service {
            namespace,
            name,
            port,
        } => {
            let inv = inventory.ok_or_else(no_inventory(spec))?;
            let svc = inv.service(&namespace, &name).ok_or_else(|| {
                Error::InvalidRequest(format!("no Service {namespace}/{name} in the inventory"))
            })?;
            let port = match port {
                Some(p) => Some(p),
                None => svc.ports.first().and_then(|p| Port::try_from(p.port).ok()),
            };
            Ok(Aim::new(
                svc.cluster_ip.to_string(),
                port,
                format!("ClusterIP of Service {namespace}/{name}"),
            ))
        }
        Target::Pod {
            namespace,
            name,
            port,
        } => {
            let inv = inventory.ok_or_else(no_inventory(spec))?;
            let pod = inv.pod(&namespace, &name).ok_or_else(|| {
                Error::InvalidRequest(format!("no pod {namespace}/{name} in the inventory"))
            })?;
            Ok(Aim::new(
                pod.ip.to_string(),
                port,
                format!("IP of pod {namespace}/{name} on {}", pod.node),
            ))
        }
    }
}

fn no_inventory(spec: &str) -> impl FnOnce() -> Error + '_ {
    move || {
        Error::InvalidRequest(format!(
            "'{spec}' needs the cluster inventory, and this coordinator has none: start it with --kubeconfig FILE or --in-cluster (the Kubernetes API), or --inventory FILE"
        ))
    }
}

/// The address a probe is reached at: its node's registered address when
/// the inventory knows it (a node also holds bridge and tunnel addresses),
/// else its first global IPv4 address.
pub fn probe_address(
    probe: &str,
    interfaces: &[pb::Interface],
    inventory: Option<&Inventory>,
) -> Option<IpAddr> {
    inventory
        .and_then(|i| i.node_of_probe(probe))
        .map(|n| n.internal_ip)
        .or_else(|| primary_address(interfaces))
}

/// The interface holding [`probe_address`].
pub fn primary_interface(
    probe: &str,
    interfaces: &[pb::Interface],
    inventory: Option<&Inventory>,
) -> Option<String> {
    let ip = probe_address(probe, interfaces, inventory)?.to_string();
    interfaces
        .iter()
        .find(|i| {
            i.addresses
                .iter()
                .any(|a| a.split('/').next() == Some(ip.as_str()))
        })
        .map(|i| i.name.clone())
}

/// The first global IPv4 address of an up, non-loopback interface.
pub fn primary_address(interfaces: &[pb::Interface]) -> Option<IpAddr> {
    interfaces
        .iter()
        .filter(|i| i.up && i.name != "lo")
        .flat_map(|i| i.addresses.iter())
        .filter_map(|cidr| cidr.split('/').next()?.parse::<IpAddr>().ok())
        .find(|ip| matches!(ip, IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_link_local()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lab's inventory cut to node-1, node-2, web-0 and the web service.
    fn lab() -> Inventory {
        let mut inv = meshctl_lab::topology::inventory(false).unwrap();
        inv.nodes.retain(|n| n.name != "node-3");
        inv.pods.retain(|p| p.name == "web-0");
        inv.services.retain(|s| s.name == "web");
        inv.validate().unwrap();
        inv
    }

    fn iface(name: &str, up: bool, addrs: &[&str]) -> pb::Interface {
        pb::Interface {
            name: name.into(),
            mtu: 1500,
            addresses: addrs.iter().map(|a| (*a).to_owned()).collect(),
            up,
        }
    }

    #[test]
    fn primary_address_skips_loopback_down_and_link_local() {
        let ifs = [
            iface("lo", true, &["127.0.0.1/8"]),
            iface("eth1", false, &["198.18.9.9/24"]),
            iface(
                "eth0",
                true,
                &["169.254.1.1/16", "fe80::1/64", "198.18.0.11/24"],
            ),
        ];
        assert_eq!(primary_address(&ifs), "198.18.0.11".parse().ok());
        assert_eq!(primary_address(&ifs[..2]), None);
    }

    #[test]
    fn kubernetes_targets_resolve_through_the_inventory() {
        let (reg, inv) = (Registry::default(), lab());
        let np = aim("nodeport:30080", &reg, Some(&inv)).unwrap();
        assert_eq!(
            (np.host.as_str(), np.port.map(Port::get)),
            ("198.18.0.11", Some(30080))
        );
        assert!(np.reason.contains("first of 2 nodes"), "{}", np.reason);
        let np2 = aim("nodeport:node-2:30080", &reg, Some(&inv)).unwrap();
        assert_eq!(np2.host, "198.18.0.12");
        let svc = aim("svc:default/web", &reg, Some(&inv)).unwrap();
        assert_eq!(
            (svc.host.as_str(), svc.port.map(Port::get)),
            ("198.18.200.80", Some(80))
        );
        let pod = aim("pod:default/web-0:8080", &reg, Some(&inv)).unwrap();
        assert_eq!(
            (pod.host.as_str(), pod.port.map(Port::get)),
            ("198.19.2.10", Some(8080))
        );
        for bad in [
            "nodeport:30081",
            "svc:default/nope",
            "pod:default/nope",
            "nodeport:node-9:30080",
        ] {
            assert!(aim(bad, &reg, Some(&inv)).is_err(), "{bad}");
        }
    }

    #[test]
    fn literal_and_host_targets_pass_through() {
        let reg = Registry::default();
        let a = aim("198.18.0.12:30080", &reg, None).unwrap();
        assert_eq!(
            (a.host.as_str(), a.port.map(Port::get)),
            ("198.18.0.12", Some(30080))
        );
        let h = aim("web.default.svc.cluster.local", &reg, None).unwrap();
        assert_eq!(h.host, "web.default.svc.cluster.local");
    }

    #[test]
    fn unknown_probe_and_bad_specs_are_clear() {
        let reg = Registry::default();
        let err = aim("probe:node-9", &reg, None).unwrap_err().to_string();
        assert!(err.contains("no probe named 'node-9'"), "{err}");
        let err = aim("svc:web", &reg, None).unwrap_err().to_string();
        assert!(err.contains("NAMESPACE/NAME"), "{err}");
        let err = aim("svc:default/web", &reg, None).unwrap_err().to_string();
        assert!(err.contains("--inventory"), "{err}");
    }

    #[test]
    fn pod_sources_resolve_to_their_namespace_on_their_node() {
        let inv = lab();
        let s = source("node-2@pod:default/web-0", Some(&inv)).unwrap();
        assert_eq!(s.probe, "node-2");
        let netns = s.netns.unwrap();
        assert_eq!(
            netns.target,
            Some(pb::netns_ref::Target::Path(
                "/run/netns/mesh-pod-web-0".into()
            ))
        );
        // Without the namespace's name (the Kubernetes API never gives
        // one), the probe finds it by the pod's address.
        let mut api = lab();
        for p in &mut api.pods {
            p.netns = None;
        }
        let by_ip = source("node-2@pod:default/web-0", Some(&api)).unwrap();
        assert_eq!(
            by_ip.netns.and_then(|n| n.target),
            Some(pb::netns_ref::Target::PodIp("198.19.2.10".into()))
        );
        let err = source("node-1@pod:default/web-0", Some(&inv))
            .unwrap_err()
            .to_string();
        assert!(err.contains("use --from node-2@pod:default/web-0"), "{err}");
        assert!(source("node-2@pod:default/nope", Some(&inv)).is_err());
        assert!(source("node-2@default/web-0", Some(&inv)).is_err());
        assert!(
            source("node-2@pod:default/web-0", None)
                .unwrap_err()
                .to_string()
                .contains("--inventory")
        );
        assert_eq!(
            source("node-1", None).unwrap(),
            Source {
                probe: "node-1".into(),
                netns: None
            }
        );
    }
}
