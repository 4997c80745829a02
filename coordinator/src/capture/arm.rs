//! Choosing a capture's common instant and telling it to the observers.
//!
//! The coordinator first measures every observer's clock afresh
//! ([`fresh_clocks`]; not while the observers set up, whose real-time ring
//! set-up delays the probes' clock replies: a debug build's bound grew from
//! tens of microseconds to milliseconds). A probe that announces
//! [`probemesh_proto::CAPTURE_ARM_WHEN_TOLD`] then sets its capture up and
//! reports `CaptureReady`. Once every observer is ready (or has failed),
//! [`arm_when_ready`] picks
//! the instant [`TOLD_LEAD`] plus the worst clock round trip ahead and
//! sends each its `ArmCapture`, in its own clock. The lead is then the
//! set-up this run measured, not a guess of it. An older probe is told
//! its instant up front in the task, [`LEGACY_LEAD`] ahead.

use std::sync::Arc;
use std::time::Duration;

use probemesh_proto::pb;
use tokio::sync::watch;

use super::plan::Observer;
use crate::registry::Link;
use crate::state::Coordinator;

/// Lead of an instant told in the task, to a probe that cannot be told
/// later: the task's trip plus a cold ring set-up, which took up to 340 ms
/// in the lab (a late observer logs "capture ready after its arming
/// instant").
pub(super) const LEGACY_LEAD: Duration = Duration::from_millis(500);
/// Lead of an instant told once every observer is ready, beyond the worst
/// clock round trip (which covers the message's way to the probe): the
/// probe binds its rings 20 ms before the instant (the bind takes the
/// kernel's RTNL lock), plus room for its stream and capture threads to wake
/// on a loaded 2-core machine.
const TOLD_LEAD: Duration = Duration::from_millis(30);
/// Longest wait for every observer to be ready before the instant is
/// chosen for those that are; one ready later is told the same instant,
/// past by then, and arms at once (late, as the run's timing shows).
pub(super) const READY_WAIT: Duration = Duration::from_secs(5);
/// How often a capture looks whether every observer's fresh clock burst
/// is in (the registry's estimators are fed from the links' tasks).
const BURST_POLL: Duration = Duration::from_millis(2);

/// An observer's clock as the coordinator sees it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ObserverClock {
    pub offset_ns: i64,
    pub error_ns: i64,
}

impl ObserverClock {
    /// The instant `t0_ns` (coordinator clock) on this observer's clock.
    pub fn local(self, t0_ns: i64) -> i64 {
        t0_ns.saturating_add(self.offset_ns)
    }

    /// What the pcapng section comment says of this clock.
    pub fn note(self, run_id: &str) -> String {
        format!(
            "probe clock offset {:+.1} us ± {:.1} us vs the coordinator; run {run_id}",
            self.offset_ns as f64 / 1e3,
            self.error_ns as f64 / 1e3,
        )
    }
}

/// The common instant, once chosen, with the clocks it was told in.
#[derive(Debug, Clone, Default)]
pub(super) struct CommonInstant {
    /// Coordinator clock, Unix ns.
    pub t0_ns: i64,
    /// One per observer, in the plan's order.
    pub clocks: Vec<ObserverClock>,
    /// Waiting for fresh clock exchanges.
    pub clock_wait: Duration,
    /// Dispatch (after the clocks) to the instant.
    pub lead: Duration,
}

/// Where an observer is on the way to arming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Readiness {
    /// Dispatched, not yet ready.
    SettingUp,
    /// Set up, waiting for its instant.
    Ready,
    /// Ended, or never dispatched, without being ready.
    Gone,
}

/// Whether every observer that is online can be told its instant later.
pub(super) fn all_told_later(
    state: &Coordinator,
    observers: &[Observer],
    links: &[Option<Link>],
) -> bool {
    let registry = state.registry();
    observers.iter().zip(links).all(|(o, link)| {
        link.is_none()
            || registry.hello(&o.probe).is_some_and(|h| {
                h.capabilities
                    .iter()
                    .any(|c| c == probemesh_proto::CAPTURE_ARM_WHEN_TOLD)
            })
    })
}

/// The instant for observers told it up front, in the task:
/// [`LEGACY_LEAD`] ahead (four worst round trips at least).
pub(super) fn up_front(
    state: &Coordinator,
    clocks: Vec<ObserverClock>,
    clock_wait: Duration,
) -> CommonInstant {
    let lead = LEGACY_LEAD.max(worst_round_trip(&clocks).saturating_mul(4));
    CommonInstant {
        t0_ns: state.clock.now_unix_ns().saturating_add(nanos(lead)),
        clocks,
        clock_wait,
        lead,
    }
}

/// One observer as [`arm_when_ready`] tells it.
#[derive(Debug)]
pub(super) struct Told {
    pub link: Option<Link>,
    pub task_id: String,
}

/// Chooses the instant once every observer, dispatched at `dispatched`,
/// is ready (at most [`READY_WAIT`]), publishes it on `instant`, and tells
/// each ready observer, including those ready only later, until every one
/// is told or gone (or the capture's collection ends).
pub(super) async fn arm_when_ready(
    state: Arc<Coordinator>,
    (clocks, clock_wait): (Vec<ObserverClock>, Duration),
    told: Vec<Told>,
    (run_id, dispatched): (String, tokio::time::Instant),
    mut readiness: watch::Receiver<Vec<Readiness>>,
    instant: watch::Sender<Option<Arc<CommonInstant>>>,
) {
    let _ = tokio::time::timeout(
        READY_WAIT,
        readiness.wait_for(|r| r.iter().all(|x| *x != Readiness::SettingUp)),
    )
    .await;
    let lead = TOLD_LEAD + worst_round_trip(&clocks);
    let t0_ns = state.clock.now_unix_ns().saturating_add(nanos(lead));
    let common = Arc::new(CommonInstant {
        t0_ns,
        clocks,
        clock_wait,
        lead: dispatched.elapsed() + lead,
    });
    instant.send_replace(Some(common.clone()));
    let mut sent = vec![false; told.len()];
    loop {
        let now = readiness.borrow_and_update().clone();
        for (i, (who, clock)) in told.iter().zip(&common.clocks).enumerate() {
            if sent[i] || now.get(i) != Some(&Readiness::Ready) {
                continue;
            }
            sent[i] = true;
            if let Some(link) = &who.link {
                let msg = pb::CoordinatorMessage {
                    msg: Some(pb::coordinator_message::Msg::Arm(pb::ArmCapture {
                        task_id: who.task_id.clone(),
                        arm_at_unix_ns: clock.local(t0_ns),
                        clock_note: clock.note(&run_id),
                    })),
                };
                let _ = link.tx.send(Ok(msg)).await;
            }
        }
        let settled = now
            .iter()
            .zip(&sent)
            .all(|(r, sent)| *sent || *r == Readiness::Gone);
        if settled || readiness.changed().await.is_err() {
            return;
        }
    }
}

/// The worst clock round trip over `clocks` (twice the error bound).
fn worst_round_trip(clocks: &[ObserverClock]) -> Duration {
    let ns = clocks
        .iter()
        .map(|c| c.error_ns.saturating_mul(2))
        .max()
        .unwrap_or(0);
    Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Each observer's clock from exchanges made just now: idle probes
/// exchange only every `clock_interval` (tens of seconds), so a burst goes
/// to every observer attached here (stream and UDP), while the clocks of
/// observers another coordinator holds are measured through it (which
/// bursts on them the same way, [`crate::mesh::clock`]); once every local
/// observer's burst is in (at most [`crate::clock_sync::CLOCK_BURST_WAIT`])
/// each gets the best sample since the burst began; an observer that
/// answered none keeps its best older one (or none: offset 0, no bound).
pub(super) async fn fresh_clocks(
    state: &Arc<Coordinator>,
    observers: &[Observer],
) -> Vec<ObserverClock> {
    let since_ns = state.clock.now_unix_ns();
    let (local, held_elsewhere) = {
        let registry = state.registry();
        let mut local: Vec<(&str, Link)> = Vec::new();
        let mut elsewhere: Vec<String> = Vec::new();
        for observer in observers {
            match registry.local_link(&observer.probe) {
                Some(link) => local.push((&observer.probe, link)),
                None if registry.remote(&observer.probe).is_some() => {
                    elsewhere.push(observer.probe.clone());
                }
                None => {}
            }
        }
        (local, elsewhere)
    };
    for (_, link) in &local {
        crate::clock_sync::clock_burst(state, link);
    }
    let local_wait = async {
        let deadline = tokio::time::Instant::now() + crate::clock_sync::CLOCK_BURST_WAIT;
        // Six of the eight: a burst's timers run late on a loaded probe and
        // its last exchanges come well after the span; the bound is that of
        // the best fresh exchange, however many there are.
        let wanted = crate::clock_sync::CLOCK_BURST as usize - 2;
        while !local.is_empty() && tokio::time::Instant::now() < deadline {
            let all_in = {
                let registry = state.registry();
                local
                    .iter()
                    .all(|(probe, _)| registry.burst_in(probe, since_ns, wanted))
            };
            if all_in {
                break;
            }
            tokio::time::sleep(BURST_POLL).await;
        }
    };
    tokio::join!(
        local_wait,
        crate::mesh::clock::refresh(state, &held_elsewhere)
    );
    let registry = state.registry();
    observers
        .iter()
        .map(|o| {
            registry
                .clock_since(&o.probe, since_ns)
                .or_else(|| registry.clock(&o.probe))
                .map(|s| ObserverClock {
                    offset_ns: s.offset_ns,
                    error_ns: s.error_ns(),
                })
                .unwrap_or_default()
        })
        .collect()
}
