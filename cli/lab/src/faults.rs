//! The fault catalogue (DESIGN §4): what each fault breaks, how it shows, the
//! `meshctl probe` run that should reveal it and the verdict it should get,
//! and the system changes that inject and undo it.
//!
//! Every fault reproduces the real mechanism (addresses, MTUs, routes, rules,
//! processes, kernel tables); none tells a probe what to report. Injection and
//! undo are plain data ([`Action`]) so they can be reviewed and tested without
//! root; the lifecycle executes them.

use std::fmt;
use std::str::FromStr;

use probemesh_model::inventory::{InvalidInventory, Inventory};
use probemesh_model::verdict::{Cause, Class};
use serde::Serialize;

use crate::rules::nftables::kube_proxy_script;
use crate::rules::{FabricRules, NodeRules, ProxyMode, fabric_ruleset, node_ruleset};
use crate::topology::{
    self, BrokenDns, CLIENT_POD, ETH_MTU, FABRIC, LabNode, NODE_2, NODE_3, NODE_PORT, NODES,
};

/// A fault of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// node-2 drops ICMP echo requests.
    IcmpBlocked,
    /// node-3 loses its route to node-2's pod CIDR.
    RouteMissing,
    /// The web app is stopped.
    AppDown,
    /// The web app listens on 127.0.0.1 only.
    ListenLoopback,
    /// node-2's firewall drops the NodePort.
    PortFiltered,
    /// Reference incident 2: node-2's link shrinks to MTU 1440, silently.
    MtuBlackhole,
    /// The cluster DNS is stopped.
    DnsDown,
    /// client-3's resolv.conf points at a dead server.
    PodDnsConfig,
    /// Reference incident 3: no kube-proxy rules on node-3.
    KubeProxyMissing,
    /// Reference incident 1: node-3 sends VXLAN from a second address.
    DualIp,
    /// node-2's conntrack table is full.
    ConntrackFull,
    /// The fabric loses a fifth of the packets towards node-2.
    PacketLoss,
    /// The web app stops accepting; its accept queue fills up.
    BacklogFull,
    /// node-1 has no ephemeral port left to connect from.
    PortsExhausted,
}

/// Every fault, in catalogue order.
pub const ALL: [Fault; 14] = [
    Fault::IcmpBlocked,
    Fault::RouteMissing,
    Fault::AppDown,
    Fault::ListenLoopback,
    Fault::PortFiltered,
    Fault::MtuBlackhole,
    Fault::DnsDown,
    Fault::PodDnsConfig,
    Fault::KubeProxyMissing,
    Fault::DualIp,
    Fault::ConntrackFull,
    Fault::PacketLoss,
    Fault::BacklogFull,
    Fault::PortsExhausted,
];

/// The second address node-3's eth0 gets in the `dual-ip` fault.
pub const DUAL_IP_EXTRA: &str = "198.18.0.23";
/// Loss of the `packet-loss` fault, percent.
pub const LOSS_PERCENT: u8 = 20;
/// The stalled web app's listen backlog in the `backlog-full` fault; the
/// kernel queues one more connection than the backlog.
pub const STALLED_BACKLOG: u16 = 1;
/// node-1's ephemeral port range in the `ports-exhausted` fault (8 ports),
/// and the kernel's default it goes back to.
pub const EXHAUSTED_PORT_RANGE: &str = "40000 40007";
/// The kernel's default ephemeral port range.
pub const DEFAULT_PORT_RANGE: &str = "32768 60999";
/// node-2's link MTU in the `mtu-blackhole` fault.
pub const SHRUNK_MTU: u16 = 1440;

/// A fault name that is not in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault '{0}'; the faults are: {names}", names = names().join(", "))]
pub struct UnknownFault(pub String);

/// The names of every fault, in catalogue order.
pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|f| f.name()).collect()
}

impl FromStr for Fault {
    type Err = UnknownFault;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.into_iter()
            .find(|f| f.name() == s.trim())
            .ok_or_else(|| UnknownFault(s.to_owned()))
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `meshctl probe` run that should reveal a fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeSpec {
    /// `--from`.
    pub from: &'static str,
    /// `--to`.
    pub to: &'static str,
    /// `--size`: ICMP payload bytes.
    pub size: u16,
}

/// The verdict a fault should get (DESIGN §1 strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expect {
    /// Verdict class.
    pub class: Class,
    /// Verdict cause, where the class has causes.
    pub cause: Option<Cause>,
}

/// A catalogue entry, as `meshctl lab fault --list` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultInfo {
    /// The fault's name.
    pub name: &'static str,
    /// What a user sees.
    pub symptom: &'static str,
    /// What the lab changes to produce it.
    pub mechanism: &'static str,
    /// A plain-tool command on the host that shows the symptom.
    pub observe: &'static str,
    /// The probe run that should reveal it.
    pub probe: ProbeSpec,
    /// The verdict it should get.
    pub expect: Expect,
}

impl FaultInfo {
    /// The probe run as a command line.
    pub fn probe_command(&self) -> String {
        format!(
            "meshctl probe --from {} --to {} --size {}",
            self.probe.from, self.probe.to, self.probe.size
        )
    }
}

/// A lab process the faults stop and start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// The web app in web-0, listening on 0.0.0.0:8080 or on 127.0.0.1:8080.
    Web {
        /// Listen on loopback only.
        loopback: bool,
    },
    /// dnsmasq in dns-0.
    ClusterDns,
    /// dnsmasq in dns-0 answering every cluster name wrongly.
    BrokenClusterDns(BrokenDns),
    /// The web app stuck outside `accept()`: 0.0.0.0:8080 with a backlog
    /// of [`STALLED_BACKLOG`], never accepting.
    StalledWeb,
    /// Connections to web-0:8080 opened and held open.
    Holder(Holder),
}

/// Who holds connections to the web app, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// client-3 fills the stalled app's accept queue.
    QueueFiller,
    /// node-1 uses every port of its narrowed ephemeral range.
    PortHolder,
}

impl Holder {
    /// The namespace the connections come from.
    pub fn netns(self) -> &'static str {
        match self {
            Holder::QueueFiller => CLIENT_POD.netns,
            Holder::PortHolder => NODES[0].netns(),
        }
    }

    /// How many connections: the stalled queue's capacity, or every port
    /// of the narrowed range.
    pub fn count(self) -> u16 {
        match self {
            Holder::QueueFiller => STALLED_BACKLOG + 1,
            Holder::PortHolder => 8,
        }
    }
}

/// Whether an [`Action::Rule`] adds its rule or removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleOp {
    /// `iptables -I CHAIN` (first in the chain).
    Insert,
    /// `iptables -D CHAIN` (the same rule, matched by its text).
    Delete,
}

/// One change to the lab.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `ip -n NETNS -batch -` with these commands.
    Ip {
        /// Namespace.
        netns: &'static str,
        /// `ip` commands, one per line.
        commands: Vec<String>,
    },
    /// `iptables-restore` of a whole ruleset in NETNS.
    Iptables {
        /// Namespace.
        netns: &'static str,
        /// The ruleset.
        ruleset: String,
    },
    /// `nft -f -` of a script in NETNS (one transaction): kube-proxy's
    /// table in nftables mode.
    Nft {
        /// Namespace.
        netns: &'static str,
        /// The script.
        script: String,
    },
    /// One rule of NETNS's filter table, inserted or deleted (composed
    /// faults: other rules stay as they are).
    Rule {
        /// Namespace.
        netns: &'static str,
        /// Insert or delete.
        op: RuleOp,
        /// Chain (`INPUT`, `OUTPUT`, `FORWARD`).
        chain: &'static str,
        /// The rule's arguments after the chain: matches, comment, target.
        args: Vec<String>,
    },
    /// `sysctl -w KEY=VALUE` in NETNS.
    Sysctl {
        /// Namespace.
        netns: &'static str,
        /// Key.
        key: &'static str,
        /// Value.
        value: &'static str,
    },
    /// Stop a lab process (by its recorded PID).
    Stop(Daemon),
    /// Start a lab process.
    Start(Daemon),
    /// Replace `/etc/netns/NETNS/resolv.conf`.
    ResolvConf {
        /// Namespace.
        netns: &'static str,
        /// File contents.
        contents: String,
    },
    /// Rewrite the inventory file (which the lab's API server serves).
    Inventory {
        /// node-3's kube-proxy is Pending.
        kube_proxy_pending: bool,
        /// client-3's pod spec names a wrong DNS server (dnsPolicy None).
        client_dns_wrong: bool,
    },
    /// Fill the conntrack table of NETNS with assured entries.
    ConntrackFill {
        /// Namespace.
        netns: &'static str,
    },
    /// Flush the conntrack table of NETNS.
    ConntrackFlush {
        /// Namespace.
        netns: &'static str,
    },
    /// Wait (a few seconds at most) until DEVICE in NETNS has, or has
    /// lost, its carrier: the kernel reports a bridge's carrier change up
    /// to a second late (linkwatch), and the routes' `linkdown` flag with
    /// it, so a fault is in only once that holds.
    Settle {
        /// Namespace.
        netns: &'static str,
        /// Device.
        device: &'static str,
        /// Whether the carrier should be up.
        carrier: bool,
    },
}

impl Daemon {
    /// What it is, for humans.
    pub fn describe(self) -> &'static str {
        match self {
            Daemon::Web { loopback: false } => "the web app in web-0 (0.0.0.0:8080)",
            Daemon::Web { loopback: true } => "the web app in web-0 on 127.0.0.1:8080",
            Daemon::ClusterDns => "the cluster DNS (dnsmasq in dns-0)",
            Daemon::BrokenClusterDns(BrokenDns::Refused) => {
                "the cluster DNS in dns-0 answering REFUSED (no zone, no upstream)"
            }
            Daemon::BrokenClusterDns(BrokenDns::NxDomain) => {
                "the cluster DNS in dns-0 answering NXDOMAIN for cluster.local"
            }
            Daemon::StalledWeb => {
                "the stalled web app in web-0 (0.0.0.0:8080, backlog 1, never accepting)"
            }
            Daemon::Holder(Holder::QueueFiller) => "2 connections held from client-3 to web-0:8080",
            Daemon::Holder(Holder::PortHolder) => "8 connections held from node-1 to web-0:8080",
        }
    }
}

/// Quotes a shell word when it needs it.
fn shell_word(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,!@".contains(c))
    {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

impl Action {
    /// The change as the command lines (or a sentence, for process and
    /// file changes) an engineer would type: what `--dry-run` prints.
    pub fn commands(&self) -> Vec<String> {
        match self {
            Action::Ip { netns, commands } => commands
                .iter()
                .map(|c| format!("ip -n {netns} {c}"))
                .collect(),
            Action::Iptables { netns, ruleset } => vec![format!(
                "ip netns exec {netns} iptables-restore  # the whole ruleset, {} lines{}",
                ruleset.lines().count(),
                if ruleset.contains("KUBE-SERVICES") {
                    ""
                } else {
                    ", without kube-proxy's chains"
                }
            )],
            Action::Nft { netns, script } => vec![format!(
                "ip netns exec {netns} nft -f -  # {} lines{}",
                script.lines().count(),
                if script.contains("add chain") {
                    ", kube-proxy's table rebuilt"
                } else {
                    ": kube-proxy's table deleted"
                }
            )],
            Action::Rule {
                netns,
                op,
                chain,
                args,
            } => {
                let flag = match op {
                    RuleOp::Insert => "-I",
                    RuleOp::Delete => "-D",
                };
                let words: Vec<String> = args.iter().map(|a| shell_word(a)).collect();
                vec![format!(
                    "ip netns exec {netns} iptables -w {flag} {chain} {}",
                    words.join(" ")
                )]
            }
            Action::Sysctl { netns, key, value } => {
                vec![format!("ip netns exec {netns} sysctl -w {key}={value}")]
            }
            Action::Stop(d) => vec![format!("stop {}", d.describe())],
            Action::Start(d) => vec![format!("start {}", d.describe())],
            Action::ResolvConf { netns, .. } => {
                vec![format!("rewrite /etc/netns/{netns}/resolv.conf")]
            }
            Action::Inventory {
                kube_proxy_pending: pending,
                client_dns_wrong: wrong,
            } => vec![format!(
                "rewrite the inventory (node-3's kube-proxy {}; client-3's dnsPolicy {})",
                if *pending { "Pending" } else { "Running" },
                if *wrong {
                    "None with a wrong nameserver"
                } else {
                    "ClusterFirst"
                }
            )],
            Action::ConntrackFill { netns } => {
                vec![format!("ip netns exec {netns} meshctl lab conntrack-fill")]
            }
            Action::ConntrackFlush { netns } => {
                vec![format!("ip netns exec {netns} meshctl lab conntrack-flush")]
            }
            Action::Settle {
                netns,
                device,
                carrier,
            } => vec![format!(
                "wait until ip netns exec {netns} cat /sys/class/net/{device}/carrier says {}",
                u8::from(*carrier)
            )],
        }
    }
}

fn node_rules(
    node: LabNode,
    rules: NodeRules,
    mode: ProxyMode,
) -> Result<Action, InvalidInventory> {
    Ok(Action::Iptables {
        netns: node.netns(),
        ruleset: node_ruleset(node, &topology::inventory(false)?, rules, mode),
    })
}

/// kube-proxy's Service rules on `node` as `inventory` has them
/// (`present`), or gone, the way the lab's proxy mode writes them: the
/// node's iptables ruleset with or without its KUBE-* chains, or its
/// `ip kube-proxy` nftables table rebuilt or deleted.
pub fn kube_proxy_rules(
    node: LabNode,
    inventory: &Inventory,
    present: bool,
    mode: ProxyMode,
) -> Action {
    match mode {
        ProxyMode::Iptables => Action::Iptables {
            netns: node.netns(),
            ruleset: node_ruleset(
                node,
                inventory,
                NodeRules {
                    kube_proxy: present,
                    ..NodeRules::BASELINE
                },
                mode,
            ),
        },
        ProxyMode::Nftables => Action::Nft {
            netns: node.netns(),
            script: kube_proxy_script(node, inventory, present),
        },
    }
}

/// The sysctl the `conntrack-full` faults raise so that forged UDP entries last.
pub const UDP_STREAM_TIMEOUT: &str = "net.netfilter.nf_conntrack_udp_timeout_stream";
/// The ephemeral port range sysctl.
const PORT_RANGE: &str = "net.ipv4.ip_local_port_range";

impl Fault {
    /// The catalogue name.
    pub fn name(self) -> &'static str {
        match self {
            Fault::IcmpBlocked => "icmp-blocked",
            Fault::RouteMissing => "route-missing",
            Fault::AppDown => "app-down",
            Fault::ListenLoopback => "listen-loopback",
            Fault::PortFiltered => "port-filtered",
            Fault::MtuBlackhole => "mtu-blackhole",
            Fault::DnsDown => "dns-down",
            Fault::PodDnsConfig => "pod-dns-config",
            Fault::KubeProxyMissing => "kube-proxy-missing",
            Fault::DualIp => "dual-ip",
            Fault::ConntrackFull => "conntrack-full",
            Fault::PacketLoss => "packet-loss",
            Fault::BacklogFull => "backlog-full",
            Fault::PortsExhausted => "ports-exhausted",
        }
    }

    /// The catalogue entry.
    pub fn info(self) -> FaultInfo {
        const CLIENT: &str = "node-3@pod:default/client-3";
        const CLUSTER_NAME: &str = "dns:web.default.svc.cluster.local";
        let (symptom, mechanism, observe, (from, to, size), (class, cause)) = match self {
            Fault::IcmpBlocked => (
                "ping to node-2 (198.18.0.12) gets no reply, while TCP to 198.18.0.12:30080 connects",
                "node-2's host firewall drops ICMP echo requests addressed to it (filter INPUT -p icmp --icmp-type 8 -j DROP)",
                "ip netns exec mesh-cloudvm-1 ping -c 3 -W 1 198.18.0.12",
                ("cloudvm-1", "probe:node-2", 56),
                (Class::NetworkUnreachable, Some(Cause::Firewall)),
            ),
            Fault::RouteMissing => (
                "from node-3 and its pods, web-0 (198.19.2.10) does not answer, while dns-0 on node-1 (198.19.1.53) does",
                "node-3 lost flannel's route to node-2's pod CIDR 198.19.2.0/24: packets for it follow the default route into the fabric, which drops them",
                "ip netns exec mesh-pod-client-3 ping -c 3 -W 1 198.19.2.10",
                ("node-3", "pod:default/web-0:8080", 56),
                (Class::NetworkUnreachable, Some(Cause::Routing)),
            ),
            Fault::AppDown => (
                "web-0 answers ping, but TCP to 198.19.2.10:8080, the ClusterIP 198.18.200.80:80 and NodePort 30080 is refused",
                "the web app in web-0 is stopped: nothing listens on 8080, the pod's kernel answers SYNs with RST",
                "ip netns exec mesh-node-1 nc -z -w 2 198.19.2.10 8080",
                ("node-1", "svc:default/web:80", 56),
                (Class::PortUnreachable, Some(Cause::Refused)),
            ),
            Fault::ListenLoopback => (
                "web-0 answers ping and 127.0.0.1:8080 inside the pod, but TCP to 198.19.2.10:8080 from anywhere else is refused",
                "the web app was restarted listening on 127.0.0.1:8080 instead of 0.0.0.0:8080",
                "ip netns exec mesh-pod-web-0 ss -ltn",
                ("node-1", "pod:default/web-0:8080", 56),
                (Class::PortUnreachable, Some(Cause::LoopbackOnly)),
            ),
            Fault::PortFiltered => (
                "ping 198.18.0.12 works; TCP to 198.18.0.12:30080 times out (no RST) while 198.18.0.11:30080 connects",
                "node-2's host firewall drops TCP to port 30080 arriving on eth0 (raw PREROUTING, before kube-proxy's DNAT)",
                "ip netns exec mesh-cloudvm-1 nc -z -w 2 198.18.0.12 30080",
                ("cloudvm-1", "nodeport:node-2:30080", 56),
                (Class::PortUnreachable, Some(Cause::Filtered)),
            ),
            Fault::MtuBlackhole => (
                "from cloudvm-1 (MTU 1500), ping -M do -s 56 198.18.0.12 works and -s 1472 is lost without any error; TCP handshakes to NodePort 30080 work, full-size segments towards web-0 are lost",
                "the path to node-2 shrinks to MTU 1440 (node-2's eth0, and the fabric router's route to it) while cloudvm-1 keeps 1500; the router's ICMP frag-needed errors are dropped by the fabric's firewall and bridged frames above 1440 die on node-2's link, so nothing tells the sender",
                "ip netns exec mesh-cloudvm-1 ping -c 3 -W 1 -M do -s 1472 198.18.0.12",
                ("cloudvm-1", "nodeport:30080", 1472),
                (Class::MtuBlackhole, None),
            ),
            Fault::DnsDown => (
                "from client-3, web.default.svc.cluster.local does not resolve (198.18.200.10:53 gives no answer) while the upstream 198.18.0.1 answers and IPs work",
                "the cluster DNS (dnsmasq in kube-system/dns-0) is stopped",
                "ip netns exec mesh-pod-client-3 dig +time=1 +tries=1 @198.18.200.10 web.default.svc.cluster.local",
                (CLIENT, CLUSTER_NAME, 56),
                (Class::DnsFailure, Some(Cause::DnsServiceDown)),
            ),
            Fault::PodDnsConfig => (
                "client-3 cannot resolve web.default.svc.cluster.local with its resolv.conf, while dig @198.18.200.10 from the same pod works",
                "client-3's resolv.conf (/etc/netns/mesh-pod-client-3/resolv.conf) points at 198.18.200.53, where no DNS server exists",
                "ip netns exec mesh-pod-client-3 getent hosts web.default.svc.cluster.local",
                (CLIENT, CLUSTER_NAME, 56),
                (Class::DnsFailure, Some(Cause::PodDnsConfig)),
            ),
            Fault::KubeProxyMissing => (
                "from client-3 on node-3, 198.18.200.10:53 times out while the upstream 198.18.0.1 answers; pods on node-1 and node-2 resolve fine",
                "node-3 has no kube-proxy rules (its kube-proxy pod is Pending in the inventory: evicted, no priority class), so no Service NAT exists there",
                "ip netns exec mesh-pod-client-3 dig +time=1 +tries=1 @198.18.200.10 web.default.svc.cluster.local",
                (CLIENT, CLUSTER_NAME, 56),
                (Class::DnsFailure, Some(Cause::DnsUnreachable)),
            ),
            Fault::DualIp => (
                "node-3 pings node-2 (198.18.0.12) but not web-0 (198.19.2.10) nor the ClusterIP 198.18.200.80:80",
                "node-3's eth0 gains a second (DHCP) address 198.18.0.23 and flannel.1 now sends VXLAN from it; the other nodes accept VXLAN only from registered node addresses",
                "ip netns exec mesh-node-3 ping -c 3 -W 1 198.19.2.10",
                ("node-3", "svc:default/web:80", 56),
                (Class::CniFailure, Some(Cause::OverlaySourceMismatch)),
            ),
            Fault::ConntrackFull => (
                "new connections to node-2 and through it fail (ping 198.18.0.12 and TCP 198.18.0.12:30080 time out) while node-1 answers; established ones keep working",
                "node-2's conntrack table is filled to nf_conntrack_max with assured entries, so the kernel drops every new flow (\"nf_conntrack: table full, dropping packet\")",
                "ip netns exec mesh-node-2 cat /proc/sys/net/netfilter/nf_conntrack_count /proc/sys/net/netfilter/nf_conntrack_max",
                ("cloudvm-1", "nodeport:node-2:30080", 56),
                (Class::NetworkUnreachable, Some(Cause::Overload)),
            ),
            Fault::PacketLoss => (
                "ping from cloudvm-1 to node-2 (198.18.0.12) loses about a fifth of the packets; node-1 is clean",
                "the fabric router drops 20% of the packets it forwards towards node-2 (iptables statistic --mode random)",
                "ip netns exec mesh-cloudvm-1 ping -c 50 -i 0.02 -q 198.18.0.12",
                ("cloudvm-1", "probe:node-2", 56),
                (Class::Degraded, Some(Cause::Loss)),
            ),
            Fault::BacklogFull => (
                "web-0 answers ping, but new connections to 198.19.2.10:8080 (and the Service) time out; established ones sit unanswered",
                "the web app is stuck outside accept(): it listens with a backlog of 1 and never accepts, and two held connections from client-3 fill its accept queue, so the kernel drops new SYNs (ListenOverflows)",
                "ip netns exec mesh-node-1 nc -z -w 2 198.19.2.10 8080",
                ("node-1", "svc:default/web:80", 56),
                (Class::PortUnreachable, Some(Cause::BacklogOverflow)),
            ),
            Fault::PortsExhausted => (
                "from node-1, every new TCP connection fails at once (\"Cannot assign requested address\") while ping works; other nodes connect fine",
                "node-1's ephemeral port range is narrowed to 8 ports (net.ipv4.ip_local_port_range 40000 40007) and 8 connections to web-0 hold them all",
                "ip netns exec mesh-node-1 nc -z -w 2 198.19.2.10 8080",
                ("node-1", "svc:default/web:80", 56),
                (Class::PortUnreachable, Some(Cause::PortExhaustion)),
            ),
        };
        FaultInfo {
            name: self.name(),
            symptom,
            mechanism,
            observe,
            probe: ProbeSpec { from, to, size },
            expect: Expect { class, cause },
        }
    }

    /// The changes that inject the fault into a healthy lab whose
    /// kube-proxy runs in `mode`.
    pub fn apply(self, mode: ProxyMode) -> Result<Vec<Action>, InvalidInventory> {
        Ok(match self {
            Fault::IcmpBlocked => vec![node_rules(
                NODE_2,
                NodeRules {
                    drop_icmp_echo: true,
                    ..NodeRules::BASELINE
                },
                mode,
            )?],
            Fault::RouteMissing => vec![Action::Ip {
                netns: NODE_3.netns(),
                commands: vec![format!("route del {}", NODE_2.pod_cidr())],
            }],
            Fault::AppDown => vec![Action::Stop(Daemon::Web { loopback: false })],
            Fault::ListenLoopback => vec![
                Action::Stop(Daemon::Web { loopback: false }),
                Action::Start(Daemon::Web { loopback: true }),
            ],
            Fault::PortFiltered => vec![node_rules(
                NODE_2,
                NodeRules {
                    drop_node_port: Some(NODE_PORT),
                    ..NodeRules::BASELINE
                },
                mode,
            )?],
            Fault::MtuBlackhole => vec![
                Action::Iptables {
                    netns: FABRIC,
                    ruleset: fabric_ruleset(FabricRules {
                        drop_frag_needed: true,
                        ..FabricRules::BASELINE
                    }),
                },
                Action::Ip {
                    netns: FABRIC,
                    commands: vec![format!(
                        "route replace {}/32 dev br-nodes mtu {SHRUNK_MTU}",
                        NODE_2.ip()
                    )],
                },
                Action::Ip {
                    netns: NODE_2.netns(),
                    commands: vec![format!("link set eth0 mtu {SHRUNK_MTU}")],
                },
            ],
            Fault::DnsDown => vec![Action::Stop(Daemon::ClusterDns)],
            Fault::PodDnsConfig => vec![
                Action::Inventory {
                    kube_proxy_pending: false,
                    client_dns_wrong: true,
                },
                Action::ResolvConf {
                    netns: CLIENT_POD.netns,
                    contents: topology::broken_resolv_conf(),
                },
            ],
            Fault::KubeProxyMissing => vec![
                Action::Inventory {
                    kube_proxy_pending: true,
                    client_dns_wrong: false,
                },
                kube_proxy_rules(NODE_3, &topology::inventory(false)?, false, mode),
                Action::ConntrackFlush {
                    netns: NODE_3.netns(),
                },
            ],
            Fault::DualIp => vec![Action::Ip {
                netns: NODE_3.netns(),
                commands: vec![
                    format!("addr add {DUAL_IP_EXTRA}/24 dev eth0"),
                    format!("link set flannel.1 type vxlan local {DUAL_IP_EXTRA}"),
                ],
            }],
            Fault::ConntrackFull => vec![
                Action::Sysctl {
                    netns: NODE_2.netns(),
                    key: UDP_STREAM_TIMEOUT,
                    value: "86400",
                },
                Action::ConntrackFill {
                    netns: NODE_2.netns(),
                },
            ],
            Fault::PacketLoss => vec![Action::Iptables {
                netns: FABRIC,
                ruleset: fabric_ruleset(FabricRules {
                    loss_to_node_2: Some(LOSS_PERCENT),
                    ..FabricRules::BASELINE
                }),
            }],
            Fault::BacklogFull => vec![
                Action::Stop(Daemon::Web { loopback: false }),
                Action::Start(Daemon::StalledWeb),
                Action::Start(Daemon::Holder(Holder::QueueFiller)),
            ],
            Fault::PortsExhausted => vec![
                Action::Sysctl {
                    netns: NODES[0].netns(),
                    key: PORT_RANGE,
                    value: EXHAUSTED_PORT_RANGE,
                },
                Action::Start(Daemon::Holder(Holder::PortHolder)),
            ],
        })
    }

    /// The changes that restore the baseline after [`Fault::apply`].
    pub fn clear(self, mode: ProxyMode) -> Result<Vec<Action>, InvalidInventory> {
        Ok(match self {
            Fault::IcmpBlocked | Fault::PortFiltered => {
                vec![node_rules(NODE_2, NodeRules::BASELINE, mode)?]
            }
            Fault::RouteMissing => vec![Action::Ip {
                netns: NODE_3.netns(),
                commands: vec![topology::peer_route(NODE_2)],
            }],
            Fault::AppDown => vec![Action::Start(Daemon::Web { loopback: false })],
            Fault::ListenLoopback => vec![
                Action::Stop(Daemon::Web { loopback: true }),
                Action::Start(Daemon::Web { loopback: false }),
            ],
            Fault::MtuBlackhole => vec![
                Action::Ip {
                    netns: NODE_2.netns(),
                    commands: vec![format!("link set eth0 mtu {ETH_MTU}")],
                },
                Action::Ip {
                    netns: FABRIC,
                    commands: vec![format!("route del {}/32 dev br-nodes", NODE_2.ip())],
                },
                Action::Iptables {
                    netns: FABRIC,
                    ruleset: fabric_ruleset(FabricRules::BASELINE),
                },
            ],
            Fault::DnsDown => vec![Action::Start(Daemon::ClusterDns)],
            Fault::PodDnsConfig => vec![
                Action::ResolvConf {
                    netns: CLIENT_POD.netns,
                    contents: topology::resolv_conf(CLIENT_POD.netns),
                },
                Action::Inventory {
                    kube_proxy_pending: false,
                    client_dns_wrong: false,
                },
            ],
            Fault::KubeProxyMissing => vec![
                kube_proxy_rules(NODE_3, &topology::inventory(false)?, true, mode),
                Action::ConntrackFlush {
                    netns: NODE_3.netns(),
                },
                Action::Inventory {
                    kube_proxy_pending: false,
                    client_dns_wrong: false,
                },
            ],
            Fault::DualIp => vec![Action::Ip {
                netns: NODE_3.netns(),
                commands: vec![
                    format!("link set flannel.1 type vxlan local {}", NODE_3.ip()),
                    format!("addr del {DUAL_IP_EXTRA}/24 dev eth0"),
                ],
            }],
            Fault::ConntrackFull => vec![
                Action::ConntrackFlush {
                    netns: NODE_2.netns(),
                },
                Action::Sysctl {
                    netns: NODE_2.netns(),
                    key: UDP_STREAM_TIMEOUT,
                    value: "120",
                },
            ],
            Fault::PacketLoss => vec![Action::Iptables {
                netns: FABRIC,
                ruleset: fabric_ruleset(FabricRules::BASELINE),
            }],
            Fault::BacklogFull => vec![
                Action::Stop(Daemon::Holder(Holder::QueueFiller)),
                Action::Stop(Daemon::StalledWeb),
                Action::Start(Daemon::Web { loopback: false }),
            ],
            Fault::PortsExhausted => vec![
                Action::Stop(Daemon::Holder(Holder::PortHolder)),
                Action::Sysctl {
                    netns: NODES[0].netns(),
                    key: PORT_RANGE,
                    value: DEFAULT_PORT_RANGE,
                },
            ],
        })
    }
}

#[cfg(test)]
mod tests;
