//! Shared helpers of the probe's namespace tests: throwaway network
//! namespaces named `mesh-t4x-<pid>-<tag>` (addresses in 198.18.0.0/15
//! only), deleted by a Drop guard even when a test fails, and a way to run
//! a task through `run_task` and collect what it reports.

#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use mesh_probe::tasks::run_task;
use probemesh_proto::pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// True when the caller asked to skip root/namespace tests.
pub fn skip() -> bool {
    std::env::var("MESH_SKIP_NETNS").is_ok_and(|v| v == "1")
}

/// Namespaces created by one test; deleted on drop.
#[derive(Debug, Default)]
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// Creates namespace `mesh-t4x-<pid>-<tag>` with `lo` up; returns its name.
    pub fn add(&mut self, tag: &str) -> String {
        let name = format!("mesh-t4x-{}-{tag}", std::process::id());
        run("ip", &["netns", "del", &name], false);
        run("ip", &["netns", "add", &name], true);
        self.names.push(name.clone());
        run("ip", &["-n", &name, "link", "set", "lo", "up"], true);
        name
    }

    /// Runs a command inside namespace `ns` and asserts it succeeded.
    pub fn exec(&self, ns: &str, command: &[&str]) {
        let mut args = vec!["netns", "exec", ns];
        args.extend_from_slice(command);
        run("ip", &args, true);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            run("ip", &["netns", "del", name], false);
        }
    }
}

/// `/run/netns/NAME`.
pub fn path(ns: &str) -> String {
    format!("/run/netns/{ns}")
}

/// Runs `program args`; panics with its stderr when `check` and it fails.
pub fn run(program: &str, args: &[&str], check: bool) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (these tests need root and iproute2)")
        });
    if check {
        assert!(
            out.status.success(),
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A task with `kind`, to run inside `netns` (a path) when given.
pub fn task(id: &str, netns: Option<&str>, kind: pb::task::Kind) -> pb::Task {
    pb::Task {
        task_id: id.into(),
        netns: netns.map(|p| pb::NetnsRef {
            target: Some(pb::netns_ref::Target::Path(p.into())),
            label: String::new(),
        }),
        kind: Some(kind),
        ..Default::default()
    }
}

/// Runs `task` to the end (panics after `limit`), returning its result and
/// progress events.
pub async fn run_to_end(
    task: pb::Task,
    limit: Duration,
) -> (pb::TaskResult, Vec<pb::task_progress::Event>) {
    let (tx, mut rx) = mpsc::channel(64);
    let collect = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(p) = rx.recv().await {
            let p: pb::TaskProgress = p;
            events.extend(p.event);
        }
        events
    });
    let result = tokio::time::timeout(limit, run_task(task, tx, CancellationToken::new()))
        .await
        .expect("run_task hung");
    (result, collect.await.expect("collector"))
}

/// A responder started with `run_task` (inside `netns` when given).
#[derive(Debug)]
pub struct Responder {
    /// Its TCP sink port.
    pub tcp_port: u32,
    /// Its UDP echo port.
    pub udp_port: u32,
    /// The address it announced.
    pub address: String,
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<pb::TaskResult>,
}

impl Responder {
    /// Starts one and waits for its ResponderReady.
    pub async fn start(netns: Option<&str>) -> Self {
        let (tx, mut rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let t = task(
            "responder",
            netns,
            pb::task::Kind::Responder(pb::ResponderTask {
                lifetime_us: 60_000_000,
            }),
        );
        let handle = tokio::spawn(run_task(t, tx, cancel.clone()));
        let ready = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("no ResponderReady within 10 s");
        let Some(pb::TaskProgress {
            event: Some(pb::task_progress::Event::ResponderReady(ready)),
            ..
        }) = ready
        else {
            let result = handle.await.expect("responder task");
            panic!("expected ResponderReady, got {ready:?}; result {result:?}");
        };
        Self {
            tcp_port: ready.tcp_port,
            udp_port: ready.udp_port,
            address: ready.address,
            cancel,
            handle,
        }
    }

    /// Stops it and returns its summary.
    pub async fn stop(self) -> pb::ResponderSummary {
        self.cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), self.handle)
            .await
            .expect("responder did not stop within 5 s")
            .expect("responder task");
        match result.outcome {
            Some(pb::task_result::Outcome::Responder(s)) => s,
            other => panic!("expected a responder summary, got {other:?}"),
        }
    }
}

/// The TCP transfer result, or a panic naming what came instead.
pub fn transfer_result(result: pb::TaskResult) -> pb::TcpTransferResult {
    match result.outcome {
        Some(pb::task_result::Outcome::TcpTransfer(r)) => r,
        other => panic!("expected a transfer result, got {other:?}"),
    }
}

/// The UDP echo summary, or a panic naming what came instead.
pub fn udp_summary(result: pb::TaskResult) -> pb::UdpEchoSummary {
    match result.outcome {
        Some(pb::task_result::Outcome::UdpEcho(s)) => s,
        other => panic!("expected a UDP echo summary, got {other:?}"),
    }
}

/// A TCP transfer task.
pub fn transfer(host: &str, port: u32, bytes: u64, timeout: Duration) -> pb::task::Kind {
    pb::task::Kind::TcpTransfer(pb::TcpTransferTask {
        host: host.into(),
        port,
        bytes,
        timeout_us: u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX),
        responder: true,
    })
}

/// A UDP echo task of `count` datagrams, 100 ms apart, waiting 500 ms each.
pub fn udp_echo(
    host: &str,
    port: u32,
    size: u32,
    dont_fragment: bool,
    count: u32,
) -> pb::task::Kind {
    pb::task::Kind::UdpEcho(pb::UdpEchoTask {
        host: host.into(),
        port,
        size,
        dont_fragment,
        count,
        interval_us: 100_000,
        timeout_us: 500_000,
    })
}
