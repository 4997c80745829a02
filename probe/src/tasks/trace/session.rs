//! The sans-IO state of one path trace: which TTLs a round probes, which
//! probes are still waiting (of any round: rounds are pipelined), the
//! per-hop statistics, and which hops a report shows. No socket, no clock:
//! the driver in [`super`] feeds send times and answers (wall-clock
//! [`Timestamp`]s) and deadlines (tokio [`Instant`]s).
//!
//! mtr's semantics: round 1 probes every TTL up to `max_hops`; once the
//! destination has answered at TTL d, later rounds probe only 1..=d (the
//! smallest d seen), and hops beyond it are not shown. Without an answer
//! from the destination, the report shows hops up to one past the last hop
//! that answered (mtr's `net_max`). As mtr does, a round's probes go out on
//! schedule whether or not the previous round's stragglers have answered:
//! each probe carries a key (ICMP sequence number, TCP source port, UDP
//! source and destination port) that names its round and TTL, so a late
//! answer counts for the hop and round it answers. A probe not answered by
//! its deadline is lost; a round is reported once none of its probes up to
//! the destination waits any more, rounds in order.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use tokio::time::Instant;

use super::reading::{self, Hop, Reading};
use super::stats::HopStats;
use crate::platform::Timestamp;
use crate::types::Ttl;

/// What names one probe among those waiting: ICMP sequence number, TCP
/// source port, or UDP source port × destination port (the driver's choice;
/// unique among the probes waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProbeKey(pub u32);

/// A probe still waiting for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    /// Round it belongs to, 1-based.
    round: u32,
    ttl: Ttl,
    /// Wall-clock time just before the send.
    sent_at: Timestamp,
    /// When it stops waiting (tokio clock).
    deadline: Instant,
}

/// One hop's record.
#[derive(Debug, Clone, Copy, Default)]
struct HopRecord {
    stats: HopStats,
    /// Address of the newest answer (mtr shows the latest host).
    host: Option<Ipv4Addr>,
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
    /// Probes waiting, by key.
    pending: HashMap<ProbeKey, Pending>,
    /// Rounds started.
    started: u32,
    /// Rounds reported (1..=reported are done).
    reported: u32,
}

impl TraceSession {
    /// A trace probing TTLs 1..=`max_hops`.
    pub fn new(max_hops: Ttl) -> Self {
        Self {
            hops: vec![HopRecord::default(); usize::from(max_hops.get())],
            destination_ttl: None,
            pending: HashMap::new(),
            started: 0,
            reported: 0,
        }
    }

    /// Starts the next round: its number (1-based) and the TTLs it probes,
    /// in order.
    pub fn start_round(&mut self) -> (u32, Vec<Ttl>) {
        self.started += 1;
        let limit = self.limit();
        (self.started, (1..=limit).filter_map(Ttl::new).collect())
    }

    /// Rounds started and not yet reported.
    pub fn rounds_in_flight(&self) -> u32 {
        self.started - self.reported
    }

    fn limit(&self) -> u8 {
        let max = u8::try_from(self.hops.len()).unwrap_or(u8::MAX);
        self.destination_ttl.unwrap_or(max).min(max)
    }

    /// Records that the probe of `round` at `ttl`, named `key`, went out at
    /// `sent_at` and waits until `deadline` (counted as sent even when the
    /// send then fails: mtr counts it too).
    pub fn on_sent(
        &mut self,
        round: u32,
        ttl: Ttl,
        key: ProbeKey,
        sent_at: Timestamp,
        deadline: Instant,
    ) {
        if let Some(hop) = self.hop_mut(ttl) {
            hop.stats.on_sent();
            let pending = Pending {
                round,
                ttl,
                sent_at,
                deadline,
            };
            self.pending.insert(key, pending);
        }
    }

    /// Records that the probe named `key` could not be sent: it stays
    /// counted and unanswered.
    pub fn on_send_failed(&mut self, key: ProbeKey) {
        self.pending.remove(&key);
    }

    /// The TTL of the waiting probe named `key`.
    pub fn ttl_of(&self, key: ProbeKey) -> Option<Ttl> {
        self.pending.get(&key).map(|p| p.ttl)
    }

    /// Records the answer to the waiting probe named `key`, from `from`, at
    /// `at`; `reached` when it came from the destination. Returns false
    /// (and changes nothing) when no probe named `key` is waiting.
    pub fn on_answer(
        &mut self,
        key: ProbeKey,
        from: Ipv4Addr,
        at: Timestamp,
        reached: bool,
    ) -> bool {
        let Some(pending) = self.pending.remove(&key) else {
            return false;
        };
        if let Some(hop) = self.hop_mut(pending.ttl) {
            hop.stats
                .on_answer(at.saturating_duration_since(pending.sent_at));
            hop.host = Some(from);
        }
        if reached {
            let ttl = pending.ttl.get();
            self.destination_ttl = Some(self.destination_ttl.map_or(ttl, |d| d.min(ttl)));
        }
        true
    }

    /// Gives up on every probe whose deadline is at or before `now`: it is
    /// lost.
    pub fn expire(&mut self, now: Instant) {
        self.pending.retain(|_, p| p.deadline > now);
    }

    /// The earliest deadline of a waiting probe.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// True while a probe at a TTL up to the destination's is unanswered
    /// (probes beyond the destination are not waited for).
    pub fn waiting(&self) -> bool {
        let limit = self.limit();
        self.pending.values().any(|p| p.ttl.get() <= limit)
    }

    /// The reports of the rounds that are done, oldest first: every round
    /// started, in order, none of whose probes up to the destination still
    /// waits. Their probes beyond the destination are given up.
    pub fn take_done(&mut self) -> Vec<RoundReport> {
        let limit = self.limit();
        let mut done = Vec::new();
        while self.reported < self.started {
            let round = self.reported + 1;
            if self
                .pending
                .values()
                .any(|p| p.round == round && p.ttl.get() <= limit)
            {
                break;
            }
            self.pending.retain(|_, p| p.round != round);
            self.reported = round;
            done.push(RoundReport {
                round,
                hops: self.hops(),
            });
        }
        done
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
    use std::time::Duration;

    const R: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

    fn ttl(n: u8) -> Ttl {
        Ttl::new(n).unwrap()
    }

    fn t(us: i64) -> Timestamp {
        Timestamp::from_nanos(us * 1000)
    }

    fn k(n: u32) -> ProbeKey {
        ProbeKey(n)
    }

    /// Starts a round and sends all its probes at `at_us`, keys
    /// `base + ttl`, waiting one second.
    fn send_round(s: &mut TraceSession, base: u32, at_us: i64, now: Instant) -> u32 {
        let (round, ttls) = s.start_round();
        for hop in ttls {
            let deadline = now + Duration::from_secs(1);
            s.on_sent(
                round,
                hop,
                k(base + u32::from(hop.get())),
                t(at_us),
                deadline,
            );
        }
        round
    }

    #[test]
    fn rounds_shrink_to_the_destination_and_hide_hops_beyond() {
        let now = Instant::now();
        let mut s = TraceSession::new(ttl(30));
        assert_eq!(send_round(&mut s, 0, 0, now), 1);
        assert_eq!(s.ttl_of(k(2)), Some(ttl(2)));
        assert!(s.on_answer(k(1), R, t(100), false));
        assert!(!s.on_answer(k(1), R, t(150), false), "one answer per probe");
        assert!(s.waiting());
        assert!(s.on_answer(k(3), B, t(300), true));
        assert!(s.waiting(), "ttl 2 is still out");
        assert!(s.take_done().is_empty());
        assert!(s.on_answer(k(2), B, t(200), true));
        assert!(
            !s.waiting(),
            "probes beyond the destination are not waited for"
        );
        let done = s.take_done();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].round, 1);
        let hosts: Vec<_> = done[0].hops.iter().map(|h| h.host).collect();
        assert_eq!(hosts, [Some(R), Some(B)]);
        assert_eq!(done[0].hops[1].figures.last_ms, 0.2);
        assert_eq!(s.ttl_of(k(5)), None, "beyond the destination: given up");
        assert_eq!(send_round(&mut s, 100, 1000, now), 2);
        assert_eq!(s.ttl_of(k(103)), None, "round 2 probes 1..=2 only");
        s.on_answer(k(102), B, t(1250), true);
        s.expire(now + Duration::from_secs(1));
        let done = s.take_done();
        assert_eq!(done[0].hops[0].figures.loss_pct, 50.0);
        assert_eq!(done[0].hops[1].figures.sent, 2);
        assert!(s.reached());
        assert_eq!(s.reading().loss_from_hop, None);
    }

    #[test]
    fn pipelined_rounds_count_late_answers_for_their_own_round_and_hop() {
        let now = Instant::now();
        let mut s = TraceSession::new(ttl(3));
        // Round 1 learns the destination at TTL 3.
        send_round(&mut s, 0, 0, now);
        s.on_answer(k(1), R, t(100), false);
        s.on_answer(k(3), B, t(300), true);
        // Round 2 goes out while round 1's TTL 2 probe is a straggler.
        send_round(&mut s, 10, 100_000, now);
        s.on_answer(k(11), R, t(100_200), false);
        s.on_answer(k(13), B, t(100_400), true);
        assert_eq!(s.rounds_in_flight(), 2);
        assert!(s.take_done().is_empty(), "round 1 waits for its TTL 2");
        // Round 1's TTL 2 answers late (150 ms after its send), then
        // round 2's.
        s.on_answer(k(2), R, t(150_000), false);
        let done = s.take_done();
        assert_eq!(done.iter().map(|r| r.round).collect::<Vec<_>>(), [1]);
        s.on_answer(k(12), R, t(100_300), false);
        let done = s.take_done();
        assert_eq!(done.iter().map(|r| r.round).collect::<Vec<_>>(), [2]);
        let hop2 = done[0].hops[1].figures;
        assert_eq!((hop2.sent, hop2.received), (2, 2));
        assert_eq!(hop2.worst_ms, 150.0, "the straggler's own round trip");
        assert_eq!(hop2.best_ms, 0.3);
        assert_eq!(s.rounds_in_flight(), 0);
    }

    #[test]
    fn a_probe_past_its_deadline_is_lost_and_its_answer_ignored() {
        let now = Instant::now();
        let mut s = TraceSession::new(ttl(2));
        send_round(&mut s, 0, 0, now);
        s.on_answer(k(2), B, t(300), true);
        assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(1)));
        s.expire(now + Duration::from_millis(999));
        assert!(s.take_done().is_empty());
        s.expire(now + Duration::from_secs(1));
        assert!(!s.on_answer(k(1), R, t(2_000_000), false), "too late");
        let done = s.take_done();
        assert_eq!(done[0].hops[0].figures.loss_pct, 100.0);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn without_the_destination_one_unanswered_hop_is_shown() {
        let now = Instant::now();
        let mut s = TraceSession::new(ttl(5));
        send_round(&mut s, 0, 0, now);
        s.on_answer(k(2), R, t(10), false);
        s.on_send_failed(k(4));
        s.expire(now + Duration::from_secs(1));
        let round = s.take_done().remove(0);
        assert_eq!(round.hops.len(), 3);
        assert_eq!(round.hops[2].host, None);
        assert_eq!(round.hops[0].figures.loss_pct, 100.0);
        assert!(!s.reached());
        assert_eq!(s.reading().loss_from_hop, Some(3));
    }

    #[test]
    fn nothing_answered_shows_nothing() {
        let now = Instant::now();
        let mut s = TraceSession::new(ttl(3));
        send_round(&mut s, 0, 0, now);
        s.expire(now + Duration::from_secs(1));
        assert!(s.take_done().remove(0).hops.is_empty());
    }
}
