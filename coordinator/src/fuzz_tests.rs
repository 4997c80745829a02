//! Fuzz-style property test of the probe stream's handler: protobuf bytes,
//! arbitrary or real messages cut, flipped and spliced, decoded as tonic
//! would and passed to [`crate::link::receive`] from an attached probe while
//! one of its runs is in flight. Runs for `MESH_FUZZ_SECONDS`
//! (probemesh-budget). Properties: never a panic; the probe stays attached;
//! the run still ends with its record stored, whatever the probe sent.

use std::time::Duration;

use probemesh_budget::run_for;
use probemesh_proto::pb;
use probemesh_proto::pb::probe_message::Msg;
use proptest::prelude::*;
use prost::Message as _;

use crate::testing::{FakeProbe, coordinator, record, requester, until_finished};
use crate::tool_run;

/// Messages a probe really sends, for task `r1-1` (the run in flight) and
/// for tasks it was never given.
fn seeds() -> Vec<Vec<u8>> {
    let hop = pb::TraceHop {
        ttl: 1,
        host: "198.18.0.1".into(),
        loss_pct: 0.0,
        sent: 3,
        received: 3,
        last_ms: 0.3,
        avg_ms: 0.3,
        ..Default::default()
    };
    let progress = |task_id: &str, event| {
        Msg::Progress(pb::TaskProgress {
            task_id: task_id.into(),
            event: Some(event),
            ..Default::default()
        })
    };
    let result = |task_id: &str, outcome| {
        Msg::Result(pb::TaskResult {
            task_id: task_id.into(),
            outcome: Some(outcome),
        })
    };
    let messages = [
        Msg::Heartbeat(pb::Heartbeat::default()),
        Msg::Hello(pb::Hello {
            name: "node-1".into(),
            ..Default::default()
        }),
        Msg::ClockReply(pb::ClockReply {
            seq: 1,
            t1_ns: 1_800_000_000_000_000_000,
            t2_ns: 1_800_000_000_000_100_000,
            t3_ns: 1_800_000_000_000_200_000,
        }),
        progress(
            "r1-1",
            pb::task_progress::Event::PingReply(pb::PingReply {
                seq: 1,
                from: "198.18.0.1".into(),
                ..Default::default()
            }),
        ),
        progress(
            "r1-1",
            pb::task_progress::Event::TraceRound(pb::TraceRound {
                round: 1,
                hops: vec![hop.clone()],
            }),
        ),
        progress(
            "r1-1",
            pb::task_progress::Event::ArtifactChunk(pb::ArtifactChunk::default()),
        ),
        result(
            "r1-1",
            pb::task_result::Outcome::Ping(pb::PingSummary {
                transmitted: 3,
                received: 2,
                ..Default::default()
            }),
        ),
        result(
            "r1-1",
            pb::task_result::Outcome::Trace(pb::TraceResult {
                hops: vec![hop],
                reached: true,
                ..Default::default()
            }),
        ),
        result(
            "r1-1",
            pb::task_result::Outcome::Error(pb::TaskError {
                kind: 99,
                message: "\u{0}\n".into(),
            }),
        ),
        result(
            "other",
            pb::task_result::Outcome::Capture(pb::CaptureResult::default()),
        ),
    ];
    messages
        .into_iter()
        .map(|msg| pb::ProbeMessage { msg: Some(msg) }.encode_to_vec())
        .collect()
}

/// How one message's bytes are made.
#[derive(Debug, Clone)]
enum Bytes {
    /// A real message as it is.
    Seed(usize),
    /// A real message with bytes XORed in and cut.
    Damaged(usize, Vec<(usize, u8)>, usize),
    /// Two real messages back to back (protobuf merges them).
    Spliced(usize, usize),
    /// Anything.
    Noise(Vec<u8>),
}

fn bytes(seeds: usize) -> impl Strategy<Value = Bytes> {
    prop_oneof![
        1 => (0..seeds).prop_map(Bytes::Seed),
        4 => (
            0..seeds,
            proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            any::<usize>()
        )
            .prop_map(|(i, flips, cut)| Bytes::Damaged(i, flips, cut)),
        1 => (0..seeds, 0..seeds).prop_map(|(a, b)| Bytes::Spliced(a, b)),
        2 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::Noise),
    ]
}

fn make(seeds: &[Vec<u8>], how: &Bytes) -> Vec<u8> {
    match how {
        Bytes::Seed(i) => seeds[*i].clone(),
        Bytes::Damaged(i, flips, cut) => {
            let mut bytes = seeds[*i].clone();
            for (at, byte) in flips {
                let len = bytes.len();
                bytes[at % len] ^= byte;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            bytes
        }
        Bytes::Spliced(a, b) => [seeds[*a].as_slice(), seeds[*b].as_slice()].concat(),
        Bytes::Noise(bytes) => bytes.clone(),
    }
}

fn request(trace: bool) -> pb::RunRequest {
    let kind = if trace {
        pb::run_request::Kind::Trace(pb::TraceTask {
            target: "198.18.0.1".into(),
            count: 3,
            ..Default::default()
        })
    } else {
        pb::run_request::Kind::Ping(pb::PingTask {
            target: "198.18.0.1".into(),
            count: 3,
            ..Default::default()
        })
    };
    pb::RunRequest {
        from: "node-1".into(),
        kind: Some(kind),
    }
}

#[test]
fn probe_stream_messages_never_panic_the_coordinator_or_lose_the_run() {
    let seeds = seeds();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let case = (
        any::<bool>(),
        proptest::collection::vec(bytes(seeds.len()), 1..12),
    );
    run_for("probe stream messages", case, |(trace, messages)| {
        runtime.block_on(async {
            let state = coordinator();
            let mut probe = FakeProbe::attach(&state, "node-1");
            let (tx, mut rx) = requester();
            let request = request(trace);
            let (plan, link) =
                tool_run::prepare(&request, &state.registry(), None).expect("planned");
            let run = tokio::spawn(tool_run::follow(
                state.clone(),
                link,
                plan,
                record("r1", request),
                tx,
            ));
            prop_assert_eq!(probe.task().await.task_id, "r1-1");
            for how in &messages {
                // What tonic cannot decode never reaches the handler.
                if let Ok(msg) = pb::ProbeMessage::decode(make(&seeds, how).as_slice()) {
                    probe.deliver(msg).await;
                }
            }
            probe
                .finish(
                    "r1-1",
                    pb::task_result::Outcome::Ping(pb::PingSummary::default()),
                )
                .await;
            let finished = tokio::time::timeout(Duration::from_secs(600), until_finished(&mut rx))
                .await
                .map(|(_, record)| record);
            prop_assert!(finished.is_ok(), "the run never finished");
            prop_assert!(run.await.is_ok(), "the run's task panicked");
            prop_assert_eq!(state.store.run("r1").await.unwrap(), finished.ok());
            prop_assert!(state.registry().link("node-1").is_some(), "probe detached");
            Ok(())
        })
    });
}
