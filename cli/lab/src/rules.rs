//! The lab's iptables rulesets, rendered for `iptables-restore` (each
//! namespace's whole ruleset, applied atomically): kube-proxy's NAT chains
//! derived from the inventory exactly as kube-proxy's iptables mode names and
//! orders them, flannel's masquerade chain, and the nodes' host firewall.
//! In [`ProxyMode::Nftables`] kube-proxy's part is its own nftables table
//! instead ([`nftables`]); flannel and the firewall stay in iptables.
//!
//! A fault changes a namespace's ruleset through [`NodeRules`] /
//! [`FabricRules`]; clearing it renders the baseline again.

pub mod nftables;

use std::fmt;
use std::str::FromStr;

use probemesh_model::inventory::{Inventory, Protocol, Service, ServicePort};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::topology::{CLUSTER_CIDR, LabNode, NODE_2};

/// How the lab's kube-proxy writes its Service rules (`--proxy-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// KUBE-* chains in the iptables nat table.
    #[default]
    Iptables,
    /// The `ip kube-proxy` nftables table (GA since Kubernetes 1.33).
    Nftables,
}

impl ProxyMode {
    /// The name `--proxy-mode` takes.
    pub fn name(self) -> &'static str {
        match self {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Nftables => "nftables",
        }
    }
}

impl fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--proxy-mode` that is neither `iptables` nor `nftables`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown proxy mode '{0}'; the modes are: iptables, nftables")]
pub struct UnknownProxyMode(pub String);

impl FromStr for ProxyMode {
    type Err = UnknownProxyMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "iptables" => Ok(ProxyMode::Iptables),
            "nftables" => Ok(ProxyMode::Nftables),
            other => Err(UnknownProxyMode(other.to_owned())),
        }
    }
}

/// kube-proxy's masquerade mark bit (`--masquerade-bit 14`).
pub(crate) const MASQ_MARK_BIT: u32 = 0x4000;
/// kube-proxy's masquerade mark, as iptables matches it.
const MASQ_MARK: &str = "0x4000/0x4000";

/// What a node's ruleset contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRules {
    /// kube-proxy ran and wrote its Service chains (false: its pod is Pending).
    pub kube_proxy: bool,
    /// The node drops ICMP echo requests addressed to it.
    pub drop_icmp_echo: bool,
    /// The node drops TCP to the NodePort before kube-proxy's DNAT sees it.
    pub drop_node_port: Option<u16>,
}

impl NodeRules {
    /// A healthy node.
    pub const BASELINE: NodeRules = NodeRules {
        kube_proxy: true,
        drop_icmp_echo: false,
        drop_node_port: None,
    };
}

/// What the fabric's ruleset contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricRules {
    /// Percentage of routed packets towards node-2 that are dropped.
    pub loss_to_node_2: Option<u8>,
    /// The router's ICMP "fragmentation needed" errors are dropped (a
    /// firewall that blocks ICMP), which breaks path-MTU discovery.
    pub drop_frag_needed: bool,
}

impl FabricRules {
    /// A healthy fabric.
    pub const BASELINE: FabricRules = FabricRules {
        loss_to_node_2: None,
        drop_frag_needed: false,
    };
}

/// The full `iptables-restore` input for `node`; kube-proxy's chains are in
/// it only in [`ProxyMode::Iptables`].
pub fn node_ruleset(
    node: LabNode,
    inventory: &Inventory,
    rules: NodeRules,
    mode: ProxyMode,
) -> String {
    let kube_proxy = rules.kube_proxy && mode == ProxyMode::Iptables;
    let mut out = Vec::new();

    out.push("*raw".to_owned());
    out.push(":PREROUTING ACCEPT [0:0]".to_owned());
    out.push(":OUTPUT ACCEPT [0:0]".to_owned());
    if let Some(port) = rules.drop_node_port {
        out.push(format!(
            "-A PREROUTING -i eth0 -p tcp -m tcp --dport {port} -m comment --comment \"host firewall: block NodePort {port}\" -j DROP"
        ));
    }
    out.push("COMMIT".to_owned());

    out.push("*filter".to_owned());
    out.push(":INPUT ACCEPT [0:0]".to_owned());
    out.push(":FORWARD ACCEPT [0:0]".to_owned());
    out.push(":OUTPUT ACCEPT [0:0]".to_owned());
    out.push(":VXLAN-PEERS - [0:0]".to_owned());
    if kube_proxy {
        out.push(":KUBE-FORWARD - [0:0]".to_owned());
    }
    out.push(
        "-A INPUT -p udp -m udp --dport 8472 -m comment --comment \"flannel VXLAN only from registered node addresses\" -j VXLAN-PEERS"
            .to_owned(),
    );
    if rules.drop_icmp_echo {
        out.push(
            "-A INPUT -p icmp -m icmp --icmp-type 8 -m comment --comment \"host firewall: no ping\" -j DROP"
                .to_owned(),
        );
    }
    for peer in node.peers() {
        out.push(format!("-A VXLAN-PEERS -s {}/32 -j ACCEPT", peer.ip()));
    }
    out.push("-A VXLAN-PEERS -j DROP".to_owned());
    if kube_proxy {
        out.push(
            "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD"
                .to_owned(),
        );
        out.push("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP".to_owned());
        out.push(format!(
            "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK} -j ACCEPT"
        ));
        out.push(
            "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
                .to_owned(),
        );
    }
    out.push("COMMIT".to_owned());

    out.push("*nat".to_owned());
    out.push(":PREROUTING ACCEPT [0:0]".to_owned());
    out.push(":INPUT ACCEPT [0:0]".to_owned());
    out.push(":OUTPUT ACCEPT [0:0]".to_owned());
    out.push(":POSTROUTING ACCEPT [0:0]".to_owned());
    out.push(":FLANNEL-POSTRTG - [0:0]".to_owned());
    if kube_proxy {
        out.extend(kube_proxy_nat(inventory));
    }
    out.extend(flannel_nat(node));
    out.push("COMMIT".to_owned());
    out.push(String::new());
    out.join("\n")
}

/// The full `iptables-restore` input for the fabric.
pub fn fabric_ruleset(rules: FabricRules) -> String {
    let mut out = vec![
        "*filter".to_owned(),
        ":INPUT ACCEPT [0:0]".to_owned(),
        ":FORWARD ACCEPT [0:0]".to_owned(),
        ":OUTPUT ACCEPT [0:0]".to_owned(),
    ];
    if let Some(percent) = rules.loss_to_node_2 {
        out.push(format!(
            "-A FORWARD -d {}/32 -m statistic --mode random --probability {:.5} -m comment --comment \"faulty link towards node-2\" -j DROP",
            NODE_2.ip(),
            f64::from(percent) / 100.0
        ));
    }
    if rules.drop_frag_needed {
        out.push(
            "-A OUTPUT -p icmp -m icmp --icmp-type 3/4 -m comment --comment \"firewall: ICMP blocked\" -j DROP"
                .to_owned(),
        );
    }
    out.push("COMMIT".to_owned());
    out.push(String::new());
    out.join("\n")
}

/// flanneld's masquerade chain for `node` (pods reaching outside the cluster
/// network leave with the node's address; traffic inside it is untouched).
fn flannel_nat(node: LabNode) -> Vec<String> {
    let local = node.pod_cidr();
    let c = "-m comment --comment \"flanneld masq\"";
    vec![
        format!("-A POSTROUTING {c} -j FLANNEL-POSTRTG"),
        format!("-A FLANNEL-POSTRTG -m mark --mark {MASQ_MARK} {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {local} -d {CLUSTER_CIDR} {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {CLUSTER_CIDR} -d {local} {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG ! -s {CLUSTER_CIDR} -d {local} {c} -j RETURN"),
        format!(
            "-A FLANNEL-POSTRTG -s {CLUSTER_CIDR} ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully"
        ),
        format!(
            "-A FLANNEL-POSTRTG ! -s {CLUSTER_CIDR} -d {CLUSTER_CIDR} {c} -j MASQUERADE --random-fully"
        ),
    ]
}

/// The protocol as kube-proxy spells it in chain names and rules.
pub(crate) fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// kube-proxy's chain-name hash: the first 16 characters of the base32 of
/// sha256(input) (`portProtoHash` in pkg/proxy/iptables).
pub fn chain_hash(input: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(input.as_bytes());
    let mut out = String::with_capacity(16);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for byte in digest {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
            if out.len() == 16 {
                return out;
            }
        }
        buffer &= (1 << bits) - 1;
    }
    out
}

/// Names of one Service port's chains.
struct PortChains {
    /// `ns/name:port`, as kube-proxy's comments spell it.
    id: String,
    svc: String,
    ext: String,
    seps: Vec<(String, String)>,
}

fn port_chains(service: &Service, port: &ServicePort) -> PortChains {
    let id = format!("{}/{}:{}", service.namespace, service.name, port.name);
    let proto = proto_name(port.protocol);
    let hash = chain_hash(&format!("{id}{proto}"));
    let seps = service
        .ready_endpoints()
        .map(|e| {
            let endpoint = format!("{}:{}", e.ip, port.target_port);
            (
                format!("KUBE-SEP-{}", chain_hash(&format!("{id}{proto}{endpoint}"))),
                endpoint,
            )
        })
        .collect();
    PortChains {
        svc: format!("KUBE-SVC-{hash}"),
        ext: format!("KUBE-EXT-{hash}"),
        id,
        seps,
    }
}

/// kube-proxy's nat table for every Service of the inventory.
fn kube_proxy_nat(inventory: &Inventory) -> Vec<String> {
    let mut chains = vec![
        "KUBE-SERVICES".to_owned(),
        "KUBE-NODEPORTS".to_owned(),
        "KUBE-POSTROUTING".to_owned(),
        "KUBE-MARK-MASQ".to_owned(),
    ];
    let mut rules = vec![
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES".to_owned(),
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES".to_owned(),
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING".to_owned(),
        format!("-A KUBE-MARK-MASQ -j MARK --set-xmark {MASQ_MARK}"),
        format!("-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK} -j RETURN"),
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0".to_owned(),
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
            .to_owned(),
    ];
    for service in &inventory.services {
        for port in &service.ports {
            let pc = port_chains(service, port);
            let proto = proto_name(port.protocol);
            let cip = service.cluster_ip;
            let id = &pc.id;
            chains.push(pc.svc.clone());
            rules.push(format!(
                "-A KUBE-SERVICES -d {cip}/32 -p {proto} -m comment --comment \"{id} cluster IP\" -m {proto} --dport {} -j {}",
                port.port, pc.svc
            ));
            rules.push(format!(
                "-A {} ! -s {CLUSTER_CIDR} -d {cip}/32 -p {proto} -m comment --comment \"{id} cluster IP\" -m {proto} --dport {} -j KUBE-MARK-MASQ",
                pc.svc, port.port
            ));
            let n = pc.seps.len();
            for (i, (sep, endpoint)) in pc.seps.iter().enumerate() {
                let remaining = n - i;
                let pick = if remaining > 1 {
                    format!(
                        " -m statistic --mode random --probability {:.11}",
                        1.0 / remaining as f64
                    )
                } else {
                    String::new()
                };
                rules.push(format!(
                    "-A {} -m comment --comment \"{id} -> {endpoint}\"{pick} -j {sep}",
                    pc.svc
                ));
            }
            for (sep, endpoint) in &pc.seps {
                chains.push(sep.clone());
                let ip = endpoint.split(':').next().unwrap_or_default();
                rules.push(format!(
                    "-A {sep} -s {ip}/32 -m comment --comment \"{id}\" -j KUBE-MARK-MASQ"
                ));
                rules.push(format!(
                    "-A {sep} -p {proto} -m comment --comment \"{id}\" -m {proto} -j DNAT --to-destination {endpoint}"
                ));
            }
            if let Some(node_port) = port.node_port {
                chains.push(pc.ext.clone());
                rules.push(format!(
                    "-A KUBE-NODEPORTS -p {proto} -m comment --comment \"{id}\" -m {proto} --dport {node_port} -j {}",
                    pc.ext
                ));
                rules.push(format!(
                    "-A {} -m comment --comment \"masquerade traffic for {id} external destinations\" -j KUBE-MARK-MASQ",
                    pc.ext
                ));
                rules.push(format!("-A {} -j {}", pc.ext, pc.svc));
            }
        }
    }
    rules.push(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
            .to_owned(),
    );
    chains
        .into_iter()
        .map(|c| format!(":{c} - [0:0]"))
        .chain(rules)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{NODE_3, inventory};

    #[test]
    fn chain_names_match_kube_proxy() {
        // Values every kube-proxy in the world computes for these ports.
        assert_eq!(
            chain_hash("kube-system/kube-dns:dnsudp"),
            "TCOU7JCQXEZGVUNU"
        );
        assert_eq!(
            chain_hash("kube-system/kube-dns:dns-tcptcp"),
            "ERIFXISQEP7F7OF4"
        );
        assert_eq!(chain_hash("default/web:httptcp"), "CDGGSHYLG3RE2FKL");
        assert_eq!(
            chain_hash("default/web:httptcp198.19.2.10:8080"),
            "QY366BUQECEODXYH"
        );
    }

    #[test]
    fn baseline_node_has_services_nodeports_and_masquerade() {
        let inv = inventory(false).expect("inventory");
        let r = node_ruleset(NODE_3, &inv, NodeRules::BASELINE, ProxyMode::Iptables);
        for needle in [
            ":KUBE-SVC-CDGGSHYLG3RE2FKL - [0:0]",
            ":KUBE-SEP-QY366BUQECEODXYH - [0:0]",
            ":KUBE-SVC-TCOU7JCQXEZGVUNU - [0:0]",
            "-A KUBE-SERVICES -d 198.18.200.80/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-CDGGSHYLG3RE2FKL",
            "-A KUBE-SEP-QY366BUQECEODXYH -p tcp -m comment --comment \"default/web:http\" -m tcp -j DNAT --to-destination 198.19.2.10:8080",
            "-A KUBE-NODEPORTS -p tcp -m comment --comment \"default/web:http\" -m tcp --dport 30080 -j KUBE-EXT-CDGGSHYLG3RE2FKL",
            "-A KUBE-SERVICES -d 198.18.200.10/32 -p udp",
            "--to-destination 198.19.1.53:53",
            "-j MASQUERADE --random-fully",
            "-A FLANNEL-POSTRTG -s 198.19.3.0/24 -d 198.19.0.0/16",
            "-A VXLAN-PEERS -s 198.18.0.11/32 -j ACCEPT",
            "-A VXLAN-PEERS -s 198.18.0.12/32 -j ACCEPT",
        ] {
            assert!(r.contains(needle), "missing {needle}\n{r}");
        }
        assert!(!r.contains("-A VXLAN-PEERS -s 198.18.0.13/32"));
        assert!(!r.contains("DROP\"") && !r.contains("icmp-type"));
        let last_service_rule = r
            .lines()
            .rfind(|l| l.starts_with("-A KUBE-SERVICES"))
            .unwrap_or_default();
        assert!(
            last_service_rule.ends_with("-j KUBE-NODEPORTS"),
            "{last_service_rule}"
        );
        assert_eq!(r.matches("COMMIT").count(), 3);
    }

    #[test]
    fn missing_kube_proxy_leaves_only_flannel() {
        let inv = inventory(false).expect("inventory");
        let r = node_ruleset(
            NODE_3,
            &inv,
            NodeRules {
                kube_proxy: false,
                ..NodeRules::BASELINE
            },
            ProxyMode::Iptables,
        );
        assert!(!r.contains("KUBE-"), "{r}");
        assert!(r.contains("FLANNEL-POSTRTG"));
    }

    #[test]
    fn nftables_mode_leaves_kube_proxy_out_of_iptables() {
        let inv = inventory(false).expect("inventory");
        let r = node_ruleset(NODE_3, &inv, NodeRules::BASELINE, ProxyMode::Nftables);
        assert!(!r.contains("KUBE-"), "{r}");
        assert!(r.contains("FLANNEL-POSTRTG") && r.contains("VXLAN-PEERS"));
        for mode in [ProxyMode::Iptables, ProxyMode::Nftables] {
            assert_eq!(mode.name().parse::<ProxyMode>(), Ok(mode));
        }
        assert!("ipvs".parse::<ProxyMode>().is_err());
    }

    #[test]
    fn firewall_faults_render_their_rules() {
        let inv = inventory(false).expect("inventory");
        let r = node_ruleset(
            NODE_2,
            &inv,
            NodeRules {
                drop_icmp_echo: true,
                drop_node_port: Some(30080),
                ..NodeRules::BASELINE
            },
            ProxyMode::Iptables,
        );
        assert!(r.contains("-A INPUT -p icmp -m icmp --icmp-type 8"));
        assert!(r.contains("-A PREROUTING -i eth0 -p tcp -m tcp --dport 30080"));
        let f = fabric_ruleset(FabricRules {
            loss_to_node_2: Some(20),
            drop_frag_needed: true,
        });
        assert!(f.contains("-A OUTPUT -p icmp -m icmp --icmp-type 3/4"));
        assert!(f.contains(
            "-A FORWARD -d 198.18.0.12/32 -m statistic --mode random --probability 0.20000"
        ));
        assert!(!fabric_ruleset(FabricRules::BASELINE).contains("-A "));
    }
}
