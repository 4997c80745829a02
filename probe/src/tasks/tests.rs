//! End-to-end tests of [`run_task`] over real sockets on loopback. The ping
//! tests need a raw socket (root or `CAP_NET_RAW`): they skip only when
//! `MESH_SKIP_NETNS=1` is set and otherwise fail loudly when they cannot
//! open one. Targets are loopback or 198.18.0.0/15 only.

use std::time::Duration;

use probemesh_proto::pb;
use probemesh_proto::pb::task_error::Kind;
use probemesh_proto::pb::task_result::Outcome;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

use super::resolve::next_echo_id;
use super::*;

/// Runs a task and collects its progress events.
async fn run(kind: pb::task::Kind) -> (pb::TaskResult, Vec<pb::task_progress::Event>) {
    let (tx, mut rx) = mpsc::channel::<pb::TaskProgress>(16);
    let task = pb::Task {
        task_id: "task-1".into(),
        kind: Some(kind),
        ..Default::default()
    };
    let collect = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(p) = rx.recv().await {
            assert_eq!(p.task_id, "task-1");
            events.extend(p.event);
        }
        events
    });
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        run_task(task, tx, CancellationToken::new()),
    )
    .await
    .expect("run_task hung");
    assert_eq!(result.task_id, "task-1");
    (result, collect.await.unwrap())
}

fn error_of(result: &pb::TaskResult) -> Option<&pb::TaskError> {
    match &result.outcome {
        Some(Outcome::Error(e)) => Some(e),
        _ => None,
    }
}

fn ping_summary(result: pb::TaskResult) -> pb::PingSummary {
    match result.outcome {
        Some(Outcome::Ping(s)) => s,
        other => panic!("expected a ping summary, got {other:?}"),
    }
}

fn tcping_summary(result: pb::TaskResult) -> pb::TcpingSummary {
    match result.outcome {
        Some(Outcome::Tcping(s)) => s,
        other => panic!("expected a tcping summary, got {other:?}"),
    }
}

fn ping_replies(events: Vec<pb::task_progress::Event>) -> Vec<pb::PingReply> {
    events
        .into_iter()
        .map(|e| match e {
            pb::task_progress::Event::PingReply(r) => r,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// True when the raw-socket tests should run; panics with the reason when
/// they should but cannot.
fn raw_socket_tests_enabled() -> bool {
    if std::env::var("MESH_SKIP_NETNS").is_ok_and(|v| v == "1") {
        eprintln!("skipping: MESH_SKIP_NETNS=1");
        return false;
    }
    if let Err(e) = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)) {
        panic!(
            "cannot open a raw ICMP socket ({e}): run as root / with CAP_NET_RAW, or set MESH_SKIP_NETNS=1 to skip"
        );
    }
    true
}

fn ping(target: &str, count: u32) -> pb::PingTask {
    pb::PingTask {
        target: target.into(),
        size: 56,
        count,
        interval_us: 20_000,
        timeout_us: 1_000_000,
        ..Default::default()
    }
}

#[test]
fn capabilities_name_every_kind() {
    let kinds = capabilities();
    for kind in ["ping", "tcping", "tcp_transfer", "udp_echo", "responder"] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing from {kinds:?}"
        );
    }
}

#[test]
fn echo_ids_differ_between_tasks() {
    assert_ne!(next_echo_id(), next_echo_id());
}

#[tokio::test]
async fn oversized_df_ping_is_invalid_input() {
    let task = pb::PingTask {
        size: 70_000,
        dont_fragment: true,
        ..ping("127.0.0.1", 1)
    };
    let (result, events) = run(pb::task::Kind::Ping(task)).await;
    let error = error_of(&result).expect("an error");
    assert_eq!(error.kind(), Kind::InvalidInput);
    assert!(
        error.message.contains("ping.size") && error.message.contains("0..=65507"),
        "{}",
        error.message
    );
    assert!(events.is_empty());
}

#[tokio::test]
async fn unresolvable_name_is_invalid_input() {
    let (result, _) = run(pb::task::Kind::Ping(ping("nonexistent.invalid", 1))).await;
    let error = error_of(&result).expect("an error");
    assert_eq!(error.kind(), Kind::InvalidInput, "{}", error.message);
    assert!(
        error.message.contains("nonexistent.invalid"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn task_without_kind_is_invalid_input() {
    let (tx, _rx) = mpsc::channel(1);
    let result = run_task(pb::Task::default(), tx, CancellationToken::new()).await;
    assert_eq!(
        error_of(&result).map(pb::TaskError::kind),
        Some(Kind::InvalidInput)
    );
}

#[tokio::test]
async fn cancelled_before_start_reports_cancelled() {
    let (tx, _rx) = mpsc::channel(1);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let task = pb::Task {
        kind: Some(pb::task::Kind::Tcping(pb::TcpingTask {
            host: "127.0.0.1".into(),
            port: 9,
            count: 5,
            ..Default::default()
        })),
        ..Default::default()
    };
    let result = run_task(task, tx, cancel).await;
    let error = error_of(&result).expect("an error");
    assert_eq!(error.kind(), Kind::Cancelled);
    assert_eq!(error.message, "cancelled after 0 of 5 probes");
}

#[tokio::test]
async fn tcping_to_a_listener_connects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = pb::TcpingTask {
        host: "localhost".into(),
        port: u32::from(port),
        count: 3,
        interval_us: 10_000,
        timeout_us: 1_000_000,
    };
    let (result, events) = run(pb::task::Kind::Tcping(task)).await;
    let s = tcping_summary(result);
    assert_eq!(
        (s.attempted, s.connected, s.refused, s.timed_out, s.failed),
        (3, 3, 0, 0, 0)
    );
    assert_eq!((s.host.as_str(), s.port), ("localhost", u32::from(port)));
    assert!(
        s.latency
            .is_some_and(|l| l.min_ns > 0 && l.min_ns <= l.max_ns)
    );
    assert_eq!(events.len(), 3);
    for (i, e) in events.into_iter().enumerate() {
        let pb::task_progress::Event::TcpingAttempt(a) = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            (a.seq, a.outcome()),
            (
                u32::try_from(i).unwrap() + 1,
                pb::tcping_attempt::Outcome::Connected
            )
        );
        assert!(a.latency_ns > 0);
    }
}

#[tokio::test]
async fn tcping_to_a_closed_port_is_refused() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let task = pb::TcpingTask {
        host: "127.0.0.1".into(),
        port: u32::from(port),
        count: 2,
        interval_us: 10_000,
        timeout_us: 1_000_000,
    };
    let (result, events) = run(pb::task::Kind::Tcping(task)).await;
    let s = tcping_summary(result);
    assert_eq!((s.attempted, s.connected, s.refused), (2, 0, 2));
    assert_eq!(s.latency, None);
    let pb::task_progress::Event::TcpingAttempt(a) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(a.outcome(), pb::tcping_attempt::Outcome::Refused);
}

#[tokio::test]
async fn root_ping_loopback() {
    if !raw_socket_tests_enabled() {
        return;
    }
    let (result, events) = run(pb::task::Kind::Ping(ping("127.0.0.1", 3))).await;
    let s = ping_summary(result);
    assert_eq!((s.transmitted, s.received, s.errors), (3, 3, 0), "{s:?}");
    assert_eq!((s.address.as_str(), s.size), ("127.0.0.1", 56));
    let rtt = s.rtt.expect("rtt stats");
    assert!(
        rtt.min_ns > 0 && rtt.min_ns <= rtt.avg_ns && rtt.avg_ns <= rtt.max_ns,
        "{rtt:?}"
    );
    let replies = ping_replies(events);
    assert_eq!(replies.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    for r in &replies {
        assert_eq!(r.status(), pb::ping_reply::Status::Reply, "{r:?}");
        assert_eq!((r.from.as_str(), r.bytes), ("127.0.0.1", 64));
        assert!(r.rtt_ns > 0 && r.ttl > 0, "{r:?}");
    }
}

#[tokio::test]
async fn root_ping_unanswered_address_times_out() {
    if !raw_socket_tests_enabled() {
        return;
    }
    let task = pb::PingTask {
        timeout_us: 200_000,
        interval_us: 100_000,
        ..ping("198.18.254.254", 2)
    };
    let started = std::time::Instant::now();
    let (result, events) = run(pb::task::Kind::Ping(task)).await;
    let s = ping_summary(result);
    assert_eq!((s.transmitted, s.received), (2, 0), "{s:?}");
    assert_eq!(s.rtt, None);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let replies = ping_replies(events);
    assert_eq!(replies.len(), 2);
    assert!(
        replies
            .iter()
            .all(|r| r.status() != pb::ping_reply::Status::Reply),
        "{replies:?}"
    );
}

#[tokio::test]
async fn root_ping_df_1500_over_loopback() {
    if !raw_socket_tests_enabled() {
        return;
    }
    let task = pb::PingTask {
        size: 1500,
        dont_fragment: true,
        ttl: 3,
        ..ping("localhost", 2)
    };
    let (result, events) = run(pb::task::Kind::Ping(task)).await;
    let s = ping_summary(result);
    assert_eq!(
        (s.received, s.errors, s.size, s.dont_fragment),
        (2, 0, 1500, true),
        "{s:?}"
    );
    assert_eq!(s.target, "localhost");
    assert!(ping_replies(events).iter().all(|r| r.bytes == 1508));
}

#[tokio::test]
async fn root_concurrent_pings_keep_their_own_replies() {
    if !raw_socket_tests_enabled() {
        return;
    }
    let a = run(pb::task::Kind::Ping(ping("127.0.0.1", 5)));
    let b = run(pb::task::Kind::Ping(ping("127.0.0.2", 5)));
    let ((ra, ea), (rb, eb)) = tokio::join!(a, b);
    for (result, events, from) in [(ra, ea, "127.0.0.1"), (rb, eb, "127.0.0.2")] {
        let s = ping_summary(result);
        assert_eq!((s.transmitted, s.received), (5, 5), "{s:?}");
        let replies = ping_replies(events);
        assert_eq!(
            replies.len(),
            5,
            "no stolen or duplicated replies: {replies:?}"
        );
        assert!(replies.iter().all(|r| r.from == from), "{replies:?}");
    }
}

/// `ping -M do -s 1500` where the route's MTU is 1400: ping prints
/// "ping: local error: message too long, mtu=1400" per echo and counts
/// errors. Runs in a private network namespace (on its own thread: the
/// namespace belongs to the calling thread) so the host is left alone.
#[test]
fn root_df_ping_above_the_local_mtu_is_a_send_error() {
    if !raw_socket_tests_enabled() {
        return;
    }
    let (result, events) = std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET) needs CAP_SYS_ADMIN (or set MESH_SKIP_NETNS=1)");
        let status = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up", "mtu", "1400"])
            .status()
            .expect("running `ip` (iproute2)");
        assert!(status.success(), "ip link set lo up mtu 1400: {status}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let task = pb::PingTask {
            size: 1500,
            dont_fragment: true,
            ..ping("127.0.0.1", 2)
        };
        runtime.block_on(run(pb::task::Kind::Ping(task)))
    })
    .join()
    .unwrap();
    let s = ping_summary(result);
    assert_eq!((s.transmitted, s.received, s.errors), (2, 0, 2), "{s:?}");
    for r in ping_replies(events) {
        assert_eq!(r.status(), pb::ping_reply::Status::SendError, "{r:?}");
        assert_eq!(r.detail, "local error: message too long, mtu=1400");
    }
}

#[tokio::test]
async fn root_batched_ping_streams_every_reply_in_order_in_fewer_messages() {
    if !raw_socket_tests_enabled() {
        return;
    }
    let task = pb::PingTask {
        interval_us: 2_000,
        progress: pb::ProgressDelivery::Batched.into(),
        ..ping("127.0.0.1", 40)
    };
    let (result, events) = run(pb::task::Kind::Ping(task)).await;
    assert_eq!(ping_summary(result).received, 40);
    let messages = events.len();
    let replies: Vec<pb::PingReply> = events
        .into_iter()
        .flat_map(|e| match e {
            pb::task_progress::Event::PingReplies(b) => b.replies,
            pb::task_progress::Event::PingReply(r) => vec![r],
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let seqs: Vec<u32> = replies.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    assert!(replies.iter().all(|r| r.rtt_ns > 0), "{replies:?}");
    // 40 replies 2 ms apart in windows of 100 ms: one or two batches.
    assert!(messages <= 3, "{messages} messages for 40 replies");
}

#[tokio::test]
async fn root_result_only_ping_sends_the_summary_and_no_progress() {
    if !raw_socket_tests_enabled() {
        return;
    }
    let task = pb::PingTask {
        progress: pb::ProgressDelivery::None.into(),
        ..ping("127.0.0.1", 5)
    };
    let (result, events) = run(pb::task::Kind::Ping(task)).await;
    let s = ping_summary(result);
    assert_eq!((s.transmitted, s.received), (5, 5), "{s:?}");
    assert!(s.rtt.is_some_and(|r| r.min_ns > 0), "{s:?}");
    assert!(events.is_empty(), "{events:?}");
}

/// A cancel reaches the ping's thread at once (its stop pipe wakes the
/// wait), not at its next echo, 5 s away.
#[tokio::test]
async fn root_cancelled_ping_stops_at_once() {
    if !raw_socket_tests_enabled() {
        return;
    }
    let (tx, _rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let task = pb::Task {
        task_id: "task-1".into(),
        kind: Some(pb::task::Kind::Ping(pb::PingTask {
            interval_us: 5_000_000,
            ..ping("127.0.0.1", 3)
        })),
        ..Default::default()
    };
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
    });
    let started = std::time::Instant::now();
    let result = run_task(task, tx, cancel).await;
    let error = error_of(&result).expect("an error");
    assert_eq!(error.kind(), Kind::Cancelled);
    assert_eq!(error.message, "cancelled after 1 of 3 probes");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

/// The receive time is the kernel's stamp of the reply's arrival, not the
/// moment the socket is read: a reply read 50 ms late still measures the
/// loopback round trip.
#[tokio::test]
async fn root_icmp_receive_time_is_the_kernel_stamp() {
    use crate::platform::IcmpSocket;
    use crate::platform::IcmpSocketOptions;
    use crate::platform::linux::{RawIcmpSocket, now};
    use crate::types::Seq;
    use probemesh_packet::icmp::{EchoResponse, build_echo_request, classify_echo};

    if !raw_socket_tests_enabled() {
        return;
    }
    let id = next_echo_id();
    let socket = RawIcmpSocket::open(&IcmpSocketOptions {
        echo_id: id,
        ttl: None,
        dont_fragment: false,
    })
    .unwrap();
    let sent_at = socket
        .send_to(
            &build_echo_request(id, Seq(1), 56),
            "127.0.0.1".parse().unwrap(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let read_at = now().unwrap();
    let mut buf = vec![0u8; 2048];
    let received = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let r = socket.recv(&mut buf).await.unwrap();
            if let Some(EchoResponse::EchoReply { .. }) = classify_echo(&buf[..r.len], id) {
                return r;
            }
        }
    })
    .await
    .expect("loopback answers");
    let rtt = received.at.saturating_duration_since(sent_at);
    assert!(
        received.at <= read_at,
        "stamped at arrival, before the read"
    );
    assert!(rtt < Duration::from_millis(40), "rtt {rtt:?}");
}
