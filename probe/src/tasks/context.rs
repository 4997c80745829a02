//! What an engine knows of its surroundings: who runs it ([`TaskContext`])
//! and where its events go ([`Progress`], a stream of [`TaskEvent`]s). The
//! events are the engines' own types; turning them into `pb::TaskProgress`
//! is the protobuf conversion's job (`super::convert`), not the engines'.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ping::PingEvent;
use super::pmtu::search::Step;
use super::responder::ResponderReady;
use super::tcping::TcpingAttempt;
use super::trace::session::RoundReport;
use super::udp_echo::EchoEvent;
use crate::capture::CaptureEvent;

/// What a task may know about the probe that runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskContext {
    /// The probe's name (`--name`); empty when unknown. Captures name their
    /// interfaces `PROBE/IFACE` and their file `PROBE.pcapng` after it.
    pub probe_name: String,
    /// Fired by the coordinator's `StopTask`: a capture ends early but
    /// normally and still streams its file; other tasks ignore it.
    pub stop: CancellationToken,
}

/// One thing a running task reports as it happens, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    /// What became of one echo (ping).
    Ping(PingEvent),
    /// One connect attempt (tcping).
    Tcping(TcpingAttempt),
    /// What became of one UDP echo datagram.
    UdpEcho(EchoEvent),
    /// Where the responder listens, once both sockets are bound.
    ResponderReady(ResponderReady),
    /// One decided size of a path-MTU search.
    PmtuStep(Step),
    /// A trace's hops after one round.
    TraceRound(RoundReport),
    /// A capture's rings went live, or its running totals.
    Capture(CaptureEvent),
    /// One piece of a finished artifact (a capture file), in file order.
    ArtifactChunk(ArtifactChunk),
}

/// A piece of an artifact streamed back after a task.
#[derive(Clone, PartialEq, Eq)]
pub struct ArtifactChunk {
    /// The artifact's file name, e.g. `node-1.pcapng`.
    pub name: String,
    /// Where `data` starts in the file, bytes.
    pub offset: u64,
    /// The bytes (at most the capture task's chunk size).
    pub data: Vec<u8>,
    /// SHA-256 of `data`.
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for ArtifactChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactChunk")
            .field("name", &self.name)
            .field("offset", &self.offset)
            .field("len", &self.data.len())
            .finish_non_exhaustive()
    }
}

/// Where a task's events go: a channel read by whoever runs the task.
#[derive(Debug)]
pub struct Progress {
    tx: mpsc::Sender<TaskEvent>,
}

impl Progress {
    /// Events sent on `tx`.
    pub fn new(tx: mpsc::Sender<TaskEvent>) -> Self {
        Self { tx }
    }

    /// Sends `event`, waiting for room on the channel (back-pressure from
    /// the link) unless cancelled. A closed channel is not an error: the
    /// reader is gone and the task will be cancelled; its result still gets
    /// built.
    pub async fn send(&self, event: TaskEvent, cancel: &CancellationToken) {
        tokio::select! {
            biased;
            () = cancel.cancelled() => {}
            sent = self.tx.send(event) => {
                if sent.is_err() {
                    tracing::debug!("progress receiver closed");
                }
            }
        }
    }
}
