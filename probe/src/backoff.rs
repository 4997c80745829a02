//! Reconnect backoff: exponential with jitter, forever. Sans-IO: the caller
//! supplies the randomness and does the sleeping.

use std::time::Duration;

/// Exponential backoff with "equal jitter": attempt `n` waits between half
/// and all of `min(max, base * 2^n)`, so many probes restarted at once do not
/// reconnect in lockstep, and no wait is ever zero.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Default for Backoff {
    /// 200 ms doubling up to 10 s: a probe is back within 10 s of its
    /// coordinator, and a thousand probes restarted at once still spread
    /// their attempts over 5 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(10))
    }
}

impl Backoff {
    /// Starts at `base`, caps at `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The next wait. `unit` is a uniform random number in `[0, 1)`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        let cap = self.base.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = cap / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// Back to `base` after a connection that held (attached for a few
    /// heartbeats) or a coordinator that said it is going away.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_within_jitter_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let lows: Vec<_> = (0..6).map(|_| b.next_delay(0.0).as_millis()).collect();
        assert_eq!(lows, [50, 100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(0.999_999).as_millis(), 99);
    }

    proptest::proptest! {
        #[test]
        fn never_zero_never_over_max(attempts in 0usize..200, unit in 0.0f64..1.0) {
            let mut b = Backoff::default();
            for _ in 0..attempts { b.next_delay(unit); }
            let d = b.next_delay(unit);
            proptest::prop_assert!(d >= Duration::from_millis(100));
            proptest::prop_assert!(d <= Duration::from_secs(10));
        }
    }
}
