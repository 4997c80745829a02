//! What an engine knows of its surroundings: who runs it ([`TaskContext`])
//! and where its events go ([`Progress`]). Each engine sends its own event
//! type (`PingEvent`, `Step`, ...); turning them into `pb::TaskProgress` is
//! the protobuf conversion's job (the `convert` module), not the engines'. This
//! module imports no engine: it sits below them.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a task may know about the probe that runs it.
#[derive(Debug, Clone, Default)]
pub struct TaskContext {
    /// The probe's name (`--name`); empty when unknown. Captures name their
    /// interfaces `PROBE/IFACE` and their file `PROBE.pcapng` after it.
    pub probe_name: String,
    /// Fired by the coordinator's `StopTask`: a capture ends early but
    /// normally and still streams its file; other tasks ignore it.
    pub stop: CancellationToken,
    /// The coordinator's `ArmCapture`: the instant of a capture told to
    /// wait for it; other tasks ignore it.
    pub arm: crate::capture::ArmSignal,
}

/// Where a task's events of type `E` go: a channel read by whoever runs
/// the task.
#[derive(Debug)]
pub struct Progress<E> {
    tx: mpsc::Sender<E>,
}

impl<E> Progress<E> {
    /// Events sent on `tx`.
    pub fn new(tx: mpsc::Sender<E>) -> Self {
        Self { tx }
    }

    /// Sends `event`, waiting for room on the channel (back-pressure from
    /// the link) unless cancelled. A closed channel is not an error: the
    /// reader is gone and the task will be cancelled; its result still gets
    /// built.
    pub async fn send(&self, event: E, cancel: &CancellationToken) {
        let tx = &self.tx;
        if cancel.is_cancelled() {
            return;
        }
        // The channel has room nearly always: then no cancellation waiter
        // needs setting up and tearing down for the event.
        let event = match tx.try_send(event) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(event)) => event,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("progress receiver closed");
                return;
            }
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => {}
            sent = tx.send(event) => {
                if sent.is_err() {
                    tracing::debug!("progress receiver closed");
                }
            }
        }
    }
}
