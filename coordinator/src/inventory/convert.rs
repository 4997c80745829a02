//! Kubernetes objects → the inventory the targets and rules read. Pure: the
//! Kubernetes watchers hand it what their reflectors hold.
//!
//! What is read, and from where:
//! - a node's `InternalIP` (the first one) and every address, `spec.podCIDR`;
//!   its probe is the probe named after it (DaemonSet probes take the node's
//!   name);
//! - its kube-proxy: the pod labelled `k8s-app=kube-proxy` (or
//!   `component=kube-proxy`, for static pods) bound to it by `spec.nodeName`
//!   or, while Pending, by the DaemonSet's node affinity; its phase, the
//!   reason and message of a Pending/failed pod (status, the
//!   `PodScheduled=False` condition, or a waiting container) and its
//!   `priorityClassName`;
//! - pods with an address: IP, node, DNS policy and config (the probe finds
//!   a pod's network namespace by its address);
//! - Services with a ClusterIP, their ports (named target ports resolved
//!   through the EndpointSlices) and every EndpointSlice endpoint with its
//!   readiness.
//!
//! Objects that cannot be used (no address, a node that is not listed) are
//! left out rather than failing the whole inventory.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use probemesh_model::inventory::{
    self as inv, Cidr, Inventory, KubeProxy, NodeAddress, PodDns, PodPhase, Protocol,
};

/// The label EndpointSlices carry naming their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The objects a cluster's watchers hold.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    /// Every node.
    pub nodes: Vec<Arc<Node>>,
    /// Every pod.
    pub pods: Vec<Arc<Pod>>,
    /// Every Service.
    pub services: Vec<Arc<Service>>,
    /// Every EndpointSlice.
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
}

/// The inventory `objects` describe.
pub fn inventory(objects: &Objects) -> Inventory {
    let mut nodes: Vec<inv::Node> = objects.nodes.iter().filter_map(|n| node(n)).collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let known: HashSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
    for n in &mut nodes {
        n.kube_proxy = kube_proxy_of(&objects.pods, &n.name);
    }
    let mut pods: Vec<inv::Pod> = objects
        .pods
        .iter()
        .filter_map(|p| pod(p))
        .filter(|p| known.contains(&p.node))
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    pods.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);
    let pod_nodes: BTreeMap<(&str, &str), &str> = pods
        .iter()
        .map(|p| ((p.namespace.as_str(), p.name.as_str()), p.node.as_str()))
        .collect();
    let mut services: Vec<inv::Service> = objects
        .services
        .iter()
        .filter_map(|s| service(s, &objects.endpoint_slices, &pod_nodes, &known))
        .collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Inventory {
        nodes,
        pods,
        services,
    }
}

fn ip(text: &str) -> Option<IpAddr> {
    text.parse().ok()
}

fn node(n: &Node) -> Option<inv::Node> {
    let name = n.metadata.name.clone()?;
    let status = n.status.as_ref();
    let addresses: Vec<NodeAddress> = status
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|a| {
            Some(NodeAddress {
                kind: a.type_.clone(),
                address: ip(&a.address)?,
            })
        })
        .collect();
    let internal_ip = addresses
        .iter()
        .find(|a| a.kind == "InternalIP")
        .or(addresses.first())?
        .address;
    let pod_cidr = n
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .and_then(|c| c.parse::<Cidr>().ok());
    Some(inv::Node {
        probe: Some(name.clone()),
        name,
        internal_ip,
        addresses,
        pod_cidr,
        kube_proxy: None,
    })
}

fn is_kube_proxy(p: &Pod) -> bool {
    let labels = p.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    label("k8s-app") == Some("kube-proxy") || label("component") == Some("kube-proxy")
}

/// The node a pod is on, or (Pending) the one its DaemonSet pinned it to.
fn node_of(p: &Pod) -> Option<&str> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref() {
        return Some(n);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first())
        .map(String::as_str)
}

fn phase(p: &Pod) -> PodPhase {
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some("Pending") => PodPhase::Pending,
        _ => PodPhase::Unknown,
    }
}

/// The kube-proxy pod of `node` (a running one first, if there are several).
fn kube_proxy_of(pods: &[Arc<Pod>], node: &str) -> Option<KubeProxy> {
    let candidates = pods
        .iter()
        .filter(|p| is_kube_proxy(p) && node_of(p) == Some(node));
    let chosen =
        candidates.min_by_key(|p| (phase(p) != PodPhase::Running, p.metadata.name.clone()))?;
    let status = chosen.status.as_ref();
    let unscheduled = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    let waiting = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.waiting.as_ref());
    let reason = status
        .and_then(|s| s.reason.clone())
        .or_else(|| unscheduled.and_then(|c| c.reason.clone()))
        .or_else(|| waiting.and_then(|w| w.reason.clone()));
    let message = status
        .and_then(|s| s.message.clone())
        .or_else(|| unscheduled.and_then(|c| c.message.clone()))
        .or_else(|| waiting.and_then(|w| w.message.clone()));
    Some(KubeProxy {
        phase: phase(chosen),
        reason,
        message,
        pod: Some(format!(
            "{}/{}",
            chosen
                .metadata
                .namespace
                .as_deref()
                .unwrap_or("kube-system"),
            chosen.metadata.name.as_deref().unwrap_or_default()
        )),
        priority_class: chosen
            .spec
            .as_ref()
            .and_then(|s| s.priority_class_name.clone()),
        priority_known: true,
    })
}

fn pod(p: &Pod) -> Option<inv::Pod> {
    let spec = p.spec.as_ref()?;
    let address = ip(p.status.as_ref()?.pod_ip.as_deref()?)?;
    let dns = spec.dns_policy.as_ref().map(|policy| {
        let config = spec.dns_config.as_ref();
        PodDns {
            policy: policy.clone(),
            nameservers: config
                .and_then(|c| c.nameservers.clone())
                .unwrap_or_default(),
            searches: config.and_then(|c| c.searches.clone()).unwrap_or_default(),
        }
    });
    Some(inv::Pod {
        namespace: p.metadata.namespace.clone()?,
        name: p.metadata.name.clone()?,
        ip: address,
        node: spec.node_name.clone()?,
        netns: None,
        dns,
    })
}

fn protocol(p: Option<&str>) -> Protocol {
    match p {
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        _ => Protocol::Tcp,
    }
}

fn port(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

fn service(
    s: &Service,
    slices: &[Arc<EndpointSlice>],
    pod_nodes: &BTreeMap<(&str, &str), &str>,
    known: &HashSet<String>,
) -> Option<inv::Service> {
    let namespace = s.metadata.namespace.clone()?;
    let name = s.metadata.name.clone()?;
    let spec = s.spec.as_ref()?;
    let cluster_ip = ip(spec.cluster_ip.as_deref()?)?;
    let own: Vec<&EndpointSlice> = slices
        .iter()
        .filter(|e| {
            e.metadata.namespace.as_deref() == Some(namespace.as_str())
                && e.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    == Some(&name)
        })
        .map(Arc::as_ref)
        .collect();
    // A named target port is resolved per endpoint by the pods; the slices
    // carry the result under the Service port's name.
    let slice_port = |port_name: &str| {
        own.iter()
            .flat_map(|e| e.ports.iter().flatten())
            .find(|p| p.name.as_deref().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
            .and_then(port)
    };
    let ports: Vec<inv::ServicePort> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let name = p.name.clone().unwrap_or_default();
            let target_port = match &p.target_port {
                Some(IntOrString::Int(n)) => port(*n),
                Some(IntOrString::String(_)) => slice_port(&name),
                None => port(p.port),
            }
            .or_else(|| slice_port(&name))
            .or_else(|| port(p.port))?;
            Some(inv::ServicePort {
                protocol: protocol(p.protocol.as_deref()),
                port: port(p.port)?,
                target_port,
                node_port: p.node_port.and_then(port),
                name,
            })
        })
        .collect();
    let mut endpoints: Vec<inv::Endpoint> = Vec::new();
    for slice in &own {
        for e in &slice.endpoints {
            let pod_name = e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.clone());
            let node = e.node_name.clone().or_else(|| {
                let p = pod_name.as_deref()?;
                pod_nodes
                    .get(&(namespace.as_str(), p))
                    .map(|n| (*n).to_owned())
            });
            let Some(node) = node.filter(|n| known.contains(n)) else {
                continue;
            };
            // An unset condition means ready (discovery.k8s.io/v1).
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            for address in e.addresses.iter().filter_map(|a| ip(a)) {
                for p in slice
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| p.port.and_then(port))
                {
                    let endpoint = inv::Endpoint {
                        pod: pod_name.clone().unwrap_or_else(|| address.to_string()),
                        ip: address,
                        port: p,
                        node: node.clone(),
                        ready,
                    };
                    if !endpoints
                        .iter()
                        .any(|x| x.ip == endpoint.ip && x.port == endpoint.port)
                    {
                        endpoints.push(endpoint);
                    }
                }
            }
        }
    }
    Some(inv::Service {
        namespace,
        name,
        cluster_ip,
        ports,
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).expect("a valid object"))
    }

    fn objects() -> Objects {
        Objects {
            nodes: vec![
                parse(json!({
                    "metadata": {"name": "n1"},
                    "spec": {"podCIDR": "10.244.1.0/24"},
                    "status": {"addresses": [
                        {"type": "Hostname", "address": "n1"},
                        {"type": "InternalIP", "address": "10.0.0.11"},
                        {"type": "InternalIP", "address": "10.0.0.99"}]}
                })),
                parse(json!({
                    "metadata": {"name": "n2"},
                    "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.12"}]}
                })),
            ],
            pods: vec![
                parse(json!({
                    "metadata": {"namespace": "kube-system", "name": "kube-proxy-abc", "labels": {"k8s-app": "kube-proxy"}},
                    "spec": {"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}}},
                    "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                        "reason": "Unschedulable", "message": "0/2 nodes are available"}]}
                })),
                parse(json!({
                    "metadata": {"namespace": "kube-system", "name": "kube-proxy-def", "labels": {"k8s-app": "kube-proxy"}},
                    "spec": {"containers": [], "nodeName": "n1", "priorityClassName": "system-node-critical"},
                    "status": {"phase": "Running"}
                })),
                parse(json!({
                    "metadata": {"namespace": "default", "name": "web-0"},
                    "spec": {"containers": [], "nodeName": "n1", "dnsPolicy": "None",
                             "dnsConfig": {"nameservers": ["10.96.0.10"]}},
                    "status": {"phase": "Running", "podIP": "10.244.1.5"}
                })),
                parse(json!({
                    "metadata": {"namespace": "default", "name": "elsewhere"},
                    "spec": {"containers": [], "nodeName": "gone"},
                    "status": {"phase": "Running", "podIP": "10.244.9.5"}
                })),
            ],
            services: vec![
                parse(json!({
                    "metadata": {"namespace": "default", "name": "web"},
                    "spec": {"clusterIP": "10.96.0.80", "ports": [
                        {"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080, "protocol": "TCP"}]}
                })),
                parse(json!({
                    "metadata": {"namespace": "default", "name": "headless"},
                    "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
                })),
            ],
            endpoint_slices: vec![parse(json!({
                "metadata": {"namespace": "default", "name": "web-x1", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "n1",
                     "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "default"}},
                    {"addresses": ["10.244.1.6"], "conditions": {"ready": false}, "nodeName": "n1",
                     "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default"}}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
            }))],
        }
    }

    #[test]
    fn objects_become_the_inventory() {
        let inv = inventory(&objects());
        inv.validate().expect("consistent");
        let n1 = inv.node("n1").expect("n1");
        assert_eq!(n1.internal_ip.to_string(), "10.0.0.11");
        assert_eq!(n1.addresses.len(), 2, "every IP address, not the hostname");
        assert_eq!(n1.probe.as_deref(), Some("n1"));
        assert_eq!(inv.node("n2").and_then(|n| n.pod_cidr), None);
        let web = inv.service("default", "web").expect("web");
        assert_eq!(
            web.ports[0].target_port, 8080,
            "named port resolved through the slice"
        );
        assert_eq!(web.endpoints.len(), 2);
        assert_eq!(web.ready_endpoints().count(), 1);
        assert!(inv.service("default", "headless").is_none());
        assert!(
            inv.pod("default", "elsewhere").is_none(),
            "a pod on an unlisted node is left out"
        );
        let web0 = inv.pod("default", "web-0").expect("web-0");
        assert_eq!(
            web0.dns.as_ref().map(|d| d.nameservers.clone()),
            Some(vec!["10.96.0.10".to_owned()])
        );
    }

    #[test]
    fn a_pending_kube_proxy_is_found_through_its_node_affinity() {
        let inv = inventory(&objects());
        let kp = inv
            .node("n2")
            .and_then(|n| n.kube_proxy.clone())
            .expect("kube-proxy of n2");
        assert!(kp.is_down());
        assert_eq!(kp.reason.as_deref(), Some("Unschedulable"));
        assert_eq!(kp.pod.as_deref(), Some("kube-system/kube-proxy-abc"));
        let said = kp.describe("n2");
        assert!(said.contains("0/2 nodes are available"), "{said}");
        assert!(said.contains("no priorityClassName"), "{said}");
        let running = inv
            .node("n1")
            .and_then(|n| n.kube_proxy.clone())
            .expect("kube-proxy of n1");
        assert!(!running.is_down());
        assert_eq!(
            running.priority_class.as_deref(),
            Some("system-node-critical")
        );
    }
}
