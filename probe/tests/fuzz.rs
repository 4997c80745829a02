//! Fuzz-style property test of the probe's check of a task before it runs
//! anything: `pb::Task` bytes (arbitrary, or real tasks of every kind with
//! any field values, cut, flipped and spliced) decoded as tonic would, then
//! `TaskSpec::try_from` and the namespace check. Runs for
//! `MESH_FUZZ_SECONDS` (probemesh-budget); sends no packet. Properties:
//! never a panic; a refusal is an `INVALID_INPUT` task error naming the
//! field of the task it came from; an accepted probe task is bounded (at
//! most 10 000 probes, each wait 1 ms..=60 s).

use std::time::Duration;

use mesh_probe::tasks::convert::{MAX_DURATION, MIN_DURATION, netns_target};
use mesh_probe::tasks::spec::TaskSpec;
use probemesh_budget::run_for;
use probemesh_proto::pb;
use probemesh_proto::pb::task::Kind;
use proptest::prelude::*;
use prost::Message as _;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        any::<std::net::IpAddr>().prop_map(|ip| ip.to_string()),
        any::<std::net::SocketAddr>().prop_map(|sa| sa.to_string()),
        "[a-z0-9._-]{1,20}",
        "[a-z]{250,260}",
        "\\PC{0,12}",
        "/[a-z/.]{0,20}",
    ]
}

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        0u64..70_000,
        Just(u64::from(u32::MAX)),
        Just(u64::MAX),
        any::<u64>()
    ]
}

fn small() -> impl Strategy<Value = u32> {
    number().prop_map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// A task of every kind with any field values.
/// Each arm is boxed: the unboxed union's value trees overflow a test
/// thread's stack in debug builds.
fn kind() -> BoxedStrategy<Kind> {
    let texts = || proptest::collection::vec(text(), 0..4);
    prop_oneof![
        (
            text(),
            small(),
            any::<bool>(),
            small(),
            number(),
            number(),
            small()
        )
            .prop_map(
                |(target, size, dont_fragment, count, interval_us, timeout_us, ttl)| {
                    Kind::Ping(pb::PingTask {
                        target,
                        size,
                        dont_fragment,
                        count,
                        interval_us,
                        timeout_us,
                        ttl,
                        // 4 is no delivery the wire knows: read as EACH.
                        progress: i32::try_from(ttl % 5).unwrap_or_default(),
                    })
                }
            )
            .boxed(),
        (text(), small(), small(), number(), number())
            .prop_map(|(host, port, count, timeout_us, interval_us)| {
                Kind::Tcping(pb::TcpingTask {
                    host,
                    port,
                    count,
                    timeout_us,
                    interval_us,
                })
            })
            .boxed(),
        (text(), small(), number(), number(), any::<bool>())
            .prop_map(|(host, port, bytes, timeout_us, responder)| {
                Kind::TcpTransfer(pb::TcpTransferTask {
                    host,
                    port,
                    bytes,
                    timeout_us,
                    responder,
                })
            })
            .boxed(),
        (text(), small(), small(), small(), number(), number())
            .prop_map(|(host, port, size, count, interval_us, timeout_us)| {
                Kind::UdpEcho(pb::UdpEchoTask {
                    host,
                    port,
                    size,
                    count,
                    interval_us,
                    timeout_us,
                    ..Default::default()
                })
            })
            .boxed(),
        number()
            .prop_map(|lifetime_us| Kind::Responder(pb::ResponderTask { lifetime_us }))
            .boxed(),
        (text(), texts(), number(), text())
            .prop_map(|(name, servers, timeout_us, record_type)| {
                Kind::Dns(pb::DnsTask {
                    name,
                    servers,
                    timeout_us,
                    record_type,
                    ..Default::default()
                })
            })
            .boxed(),
        small()
            .prop_map(|port| Kind::Listener(pb::ListenerTask { port }))
            .boxed(),
        (text(), small(), texts(), number())
            .prop_map(|(match_ip, match_port, route_lookups, counter_window_us)| {
                Kind::NodeFacts(pb::NodeFactsTask {
                    match_ip,
                    match_port,
                    route_lookups,
                    counter_window_us,
                })
            })
            .boxed(),
        (text(), small(), number(), small())
            .prop_map(|(target, max_mtu, timeout_us, attempts)| {
                Kind::Pmtu(pb::PmtuTask {
                    target,
                    max_mtu,
                    timeout_us,
                    attempts,
                })
            })
            .boxed(),
        (text(), 0i32..4, small(), small(), number(), number())
            .prop_map(|(target, mode, port, count, interval_us, timeout_us)| {
                Kind::Trace(pb::TraceTask {
                    target,
                    mode,
                    port,
                    count,
                    interval_us,
                    timeout_us,
                    ..Default::default()
                })
            })
            .boxed(),
        (
            texts(),
            proptest::collection::vec(any::<u64>(), 0..8),
            small(),
            number(),
            number(),
            number(),
            any::<i64>()
        )
            .prop_map(
                |(interfaces, program, snaplen, max_packets, max_bytes, duration_us, arm)| {
                    Kind::Capture(pb::CaptureTask {
                        interfaces,
                        filter_ethernet: program.clone(),
                        filter_raw_ip: program,
                        snaplen,
                        max_packets,
                        max_bytes,
                        duration_us,
                        arm_at_unix_ns: arm,
                        ..Default::default()
                    })
                }
            )
            .boxed(),
    ]
    .boxed()
}

fn netns() -> impl Strategy<Value = Option<pb::NetnsRef>> {
    use pb::netns_ref::Target;
    // Pod IPs are looked up in /proc: not the parser's business, left out.
    let target = prop_oneof![text().prop_map(Target::Path), small().prop_map(Target::Pid),];
    proptest::option::of(
        (proptest::option::of(target), text())
            .prop_map(|(target, label)| pb::NetnsRef { target, label }),
    )
}

fn task() -> BoxedStrategy<pb::Task> {
    (proptest::option::of(kind()), netns())
        .prop_map(|(kind, netns)| pb::Task {
            task_id: "r1-1".into(),
            run_id: "r1".into(),
            netns,
            kind,
            ..Default::default()
        })
        .boxed()
}

/// The task as the probe's stream receives it: whole, damaged, spliced
/// onto another, or noise.
fn received() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => task().prop_map(|t| t.encode_to_vec()),
        2 => (
            task(),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            any::<usize>()
        )
            .prop_map(|(t, flips, cut)| {
                let mut bytes = t.encode_to_vec();
                for (at, byte) in flips {
                    if let Some(len) = std::num::NonZeroUsize::new(bytes.len()) {
                        bytes[at % len] ^= byte;
                    }
                }
                bytes.truncate(cut % (bytes.len() + 1));
                bytes
            }),
        1 => (task(), task()).prop_map(|(a, b)| [a.encode_to_vec(), b.encode_to_vec()].concat()),
        1 => proptest::collection::vec(any::<u8>(), 0..80),
    ]
}

/// The name a task kind's fields carry in error messages (`ping.count`).
fn field_prefix(kind: &Kind) -> &'static str {
    match kind {
        Kind::Ping(_) => "ping.",
        Kind::Tcping(_) => "tcping.",
        Kind::TcpTransfer(_) => "tcp_transfer.",
        Kind::UdpEcho(_) => "udp_echo.",
        Kind::Responder(_) => "responder.",
        Kind::Dns(_) => "dns.",
        Kind::Listener(_) => "listener.",
        Kind::NodeFacts(_) => "node_facts.",
        Kind::Pmtu(_) => "pmtu.",
        Kind::Trace(_) => "trace.",
        Kind::Capture(_) => "capture.",
    }
}

fn bounded(count: u16, waits: [Duration; 2]) -> bool {
    count <= 10_000
        && waits
            .iter()
            .all(|w| (MIN_DURATION..=MAX_DURATION).contains(w))
}

#[test]
fn tasks_are_checked_before_anything_runs_and_refusals_name_the_field() {
    run_for("probe task check", received(), |bytes| {
        let Ok(mut task) = pb::Task::decode(bytes.as_slice()) else {
            return Ok(());
        };
        if let Some(netns) = task.netns.take()
            && !matches!(netns.target, Some(pb::netns_ref::Target::PodIp(_)))
            && let Err(e) = netns_target(netns)
        {
            let error = pb::TaskError::from(&e);
            prop_assert_eq!(error.kind, pb::task_error::Kind::InvalidInput as i32);
            prop_assert!(error.message.starts_with("task.netns"), "{}", error.message);
        }
        let prefix = task.kind.as_ref().map_or("task.kind", field_prefix);
        match TaskSpec::try_from(task) {
            Ok(TaskSpec::Ping(s)) => {
                prop_assert!(bounded(s.count.get(), [s.interval, s.timeout]), "{s:?}")
            }
            Ok(TaskSpec::Tcping(s)) => {
                prop_assert!(bounded(s.count.get(), [s.interval, s.timeout]), "{s:?}")
            }
            Ok(TaskSpec::UdpEcho(s)) => {
                prop_assert!(bounded(s.count.get(), [s.interval, s.timeout]), "{s:?}")
            }
            Ok(_) => {}
            Err(invalid) => {
                let error = pb::TaskError::from(&invalid);
                prop_assert_eq!(error.kind, pb::task_error::Kind::InvalidInput as i32);
                prop_assert!(
                    error.message.starts_with(prefix),
                    "{} does not start with {}",
                    error.message,
                    prefix
                );
            }
        }
        Ok(())
    });
}
