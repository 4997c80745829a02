//! The echo loop of a ping, on a thread of its own: it sends the echoes on
//! schedule, waits on the ICMP socket with a plain `ppoll` whose timeout is
//! the next send, deadline or batch flush, reads each reply (kernel
//! timestamp) and feeds the [`PingSession`]. Its events leave in the
//! batches the caller asked for (the async side is woken once per batch,
//! not per echo), and the summary once at the end.
//!
//! Why a thread and not a tokio task: on a runtime, each echo cost a timer
//! wake-up, a reactor wake-up and a self-wake of the runtime besides the
//! `sendto`/`recvmsg` that ping pays; here it costs what ping's own loop
//! does. The thread inherits the network namespace of the thread that
//! spawns it (where the socket was opened too).

use std::io::PipeReader;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{PingEvent, PingSession, PingSummary, send_failure_detail, send_failure_errno};
use crate::platform::linux::PolledIcmpSocket;
use crate::platform::{Received, SendFailure, Timestamp};
use crate::tasks::error::{Error, RecvErrors, Result};
use crate::tasks::types::{Delivery, PingSpec};
use crate::types::EchoId;
use probemesh_packet::icmp::{build_echo_request, classify_echo};

/// Receive buffer: the largest IPv4 datagram.
const RECV_BUF_BYTES: usize = 65_536;
/// After the caller's queue was found full, how long before trying again
/// (the echoes keep their schedule meanwhile; the events wait, in order).
const FULL_QUEUE_RETRY: Duration = Duration::from_millis(10);

/// What woke the echo loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A datagram (or a socket error) is waiting.
    Readable,
    /// The time asked for came.
    Timeout,
    /// The task was cancelled.
    Stop,
}

/// The echo loop's view of its socket, its clock and its stop signal; a
/// simulated network in the tests.
pub trait EchoLink {
    /// Now, on the clock of the deadlines.
    fn now(&self) -> Instant;
    /// Sends `message` to `to`; the wall-clock start of its round trip.
    fn send_to(&self, message: &[u8], to: Ipv4Addr) -> Result<Timestamp, SendFailure>;
    /// Reads one datagram into `buf` without waiting; `None` when none waits.
    fn recv(&self, buf: &mut [u8]) -> std::io::Result<Option<Received>>;
    /// Waits until a datagram waits, `until` comes, or a stop is asked.
    fn wait(&self, until: Instant) -> std::io::Result<Wake>;
}

/// The kernel's ICMP socket and the read end of the pipe the async side
/// writes to (or closes) to stop the loop.
#[derive(Debug)]
pub struct KernelLink {
    /// The task's ICMP socket.
    pub socket: PolledIcmpSocket,
    /// Readable once the task is cancelled.
    pub stop: PipeReader,
}

impl EchoLink for KernelLink {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn send_to(&self, message: &[u8], to: Ipv4Addr) -> Result<Timestamp, SendFailure> {
        self.socket.send_to(message, to)
    }

    fn recv(&self, buf: &mut [u8]) -> std::io::Result<Option<Received>> {
        self.socket.recv(buf)
    }

    fn wait(&self, until: Instant) -> std::io::Result<Wake> {
        let timeout = until.saturating_duration_since(Instant::now());
        let ready = self.socket.wait(self.stop.as_fd(), timeout)?;
        Ok(if ready.woken {
            Wake::Stop
        } else if ready.readable {
            Wake::Readable
        } else {
            Wake::Timeout
        })
    }
}

/// The echo loop's events on their way to the caller: gathered into the
/// batches its [`Delivery`] asks for, handed over without ever blocking the
/// loop (a full queue keeps them for a later try), or dropped at once when
/// the caller reads the summary only.
#[derive(Debug)]
pub struct Outbox {
    tx: Option<mpsc::Sender<Vec<PingEvent>>>,
    /// Longest an event waits for company (zero: each leaves alone).
    window: Duration,
    /// Most events gathered before they leave.
    max: usize,
    pending: Vec<PingEvent>,
    /// When `pending` leaves; `None` while it is empty.
    flush_at: Option<Instant>,
}

impl Outbox {
    /// An outbox sending on `tx` as `delivery` says, for echoes `interval`
    /// apart; `tx` is `None` (and ignored) for [`Delivery::ResultOnly`]. A
    /// window no longer than the interval would gather one reply a batch
    /// and only delay it: then each event leaves at once.
    pub fn new(
        delivery: Delivery,
        interval: Duration,
        tx: Option<mpsc::Sender<Vec<PingEvent>>>,
    ) -> Self {
        let (tx, window, max) = match delivery {
            Delivery::Batched { window, max } if window > interval => (tx, window, max.max(1)),
            Delivery::Each | Delivery::Batched { .. } => (tx, Duration::ZERO, 1),
            Delivery::ResultOnly => (None, Duration::ZERO, 1),
        };
        Self {
            tx,
            window,
            max,
            pending: Vec::new(),
            flush_at: None,
        }
    }

    /// Adds `event`, known at `now`; it leaves at once if the batch is full
    /// or the delivery wants each event alone.
    pub fn push(&mut self, event: PingEvent, now: Instant) {
        if self.tx.is_none() {
            return;
        }
        self.pending.push(event);
        if self.pending.len() >= self.max || self.window.is_zero() {
            self.flush(now);
        } else if self.flush_at.is_none() {
            self.flush_at = Some(now + self.window);
        }
    }

    /// When the gathered events are due to leave.
    pub fn due(&self) -> Option<Instant> {
        self.flush_at
    }

    /// Hands the gathered events over if they are due at `now`.
    pub fn flush_due(&mut self, now: Instant) {
        if self.flush_at.is_some_and(|at| at <= now) {
            self.flush(now);
        }
    }

    /// Hands the gathered events over unless the caller's queue is full
    /// (then they are tried again shortly) or gone (then they are dropped).
    fn flush(&mut self, now: Instant) {
        let Some(tx) = &self.tx else {
            return;
        };
        if self.pending.is_empty() {
            self.flush_at = None;
            return;
        }
        match tx.try_send(std::mem::take(&mut self.pending)) {
            Ok(()) => self.flush_at = None,
            Err(mpsc::error::TrySendError::Full(events)) => {
                self.pending = events;
                self.flush_at = Some(now + FULL_QUEUE_RETRY);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("ping progress receiver closed");
                self.tx = None;
                self.flush_at = None;
            }
        }
    }

    /// Hands over what is left, waiting for room: the summary must not
    /// overtake the last events. Call it on a thread outside any runtime.
    pub fn finish(mut self) {
        if let Some(tx) = self.tx.take()
            && !self.pending.is_empty()
            && tx.blocking_send(self.pending).is_err()
        {
            tracing::debug!("ping progress receiver closed");
        }
    }
}

/// Runs the ping of `address` with echo identifier `id` over `link`, handing
/// each echo's fate to `outbox` as it is known. Returns
/// [`Error::Cancelled`] when `link` says stop, [`Error::Recv`] if the socket
/// keeps failing. The events still gathered are the caller's to finish.
pub fn drive<L: EchoLink>(
    spec: &PingSpec,
    address: Ipv4Addr,
    link: &L,
    id: EchoId,
    outbox: &mut Outbox,
) -> Result<PingSummary> {
    let start = link.now();
    let mut session = PingSession::new(spec.count.get(), spec.timeout);
    let mut next_send = start;
    let mut buf = vec![0u8; RECV_BUF_BYTES];
    let mut recv_errors = RecvErrors::default();
    loop {
        let now = link.now();
        for event in session.expire(now) {
            outbox.push(event, now);
        }
        if session.next_to_send().is_some() && next_send <= now {
            send_next(spec, address, link, id, &mut session, outbox);
            next_send += spec.interval;
        }
        outbox.flush_due(link.now());
        let send_due = session.next_to_send().map(|_| next_send);
        let Some(wake) = [send_due, session.next_deadline()]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        let until = outbox.due().map_or(wake, |due| due.min(wake));
        let received = match link.wait(until) {
            Ok(Wake::Stop) => {
                return Err(Error::Cancelled {
                    done: session.transmitted(),
                    total: u32::from(spec.count.get()),
                });
            }
            Ok(Wake::Timeout) => continue,
            Ok(Wake::Readable) => link.recv(&mut buf),
            Err(e) => Err(e),
        };
        match received {
            Ok(Some(received)) => {
                recv_errors.reset();
                let datagram = buf.get(..received.len).unwrap_or(&buf);
                if let Some(event) = classify_echo(datagram, id)
                    .and_then(|response| session.on_response(response, received.at))
                {
                    outbox.push(event, link.now());
                }
            }
            Ok(None) => recv_errors.reset(),
            Err(source) => {
                let source = recv_errors.note(address.into(), source)?;
                tracing::debug!(%address, error = %source, "recvmsg on the ICMP socket failed");
            }
        }
    }
    Ok(session.summary(address, link.now().duration_since(start)))
}

/// Sends the session's next echo, or records why the stack refused it.
fn send_next<L: EchoLink>(
    spec: &PingSpec,
    address: Ipv4Addr,
    link: &L,
    id: EchoId,
    session: &mut PingSession,
    outbox: &mut Outbox,
) {
    let Some(seq) = session.next_to_send() else {
        return;
    };
    let packet = build_echo_request(id, seq, spec.size.get());
    match link.send_to(&packet, address) {
        Ok(sent_at) => session.on_sent(sent_at, link.now()),
        Err(failure) => {
            let errno = send_failure_errno(&failure);
            let detail = send_failure_detail(failure, address);
            if let Some(event) = session.on_send_failed(&errno, detail) {
                outbox.push(event, link.now());
            }
        }
    }
}
