//! Clock exchanges on each probe's stream, and fresh ones on demand.
//!
//! Each attached probe gets a burst of [`CLOCK_BURST`] exchanges, then one
//! per `clock_interval` (tens of seconds: idle probes cost little). A run
//! that is about to arm on the probes' clocks (a capture) asks for a fresh
//! burst ([`clock_burst`]: on the stream, and a `ClockBurst` for the UDP
//! exchange, `clock_udp`) and reads the estimate after
//! [`CLOCK_BURST_WAIT`], so its bound is as tight as a busy probe's.
//! Replies come back through the link's routing into the registry's
//! estimator ([`crate::clock`]); this module only asks.

use std::sync::Arc;
use std::time::Duration;

use probemesh_proto::pb;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::Instrument as _;

use crate::registry::Link;
use crate::state::Coordinator;

/// Clock exchanges in a burst: right after attach, before the periodic
/// ones, and when a run is about to arm on the probe's clock.
pub(crate) const CLOCK_BURST: u32 = 8;
/// Spacing of a burst's exchanges, milliseconds: the least a probe accepts
/// for its UDP Opens. A capture waits for the burst, so its span is on the
/// run's critical path; eight exchanges 5 ms apart still sample 35 ms of
/// the path's queueing, and the bound is that of the best one whatever the
/// spacing.
const CLOCK_BURST_GAP_MS: u64 = 5;
const CLOCK_BURST_GAP: Duration = Duration::from_millis(CLOCK_BURST_GAP_MS);
/// Longest a run waits after asking for a burst ([`clock_burst`]) before
/// it reads the clocks: the burst's span and a few more gaps for the last
/// replies on a loaded machine. A capture reads them as soon as every
/// observer's burst is in.
pub(crate) const CLOCK_BURST_WAIT: Duration =
    Duration::from_millis(CLOCK_BURST_GAP_MS * (CLOCK_BURST as u64 + 4));

/// Sends clock requests: a burst after attach, then one per `clock_interval`,
/// until the registry lets go of the link (a weak sender: this task never
/// keeps a stream open by itself).
pub(crate) async fn run(state: Arc<Coordinator>, weak: WeakLink) {
    if !stream_burst(&state, &weak).await {
        return;
    }
    loop {
        tokio::time::sleep(state.timing.clock_interval).await;
        if !send_clock_request(&state, &weak).await {
            return;
        }
    }
}

/// Asks for fresh clock exchanges with the probe on `link`, for a run about
/// to use its clock: a `ClockBurst` for its UDP session and a burst of
/// requests on the stream. Returns at once; the exchanges are in after
/// [`CLOCK_BURST_WAIT`].
pub(crate) fn clock_burst(state: &Arc<Coordinator>, link: &Link) {
    let udp = pb::CoordinatorMessage {
        msg: Some(pb::coordinator_message::Msg::ClockBurst(pb::ClockBurst {
            count: CLOCK_BURST,
            gap_ms: u32::try_from(CLOCK_BURST_GAP_MS).unwrap_or(u32::MAX),
        })),
    };
    // A stream too busy to take it has a burst coming from the requests below.
    let _ = link.tx.try_send(Ok(udp));
    let state = state.clone();
    let weak = link.tx.downgrade();
    tokio::spawn(async move { stream_burst(&state, &weak).await }.in_current_span());
}

type WeakLink = mpsc::WeakSender<Result<pb::CoordinatorMessage, Status>>;

/// Sends [`CLOCK_BURST`] clock requests [`CLOCK_BURST_GAP`] apart; false
/// once the stream is gone.
async fn stream_burst(state: &Coordinator, weak: &WeakLink) -> bool {
    for i in 0..CLOCK_BURST {
        if i > 0 {
            tokio::time::sleep(CLOCK_BURST_GAP).await;
        }
        if !send_clock_request(state, weak).await {
            return false;
        }
    }
    true
}

/// Sends one clock request stamped now; false once the stream is gone. The
/// request's `seq` is only echoed back: it numbers nothing here.
async fn send_clock_request(state: &Coordinator, weak: &WeakLink) -> bool {
    let Some(tx) = weak.upgrade() else {
        return false;
    };
    let req = pb::CoordinatorMessage {
        msg: Some(pb::coordinator_message::Msg::ClockRequest(
            pb::ClockRequest {
                seq: 0,
                t1_ns: state.clock.now_unix_ns(),
            },
        )),
    };
    tx.send(Ok(req)).await.is_ok()
}
