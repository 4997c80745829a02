//! Test support for run execution: a coordinator with in-memory stores and
//! a fixed wall clock, and fake probes attached to its registry through
//! tokio channels.
//!
//! A fake probe stands in for a probe's gRPC stream only: what it sends goes
//! through the link's real routing ([`crate::link::receive`],
//! [`crate::link::hang_up`]) and what it receives is exactly what the
//! coordinator queued for that stream. Nothing of the code under test is
//! replaced. Not for tests that need TLS or sockets.

use std::net::SocketAddr;
use std::sync::Arc;

use probemesh_proto::pb;
use probemesh_proto::pb::coordinator_message::Msg;
use probemesh_proto::pki::{CertAuthority, Validity};
use tokio::sync::mpsc;
use tonic::Status;

use crate::execute::RunEvents;
use crate::inventory::InventorySource;
use crate::link;
use crate::registry::{self, ConnId};
use crate::state::{Coordinator, LinkTiming, WallClock};
use crate::store::local::LocalStore;

/// The fixed wall-clock time of [`coordinator`], nanoseconds since the epoch.
pub(crate) const NOW_NS: i64 = 1_800_000_000_000_000_000;

/// A wall clock that never moves.
#[derive(Debug)]
struct FixedClock(i64);

impl WallClock for FixedClock {
    fn now_unix_ns(&self) -> i64 {
        self.0
    }
}

/// A coordinator with nothing attached: in-memory stores, no inventory,
/// default link timing, the wall clock fixed at [`NOW_NS`].
pub(crate) fn coordinator() -> Arc<Coordinator> {
    let now = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(NOW_NS))
        .unwrap_or_else(|e| panic!("fixed clock: {e}"));
    let ca = CertAuthority::generate(Validity::ca(now)).unwrap_or_else(|e| panic!("CA: {e}"));
    Arc::new(Coordinator::new(
        Arc::new(LocalStore::in_memory()),
        ca,
        InventorySource::none(),
        LinkTiming::default(),
        Arc::new(FixedClock(NOW_NS)),
    ))
}

/// The requester's end of a run: the sender a run executes with, and the
/// receiver a test reads its events from.
pub(crate) fn requester() -> (RunEvents, mpsc::Receiver<Result<pb::RunEvent, Status>>) {
    mpsc::channel(64)
}

/// A fresh record for run `run_id` of `request`, as control opens it.
pub(crate) fn record(run_id: &str, request: pb::RunRequest) -> pb::RunRecord {
    pb::RunRecord {
        run_id: run_id.into(),
        request: Some(request),
        ..Default::default()
    }
}

/// Reads run events until the run's record arrives; returns the events
/// before it, and the record.
pub(crate) async fn until_finished(
    rx: &mut mpsc::Receiver<Result<pb::RunEvent, Status>>,
) -> (Vec<pb::run_event::Event>, pb::RunRecord) {
    let mut before = Vec::new();
    loop {
        match rx.recv().await.map(|e| e.map(|e| e.event)) {
            Some(Ok(Some(pb::run_event::Event::Finished(record)))) => return (before, record),
            Some(Ok(Some(event))) => before.push(event),
            other => panic!("the run ended without its record: {other:?}"),
        }
    }
}

/// The error message of a task result, if it is an error of `kind`.
pub(crate) fn error_of(result: &pb::TaskResult, kind: pb::task_error::Kind) -> Option<&str> {
    match &result.outcome {
        Some(pb::task_result::Outcome::Error(e)) if e.kind == kind as i32 => Some(&e.message),
        _ => None,
    }
}

/// One probe attached to a test coordinator, its stream a channel.
#[derive(Debug)]
pub(crate) struct FakeProbe {
    name: String,
    conn: ConnId,
    rx: mpsc::Receiver<Result<pb::CoordinatorMessage, Status>>,
    state: Arc<Coordinator>,
    /// ClockBursts [`FakeProbe::next`] passed over.
    bursts: usize,
}

impl FakeProbe {
    /// Attaches probe `name` as [`crate::registry::test_probe`] makes it,
    /// counting the probes attached before it.
    pub(crate) fn attach(state: &Arc<Coordinator>, name: &str) -> Self {
        Self::attach_with(state, name, &[])
    }

    /// [`FakeProbe::attach`], announcing `capabilities` in its Hello.
    pub(crate) fn attach_with(state: &Arc<Coordinator>, name: &str, capabilities: &[&str]) -> Self {
        let n = u8::try_from(state.registry().list().len()).unwrap_or(u8::MAX);
        let (identity, mut hello) = registry::test_probe(n, name);
        hello.capabilities = capabilities.iter().map(|c| (*c).to_owned()).collect();
        let (tx, rx) = mpsc::channel(64);
        let addr = SocketAddr::from(([198, 18, 0, 11 + n], 40_000));
        let attached = state
            .registry()
            .attach(
                &identity,
                hello,
                addr,
                tx,
                tokio::time::Instant::now(),
                NOW_NS / 1_000_000,
                state.timing.liveness_bound(),
            )
            .unwrap_or_else(|e| panic!("attach {name}: {e}"));
        Self {
            name: name.into(),
            conn: attached.conn,
            rx,
            state: state.clone(),
            bursts: 0,
        }
    }

    /// The next message the coordinator sent down this probe's stream,
    /// clock exchanges aside (this probe answers none); `None` once the
    /// coordinator let go of the stream.
    pub(crate) async fn next(&mut self) -> Option<Msg> {
        loop {
            match self.rx.recv().await? {
                Ok(pb::CoordinatorMessage {
                    msg: Some(Msg::ClockRequest(_)),
                }) => {}
                Ok(pb::CoordinatorMessage {
                    msg: Some(Msg::ClockBurst(_)),
                }) => self.bursts += 1,
                Ok(msg) => return msg.msg,
                Err(status) => panic!("{}: stream ended with {status}", self.name),
            }
        }
    }

    /// How many ClockBursts came so far (as [`FakeProbe::next`] passed them).
    pub(crate) fn bursts(&self) -> usize {
        self.bursts
    }

    /// This attachment.
    pub(crate) fn conn(&self) -> ConnId {
        self.conn
    }

    /// A message already queued for this probe, without waiting.
    pub(crate) fn try_next(&mut self) -> Option<Msg> {
        self.rx
            .try_recv()
            .ok()
            .and_then(|m| m.ok())
            .and_then(|m| m.msg)
    }

    /// The next message, which must be a task.
    pub(crate) async fn task(&mut self) -> pb::Task {
        match self.next().await {
            Some(Msg::Task(task)) => task,
            other => panic!("{}: expected a task, got {other:?}", self.name),
        }
    }

    /// The next message, which must cancel a task; returns the task's id.
    pub(crate) async fn cancelled(&mut self) -> String {
        match self.next().await {
            Some(Msg::Cancel(c)) => c.task_id,
            other => panic!("{}: expected a cancel, got {other:?}", self.name),
        }
    }

    /// Sends progress on `task_id`.
    pub(crate) async fn progress(&self, task_id: &str, event: pb::task_progress::Event) {
        let msg = pb::probe_message::Msg::Progress(pb::TaskProgress {
            task_id: task_id.into(),
            event: Some(event),
            ..Default::default()
        });
        self.send(msg).await;
    }

    /// Sends the result of `task_id`.
    pub(crate) async fn finish(&self, task_id: &str, outcome: pb::task_result::Outcome) {
        let msg = pb::probe_message::Msg::Result(pb::TaskResult {
            task_id: task_id.into(),
            outcome: Some(outcome),
        });
        self.send(msg).await;
    }

    /// Closes the stream, as a probe that goes away does.
    pub(crate) fn hang_up(self) {
        link::hang_up(&self.state, &self.name, self.conn);
    }

    /// Passes `msg` to the link's handler as if this probe's stream carried it.
    pub(crate) async fn deliver(&self, msg: pb::ProbeMessage) {
        link::receive(&self.state, &self.name, self.conn, msg).await;
    }

    async fn send(&self, msg: pb::probe_message::Msg) {
        self.deliver(pb::ProbeMessage { msg: Some(msg) }).await;
    }
}
