//! When a capture's rings go live: at once, at an instant given up front,
//! or at one told once the capture is set up ([`Arming::WhenTold`]). Told
//! later, the coordinator picks the instant when every observer is ready,
//! instead of guessing ahead how long their set-ups will take.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use super::spec::MAX_ARM_AHEAD;
use super::{CaptureControl, CaptureError, MAX_WAIT, now};
use crate::platform::Timestamp;

/// When a capture arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arming {
    /// As soon as its rings are open.
    Now,
    /// At this instant (`CLOCK_REALTIME` of this host); one already past
    /// arms at once.
    At(Timestamp),
    /// Set up, report [`super::CaptureEvent::Ready`], then wait (at most
    /// [`MAX_ARM_AHEAD`]) for the instant on the control's [`ArmSignal`].
    WhenTold,
}

/// The instant a waiting capture is told, with its clock as the teller
/// measured it (for the file's comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Told {
    /// When to arm (`CLOCK_REALTIME` of this host); past: at once.
    pub at: Timestamp,
    /// The probe's clock against the coordinator's (empty when unknown).
    pub clock: String,
}

/// Carries a [`Told`] instant from the task to the capture's thread.
#[derive(Debug, Clone, Default)]
pub struct ArmSignal(Arc<(Mutex<Option<Told>>, Condvar)>);

impl ArmSignal {
    /// Tells the capture its instant; a capture not (yet) waiting finds it
    /// when it does, and a second telling changes nothing.
    pub fn arm(&self, told: Told) {
        let (slot, wake) = &*self.0;
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(told);
            wake.notify_all();
        }
    }

    /// Waits for the instant, [`MAX_ARM_AHEAD`] at most. A stop meanwhile
    /// arms at once (the capture then ends at once, its file empty but
    /// whole), a cancel abandons it.
    pub(super) fn wait(&self, control: &CaptureControl) -> Result<Told, CaptureError> {
        let give_up = Instant::now() + MAX_ARM_AHEAD;
        let (slot, wake) = &*self.0;
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(told) = slot.take() {
                return Ok(told);
            }
            if control.cancel.is_cancelled() {
                return Err(CaptureError::Cancelled { packets: 0 });
            }
            if control.stop.is_cancelled() {
                return Ok(Told {
                    at: now()?,
                    clock: String::new(),
                });
            }
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CaptureError::NeverArmed(MAX_ARM_AHEAD));
            }
            // The tokens wake nobody here: look at them every MAX_WAIT.
            slot = wake
                .wait_timeout(slot, left.min(MAX_WAIT))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn told(ns: i64) -> Told {
        Told {
            at: Timestamp::from_nanos(ns),
            clock: "offset +1.0 us".into(),
        }
    }

    #[test]
    fn an_instant_told_before_the_wait_is_found_and_the_first_telling_counts() {
        let signal = ArmSignal::default();
        signal.arm(told(5));
        signal.arm(told(7));
        let got = signal.wait(&CaptureControl::default()).expect("told");
        assert_eq!(got, told(5));
    }

    #[test]
    fn a_wait_ends_when_another_thread_tells_the_instant() {
        let signal = ArmSignal::default();
        let teller = signal.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            teller.arm(told(9));
        });
        let started = Instant::now();
        assert_eq!(
            signal.wait(&CaptureControl::default()).expect("told"),
            told(9)
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        thread.join().expect("teller");
    }

    #[test]
    fn a_cancel_abandons_the_wait_and_a_stop_arms_at_once() {
        let cancelled = CaptureControl::default();
        cancelled.cancel.cancel();
        assert!(matches!(
            ArmSignal::default().wait(&cancelled),
            Err(CaptureError::Cancelled { packets: 0 })
        ));
        let stopped = CaptureControl::default();
        stopped.stop.cancel();
        let before = now().expect("clock");
        let got = ArmSignal::default().wait(&stopped).expect("armed at once");
        assert!(got.at >= before, "{got:?}");
    }
}
