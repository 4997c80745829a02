//! Per-hop statistics of a path trace, with mtr's arithmetic (`ui/net.c`,
//! `net_process_ping`, `net_loss`, `net_stdev`), so that our figures are the
//! ones `mtr -r` prints for the same samples: round trips in whole
//! microseconds; the mean kept as an integer and updated as
//! `avg += (rtt − avg) / n` (truncated each time); the sum of squared
//! differences updated Welford's way (`ssd += (rtt − old_avg)(rtt − avg)`,
//! truncated); StDev the sample standard deviation `sqrt(ssd / (n − 1))`
//! (0 below two samples); Loss% `100 − 100·received/sent` with three
//! decimals truncated. Pure arithmetic.

use std::time::Duration;

/// Accumulated probes and answers of one hop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HopStats {
    sent: u32,
    received: u32,
    last_us: i64,
    best_us: i64,
    worst_us: i64,
    avg_us: i64,
    ssd: i64,
}

/// What `mtr -r` prints for one hop, in its units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HopFigures {
    /// Probes sent to this hop (`Snt`).
    pub sent: u32,
    /// Answers received.
    pub received: u32,
    /// Percent of probes unanswered (`Loss%`), 0..=100.
    pub loss_pct: f64,
    /// Newest round trip, ms (`Last`); 0 without answers.
    pub last_ms: f64,
    /// Mean round trip, ms (`Avg`).
    pub avg_ms: f64,
    /// Smallest round trip, ms (`Best`).
    pub best_ms: f64,
    /// Largest round trip, ms (`Wrst`).
    pub worst_ms: f64,
    /// Sample standard deviation of the round trips, ms (`StDev`).
    pub stdev_ms: f64,
}

impl HopStats {
    /// Counts one probe sent.
    pub fn on_sent(&mut self) {
        self.sent = self.sent.saturating_add(1);
    }

    /// Counts one answer after `rtt`.
    pub fn on_answer(&mut self, rtt: Duration) {
        let t = i64::try_from(rtt.as_micros()).unwrap_or(i64::MAX / 2);
        self.last_us = t;
        if self.received == 0 {
            self.best_us = t;
            self.worst_us = t;
            self.avg_us = 0;
            self.ssd = 0;
        }
        self.best_us = self.best_us.min(t);
        self.worst_us = self.worst_us.max(t);
        self.received = self.received.saturating_add(1);
        let old = self.avg_us;
        // mtr stores these in C integers: each update truncates toward zero.
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        {
            self.avg_us = (old as f64 + (t - old) as f64 / f64::from(self.received)) as i64;
            self.ssd = (self.ssd as f64 + (t - old) as f64 * (t - self.avg_us) as f64) as i64;
        }
    }

    /// Probes sent.
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// Answers received.
    pub fn received(&self) -> u32 {
        self.received
    }

    /// The figures `mtr -r` prints.
    pub fn figures(&self) -> HopFigures {
        HopFigures {
            sent: self.sent,
            received: self.received,
            loss_pct: self.loss_pct(),
            last_ms: ms(self.last_us),
            avg_ms: ms(self.avg_us),
            best_ms: ms(self.best_us),
            worst_ms: ms(self.worst_us),
            stdev_ms: ms(self.stdev_us()),
        }
    }

    /// mtr's `net_loss`: thousandths of a percent, truncated.
    fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        let answered = f64::from(self.received.min(self.sent)) / f64::from(self.sent);
        #[allow(clippy::cast_possible_truncation)]
        let thousandths = (1000.0 * (100.0 - 100.0 * answered)) as i64;
        ms(thousandths)
    }

    /// mtr's `net_stdev`, whole microseconds.
    fn stdev_us(&self) -> i64 {
        if self.received < 2 {
            return 0;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        let sd = (self.ssd as f64 / (f64::from(self.received) - 1.0)).sqrt() as i64;
        sd
    }
}

/// Thousandths as units: µs as ms, or mtr's loss in thousandths of a percent.
fn ms(thousandths: i64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let v = thousandths as f64 / 1000.0;
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn figures_follow_mtr() {
        let mut h = HopStats::default();
        for rtt in [100, 200, 400] {
            h.on_sent();
            h.on_answer(us(rtt));
        }
        h.on_sent();
        let f = h.figures();
        assert_eq!((f.sent, f.received), (4, 3));
        assert_eq!(f.loss_pct, 25.0);
        assert_eq!((f.last_ms, f.best_ms, f.worst_ms), (0.4, 0.1, 0.4));
        // avg: 100, 150, 150 + 250/3 = 233 (truncated)
        assert_eq!(f.avg_ms, 0.233);
        // ssd: 0, 0 + 100·50 = 5000, 5000 + 250·167 = 46750; sqrt(46750/2) = 152
        assert_eq!(f.stdev_ms, 0.152);
    }

    #[test]
    fn loss_truncates_like_mtr() {
        let mut h = HopStats::default();
        for _ in 0..3 {
            h.on_sent();
        }
        h.on_answer(us(1));
        // 100 − 33.333… = 66.666… → 66666 thousandths.
        assert_eq!(h.figures().loss_pct, 66.666);
        assert_eq!(HopStats::default().figures().loss_pct, 0.0);
    }

    #[test]
    fn one_sample_has_no_deviation() {
        let mut h = HopStats::default();
        h.on_sent();
        h.on_answer(us(5_000));
        let f = h.figures();
        assert_eq!((f.stdev_ms, f.avg_ms, f.loss_pct), (0.0, 5.0, 0.0));
    }
}
