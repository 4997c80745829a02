//! The ping engine's echo loop against a network simulated on a virtual
//! clock: the loop's waits advance it, so the tests run in no time.
use std::cell::{Cell, RefCell};
use std::io;

use tokio::sync::mpsc;

use super::driver::{EchoLink, Outbox, Wake, drive};
use super::*;
use crate::platform::Received;
use crate::tasks::types::Delivery;
use crate::types::{Mtu, PayloadSize, ProbeCount};
use pb::ping_reply::Status;
use probemesh_packet::icmp::{IcmpView, TYPE_DEST_UNREACHABLE};
use probemesh_packet::testing::{echo_reply_to, icmp_error, ipv4};
use probemesh_proto::pb;

mod outbox;

const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const TARGET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const ID: EchoId = EchoId(0x4242);

/// What the simulated network does with echo `seq`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    /// Answer after the delay.
    Reply(Duration),
    /// Answer twice after the delay.
    Duplicate(Duration),
    /// Lose it.
    Drop,
    /// A router answers with fragmentation needed, next-hop MTU 1440.
    FragNeeded(Duration),
    /// The local stack refuses it with EMSGSIZE, route MTU 1500.
    TooLong,
    /// The local stack refuses it: an `unreachable` route.
    NoRoute,
    /// A reply with another task's identifier.
    ForeignReply(Duration),
}

/// A network on a virtual clock: time moves only when the loop waits, to
/// the earlier of what it waits for and the next datagram's arrival.
struct SimNet {
    fate: fn(u16) -> Fate,
    epoch: Instant,
    /// Virtual time since `epoch`.
    now: Cell<Duration>,
    /// Datagrams on their way: (arrival, bytes), in sending order.
    arriving: RefCell<Vec<(Duration, Vec<u8>)>>,
    /// When the task is cancelled, if ever.
    stop_at: Option<Duration>,
    sent: RefCell<Vec<u16>>,
}

impl SimNet {
    fn new(fate: fn(u16) -> Fate, stop_at: Option<Duration>) -> Self {
        Self {
            fate,
            epoch: Instant::now(),
            now: Cell::new(Duration::ZERO),
            arriving: RefCell::default(),
            stop_at,
            sent: RefCell::default(),
        }
    }

    /// The wall clock of virtual time `at`.
    fn stamp(at: Duration) -> Timestamp {
        let ns = i64::try_from(at.as_nanos()).unwrap();
        Timestamp::from_nanos(1_700_000_000_000_000_000 + ns)
    }

    fn deliver(&self, after: Duration, datagram: Vec<u8>) {
        let at = self.now.get() + after;
        self.arriving.borrow_mut().push((at, datagram));
    }

    /// Index of the first datagram to arrive, and when.
    fn next_arrival(&self) -> Option<(usize, Duration)> {
        let arriving = self.arriving.borrow();
        let first = arriving.iter().map(|(at, _)| *at).min()?;
        arriving
            .iter()
            .position(|(at, _)| *at == first)
            .map(|i| (i, first))
    }
}

impl EchoLink for SimNet {
    fn now(&self) -> Instant {
        self.epoch + self.now.get()
    }

    fn send_to(&self, message: &[u8], to: Ipv4Addr) -> Result<Timestamp, SendFailure> {
        assert_eq!(to, TARGET);
        let seq = IcmpView::new(message).unwrap().echo_seq().0;
        self.sent.borrow_mut().push(seq);
        let reply = ipv4(TARGET, ME, 57, &echo_reply_to(message));
        match (self.fate)(seq) {
            Fate::Reply(d) => self.deliver(d, reply),
            Fate::Duplicate(d) => {
                self.deliver(d, reply.clone());
                self.deliver(d, reply);
            }
            Fate::Drop => {}
            Fate::FragNeeded(d) => {
                let original = ipv4(ME, TARGET, 63, message);
                let error = icmp_error(TYPE_DEST_UNREACHABLE, 4, [0, 0, 0x05, 0xa0], &original);
                self.deliver(d, ipv4(ROUTER, ME, 64, &error));
            }
            Fate::TooLong => {
                return Err(SendFailure::MessageTooLong {
                    mtu: Some(Mtu(1500)),
                });
            }
            Fate::NoRoute => {
                return Err(SendFailure::Io(io::Error::from_raw_os_error(
                    libc::EHOSTUNREACH,
                )));
            }
            Fate::ForeignReply(d) => {
                let mut other = echo_reply_to(message);
                other[4] ^= 0xff;
                self.deliver(d, ipv4(TARGET, ME, 57, &other));
            }
        }
        Ok(Self::stamp(self.now.get()))
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        let Some((i, at)) = self.next_arrival().filter(|(_, at)| *at <= self.now.get()) else {
            return Ok(None);
        };
        let (_, datagram) = self.arriving.borrow_mut().remove(i);
        let len = datagram.len().min(buf.len());
        buf[..len].copy_from_slice(&datagram[..len]);
        Ok(Some(Received {
            len,
            at: Self::stamp(at),
        }))
    }

    fn wait(&self, until: Instant) -> io::Result<Wake> {
        let until = until.saturating_duration_since(self.epoch);
        let arrival = self.next_arrival().map(|(_, at)| at);
        let next = [Some(until), arrival, self.stop_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(until);
        self.now.set(self.now.get().max(next));
        let now = self.now.get();
        Ok(if self.stop_at.is_some_and(|at| at <= now) {
            Wake::Stop
        } else if arrival.is_some_and(|at| at <= now) {
            Wake::Readable
        } else {
            Wake::Timeout
        })
    }
}

fn spec(count: u16) -> PingSpec {
    PingSpec {
        target: TARGET.to_string(),
        size: PayloadSize::new(56).unwrap(),
        dont_fragment: true,
        count: ProbeCount::new(count).unwrap(),
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        ttl: None,
        delivery: Delivery::Each,
    }
}

/// Runs the echo loop as the ping thread does; returns its result, the
/// replies in the order they were handed over, the batches they came in
/// and the echoes sent.
fn ping_with(
    spec: &PingSpec,
    fate: fn(u16) -> Fate,
    stop_at: Option<Duration>,
) -> (
    Result<PingSummary>,
    Vec<pb::PingReply>,
    Vec<usize>,
    Vec<u16>,
) {
    let net = SimNet::new(fate, stop_at);
    let (tx, mut rx) = mpsc::channel(1000);
    let mut outbox = Outbox::new(spec.delivery, spec.interval, Some(tx));
    let result = drive(spec, TARGET, &net, ID, &mut outbox);
    if result.is_ok() {
        outbox.finish();
    } else {
        drop(outbox);
    }
    let (mut replies, mut batches) = (Vec::new(), Vec::new());
    while let Ok(batch) = rx.try_recv() {
        batches.push(batch.len());
        replies.extend(batch.iter().map(pb::PingReply::from));
    }
    let sent = net.sent.borrow().clone();
    (result, replies, batches, sent)
}

fn ping(
    spec: &PingSpec,
    fate: fn(u16) -> Fate,
) -> (Result<PingSummary>, Vec<pb::PingReply>, Vec<u16>) {
    let (result, replies, _, sent) = ping_with(spec, fate, None);
    (result, replies, sent)
}

fn statuses(replies: &[pb::PingReply]) -> Vec<(u32, pb::ping_reply::Status)> {
    replies.iter().map(|r| (r.seq, r.status())).collect()
}

#[test]
fn every_echo_answered() {
    let (summary, replies, sent) = ping(&spec(3), |_| Fate::Reply(Duration::from_millis(5)));
    let summary = summary.unwrap();
    assert_eq!(sent, [1, 2, 3]);
    assert_eq!(
        statuses(&replies),
        [(1, Status::Reply), (2, Status::Reply), (3, Status::Reply)]
    );
    assert_eq!(
        (replies[0].rtt_ns, replies[0].ttl, replies[0].bytes),
        (5_000_000, 57, 64)
    );
    assert_eq!(replies[0].from, TARGET.to_string());
    assert_eq!(
        (summary.transmitted, summary.received, summary.errors),
        (3, 3, 0)
    );
    let rtt = summary.rtt.unwrap();
    assert_eq!(
        (rtt.min, rtt.max, rtt.mdev),
        (
            Duration::from_millis(5),
            Duration::from_millis(5),
            Duration::ZERO
        )
    );
    assert_eq!(
        summary.elapsed,
        Duration::from_millis(2005),
        "ends with the last reply"
    );
}

#[test]
fn lost_late_duplicate_and_foreign_replies() {
    let fate = |seq| match seq {
        1 => Fate::Duplicate(Duration::from_millis(10)),
        2 => Fate::Drop,
        3 => Fate::Reply(Duration::from_millis(700)),
        4 => Fate::ForeignReply(Duration::from_millis(1)),
        _ => Fate::Reply(Duration::from_millis(20)),
    };
    let (summary, replies, _) = ping(&spec(5), fate);
    let summary = summary.unwrap();
    assert_eq!(
        statuses(&replies),
        [
            (1, Status::Reply),
            (2, Status::Timeout),
            (3, Status::Timeout),
            (4, Status::Timeout),
            (5, Status::Reply)
        ]
    );
    assert_eq!(
        (summary.transmitted, summary.received, summary.errors),
        (5, 2, 0)
    );
    let rtt = summary.rtt.unwrap();
    assert_eq!(
        (rtt.min, rtt.avg, rtt.max),
        (
            Duration::from_millis(10),
            Duration::from_millis(15),
            Duration::from_millis(20)
        )
    );
    assert_eq!(rtt.mdev, Duration::from_millis(5));
    assert_eq!(summary.elapsed, Duration::from_millis(4020));
}

#[test]
fn frag_needed_is_reported_with_its_mtu() {
    let (summary, replies, _) = ping(&spec(2), |_| Fate::FragNeeded(Duration::from_millis(3)));
    let summary = summary.unwrap();
    assert_eq!(
        statuses(&replies),
        [(1, Status::IcmpError), (2, Status::IcmpError)]
    );
    let r = &replies[0];
    assert_eq!((r.icmp_type, r.icmp_code, r.mtu), (3, 4, 1440));
    assert_eq!(r.from, ROUTER.to_string());
    assert_eq!(r.detail, "Frag needed and DF set (mtu = 1440)");
    assert_eq!(r.rtt_ns, 3_000_000);
    assert_eq!(
        (summary.transmitted, summary.received, summary.errors),
        (2, 0, 2)
    );
    assert_eq!(summary.rtt, None);
    // Tallied by sender and kind, for the diagnosis.
    assert_eq!(summary.icmp_errors.len(), 1, "{summary:?}");
    let tally = &summary.icmp_errors[0];
    assert_eq!(
        (
            tally.from,
            tally.error.icmp_type,
            tally.error.code,
            tally.count
        ),
        (ROUTER, 3, 4, 2)
    );
    assert_eq!(summary.local_errors, []);
}

#[test]
fn message_too_long_is_a_send_error_not_a_crash() {
    let (summary, replies, _) = ping(&spec(2), |_| Fate::TooLong);
    let summary = summary.unwrap();
    assert_eq!(
        statuses(&replies),
        [(1, Status::SendError), (2, Status::SendError)]
    );
    assert_eq!(replies[0].detail, "local error: message too long, mtu=1500");
    assert_eq!(
        (summary.transmitted, summary.received, summary.errors),
        (2, 0, 2)
    );
    assert_eq!(
        summary.local_errors,
        [LocalErrorCount {
            errno: "EMSGSIZE".into(),
            detail: "local error: message too long, mtu=1500".into(),
            count: 2
        }]
    );
    assert_eq!(summary.icmp_errors, []);
    assert_eq!(
        summary.elapsed,
        Duration::from_secs(1),
        "no waiting for refused echoes"
    );
}

#[test]
fn refused_sends_are_tallied_by_errno() {
    let fate = |seq| {
        if seq == 2 {
            Fate::TooLong
        } else {
            Fate::NoRoute
        }
    };
    let (summary, _, _) = ping(&spec(3), fate);
    let summary = summary.unwrap();
    let tally: Vec<(&str, u32)> = summary
        .local_errors
        .iter()
        .map(|e| (e.errno.as_str(), e.count))
        .collect();
    assert_eq!(tally, [("EHOSTUNREACH", 2), ("EMSGSIZE", 1)]);
    assert!(
        summary.local_errors[0].detail.contains("No route to host"),
        "{summary:?}"
    );
}

#[test]
fn cancellation_stops_the_ping() {
    let (result, replies, _, sent) = ping_with(
        &spec(100),
        |_| Fate::Reply(Duration::from_millis(1)),
        Some(Duration::from_millis(2500)),
    );
    assert!(
        matches!(
            result,
            Err(Error::Cancelled {
                done: 3,
                total: 100
            })
        ),
        "{result:?}"
    );
    assert_eq!(sent, [1, 2, 3]);
    assert_eq!(replies.len(), 3);
}

#[test]
fn session_ignores_unknown_sequence_numbers() {
    let mut s = PingSession::new(1, Duration::from_secs(1));
    let reply = EchoResponse::EchoReply {
        seq: Seq(0),
        from: TARGET,
        ttl: 1,
        bytes: 8,
        checksum_ok: true,
    };
    assert_eq!(s.on_response(reply, Timestamp::from_nanos(0)), None);
    let reply = EchoResponse::EchoReply {
        seq: Seq(2),
        from: TARGET,
        ttl: 1,
        bytes: 8,
        checksum_ok: true,
    };
    assert_eq!(s.on_response(reply, Timestamp::from_nanos(0)), None);
    assert!(!s.is_finished());
    assert!(s.on_send_failed("EPERM", "x".into()).is_some());
    assert!(s.on_send_failed("EPERM", "x".into()).is_none());
    assert!(s.is_finished());
}
