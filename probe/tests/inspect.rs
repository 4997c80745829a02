//! The inspect tasks (node facts, listeners, DNS) inside throwaway network
//! namespaces, as root: `run_task` runs on a std::thread that `setns()`'d
//! into the namespace, with a current-thread runtime, as the probe does.
//! Namespaces are `mesh-t4x-i<pid>-<tag>`, addresses in 198.18.64.0/22,
//! removed (with their /etc/netns files and any dnsmasq we started, by PID)
//! by a Drop guard even when a test fails. Skips only with MESH_SKIP_NETNS=1.

use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_probe::tasks::run_task;
use nix::sched::{CloneFlags, setns};
use probemesh_proto::pb;
use probemesh_proto::pb::task_result::Outcome;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const KUBE_PROXY_NAT: &str = "src/tasks/facts/fixtures/iptables_save_nat.txt";

fn skip() -> bool {
    std::env::var("MESH_SKIP_NETNS").is_ok_and(|v| v == "1")
}

/// Namespaces, /etc/netns dirs and child processes of one test.
#[derive(Debug, Default)]
struct Lab {
    names: Vec<String>,
    children: Vec<Child>,
}

impl Lab {
    /// Creates namespace `mesh-t4x-i<pid>-<tag>` with lo up.
    fn add(&mut self, tag: &str) -> String {
        let name = format!("mesh-t4x-i{}-{tag}", std::process::id());
        sh(&["ip", "netns", "del", &name], false);
        sh(&["ip", "netns", "add", &name], true);
        self.names.push(name.clone());
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"], true);
        name
    }

    /// A veth pair `eth0` between `a` and `b`, both up.
    fn link(&self, a: &str, b: &str) {
        sh(
            &[
                "ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
                "netns", b,
            ],
            true,
        );
        sh(&["ip", "-n", a, "link", "set", "eth0", "up"], true);
        sh(&["ip", "-n", b, "link", "set", "eth0", "up"], true);
    }

    /// Adds `cidr` to `ns`'s eth0.
    fn address(&self, ns: &str, cidr: &str) {
        sh(&["ip", "-n", ns, "addr", "add", cidr, "dev", "eth0"], true);
    }

    /// Writes `/etc/netns/NS/resolv.conf`.
    fn resolv_conf(&self, ns: &str, text: &str) {
        let dir = etc_netns(ns);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NS");
        std::fs::write(dir.join("resolv.conf"), text).expect("write resolv.conf");
    }

    /// Starts `command` inside `ns`; killed by PID on drop.
    fn spawn(&mut self, ns: &str, command: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(command)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        self.children.push(child);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in &self.names {
            sh(&["ip", "netns", "del", name], false);
            let _ = std::fs::remove_dir_all(etc_netns(name));
        }
    }
}

fn etc_netns(ns: &str) -> PathBuf {
    Path::new("/etc/netns").join(ns)
}

fn sh(command: &[&str], check: bool) {
    let out = Command::new(command[0])
        .args(&command[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e} (these tests need root)"));
    if check {
        assert!(
            out.status.success(),
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs `kind` through `run_task` on a thread inside `ns`; `setup` runs on
/// that thread first (e.g. to bind sockets there) and lives until the end.
fn run_in<T>(ns: &str, kind: pb::task::Kind, setup: impl FnOnce() -> T + Send) -> Outcome {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
                let _kept = setup();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let task = pb::Task {
                    task_id: "t".into(),
                    kind: Some(kind),
                    ..Default::default()
                };
                let (tx, _rx) = mpsc::channel(16);
                let result = runtime.block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(30),
                        run_task(task, tx, CancellationToken::new()),
                    )
                    .await
                    .expect("run_task hung")
                });
                result.outcome.expect("an outcome")
            })
            .join()
            .expect("task thread")
    })
}

fn facts(outcome: Outcome) -> pb::NodeFacts {
    match outcome {
        Outcome::NodeFacts(f) => f,
        other => panic!("expected node facts, got {other:?}"),
    }
}

fn dns(outcome: Outcome) -> pb::DnsResult {
    match outcome {
        Outcome::Dns(d) => d,
        other => panic!("expected a DNS result, got {other:?}"),
    }
}

fn node_facts_task(ip: &str, port: u32) -> pb::task::Kind {
    pb::task::Kind::NodeFacts(pb::NodeFactsTask {
        match_ip: ip.into(),
        match_port: port,
        ..Default::default()
    })
}

#[test]
fn node_facts_count_the_drops_of_the_window_and_ask_the_kernel_for_routes() {
    if skip() {
        return;
    }
    let mut lab = Lab::default();
    let node = lab.add("drops");
    let peer = lab.add("pinger");
    lab.link(&node, &peer);
    lab.address(&node, "198.18.65.11/24");
    lab.address(&peer, "198.18.65.12/24");
    sh(
        &[
            "ip",
            "-n",
            &node,
            "route",
            "add",
            "blackhole",
            "198.19.65.0/24",
        ],
        true,
    );
    let drop_echo = [
        "ip",
        "netns",
        "exec",
        &node,
        "iptables",
        "-A",
        "INPUT",
        "-p",
        "icmp",
        "--icmp-type",
        "echo-request",
        "-j",
        "DROP",
    ];
    sh(&drop_echo, true);
    // Echoes dropped by node's rule while the task's window is open
    // (bounded: 30 echoes, 50 ms apart).
    lab.spawn(
        &peer,
        &["ping", "-c", "30", "-i", "0.05", "-W", "1", "198.18.65.11"],
    );
    let task = pb::task::Kind::NodeFacts(pb::NodeFactsTask {
        route_lookups: vec!["198.18.65.12".into(), "198.19.65.1".into()],
        counter_window_us: 1_000_000,
        ..Default::default()
    });
    let f = facts(run_in(&node, task, || ()));
    let hit = f
        .rule_hits
        .iter()
        .find(|h| h.rule.contains("-p icmp") && h.target == "DROP")
        .unwrap_or_else(|| {
            panic!(
                "no icmp DROP hit in {:?} ({:?})",
                f.rule_hits, f.unavailable
            )
        });
    assert_eq!(
        (hit.table.as_str(), hit.chain.as_str()),
        ("filter", "INPUT")
    );
    assert!(hit.grew_by > 0 && hit.packets >= hit.grew_by, "{hit:?}");
    let decisions: Vec<(&str, &str, &str)> = f
        .route_decisions
        .iter()
        .map(|d| (d.destination.as_str(), d.kind.as_str(), d.device.as_str()))
        .collect();
    assert_eq!(
        decisions,
        [
            ("198.18.65.12", "unicast", "eth0"),
            ("198.19.65.1", "blackhole", "")
        ],
        "{:?}",
        f.unavailable
    );
}

#[test]
fn node_facts_show_both_addresses_and_the_service_nat_path() {
    if skip() {
        return;
    }
    let mut lab = Lab::default();
    let node = lab.add("node");
    let peer = lab.add("peer");
    lab.link(&node, &peer);
    for addr in ["198.18.64.11/24", "198.18.64.21/24"] {
        lab.address(&node, addr);
    }
    let rules = std::fs::read_to_string(KUBE_PROXY_NAT).expect("fixture");
    let mut restore = Command::new("ip")
        .args(["netns", "exec", &node, "iptables-restore"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("iptables-restore");
    std::io::Write::write_all(&mut restore.stdin.take().expect("stdin"), rules.as_bytes())
        .expect("feed rules");
    assert!(restore.wait().expect("iptables-restore").success());

    let f = facts(run_in(&node, node_facts_task("198.18.200.80", 80), || ()));
    let eth0 = f
        .interfaces
        .iter()
        .find(|i| i.name == "eth0")
        .unwrap_or_else(|| panic!("no eth0 in {:?}", f.interfaces));
    assert!(
        eth0.addresses.contains(&"198.18.64.11/24".to_owned()),
        "{eth0:?}"
    );
    assert!(
        eth0.addresses.contains(&"198.18.64.21/24".to_owned()),
        "{eth0:?}"
    );
    assert_eq!(eth0.mtu, 1500);
    assert!(f.stats.iter().any(|s| s.name == "eth0"), "{:?}", f.stats);
    assert!(
        f.routes
            .iter()
            .any(|r| r.raw.starts_with("198.18.64.0/24 dev eth0")),
        "{:?}",
        f.routes
    );
    assert_eq!(
        f.nat_paths,
        [
            "KUBE-SERVICES -> KUBE-SVC-6BXRYFXQ7QYPUHFL -> KUBE-SEP-UKSFD7AGPMPPLUHC -> DNAT 198.19.2.10:8080",
            "KUBE-SERVICES -> KUBE-SVC-6BXRYFXQ7QYPUHFL -> KUBE-SEP-XN4MJ4WUYB2V5NVU -> DNAT 198.19.3.11:8080",
        ],
        "unavailable: {:?}",
        f.unavailable
    );
    assert_eq!(f.nat_rules.len(), 5, "{:?}", f.nat_rules);
    assert!(f.ephemeral_port_low > 0 && f.ephemeral_port_high >= f.ephemeral_port_low);
    assert!(!f.selinux.is_empty());

    // The node port on the second address goes through KUBE-NODEPORTS.
    let f = facts(run_in(&node, node_facts_task("198.18.64.21", 30080), || ()));
    assert_eq!(f.nat_paths.len(), 2, "{:?}", f.nat_paths);
    assert!(f.nat_paths[0].starts_with("KUBE-SERVICES -> KUBE-NODEPORTS -> KUBE-EXT-"));

    // Without rules (kube-proxy missing) there is no path, and no failure.
    let f = facts(run_in(&peer, node_facts_task("198.18.200.80", 80), || ()));
    assert!(f.nat_paths.is_empty(), "{:?}", f.nat_paths);
    assert!(
        f.interfaces
            .iter()
            .all(|i| !i.addresses.iter().any(|a| a.starts_with("198.18.64.11")))
    );
}

#[test]
fn listeners_are_reported_with_their_bound_address() {
    if skip() {
        return;
    }
    let mut lab = Lab::default();
    let ns = lab.add("listen");
    let outcome = run_in(
        &ns,
        pb::task::Kind::Listener(pb::ListenerTask { port: 0 }),
        || {
            (
                TcpListener::bind("127.0.0.1:18080").expect("bind 127.0.0.1:18080"),
                TcpListener::bind("0.0.0.0:18081").expect("bind 0.0.0.0:18081"),
                UdpSocket::bind("0.0.0.0:18053").expect("bind udp 18053"),
            )
        },
    );
    let Outcome::Listener(result) = outcome else {
        panic!("expected listeners, got {outcome:?}");
    };
    let seen: Vec<(String, String, u32, String)> = result
        .listeners
        .iter()
        .map(|l| {
            (
                l.protocol.clone(),
                l.address.clone(),
                l.port,
                l.state.clone(),
            )
        })
        .collect();
    let want =
        |p: &str, a: &str, port: u32, s: &str| (p.to_owned(), a.to_owned(), port, s.to_owned());
    assert_eq!(
        seen,
        [
            want("udp", "0.0.0.0", 18053, "UNCONN"),
            want("tcp", "127.0.0.1", 18080, "LISTEN"),
            want("tcp", "0.0.0.0", 18081, "LISTEN"),
        ],
        "only this namespace's sockets"
    );
    assert!(
        result.listeners.iter().all(|l| l.pid == std::process::id()),
        "{:?}",
        result.listeners
    );
}

/// Asks `name` until the answer is not a timeout/error (dnsmasq starting), at most 10 s.
fn resolve_when_ready(ns: &str, task: &pb::DnsTask) -> pb::DnsResult {
    let start = Instant::now();
    loop {
        let result = dns(run_in(ns, pb::task::Kind::Dns(task.clone()), || ()));
        let ready = result.answers.iter().all(|a| a.rcode == "NOERROR");
        if ready || start.elapsed() > Duration::from_secs(10) {
            return result;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dns_resolves_with_the_namespace_resolv_conf_and_names_the_dead_server() {
    if skip() {
        return;
    }
    let mut lab = Lab::default();
    let pod = lab.add("pod");
    let dns_ns = lab.add("dns");
    lab.link(&pod, &dns_ns);
    lab.address(&pod, "198.18.66.10/24");
    lab.address(&dns_ns, "198.18.66.53/24");
    // 198.18.66.99 "exists" at a MAC nobody has: queries vanish, no ICMP.
    sh(
        &[
            "ip",
            "-n",
            &pod,
            "neigh",
            "add",
            "198.18.66.99",
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
        true,
    );
    lab.spawn(
        &dns_ns,
        &[
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file",
            "--listen-address=198.18.66.53",
            "--bind-interfaces",
            "--address=/web.default.svc.cluster.local/198.18.200.80",
        ],
    );
    lab.resolv_conf(
        &pod,
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 198.18.66.53\noptions ndots:5\n",
    );

    // resolv.conf's server, with the search list: "web" is a Service name.
    let ask = pb::DnsTask {
        name: "web".into(),
        timeout_us: 500_000,
        ..Default::default()
    };
    let result = resolve_when_ready(&pod, &ask);
    assert_eq!(result.resolv_conf_servers, ["198.18.66.53"]);
    assert_eq!(result.search.len(), 3);
    let answer = &result.answers[0];
    assert_eq!(
        (answer.rcode.as_str(), answer.source.as_str()),
        ("NOERROR", "resolv.conf"),
        "{result:?}"
    );
    assert!(
        answer.answers[0].starts_with("web.default.svc.cluster.local."),
        "{answer:?}"
    );
    assert!(answer.answers[0].ends_with("A 198.18.200.80"), "{answer:?}");
    assert_eq!(result.conclusion, "198.18.66.53 answers");

    // Cluster DNS dead, the explicit server alive: compare names the dead one.
    lab.resolv_conf(&pod, "nameserver 198.18.66.99\noptions ndots:5\n");
    let compare = pb::DnsTask {
        name: "web.default.svc.cluster.local.".into(),
        servers: vec!["198.18.66.53".into()],
        compare: true,
        timeout_us: 500_000,
        ..Default::default()
    };
    let result = dns(run_in(&pod, pb::task::Kind::Dns(compare), || ()));
    let rcodes: Vec<(&str, &str, &str)> = result
        .answers
        .iter()
        .map(|a| (a.server.as_str(), a.source.as_str(), a.rcode.as_str()))
        .collect();
    assert_eq!(
        rcodes,
        [
            ("198.18.66.99:53", "resolv.conf", "TIMEOUT"),
            ("198.18.66.53:53", "explicit", "NOERROR")
        ]
    );
    assert_eq!(
        result.conclusion,
        "cluster DNS 198.18.66.99 timed out while 198.18.66.53 answered: the pod cannot reach cluster DNS"
    );

    // A name the server does not know: NXDOMAIN is an answer, not a failure.
    let unknown = pb::DnsTask {
        name: "nope.example.".into(),
        servers: vec!["198.18.66.53".into()],
        timeout_us: 500_000,
        ..Default::default()
    };
    let result = dns(run_in(&pod, pb::task::Kind::Dns(unknown), || ()));
    assert!(
        matches!(result.answers[0].rcode.as_str(), "NXDOMAIN" | "REFUSED"),
        "{result:?}"
    );
}
