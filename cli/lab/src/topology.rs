//! The lab's fixed topology (DESIGN §4) as data, and the pure renderings of it
//! that the bring-up feeds to `ip -batch`, `bridge -batch`, `sysctl` and
//! `dnsmasq`: names, addresses, MACs, routes, neighbour/FDB entries, the
//! cluster inventory and the pods' `resolv.conf`.
//!
//! Nothing here touches the system; the `system` module runs what this renders.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use probemesh_model::inventory::{
    Cidr, Endpoint, InvalidInventory, Inventory, KubeProxy, Node, NodeAddress, Pod, PodDns,
    PodPhase, Protocol, Service, ServicePort,
};

/// The datacenter/cloud network namespace: bridge, router, upstream DNS.
pub const FABRIC: &str = "mesh-fabric";
/// The external host's namespace.
pub const CLOUDVM_NETNS: &str = "mesh-cloudvm-1";
/// The external host's probe name.
pub const CLOUDVM: &str = "cloudvm-1";
/// cloudvm-1's address on the cloud network.
pub const CLOUDVM_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
/// The fabric's router address on the node network; also the upstream DNS.
pub const FABRIC_NODES_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The fabric's router address on the cloud network.
pub const FABRIC_CLOUD_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
/// The host end of the host↔fabric veth.
pub const HOST_VETH: &str = "mesh-host";
/// The fabric end of the host↔fabric veth.
pub const FABRIC_HOST_VETH: &str = "host";
/// The host's lab address; the coordinator listens here.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 1);
/// The fabric's address on the host link.
pub const FABRIC_HOST_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 2);
/// Everything the lab uses; the host routes it through the fabric.
pub const LAB_SUPERNET: &str = "198.18.0.0/15";
/// The cluster's pod network (flannel's `Network`).
pub const CLUSTER_CIDR: &str = "198.19.0.0/16";
/// The NodePort of `default/web`.
pub const NODE_PORT: u16 = 30080;
/// The port the web app listens on inside its pod.
pub const WEB_PORT: u16 = 8080;
/// ClusterIP of `default/web`.
pub const WEB_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 80);
/// ClusterIP of `kube-system/kube-dns`.
pub const DNS_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 10);
/// Port the coordinator listens on.
pub const COORDINATOR_PORT: u16 = 7443;
/// Port of the coordinator's read-only web view (`--web`).
pub const WEB_VIEW_PORT: u16 = 7444;
/// MTU of every NIC outside the overlay.
pub const ETH_MTU: u16 = 1500;
/// MTU of `flannel.1`, `cni0` and the pods (1500 minus VXLAN's 50 bytes).
pub const OVERLAY_MTU: u16 = 1450;
/// The upstream DNS's own zone.
pub const UPSTREAM_DOMAIN: &str = "lab.test";

/// The coordinator's listening address.
pub fn coordinator_addr() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(HOST_IP, COORDINATOR_PORT))
}

/// Where the coordinator serves its web view.
pub fn web_view_addr() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(HOST_IP, WEB_VIEW_PORT))
}

/// The coordinator's URL, as probes and meshctl dial it.
pub fn coordinator_url() -> String {
    format!("https://{HOST_IP}:{COORDINATOR_PORT}")
}

/// The port of the lab's Kubernetes API server (on the host, as a control
/// plane outside the nodes).
pub const KUBE_API_PORT: u16 = 6443;

/// Where the lab's Kubernetes API server listens.
pub fn kube_api_addr() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(HOST_IP, KUBE_API_PORT))
}

/// A Kubernetes node of the lab: `node-1`, `node-2` or `node-3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabNode(u8);

/// The three nodes.
pub const NODES: [LabNode; 3] = [LabNode(1), LabNode(2), LabNode(3)];
/// The node running the web pod (and the target of most faults).
pub const NODE_2: LabNode = LabNode(2);
/// The "new" node of reference incidents 1 and 3.
pub const NODE_3: LabNode = LabNode(3);

impl LabNode {
    /// Node (and probe) name, `node-N`.
    pub fn name(self) -> String {
        format!("node-{}", self.0)
    }
    /// Network namespace, `mesh-node-N`.
    pub fn netns(self) -> &'static str {
        match self.0 {
            1 => "mesh-node-1",
            2 => "mesh-node-2",
            _ => "mesh-node-3",
        }
    }
    /// The registered node address on `eth0`, 198.18.0.1N.
    pub fn ip(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 10 + self.0)
    }
    /// The pod CIDR, 198.19.N.0/24.
    pub fn pod_cidr(self) -> String {
        format!("198.19.{}.0/24", self.0)
    }
    /// `cni0`'s address, the pods' gateway: 198.19.N.1.
    pub fn cni_ip(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.0, 1)
    }
    /// `flannel.1`'s address (the VTEP address flannel uses as the
    /// next hop for the pod CIDR): 198.19.N.0.
    pub fn vtep_ip(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.0, 0)
    }
    /// `flannel.1`'s MAC (fixed so that peers can be programmed without
    /// reading it back, as flannel does from the node annotation).
    pub fn vtep_mac(self) -> String {
        format!("0e:6d:65:73:68:{:02x}", self.0)
    }
    /// Name of this node's port on the fabric bridge.
    pub fn fabric_port(self) -> String {
        self.name()
    }
    /// The other two nodes.
    pub fn peers(self) -> impl Iterator<Item = LabNode> {
        NODES.into_iter().filter(move |n| *n != self)
    }
}

/// A pod of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabPod {
    /// Kubernetes namespace.
    pub namespace: &'static str,
    /// Pod name.
    pub name: &'static str,
    /// Its network namespace.
    pub netns: &'static str,
    /// Node it runs on.
    pub node: LabNode,
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// Name of the host-side veth on the node.
    pub host_veth: &'static str,
}

/// `default/web-0` on node-2: the HTTP app.
pub const WEB_POD: LabPod = LabPod {
    namespace: "default",
    name: "web-0",
    netns: "mesh-pod-web-0",
    node: LabNode(2),
    ip: Ipv4Addr::new(198, 19, 2, 10),
    host_veth: "vethweb0",
};
/// `kube-system/dns-0` on node-1: cluster DNS.
pub const DNS_POD: LabPod = LabPod {
    namespace: "kube-system",
    name: "dns-0",
    netns: "mesh-pod-dns-0",
    node: LabNode(1),
    ip: Ipv4Addr::new(198, 19, 1, 53),
    host_veth: "vethdns0",
};
/// `default/client-3` on node-3: a client.
pub const CLIENT_POD: LabPod = LabPod {
    namespace: "default",
    name: "client-3",
    netns: "mesh-pod-client-3",
    node: LabNode(3),
    ip: Ipv4Addr::new(198, 19, 3, 10),
    host_veth: "vethclient3",
};
/// Every pod.
pub const PODS: [LabPod; 3] = [WEB_POD, DNS_POD, CLIENT_POD];

/// Every namespace of the lab, fabric first.
pub fn namespaces() -> Vec<&'static str> {
    let mut all = vec![FABRIC];
    all.extend(NODES.iter().map(|n| n.netns()));
    all.push(CLOUDVM_NETNS);
    all.extend(PODS.iter().map(|p| p.netns));
    all
}

/// Namespaces that get a `/etc/netns/NS/resolv.conf`.
pub fn resolv_conf_namespaces() -> Vec<&'static str> {
    let mut all: Vec<_> = NODES.iter().map(|n| n.netns()).collect();
    all.push(CLOUDVM_NETNS);
    all.extend(PODS.iter().map(|p| p.netns));
    all
}

/// The `resolv.conf` a namespace gets: pods with the ClusterFirst policy ask
/// the cluster DNS Service, everyone else (nodes, cloudvm-1, and the DNS pod
/// itself, whose policy is Default) the upstream DNS.
pub fn resolv_conf(netns: &str) -> String {
    let cluster_first = PODS
        .iter()
        .find(|p| p.netns == netns)
        .filter(|p| *p != &DNS_POD);
    match cluster_first {
        Some(pod) => format!(
            "search {ns}.svc.cluster.local svc.cluster.local cluster.local\nnameserver {DNS_CLUSTER_IP}\noptions ndots:5\n",
            ns = pod.namespace
        ),
        None => format!("search {UPSTREAM_DOMAIN}\nnameserver {FABRIC_NODES_IP}\n"),
    }
}

/// A `resolv.conf` pointing at a server nobody runs (the `pod-dns-config` fault:
/// a stale address from a deleted DNS Service).
pub fn broken_resolv_conf() -> String {
    format!(
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver {WRONG_DNS_SERVER}\noptions ndots:5\n"
    )
}

/// The server the `pod-dns-config` fault points client-3 at: a free
/// address in the Service range, where nothing answers.
pub const WRONG_DNS_SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 53);

/// The pod spec behind [`broken_resolv_conf`]: client-3 with `dnsPolicy:
/// None` and a `dnsConfig` naming a server that is not the cluster DNS.
pub fn misconfigure_client_dns(inventory: &mut Inventory) {
    if let Some(pod) = inventory
        .pods
        .iter_mut()
        .find(|p| p.name == CLIENT_POD.name && p.namespace == CLIENT_POD.namespace)
    {
        pod.dns = Some(PodDns {
            policy: "None".to_owned(),
            nameservers: vec![WRONG_DNS_SERVER.to_string()],
            searches: vec![
                "default.svc.cluster.local".to_owned(),
                "svc.cluster.local".to_owned(),
                "cluster.local".to_owned(),
            ],
        });
    }
}

/// `ip -batch` run in the host namespace: creates every namespace, every
/// veth pair (each end created directly in its namespace), and the host end
/// of the host↔fabric link.
pub fn host_batch() -> Vec<String> {
    let mut b: Vec<String> = namespaces()
        .iter()
        .map(|ns| format!("netns add {ns}"))
        .collect();
    b.push(format!(
        "link add {HOST_VETH} type veth peer name {FABRIC_HOST_VETH} netns {FABRIC}"
    ));
    for n in NODES {
        b.push(format!(
            "link add eth0 netns {} type veth peer name {} netns {FABRIC}",
            n.netns(),
            n.fabric_port()
        ));
    }
    b.push(format!(
        "link add eth0 netns {CLOUDVM_NETNS} type veth peer name {CLOUDVM} netns {FABRIC}"
    ));
    for p in PODS {
        b.push(format!(
            "link add eth0 netns {} type veth peer name {} netns {}",
            p.netns,
            p.host_veth,
            p.node.netns()
        ));
    }
    b.push(format!("addr add {HOST_IP}/30 dev {HOST_VETH}"));
    b.push(format!("link set {HOST_VETH} up"));
    b
}

/// The host's route into the lab (after the fabric end is up).
pub fn host_route() -> String {
    format!("route replace {LAB_SUPERNET} via {FABRIC_HOST_IP} dev {HOST_VETH}")
}

/// `ip -n mesh-fabric -batch`: the node bridge, the cloud bridge, the router
/// addresses, and a blackhole default route (unknown destinations, such as
/// pod or Service addresses leaking out of a node, disappear silently as they
/// would upstream; nothing leaves the lab).
///
/// The fabric's ports carry frames like physical wires, one MTU-sized frame
/// at a time (`gso_max_segs 1`: no segmentation offload across the wire), so
/// a smaller MTU at the far end of a link drops every oversize frame, not
/// only the ones the sender happened not to batch.
pub fn fabric_batch() -> Vec<String> {
    let mut b = vec![
        "link set lo up".to_owned(),
        "link add br-nodes type bridge".to_owned(),
        "link add br-cloud type bridge".to_owned(),
    ];
    for n in NODES {
        b.push(format!(
            "link set {} master br-nodes gso_max_segs 1 up",
            n.fabric_port()
        ));
    }
    b.push(format!(
        "link set {CLOUDVM} master br-cloud gso_max_segs 1 up"
    ));
    b.push(format!("addr add {FABRIC_NODES_IP}/24 dev br-nodes"));
    b.push(format!("addr add {FABRIC_CLOUD_IP}/24 dev br-cloud"));
    b.push("link set br-nodes up".to_owned());
    b.push("link set br-cloud up".to_owned());
    b.push(format!(
        "addr add {FABRIC_HOST_IP}/30 dev {FABRIC_HOST_VETH}"
    ));
    b.push(format!("link set {FABRIC_HOST_VETH} gso_max_segs 1 up"));
    b.push("route add blackhole default".to_owned());
    b
}

/// `ip -n mesh-node-N -batch`: eth0, cni0 with the pods' host veths,
/// `flannel.1` (VNI 1, UDP 8472, no learning), and what flanneld programs for
/// every peer: a route `POD_CIDR via VTEP_IP dev flannel.1 onlink` and a
/// permanent neighbour entry VTEP_IP → VTEP_MAC.
pub fn node_batch(node: LabNode) -> Vec<String> {
    let mut b = vec![
        "link set lo up".to_owned(),
        format!("addr add {}/24 dev eth0", node.ip()),
        format!("link set eth0 mtu {ETH_MTU} up"),
        format!("route add default via {FABRIC_NODES_IP}"),
        "link add cni0 type bridge".to_owned(),
        format!("link set cni0 mtu {OVERLAY_MTU}"),
        format!("addr add {}/24 dev cni0", node.cni_ip()),
    ];
    for p in PODS.iter().filter(|p| p.node == node) {
        b.push(format!(
            "link set {} mtu {OVERLAY_MTU} master cni0 up",
            p.host_veth
        ));
    }
    b.push("link set cni0 up".to_owned());
    b.push(format!(
        "link add flannel.1 address {} type vxlan id 1 local {} dev eth0 dstport 8472 nolearning",
        node.vtep_mac(),
        node.ip()
    ));
    b.push(format!("link set flannel.1 mtu {OVERLAY_MTU} up"));
    b.push(format!("addr add {}/32 dev flannel.1", node.vtep_ip()));
    for peer in node.peers() {
        b.push(peer_route(peer));
        b.push(format!(
            "neigh replace {} lladdr {} dev flannel.1 nud permanent",
            peer.vtep_ip(),
            peer.vtep_mac()
        ));
    }
    b
}

/// The flannel route to `peer`'s pod CIDR.
pub fn peer_route(peer: LabNode) -> String {
    format!(
        "route replace {} via {} dev flannel.1 onlink",
        peer.pod_cidr(),
        peer.vtep_ip()
    )
}

/// `bridge -n mesh-node-N -batch`: the FDB entries flanneld writes, telling
/// `flannel.1` which node address each peer VTEP MAC lives behind.
pub fn node_fdb_batch(node: LabNode) -> Vec<String> {
    node.peers()
        .map(|peer| {
            format!(
                "fdb replace {} dev flannel.1 dst {} self permanent",
                peer.vtep_mac(),
                peer.ip()
            )
        })
        .collect()
}

/// `ip -n mesh-pod-* -batch`: the pod's eth0 and default route.
pub fn pod_batch(pod: &LabPod) -> Vec<String> {
    vec![
        "link set lo up".to_owned(),
        format!("link set eth0 mtu {OVERLAY_MTU} up"),
        format!("addr add {}/24 dev eth0", pod.ip),
        format!("route add default via {}", pod.node.cni_ip()),
    ]
}

/// `ip -n mesh-cloudvm-1 -batch`: a plain VM with MTU 1500.
pub fn cloudvm_batch() -> Vec<String> {
    vec![
        "link set lo up".to_owned(),
        format!("link set eth0 mtu {ETH_MTU} up"),
        format!("addr add {CLOUDVM_IP}/24 dev eth0"),
        format!("route add default via {FABRIC_CLOUD_IP}"),
    ]
}

/// Sysctls of a namespace, set before its links come up. The lab is IPv4
/// only: IPv6 is off everywhere, so no router solicitations, MLD reports or
/// conntrack entries of its own show up in captures and tables. Routers
/// forward; nodes also pass bridged pod traffic through iptables
/// (kube-proxy's `br_netfilter` prerequisite); the fabric is a plain switch
/// for bridged frames.
pub fn sysctls(netns: &str) -> Vec<(&'static str, &'static str)> {
    let mut all = vec![
        ("net.ipv6.conf.all.disable_ipv6", "1"),
        ("net.ipv6.conf.default.disable_ipv6", "1"),
    ];
    if netns == FABRIC {
        all.push(("net.ipv4.ip_forward", "1"));
        all.push(("net.bridge.bridge-nf-call-iptables", "0"));
    } else if NODES.iter().any(|n| n.netns() == netns) {
        all.push(("net.ipv4.ip_forward", "1"));
        all.push(("net.bridge.bridge-nf-call-iptables", "1"));
    }
    all
}

/// Arguments of the upstream DNS (dnsmasq in the fabric at 198.18.0.1): it
/// answers for `lab.test` and forwards nowhere.
pub fn upstream_dns_args(pid_file: &str) -> Vec<String> {
    let mut a = dnsmasq_common(pid_file);
    a.push(format!("--listen-address={FABRIC_NODES_IP}"));
    a.push(format!("--local=/{UPSTREAM_DOMAIN}/"));
    let mut records = vec![
        ("upstream".to_owned(), FABRIC_NODES_IP),
        ("router".to_owned(), FABRIC_CLOUD_IP),
        ("coordinator".to_owned(), HOST_IP),
        (CLOUDVM.to_owned(), CLOUDVM_IP),
    ];
    records.extend(NODES.iter().map(|n| (n.name(), n.ip())));
    for (name, ip) in records {
        a.push(format!("--host-record={name}.{UPSTREAM_DOMAIN},{ip}"));
    }
    a
}

/// Arguments of the cluster DNS (dnsmasq in dns-0): cluster names, and the
/// rest forwarded to the upstream DNS.
pub fn cluster_dns_args(pid_file: &str) -> Vec<String> {
    let mut a = dnsmasq_common(pid_file);
    a.push(format!("--listen-address={}", DNS_POD.ip));
    a.push(format!("--server={FABRIC_NODES_IP}"));
    a.push("--local=/cluster.local/".to_owned());
    a.push(format!(
        "--host-record=web.default.svc.cluster.local,{WEB_CLUSTER_IP}"
    ));
    a.push(format!(
        "--host-record=kube-dns.kube-system.svc.cluster.local,{DNS_CLUSTER_IP}"
    ));
    for p in PODS {
        a.push(format!(
            "--host-record={}.{}.pod.cluster.local,{}",
            p.ip.to_string().replace('.', "-"),
            p.namespace,
            p.ip
        ));
    }
    a
}

/// How a broken cluster DNS answers every cluster name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BrokenDns {
    /// REFUSED: it serves no zone and forwards nowhere.
    Refused,
    /// NXDOMAIN: it claims `cluster.local` holds no names.
    NxDomain,
}

impl BrokenDns {
    /// The DNS response code it answers with.
    pub fn rcode(self) -> &'static str {
        match self {
            BrokenDns::Refused => "REFUSED",
            BrokenDns::NxDomain => "NXDOMAIN",
        }
    }
}

/// Arguments of a broken cluster DNS (dnsmasq in dns-0, listening where
/// the real one does): no records and no upstream, so it answers REFUSED,
/// or `cluster.local` declared empty, so it answers NXDOMAIN.
pub fn broken_cluster_dns_args(pid_file: &str, answer: BrokenDns) -> Vec<String> {
    let mut a = dnsmasq_common(pid_file);
    a.push(format!("--listen-address={}", DNS_POD.ip));
    if answer == BrokenDns::NxDomain {
        a.push("--address=/cluster.local/".to_owned());
    }
    a
}

fn dnsmasq_common(pid_file: &str) -> Vec<String> {
    [
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--user=nobody",
        "--log-facility=-",
        "--log-queries",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([format!("--pid-file={pid_file}")])
    .collect()
}

/// The kube-proxy pod of a lab node, as the Kubernetes API would show it: a
/// DaemonSet pod without a priority class (as in reference incident 3),
/// Running, or Pending because the scheduler found no room for it.
fn lab_kube_proxy(node: LabNode, pending: bool) -> KubeProxy {
    let (phase, reason, message) = if pending {
        (
            PodPhase::Pending,
            Some("Unschedulable".to_owned()),
            Some(
                "0/3 nodes are available: 1 Insufficient memory, 2 node(s) didn't match Pod's node affinity/selector. preemption: not eligible due to preemptionPolicy=Never or no priority class"
                    .to_owned(),
            ),
        )
    } else {
        (PodPhase::Running, None, None)
    };
    KubeProxy {
        phase,
        reason,
        message,
        pod: Some(format!("kube-system/{}", kube_proxy_pod_name(node))),
        priority_class: None,
        priority_known: true,
    }
}

/// The name of a lab node's kube-proxy pod (`kube-proxy-` and a suffix, as a
/// DaemonSet names its pods).
pub fn kube_proxy_pod_name(node: LabNode) -> String {
    format!("kube-proxy-{}", node.name().replace('-', ""))
}

/// The cluster as the coordinator's inventory describes it; `kube_proxy_pending`
/// marks node-3's kube-proxy Pending (the `kube-proxy-missing` fault).
pub fn inventory(kube_proxy_pending: bool) -> Result<Inventory, InvalidInventory> {
    let mut nodes = Vec::new();
    for n in NODES {
        nodes.push(Node {
            name: n.name(),
            internal_ip: n.ip().into(),
            pod_cidr: Some(Cidr::new(n.vtep_ip().into(), 24)?),
            probe: Some(n.name()),
            addresses: vec![NodeAddress {
                kind: "InternalIP".to_owned(),
                address: n.ip().into(),
            }],
            kube_proxy: Some(lab_kube_proxy(n, kube_proxy_pending && n == NODE_3)),
        });
    }
    let pods = PODS
        .iter()
        .map(|p| Pod {
            namespace: p.namespace.to_owned(),
            name: p.name.to_owned(),
            ip: p.ip.into(),
            node: p.node.name(),
            netns: Some(p.netns.to_owned()),
            dns: Some(PodDns {
                policy: "ClusterFirst".to_owned(),
                ..PodDns::default()
            }),
        })
        .collect();
    let endpoint = |pod: &LabPod, port: u16| Endpoint {
        pod: pod.name.to_owned(),
        ip: pod.ip.into(),
        port,
        node: pod.node.name(),
        ready: true,
    };
    let services = vec![
        Service {
            namespace: "default".to_owned(),
            name: "web".to_owned(),
            cluster_ip: WEB_CLUSTER_IP.into(),
            ports: vec![ServicePort {
                name: "http".to_owned(),
                protocol: Protocol::Tcp,
                port: 80,
                target_port: WEB_PORT,
                node_port: Some(NODE_PORT),
            }],
            endpoints: vec![endpoint(&WEB_POD, WEB_PORT)],
        },
        Service {
            namespace: "kube-system".to_owned(),
            name: "kube-dns".to_owned(),
            cluster_ip: DNS_CLUSTER_IP.into(),
            ports: vec![
                ServicePort {
                    name: "dns".to_owned(),
                    protocol: Protocol::Udp,
                    port: 53,
                    target_port: 53,
                    node_port: None,
                },
                ServicePort {
                    name: "dns-tcp".to_owned(),
                    protocol: Protocol::Tcp,
                    port: 53,
                    target_port: 53,
                    node_port: None,
                },
            ],
            endpoints: vec![endpoint(&DNS_POD, 53)],
        },
    ];
    Ok(Inventory {
        nodes,
        pods,
        services,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_follow_design_section_4() {
        assert_eq!(
            namespaces(),
            [
                "mesh-fabric",
                "mesh-node-1",
                "mesh-node-2",
                "mesh-node-3",
                "mesh-cloudvm-1",
                "mesh-pod-web-0",
                "mesh-pod-dns-0",
                "mesh-pod-client-3"
            ]
        );
        let n2 = NODE_2;
        assert_eq!(
            (n2.name(), n2.netns()),
            ("node-2".to_owned(), "mesh-node-2")
        );
        assert_eq!(n2.ip().to_string(), "198.18.0.12");
        assert_eq!(n2.pod_cidr(), "198.19.2.0/24");
        assert_eq!(n2.cni_ip().to_string(), "198.19.2.1");
        assert_eq!(coordinator_url(), "https://198.18.255.1:7443");
        let all: Vec<String> = namespaces().iter().map(|s| s.to_string()).collect();
        assert!(
            all.iter()
                .all(|ns| ns.starts_with("mesh-") && ns.len() <= 32)
        );
    }

    #[test]
    fn every_address_is_in_the_benchmarking_range() {
        let lab: Cidr = LAB_SUPERNET.parse().expect("supernet");
        let text = [
            host_batch(),
            fabric_batch(),
            cloudvm_batch(),
            NODES.iter().flat_map(|n| node_batch(*n)).collect(),
            NODES.iter().flat_map(|n| node_fdb_batch(*n)).collect(),
            PODS.iter().flat_map(pod_batch).collect(),
            upstream_dns_args("/x"),
            cluster_dns_args("/x"),
        ]
        .concat()
        .join(" ");
        let ips: Vec<Ipv4Addr> = text
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter_map(|w| w.parse().ok())
            .collect();
        assert!(ips.len() > 30, "{ips:?}");
        for ip in ips {
            assert!(lab.contains(ip.into()), "{ip} is outside {LAB_SUPERNET}");
        }
    }

    #[test]
    fn interface_names_fit_ifnamsiz() {
        let mut names = vec![
            HOST_VETH.to_owned(),
            FABRIC_HOST_VETH.to_owned(),
            CLOUDVM.to_owned(),
        ];
        names.extend(PODS.iter().map(|p| p.host_veth.to_owned()));
        names.extend(NODES.iter().map(|n| n.fabric_port()));
        assert!(names.iter().all(|n| n.len() <= 15), "{names:?}");
    }

    #[test]
    fn flannel_programs_every_peer() {
        let b = node_batch(NODE_3);
        assert!(b.contains(
            &"route replace 198.19.1.0/24 via 198.19.1.0 dev flannel.1 onlink".to_owned()
        ));
        assert!(b.contains(
            &"route replace 198.19.2.0/24 via 198.19.2.0 dev flannel.1 onlink".to_owned()
        ));
        assert!(!b.iter().any(|l| l.contains("198.19.3.0/24 via")));
        assert!(
            b.iter()
                .any(|l| l.contains("type vxlan id 1 local 198.18.0.13 dev eth0 dstport 8472"))
        );
        assert!(b.contains(&"link set flannel.1 mtu 1450 up".to_owned()));
        assert_eq!(
            node_fdb_batch(NODE_3),
            [
                "fdb replace 0e:6d:65:73:68:01 dev flannel.1 dst 198.18.0.11 self permanent",
                "fdb replace 0e:6d:65:73:68:02 dev flannel.1 dst 198.18.0.12 self permanent"
            ]
        );
        assert!(
            node_batch(NODE_2).contains(&"link set vethweb0 mtu 1450 master cni0 up".to_owned())
        );
    }

    #[test]
    fn resolv_conf_follows_the_dns_policy() {
        assert!(resolv_conf("mesh-pod-client-3").contains("nameserver 198.18.200.10"));
        assert!(resolv_conf("mesh-pod-client-3").contains("search default.svc.cluster.local"));
        assert!(resolv_conf("mesh-pod-dns-0").contains("nameserver 198.18.0.1"));
        assert!(resolv_conf("mesh-node-1").contains("nameserver 198.18.0.1"));
        assert!(!broken_resolv_conf().contains("198.18.200.10"));
    }

    #[test]
    fn inventory_matches_the_topology() {
        let inv = inventory(false).expect("inventory");
        inv.validate().expect("consistent");
        assert_eq!(inv.nodes.len(), 3);
        assert!(
            inv.nodes
                .iter()
                .all(|n| n.kube_proxy.as_ref().is_some_and(|kp| !kp.is_down()))
        );
        assert_eq!(inv.nodes_with_nodeport(NODE_PORT).len(), 3);
        let web0 = inv.pod("default", "web-0").expect("web-0");
        assert_eq!(
            (web0.node.as_str(), web0.ip.to_string()),
            ("node-2", "198.19.2.10".to_owned())
        );
        assert!(
            inv.node("node-2")
                .and_then(|n| n.pod_cidr)
                .is_some_and(|c| c.contains(web0.ip))
        );
        let pending = inventory(true).expect("inventory");
        assert_eq!(
            pending
                .node("node-3")
                .and_then(|n| n.kube_proxy.as_ref())
                .map(|kp| kp.phase),
            Some(PodPhase::Pending)
        );
        assert_eq!(
            pending
                .node("node-2")
                .and_then(|n| n.kube_proxy.as_ref())
                .map(|kp| kp.phase),
            Some(PodPhase::Running)
        );
    }

    #[test]
    fn dns_servers_never_forward_out_of_the_lab() {
        let up = upstream_dns_args("/run/x.pid");
        assert!(up.contains(&"--no-resolv".to_owned()));
        assert!(!up.iter().any(|a| a.starts_with("--server")));
        assert!(up.contains(&"--host-record=upstream.lab.test,198.18.0.1".to_owned()));
        let cluster = cluster_dns_args("/run/y.pid");
        assert!(cluster.contains(&"--server=198.18.0.1".to_owned()));
        assert!(
            cluster
                .contains(&"--host-record=web.default.svc.cluster.local,198.18.200.80".to_owned())
        );
    }
}
