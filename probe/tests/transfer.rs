//! TCP transfer and UDP echo against the probe's responder: on loopback
//! (no privilege), then as root across namespaces — directly over a veth,
//! and through a router whose far link has a smaller MTU, with and without
//! ICMP frag-needed dropped (the MTU black hole of reference incident 2).
//! Namespaces are `mesh-t4x-*`, addresses 198.18.241.0/24 and
//! 198.18.242.0/24, removed by a Drop guard. Skips only with MESH_SKIP_NETNS=1.

mod t4x;

use std::time::{Duration, Instant};

use probemesh_proto::pb;
use t4x::{
    Namespaces, Responder, path, run_to_end, task, transfer, transfer_result, udp_echo, udp_summary,
};

const B: &str = "198.18.242.2";

#[tokio::test]
async fn loopback_transfer_and_echo_against_the_responder() {
    let responder = Responder::start(None).await;
    assert_ne!(responder.address, "0.0.0.0");
    let (result, events) = run_to_end(
        task(
            "t",
            None,
            transfer("127.0.0.1", responder.tcp_port, 0, Duration::from_secs(5)),
        ),
        Duration::from_secs(10),
    )
    .await;
    assert!(events.is_empty());
    let r = transfer_result(result);
    assert!(r.completed, "{r:?}");
    assert_eq!((r.bytes_sent, r.bytes_acked), (65536, 65536));
    assert_eq!(r.outcome, "connected");
    assert!(r.connected && r.handshake_ns > 0 && r.mss > 0);
    assert!(
        r.detail
            .starts_with("sent 65536 bytes, 65536 acknowledged in "),
        "{}",
        r.detail
    );

    let (result, events) = run_to_end(
        task(
            "u",
            None,
            udp_echo("127.0.0.1", responder.udp_port, 100, true, 3),
        ),
        Duration::from_secs(10),
    )
    .await;
    let s = udp_summary(result);
    assert_eq!((s.transmitted, s.received, s.errors), (3, 3, 0), "{s:?}");
    assert_eq!(s.size, 100);
    assert!(s.rtt.is_some());
    assert_eq!(events.len(), 3);
    for e in &events {
        let pb::task_progress::Event::UdpReply(reply) = e else {
            panic!("unexpected {e:?}");
        };
        assert_eq!((reply.status.as_str(), reply.bytes), ("reply", 100));
    }

    let summary = responder.stop().await;
    assert_eq!(summary.tcp_connections, 1);
    assert_eq!(summary.tcp_bytes, 65536);
    assert_eq!(summary.udp_datagrams, 3);
}

#[tokio::test]
async fn a_closed_udp_port_reports_icmp_errors() {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = u32::from(closed.local_addr().unwrap().port());
    drop(closed);
    let (result, events) = run_to_end(
        task("u", None, udp_echo("127.0.0.1", port, 20, false, 2)),
        Duration::from_secs(10),
    )
    .await;
    let s = udp_summary(result);
    assert_eq!(s.received, 0);
    assert_eq!(s.errors, 2, "{s:?} {events:?}");
}

/// A and B joined by one veth, lo up.
fn direct(namespaces: &mut Namespaces) -> (String, String) {
    let a = namespaces.add("da");
    let b = namespaces.add("db");
    t4x::run(
        "ip",
        &[
            "-n", &a, "link", "add", "a0", "type", "veth", "peer", "name", "b0", "netns", &b,
        ],
        true,
    );
    namespaces.exec(&a, &["ip", "addr", "add", "198.18.241.1/24", "dev", "a0"]);
    namespaces.exec(&a, &["ip", "link", "set", "a0", "up"]);
    namespaces.exec(&b, &["ip", "addr", "add", "198.18.241.2/24", "dev", "b0"]);
    namespaces.exec(&b, &["ip", "link", "set", "b0", "up"]);
    (a, b)
}

/// A — R — B: A's link 1500, R's link towards B 1400 on R's side only (B
/// keeps 1500 and advertises MSS 1460), R forwarding. Returns (A, R, B).
fn routed(namespaces: &mut Namespaces) -> (String, String, String) {
    let a = namespaces.add("ra");
    let r = namespaces.add("rr");
    let b = namespaces.add("rb");
    t4x::run(
        "ip",
        &[
            "-n", &a, "link", "add", "a0", "type", "veth", "peer", "name", "r0", "netns", &r,
        ],
        true,
    );
    t4x::run(
        "ip",
        &[
            "-n", &r, "link", "add", "r1", "type", "veth", "peer", "name", "b0", "netns", &b,
        ],
        true,
    );
    namespaces.exec(&a, &["ip", "addr", "add", "198.18.241.1/24", "dev", "a0"]);
    namespaces.exec(&a, &["ip", "link", "set", "a0", "up"]);
    namespaces.exec(
        &a,
        &[
            "ip",
            "route",
            "add",
            "198.18.242.0/24",
            "via",
            "198.18.241.2",
        ],
    );
    namespaces.exec(&r, &["ip", "addr", "add", "198.18.241.2/24", "dev", "r0"]);
    namespaces.exec(&r, &["ip", "addr", "add", "198.18.242.1/24", "dev", "r1"]);
    namespaces.exec(&r, &["ip", "link", "set", "r0", "up"]);
    namespaces.exec(&r, &["ip", "link", "set", "r1", "mtu", "1400", "up"]);
    namespaces.exec(&r, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    namespaces.exec(&b, &["ip", "addr", "add", "198.18.242.2/24", "dev", "b0"]);
    namespaces.exec(&b, &["ip", "link", "set", "b0", "up"]);
    namespaces.exec(
        &b,
        &[
            "ip",
            "route",
            "add",
            "198.18.241.0/24",
            "via",
            "198.18.242.1",
        ],
    );
    (a, r, b)
}

const DROP_FRAG_NEEDED: [&str; 9] = [
    "OUTPUT",
    "-p",
    "icmp",
    "--icmp-type",
    "fragmentation-needed",
    "-j",
    "DROP",
    "-w",
    "5",
];

fn iptables(namespaces: &Namespaces, ns: &str, op: &str) {
    let mut cmd = vec!["iptables", op];
    cmd.extend_from_slice(&DROP_FRAG_NEEDED);
    namespaces.exec(ns, &cmd);
}

#[tokio::test]
async fn a_transfer_between_namespaces_completes() {
    if t4x::skip() {
        return;
    }
    let mut namespaces = Namespaces::default();
    let (a, b) = direct(&mut namespaces);
    let responder = Responder::start(Some(&path(&b))).await;
    assert_eq!(responder.address, "198.18.241.2");
    let (result, _) = run_to_end(
        task(
            "t",
            Some(&path(&a)),
            transfer(
                &responder.address,
                responder.tcp_port,
                0,
                Duration::from_secs(5),
            ),
        ),
        Duration::from_secs(10),
    )
    .await;
    let r = transfer_result(result);
    assert!(r.completed, "{r:?}");
    assert_eq!(r.bytes_acked, 65536);
    assert_eq!((r.mss, r.pmtu), (1448, 1500), "{r:?}");
    let (result, _) = run_to_end(
        task(
            "u",
            Some(&path(&a)),
            udp_echo("198.18.241.2", responder.udp_port, 1472, true, 2),
        ),
        Duration::from_secs(10),
    )
    .await;
    let s = udp_summary(result);
    assert_eq!(s.received, 2, "{s:?}");
    let summary = responder.stop().await;
    assert_eq!(summary.tcp_bytes, 65536);
}

#[tokio::test]
async fn an_mtu_black_hole_stalls_the_transfer_and_pmtud_fixes_it() {
    if t4x::skip() {
        return;
    }
    let mut namespaces = Namespaces::default();
    let (a, r, b) = routed(&mut namespaces);
    iptables(&namespaces, &r, "-A");
    let responder = Responder::start(Some(&path(&b))).await;
    assert_eq!(responder.address, B);
    let in_a = Some(path(&a));

    // Small datagrams cross; 1472 bytes with DF vanish (no frag-needed back).
    let (result, _) = run_to_end(
        task(
            "small",
            in_a.as_deref(),
            udp_echo(B, responder.udp_port, 100, true, 3),
        ),
        Duration::from_secs(10),
    )
    .await;
    let s = udp_summary(result);
    assert_eq!(s.received, 3, "{s:?}");
    let (result, events) = run_to_end(
        task(
            "big",
            in_a.as_deref(),
            udp_echo(B, responder.udp_port, 1472, true, 2),
        ),
        Duration::from_secs(10),
    )
    .await;
    let s = udp_summary(result);
    assert_eq!((s.transmitted, s.received), (2, 0), "{s:?} {events:?}");

    // The handshake works; the 64 KiB never get acknowledged.
    let started = Instant::now();
    let (result, _) = run_to_end(
        task(
            "stall",
            in_a.as_deref(),
            transfer(B, responder.tcp_port, 0, Duration::from_secs(3)),
        ),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let stalled = transfer_result(result);
    assert!(stalled.connected, "{stalled:?}");
    assert!(!stalled.completed, "{stalled:?}");
    assert!(stalled.retransmits > 0, "{stalled:?}");
    assert!(stalled.bytes_acked < 65536, "{stalled:?}");
    assert_eq!((stalled.mss, stalled.pmtu), (1448, 1500), "{stalled:?}");
    assert!(
        stalled
            .detail
            .contains("large segments are not getting through"),
        "{}",
        stalled.detail
    );

    // Let frag-needed through: path MTU discovery repairs the same transfer.
    iptables(&namespaces, &r, "-D");
    let (result, _) = run_to_end(
        task(
            "pmtud",
            in_a.as_deref(),
            transfer(B, responder.tcp_port, 0, Duration::from_secs(5)),
        ),
        Duration::from_secs(10),
    )
    .await;
    let fixed = transfer_result(result);
    assert!(fixed.completed, "{fixed:?}");
    assert_eq!(fixed.bytes_acked, 65536);
    assert_eq!(fixed.pmtu, 1400, "{fixed:?}");

    // A now knows the path MTU: a 1472-byte DF datagram fails locally.
    let (result, events) = run_to_end(
        task(
            "emsgsize",
            in_a.as_deref(),
            udp_echo(B, responder.udp_port, 1472, true, 1),
        ),
        Duration::from_secs(10),
    )
    .await;
    let s = udp_summary(result);
    assert_eq!((s.received, s.errors), (0, 1), "{s:?}");
    let Some(pb::task_progress::Event::UdpReply(reply)) = events.first() else {
        panic!("no reply event: {events:?}");
    };
    assert_eq!(reply.status, "send_error");
    assert_eq!(reply.detail, "local error: message too long, mtu=1400");
    responder.stop().await;
}
