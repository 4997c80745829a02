//! The ping engine: `count` ICMP echoes, one every `interval`, each waiting up
//! to `timeout` for its reply, as iputils `ping -c N -i I -W T`.
//!
//! [`PingSession`] is the sans-IO core (which echo is where, what an incoming
//! datagram means, when an echo has timed out, the summary); [`run`] drives it
//! from a thread of its own over a [`PolledIcmpSocket`] (the `driver`
//! module: the echo loop, testable against a simulated network and clock).
//!
//! Semantics: a reply counts only if it answers an echo still in flight and
//! its kernel-timestamped round trip is within `timeout` (late replies are
//! ignored, and the echo reports a timeout); duplicates are ignored. ICMP
//! errors quoting an echo end that echo and count as errors, as do sends the
//! local stack refused. `transmitted` counts every echo we tried to send,
//! refused ones included (like ping's "+N errors").

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::error::{Error, Result};
use super::stats::{RttAccumulator, RttStats};
use super::types::PingSpec;
use crate::platform::linux::PolledIcmpSocket;
use crate::platform::{SendFailure, Timestamp};
use crate::types::{EchoId, Seq};
use driver::{KernelLink, Outbox};
use probemesh_packet::icmp::{EchoError, EchoResponse};

mod driver;

/// What became of one echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingEventKind {
    /// The target answered.
    Reply {
        /// Who answered.
        from: Ipv4Addr,
        /// ICMP bytes received (header + payload).
        bytes: usize,
        /// TTL left on arrival, hops.
        ttl: u8,
        /// Round trip, kernel send-side clock to kernel receive timestamp.
        rtt: Duration,
        /// False when the reply's ICMP checksum was wrong.
        checksum_ok: bool,
    },
    /// No reply within the timeout.
    Timeout,
    /// An ICMP error came back instead of a reply.
    IcmpError {
        /// The router or host that sent it.
        from: Ipv4Addr,
        /// ICMP bytes received.
        bytes: usize,
        /// TTL left on arrival, hops.
        ttl: u8,
        /// Time from sending the echo to receiving the error.
        rtt: Duration,
        /// Type, code and next-hop MTU.
        error: EchoError,
    },
    /// The local stack refused to send the echo.
    SendError {
        /// What ping would print, e.g. "local error: message too long, mtu=1500".
        detail: String,
    },
}

/// One progress line: what became of echo `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingEvent {
    /// The echo's sequence number.
    pub seq: Seq,
    /// What happened to it.
    pub kind: PingEventKind,
}

/// The end result of a ping task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingSummary {
    /// The address that was pinged.
    pub address: Ipv4Addr,
    /// Echoes we tried to send.
    pub transmitted: u32,
    /// Replies counted.
    pub received: u32,
    /// ICMP errors received plus sends refused.
    pub errors: u32,
    /// Round-trip statistics over the replies; `None` without replies.
    pub rtt: Option<RttStats>,
    /// From the first send to the end of the task (monotonic clock).
    pub elapsed: Duration,
    /// The ICMP errors that answered echoes, by sender and kind, in the
    /// order first seen.
    pub icmp_errors: Vec<IcmpErrorCount>,
    /// The sends the local stack refused, by errno, in the order first seen.
    pub local_errors: Vec<LocalErrorCount>,
}

/// ICMP errors from one sender of one type and code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpErrorCount {
    /// Who sent them.
    pub from: Ipv4Addr,
    /// Type, code and next-hop MTU.
    pub error: EchoError,
    /// How many.
    pub count: u32,
}

/// Sends the local stack refused with one errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalErrorCount {
    /// The errno's name (`EHOSTUNREACH`), or `unknown` without one.
    pub errno: String,
    /// The first such failure as ping prints it.
    pub detail: String,
    /// How many.
    pub count: u32,
}

/// Where one echo is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EchoState {
    /// Not sent yet.
    Pending,
    /// Sent at `sent_at` (wall clock, for the RTT); times out at `deadline`
    /// (monotonic clock). Moves to `Done` on a reply, an ICMP error or the deadline.
    InFlight {
        /// Wall-clock time just before the send call.
        sent_at: Timestamp,
        /// When the echo stops waiting.
        deadline: Instant,
    },
    /// Finished: answered, errored, refused or timed out. Later datagrams
    /// about it (duplicates, late replies) are ignored.
    Done,
}

/// The sans-IO state of one ping task.
#[derive(Debug)]
pub struct PingSession {
    timeout: Duration,
    /// State of echo `seq`, at index `seq - 1`.
    echoes: Vec<EchoState>,
    /// Sequence numbers in flight, in send order, hence in deadline order.
    in_flight: VecDeque<Seq>,
    next: u16,
    received: u32,
    errors: u32,
    rtt: RttAccumulator,
    icmp_errors: Vec<IcmpErrorCount>,
    local_errors: Vec<LocalErrorCount>,
}

impl PingSession {
    /// A session for `count` echoes (sequence numbers 1..=count), each
    /// waiting up to `timeout`.
    pub fn new(count: u16, timeout: Duration) -> Self {
        Self {
            timeout,
            echoes: vec![EchoState::Pending; usize::from(count)],
            in_flight: VecDeque::new(),
            next: 1,
            received: 0,
            errors: 0,
            rtt: RttAccumulator::default(),
            icmp_errors: Vec::new(),
            local_errors: Vec::new(),
        }
    }

    /// The sequence number of the next echo to send, if any is left.
    pub fn next_to_send(&self) -> Option<Seq> {
        (usize::from(self.next) <= self.echoes.len()).then_some(Seq(self.next))
    }

    /// Echoes sent or refused so far.
    pub fn transmitted(&self) -> u32 {
        u32::from(self.next - 1)
    }

    /// Records that the next echo went out at `sent_at` (wall clock) and
    /// `now` (monotonic clock).
    pub fn on_sent(&mut self, sent_at: Timestamp, now: Instant) {
        let seq = Seq(self.next);
        if let Some(i) = self.index(seq) {
            self.echoes[i] = EchoState::InFlight {
                sent_at,
                deadline: now + self.timeout,
            };
            self.in_flight.push_back(seq);
            self.next += 1;
        }
    }

    /// Records that the local stack refused the next echo with `errno`
    /// (its name), printed as `detail`.
    pub fn on_send_failed(&mut self, errno: &str, detail: String) -> Option<PingEvent> {
        let seq = Seq(self.next);
        let i = self.index(seq)?;
        self.echoes[i] = EchoState::Done;
        self.next += 1;
        self.errors += 1;
        match self.local_errors.iter_mut().find(|e| e.errno == errno) {
            Some(tally) => tally.count += 1,
            None => self.local_errors.push(LocalErrorCount {
                errno: errno.to_owned(),
                detail: detail.clone(),
                count: 1,
            }),
        }
        Some(PingEvent {
            seq,
            kind: PingEventKind::SendError { detail },
        })
    }

    /// Handles a datagram received at `at` (kernel timestamp). Returns the
    /// event to report, or `None` when it changes nothing (not in flight,
    /// duplicate, or a reply later than the timeout).
    pub fn on_response(&mut self, response: EchoResponse, at: Timestamp) -> Option<PingEvent> {
        let seq = match response {
            EchoResponse::EchoReply { seq, .. } | EchoResponse::Error { seq, .. } => seq,
        };
        let i = self.index(seq)?;
        let EchoState::InFlight { sent_at, .. } = self.echoes[i] else {
            return None;
        };
        let rtt = at.saturating_duration_since(sent_at);
        let kind = match response {
            EchoResponse::EchoReply { .. } if rtt > self.timeout => return None,
            EchoResponse::EchoReply {
                from,
                ttl,
                bytes,
                checksum_ok,
                ..
            } => {
                self.received += 1;
                self.rtt.add(rtt);
                PingEventKind::Reply {
                    from,
                    bytes,
                    ttl,
                    rtt,
                    checksum_ok,
                }
            }
            EchoResponse::Error {
                from,
                ttl,
                bytes,
                error,
                ..
            } => {
                self.errors += 1;
                match self
                    .icmp_errors
                    .iter_mut()
                    .find(|e| e.from == from && e.error == error)
                {
                    Some(tally) => tally.count += 1,
                    None => self.icmp_errors.push(IcmpErrorCount {
                        from,
                        error,
                        count: 1,
                    }),
                }
                PingEventKind::IcmpError {
                    from,
                    bytes,
                    ttl,
                    rtt,
                    error,
                }
            }
        };
        self.echoes[i] = EchoState::Done;
        Some(PingEvent { seq, kind })
    }

    /// Times out every echo whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<PingEvent> {
        let mut events = Vec::new();
        while let Some(&seq) = self.in_flight.front() {
            if let Some(i) = self.index(seq)
                && let EchoState::InFlight { deadline, .. } = self.echoes[i]
            {
                if deadline > now {
                    break;
                }
                self.echoes[i] = EchoState::Done;
                events.push(PingEvent {
                    seq,
                    kind: PingEventKind::Timeout,
                });
            }
            self.in_flight.pop_front();
        }
        events
    }

    /// The earliest deadline of an echo in flight.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.in_flight
            .iter()
            .find_map(|&seq| match self.index(seq).map(|i| self.echoes[i]) {
                Some(EchoState::InFlight { deadline, .. }) => Some(deadline),
                _ => None,
            })
    }

    /// True when every echo has been sent and none is in flight.
    pub fn is_finished(&self) -> bool {
        self.next_to_send().is_none() && self.next_deadline().is_none()
    }

    /// The summary so far.
    pub fn summary(&self, address: Ipv4Addr, elapsed: Duration) -> PingSummary {
        PingSummary {
            address,
            transmitted: self.transmitted(),
            received: self.received,
            errors: self.errors,
            rtt: self.rtt.stats(),
            elapsed,
            icmp_errors: self.icmp_errors.clone(),
            local_errors: self.local_errors.clone(),
        }
    }

    /// Index of echo `seq` in `echoes`, if it is one of ours.
    fn index(&self, seq: Seq) -> Option<usize> {
        usize::from(seq.0)
            .checked_sub(1)
            .filter(|&i| i < self.echoes.len())
    }
}

/// Runs a ping of `address` over `socket` (echoes carry `id`) on a thread
/// of its own, which inherits the calling thread's network namespace. Each
/// echo's fate goes to `events` in the batches `spec.delivery` asks for
/// (`None`: the caller reads the summary only). Returns
/// [`Error::Cancelled`] if `cancel` fires first, [`Error::Recv`] if the
/// socket keeps failing.
pub async fn run(
    spec: &PingSpec,
    address: Ipv4Addr,
    socket: PolledIcmpSocket,
    id: EchoId,
    events: Option<mpsc::Sender<Vec<PingEvent>>>,
    cancel: &CancellationToken,
) -> Result<PingSummary> {
    let (stop, mut stop_tx) = std::io::pipe().map_err(|source| Error::Socket {
        op: "pipe() to stop the ping thread",
        source,
    })?;
    let (done_tx, done) = oneshot::channel();
    let link = KernelLink { socket, stop };
    let spec = spec.clone();
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("ping".into())
        .spawn(move || {
            let _entered = span.enter();
            let mut outbox = Outbox::new(spec.delivery, spec.interval, events);
            let result = driver::drive(&spec, address, &link, id, &mut outbox);
            if result.is_ok() {
                outbox.finish();
            }
            let _ = done_tx.send(result);
        })
        .map_err(|source| Error::Socket {
            op: "starting the ping thread",
            source,
        })?;
    tokio::pin!(done);
    let result = tokio::select! {
        result = &mut done => result,
        () = cancel.cancelled() => {
            // One byte in an empty pipe never blocks; if the thread already
            // ended, its read end is gone and the write fails harmlessly.
            let _ = stop_tx.write_all(&[1]);
            done.await
        }
    };
    result.unwrap_or_else(|_| {
        Err(Error::Socket {
            op: "the ping thread",
            source: std::io::Error::other("ended without a result"),
        })
    })
}

/// The errno name of a refused send (`EMSGSIZE`, `EHOSTUNREACH`, ...).
fn send_failure_errno(failure: &SendFailure) -> String {
    match failure {
        SendFailure::MessageTooLong { .. } => "EMSGSIZE".to_owned(),
        SendFailure::Io(e) => e.raw_os_error().map_or_else(
            || "unknown".to_owned(),
            |n| format!("{:?}", nix::errno::Errno::from_raw(n)),
        ),
    }
}

/// What ping would print for a refused send.
fn send_failure_detail(failure: SendFailure, address: Ipv4Addr) -> String {
    match failure {
        too_long @ SendFailure::MessageTooLong { .. } => too_long.to_string(),
        SendFailure::Io(source) => Error::Send {
            addr: address.into(),
            source,
        }
        .to_string(),
    }
}

#[cfg(test)]
mod tests;
