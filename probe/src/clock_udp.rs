//! The probe's end of the UDP clock exchange (wire:
//! `probemesh_proto::clock_udp`).
//!
//! When the coordinator's `Welcome` offers a session, the probe dials out
//! over UDP (NAT friendly, like the stream): it sends MAC'd Opens to the
//! coordinator's host, a burst first and then one per offered interval (and
//! another burst whenever the coordinator sends a `ClockBurst`, before a
//! capture arms), and
//! answers each authentic Request with `t2` (the kernel's receive timestamp)
//! and `t3` (just before sending). The coordinator completes the exchange;
//! the probe reports nothing else. If no Request comes back, the stream's
//! exchange remains the only clock source and the probe says so once.

use std::net::SocketAddr;
use std::time::Duration;

use probemesh_proto::clock_udp::socket::TimestampedUdp;
use probemesh_proto::clock_udp::{
    Datagram, InvalidDatagram, MAX_DATAGRAM, Message, SessionId, SessionKey,
};
use probemesh_proto::pb;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::time::unix_ns;

/// Opens right after the session starts, to fill the coordinator's window.
const BURST: u32 = 8;
/// Spacing of the burst.
const BURST_GAP: Duration = Duration::from_millis(25);
/// Least spacing of a burst the coordinator asks for (its own floor of
/// requests per session is 5 ms).
const MIN_BURST_GAP: Duration = Duration::from_millis(5);
/// Floor of the steady spacing, whatever the offer says.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Opens in a row without a Request back before the probe says UDP is not
/// getting through (the first burst, and one more).
const UNANSWERED_WARN: u32 = BURST + 1;
/// Pause after a failed receive, so a persistent socket error cannot spin.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// One session's state. Sans-IO: Opens out, Requests in, Replies out.
#[derive(Debug)]
pub(crate) struct Exchanger {
    session: SessionId,
    key: SessionKey,
    /// Opens sent (the last one's sequence number).
    opens: u64,
    /// Highest Request sequence number answered.
    last_request: Option<u64>,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejected {
    /// Not a well-formed datagram of this session's key.
    #[error(transparent)]
    Invalid(#[from] InvalidDatagram),
    /// Authentic, but for another session (a previous stream's).
    #[error("datagram of another clock session")]
    OtherSession,
    /// Not a Request: only the probe sends the other kinds.
    #[error("datagram of a kind the coordinator does not send")]
    Unexpected,
    /// A Request not newer than the last one answered.
    #[error("request {seq} is not newer than {last}")]
    Replayed { seq: u64, last: u64 },
}

impl Exchanger {
    pub(crate) fn new(session: SessionId, key: SessionKey) -> Self {
        Self {
            session,
            key,
            opens: 0,
            last_request: None,
        }
    }

    /// The next Open.
    pub(crate) fn open(&mut self) -> Vec<u8> {
        self.opens += 1;
        Datagram {
            session: self.session,
            seq: self.opens,
            message: Message::Open,
        }
        .encode(&self.key)
    }

    /// The Reply to a Request received at `rx_ns` (probe clock); `now`
    /// stamps `t3` as late as possible.
    pub(crate) fn on_datagram(
        &mut self,
        bytes: &[u8],
        rx_ns: i64,
        now: impl FnOnce() -> i64,
    ) -> Result<Vec<u8>, Rejected> {
        if Datagram::peek_session(bytes)? != self.session {
            return Err(Rejected::OtherSession);
        }
        let datagram = Datagram::decode(bytes, &self.key)?;
        let Message::Request { t1_ns } = datagram.message else {
            return Err(Rejected::Unexpected);
        };
        if let Some(last) = self.last_request
            && datagram.seq <= last
        {
            return Err(Rejected::Replayed {
                seq: datagram.seq,
                last,
            });
        }
        self.last_request = Some(datagram.seq);
        let reply = Datagram {
            session: self.session,
            seq: datagram.seq,
            message: Message::Reply {
                t1_ns,
                t2_ns: rx_ns,
                t3_ns: now(),
            },
        };
        Ok(reply.encode(&self.key))
    }
}

/// Opens left in the current burst, and their spacing.
#[derive(Debug, Clone, Copy)]
struct Burst {
    left: u32,
    gap: Duration,
}

impl Burst {
    /// The burst right after the session starts.
    const FIRST: Self = Self {
        left: BURST,
        gap: BURST_GAP,
    };

    /// The burst a `ClockBurst` asks for, bounded: at most [`BURST`] Opens,
    /// at least [`MIN_BURST_GAP`] apart.
    fn asked(req: &pb::ClockBurst) -> Self {
        Self {
            left: req.count.min(BURST),
            gap: Duration::from_millis(u64::from(req.gap_ms)).clamp(MIN_BURST_GAP, BURST_GAP),
        }
    }

    /// The wait after an Open: the burst's gap while it lasts, else `None`.
    fn next(&mut self) -> Option<Duration> {
        self.left = self.left.checked_sub(1)?;
        (self.left > 0).then_some(self.gap)
    }
}

/// Runs the UDP exchange offered in a `Welcome` until `cancel` (the stream
/// ended), opening a burst for each `ClockBurst` that comes on `bursts`.
/// `coordinator` is the coordinator's URL; its host is dialled on the
/// offered port.
pub async fn run(
    offer: pb::UdpClockOffer,
    coordinator: String,
    mut bursts: tokio::sync::mpsc::Receiver<pb::ClockBurst>,
    cancel: CancellationToken,
) {
    let Some(key) = SessionKey::from_slice(&offer.key) else {
        tracing::warn!("the coordinator's UDP clock offer has a malformed key; ignoring it");
        return;
    };
    let socket = tokio::select! {
        s = connect(&coordinator, offer.port) => s,
        () = cancel.cancelled() => return,
    };
    let (socket, target) = match socket {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "no clock exchange over UDP; the stream's exchange stays in use");
            return;
        }
    };
    let interval = Duration::from_millis(u64::from(offer.interval_ms)).max(MIN_INTERVAL);
    let mut exchanger = Exchanger::new(SessionId(offer.session), key);
    let mut buf = [0u8; MAX_DATAGRAM + 1];
    let mut burst = Burst::FIRST;
    // Opens since the last Request, and whether UDP counts as in use (it
    // does from the first Request until UNANSWERED_WARN opens go unanswered).
    let mut unanswered = 0u32;
    let mut in_use = false;
    let mut next_open = Instant::now();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(next_open) => {
                if let Err(error) = socket.send_to(&exchanger.open(), target).await {
                    tracing::debug!(%target, %error, "clock UDP send failed");
                }
                unanswered = unanswered.saturating_add(1);
                if unanswered == UNANSWERED_WARN {
                    in_use = false;
                    tracing::warn!(%target, "clock exchange over UDP gets no answer; the stream's exchange stays in use");
                }
                next_open = Instant::now() + burst.next().unwrap_or(interval);
            }
            Some(asked) = bursts.recv() => {
                burst = Burst::asked(&asked);
                next_open = Instant::now();
            }
            got = socket.recv(&mut buf) => {
                let got = match got {
                    Ok(got) => got,
                    Err(error) => {
                        tracing::debug!(%error, "clock UDP receive failed");
                        tokio::time::sleep(RECV_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let rx_ns = got.kernel_ns.unwrap_or_else(unix_ns);
                let reply = match buf.get(..got.len) {
                    Some(bytes) if !got.truncated => exchanger.on_datagram(bytes, rx_ns, unix_ns),
                    _ => Err(Rejected::Invalid(InvalidDatagram::Length(got.len))),
                };
                match reply {
                    Ok(reply) => {
                        if let Err(error) = socket.send_to(&reply, got.from).await {
                            tracing::debug!(to = %got.from, %error, "clock UDP send failed");
                        }
                        unanswered = 0;
                        if !in_use {
                            in_use = true;
                            tracing::info!(%target, "clock exchange over UDP in use");
                        }
                    }
                    Err(reason) => tracing::debug!(from = %got.from, %reason, "clock datagram dropped"),
                }
            }
        }
    }
}

/// A socket towards the coordinator's host on `port`.
async fn connect(coordinator: &str, port: u32) -> std::io::Result<(TimestampedUdp, SocketAddr)> {
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| std::io::Error::other(format!("offered UDP port {port} is invalid")))?;
    let (host, _) = probemesh_proto::tls::coordinator_host(coordinator)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host} has no address")))?;
    let local = match target {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    Ok((TimestampedUdp::bind(local).await?, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: SessionId = SessionId(5);

    fn key() -> SessionKey {
        SessionKey::from_bytes([3; 32])
    }

    fn request(seq: u64, t1_ns: i64) -> Vec<u8> {
        Datagram {
            session: SESSION,
            seq,
            message: Message::Request { t1_ns },
        }
        .encode(&key())
    }

    #[test]
    fn a_burst_asked_for_is_bounded_then_the_interval_resumes() {
        let mut asked = Burst::asked(&pb::ClockBurst {
            count: 1_000,
            gap_ms: 0,
        });
        let gaps: Vec<_> = std::iter::from_fn(|| asked.next()).collect();
        assert_eq!(gaps, vec![MIN_BURST_GAP; BURST as usize - 1]);
        assert_eq!(asked.next(), None);
        let mut first = Burst::FIRST;
        assert_eq!(first.next(), Some(BURST_GAP));
    }

    #[test]
    fn opens_count_up_under_the_session_key() {
        let mut ex = Exchanger::new(SESSION, key());
        for seq in 1..=3 {
            let d = Datagram::decode(&ex.open(), &key()).unwrap();
            assert_eq!((d.session, d.seq, d.message), (SESSION, seq, Message::Open));
        }
    }

    #[test]
    fn a_request_is_answered_with_kernel_and_send_times() {
        let mut ex = Exchanger::new(SESSION, key());
        let reply = ex.on_datagram(&request(1, 100), 250, || 260).unwrap();
        let d = Datagram::decode(&reply, &key()).unwrap();
        assert_eq!(d.seq, 1);
        assert_eq!(
            d.message,
            Message::Reply {
                t1_ns: 100,
                t2_ns: 250,
                t3_ns: 260
            }
        );
    }

    #[test]
    fn replayed_and_reordered_requests_are_dropped() {
        let mut ex = Exchanger::new(SESSION, key());
        ex.on_datagram(&request(4, 0), 1, || 2).unwrap();
        assert_eq!(
            ex.on_datagram(&request(4, 0), 1, || 2),
            Err(Rejected::Replayed { seq: 4, last: 4 })
        );
        assert_eq!(
            ex.on_datagram(&request(3, 0), 1, || 2),
            Err(Rejected::Replayed { seq: 3, last: 4 })
        );
        assert!(ex.on_datagram(&request(5, 0), 1, || 2).is_ok());
    }

    #[test]
    fn forged_foreign_and_own_datagrams_are_dropped() {
        let mut ex = Exchanger::new(SESSION, key());
        let forged = Datagram {
            session: SESSION,
            seq: 1,
            message: Message::Request { t1_ns: 0 },
        }
        .encode(&SessionKey::from_bytes([4; 32]));
        assert_eq!(
            ex.on_datagram(&forged, 1, || 2),
            Err(Rejected::Invalid(InvalidDatagram::Mac))
        );
        let other = Datagram {
            session: SessionId(6),
            seq: 1,
            message: Message::Request { t1_ns: 0 },
        }
        .encode(&key());
        assert_eq!(ex.on_datagram(&other, 1, || 2), Err(Rejected::OtherSession));
        let own_open = ex.open();
        assert_eq!(
            ex.on_datagram(&own_open, 1, || 2),
            Err(Rejected::Unexpected)
        );
        assert_eq!(
            ex.on_datagram(&[0; 10], 1, || 2),
            Err(Rejected::Invalid(InvalidDatagram::Length(10)))
        );
    }
}
