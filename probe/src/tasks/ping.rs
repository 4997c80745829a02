//! The ping engine: `count` ICMP echoes, one every `interval`, each waiting up
//! to `timeout` for its reply, as iputils `ping -c N -i I -W T`.
//!
//! [`PingSession`] is the sans-IO core (which echo is where, what an incoming
//! datagram means, when an echo has timed out, the summary); [`run`] drives it
//! with an [`IcmpSocket`] and tokio's clock (pausable in tests).
//!
//! Semantics: a reply counts only if it answers an echo still in flight and
//! its kernel-timestamped round trip is within `timeout` (late replies are
//! ignored, and the echo reports a timeout); duplicates are ignored. ICMP
//! errors quoting an echo end that echo and count as errors, as do sends the
//! local stack refused. `transmitted` counts every echo we tried to send,
//! refused ones included (like ping's "+N errors").

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::context::Progress;
use super::error::{Error, Result};
use super::stats::{RttAccumulator, RttStats};
use super::types::PingSpec;
use crate::platform::{IcmpSocket, SendFailure, Timestamp};
use crate::types::{EchoId, Seq};
use probemesh_packet::icmp::{EchoError, EchoResponse, build_echo_request, classify_echo};

/// Receive buffer: the largest IPv4 datagram.
const RECV_BUF_BYTES: usize = 65_536;
/// Consecutive receive errors after which the task fails. Raw sockets report
/// a pending ICMP error once on `recvmsg` (`sk_err`), which is not fatal.
const MAX_CONSECUTIVE_RECV_ERRORS: u32 = 16;

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
    /// From the first send to the end of the task (tokio clock).
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
    /// (tokio clock). Moves to `Done` on a reply, an ICMP error or the deadline.
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
    /// `now` (tokio clock).
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

/// Runs a ping of `address` over `socket`, reporting each echo's fate to
/// `progress` as it is known. Echoes carry `id`. Returns
/// [`Error::Cancelled`] if `cancel` fires first, [`Error::Recv`] if the
/// socket keeps failing.
pub async fn run<S: IcmpSocket>(
    spec: &PingSpec,
    address: Ipv4Addr,
    socket: &S,
    id: EchoId,
    progress: &Progress<PingEvent>,
    cancel: &CancellationToken,
) -> Result<PingSummary> {
    let start = Instant::now();
    let mut session = PingSession::new(spec.count.get(), spec.timeout);
    let mut next_send = start;
    let mut buf = vec![0u8; RECV_BUF_BYTES];
    let mut recv_errors = 0u32;
    loop {
        let send_due = session.next_to_send().map(|_| next_send);
        let Some(wake) = [send_due, session.next_deadline()]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                return Err(Error::Cancelled {
                    done: session.transmitted(),
                    total: u32::from(spec.count.get()),
                });
            }
            received = next_response(socket, &mut buf, id) => match received {
                Ok(Some((response, at))) => {
                    recv_errors = 0;
                    if let Some(event) = session.on_response(response, at) {
                        progress.send(event, cancel).await;
                    }
                }
                Ok(None) => recv_errors = 0,
                Err(source) => {
                    recv_errors += 1;
                    if recv_errors > MAX_CONSECUTIVE_RECV_ERRORS {
                        return Err(Error::Recv { addr: address.into(), source });
                    }
                    tracing::debug!(%address, error = %source, "recvmsg on the ICMP socket failed");
                }
            },
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                for event in session.expire(now) {
                    progress.send(event, cancel).await;
                }
                if let Some(seq) = session.next_to_send().filter(|_| next_send <= now) {
                    let packet = build_echo_request(id, seq, spec.size.get());
                    match socket.send_to(&packet, address).await {
                        Ok(sent_at) => session.on_sent(sent_at, Instant::now()),
                        Err(failure) => {
                            let errno = send_failure_errno(&failure);
                            let detail = send_failure_detail(failure, address);
                            if let Some(event) = session.on_send_failed(&errno, detail) {
                                progress.send(event, cancel).await;
                            }
                        }
                    }
                    next_send += spec.interval;
                }
            }
        }
    }
    Ok(session.summary(address, start.elapsed()))
}

/// Waits for the next datagram and reads it; `None` when it is not ours.
/// Owns the borrow of `buf` so that `select!` handlers need not.
async fn next_response<S: IcmpSocket>(
    socket: &S,
    buf: &mut [u8],
    id: EchoId,
) -> std::io::Result<Option<(EchoResponse, Timestamp)>> {
    let received = socket.recv(buf).await?;
    let datagram = buf.get(..received.len).unwrap_or(buf);
    Ok(classify_echo(datagram, id).map(|response| (response, received.at)))
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
mod tests {
    use std::io;
    use std::sync::Mutex;

    use tokio::sync::mpsc;

    use super::*;
    use crate::platform::Received;
    use crate::types::{Mtu, PayloadSize, ProbeCount};
    use pb::ping_reply::Status;
    use probemesh_packet::icmp::{IcmpView, TYPE_DEST_UNREACHABLE};
    use probemesh_packet::testing::{echo_reply_to, icmp_error, ipv4};
    use probemesh_proto::pb;

    const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
    const TARGET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const ID: EchoId = EchoId(0x4242);

    /// What the mock network does with echo `seq`.
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

    /// A network simulated on tokio's (paused) clock.
    struct MockSocket {
        fate: fn(u16) -> Fate,
        epoch: Instant,
        tx: mpsc::UnboundedSender<(Vec<u8>, Timestamp)>,
        rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<(Vec<u8>, Timestamp)>>,
        sent: Mutex<Vec<u16>>,
    }

    impl MockSocket {
        fn new(fate: fn(u16) -> Fate) -> Self {
            let (tx, rx) = mpsc::unbounded_channel();
            Self {
                fate,
                epoch: Instant::now(),
                tx,
                rx: rx.into(),
                sent: Mutex::default(),
            }
        }

        fn now(epoch: Instant) -> Timestamp {
            let ns = i64::try_from(epoch.elapsed().as_nanos()).unwrap();
            Timestamp::from_nanos(1_700_000_000_000_000_000 + ns)
        }

        fn deliver(&self, after: Duration, datagram: Vec<u8>) {
            let tx = self.tx.clone();
            let epoch = self.epoch;
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send((datagram, Self::now(epoch)));
            });
        }
    }

    impl IcmpSocket for MockSocket {
        async fn send_to(&self, message: &[u8], to: Ipv4Addr) -> Result<Timestamp, SendFailure> {
            assert_eq!(to, TARGET);
            let seq = IcmpView::new(message).unwrap().echo_seq().0;
            self.sent.lock().unwrap().push(seq);
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
            Ok(Self::now(self.epoch))
        }

        async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
            let (datagram, at) = self
                .rx
                .lock()
                .await
                .recv()
                .await
                .ok_or(io::ErrorKind::BrokenPipe)?;
            let len = datagram.len().min(buf.len());
            buf[..len].copy_from_slice(&datagram[..len]);
            Ok(Received { len, at })
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
        }
    }

    async fn ping(
        spec: &PingSpec,
        fate: fn(u16) -> Fate,
        cancel: &CancellationToken,
    ) -> (Result<PingSummary>, Vec<pb::PingReply>, Vec<u16>) {
        let socket = MockSocket::new(fate);
        let (tx, mut rx) = mpsc::channel(100);
        let progress = Progress::new(tx);
        let result = run(spec, TARGET, &socket, ID, &progress, cancel).await;
        drop(progress);
        let mut replies = Vec::new();
        while let Some(event) = rx.recv().await {
            replies.push(pb::PingReply::from(&event));
        }
        let sent = socket.sent.lock().unwrap().clone();
        (result, replies, sent)
    }

    fn statuses(replies: &[pb::PingReply]) -> Vec<(u32, pb::ping_reply::Status)> {
        replies.iter().map(|r| (r.seq, r.status())).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn every_echo_answered() {
        let started = Instant::now();
        let (summary, replies, sent) = ping(
            &spec(3),
            |_| Fate::Reply(Duration::from_millis(5)),
            &CancellationToken::new(),
        )
        .await;
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
        assert_eq!(started.elapsed(), summary.elapsed);
    }

    #[tokio::test(start_paused = true)]
    async fn lost_late_duplicate_and_foreign_replies() {
        let fate = |seq| match seq {
            1 => Fate::Duplicate(Duration::from_millis(10)),
            2 => Fate::Drop,
            3 => Fate::Reply(Duration::from_millis(700)),
            4 => Fate::ForeignReply(Duration::from_millis(1)),
            _ => Fate::Reply(Duration::from_millis(20)),
        };
        let (summary, replies, _) = ping(&spec(5), fate, &CancellationToken::new()).await;
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

    #[tokio::test(start_paused = true)]
    async fn frag_needed_is_reported_with_its_mtu() {
        let (summary, replies, _) = ping(
            &spec(2),
            |_| Fate::FragNeeded(Duration::from_millis(3)),
            &CancellationToken::new(),
        )
        .await;
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

    #[tokio::test(start_paused = true)]
    async fn message_too_long_is_a_send_error_not_a_crash() {
        let (summary, replies, _) =
            ping(&spec(2), |_| Fate::TooLong, &CancellationToken::new()).await;
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

    #[tokio::test(start_paused = true)]
    async fn refused_sends_are_tallied_by_errno() {
        let fate = |seq| {
            if seq == 2 {
                Fate::TooLong
            } else {
                Fate::NoRoute
            }
        };
        let (summary, _, _) = ping(&spec(3), fate, &CancellationToken::new()).await;
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

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_the_ping() {
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            trigger.cancel();
        });
        let (result, replies, sent) = ping(
            &spec(100),
            |_| Fate::Reply(Duration::from_millis(1)),
            &cancel,
        )
        .await;
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
}
