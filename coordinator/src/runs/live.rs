//! Where each run in flight on this coordinator is, for readers other than
//! its requester (the web view): the last step it reported and how much
//! progress has streamed.
//!
//! A run's events pass through [`LiveRuns::follow`] on their way to the
//! requester's stream, which notes them; the entry goes when the run's
//! record is sent or the requester leaves. The requester sees exactly what
//! it saw before, in order, and its leaving still ends the run: the relay
//! drops the run's side of the channel as soon as the requester's closes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use probemesh_proto::pb;
use tokio::sync::mpsc;
use tonic::Status;

/// A run's events, as its executor sends them.
type Events = mpsc::Sender<Result<pb::RunEvent, Status>>;

/// What is known of one run in flight.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveRun {
    /// The last step it reported (`meshctl probe` runs).
    pub step: Option<pb::RunStep>,
    /// Progress events streamed so far (replies, hops, packets ...).
    pub progress: u64,
}

/// The runs in flight on this coordinator.
#[derive(Debug, Clone, Default)]
pub struct LiveRuns {
    runs: Arc<Mutex<HashMap<String, LiveRun>>>,
}

impl LiveRuns {
    /// Relays `run_id`'s events to `requester`, noting them; returns the
    /// sender the run's executor uses. Must be called inside a runtime.
    pub fn follow(&self, run_id: &str, requester: Events) -> Events {
        let (tx, mut rx) = mpsc::channel(requester.max_capacity());
        self.lock().insert(run_id.to_owned(), LiveRun::default());
        let live = self.clone();
        let run_id = run_id.to_owned();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    biased;
                    event = rx.recv() => event,
                    () = requester.closed() => None,
                };
                let Some(event) = event else { break };
                let finished = live.note(&run_id, &event);
                if requester.send(event).await.is_err() || finished {
                    break;
                }
            }
            live.lock().remove(&run_id);
            // The events after the record, if any, still reach the requester.
            while let Ok(event) = rx.try_recv() {
                let _ = requester.try_send(event);
            }
        });
        tx
    }

    /// The runs in flight now, by id.
    pub fn snapshot(&self) -> HashMap<String, LiveRun> {
        self.lock().clone()
    }

    /// Notes `event` for `run_id`; whether it is the run's record (its end).
    fn note(&self, run_id: &str, event: &Result<pb::RunEvent, Status>) -> bool {
        let Ok(pb::RunEvent { event: Some(event) }) = event else {
            return false;
        };
        let mut runs = self.lock();
        let Some(run) = runs.get_mut(run_id) else {
            return false;
        };
        match event {
            pb::run_event::Event::Step(step) => run.step = Some(step.clone()),
            pb::run_event::Event::Progress(_) => run.progress += 1,
            pb::run_event::Event::Finished(_) => return true,
            pb::run_event::Event::Accepted(_) => {}
        }
        false
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, LiveRun>> {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(phase: &str, done: u32) -> Result<pb::RunEvent, Status> {
        Ok(pb::RunEvent {
            event: Some(pb::run_event::Event::Step(pb::RunStep {
                phase: phase.into(),
                done,
                total: 3,
                detail: String::new(),
            })),
        })
    }

    fn finished() -> Result<pb::RunEvent, Status> {
        Ok(pb::RunEvent {
            event: Some(pb::run_event::Event::Finished(pb::RunRecord::default())),
        })
    }

    #[tokio::test]
    async fn the_requester_gets_every_event_and_the_run_is_live_until_its_record() {
        let live = LiveRuns::default();
        let (requester, mut seen) = mpsc::channel(8);
        let run = live.follow("r1", requester);
        run.send(step("checks", 1)).await.expect("send");
        let first = seen.recv().await.expect("relayed");
        assert_eq!(first.ok(), step("checks", 1).ok());
        let now = live.snapshot();
        assert_eq!(now["r1"].step.as_ref().map(|s| s.done), Some(1));
        run.send(finished()).await.expect("send");
        assert!(matches!(
            seen.recv().await,
            Some(Ok(pb::RunEvent {
                event: Some(pb::run_event::Event::Finished(_))
            }))
        ));
        tokio::time::timeout(std::time::Duration::from_secs(1), async {
            while !live.snapshot().is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the entry goes with the record");
    }

    #[tokio::test]
    async fn a_requester_leaving_closes_the_runs_side_and_forgets_it() {
        let live = LiveRuns::default();
        let (requester, seen) = mpsc::channel(8);
        let run = live.follow("r2", requester);
        drop(seen);
        tokio::time::timeout(std::time::Duration::from_secs(1), run.closed())
            .await
            .expect("the run sees its requester leave");
        assert!(live.snapshot().is_empty());
    }
}
