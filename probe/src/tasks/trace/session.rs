//! The sans-IO state of one path trace: which TTLs a round probes, which
//! probe of the round is still waiting, the per-hop statistics, and which
//! hops a report shows. No socket, no clock: the driver in [`super`] feeds
//! send times and answers (wall-clock [`Timestamp`]s).
//!
//! mtr's semantics: round 1 probes every TTL up to `max_hops`; once the
//! destination has answered at TTL d, later rounds probe only 1..=d (the
//! smallest d seen), and hops beyond it are not shown. Without an answer
//! from the destination, the report shows hops up to one past the last hop
//! that answered (mtr's `net_max`). A probe not answered by the end of its
//! round is lost.

use std::net::Ipv4Addr;

use super::reading::{self, Hop, Reading};
use super::stats::HopStats;
use crate::platform::Timestamp;
use crate::types::Ttl;

/// A probe of the current round still waiting for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    /// Identifier the probe carries (ICMP sequence number, or whatever the
    /// driver matches answers with).
    id: u16,
    /// Wall-clock time just before the send.
    sent_at: Timestamp,
}

/// One hop's record.
#[derive(Debug, Clone, Copy, Default)]
struct HopRecord {
    stats: HopStats,
    /// Address of the newest answer (mtr shows the latest host).
    host: Option<Ipv4Addr>,
    pending: Option<Pending>,
}

/// A snapshot of the report after a round.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundReport {
    /// Round number, 1-based.
    pub round: u32,
    /// The displayed hops so far.
    pub hops: Vec<Hop>,
}

/// The state of one trace.
#[derive(Debug, Clone)]
pub struct TraceSession {
    /// Index `ttl - 1`; as many as `max_hops`.
    hops: Vec<HopRecord>,
    /// Smallest TTL at which the destination answered.
    destination_ttl: Option<u8>,
    rounds: u32,
}

impl TraceSession {
    /// A trace probing TTLs 1..=`max_hops`.
    pub fn new(max_hops: Ttl) -> Self {
        Self {
            hops: vec![HopRecord::default(); usize::from(max_hops.get())],
            destination_ttl: None,
            rounds: 0,
        }
    }

    /// The TTLs the next round probes, in order.
    pub fn round_ttls(&self) -> Vec<Ttl> {
        let limit = self.limit();
        (1..=limit).filter_map(Ttl::new).collect()
    }

    fn limit(&self) -> u8 {
        let max = u8::try_from(self.hops.len()).unwrap_or(u8::MAX);
        self.destination_ttl.unwrap_or(max).min(max)
    }

    /// Records that the probe at `ttl`, carrying `id`, went out at `sent_at`
    /// (counted as sent even when the send then fails: mtr counts it too).
    pub fn on_sent(&mut self, ttl: Ttl, id: u16, sent_at: Timestamp) {
        if let Some(hop) = self.hop_mut(ttl) {
            hop.stats.on_sent();
            hop.pending = Some(Pending { id, sent_at });
        }
    }

    /// Records that the probe at `ttl` could not be sent: it stays counted
    /// and unanswered.
    pub fn on_send_failed(&mut self, ttl: Ttl) {
        if let Some(hop) = self.hop_mut(ttl) {
            hop.pending = None;
        }
    }

    /// The TTL of the waiting probe carrying `id`.
    pub fn ttl_of(&self, id: u16) -> Option<Ttl> {
        self.hops
            .iter()
            .position(|h| h.pending.is_some_and(|p| p.id == id))
            .and_then(|i| u8::try_from(i + 1).ok())
            .and_then(Ttl::new)
    }

    /// Records the answer to the waiting probe at `ttl`, from `from`, at
    /// `at`; `reached` when it came from the destination. Returns false
    /// (and changes nothing) when no probe at `ttl` is waiting.
    pub fn on_answer(&mut self, ttl: Ttl, from: Ipv4Addr, at: Timestamp, reached: bool) -> bool {
        let Some(hop) = self.hop_mut(ttl) else {
            return false;
        };
        let Some(pending) = hop.pending.take() else {
            return false;
        };
        hop.stats
            .on_answer(at.saturating_duration_since(pending.sent_at));
        hop.host = Some(from);
        if reached {
            let ttl = ttl.get();
            self.destination_ttl = Some(self.destination_ttl.map_or(ttl, |d| d.min(ttl)));
        }
        true
    }

    /// True while a probe at a TTL up to the destination's is unanswered
    /// (probes beyond the destination are not waited for).
    pub fn waiting(&self) -> bool {
        self.hops
            .iter()
            .take(usize::from(self.limit()))
            .any(|h| h.pending.is_some())
    }

    /// Ends the round: unanswered probes are lost. Returns the report so far.
    pub fn end_round(&mut self) -> RoundReport {
        for hop in &mut self.hops {
            hop.pending = None;
        }
        self.rounds += 1;
        RoundReport {
            round: self.rounds,
            hops: self.hops(),
        }
    }

    /// True once the destination has answered.
    pub fn reached(&self) -> bool {
        self.destination_ttl.is_some()
    }

    /// The hops a report shows (see the module doc).
    pub fn hops(&self) -> Vec<Hop> {
        let shown = match self.destination_ttl {
            Some(d) => usize::from(d),
            None => self
                .hops
                .iter()
                .rposition(|h| h.host.is_some())
                .map_or(0, |i| (i + 2).min(self.hops.len())),
        };
        (1u8..)
            .zip(&self.hops[..shown.min(self.hops.len())])
            .map(|(ttl, h)| Hop {
                ttl,
                host: h.host,
                figures: h.stats.figures(),
            })
            .collect()
    }

    /// The reading rules applied to the report.
    pub fn reading(&self) -> Reading {
        reading::read(&self.hops(), self.reached())
    }

    fn hop_mut(&mut self, ttl: Ttl) -> Option<&mut HopRecord> {
        self.hops.get_mut(usize::from(ttl.get()) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

    fn ttl(n: u8) -> Ttl {
        Ttl::new(n).unwrap()
    }

    fn t(us: i64) -> Timestamp {
        Timestamp::from_nanos(us * 1000)
    }

    #[test]
    fn rounds_shrink_to_the_destination_and_hide_hops_beyond() {
        let mut s = TraceSession::new(ttl(30));
        assert_eq!(s.round_ttls().len(), 30);
        for (i, hop) in s.round_ttls().into_iter().enumerate() {
            s.on_sent(hop, u16::try_from(i).unwrap() + 1, t(0));
        }
        assert_eq!(s.ttl_of(2), Some(ttl(2)));
        assert!(s.on_answer(ttl(1), R, t(100), false));
        assert!(
            !s.on_answer(ttl(1), R, t(150), false),
            "one answer per probe"
        );
        assert!(s.waiting());
        assert!(s.on_answer(ttl(3), B, t(300), true));
        assert!(s.waiting(), "ttl 2 is still out");
        assert!(s.on_answer(ttl(2), B, t(200), true));
        assert!(
            !s.waiting(),
            "probes beyond the destination are not waited for"
        );
        let round = s.end_round();
        assert_eq!(round.round, 1);
        let hosts: Vec<_> = round.hops.iter().map(|h| h.host).collect();
        assert_eq!(hosts, [Some(R), Some(B)]);
        assert_eq!(round.hops[1].figures.last_ms, 0.2);
        assert_eq!(s.round_ttls(), [ttl(1), ttl(2)]);
        s.on_sent(ttl(1), 31, t(1000));
        s.on_sent(ttl(2), 32, t(1000));
        s.on_answer(ttl(2), B, t(1250), true);
        let round = s.end_round();
        assert_eq!(round.hops[0].figures.loss_pct, 50.0);
        assert_eq!(round.hops[1].figures.sent, 2);
        assert!(s.reached());
        assert_eq!(s.reading().loss_from_hop, None);
    }

    #[test]
    fn without_the_destination_one_unanswered_hop_is_shown() {
        let mut s = TraceSession::new(ttl(5));
        for hop in s.round_ttls() {
            s.on_sent(hop, u16::from(hop.get()), t(0));
        }
        s.on_answer(ttl(2), R, t(10), false);
        s.on_send_failed(ttl(4));
        let round = s.end_round();
        assert_eq!(round.hops.len(), 3);
        assert_eq!(round.hops[2].host, None);
        assert_eq!(round.hops[0].figures.loss_pct, 100.0);
        assert!(!s.reached());
        assert_eq!(s.reading().loss_from_hop, Some(3));
    }

    #[test]
    fn nothing_answered_shows_nothing() {
        let mut s = TraceSession::new(ttl(3));
        for hop in s.round_ttls() {
            s.on_sent(hop, 1, t(0));
        }
        assert!(s.end_round().hops.is_empty());
    }
}
