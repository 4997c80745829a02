//! The lab, end to end, as root: `meshctl lab up` builds DESIGN §4's cluster
//! in network namespaces; plain system tools (ping, nc, dig, getent, bash's
//! /dev/tcp) run inside those namespaces check the baseline and every fault's
//! symptom; `lab clear` restores the baseline; `lab down` leaves nothing.
//!
//! Every test shares the one lab of this machine, so they take a process-wide
//! lock, and each tears the lab down on the way out (even when it fails).
//! They fail loudly when they cannot run; `MESH_SKIP_NETNS=1` skips them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use probemesh_tests::lab::{Lab, STATE_DIR, in_ns, kubectl_json, ns_output, text};
use serde_json::Value;

const LAB_NAMESPACES: [&str; 8] = [
    "mesh-fabric",
    "mesh-node-1",
    "mesh-node-2",
    "mesh-node-3",
    "mesh-cloudvm-1",
    "mesh-pod-web-0",
    "mesh-pod-dns-0",
    "mesh-pod-client-3",
];

fn ping(ns: &str, ip: &str) -> bool {
    in_ns(ns, &format!("ping -c 1 -W 1 {ip}"))
}

fn ping_df(ns: &str, ip: &str, size: u32) -> bool {
    in_ns(ns, &format!("ping -c 1 -W 1 -M do -s {size} {ip}"))
}

fn tcp_connect(ns: &str, ip: &str, port: u16) -> bool {
    in_ns(ns, &format!("nc -z -w 2 {ip} {port}"))
}

/// An HTTP POST of `body` zero bytes with bash's /dev/tcp; true on a 200.
fn http_post(ns: &str, ip: &str, port: u16, body: usize) -> bool {
    in_ns(
        ns,
        &format!(
            "timeout 4 bash -c 'exec 3<>/dev/tcp/{ip}/{port}; \
             {{ printf \"POST / HTTP/1.1\\r\\nHost: lab\\r\\nContent-Length: {body}\\r\\n\\r\\n\"; head -c {body} /dev/zero; }} >&3; \
             cat <&3' | grep -q '200 OK'"
        ),
    )
}

fn dig(ns: &str, server: &str, name: &str) -> bool {
    in_ns(
        ns,
        &format!("dig +time=1 +tries=1 +short @{server} {name} | grep -qE '^[0-9.]+$'"),
    )
}

fn resolves_with_resolv_conf(ns: &str, name: &str, expected: &str) -> bool {
    in_ns(ns, &format!("getent hosts {name} | grep -q '^{expected} '"))
}

/// Every baseline check of the issue, with plain tools; returns the failures.
fn baseline_failures() -> Vec<String> {
    let mut failed = Vec::new();
    let mut check = |ok: bool, what: &str| {
        if !ok {
            failed.push(what.to_owned());
        }
    };
    check(
        ping("mesh-pod-client-3", "198.19.2.10"),
        "client-3 (node-3) pings web-0 (node-2) over the overlay",
    );
    check(
        ping("mesh-pod-web-0", "198.19.1.53"),
        "web-0 (node-2) pings dns-0 (node-1) over the overlay",
    );
    for node in ["198.18.0.11", "198.18.0.12", "198.18.0.13"] {
        check(
            tcp_connect("mesh-cloudvm-1", node, 30080),
            &format!("cloudvm-1 connects to {node}:30080"),
        );
    }
    check(
        http_post("mesh-pod-client-3", "198.18.200.80", 80, 0),
        "client-3 gets HTTP 200 from the ClusterIP 198.18.200.80:80",
    );
    check(
        resolves_with_resolv_conf(
            "mesh-pod-client-3",
            "web.default.svc.cluster.local",
            "198.18.200.80",
        ),
        "client-3 resolves web.default.svc.cluster.local with its resolv.conf",
    );
    check(
        dig("mesh-pod-client-3", "198.18.200.10", "upstream.lab.test"),
        "cluster DNS forwards upstream.lab.test upstream",
    );
    check(
        ping_df("mesh-cloudvm-1", "198.18.0.12", 1472),
        "cloudvm-1 sends 1500-byte DF packets to node-2",
    );
    check(
        http_post("mesh-cloudvm-1", "198.18.0.11", 30080, 200_000),
        "cloudvm-1 uploads 200 kB through NodePort 30080",
    );
    check(
        ping("mesh-cloudvm-1", "198.18.0.12"),
        "cloudvm-1 pings node-2",
    );
    check(
        tcp_connect("mesh-node-3", "198.18.200.80", 80),
        "node-3 connects to the ClusterIP",
    );
    failed
}

fn assert_baseline(context: &str) {
    let failed = baseline_failures();
    assert!(failed.is_empty(), "{context}: baseline broken: {failed:#?}");
}

/// The probes `meshctl probes -o json` lists as connected (plain meshctl:
/// the lab's client configuration points it at the lab).
fn connected_probes(lab: &Lab) -> Vec<String> {
    let out = lab.meshctl(&["probes", "-o", "json"]);
    assert!(
        out.status.success(),
        "meshctl probes failed:\n{}",
        text(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("probes JSON");
    let mut names: Vec<String> = v
        .as_array()
        .expect("a list of probes")
        .iter()
        .filter(|p| p["connected"] == Value::Bool(true))
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or_default()
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn up_baseline_idempotent_up_and_clean_down() {
    let Some(lab) = Lab::take() else { return };
    let took = lab.bring_up();
    assert!(
        took < Duration::from_secs(10),
        "bring-up took {took:?} (target: under 5 s)"
    );

    assert_baseline("after lab up");
    assert_eq!(
        connected_probes(&lab),
        ["cloudvm-1", "node-1", "node-2", "node-3"]
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(lab.config()).expect("client config written"))
            .expect("config JSON");
    assert_eq!(config["coordinator"], "https://198.18.255.1:7443");
    assert_eq!(config["written_by"], "lab");

    let status = lab.status();
    assert_eq!(status["state"], "up", "{status:#}");
    assert_eq!(status["fault"], Value::Null);
    let pids: Vec<i64> = status["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .map(|p| p["pid"].as_i64().expect("pid"))
        .collect();
    // DNS ×2, web, API server, a pause process per pod ×3, coordinator, probes ×4.
    assert_eq!(pids.len(), 12, "{status:#}");
    assert!(pids.iter().all(|p| alive(*p)));

    let again = lab.meshctl(&["lab", "up"]);
    assert!(
        again.status.success(),
        "second up failed:\n{}",
        text(&again)
    );
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already up"),
        "{}",
        text(&again)
    );
    assert_eq!(
        lab.status()["processes"],
        status["processes"],
        "a second up must not restart anything"
    );

    let down = lab.meshctl(&["lab", "down"]);
    assert!(down.status.success(), "lab down failed:\n{}", text(&down));
    for ns in LAB_NAMESPACES {
        assert!(
            !Path::new("/run/netns").join(ns).exists(),
            "{ns} survived lab down"
        );
        assert!(
            !Path::new("/etc/netns").join(ns).exists(),
            "/etc/netns/{ns} survived lab down"
        );
    }
    assert!(
        !Path::new("/sys/class/net/mesh-host").exists(),
        "the host veth survived lab down"
    );
    let host_links = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip link");
    assert!(!String::from_utf8_lossy(&host_links.stdout).contains("mesh-host"));
    let routes = Command::new("ip")
        .args(["route", "show", "198.18.0.0/15"])
        .output()
        .expect("ip route");
    assert!(
        String::from_utf8_lossy(&routes.stdout).trim().is_empty(),
        "the lab route survived"
    );
    std::thread::sleep(Duration::from_millis(100));
    let survivors: Vec<&i64> = pids.iter().filter(|p| alive(**p)).collect();
    assert!(
        survivors.is_empty(),
        "lab processes survived lab down: {survivors:?}"
    );
    assert!(
        !Path::new(STATE_DIR).exists(),
        "the state directory survived lab down"
    );
    assert!(
        !lab.config().exists(),
        "the client configuration written by the lab survived lab down"
    );

    let second = lab.meshctl(&["lab", "down"]);
    assert!(
        second.status.success(),
        "second lab down failed:\n{}",
        text(&second)
    );
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("nothing to remove"),
        "{}",
        text(&second)
    );
    assert_eq!(lab.status()["state"], "down");
}

#[test]
fn down_and_up_recover_from_a_half_built_lab() {
    let Some(lab) = Lab::take() else { return };
    // What a crash half-way through `up` can leave: some namespaces, the host link.
    for args in [
        vec!["netns", "add", "mesh-node-2"],
        vec!["netns", "add", "mesh-fabric"],
        vec![
            "link",
            "add",
            "mesh-host",
            "type",
            "veth",
            "peer",
            "name",
            "host",
            "netns",
            "mesh-fabric",
        ],
    ] {
        let out = Command::new("ip").args(&args).output().expect("ip");
        assert!(out.status.success(), "ip {args:?}: {}", text(&out));
    }
    let status = lab.status();
    assert_eq!(status["state"], "partial", "{status:#}");
    lab.bring_up();
    assert_baseline("up over a half-built lab");
    let down = lab.meshctl(&["lab", "down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(
        LAB_NAMESPACES
            .iter()
            .all(|ns| !Path::new("/run/netns").join(ns).exists())
    );
}

#[test]
fn fault_catalogue_lists_every_fault_and_refuses_unknown_names() {
    let Some(lab) = Lab::take() else { return };
    let out = lab.meshctl(&["lab", "fault", "--list", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "icmp-blocked",
            "route-missing",
            "app-down",
            "listen-loopback",
            "port-filtered",
            "mtu-blackhole",
            "dns-down",
            "pod-dns-config",
            "kube-proxy-missing",
            "dual-ip",
            "conntrack-full",
            "packet-loss",
            "backlog-full",
            "ports-exhausted"
        ]
    );
    for f in list.as_array().expect("list") {
        assert!(f["symptom"].as_str().is_some_and(|s| !s.is_empty()), "{f}");
        assert!(
            f["probe"]["from"].is_string()
                && f["probe"]["to"].is_string()
                && f["probe"]["size"].is_u64(),
            "{f}"
        );
        assert!(f["expect"]["class"].is_string(), "{f}");
    }
    let mtu = &list[5];
    assert_eq!(mtu["probe"]["to"], "nodeport:30080");
    assert_eq!(mtu["probe"]["size"], 1472);
    assert_eq!(mtu["expect"]["class"], "mtu_blackhole");

    let bad = lab.meshctl(&["lab", "fault", "mtu-black-hole"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("unknown fault 'mtu-black-hole'") && stderr.contains("mtu-blackhole"),
        "{stderr}"
    );

    let not_up = lab.meshctl(&["lab", "fault", "app-down"]);
    assert!(
        !not_up.status.success(),
        "a fault without a lab must fail:\n{}",
        text(&not_up)
    );
    assert!(
        String::from_utf8_lossy(&not_up.stderr).contains("lab up"),
        "{}",
        text(&not_up)
    );
}

/// Brings the lab up, injects `name`, runs `symptom` (which panics with
/// what it saw when the symptom is missing), clears, and checks the baseline.
fn fault_scenario(name: &str, symptom: impl FnOnce()) {
    let Some(lab) = Lab::take() else { return };
    lab.bring_up();
    lab.fault(name);
    assert_eq!(lab.status()["fault"], name);
    symptom();
    lab.clear();
    assert_eq!(lab.status()["fault"], Value::Null);
    assert_baseline(&format!("after clearing {name}"));
    assert_eq!(
        connected_probes(&lab),
        ["cloudvm-1", "node-1", "node-2", "node-3"],
        "probes after {name}"
    );
}

#[test]
fn fault_icmp_blocked() {
    fault_scenario("icmp-blocked", || {
        assert!(
            !ping("mesh-cloudvm-1", "198.18.0.12"),
            "node-2 still answers ping"
        );
        assert!(
            tcp_connect("mesh-cloudvm-1", "198.18.0.12", 30080),
            "TCP to node-2 must still work"
        );
        assert!(
            ping("mesh-cloudvm-1", "198.18.0.11"),
            "node-1 must still answer ping"
        );
    });
}

#[test]
fn fault_route_missing() {
    fault_scenario("route-missing", || {
        assert!(
            !ping("mesh-pod-client-3", "198.19.2.10"),
            "client-3 still reaches web-0"
        );
        assert!(
            !ping("mesh-node-3", "198.19.2.10"),
            "node-3 still reaches web-0"
        );
        assert!(
            ping("mesh-pod-client-3", "198.19.1.53"),
            "client-3 must still reach node-1's pod"
        );
        assert!(
            ping("mesh-node-3", "198.18.0.12"),
            "node-3 must still reach node-2 itself"
        );
    });
}

#[test]
fn fault_app_down() {
    fault_scenario("app-down", || {
        assert!(
            ping("mesh-node-1", "198.19.2.10"),
            "web-0 must still answer ping"
        );
        assert!(
            !tcp_connect("mesh-node-1", "198.19.2.10", 8080),
            "something still listens on 8080"
        );
        assert!(
            !tcp_connect("mesh-cloudvm-1", "198.18.0.11", 30080),
            "the NodePort still connects"
        );
        // Refused, not filtered: the connection attempt ends at once.
        let started = std::time::Instant::now();
        assert!(!in_ns(
            "mesh-pod-client-3",
            "exec 3<>/dev/tcp/198.18.200.80/80"
        ));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "expected an immediate RST"
        );
    });
}

#[test]
fn fault_listen_loopback() {
    fault_scenario("listen-loopback", || {
        assert!(
            !tcp_connect("mesh-node-1", "198.19.2.10", 8080),
            "8080 still reachable from outside the pod"
        );
        assert!(
            tcp_connect("mesh-pod-web-0", "127.0.0.1", 8080),
            "the app must listen on loopback"
        );
        assert!(in_ns(
            "mesh-pod-web-0",
            "ss -ltn | grep -q '127.0.0.1:8080'"
        ));
    });
}

#[test]
fn fault_port_filtered() {
    fault_scenario("port-filtered", || {
        assert!(
            ping("mesh-cloudvm-1", "198.18.0.12"),
            "node-2 must still answer ping"
        );
        let started = std::time::Instant::now();
        assert!(
            !tcp_connect("mesh-cloudvm-1", "198.18.0.12", 30080),
            "NodePort on node-2 still connects"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "a filtered port times out, no RST"
        );
        assert!(
            tcp_connect("mesh-cloudvm-1", "198.18.0.11", 30080),
            "NodePort on node-1 must still work"
        );
    });
}

#[test]
fn fault_mtu_blackhole() {
    fault_scenario("mtu-blackhole", || {
        assert!(
            ping_df("mesh-cloudvm-1", "198.18.0.12", 56),
            "small DF pings must pass"
        );
        assert!(
            !ping_df("mesh-cloudvm-1", "198.18.0.12", 1472),
            "1500-byte DF pings still pass"
        );
        assert!(
            ping_df("mesh-cloudvm-1", "198.18.0.12", 1412),
            "1440-byte DF pings must pass: the path MTU is 1440"
        );
        assert!(
            !ping_df("mesh-cloudvm-1", "198.18.0.12", 1413),
            "1441-byte DF pings pass: the path MTU is above 1440"
        );
        assert!(
            !in_ns(
                "mesh-cloudvm-1",
                "ping -c 1 -W 1 -M do -s 1472 198.18.0.12 2>&1 | grep -qi 'frag needed\\|message too long'"
            ),
            "an ICMP frag-needed came back"
        );
        assert!(
            tcp_connect("mesh-cloudvm-1", "198.18.0.11", 30080),
            "the TCP handshake must work"
        );
        assert!(
            http_post("mesh-cloudvm-1", "198.18.0.11", 30080, 0),
            "a small request must work"
        );
        assert!(
            !http_post("mesh-cloudvm-1", "198.18.0.11", 30080, 200_000),
            "a 200 kB upload (full-size segments) still gets through"
        );
        assert!(
            in_ns("mesh-cloudvm-1", "ip link show eth0 | grep -q 'mtu 1500'"),
            "cloudvm-1 keeps MTU 1500"
        );
    });
}

#[test]
fn fault_dns_down() {
    fault_scenario("dns-down", || {
        assert!(
            !dig(
                "mesh-pod-client-3",
                "198.18.200.10",
                "web.default.svc.cluster.local"
            ),
            "cluster DNS still answers"
        );
        assert!(
            dig("mesh-pod-client-3", "198.18.0.1", "upstream.lab.test"),
            "upstream DNS must answer"
        );
        assert!(
            http_post("mesh-pod-client-3", "198.18.200.80", 80, 0),
            "IPs must still work"
        );
    });
}

#[test]
fn fault_pod_dns_config() {
    fault_scenario("pod-dns-config", || {
        assert!(
            !resolves_with_resolv_conf(
                "mesh-pod-client-3",
                "web.default.svc.cluster.local",
                "198.18.200.80"
            ),
            "client-3 still resolves with its resolv.conf"
        );
        assert!(
            dig(
                "mesh-pod-client-3",
                "198.18.200.10",
                "web.default.svc.cluster.local"
            ),
            "cluster DNS must answer"
        );
        assert!(
            resolves_with_resolv_conf(
                "mesh-pod-web-0",
                "web.default.svc.cluster.local",
                "198.18.200.80"
            ),
            "other pods must still resolve"
        );
    });
}

#[test]
fn fault_kube_proxy_missing() {
    fault_scenario("kube-proxy-missing", || {
        let started = std::time::Instant::now();
        assert!(
            !dig(
                "mesh-pod-client-3",
                "198.18.200.10",
                "web.default.svc.cluster.local"
            ),
            "client-3 still reaches cluster DNS"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "expected a timeout, not a refusal"
        );
        assert!(
            dig("mesh-pod-client-3", "198.18.0.1", "upstream.lab.test"),
            "upstream DNS must answer"
        );
        assert!(
            dig(
                "mesh-pod-web-0",
                "198.18.200.10",
                "web.default.svc.cluster.local"
            ),
            "pods on node-2 must resolve"
        );
        assert!(
            !in_ns(
                "mesh-node-3",
                "iptables-save -t nat | grep -q KUBE-SERVICES"
            ),
            "node-3 still has kube-proxy rules"
        );
        // The scheduler's view, through the lab's Kubernetes API.
        let pod = kubectl_json(&[
            "get",
            "pod",
            "-n",
            "kube-system",
            "kube-proxy-node3",
            "-o",
            "json",
        ]);
        assert_eq!(pod["status"]["phase"], "Pending", "{pod:#}");
        assert_eq!(
            pod["status"]["conditions"][0]["reason"], "Unschedulable",
            "{pod:#}"
        );
        assert!(pod["spec"]["priorityClassName"].is_null(), "{pod:#}");
    });
}

#[test]
fn fault_dual_ip() {
    fault_scenario("dual-ip", || {
        assert!(
            ping("mesh-node-3", "198.18.0.12"),
            "node-3 must still reach node-2"
        );
        assert!(
            !ping("mesh-node-3", "198.19.2.10"),
            "node-3 still reaches web-0 over the overlay"
        );
        assert!(
            !tcp_connect("mesh-node-3", "198.18.200.80", 80),
            "node-3 still reaches the ClusterIP"
        );
        assert!(in_ns(
            "mesh-node-3",
            "ip -d link show flannel.1 | grep -q 'local 198.18.0.23'"
        ));
        assert!(
            in_ns(
                "mesh-node-2",
                "iptables -L VXLAN-PEERS -v -n -x | grep DROP | awk '{exit !($1 > 0)}'"
            ),
            "node-2 must have dropped VXLAN from the unregistered address"
        );
    });
}

#[test]
fn fault_conntrack_full() {
    fault_scenario("conntrack-full", || {
        assert!(
            in_ns(
                "mesh-node-2",
                "test $(cat /proc/sys/net/netfilter/nf_conntrack_count) -ge $(cat /proc/sys/net/netfilter/nf_conntrack_max)"
            ),
            "node-2's conntrack table is not full"
        );
        assert!(
            !ping("mesh-cloudvm-1", "198.18.0.12"),
            "node-2 still accepts new flows"
        );
        assert!(
            !tcp_connect("mesh-cloudvm-1", "198.18.0.12", 30080),
            "node-2 still accepts new connections; its table now: {}",
            text(&ns_output(
                "mesh-node-2",
                &["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]
            ))
        );
        assert!(
            ping("mesh-cloudvm-1", "198.18.0.11"),
            "node-1 must be unaffected"
        );
    });
}

#[test]
fn fault_packet_loss() {
    fault_scenario("packet-loss", || {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                "mesh-cloudvm-1",
                "ping",
                "-c",
                "200",
                "-i",
                "0.005",
                "-W",
                "1",
                "-q",
                "198.18.0.12",
            ])
            .output()
            .expect("ping");
        let summary = String::from_utf8_lossy(&out.stdout);
        let received: u32 = summary
            .split(", ")
            .find_map(|part| part.strip_suffix(" received"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ping summary:\n{summary}"));
        // 20% loss: P(received outside 125..=185 of 200) is far below 1e-6.
        assert!(
            (125..=185).contains(&received),
            "received {received} of 200:\n{summary}"
        );
        assert!(
            in_ns(
                "mesh-cloudvm-1",
                "ping -c 50 -i 0.005 -W 1 -q 198.18.0.11 | grep -q ' 0% packet loss'"
            ),
            "node-1 must be clean"
        );
    });
}

#[test]
fn fault_backlog_full_and_ports_exhausted() {
    fault_scenario("backlog-full", || {
        let stalled = !tcp_connect("mesh-node-1", "198.19.2.10", 8080);
        assert!(stalled, "a new connection to the stalled app must time out");
    });
    fault_scenario("ports-exhausted", || {
        let refused = !tcp_connect("mesh-node-1", "198.19.2.10", 8080);
        assert!(refused, "node-1 has no port left to connect from");
        let others = tcp_connect("mesh-node-3", "198.19.2.10", 8080);
        assert!(others, "other nodes must connect");
    });
}

#[test]
fn demo_reproduces_reference_incident_2() {
    let Some(lab) = Lab::take() else { return };
    // The diagnosis step writes its captures under ./captures.
    let cwd = tempfile::tempdir().expect("tempdir");
    let out = lab
        .command(&["lab", "demo"])
        .current_dir(cwd.path())
        .output()
        .expect("running meshctl lab demo");
    assert!(out.status.success(), "lab demo failed:\n{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("lab up in "), "{stdout}");
    assert!(
        stdout.contains("Reference incident 2 reproduced"),
        "{stdout}"
    );
    assert!(
        stdout.contains("meshctl ping --from cloudvm-1 198.18.0.12 -s 1472 -M do -c 3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("meshctl tcping --from cloudvm-1 198.18.0.11:30080 -c 3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("meshctl probe --from cloudvm-1 --to nodeport:30080 --size 1472"),
        "{stdout}"
    );
    assert!(stdout.contains("VERDICT  mtu_blackhole"), "{stdout}");
    let runs: Vec<_> = std::fs::read_dir(cwd.path().join("captures"))
        .expect("the diagnosis saved its captures under ./captures")
        .flatten()
        .collect();
    assert_eq!(runs.len(), 1, "one run directory: {runs:?}");
    assert!(runs[0].path().join("merged.pcapng").exists(), "{runs:?}");
    assert_eq!(lab.status()["fault"], "mtu-blackhole");
}
