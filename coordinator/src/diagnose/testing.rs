//! The lab's inventory, for unit tests.

use probemesh_model::inventory::Inventory;

const LAB: &str = r#"{
  "nodes": [
    {"name": "node-1", "internal_ip": "198.18.0.11", "pod_cidr": "198.19.1.0/24", "probe": "node-1", "kube_proxy": {"phase": "Running"}},
    {"name": "node-2", "internal_ip": "198.18.0.12", "pod_cidr": "198.19.2.0/24", "probe": "node-2", "kube_proxy": {"phase": "Running"}},
    {"name": "node-3", "internal_ip": "198.18.0.13", "pod_cidr": "198.19.3.0/24", "probe": "node-3", "kube_proxy": {"phase": "Running"}}
  ],
  "pods": [
    {"namespace": "default", "name": "web-0", "ip": "198.19.2.10", "node": "node-2", "netns": "mesh-pod-web-0"},
    {"namespace": "kube-system", "name": "dns-0", "ip": "198.19.1.53", "node": "node-1", "netns": "mesh-pod-dns-0"},
    {"namespace": "default", "name": "client-3", "ip": "198.19.3.10", "node": "node-3", "netns": "mesh-pod-client-3"}
  ],
  "services": [
    {"namespace": "default", "name": "web", "cluster_ip": "198.18.200.80",
     "ports": [{"name": "http", "protocol": "TCP", "port": 80, "target_port": 8080, "node_port": 30080}],
     "endpoints": [{"pod": "web-0", "ip": "198.19.2.10", "port": 8080, "node": "node-2"}]},
    {"namespace": "kube-system", "name": "kube-dns", "cluster_ip": "198.18.200.10",
     "ports": [{"name": "dns", "protocol": "UDP", "port": 53, "target_port": 53}],
     "endpoints": [{"pod": "dns-0", "ip": "198.19.1.53", "port": 53, "node": "node-1"}]}
  ]
}"#;

/// The lab's inventory (as `meshctl lab up` writes it).
pub fn lab_inventory() -> Inventory {
    let inv: Inventory = serde_json::from_str(LAB).expect("lab inventory parses");
    inv.validate().expect("lab inventory is consistent");
    inv
}
