//! The capture task end to end, as root: `mesh_probe::tasks::run_task_with`
//! runs a `pb::Task { kind: Capture, netns: B }` while namespace A pings B.
//! Two namespaces `mesh-t5t-<pid>-<tag>-{a,b}` joined by a veth
//! (198.18.57.1/30 in A, 198.18.57.2/30 in B), deleted by a Drop guard.
//! The captured interface exists only in B, so every passing capture shows
//! that the engine's thread inherited the namespace of the task's thread.
//! Files are read back with tshark. Skips only with MESH_SKIP_NETNS=1.

use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_probe::capture::{ArmSignal, Told};
use mesh_probe::platform::Timestamp;
use mesh_probe::tasks::capture::capture_dir;
use mesh_probe::tasks::{TaskContext, run_task_with};
use probemesh_packet::bpf::compile_filter;
use probemesh_proto::pb;
use probemesh_proto::pb::task_progress::Event;
use probemesh_proto::pb::task_result::Outcome;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const ADDR_A: &str = "198.18.57.1";
const ADDR_B: &str = "198.18.57.2";
const PROBE: &str = "probe-b";

fn skip() -> bool {
    std::env::var("MESH_SKIP_NETNS").is_ok_and(|v| v == "1")
}

/// Runs `program args`; panics with its stderr when it fails and `check`.
fn run(program: &str, args: &[&str], check: bool) -> Output {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {program}: {e} (these tests need root, iproute2, iputils-ping and tshark)")
    });
    if check {
        assert!(
            out.status.success(),
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Namespaces A and B joined by veth-a/veth-b; deleted on drop.
struct Pair {
    a: String,
    b: String,
}

impl Pair {
    fn new(tag: &str) -> Self {
        let base = format!("mesh-t5t-{}-{tag}", std::process::id());
        let pair = Pair {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
        };
        for ns in [&pair.a, &pair.b] {
            run("ip", &["netns", "del", ns], false);
            run("ip", &["netns", "add", ns], true);
            run("ip", &["-n", ns, "link", "set", "lo", "up"], true);
        }
        run(
            "ip",
            &[
                "-n", &pair.a, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b",
                "netns", &pair.b,
            ],
            true,
        );
        for (ns, dev, addr) in [(&pair.a, "veth-a", ADDR_A), (&pair.b, "veth-b", ADDR_B)] {
            let cidr = format!("{addr}/30");
            run("ip", &["-n", ns, "addr", "add", &cidr, "dev", dev], true);
            // No IPv6 chatter (router solicitations, DAD) on the link.
            let sysctl = format!("net.ipv6.conf.{dev}.disable_ipv6=1");
            run(
                "ip",
                &["netns", "exec", ns, "sysctl", "-qw", &sysctl],
                false,
            );
            run("ip", &["-n", ns, "link", "set", dev, "up"], true);
        }
        // The first ping also waits for ARP; do it before any capture.
        pair.ping(1);
        pair
    }

    /// Pings B from A `count` times, 50 ms apart; asserts every reply came.
    fn ping(&self, count: u32) {
        let count = count.to_string();
        let out = run(
            "ip",
            &[
                "netns", "exec", &self.a, "ping", "-q", "-c", &count, "-i", "0.05", "-W", "2",
                ADDR_B,
            ],
            true,
        );
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(
            summary.contains(&format!("{count} packets transmitted, {count} received")),
            "{summary}"
        );
    }

    fn netns_b(&self) -> pb::NetnsRef {
        pb::NetnsRef {
            target: Some(pb::netns_ref::Target::Path(format!(
                "/run/netns/{}",
                self.b
            ))),
            label: "test namespace B".into(),
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            run("ip", &["netns", "del", ns], false);
        }
    }
}

fn unix_ns() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_nanos()).expect("fits")
}

/// A capture of ICMP on `interfaces` of B, headers only.
fn capture_task(pair: &Pair, id: &str, interfaces: &[&str], duration: Duration) -> pb::Task {
    let filter = compile_filter("icmp", 128).expect("filter compiles");
    let pack = |p: &[probemesh_packet::bpf::BpfInsn]| p.iter().map(|i| i.to_wire()).collect();
    pb::Task {
        task_id: id.into(),
        run_id: "t5t".into(),
        netns: Some(pair.netns_b()),
        kind: Some(pb::task::Kind::Capture(pb::CaptureTask {
            interfaces: interfaces.iter().map(|s| (*s).to_owned()).collect(),
            filter_expr: filter.expr.clone(),
            filter_ethernet: pack(&filter.ethernet),
            filter_raw_ip: pack(&filter.raw_ip),
            duration_us: u64::try_from(duration.as_micros()).expect("fits"),
            clock_note: "offset +0 us (test)".into(),
            progress_interval_ms: 100,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A task id unique to this test process and `tag`.
fn task_id(tag: &str) -> String {
    format!("t5t-{}-{tag}", std::process::id())
}

/// Files of the capture directory whose name mentions `id` (the final
/// file and the engine's partial one both do).
fn leftovers(id: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(capture_dir()) else {
        return Vec::new();
    };
    entries
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(id))
        .collect()
}

/// A running task: its progress and its result.
struct Running {
    progress: mpsc::Receiver<pb::TaskProgress>,
    result: tokio::task::JoinHandle<pb::TaskResult>,
}

fn start(task: pb::Task, cancel: CancellationToken) -> Running {
    start_stoppable(task, cancel, CancellationToken::new())
}

/// [`start`], with the token a coordinator's `StopTask` fires.
fn start_stoppable(task: pb::Task, cancel: CancellationToken, stop: CancellationToken) -> Running {
    start_in(
        task,
        cancel,
        TaskContext {
            probe_name: PROBE.into(),
            stop,
            arm: ArmSignal::default(),
        },
    )
}

/// [`start`], with the context a link gives the task.
fn start_in(task: pb::Task, cancel: CancellationToken, context: TaskContext) -> Running {
    let (tx, progress) = mpsc::channel(64);
    let result = tokio::spawn(run_task_with(context, task, tx, cancel));
    Running { progress, result }
}

impl Running {
    /// Waits for the `CaptureArmed` event, which must come first.
    async fn armed(&mut self) -> pb::CaptureArmed {
        let event = tokio::time::timeout(Duration::from_secs(10), self.progress.recv())
            .await
            .expect("armed within 10 s")
            .expect("an event before the end");
        match event.event {
            Some(Event::CaptureArmed(armed)) => armed,
            other => panic!("the first event is not CaptureArmed: {other:?}"),
        }
    }

    /// The remaining events and the result.
    async fn finish(mut self) -> (Vec<Event>, pb::TaskResult) {
        tokio::time::timeout(Duration::from_secs(30), async move {
            let mut events = Vec::new();
            while let Some(p) = self.progress.recv().await {
                events.extend(p.event);
            }
            (events, self.result.await.expect("task did not panic"))
        })
        .await
        .expect("task ended within 30 s")
    }
}

fn error_of(result: &pb::TaskResult) -> &pb::TaskError {
    match &result.outcome {
        Some(Outcome::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_task_in_a_namespace_streams_a_checksummed_pcapng() {
    if skip() {
        return;
    }
    let pair = Pair::new("icmp");
    let id = task_id("icmp");
    let mut running = start(
        capture_task(&pair, &id, &["veth-b"], Duration::from_secs(3)),
        CancellationToken::new(),
    );
    let armed = running.armed().await;
    assert_eq!(armed.interfaces.len(), 1);
    assert_eq!(armed.interfaces[0].interface, "veth-b");
    assert!(
        (1..2_000_000).contains(&armed.ring_open_us),
        "the set-up time is measured: {} us",
        armed.ring_open_us
    );
    assert_eq!(
        armed.ready_margin_us, None,
        "no instant asked: no margin to it"
    );
    pair.ping(10);
    let (events, result) = running.finish().await;

    // Running totals first, then the file, in order.
    let first_chunk = events
        .iter()
        .position(|e| matches!(e, Event::ArtifactChunk(_)))
        .expect("at least one chunk");
    let (totals, chunks) = events.split_at(first_chunk);
    assert!(!totals.is_empty(), "no CaptureProgress before the file");
    let totals: Vec<&pb::CaptureProgress> = totals
        .iter()
        .map(|e| match e {
            Event::CaptureProgress(p) => p,
            other => panic!("unexpected event before the file: {other:?}"),
        })
        .collect();
    let last = totals.last().expect("one at least");
    assert_eq!((last.packets, last.drops), (20, 0), "{last:?}");
    let mut file = Vec::new();
    for chunk in chunks {
        let Event::ArtifactChunk(chunk) = chunk else {
            panic!("an event among the chunks: {chunk:?}");
        };
        assert_eq!(chunk.name, format!("{PROBE}.pcapng"));
        assert_eq!(chunk.offset, file.len() as u64, "chunks in order");
        assert!(!chunk.data.is_empty() && chunk.data.len() <= 64 * 1024);
        assert_eq!(chunk.sha256, Sha256::digest(&chunk.data).to_vec());
        file.extend_from_slice(&chunk.data);
    }

    let Some(Outcome::Capture(capture)) = result.outcome else {
        panic!("not a capture result: {result:?}");
    };
    assert_eq!(capture.stop(), pb::CaptureStop::Duration);
    assert_eq!(capture.snaplen, 128);
    let artifact = capture.artifact.expect("artifact info");
    assert_eq!(artifact.name, format!("{PROBE}.pcapng"));
    assert_eq!(artifact.size_bytes, file.len() as u64);
    assert_eq!(artifact.sha256, Sha256::digest(&file).to_vec());
    let stats = &capture.interfaces[0];
    assert_eq!(
        (stats.interface.as_str(), stats.packets_written),
        ("veth-b", 20)
    );
    assert_eq!(stats.armed_unix_ns, armed.interfaces[0].armed_unix_ns);
    assert!(capture.ended_unix_ns > stats.armed_unix_ns);
    assert!(leftovers(&id).is_empty(), "local file not deleted");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(&artifact.name);
    std::fs::write(&path, &file).expect("write");
    let out = run(
        "tshark",
        &[
            "-r",
            path.to_str().expect("utf-8"),
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "icmp.type",
        ],
        true,
    );
    let rows: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(rows.len(), 20, "{rows:?}");
    assert_eq!(
        rows.iter().filter(|r| *r == "probe-b/veth-b\t8").count(),
        10
    );
    assert_eq!(
        rows.iter().filter(|r| *r == "probe-b/veth-b\t0").count(),
        10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_interface_is_invalid_input_naming_it_and_the_namespace_s() {
    if skip() {
        return;
    }
    let pair = Pair::new("unknown");
    let id = task_id("unknown");
    let running = start(
        capture_task(&pair, &id, &["eth9"], Duration::from_secs(1)),
        CancellationToken::new(),
    );
    let (events, result) = running.finish().await;
    assert!(events.is_empty(), "{events:?}");
    let error = error_of(&result);
    assert_eq!(error.kind(), pb::task_error::Kind::InvalidInput);
    assert_eq!(
        error.message, "no interface 'eth9' in this network namespace (it has: lo, veth-b)",
        "the list is B's own"
    );
    assert!(leftovers(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_capture_ends_cancelled_and_leaves_no_file() {
    if skip() {
        return;
    }
    let pair = Pair::new("cancel");
    let id = task_id("cancel");
    let cancel = CancellationToken::new();
    let mut running = start(
        capture_task(&pair, &id, &["veth-b"], Duration::from_secs(20)),
        cancel.clone(),
    );
    running.armed().await;
    pair.ping(3);
    assert!(!leftovers(&id).is_empty(), "the capture writes its file");
    cancel.cancel();
    let started = std::time::Instant::now();
    let (events, result) = running.finish().await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::ArtifactChunk(_))),
        "no file streamed"
    );
    let error = error_of(&result);
    assert_eq!(error.kind(), pb::task_error::Kind::Cancelled);
    assert!(
        error.message.starts_with("capture cancelled; "),
        "{}",
        error.message
    );
    assert!(leftovers(&id).is_empty(), "{:?}", leftovers(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_capture_ends_early_and_still_streams_its_file() {
    if skip() {
        return;
    }
    let pair = Pair::new("stop");
    let id = task_id("stop");
    let stop = CancellationToken::new();
    let mut running = start_stoppable(
        capture_task(&pair, &id, &["veth-b"], Duration::from_secs(60)),
        CancellationToken::new(),
        stop.clone(),
    );
    running.armed().await;
    pair.ping(3);
    stop.cancel();
    let (events, result) = running.finish().await;
    let streamed: usize = events
        .iter()
        .filter_map(|e| match e {
            Event::ArtifactChunk(c) => Some(c.data.len()),
            _ => None,
        })
        .sum();
    let Some(Outcome::Capture(capture)) = result.outcome else {
        panic!("not a capture result: {result:?}");
    };
    assert_eq!(capture.stop(), pb::CaptureStop::Stopped);
    assert_eq!(
        capture.interfaces[0].packets_written, 6,
        "3 requests, 3 replies"
    );
    let artifact = capture.artifact.expect("artifact info");
    assert_eq!(artifact.size_bytes, streamed as u64);
    assert!(leftovers(&id).is_empty(), "{:?}", leftovers(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_arms_at_the_instant_it_is_given() {
    if skip() {
        return;
    }
    let pair = Pair::new("arm");
    let id = task_id("arm");
    let mut task = capture_task(&pair, &id, &["veth-b"], Duration::from_millis(200));
    let arm_at = unix_ns() + 300_000_000;
    if let Some(pb::task::Kind::Capture(capture)) = &mut task.kind {
        capture.arm_at_unix_ns = arm_at;
    }
    let mut running = start(task, CancellationToken::new());
    let armed = running.armed().await;
    // Ready long before the instant (300 ms away), the ring was bound ahead
    // of it and keeps the packets stamped from it on: live from the instant
    // exactly, however late the thread woke (5.8 ms was seen on a loaded
    // 2-core CI machine when the bind was the instant).
    assert_eq!(
        armed.interfaces[0].armed_unix_ns, arm_at,
        "live from the instant asked for"
    );
    // Ready well ahead of an instant 300 ms away, and it says by how much.
    let margin_us = armed.ready_margin_us.expect("a margin to the instant");
    assert!(
        (1..300_000).contains(&margin_us),
        "ready {margin_us} us before the instant"
    );
    let (_, result) = running.finish().await;
    assert!(
        matches!(result.outcome, Some(Outcome::Capture(_))),
        "{result:?}"
    );
}

/// The clock a capture told its instant is told with.
const TOLD_CLOCK: &str = "offset +7.0 us ± 1.0 us (told)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_told_to_wait_reports_ready_then_arms_at_the_instant_told() {
    if skip() {
        return;
    }
    let pair = Pair::new("told");
    let id = task_id("told");
    let mut task = capture_task(&pair, &id, &["veth-b"], Duration::from_millis(200));
    if let Some(pb::task::Kind::Capture(capture)) = &mut task.kind {
        capture.arm_when_told = true;
    }
    let arm = ArmSignal::default();
    let context = TaskContext {
        probe_name: PROBE.into(),
        stop: CancellationToken::new(),
        arm: arm.clone(),
    };
    let mut running = start_in(task, CancellationToken::new(), context);
    let ready = tokio::time::timeout(Duration::from_secs(10), running.progress.recv())
        .await
        .expect("ready within 10 s")
        .expect("an event before the end");
    let Some(pb::task_progress::Event::CaptureReady(ready)) = ready.event else {
        panic!("expected CaptureReady first, got {ready:?}");
    };
    assert!(ready.ready_in_us > 0, "{ready:?}");
    // Waiting: nothing more until it is told.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(running.progress.try_recv().is_err(), "armed before told");
    let arm_at = unix_ns() + 50_000_000;
    arm.arm(Told {
        at: Timestamp::from_nanos(arm_at),
        clock: TOLD_CLOCK.into(),
    });
    let armed = running.armed().await;
    assert_eq!(
        armed.interfaces[0].armed_unix_ns, arm_at,
        "live from the instant told"
    );
    let margin_us = armed.ready_margin_us.expect("a margin to the instant");
    assert!(
        (1..50_000).contains(&margin_us),
        "told 50 ms ahead, ready {margin_us} us before"
    );
    let (events, result) = running.finish().await;
    assert!(
        matches!(result.outcome, Some(Outcome::Capture(_))),
        "{result:?}"
    );
    let file: Vec<u8> = events
        .into_iter()
        .filter_map(|e| match e {
            Event::ArtifactChunk(c) => Some(c.data),
            _ => None,
        })
        .flatten()
        .collect();
    let told_note = TOLD_CLOCK.as_bytes();
    assert!(
        file.windows(told_note.len()).any(|w| w == told_note),
        "the clock told with the instant is in the file's comment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arming_more_than_a_minute_ahead_is_invalid_input() {
    if skip() {
        return;
    }
    let pair = Pair::new("far");
    let id = task_id("far");
    let mut task = capture_task(&pair, &id, &["veth-b"], Duration::from_secs(1));
    if let Some(pb::task::Kind::Capture(capture)) = &mut task.kind {
        capture.arm_at_unix_ns = unix_ns() + 75_000_000_000;
    }
    let (_, result) = start(task, CancellationToken::new()).finish().await;
    let error = error_of(&result);
    assert_eq!(error.kind(), pb::task_error::Kind::InvalidInput);
    assert!(
        error.message.contains("ahead; at most 60s"),
        "{}",
        error.message
    );
}
