//! How long a `meshctl probe` run waits: timeouts derived from what the run
//! has already measured instead of fixed seconds.
//!
//! The echoes back from an endpoint's probe (`icmp`, reverse) start at
//! once with the run's `--timeout` (default 1 s): they are the measurement,
//! and so are the forward echoes where no probe answers back. The first
//! reply either way counts for the endpoint (a round trip is the same path
//! both ways). Every check that waits on the same path — the forward echoes
//! where echoes come back, the large echoes, the TCP connects, the
//! transfer, and the follow-ups (trace, path MTU) — is *paced* by that
//! endpoint: it waits for the first echo reply at most [`RTT_WAIT`] plus
//! [`ATTEMPT_RTTS`] clock-exchange round trips of its probe after the wave
//! starts (a probe behind a slow link sees its replies late), then takes
//! its timeouts from
//!
//! ```text
//! rtt      = max(first echo reply's round trip, clock-exchange round trip
//!                of the probe that runs it)
//! attempt  = clamp(ATTEMPT_RTTS × rtt, ATTEMPT_FLOOR, DERIVED_CEILING)
//! transfer = clamp(TRANSFER_FLOOR + TRANSFER_RTTS × rtt, .., DERIVED_CEILING)
//! ```
//!
//! - A user's explicit `--timeout` wins: every attempt waits exactly that
//!   (and the transfer its fixed [`TRANSFER_TIMEOUT`]), as before.
//! - No reply within that wait (ICMP filtered, a black hole, a path
//!   slower than that): nothing was measured, so the fixed defaults hold
//!   (`--timeout`, 1 s by default, per attempt; [`TRANSFER_TIMEOUT`]).
//! - A slow but healthy path measures a large RTT, and its timeouts grow
//!   with it (up to [`DERIVED_CEILING`]). The transfer floor covers three
//!   back-to-back retransmission timeouts (200 + 400 + 800 ms at Linux's
//!   200 ms minimum), so a lost segment on a working path is resent within
//!   it. A lost SYN is resent only after 1 s, past the attempt floor — as it
//!   was past the old fixed 1 s wait: one lost SYN fails one of the three
//!   connects either way.

use std::collections::BTreeMap;
use std::time::Duration;

use probemesh_proto::pb;
use probemesh_proto::pb::run_request::Kind;
use tokio::sync::watch;
use tokio::time::Instant;

/// Longest a paced check waits, from the start of the wave, for the first
/// echo reply of its endpoint, besides its probe's clock-exchange round
/// trips.
pub const RTT_WAIT: Duration = Duration::from_millis(200);
/// Round trips one attempt (an echo, a connect, a trace probe) may take.
pub const ATTEMPT_RTTS: u32 = 4;
/// The shortest derived attempt: scheduling on a loaded host stays well
/// under it.
pub const ATTEMPT_FLOOR: Duration = Duration::from_millis(250);
/// The longest derived timeout (a path this slow is past every default).
pub const DERIVED_CEILING: Duration = Duration::from_secs(10);
/// The shortest derived transfer: three back-to-back retransmission
/// timeouts at Linux's 200 ms minimum (200 + 400 + 800 ms) and some slack.
pub const TRANSFER_FLOOR: Duration = Duration::from_millis(1500);
/// Round trips a transfer may add to its floor (handshake, slow start,
/// retransmissions).
pub const TRANSFER_RTTS: u32 = 16;
/// The transfer's fixed bound when nothing was measured or `--timeout` was
/// given.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a trace probe waits (a hop that answers at all answers
/// well within it).
pub const TRACE_WAIT: Duration = Duration::from_millis(500);
/// The longest a path-MTU probe waits.
pub const PMTU_WAIT: Duration = Duration::from_millis(300);

/// The longest a paced check waits, from the start of the wave, for its
/// endpoint's first echo reply when its probe's clock exchange takes
/// `clock_rtt`: [`RTT_WAIT`] plus [`ATTEMPT_RTTS`] of those round trips.
pub fn pace_wait(clock_rtt: Duration) -> Duration {
    RTT_WAIT + clock_rtt.min(DERIVED_CEILING) * ATTEMPT_RTTS
}

/// The timeouts one check runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Per attempt: an echo, a connect, a trace or path-MTU probe.
    pub attempt: Duration,
    /// The whole transfer.
    pub transfer: Duration,
}

impl Timeouts {
    /// The fixed ones: the user's (or default) per-attempt wait.
    pub fn fixed(attempt: Duration) -> Self {
        Self {
            attempt,
            transfer: TRANSFER_TIMEOUT,
        }
    }

    /// Derived from a measured round trip.
    pub fn derived(rtt: Duration) -> Self {
        Self {
            attempt: (rtt * ATTEMPT_RTTS).clamp(ATTEMPT_FLOOR, DERIVED_CEILING),
            transfer: (TRANSFER_FLOOR + rtt * TRANSFER_RTTS).min(DERIVED_CEILING),
        }
    }

    /// Sets the timeouts of `request` for what it runs; a connect check
    /// against a probe's responder (one byte) gets `connects` attempts.
    pub fn apply(self, request: &mut pb::RunRequest, connects: u32) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        match request.kind.as_mut() {
            Some(Kind::Ping(p)) => p.timeout_us = us(self.attempt),
            Some(Kind::Tcping(t)) => t.timeout_us = us(self.attempt),
            // One byte to the probe responder: a connect check.
            Some(Kind::TcpTransfer(t)) if t.bytes <= 1 => {
                t.timeout_us = us(self.attempt * connects);
            }
            Some(Kind::TcpTransfer(t)) => t.timeout_us = us(self.transfer),
            Some(Kind::Trace(t)) => t.timeout_us = us(self.attempt.min(TRACE_WAIT)),
            Some(Kind::Pmtu(p)) => p.timeout_us = us(self.attempt.min(PMTU_WAIT)),
            _ => {}
        }
    }
}

/// What the run has measured so far: the first echo round trip per
/// endpoint, and how paced checks turn it into timeouts.
#[derive(Debug)]
pub struct Timing {
    /// `--timeout` as given; `None`: derive.
    user: Option<Duration>,
    /// The per-attempt default when nothing was measured.
    default: Duration,
    /// When the wave started (the RTT wait counts from here).
    started: Instant,
    /// Endpoint host → first echo round trip.
    rtts: watch::Sender<BTreeMap<String, Duration>>,
}

impl Timing {
    /// `user`: the explicit `--timeout`, if any; `default`: the per-attempt
    /// wait when nothing is measured.
    pub fn new(user: Option<Duration>, default: Duration) -> Self {
        Self {
            user,
            default,
            started: Instant::now(),
            rtts: watch::Sender::new(BTreeMap::new()),
        }
    }

    /// Records an echo reply from `host`; only the first counts.
    pub fn echo_reply(&self, host: &str, reply: &pb::PingReply) {
        if reply.status() != pb::ping_reply::Status::Reply || reply.rtt_ns <= 0 {
            return;
        }
        let rtt = Duration::from_nanos(u64::try_from(reply.rtt_ns).unwrap_or(0));
        self.rtts.send_if_modified(|m| {
            if m.contains_key(host) {
                return false;
            }
            m.insert(host.to_owned(), rtt);
            true
        });
    }

    /// The timeouts for a check paced by `hosts` (run by a probe whose
    /// clock exchange took `clock_rtt`): waits, until [`pace_wait`] after
    /// the wave started, for each host's first echo reply, and takes the
    /// slowest that came. When none came, `far_clock_rtt` — the clock
    /// exchange of the probe at the far end — stands in: the two exchanges
    /// together cross from one end to the other through the coordinator.
    /// Only with neither do the fixed defaults hold.
    pub async fn timeouts(
        &self,
        hosts: &[&str],
        clock_rtt: Option<Duration>,
        far_clock_rtt: Option<Duration>,
    ) -> Timeouts {
        if let Some(user) = self.user {
            return Timeouts::fixed(user);
        }
        let clock_rtt = clock_rtt.unwrap_or_default().min(DERIVED_CEILING);
        let mut rx = self.rtts.subscribe();
        let deadline = self.started + pace_wait(clock_rtt);
        let all = |m: &BTreeMap<String, Duration>| hosts.iter().all(|h| m.contains_key(*h));
        // Timed out or not, what came by then is what was measured.
        let _ = tokio::time::timeout_at(deadline, rx.wait_for(all)).await;
        let measured = {
            let m = self.rtts.borrow();
            hosts.iter().filter_map(|h| m.get(*h).copied()).max()
        };
        match (measured, far_clock_rtt) {
            (Some(rtt), _) => Timeouts::derived(rtt.max(clock_rtt)),
            (None, Some(far)) => Timeouts::derived(clock_rtt + far.min(DERIVED_CEILING)),
            (None, None) => Timeouts::fixed(self.default),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(rtt_ns: i64) -> pb::PingReply {
        pb::PingReply {
            status: pb::ping_reply::Status::Reply.into(),
            rtt_ns,
            ..Default::default()
        }
    }

    #[test]
    fn derived_timeouts_grow_with_the_round_trip_between_floor_and_ceiling() {
        let fast = Timeouts::derived(Duration::from_micros(100));
        assert_eq!(fast.attempt, ATTEMPT_FLOOR);
        assert_eq!(fast.transfer, TRANSFER_FLOOR + Duration::from_micros(1600));
        let slow = Timeouts::derived(Duration::from_millis(300));
        assert_eq!(slow.attempt, Duration::from_millis(1200));
        assert_eq!(slow.transfer, Duration::from_millis(6300));
        let crawl = Timeouts::derived(Duration::from_secs(5));
        assert_eq!(
            (crawl.attempt, crawl.transfer),
            (DERIVED_CEILING, DERIVED_CEILING)
        );
    }

    #[tokio::test]
    async fn the_user_timeout_wins_and_nothing_measured_keeps_the_defaults() {
        let user = Timing::new(Some(Duration::from_millis(700)), Duration::from_secs(1));
        user.echo_reply("198.18.0.12", &reply(100_000));
        assert_eq!(
            user.timeouts(&["198.18.0.12"], None, None).await,
            Timeouts::fixed(Duration::from_millis(700))
        );
        let silent = Timing::new(None, Duration::from_secs(1));
        assert_eq!(
            silent.timeouts(&["198.18.0.12"], None, None).await,
            Timeouts::fixed(Duration::from_secs(1))
        );
    }

    #[tokio::test]
    async fn with_no_echo_back_the_clock_exchanges_of_both_ends_stand_in() {
        let t = Timing::new(None, Duration::from_secs(1));
        let near = Some(Duration::from_millis(40));
        let far = Some(Duration::from_millis(60));
        assert_eq!(
            t.timeouts(&["198.18.0.12"], near, far).await,
            Timeouts::derived(Duration::from_millis(100))
        );
        // An echo that came wins over the stand-in.
        t.echo_reply("198.18.0.12", &reply(2_000_000));
        assert_eq!(
            t.timeouts(&["198.18.0.12"], near, far).await,
            Timeouts::derived(Duration::from_millis(40))
        );
    }

    #[tokio::test]
    async fn a_check_paced_by_several_hosts_takes_the_slowest_that_answered() {
        let t = Timing::new(None, Duration::from_secs(1));
        t.echo_reply("198.19.1.10", &reply(3_000_000));
        t.echo_reply("198.19.2.10", &reply(90_000_000));
        let hosts = ["198.19.1.10", "198.19.2.10", "198.19.3.10"];
        assert_eq!(
            t.timeouts(&hosts, None, None).await,
            Timeouts::derived(Duration::from_millis(90))
        );
    }

    #[tokio::test]
    async fn a_paced_check_takes_the_first_reply_and_the_slower_clock_exchange() {
        let t = std::sync::Arc::new(Timing::new(None, Duration::from_secs(1)));
        let waiting = tokio::spawn({
            let t = t.clone();
            async move { t.timeouts(&["198.18.0.12"], None, None).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        t.echo_reply("198.18.0.12", &reply(500_000_000));
        t.echo_reply("198.18.0.12", &reply(1_000));
        let got = waiting.await.expect("joins");
        assert_eq!(got, Timeouts::derived(Duration::from_millis(500)));
        let by_clock = t
            .timeouts(&["198.18.0.12"], Some(Duration::from_millis(800)), None)
            .await;
        assert_eq!(by_clock.attempt, Duration::from_millis(3200));
        let lost = pb::PingReply {
            status: pb::ping_reply::Status::Timeout.into(),
            ..reply(0)
        };
        t.echo_reply("198.18.0.13", &lost);
        assert_eq!(
            t.timeouts(&["198.18.0.13"], None, None).await,
            Timeouts::fixed(Duration::from_secs(1))
        );
    }
}
