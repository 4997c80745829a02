//! Tool runs executed against fake probes (channels in the registry), least
//! powerful first: planning against the registry, a run answered, then the
//! ways a run ends without its probe's answer.

use std::time::Duration;

use probemesh_proto::pb;
use probemesh_proto::pb::coordinator_message::Msg;
use probemesh_proto::pb::task_error::Kind::{Cancelled, ProbeFailure};

use super::*;
use crate::testing::{FakeProbe, coordinator, error_of, record, requester, until_finished};

fn ping(from: &str, count: u32) -> pb::RunRequest {
    pb::RunRequest {
        from: from.into(),
        kind: Some(pb::run_request::Kind::Ping(pb::PingTask {
            target: "198.18.0.1".into(),
            count,
            ..Default::default()
        })),
    }
}

fn ping_summary() -> pb::task_result::Outcome {
    pb::task_result::Outcome::Ping(pb::PingSummary {
        transmitted: 3,
        received: 3,
        ..Default::default()
    })
}

/// Starts `request` as run `r1` the way control does, on its own task.
fn start(
    state: &Arc<Coordinator>,
    request: pb::RunRequest,
    tx: RunEvents,
) -> tokio::task::JoinHandle<()> {
    let (plan, link) = prepare(&request, &state.registry(), None).expect("planned");
    tokio::spawn(follow(state.clone(), link, plan, record("r1", request), tx))
}

#[tokio::test]
async fn a_registered_probe_without_a_stream_is_offline() {
    let state = coordinator();
    FakeProbe::attach(&state, "node-1").hang_up();
    let err = prepare(&ping("node-1", 3), &state.registry(), None)
        .expect_err("offline")
        .to_string();
    assert_eq!(
        err,
        "probe 'node-1' is not connected (see `meshctl probes`)"
    );
    let err = prepare(&ping("node-9", 3), &state.registry(), None)
        .expect_err("unknown")
        .to_string();
    assert!(err.contains("no probe named 'node-9'"), "{err}");
}

#[tokio::test]
async fn an_answered_run_is_stored_and_its_progress_forwarded() {
    let state = coordinator();
    let mut probe = FakeProbe::attach(&state, "node-1");
    let (tx, mut rx) = requester();
    let run = start(&state, ping("node-1", 3), tx);
    let task = probe.task().await;
    assert_eq!(
        (task.task_id.as_str(), task.run_id.as_str()),
        ("r1-1", "r1")
    );
    let Some(pb::task::Kind::Ping(p)) = &task.kind else {
        panic!("not a ping: {task:?}");
    };
    assert_eq!((p.target.as_str(), p.count), ("198.18.0.1", 3));
    probe
        .progress(
            "r1-1",
            pb::task_progress::Event::PingReply(pb::PingReply::default()),
        )
        .await;
    probe.finish("r1-1", ping_summary()).await;
    run.await.expect("run task");
    let (before, sent) = until_finished(&mut rx).await;
    assert!(
        matches!(before.as_slice(), [pb::run_event::Event::Progress(p)] if p.task_id == "r1-1"),
        "{before:?}"
    );
    assert_eq!(
        sent.result.as_ref().and_then(|r| r.outcome.clone()),
        Some(ping_summary())
    );
    assert_eq!(state.store.run("r1").await.unwrap(), Some(sent));
}

#[tokio::test]
async fn a_requester_that_leaves_cancels_the_task_on_the_probe() {
    let state = coordinator();
    let mut probe = FakeProbe::attach(&state, "node-1");
    let (tx, rx) = requester();
    let run = start(&state, ping("node-1", 3), tx);
    assert_eq!(probe.task().await.task_id, "r1-1");
    drop(rx);
    assert_eq!(probe.cancelled().await, "r1-1");
    run.await.expect("run task");
    let stored = state.store.run("r1").await.unwrap().expect("stored");
    let result = stored.result.expect("result");
    assert_eq!(
        error_of(&result, Cancelled),
        Some("the requester went away")
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_probe_is_cancelled_at_the_bound() {
    let state = coordinator();
    let mut probe = FakeProbe::attach(&state, "node-1");
    let (tx, mut rx) = requester();
    let started = tokio::time::Instant::now();
    // Three echoes a second apart, plus the slack: 8 s.
    let run = start(&state, ping("node-1", 3), tx);
    assert_eq!(probe.task().await.task_id, "r1-1");
    assert_eq!(probe.cancelled().await, "r1-1");
    assert_eq!(started.elapsed(), Duration::from_secs(8));
    run.await.expect("run task");
    let (_, sent) = until_finished(&mut rx).await;
    let result = sent.result.expect("result");
    assert_eq!(
        error_of(&result, ProbeFailure),
        Some("probe 'node-1' did not finish within 8s")
    );
    // An answer after the bound reaches no one.
    probe.finish("r1-1", ping_summary()).await;
    assert_eq!(
        state.store.run("r1").await.unwrap().and_then(|r| r.result),
        Some(result)
    );
}

#[tokio::test]
async fn a_probe_that_disconnects_mid_run_fails_the_run() {
    let state = coordinator();
    let mut probe = FakeProbe::attach(&state, "node-1");
    let (tx, mut rx) = requester();
    let run = start(&state, ping("node-1", 3), tx);
    assert_eq!(probe.task().await.task_id, "r1-1");
    probe.hang_up();
    run.await.expect("run task");
    let (_, sent) = until_finished(&mut rx).await;
    let result = sent.result.clone().expect("result");
    assert_eq!(
        error_of(&result, ProbeFailure),
        Some("probe 'node-1' disconnected while running the task")
    );
    assert_eq!(state.store.run("r1").await.unwrap(), Some(sent));
    assert!(state.registry().link("node-1").is_none());
}

fn transfer_to(target: &str) -> pb::RunRequest {
    pb::RunRequest {
        from: "node-1".into(),
        kind: Some(pb::run_request::Kind::TcpTransfer(pb::TcpTransferTask {
            host: target.into(),
            ..Default::default()
        })),
    }
}

#[tokio::test]
async fn a_transfer_to_a_probe_runs_against_its_responder_then_stops_it() {
    let state = coordinator();
    let mut source = FakeProbe::attach(&state, "node-1");
    let mut target = FakeProbe::attach(&state, "node-2");
    let (tx, mut rx) = requester();
    let run = start(&state, transfer_to("probe:node-2"), tx);
    let responder = target.task().await;
    assert_eq!(responder.task_id, "r1-1-responder");
    assert!(matches!(responder.kind, Some(pb::task::Kind::Responder(_))));
    target
        .progress(
            "r1-1-responder",
            pb::task_progress::Event::ResponderReady(pb::ResponderReady {
                tcp_port: 40_001,
                udp_port: 40_002,
                address: "198.18.0.12".into(),
            }),
        )
        .await;
    let task = source.task().await;
    let Some(pb::task::Kind::TcpTransfer(t)) = &task.kind else {
        panic!("not a transfer: {task:?}");
    };
    assert_eq!(
        (t.host.as_str(), t.port, t.responder),
        ("198.18.0.12", 40_001, true)
    );
    let outcome = pb::task_result::Outcome::TcpTransfer(pb::TcpTransferResult {
        connected: true,
        completed: true,
        ..Default::default()
    });
    source.finish(&task.task_id, outcome.clone()).await;
    assert_eq!(target.cancelled().await, "r1-1-responder");
    run.await.expect("run task");
    let (_, sent) = until_finished(&mut rx).await;
    assert_eq!(sent.result.and_then(|r| r.outcome), Some(outcome));
}

#[tokio::test(start_paused = true)]
async fn a_responder_that_never_gets_ready_fails_the_run_before_its_task() {
    let state = coordinator();
    let mut source = FakeProbe::attach(&state, "node-1");
    let mut target = FakeProbe::attach(&state, "node-2");
    let (tx, mut rx) = requester();
    let started = tokio::time::Instant::now();
    let run = start(&state, transfer_to("probe:node-2"), tx);
    assert_eq!(target.task().await.task_id, "r1-1-responder");
    assert_eq!(target.cancelled().await, "r1-1-responder");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    run.await.expect("run task");
    let (_, sent) = until_finished(&mut rx).await;
    let result = sent.result.expect("result");
    assert_eq!(
        error_of(&result, ProbeFailure),
        Some("probe 'node-2' did not start its responder within 5s")
    );
    assert!(
        !matches!(source.try_next(), Some(Msg::Task(_))),
        "the transfer was dispatched"
    );
}
