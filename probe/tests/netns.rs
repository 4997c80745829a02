//! Running tasks inside another network namespace (`Task.netns`), as root:
//! the task sees that namespace's interfaces and routes, the probe's own
//! threads never do, and a namespace that is missing or deleted mid-task
//! gives a clear result instead of a hang. Skips only with MESH_SKIP_NETNS=1.

mod t4x;

use std::time::{Duration, Instant};

use probemesh_proto::pb;
use probemesh_proto::pb::task_error::Kind;
use probemesh_proto::pb::task_result::Outcome;
use t4x::{Namespaces, path, run_to_end, task};

fn ping(target: &str, count: u32, interval_ms: u64) -> pb::task::Kind {
    pb::task::Kind::Ping(pb::PingTask {
        target: target.into(),
        size: 56,
        count,
        interval_us: interval_ms * 1000,
        timeout_us: 500_000,
        ..Default::default()
    })
}

fn ping_summary(result: pb::TaskResult) -> pb::PingSummary {
    match result.outcome {
        Some(Outcome::Ping(s)) => s,
        other => panic!("expected a ping summary, got {other:?}"),
    }
}

/// The network namespace of the calling thread (its nsfs link, e.g. `net:[4026531840]`).
fn thread_netns() -> String {
    std::fs::read_link("/proc/thread-self/ns/net")
        .expect("read /proc/thread-self/ns/net")
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_sees_the_namespace_and_the_probe_does_not() {
    if t4x::skip() {
        return;
    }
    let mut namespaces = Namespaces::default();
    let ns = namespaces.add("lo");
    let own = thread_netns();

    let (result, events) = run_to_end(
        task("lo-ping", Some(&path(&ns)), ping("127.0.0.1", 2, 100)),
        Duration::from_secs(10),
    )
    .await;
    let summary = ping_summary(result);
    assert_eq!(
        (summary.transmitted, summary.received),
        (2, 2),
        "{summary:?}"
    );
    assert_eq!(events.len(), 2);

    // No route to 198.18.x in a namespace with only lo: every echo fails to
    // send, while the same address is merely routed (or not) on the host.
    let (result, events) = run_to_end(
        task("no-route", Some(&path(&ns)), ping("198.18.77.1", 2, 100)),
        Duration::from_secs(10),
    )
    .await;
    let summary = ping_summary(result);
    assert_eq!(summary.received, 0, "{summary:?}");
    assert_eq!(summary.errors, 2, "{summary:?}");
    for event in &events {
        let pb::task_progress::Event::PingReply(reply) = event else {
            panic!("unexpected event {event:?}");
        };
        assert_eq!(
            reply.status(),
            pb::ping_reply::Status::SendError,
            "{reply:?}"
        );
        assert!(
            reply.detail.to_lowercase().contains("unreachable"),
            "{reply:?}"
        );
    }

    // Neither this thread nor any tokio worker moved into the namespace.
    assert_eq!(thread_netns(), own);
    for _ in 0..8 {
        let worker = tokio::spawn(async { thread_netns() }).await.unwrap();
        assert_eq!(worker, own);
    }
    assert_ne!(
        own,
        std::fs::read_link(path(&ns))
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
}

#[tokio::test]
async fn a_missing_namespace_is_invalid_input() {
    if t4x::skip() {
        return;
    }
    let (result, events) = run_to_end(
        task(
            "gone",
            Some("/run/netns/mesh-t4x-does-not-exist"),
            ping("127.0.0.1", 1, 100),
        ),
        Duration::from_secs(5),
    )
    .await;
    assert!(events.is_empty());
    assert_eq!(result.task_id, "gone");
    let Some(Outcome::Error(error)) = result.outcome else {
        panic!("expected an error, got {result:?}");
    };
    assert_eq!(error.kind(), Kind::InvalidInput);
    assert_eq!(
        error.message,
        "network namespace /run/netns/mesh-t4x-does-not-exist does not exist (pod gone?)"
    );

    let mut by_pid = task("pid", None, ping("127.0.0.1", 1, 100));
    by_pid.netns = Some(pb::NetnsRef {
        target: Some(pb::netns_ref::Target::Pid(u32::MAX)),
        label: "pod default/web-0".into(),
    });
    let (result, _) = run_to_end(by_pid, Duration::from_secs(5)).await;
    let Some(Outcome::Error(error)) = result.outcome else {
        panic!("expected an error, got {result:?}");
    };
    assert_eq!(error.kind(), Kind::InvalidInput);
    assert_eq!(
        error.message,
        format!(
            "network namespace /proc/{}/ns/net (pod default/web-0) does not exist (pod gone?)",
            u32::MAX
        )
    );

    let (result, _) = run_to_end(
        task(
            "not-ns",
            Some("/proc/self/status"),
            ping("127.0.0.1", 1, 100),
        ),
        Duration::from_secs(5),
    )
    .await;
    let Some(Outcome::Error(error)) = result.outcome else {
        panic!("expected an error, got {result:?}");
    };
    assert_eq!(error.kind(), Kind::ProbeFailure);
    assert_eq!(
        error.message,
        "setns(/proc/self/status, CLONE_NEWNET) failed: EINVAL: Invalid argument"
    );
}

#[tokio::test]
async fn a_namespace_deleted_mid_task_ends_the_task_within_its_bound() {
    if t4x::skip() {
        return;
    }
    let mut namespaces = Namespaces::default();
    let ns = namespaces.add("del");
    let started = Instant::now();
    let running = tokio::spawn(run_to_end(
        task("del", Some(&path(&ns)), ping("127.0.0.1", 3, 1000)),
        Duration::from_secs(15),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    t4x::run("ip", &["netns", "del", &ns], true);
    let (result, _) = running.await.expect("task");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    match result.outcome {
        Some(Outcome::Ping(s)) => assert_eq!(s.transmitted, 3, "{s:?}"),
        Some(Outcome::Error(e)) => assert!(!e.message.is_empty()),
        other => panic!("unexpected {other:?}"),
    }
    // A new task in the deleted namespace is refused clearly.
    let (result, _) = run_to_end(
        task("after", Some(&path(&ns)), ping("127.0.0.1", 1, 100)),
        Duration::from_secs(5),
    )
    .await;
    let Some(Outcome::Error(error)) = result.outcome else {
        panic!("expected an error, got {result:?}");
    };
    assert_eq!(error.kind(), Kind::InvalidInput, "{error:?}");
}

#[tokio::test]
async fn cancelling_a_task_in_a_namespace_stops_it() {
    if t4x::skip() {
        return;
    }
    let mut namespaces = Namespaces::default();
    let ns = namespaces.add("cancel");
    let (tx, _rx) = tokio::sync::mpsc::channel(64);
    let cancel = tokio_util::sync::CancellationToken::new();
    let t = task("cancel", Some(&path(&ns)), ping("127.0.0.1", 100, 1000));
    let running = tokio::spawn(mesh_probe::tasks::run_task(t, tx, cancel.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("cancel did not stop the task")
        .expect("task");
    assert!(asked.elapsed() < Duration::from_secs(3));
    let Some(Outcome::Error(error)) = result.outcome else {
        panic!("expected a cancellation, got {result:?}");
    };
    assert_eq!(error.kind(), Kind::Cancelled, "{error:?}");
}
