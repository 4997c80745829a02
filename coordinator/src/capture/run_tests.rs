//! Capture runs executed against fake probes (channels in the registry):
//! arming for one instant, observers that are offline or never arm, early
//! stop, and what the record keeps.

use std::time::Duration;

use probemesh_proto::pb;
use probemesh_proto::pb::coordinator_message::Msg;
use probemesh_proto::pb::task_error::Kind::ProbeFailure;

use super::plan::{CapturePlan, plan};
use super::run::{follow, start};
use crate::clock::{ClockPath, Exchange};
use crate::state::{Coordinator, PayloadPolicy};
use crate::testing::{FakeProbe, NOW_NS, coordinator, error_of, record, requester, until_finished};

fn capture_plan(state: &Coordinator, on: &str) -> CapturePlan {
    let request = pb::CaptureRequest {
        on: vec![on.into()],
        filter: "tcp port 30080".into(),
        duration_us: 2_000_000,
        ..Default::default()
    };
    plan(&request, PayloadPolicy::default(), &state.registry(), None).expect("planned")
}

fn armed(at_ns: i64) -> pb::task_progress::Event {
    pb::task_progress::Event::CaptureArmed(pb::CaptureArmed {
        interfaces: vec![pb::ArmedInterface {
            interface: "eth0".into(),
            armed_unix_ns: at_ns,
        }],
        ring_open_us: 3_000,
        ready_margin_us: None,
    })
}

/// Armed at `at_ns` (its clock), having been ready `margin_us` before its
/// instant (negative: after it).
fn armed_with_margin(at_ns: i64, margin_us: i64) -> pb::task_progress::Event {
    pb::task_progress::Event::CaptureArmed(pb::CaptureArmed {
        interfaces: vec![pb::ArmedInterface {
            interface: "eth0".into(),
            armed_unix_ns: at_ns,
        }],
        ring_open_us: 3_000,
        ready_margin_us: Some(margin_us),
    })
}

fn captured() -> pb::task_result::Outcome {
    pb::task_result::Outcome::Capture(pb::CaptureResult {
        stop: pb::CaptureStop::Duration.into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn observers_arm_for_one_instant_and_an_offline_one_is_recorded_as_such() {
    let state = coordinator();
    let mut node1 = FakeProbe::attach(&state, "node-1");
    FakeProbe::attach(&state, "node-2").hang_up();
    let plan = capture_plan(&state, "node-1:eth0,node-2:eth0");
    let (tx, mut rx) = requester();
    let run = tokio::spawn(follow(
        state.clone(),
        plan,
        record("r1", pb::RunRequest::default()),
        tx,
    ));
    let task = node1.task().await;
    assert_eq!(task.task_id, "r1-c1");
    let Some(pb::task::Kind::Capture(c)) = &task.kind else {
        panic!("not a capture: {task:?}");
    };
    // No clock estimate yet: the least lead, on the coordinator's clock.
    assert_eq!(c.arm_at_unix_ns, NOW_NS + 500_000_000);
    assert_eq!(c.interfaces, ["eth0"]);
    node1.progress("r1-c1", armed(c.arm_at_unix_ns)).await;
    node1.finish("r1-c1", captured()).await;
    run.await.expect("run task");

    let (before, sent) = until_finished(&mut rx).await;
    assert!(
        matches!(before.as_slice(), [pb::run_event::Event::Progress(p)] if p.probe == "node-1"),
        "progress is stamped with its observer: {before:?}"
    );
    let results: Vec<_> = sent
        .observers
        .iter()
        .map(|o| (o.probe.as_str(), o.result.clone().expect("result")))
        .collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].0, "node-1");
    assert_eq!(results[0].1.outcome, Some(captured()));
    assert_eq!(results[1].0, "node-2");
    assert_eq!(
        error_of(&results[1].1, ProbeFailure),
        Some("probe 'node-2' is not connected (see `meshctl probes`)")
    );
    let correlation = sent.correlation.clone().expect("correlation");
    assert_eq!(
        correlation.skipped,
        "not correlated: node-1: no complete capture; node-2: no complete capture"
    );
    assert_eq!(sent.timing.map(|t| t.capture_skew_us), Some(0));
    assert_eq!(state.store.run("r1").await.unwrap(), Some(sent));
}

#[tokio::test(start_paused = true)]
async fn arming_is_awaited_at_most_so_long_and_stop_reaches_every_observer() {
    let state = coordinator();
    let mut node1 = FakeProbe::attach(&state, "node-1");
    let mut node2 = FakeProbe::attach(&state, "node-2");
    let plan = capture_plan(&state, "node-1:eth0,node-2:eth0");
    let (tx, _rx) = requester();
    let mut running = start(state.clone(), plan, "r1", tx).await;
    let arm_at = match node1.task().await.kind {
        Some(pb::task::Kind::Capture(c)) => c.arm_at_unix_ns,
        other => panic!("not a capture: {other:?}"),
    };
    assert_eq!(node2.task().await.task_id, "r1-c2");
    node1.progress("r1-c1", armed(arm_at + 1_000)).await;
    let started = tokio::time::Instant::now();
    assert_eq!(running.armed(Duration::from_secs(5)).await, 1);
    assert_eq!(started.elapsed(), Duration::from_secs(5));

    running.stop().await;
    for (probe, task_id) in [(&mut node1, "r1-c1"), (&mut node2, "r1-c2")] {
        match probe.next().await {
            Some(Msg::Stop(s)) => assert_eq!(s.task_id, task_id),
            other => panic!("expected a stop for {task_id}, got {other:?}"),
        }
        probe.finish(task_id, captured()).await;
    }
    let outcome = running.finish().await;
    assert_eq!(outcome.observers.len(), 2);
    assert!(
        outcome
            .observers
            .iter()
            .all(|o| o.result.as_ref().and_then(|r| r.outcome.clone()) == Some(captured()))
    );
}

#[tokio::test(start_paused = true)]
async fn a_capture_arms_on_the_clock_of_a_fresh_burst_not_an_older_better_sample() {
    let state = coordinator();
    let mut node1 = FakeProbe::attach(&state, "node-1");
    // A minute ago: offset +1 ms, round trip 20 us (better than any to come).
    let old = Exchange {
        path: ClockPath::Udp,
        t1_ns: NOW_NS - 60_000_000_000,
        t2_ns: NOW_NS - 60_000_000_000 + 1_010_000,
        t3_ns: NOW_NS - 60_000_000_000 + 1_010_000,
        t4_ns: NOW_NS - 60_000_000_000 + 20_000,
    };
    state.registry().observe_clock("node-1", node1.conn(), old);
    let plan = capture_plan(&state, "node-1:eth0");
    let (tx, _rx) = requester();
    let run = tokio::spawn(follow(
        state.clone(),
        plan,
        record("r1", pb::RunRequest::default()),
        tx,
    ));
    tokio::task::yield_now().await;
    // The burst's reply: offset +2 ms, round trip 400 us, completed now.
    node1
        .deliver(pb::ProbeMessage {
            msg: Some(pb::probe_message::Msg::ClockReply(pb::ClockReply {
                seq: 0,
                t1_ns: NOW_NS - 400_000,
                t2_ns: NOW_NS + 2_000_000 - 200_000,
                t3_ns: NOW_NS + 2_000_000 - 200_000,
            })),
        })
        .await;
    let task = node1.task().await;
    assert_eq!(node1.bursts(), 1, "the UDP exchange was asked for a burst");
    let Some(pb::task::Kind::Capture(c)) = &task.kind else {
        panic!("not a capture: {task:?}");
    };
    assert_eq!(c.arm_at_unix_ns, NOW_NS + 500_000_000 + 2_000_000);
    assert!(c.clock_note.contains("± 200.0 us"), "{}", c.clock_note);
    node1.finish("r1-c1", captured()).await;
    run.await.expect("run task");
}

/// The next message already queued for `probe` besides clock exchanges.
fn queued(probe: &mut FakeProbe) -> Option<Msg> {
    loop {
        match probe.try_next() {
            Some(Msg::ClockRequest(_) | Msg::ClockBurst(_)) => {}
            other => return other,
        }
    }
}

fn told(probe: &mut FakeProbe) -> pb::ArmCapture {
    match queued(probe) {
        Some(Msg::Arm(a)) => a,
        other => panic!("expected an instant, got {other:?}"),
    }
}

fn ready() -> pb::task_progress::Event {
    pb::task_progress::Event::CaptureReady(pb::CaptureReady {
        ready_in_us: 35_000,
    })
}

/// Lets the spawned tasks run until each is waiting.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn observers_that_can_wait_are_told_one_instant_once_every_one_is_ready() {
    let state = coordinator();
    let can_wait = [probemesh_proto::CAPTURE_ARM_WHEN_TOLD];
    let mut node1 = FakeProbe::attach_with(&state, "node-1", &can_wait);
    let mut node2 = FakeProbe::attach_with(&state, "node-2", &can_wait);
    let plan = capture_plan(&state, "node-1:eth0,node-2:eth0");
    let (tx, mut rx) = requester();
    let running = start(state.clone(), plan, "r1", tx).await;
    for (probe, task_id) in [(&mut node1, "r1-c1"), (&mut node2, "r1-c2")] {
        let task = probe.task().await;
        assert_eq!(task.task_id, task_id);
        let Some(pb::task::Kind::Capture(c)) = task.kind else {
            panic!("not a capture: {task:?}");
        };
        assert!(c.arm_when_told, "told to wait for its instant");
        assert_eq!((c.arm_at_unix_ns, c.clock_note.as_str()), (0, ""));
    }
    node1.progress("r1-c1", ready()).await;
    // The clocks are measured (these probes answer no exchange: the burst
    // is waited out) while node-2 still sets up: nobody is told yet.
    tokio::time::sleep(crate::clock_sync::CLOCK_BURST_WAIT * 2).await;
    settle().await;
    assert!(queued(&mut node1).is_none(), "told before node-2 was ready");
    let now_ns = state.clock.now_unix_ns();
    node2.progress("r1-c2", ready()).await;
    settle().await;
    let (a1, a2) = (told(&mut node1), told(&mut node2));
    assert_eq!(
        (a1.task_id.as_str(), a2.task_id.as_str()),
        ("r1-c1", "r1-c2")
    );
    // No clock measured: offset 0 on both, and the least lead.
    assert_eq!(a1.arm_at_unix_ns, a2.arm_at_unix_ns);
    assert_eq!(a1.arm_at_unix_ns - now_ns, 30_000_000);
    assert!(a1.clock_note.ends_with("run r1"), "{}", a1.clock_note);
    for (probe, task_id, at) in [(&node1, "r1-c1", &a1), (&node2, "r1-c2", &a2)] {
        probe.progress(task_id, armed(at.arm_at_unix_ns)).await;
        probe.finish(task_id, captured()).await;
    }
    let timing = running.finish().await.timing;
    assert_eq!(timing.capture_skew_us, 0);
    assert_eq!(
        timing.arming_lead_ms,
        (crate::clock_sync::CLOCK_BURST_WAIT * 2).as_millis() as i64 + 30
    );
    while let Ok(event) = rx.try_recv() {
        let event = event.expect("event").event;
        assert!(
            !matches!(&event, Some(pb::run_event::Event::Progress(p))
                if matches!(p.event, Some(pb::task_progress::Event::CaptureReady(_)))),
            "readiness stays between the observers and the coordinator: {event:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_observer_ready_late_is_told_the_same_instant_and_one_that_fails_is_not_waited_for() {
    let state = coordinator();
    let can_wait = [probemesh_proto::CAPTURE_ARM_WHEN_TOLD];
    let mut probes = [
        FakeProbe::attach_with(&state, "node-1", &can_wait),
        FakeProbe::attach_with(&state, "node-2", &can_wait),
        FakeProbe::attach_with(&state, "node-3", &can_wait),
    ];
    let plan = capture_plan(&state, "node-1:eth0,node-2:eth0,node-3:eth0");
    let (tx, _rx) = requester();
    let mut running = start(state.clone(), plan, "r1", tx).await;
    for probe in &mut probes {
        probe.task().await;
    }
    let [node1, node2, node3] = &mut probes;
    node1.progress("r1-c1", ready()).await;
    node3
        .finish(
            "r1-c3",
            pb::task_result::Outcome::Error(pb::TaskError {
                kind: ProbeFailure.into(),
                message: "no CAP_NET_RAW".into(),
            }),
        )
        .await;
    // node-2 never gets ready in time: node-1 is told after the wait.
    tokio::time::sleep(Duration::from_secs(6)).await;
    settle().await;
    let first = told(node1);
    assert!(queued(node2).is_none());
    node2.progress("r1-c2", ready()).await;
    settle().await;
    assert_eq!(told(node2).arm_at_unix_ns, first.arm_at_unix_ns);
    assert!(queued(node3).is_none(), "a failed observer is not told");
    node1.progress("r1-c1", armed(first.arm_at_unix_ns)).await;
    node2
        .progress("r1-c2", armed(first.arm_at_unix_ns + 1_000_000))
        .await;
    assert_eq!(running.armed(Duration::from_secs(1)).await, 2);
    node1.finish("r1-c1", captured()).await;
    node2.finish("r1-c2", captured()).await;
    let timing = running.finish().await.timing;
    assert_eq!((timing.capture_skew_us, timing.arm_late_us), (1_000, 1_000));
}

#[tokio::test(start_paused = true)]
async fn with_one_observer_that_cannot_wait_every_one_is_told_its_instant_up_front() {
    let state = coordinator();
    let mut node1 =
        FakeProbe::attach_with(&state, "node-1", &[probemesh_proto::CAPTURE_ARM_WHEN_TOLD]);
    let mut node2 = FakeProbe::attach(&state, "node-2");
    let plan = capture_plan(&state, "node-1:eth0,node-2:eth0");
    let (tx, _rx) = requester();
    let running = start(state.clone(), plan, "r1", tx).await;
    for (probe, task_id) in [(&mut node1, "r1-c1"), (&mut node2, "r1-c2")] {
        let Some(pb::task::Kind::Capture(c)) = probe.task().await.kind else {
            panic!("not a capture");
        };
        assert!(!c.arm_when_told);
        assert!(c.arm_at_unix_ns > 0 && !c.clock_note.is_empty(), "{c:?}");
        probe.finish(task_id, captured()).await;
    }
    assert_eq!(running.finish().await.timing.arming_lead_ms, 500);
}

#[tokio::test(start_paused = true)]
async fn the_margin_to_the_instant_gives_the_set_up_and_tells_a_late_ring_from_a_late_wake_up() {
    let state = coordinator();
    let mut node1 = FakeProbe::attach(&state, "node-1");
    let mut node2 = FakeProbe::attach(&state, "node-2");
    let plan = capture_plan(&state, "node-1:eth0,node-2:eth0");
    let (tx, _rx) = requester();
    let running = start(state.clone(), plan, "r1", tx).await;
    let mut arm_at = Vec::new();
    for probe in [&mut node1, &mut node2] {
        match probe.task().await.kind {
            Some(pb::task::Kind::Capture(c)) => arm_at.push(c.arm_at_unix_ns),
            other => panic!("not a capture: {other:?}"),
        }
    }
    // node-1 was ready 480 ms ahead of its instant (500 ms away: 20 ms of
    // set-up) and woke 40 us late; node-2 was ready only 3 ms after it.
    node1
        .progress("r1-c1", armed_with_margin(arm_at[0] + 40_000, 480_000))
        .await;
    node2
        .progress("r1-c2", armed_with_margin(arm_at[1] + 3_100_000, -3_000))
        .await;
    for (probe, task_id) in [(&mut node1, "r1-c1"), (&mut node2, "r1-c2")] {
        probe.finish(task_id, captured()).await;
    }
    let timing = running.finish().await.timing;
    assert_eq!(
        (
            timing.arming_lead_ms,
            timing.arm_late_us,
            timing.ready_late,
            timing.ready_margin_us
        ),
        (500, 3_100, 1, -3_000)
    );
    assert_eq!(timing.capture_skew_us, 3_060);
}
