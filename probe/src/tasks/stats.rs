//! Round-trip statistics computed the way iputils `ping` computes its
//! `rtt min/avg/max/mdev` line, and packet loss. Pure arithmetic.
//!
//! iputils keeps `tsum` and `tsum2` (sum of RTTs and of their squares) and,
//! at the end, `avg = tsum / n` and
//! `mdev = llsqrt((tsum2 - tsum * tsum / n) / n)`, all in integer
//! arithmetic (integer square root). We do the same in nanoseconds instead
//! of microseconds, so our figures truncated to microseconds are ping's.

use std::time::Duration;

/// Summary of a set of round trips (or connect latencies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttStats {
    /// Smallest sample.
    pub min: Duration,
    /// Mean, truncated to the nanosecond.
    pub avg: Duration,
    /// Largest sample.
    pub max: Duration,
    /// Mean deviation as ping defines it: the standard deviation
    /// `sqrt(mean(rtt²) − mean(rtt)²)`, truncated to the nanosecond.
    pub mdev: Duration,
}

/// Accumulates samples; [`RttAccumulator::stats`] summarises them.
#[derive(Debug, Clone, Default)]
pub struct RttAccumulator {
    count: u64,
    sum_ns: u128,
    sum_sq_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

impl RttAccumulator {
    /// Adds one sample (durations beyond ~584 years saturate).
    pub fn add(&mut self, rtt: Duration) {
        let ns = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
        if self.count == 0 {
            self.min_ns = ns;
            self.max_ns = ns;
        } else {
            self.min_ns = self.min_ns.min(ns);
            self.max_ns = self.max_ns.max(ns);
        }
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(u128::from(ns));
        self.sum_sq_ns = self
            .sum_sq_ns
            .saturating_add(u128::from(ns) * u128::from(ns));
    }

    /// Number of samples added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The statistics, or `None` without samples (ping prints no rtt line).
    pub fn stats(&self) -> Option<RttStats> {
        if self.count == 0 {
            return None;
        }
        let n = u128::from(self.count);
        let avg = self.sum_ns / n;
        let variance = self
            .sum_sq_ns
            .saturating_sub(self.sum_ns.saturating_mul(self.sum_ns) / n)
            / n;
        Some(RttStats {
            min: Duration::from_nanos(self.min_ns),
            avg: nanos(avg),
            max: Duration::from_nanos(self.max_ns),
            mdev: nanos(variance.isqrt()),
        })
    }
}

fn nanos(ns: u128) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// Packet loss in percent, as ping prints it: `(sent − received) × 100 / sent`;
/// 0 when nothing was sent. Received beyond sent (duplicates) counts as 0 %.
pub fn loss_percent(transmitted: u32, received: u32) -> f64 {
    if transmitted == 0 {
        return 0.0;
    }
    f64::from(transmitted.saturating_sub(received)) * 100.0 / f64::from(transmitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// `ping -c 5 -i 0.2 127.0.0.1` (iputils) printed:
    /// time=0.153, 0.033, 0.037, 0.044, 0.040 ms and
    /// `rtt min/avg/max/mdev = 0.033/0.061/0.153/0.045 ms`, 0% packet loss.
    #[test]
    fn matches_a_worked_iputils_ping_run() {
        let mut acc = RttAccumulator::default();
        for t in [153, 33, 37, 44, 40] {
            acc.add(us(t));
        }
        let s = acc.stats().unwrap();
        let as_us = |d: Duration| d.as_micros();
        assert_eq!(
            (as_us(s.min), as_us(s.avg), as_us(s.max), as_us(s.mdev)),
            (33, 61, 153, 45)
        );
        assert_eq!(s.avg, Duration::from_nanos(61_400));
        assert_eq!(s.mdev, Duration::from_nanos(45_941));
        assert_eq!(acc.count(), 5);
        assert_eq!(loss_percent(5, 5), 0.0);
    }

    #[test]
    fn equal_samples_have_zero_mdev_and_empty_has_no_stats() {
        let mut acc = RttAccumulator::default();
        assert_eq!(acc.stats(), None);
        for _ in 0..3 {
            acc.add(Duration::from_millis(5));
        }
        let s = acc.stats().unwrap();
        assert_eq!(
            (s.min, s.avg, s.max),
            (
                Duration::from_millis(5),
                Duration::from_millis(5),
                Duration::from_millis(5)
            )
        );
        assert_eq!(s.mdev, Duration::ZERO);
    }

    #[test]
    fn mdev_is_the_population_standard_deviation() {
        let mut acc = RttAccumulator::default();
        for t in [10, 20, 30, 40] {
            acc.add(Duration::from_millis(t));
        }
        // mean 25 ms, variance 125 ms², sqrt = 11.180339887 ms.
        assert_eq!(acc.stats().unwrap().mdev, Duration::from_nanos(11_180_339));
    }

    #[test]
    fn large_samples_do_not_overflow() {
        let mut acc = RttAccumulator::default();
        for _ in 0..10_000 {
            acc.add(Duration::from_secs(60));
        }
        let s = acc.stats().unwrap();
        assert_eq!(s.avg, Duration::from_secs(60));
        assert_eq!(s.mdev, Duration::ZERO);
    }

    #[test]
    fn loss_is_a_percentage_of_sent() {
        assert_eq!(loss_percent(4, 1), 75.0);
        assert_eq!(loss_percent(3, 0), 100.0);
        assert_eq!(loss_percent(0, 0), 0.0);
        assert_eq!(loss_percent(2, 3), 0.0);
    }
}
