//! The lab's cluster as Kubernetes objects, built from `k8s-openapi` types:
//! what a real API server would hold for the lab's nodes, pods, Services
//! and their EndpointSlices, the kube-proxy and probe DaemonSets' pods, and
//! the system priority classes. The lab's inventory file is the input, so a
//! fault that rewrites it (kube-proxy Pending, a node's addresses) changes
//! the objects the way the real fault would.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, Namespace, Node, NodeAddress, NodeAffinity, NodeCondition, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, NodeSpec, NodeStatus, ObjectReference, Pod,
    PodCondition, PodDNSConfig, PodIP, PodSpec, PodStatus, Service, ServiceAccount, ServicePort,
    ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use probemesh_model::inventory::{self as inv, Inventory, PodPhase};
use serde::Serialize;
use serde_json::Value;

use super::kinds::Kind;

/// Namespace of probemesh's own workloads.
pub const PROBEMESH_NAMESPACE: &str = "probemesh";
/// The probe DaemonSet's ServiceAccount (its token enrolls a node).
pub const PROBE_SERVICE_ACCOUNT: &str = "mesh-probe";
/// Label naming probemesh's components, as `deploy/kubernetes` sets it.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";

/// Every object the lab's cluster holds, with its kind.
pub fn cluster(inventory: &Inventory) -> Vec<(Kind, Value)> {
    let mut out = Vec::new();
    for ns in ["default", "kube-system", PROBEMESH_NAMESPACE] {
        push(
            &mut out,
            Kind::Namespace,
            Namespace {
                metadata: meta(None, ns),
                ..Namespace::default()
            },
        );
    }
    for (name, value) in [
        ("system-node-critical", 2_000_001_000),
        ("system-cluster-critical", 2_000_000_000),
    ] {
        push(
            &mut out,
            Kind::PriorityClass,
            PriorityClass {
                metadata: meta(None, name),
                value,
                ..PriorityClass::default()
            },
        );
    }
    for sa in [PROBE_SERVICE_ACCOUNT, "mesh-coordinator"] {
        push(
            &mut out,
            Kind::ServiceAccount,
            ServiceAccount {
                metadata: meta(Some(PROBEMESH_NAMESPACE), sa),
                ..ServiceAccount::default()
            },
        );
    }
    for n in &inventory.nodes {
        push(&mut out, Kind::Node, node(n));
        if let Some(kp) = &n.kube_proxy {
            push(&mut out, Kind::Pod, kube_proxy_pod(n, kp));
        }
        if let Some(probe) = &n.probe {
            push(&mut out, Kind::Pod, probe_pod(n, probe));
        }
    }
    for p in &inventory.pods {
        push(&mut out, Kind::Pod, app_pod(p));
    }
    for s in &inventory.services {
        push(&mut out, Kind::Service, service(s));
        push(&mut out, Kind::EndpointSlice, endpoint_slice(s));
    }
    out
}

fn push(out: &mut Vec<(Kind, Value)>, kind: Kind, object: impl Serialize) {
    if let Ok(value) = serde_json::to_value(object) {
        out.push((kind, kind.stamp(value)));
    }
}

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        ..ObjectMeta::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

fn node(n: &inv::Node) -> Node {
    let mut addresses: Vec<NodeAddress> = if n.addresses.is_empty() {
        vec![NodeAddress {
            type_: "InternalIP".to_owned(),
            address: n.internal_ip.to_string(),
        }]
    } else {
        n.addresses
            .iter()
            .map(|a| NodeAddress {
                type_: a.kind.clone(),
                address: a.address.to_string(),
            })
            .collect()
    };
    addresses.push(NodeAddress {
        type_: "Hostname".to_owned(),
        address: n.name.clone(),
    });
    Node {
        metadata: ObjectMeta {
            labels: labels(&[
                ("kubernetes.io/hostname", &n.name),
                ("kubernetes.io/os", "linux"),
            ]),
            ..meta(None, &n.name)
        },
        spec: Some(NodeSpec {
            pod_cidr: n.pod_cidr.map(|c| c.to_string()),
            pod_cidrs: n.pod_cidr.map(|c| vec![c.to_string()]),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(addresses),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".to_owned(),
                status: "True".to_owned(),
                reason: Some("KubeletReady".to_owned()),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
    }
}

/// A pod owned by DaemonSet `daemonset` in `namespace`, pinned to its node
/// by node affinity the way the DaemonSet controller pins it (so even a
/// Pending pod names its node).
fn daemon_pod(namespace: &str, name: &str, daemonset: &str, node: &str, host_ip: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".to_owned(),
                kind: "DaemonSet".to_owned(),
                name: daemonset.to_owned(),
                uid: format!("lab-daemonset-{daemonset}"),
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            ..meta(Some(namespace), name)
        },
        spec: Some(PodSpec {
            host_network: Some(true),
            dns_policy: Some("ClusterFirstWithHostNet".to_owned()),
            node_name: Some(node.to_owned()),
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_fields: Some(vec![NodeSelectorRequirement {
                                key: "metadata.name".to_owned(),
                                operator: "In".to_owned(),
                                values: Some(vec![node.to_owned()]),
                            }]),
                            ..NodeSelectorTerm::default()
                        }],
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
            containers: vec![Container {
                name: daemonset.to_owned(),
                image: Some(format!("lab/{daemonset}:v1.33")),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_owned()),
            host_ip: Some(host_ip.to_owned()),
            pod_ip: Some(host_ip.to_owned()),
            pod_ips: Some(vec![PodIP {
                ip: host_ip.to_owned(),
            }]),
            ..PodStatus::default()
        }),
    }
}

fn kube_proxy_pod(n: &inv::Node, kp: &inv::KubeProxy) -> Pod {
    let name = kp
        .pod
        .as_deref()
        .and_then(|p| p.split_once('/'))
        .map_or_else(
            || format!("kube-proxy-{}", n.name),
            |(_, name)| name.to_owned(),
        );
    let host_ip = n.internal_ip.to_string();
    let mut pod = daemon_pod("kube-system", &name, "kube-proxy", &n.name, &host_ip);
    pod.metadata.labels = labels(&[("k8s-app", "kube-proxy")]);
    if let Some(spec) = pod.spec.as_mut() {
        spec.priority_class_name = kp.priority_class.clone();
    }
    if kp.phase != PodPhase::Running {
        let unschedulable = kp.reason.as_deref() == Some("Unschedulable");
        if let Some(spec) = pod.spec.as_mut()
            && unschedulable
        {
            spec.node_name = None;
        }
        pod.status = Some(PodStatus {
            phase: Some(kp.phase.to_string()),
            reason: kp.reason.clone().filter(|_| !unschedulable),
            message: kp.message.clone().filter(|_| !unschedulable),
            conditions: unschedulable.then(|| {
                vec![PodCondition {
                    type_: "PodScheduled".to_owned(),
                    status: "False".to_owned(),
                    reason: kp.reason.clone(),
                    message: kp.message.clone(),
                    ..PodCondition::default()
                }]
            }),
            ..PodStatus::default()
        });
    }
    pod
}

fn probe_pod(n: &inv::Node, probe: &str) -> Pod {
    let host_ip = n.internal_ip.to_string();
    let mut pod = daemon_pod(
        PROBEMESH_NAMESPACE,
        &format!("mesh-probe-{probe}"),
        "mesh-probe",
        &n.name,
        &host_ip,
    );
    pod.metadata.labels = labels(&[
        (NAME_LABEL, "mesh-probe"),
        ("app.kubernetes.io/part-of", "probemesh"),
    ]);
    if let Some(spec) = pod.spec.as_mut() {
        spec.service_account_name = Some(PROBE_SERVICE_ACCOUNT.to_owned());
        spec.priority_class_name = Some("system-node-critical".to_owned());
    }
    pod
}

fn app_pod(p: &inv::Pod) -> Pod {
    let ip = p.ip.to_string();
    let dns = p.dns.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            labels: labels(&[("app", p.name.rsplit_once('-').map_or(&p.name, |(a, _)| a))]),
            ..meta(Some(&p.namespace), &p.name)
        },
        spec: Some(PodSpec {
            node_name: Some(p.node.clone()),
            dns_policy: Some(dns.policy.clone()).filter(|d| !d.is_empty()),
            dns_config: (!dns.nameservers.is_empty() || !dns.searches.is_empty()).then(|| {
                PodDNSConfig {
                    nameservers: Some(dns.nameservers.clone()),
                    searches: Some(dns.searches.clone()),
                    ..PodDNSConfig::default()
                }
            }),
            containers: vec![Container {
                name: "app".to_owned(),
                image: Some("lab/app".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_owned()),
            pod_ip: Some(ip.clone()),
            pod_ips: Some(vec![PodIP { ip }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".to_owned(),
                status: "True".to_owned(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

fn protocol(p: inv::Protocol) -> String {
    match p {
        inv::Protocol::Tcp => "TCP",
        inv::Protocol::Udp => "UDP",
        inv::Protocol::Sctp => "SCTP",
    }
    .to_owned()
}

fn service(s: &inv::Service) -> Service {
    let has_node_port = s.ports.iter().any(|p| p.node_port.is_some());
    Service {
        metadata: meta(Some(&s.namespace), &s.name),
        spec: Some(ServiceSpec {
            type_: Some(
                if has_node_port {
                    "NodePort"
                } else {
                    "ClusterIP"
                }
                .to_owned(),
            ),
            cluster_ip: Some(s.cluster_ip.to_string()),
            cluster_ips: Some(vec![s.cluster_ip.to_string()]),
            ports: Some(
                s.ports
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(p.name.clone()),
                        protocol: Some(protocol(p.protocol)),
                        port: i32::from(p.port),
                        target_port: Some(IntOrString::Int(i32::from(p.target_port))),
                        node_port: p.node_port.map(i32::from),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn endpoint_slice(s: &inv::Service) -> EndpointSlice {
    let mut seen = Vec::new();
    let endpoints = s
        .endpoints
        .iter()
        .filter(|e| {
            let new = !seen.contains(&e.ip);
            seen.push(e.ip);
            new
        })
        .map(|e| Endpoint {
            addresses: vec![e.ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(e.ready),
                serving: Some(e.ready),
                terminating: Some(false),
            }),
            node_name: Some(e.node.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".to_owned()),
                namespace: Some(s.namespace.clone()),
                name: Some(e.pod.clone()),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        })
        .collect();
    EndpointSlice {
        metadata: ObjectMeta {
            labels: labels(&[("kubernetes.io/service-name", &s.name)]),
            ..meta(Some(&s.namespace), &format!("{}-lab", s.name))
        },
        address_type: "IPv4".to_owned(),
        endpoints,
        ports: Some(
            s.ports
                .iter()
                .map(|p| EndpointPort {
                    name: Some(p.name.clone()),
                    protocol: Some(protocol(p.protocol)),
                    port: Some(i32::from(p.target_port)),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology;

    fn find<'a>(objects: &'a [(Kind, Value)], kind: Kind, name: &str) -> Option<&'a Value> {
        objects
            .iter()
            .find(|(k, v)| *k == kind && v["metadata"]["name"] == name)
            .map(|(_, v)| v)
    }

    #[test]
    fn the_lab_cluster_is_real_kubernetes_objects() -> anyhow::Result<()> {
        let objects = cluster(&topology::inventory(false)?);
        let node = find(&objects, Kind::Node, "node-1").expect("node-1");
        assert_eq!(node["apiVersion"], "v1");
        assert_eq!(node["spec"]["podCIDR"], "198.19.1.0/24");
        assert_eq!(node["status"]["addresses"][0]["type"], "InternalIP");
        let slice = find(&objects, Kind::EndpointSlice, "web-lab").expect("slice");
        assert_eq!(slice["apiVersion"], "discovery.k8s.io/v1");
        assert_eq!(slice["endpoints"][0]["addresses"][0], "198.19.2.10");
        assert_eq!(slice["endpoints"][0]["conditions"]["ready"], true);
        let web = find(&objects, Kind::Pod, "web-0").expect("web-0");
        assert_eq!(web["status"]["podIP"], "198.19.2.10");
        assert!(
            web["metadata"]["annotations"].is_null(),
            "nothing a real cluster lacks"
        );
        // Each object round-trips through its k8s-openapi type.
        for (kind, v) in &objects {
            if *kind == Kind::Pod {
                serde_json::from_value::<Pod>(v.clone())?;
            }
        }
        Ok(())
    }

    #[test]
    fn a_pending_kube_proxy_is_unschedulable_and_has_no_priority_class() -> anyhow::Result<()> {
        let objects = cluster(&topology::inventory(true)?);
        let name = topology::kube_proxy_pod_name(topology::NODE_3);
        let pod = find(&objects, Kind::Pod, &name).expect("kube-proxy pod");
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["conditions"][0]["reason"], "Unschedulable");
        assert!(pod["spec"]["nodeName"].is_null());
        assert!(pod["spec"]["priorityClassName"].is_null());
        let pinned = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0];
        assert_eq!(pinned, "node-3");
        Ok(())
    }
}
