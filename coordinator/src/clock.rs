//! NTP-style clock-offset estimation for one probe.
//!
//! Sans-IO: feed it exchanges, read the estimate. Each exchange has four
//! instants: t1 (coordinator sends), t2 (probe receives), t3 (probe replies),
//! t4 (coordinator receives); t1/t4 are on the coordinator's clock, t2/t3 on
//! the probe's. For one exchange
//!
//! ```text
//! offset = ((t2 - t1) + (t3 - t4)) / 2      probe clock minus coordinator clock
//! delay  = (t4 - t1) - (t3 - t2)            round trip spent on the wire
//! ```
//!
//! and the true offset lies within `offset ± delay / 2` (any asymmetry of the
//! path hides inside that bound). Samples with the smallest delay carry the
//! least queuing noise, so the estimate is the minimum-delay sample of a
//! sliding window (the classic NTP clock filter).
//!
//! Exchanges travel two ways ([`ClockPath`]): kernel-timestamped UDP
//! (`clock_udp`, round trips of tens of microseconds on one host) and the
//! ProbeLink stream (the fallback, a few hundred microseconds through tokio,
//! TLS and HTTP/2). Both feed the same window; the filter needs no rule
//! between them, since the UDP samples simply have the smaller delays.

use std::collections::VecDeque;

/// How an exchange travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockPath {
    /// ClockRequest/ClockReply on the ProbeLink stream; instants taken in
    /// user space on both sides.
    Stream,
    /// The UDP exchange; t2 and t4 are kernel receive timestamps.
    Udp,
    /// Coordinator to coordinator, over the Peer service (several
    /// coordinators); instants taken in user space on both sides.
    Peer,
    /// A probe held by another coordinator: that coordinator's estimate of
    /// the probe plus this coordinator's estimate of it ([`Sample::chain`]).
    Relay,
}

impl ClockPath {
    /// `"stream"` or `"udp"`, as `meshctl probes` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Udp => "udp",
            Self::Peer => "peer",
            Self::Relay => "relay",
        }
    }
}

/// One completed exchange, nanoseconds since the Unix epoch on each side's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// How it travelled.
    pub path: ClockPath,
    /// Coordinator clock, request sent.
    pub t1_ns: i64,
    /// Probe clock, request received.
    pub t2_ns: i64,
    /// Probe clock, reply sent.
    pub t3_ns: i64,
    /// Coordinator clock, reply received.
    pub t4_ns: i64,
}

/// What one exchange says about the probe's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Probe clock minus coordinator clock, nanoseconds.
    pub offset_ns: i64,
    /// Round-trip time on the wire, nanoseconds (never negative).
    pub delay_ns: i64,
    /// How the exchange travelled.
    pub path: ClockPath,
}

impl Sample {
    /// Half the round trip: the bound on `offset_ns`'s error, nanoseconds.
    pub fn error_ns(&self) -> i64 {
        self.delay_ns / 2
    }

    /// The round trip as a duration.
    pub fn round_trip(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(u64::try_from(self.delay_ns).unwrap_or(0))
    }

    /// The estimate of a probe whose stream another coordinator holds:
    /// `self` is that coordinator's clock against this one (a
    /// [`ClockPath::Peer`] sample), `held` its own estimate of the probe.
    /// The offsets add (probe − peer + peer − here), and so do the round
    /// trips, so the error bound covers both hops.
    pub fn chain(self, held: Sample) -> Sample {
        Sample {
            offset_ns: self.offset_ns.saturating_add(held.offset_ns),
            delay_ns: self.delay_ns.saturating_add(held.delay_ns),
            path: ClockPath::Relay,
        }
    }
}

/// Why an exchange was thrown away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RejectedExchange {
    /// t4 before t1 or t3 before t2: a clock stepped mid-exchange or the
    /// message is forged.
    #[error("clock exchange has instants out of order")]
    OutOfOrder,
    /// The probe spent longer than the whole round trip: impossible.
    #[error("clock exchange reports more probe time than round trip")]
    NegativeDelay,
}

impl TryFrom<Exchange> for Sample {
    type Error = RejectedExchange;

    fn try_from(e: Exchange) -> Result<Self, Self::Error> {
        if e.t4_ns < e.t1_ns || e.t3_ns < e.t2_ns {
            return Err(RejectedExchange::OutOfOrder);
        }
        let round_trip = i128::from(e.t4_ns) - i128::from(e.t1_ns);
        let probe_time = i128::from(e.t3_ns) - i128::from(e.t2_ns);
        let delay = round_trip - probe_time;
        if delay < 0 {
            return Err(RejectedExchange::NegativeDelay);
        }
        let offset = ((i128::from(e.t2_ns) - i128::from(e.t1_ns))
            + (i128::from(e.t3_ns) - i128::from(e.t4_ns)))
            / 2;
        Ok(Sample {
            offset_ns: clamp_i64(offset),
            delay_ns: clamp_i64(delay),
            path: e.path,
        })
    }
}

fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// Sliding-window minimum-delay filter over a probe's clock samples.
#[derive(Debug, Clone)]
pub struct ClockEstimator {
    /// Each sample with its exchange's t4 (coordinator clock, ns).
    window: VecDeque<(i64, Sample)>,
    capacity: usize,
}

/// Samples kept per probe: at the idle interval (30 s, stream and UDP)
/// this spans minutes, long enough to catch a quiet moment for `meshctl
/// probes`. A run that arms on the clock does not rely on it: it asks for a
/// burst and takes the best sample since ([`ClockEstimator::best_since`]).
pub const DEFAULT_WINDOW: usize = 32;

impl Default for ClockEstimator {
    fn default() -> Self {
        Self::with_window(DEFAULT_WINDOW)
    }
}

impl ClockEstimator {
    /// An estimator keeping the last `capacity` samples (at least one).
    pub fn with_window(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            window: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Adds an exchange; returns the sample it gave, or why it was rejected.
    pub fn observe(&mut self, exchange: Exchange) -> Result<Sample, RejectedExchange> {
        let sample = Sample::try_from(exchange)?;
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back((exchange.t4_ns, sample));
        Ok(sample)
    }

    /// The minimum-delay sample in the window, if any.
    pub fn best(&self) -> Option<Sample> {
        self.best_since(i64::MIN)
    }

    /// The minimum-delay sample of the exchanges completed at or after
    /// `t_ns` (coordinator clock, ns), if any.
    pub fn best_since(&self, t_ns: i64) -> Option<Sample> {
        self.window
            .iter()
            .filter(|(t4, _)| *t4 >= t_ns)
            .map(|(_, s)| *s)
            .min_by_key(|s| s.delay_ns)
    }

    /// Exchanges completed at or after `t_ns` that travelled `path`.
    pub fn count_since(&self, t_ns: i64, path: ClockPath) -> usize {
        self.window
            .iter()
            .filter(|(t4, s)| *t4 >= t_ns && s.path == path)
            .count()
    }

    /// Number of samples in the window.
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// True before the first accepted exchange.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe whose clock runs `offset` ahead, reached over a path taking
    /// `out` ns there and `back` ns back, spending `hold` ns before replying.
    fn exchange(t1: i64, offset: i64, out: i64, hold: i64, back: i64) -> Exchange {
        let t2 = t1 + out + offset;
        let t3 = t2 + hold;
        let t4 = t3 - offset + back;
        Exchange {
            path: ClockPath::Stream,
            t1_ns: t1,
            t2_ns: t2,
            t3_ns: t3,
            t4_ns: t4,
        }
    }

    #[test]
    fn symmetric_path_gives_exact_offset() {
        let s = Sample::try_from(exchange(1_000, 5_000, 300, 50, 300)).unwrap();
        assert_eq!(
            s,
            Sample {
                offset_ns: 5_000,
                delay_ns: 600,
                path: ClockPath::Stream,
            }
        );
        assert_eq!(s.error_ns(), 300);
    }

    #[test]
    fn asymmetry_stays_inside_the_error_bound() {
        let s = Sample::try_from(exchange(0, -2_000, 900, 10, 100)).unwrap();
        assert!((s.offset_ns - -2_000).abs() <= s.error_ns(), "{s:?}");
        assert_eq!(s.delay_ns, 1_000);
    }

    #[test]
    fn keeps_the_minimum_delay_sample() {
        let mut est = ClockEstimator::with_window(4);
        est.observe(exchange(0, 7_000, 5_000, 10, 100)).unwrap();
        est.observe(exchange(10, 7_000, 40, 10, 40)).unwrap();
        est.observe(exchange(20, 7_000, 800, 10, 3_000)).unwrap();
        let best = est.best().unwrap();
        assert_eq!(
            best,
            Sample {
                offset_ns: 7_000,
                delay_ns: 80,
                path: ClockPath::Stream,
            }
        );
    }

    #[test]
    fn udp_and_stream_samples_share_one_window() {
        let mut est = ClockEstimator::with_window(8);
        est.observe(exchange(0, 3_000, 120_000, 10, 130_000))
            .unwrap();
        let udp = Exchange {
            path: ClockPath::Udp,
            ..exchange(10, 3_000, 15_000, 10, 16_000)
        };
        est.observe(udp).unwrap();
        est.observe(exchange(20, 3_000, 110_000, 10, 140_000))
            .unwrap();
        let best = est.best().unwrap();
        assert_eq!((best.path, best.delay_ns), (ClockPath::Udp, 31_000));
    }

    #[test]
    fn best_since_ignores_older_better_samples() {
        let mut est = ClockEstimator::with_window(8);
        est.observe(exchange(0, 1_000, 10, 0, 10)).unwrap();
        est.observe(exchange(5_000, 2_000, 300, 0, 300)).unwrap();
        assert_eq!(est.best().unwrap().offset_ns, 1_000);
        let fresh = est.best_since(5_000).unwrap();
        assert_eq!((fresh.offset_ns, fresh.delay_ns), (2_000, 600));
        assert_eq!(est.best_since(1_000_000), None);
        assert_eq!(est.count_since(5_000, ClockPath::Stream), 1);
        assert_eq!(est.count_since(0, ClockPath::Stream), 2);
        assert_eq!(est.count_since(0, ClockPath::Udp), 0);
    }

    #[test]
    fn window_forgets_old_samples() {
        let mut est = ClockEstimator::with_window(2);
        est.observe(exchange(0, 1_000, 10, 0, 10)).unwrap();
        est.observe(exchange(0, 9_000, 500, 0, 500)).unwrap();
        est.observe(exchange(0, 9_000, 400, 0, 400)).unwrap();
        assert_eq!(est.len(), 2);
        assert_eq!(est.best().unwrap().offset_ns, 9_000);
    }

    #[test]
    fn rejects_impossible_exchanges() {
        let mut est = ClockEstimator::default();
        let backwards = Exchange {
            path: ClockPath::Stream,
            t1_ns: 100,
            t2_ns: 0,
            t3_ns: 0,
            t4_ns: 50,
        };
        assert_eq!(est.observe(backwards), Err(RejectedExchange::OutOfOrder));
        let too_long = Exchange {
            path: ClockPath::Udp,
            t1_ns: 0,
            t2_ns: 0,
            t3_ns: 1_000,
            t4_ns: 10,
        };
        assert_eq!(est.observe(too_long), Err(RejectedExchange::NegativeDelay));
        assert!(est.is_empty());
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let e = Exchange {
            path: ClockPath::Udp,
            t1_ns: i64::MIN,
            t2_ns: i64::MAX,
            t3_ns: i64::MAX,
            t4_ns: i64::MAX,
        };
        let s = Sample::try_from(e).unwrap();
        assert!(s.delay_ns >= 0);
    }

    #[test]
    fn a_relayed_estimate_adds_offsets_and_error_bounds() {
        let peer = Sample {
            offset_ns: 5_000,
            delay_ns: 400_000,
            path: ClockPath::Peer,
        };
        let held = Sample {
            offset_ns: -2_000,
            delay_ns: 60_000,
            path: ClockPath::Udp,
        };
        let chained = peer.chain(held);
        assert_eq!(
            chained,
            Sample {
                offset_ns: 3_000,
                delay_ns: 460_000,
                path: ClockPath::Relay,
            }
        );
        assert_eq!(chained.error_ns(), peer.error_ns() + held.error_ns());
        assert_eq!(chained.path.as_str(), "relay");
    }
}
