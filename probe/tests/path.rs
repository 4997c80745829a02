//! Lab tests of the path tasks (pmtu, trace), as root, in namespaces of
//! their own: a chain A — R — B (veth pairs, R forwards) whose R→B link has
//! MTU 1400. Each test builds its own chain (`mesh-t4x-<tag>-{a,r,b}`,
//! addresses in 198.18.0.0/15), runs the task with
//! `mesh_probe::tasks::run_task` on a thread that entered namespace A, and
//! compares with `tracepath -n` / `mtr -r -n` run in the same namespace.
//! The namespaces are removed by a guard, also on failure. The tests fail
//! when they cannot run (not root, no `ip`); they skip only when
//! `MESH_SKIP_NETNS=1`.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mesh_probe::tasks::run_task;
use nix::sched::{CloneFlags, setns};
use probemesh_proto::pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A's address on the A–R link.
const A: &str = "198.18.41.2";
/// R's address on the A–R link (A's gateway).
const R_A: &str = "198.18.41.1";
/// R's address on the R–B link (B's gateway).
const R_B: &str = "198.19.41.1";
/// B's address.
const B: &str = "198.19.41.2";
/// MTU of the R–B link.
const NARROW_MTU: u32 = 1400;

fn skip() -> bool {
    let skip = std::env::var("MESH_SKIP_NETNS").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("MESH_SKIP_NETNS=1: skipping a namespace test");
    }
    skip
}

/// Runs a command, panicking with its output when it fails.
fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The three namespaces of one test; removed on drop.
struct Chain {
    a: String,
    r: String,
    b: String,
}

impl Chain {
    fn new(tag: &str) -> Self {
        let name = |n: &str| format!("mesh-t4x-{tag}-{n}");
        let chain = Chain {
            a: name("a"),
            r: name("r"),
            b: name("b"),
        };
        for ns in [&chain.a, &chain.r, &chain.b] {
            // Left over from an aborted run: start clean.
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for ns in [&chain.a, &chain.r, &chain.b] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let (a, r, b) = (chain.a.as_str(), chain.r.as_str(), chain.b.as_str());
        sh(&[
            "ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "toa", "netns", r,
        ]);
        sh(&[
            "ip", "-n", b, "link", "add", "eth0", "type", "veth", "peer", "name", "tob", "netns", r,
        ]);
        let mtu = NARROW_MTU.to_string();
        sh(&["ip", "-n", r, "link", "set", "tob", "mtu", &mtu]);
        sh(&["ip", "-n", b, "link", "set", "eth0", "mtu", &mtu]);
        for (ns, dev, addr) in [
            (a, "eth0", format!("{A}/24")),
            (r, "toa", format!("{R_A}/24")),
            (r, "tob", format!("{R_B}/24")),
            (b, "eth0", format!("{B}/24")),
        ] {
            sh(&["ip", "-n", ns, "addr", "add", &addr, "dev", dev]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        sh(&["ip", "-n", a, "route", "add", "default", "via", R_A]);
        sh(&["ip", "-n", b, "route", "add", "default", "via", R_B]);
        sh(&[
            "ip",
            "netns",
            "exec",
            r,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        chain
    }

    /// Output of `args` run inside namespace `ns` (bounded by `timeout 60`).
    fn exec(ns: &str, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", ns, "timeout", "60"];
        full.extend_from_slice(args);
        sh(&full)
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for ns in [&self.a, &self.r, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Runs `kind` with `run_task` on a thread inside namespace `ns`; returns
/// the result and the progress events.
fn run_in(ns: &str, kind: pb::task::Kind) -> (pb::TaskResult, Vec<pb::TaskProgress>) {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (tx, mut rx) = mpsc::channel(4096);
            let task = pb::Task {
                task_id: "path-test".into(),
                kind: Some(kind),
                ..Default::default()
            };
            let result = tokio::time::timeout(
                Duration::from_secs(120),
                run_task(task, tx, CancellationToken::new()),
            )
            .await
            .expect("task did not finish in 120 s");
            let mut progress = Vec::new();
            while let Ok(p) = rx.try_recv() {
                progress.push(p);
            }
            (result, progress)
        })
    })
    .join()
    .expect("task thread panicked")
}

fn pmtu(ns: &str, target: &str) -> pb::PmtuResult {
    let (result, _) = run_in(
        ns,
        pb::task::Kind::Pmtu(pb::PmtuTask {
            target: target.into(),
            timeout_us: 300_000,
            attempts: 2,
            ..Default::default()
        }),
    );
    match result.outcome {
        Some(pb::task_result::Outcome::Pmtu(r)) => r,
        other => panic!("pmtu failed: {other:?}"),
    }
}

fn trace(
    ns: &str,
    mode: pb::trace_task::Mode,
    port: u32,
) -> (pb::TraceResult, Vec<pb::TaskProgress>) {
    let (result, progress) = run_in(
        ns,
        pb::task::Kind::Trace(pb::TraceTask {
            target: B.into(),
            mode: mode.into(),
            port,
            count: 3,
            max_hops: 10,
            interval_us: 100_000,
            timeout_us: 1_000_000,
        }),
    );
    match result.outcome {
        Some(pb::task_result::Outcome::Trace(r)) => (r, progress),
        other => panic!("trace failed: {other:?}"),
    }
}

fn hosts(result: &pb::TraceResult) -> Vec<String> {
    result.hops.iter().map(|h| h.host.clone()).collect()
}

/// The pmtu of `tracepath -n`'s `Resume: pmtu N ...` line.
fn tracepath_pmtu(output: &str) -> u32 {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Resume: pmtu "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Resume line in tracepath output:\n{output}"))
}

/// The hosts of `mtr -r -n`'s hop lines (`  1.|-- 198.18.41.1  0.0% ...`).
fn mtr_hosts(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.split_once(".|-- "))
        .filter_map(|(_, rest)| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn pmtu_finds_the_narrow_link_like_tracepath() {
    if skip() {
        return;
    }
    let chain = Chain::new("pm");
    let result = pmtu(&chain.a, B);
    assert_eq!(result.path_mtu, NARROW_MTU, "{result:#?}");
    assert_eq!(
        (result.interface.as_str(), result.interface_mtu),
        ("eth0", 1500)
    );
    assert!(!result.blackhole, "{result:#?}");
    assert_eq!(result.frag_needed_mtu, NARROW_MTU);
    assert!(
        [R_A, R_B].contains(&result.frag_needed_from.as_str()),
        "{result:#?}"
    );
    assert_eq!(result.steps[0].outcome, "frag_needed");
    let tracepath = Chain::exec(&chain.a, &["tracepath", "-n", B]);
    assert_eq!(
        result.path_mtu,
        tracepath_pmtu(&tracepath),
        "tracepath said:\n{tracepath}"
    );
    // A clean path: the search settles in one size.
    let clean = pmtu(&chain.a, R_A);
    assert_eq!(
        (clean.path_mtu, clean.blackhole, clean.steps.len()),
        (1500, false, 1)
    );
}

#[test]
fn pmtu_reports_a_black_hole_when_frag_needed_is_dropped() {
    if skip() {
        return;
    }
    let chain = Chain::new("bh");
    Chain::exec(
        &chain.r,
        &[
            "iptables",
            "-A",
            "OUTPUT",
            "-p",
            "icmp",
            "--icmp-type",
            "fragmentation-needed",
            "-j",
            "DROP",
        ],
    );
    let result = pmtu(&chain.a, B);
    assert!(result.blackhole, "{result:#?}");
    assert_eq!(
        (result.path_mtu, result.interface_mtu),
        (NARROW_MTU, 1500),
        "{result:#?}"
    );
    assert_eq!(result.frag_needed_from, "");
    assert_eq!(result.steps[0].outcome, "lost");
}

#[test]
fn pmtu_of_an_unreachable_target_is_zero() {
    if skip() {
        return;
    }
    let chain = Chain::new("un");
    // Nothing answers on B's link beyond B itself.
    let result = pmtu(&chain.a, "198.19.41.99");
    assert_eq!(
        (result.path_mtu, result.blackhole),
        (0, false),
        "{result:#?}"
    );
}

#[test]
fn icmp_trace_lists_the_hops_mtr_lists() {
    if skip() {
        return;
    }
    let chain = Chain::new("ti");
    let (result, progress) = trace(&chain.a, pb::trace_task::Mode::Icmp, 0);
    assert!(result.reached, "{result:#?}");
    assert_eq!(hosts(&result), [R_A, B]);
    assert_eq!(result.mode, "icmp");
    assert_eq!(progress.len(), 3, "one progress event per round");
    for hop in &result.hops {
        assert_eq!((hop.sent, hop.received), (3, 3), "{hop:?}");
        assert!(
            hop.best_ms <= hop.avg_ms && hop.avg_ms <= hop.worst_ms,
            "{hop:?}"
        );
    }
    assert_eq!(result.loss_from_hop, 0);
    assert_eq!(
        result.reading,
        ["no loss at the destination: the path is clean"]
    );
    let mtr = Chain::exec(&chain.a, &["mtr", "-r", "-n", "-c", "3", B]);
    assert_eq!(hosts(&result), mtr_hosts(&mtr), "mtr said:\n{mtr}");
}

#[test]
fn udp_trace_reaches_the_destination() {
    if skip() {
        return;
    }
    let chain = Chain::new("tu");
    let (result, _) = trace(&chain.a, pb::trace_task::Mode::Udp, 0);
    assert!(result.reached, "{result:#?}");
    assert_eq!(hosts(&result), [R_A, B]);
    assert_eq!(result.mode, "udp");
}

/// A TCP listener on B:`port` on a thread inside namespace `ns`, accepting
/// until dropped (at most 120 s).
struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start(ns: &str, port: u16) -> Self {
        let path = format!("/run/netns/{ns}");
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
            let b: Ipv4Addr = B.parse().expect("B");
            let listener = TcpListener::bind(SocketAddrV4::new(b, port)).expect("listen on B");
            listener.set_nonblocking(true).expect("nonblocking");
            ready_tx.send(()).expect("ready");
            let start = Instant::now();
            while !flag.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(120) {
                match listener.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("listener thread did not start");
        Listener {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn tcp_trace_reaches_a_listener_and_a_closed_port() {
    if skip() {
        return;
    }
    let chain = Chain::new("tt");
    let _listener = Listener::start(&chain.b, 8080);
    let (open, _) = trace(&chain.a, pb::trace_task::Mode::Tcp, 8080);
    assert!(open.reached, "{open:#?}");
    assert_eq!(hosts(&open), [R_A, B]);
    let (closed, _) = trace(&chain.a, pb::trace_task::Mode::Tcp, 8081);
    assert!(closed.reached, "an RST is an answer too: {closed:#?}");
    assert_eq!(hosts(&closed), [R_A, B]);
}
