//! Run execution: the one place that records a run's start, waits for a
//! task sent down a probe's stream, cancels it, and finishes a run (stamps,
//! stores and reports its record).
//!
//! Every kind of run executes through it: a tool run (`tool_run`), a
//! capture (`capture::run`) and a diagnosis (`diagnose::run`), which sit
//! above it. It plans nothing and knows no run kind; it sits right above
//! [`crate::state`], whose [`crate::dispatch::Dispatcher`] routes each
//! probe's answers back here.

use std::time::Duration;

use probemesh_model::verdict::Class;
use probemesh_proto::pb;
use probemesh_telemetry::task_result_class;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::Instrument as _;

use crate::dispatch::TaskHandle;
use crate::error::Error;
use crate::registry::Link;
use crate::state::Coordinator;
use crate::telemetry;

/// Where a run's events go: the requester's response stream.
pub type RunEvents = mpsc::Sender<Result<pb::RunEvent, Status>>;

/// How the wait for a dispatched task ended: the last state of a task in
/// flight. Every task starts dispatched and waiting, forwarding its
/// progress, and leaves that state exactly once, by one of these.
#[derive(Debug, Clone, PartialEq)]
enum TaskEnd {
    /// The probe sent the task's result.
    Finished(Box<pb::TaskResult>),
    /// The probe's stream went away (hung up, replaced by a reconnect, or
    /// silent for three heartbeats) before the result.
    ProbeLost,
    /// The bound passed first; the task was cancelled on the probe.
    TimedOut(Duration),
    /// The requester went away; the task was cancelled on the probe.
    RequesterLeft,
    /// The coordinator is shutting down and its grace for runs in flight
    /// passed; the task was cancelled on the probe.
    ShuttingDown,
}

impl TaskEnd {
    /// The task's result as the run records it: the probe's own, or an
    /// error saying why there is none.
    fn into_result(self, probe: &str) -> pb::TaskResult {
        match self {
            TaskEnd::Finished(result) => *result,
            TaskEnd::ProbeLost => task_error(
                pb::task_error::Kind::ProbeFailure,
                Error::ProbeLost(probe.to_owned()).to_string(),
            ),
            TaskEnd::TimedOut(bound) => task_error(
                pb::task_error::Kind::ProbeFailure,
                format!(
                    "probe '{probe}' did not finish within {}",
                    humantime::format_duration(bound)
                ),
            ),
            TaskEnd::RequesterLeft => task_error(
                pb::task_error::Kind::Cancelled,
                "the requester went away".into(),
            ),
            TaskEnd::ShuttingDown => task_error(
                pb::task_error::Kind::Cancelled,
                format!(
                    "coordinator shutting down: the task on probe '{probe}' was cancelled before its result; run it again once the coordinator is back"
                ),
            ),
        }
    }
}

/// Streams a dispatched task's progress until its result, the bound, or the
/// requester leaving, and returns its result; a task abandoned for the
/// bound or the requester is cancelled on the probe. `on_progress` sees
/// (and may stamp) each event, and says whether it is sent to the requester.
pub(crate) async fn await_task(
    state: &Coordinator,
    link: &Link,
    mut handle: TaskHandle,
    bound: Duration,
    tx: &RunEvents,
    probe: &str,
    mut on_progress: impl FnMut(&mut pb::TaskProgress) -> bool,
) -> pb::TaskResult {
    let deadline = tokio::time::sleep(bound);
    tokio::pin!(deadline);
    let mut progress = |mut p| {
        on_progress(&mut p).then_some(pb::RunEvent {
            event: Some(pb::run_event::Event::Progress(p)),
        })
    };
    let end = loop {
        tokio::select! {
            Some(p) = handle.progress.recv() => {
                if let Some(event) = progress(p) {
                    let _ = tx.send(Ok(event)).await;
                }
            }
            result = &mut handle.result => {
                // Drain progress that raced the result.
                while let Ok(p) = handle.progress.try_recv() {
                    if let Some(event) = progress(p) {
                        let _ = tx.send(Ok(event)).await;
                    }
                }
                break result.map_or(TaskEnd::ProbeLost, |r| TaskEnd::Finished(Box::new(r)));
            }
            () = &mut deadline => {
                cancel(state, link, &handle.task_id).await;
                break TaskEnd::TimedOut(bound);
            }
            () = tx.closed() => {
                cancel(state, link, &handle.task_id).await;
                break TaskEnd::RequesterLeft;
            }
            () = state.shutdown.runs_ended() => {
                cancel(state, link, &handle.task_id).await;
                break TaskEnd::ShuttingDown;
            }
        }
    };
    end.into_result(probe)
}

/// Forgets `task_id` and tells the probe on `link` to cancel it.
pub(crate) async fn cancel(state: &Coordinator, link: &Link, task_id: &str) {
    state.dispatcher.forget(task_id);
    let msg = pb::CoordinatorMessage {
        msg: Some(pb::coordinator_message::Msg::Cancel(pb::CancelTask {
            task_id: task_id.to_owned(),
        })),
    };
    let _ = link.tx.send(Ok(msg)).await;
}

/// Records a run as started (`running`) before any of its work: a run whose
/// start cannot be written is refused, so none runs unrecorded.
pub(crate) async fn begin(state: &Coordinator, record: &mut pb::RunRecord) -> Result<(), Error> {
    record.set_state(pb::RunState::Running);
    state.store.write_run(record.clone()).await
}

/// Finishes a run: puts `result` (when given) in the record, stamps its
/// duration since `started` and its state (`failed` with the reason when
/// the result is an error, else `done`), stores it, counts it in the metrics
/// and sends it to the requester as the run's last event. When the record
/// cannot be written the run ends with that error instead: nothing is
/// reported done that is not on disk.
pub(crate) async fn finish(
    state: &Coordinator,
    mut record: pb::RunRecord,
    result: Option<pb::TaskResult>,
    started: tokio::time::Instant,
    tx: &RunEvents,
) {
    if let Some(result) = result {
        record.result = Some(result);
    }
    record.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let failure = match record.result.as_ref().and_then(|r| r.outcome.as_ref()) {
        Some(pb::task_result::Outcome::Error(e)) => Some(e.message.clone()),
        _ => None,
    };
    match failure {
        Some(why) => {
            record.set_state(pb::RunState::Failed);
            record.failure = why;
        }
        None => record.set_state(pb::RunState::Done),
    }
    let stored = state
        .store
        .write_run(record.clone())
        .instrument(tracing::info_span!("probemesh.store"))
        .await
        .inspect_err(|e| {
            tracing::error!(error = %e, "could not store the run; it ends with this error");
        });
    if let Some(request) = &record.request {
        // A diagnosis is labelled by its verdict class, a tool run by how
        // its task ended.
        let result = record
            .diagnosis
            .as_ref()
            .and_then(|d| d.verdict.as_ref())
            .and_then(|v| Class::try_from(v.class()).ok())
            .map(Class::as_str)
            .or_else(|| record.result.as_ref().map(task_result_class))
            .unwrap_or("unspecified");
        state
            .metrics
            .run_finished(telemetry::request_kind(request), result, started.elapsed());
    }
    tracing::info!(run_id = %record.run_id, duration_ms = record.duration_ms, "run finished");
    let last = match stored {
        Ok(()) => Ok(pb::RunEvent {
            event: Some(pb::run_event::Event::Finished(record)),
        }),
        Err(e) => {
            record.set_state(pb::RunState::Failed);
            record.failure = e.to_string();
            state.store.note_run(record);
            Err(Status::from(e))
        }
    };
    let _ = tx.send(last).await;
}

/// A task result that is an error of `kind`: how a run records a task that
/// could not run or ended without the probe's result.
pub(crate) fn task_error(kind: pb::task_error::Kind, message: String) -> pb::TaskResult {
    pb::TaskResult {
        task_id: String::new(),
        outcome: Some(pb::task_result::Outcome::Error(pb::TaskError {
            kind: kind.into(),
            message,
        })),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use probemesh_proto::pb;
    use probemesh_proto::pb::task_error::Kind::{Cancelled, ProbeFailure};

    use super::*;
    use crate::testing::{FakeProbe, coordinator, error_of, record, requester, until_finished};

    fn ping_summary() -> pb::task_result::Outcome {
        pb::task_result::Outcome::Ping(pb::PingSummary {
            transmitted: 3,
            received: 3,
            ..Default::default()
        })
    }

    #[test]
    fn every_ending_but_a_result_is_an_error_saying_why() {
        let probe_lost = TaskEnd::ProbeLost.into_result("node-1");
        assert_eq!(
            error_of(&probe_lost, ProbeFailure),
            Some("probe 'node-1' disconnected while running the task")
        );
        let timed_out = TaskEnd::TimedOut(Duration::from_secs(8)).into_result("node-1");
        assert_eq!(
            error_of(&timed_out, ProbeFailure),
            Some("probe 'node-1' did not finish within 8s")
        );
        let left = TaskEnd::RequesterLeft.into_result("node-1");
        assert_eq!(error_of(&left, Cancelled), Some("the requester went away"));
        let result = pb::TaskResult {
            task_id: "r-1".into(),
            outcome: Some(ping_summary()),
        };
        assert_eq!(
            TaskEnd::Finished(Box::new(result.clone())).into_result("node-1"),
            result
        );
    }

    #[tokio::test]
    async fn finishing_stores_the_record_and_sends_it_last() {
        let state = coordinator();
        let (tx, mut rx) = requester();
        let result = pb::TaskResult {
            task_id: "r1-1".into(),
            outcome: Some(ping_summary()),
        };
        let started = tokio::time::Instant::now();
        finish(
            &state,
            record("r1", pb::RunRequest::default()),
            Some(result.clone()),
            started,
            &tx,
        )
        .await;
        let (before, sent) = until_finished(&mut rx).await;
        assert!(before.is_empty(), "{before:?}");
        assert_eq!(sent.result, Some(result));
        assert_eq!(sent.state(), pb::RunState::Done);
        assert_eq!(state.store.run("r1").await.unwrap(), Some(sent));
    }

    #[tokio::test]
    async fn a_run_ending_without_its_result_is_recorded_failed_with_the_reason() {
        let state = coordinator();
        let (tx, mut rx) = requester();
        let lost = TaskEnd::ProbeLost.into_result("node-1");
        finish(
            &state,
            record("r1", pb::RunRequest::default()),
            Some(lost),
            tokio::time::Instant::now(),
            &tx,
        )
        .await;
        let (_, sent) = until_finished(&mut rx).await;
        assert_eq!(sent.state(), pb::RunState::Failed);
        assert_eq!(
            sent.failure,
            "probe 'node-1' disconnected while running the task"
        );
        assert_eq!(state.store.run("r1").await.unwrap(), Some(sent));
    }

    #[tokio::test]
    async fn progress_is_stamped_and_forwarded_until_the_result() {
        let state = coordinator();
        let mut probe = FakeProbe::attach(&state, "node-1");
        let link = state.registry().link("node-1").expect("attached");
        let (tx, mut rx) = requester();
        let task = pb::Task {
            task_id: "r1-1".into(),
            ..Default::default()
        };
        let handle = state
            .dispatcher
            .dispatch("node-1", &link, task)
            .await
            .expect("dispatched");
        assert_eq!(probe.task().await.task_id, "r1-1");
        probe
            .progress(
                "r1-1",
                pb::task_progress::Event::PingReply(pb::PingReply::default()),
            )
            .await;
        probe.finish("r1-1", ping_summary()).await;
        let stamp = |p: &mut pb::TaskProgress| {
            p.probe = "node-1".into();
            true
        };
        let result = await_task(
            &state,
            &link,
            handle,
            Duration::from_secs(10),
            &tx,
            "node-1",
            stamp,
        )
        .await;
        assert_eq!(result.outcome, Some(ping_summary()));
        let Some(Ok(pb::RunEvent {
            event: Some(pb::run_event::Event::Progress(p)),
        })) = rx.recv().await
        else {
            panic!("no progress forwarded");
        };
        assert_eq!((p.task_id.as_str(), p.probe.as_str()), ("r1-1", "node-1"));
    }
}
