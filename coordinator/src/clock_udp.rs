//! The coordinator's end of the UDP clock exchange.
//!
//! The coordinator binds UDP on its listen address and port. Each probe
//! stream gets a session (id + random key) in its `Welcome`; the probe then
//! sends MAC'd Open datagrams, and the coordinator answers each with a
//! Request stamped `t1` just before sending. The probe's Reply brings back
//! `t2`/`t3`; `t4` is the kernel's receive timestamp here. The exchange goes
//! to the same filter as the stream's ([`crate::clock`]), tagged
//! [`ClockPath::Udp`]. The wire format is `probemesh_proto::clock_udp`.
//!
//! Nothing on UDP is trusted: [`Sessions`] drops every datagram whose MAC
//! does not verify under its session's key, whose sequence number does not
//! move forward, that answers no outstanding request, or that comes too
//! late or too soon. When UDP does not get through, the stream exchange
//! goes on as before and `meshctl probes` shows the path as `stream`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use probemesh_proto::clock_udp::socket::TimestampedUdp;
use probemesh_proto::clock_udp::{
    Datagram, InvalidDatagram, MAX_DATAGRAM, Message, SessionId, SessionKey,
};
use probemesh_proto::pb;

use crate::clock::{ClockPath, Exchange};
use crate::registry::ConnId;
use crate::state::Coordinator;

/// Least time between two requests of one session: a probe's Opens cannot
/// make the coordinator send faster than this. Under the probes' own floor
/// (5 ms between Opens, the gap of a burst before a capture), so that Opens
/// sent 5 ms apart and received a little closer are still answered.
const MIN_REQUEST_GAP_NS: i64 = 4_000_000;
/// A reply later than this after its request is dropped.
const REPLY_TIMEOUT_NS: i64 = 1_000_000_000;
/// Pause after a failed receive, so a persistent socket error cannot spin.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The UDP socket and the sessions of the attached probes.
#[derive(Debug)]
pub struct UdpClock {
    socket: TimestampedUdp,
    port: u16,
    interval: Duration,
    sessions: Mutex<Sessions>,
}

impl UdpClock {
    /// Binds UDP on `addr` (the coordinator's listen address); probes open
    /// an exchange every `interval` once their first burst is done.
    pub async fn bind(addr: SocketAddr, interval: Duration) -> std::io::Result<Self> {
        let socket = TimestampedUdp::bind(addr).await?;
        let port = socket.local_addr()?.port();
        Ok(Self {
            socket,
            port,
            interval,
            sessions: Mutex::new(Sessions::default()),
        })
    }

    /// The UDP port bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Opens a session for the probe `probe` attached as `conn`: the offer
    /// goes in its `Welcome`; the session ends when the registration drops.
    pub fn register(
        self: &Arc<Self>,
        probe: &str,
        conn: ConnId,
    ) -> (Registration, pb::UdpClockOffer) {
        let session = SessionId::random();
        let key = SessionKey::random();
        let offer = pb::UdpClockOffer {
            port: u32::from(self.port),
            session: session.0,
            key: key.as_bytes().to_vec(),
            interval_ms: u32::try_from(self.interval.as_millis()).unwrap_or(u32::MAX),
        };
        self.sessions().insert(session, Peer::new(probe, conn, key));
        let registration = Registration {
            clock: Arc::clone(self),
            session,
        };
        (registration, offer)
    }

    /// Answers datagrams for the coordinator's lifetime, feeding completed
    /// exchanges to the registry.
    pub async fn serve(self: Arc<Self>, state: Arc<Coordinator>) {
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        loop {
            let got = match self.socket.recv(&mut buf).await {
                Ok(got) => got,
                Err(error) => {
                    tracing::debug!(%error, "clock UDP receive failed");
                    tokio::time::sleep(RECV_ERROR_PAUSE).await;
                    continue;
                }
            };
            let now_ns = state.clock.now_unix_ns();
            let step = match buf.get(..got.len) {
                Some(bytes) if !got.truncated => self.sessions().on_datagram(
                    bytes,
                    got.from,
                    got.kernel_ns.unwrap_or(now_ns),
                    now_ns,
                ),
                _ => Err(Rejected::Invalid(InvalidDatagram::Length(got.len))),
            };
            match step {
                Ok(Step::Send { bytes, to }) => {
                    if let Err(error) = self.socket.send_to(&bytes, to).await {
                        tracing::debug!(%to, %error, "clock UDP send failed");
                    }
                }
                Ok(Step::Sample {
                    probe,
                    conn,
                    exchange,
                    first,
                }) => {
                    if first {
                        tracing::info!(%probe, from = %got.from, "clock exchange over UDP in use");
                    }
                    let best = {
                        let mut registry = state.registry();
                        registry.observe_clock(&probe, conn, exchange);
                        registry.clock(&probe)
                    };
                    if let Some(best) = best {
                        state.metrics.set_clock(&probe, best);
                    }
                }
                Err(reason) => {
                    tracing::debug!(from = %got.from, %reason, "clock datagram dropped");
                }
            }
        }
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A probe stream's UDP session; dropping it ends the session.
#[derive(Debug)]
pub struct Registration {
    clock: Arc<UdpClock>,
    session: SessionId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.clock.sessions().peers.remove(&self.session);
    }
}

/// One session: whose it is and where its exchange stands.
#[derive(Debug)]
struct Peer {
    probe: String,
    conn: ConnId,
    key: SessionKey,
    /// Highest Open sequence number accepted.
    last_open: Option<u64>,
    /// Requests sent (the last one's sequence number).
    requests: u64,
    /// When the last request left, coordinator clock.
    last_request_ns: Option<i64>,
    /// The request awaiting its reply.
    outstanding: Option<Outstanding>,
    /// Exchanges completed.
    samples: u64,
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    seq: u64,
    t1_ns: i64,
    to: SocketAddr,
}

impl Peer {
    fn new(probe: &str, conn: ConnId, key: SessionKey) -> Self {
        Self {
            probe: probe.to_owned(),
            conn,
            key,
            last_open: None,
            requests: 0,
            last_request_ns: None,
            outstanding: None,
            samples: 0,
        }
    }
}

/// Every session, by id. Sans-IO: datagrams in, [`Step`]s out.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    peers: HashMap<SessionId, Peer>,
}

/// What to do about a datagram that was accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send `bytes` (a Request) to `to`.
    Send { bytes: Vec<u8>, to: SocketAddr },
    /// An exchange completed for `probe` attached as `conn`; `first` is
    /// true for the session's first.
    Sample {
        probe: String,
        conn: ConnId,
        exchange: Exchange,
        first: bool,
    },
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejected {
    /// Not a well-formed, authentic datagram.
    #[error(transparent)]
    Invalid(#[from] InvalidDatagram),
    /// No stream holds this session (ended, or never existed).
    #[error("unknown clock session")]
    UnknownSession,
    /// An Open whose sequence number is not above the last one: replayed or
    /// reordered.
    #[error("open {seq} is not newer than {last}")]
    Replayed { seq: u64, last: u64 },
    /// An Open sooner than the least gap after the previous request.
    #[error("open too soon after the previous request")]
    TooSoon,
    /// A reply to no outstanding request (or to an older one), or a
    /// datagram of a kind only the coordinator sends.
    #[error("datagram answers no outstanding request")]
    Unsolicited,
    /// A reply later than the reply timeout.
    #[error("reply arrived after the timeout")]
    Late,
}

impl Sessions {
    fn insert(&mut self, session: SessionId, peer: Peer) {
        self.peers.insert(session, peer);
    }

    /// Handles one datagram from `from`, received at `rx_ns` (kernel time);
    /// `now_ns` stamps a request's `t1`. Both coordinator clock, Unix ns.
    pub(crate) fn on_datagram(
        &mut self,
        bytes: &[u8],
        from: SocketAddr,
        rx_ns: i64,
        now_ns: i64,
    ) -> Result<Step, Rejected> {
        let session = Datagram::peek_session(bytes)?;
        let peer = self
            .peers
            .get_mut(&session)
            .ok_or(Rejected::UnknownSession)?;
        let datagram = Datagram::decode(bytes, &peer.key)?;
        match datagram.message {
            Message::Open => {
                if let Some(last) = peer.last_open
                    && datagram.seq <= last
                {
                    return Err(Rejected::Replayed {
                        seq: datagram.seq,
                        last,
                    });
                }
                peer.last_open = Some(datagram.seq);
                if peer
                    .last_request_ns
                    .is_some_and(|last| now_ns.saturating_sub(last) < MIN_REQUEST_GAP_NS)
                {
                    return Err(Rejected::TooSoon);
                }
                peer.requests += 1;
                peer.last_request_ns = Some(now_ns);
                peer.outstanding = Some(Outstanding {
                    seq: peer.requests,
                    t1_ns: now_ns,
                    to: from,
                });
                let request = Datagram {
                    session,
                    seq: peer.requests,
                    message: Message::Request { t1_ns: now_ns },
                };
                Ok(Step::Send {
                    bytes: request.encode(&peer.key),
                    to: from,
                })
            }
            Message::Reply {
                t1_ns,
                t2_ns,
                t3_ns,
            } => {
                let expected = peer.outstanding.ok_or(Rejected::Unsolicited)?;
                if expected.seq != datagram.seq || expected.t1_ns != t1_ns || expected.to != from {
                    return Err(Rejected::Unsolicited);
                }
                peer.outstanding = None;
                if rx_ns.saturating_sub(t1_ns) > REPLY_TIMEOUT_NS {
                    return Err(Rejected::Late);
                }
                peer.samples += 1;
                Ok(Step::Sample {
                    probe: peer.probe.clone(),
                    conn: peer.conn,
                    exchange: Exchange {
                        path: ClockPath::Udp,
                        t1_ns,
                        t2_ns,
                        t3_ns,
                        t4_ns: rx_ns,
                    },
                    first: peer.samples == 1,
                })
            }
            Message::Request { .. } => Err(Rejected::Unsolicited),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: SessionId = SessionId(77);
    const MS: i64 = 1_000_000;

    fn key() -> SessionKey {
        SessionKey::from_bytes([9; 32])
    }

    fn probe_addr() -> SocketAddr {
        "198.18.100.10:40000".parse().unwrap()
    }

    fn sessions() -> Sessions {
        let mut s = Sessions::default();
        s.insert(SESSION, Peer::new("cloudvm-1", ConnId(3), key()));
        s
    }

    fn open(seq: u64) -> Vec<u8> {
        Datagram {
            session: SESSION,
            seq,
            message: Message::Open,
        }
        .encode(&key())
    }

    /// Sends an Open at `now`, returns the request's (seq, t1).
    fn request(s: &mut Sessions, open_seq: u64, now: i64) -> (u64, i64) {
        let Ok(Step::Send { bytes, to }) = s.on_datagram(&open(open_seq), probe_addr(), now, now)
        else {
            panic!("open {open_seq} not answered");
        };
        assert_eq!(to, probe_addr());
        let d = Datagram::decode(&bytes, &key()).unwrap();
        let Message::Request { t1_ns } = d.message else {
            panic!("not a request: {d:?}");
        };
        (d.seq, t1_ns)
    }

    fn reply(seq: u64, t1: i64, t2: i64, t3: i64) -> Vec<u8> {
        Datagram {
            session: SESSION,
            seq,
            message: Message::Reply {
                t1_ns: t1,
                t2_ns: t2,
                t3_ns: t3,
            },
        }
        .encode(&key())
    }

    #[test]
    fn a_full_exchange_becomes_a_udp_sample() {
        let mut s = sessions();
        let (seq, t1) = request(&mut s, 1, 1_000 * MS);
        assert_eq!(t1, 1_000 * MS);
        let step = s.on_datagram(
            &reply(seq, t1, t1 + 500_010, t1 + 500_020),
            probe_addr(),
            t1 + 30,
            t1 + 40,
        );
        let exchange = Exchange {
            path: ClockPath::Udp,
            t1_ns: t1,
            t2_ns: t1 + 500_010,
            t3_ns: t1 + 500_020,
            t4_ns: t1 + 30,
        };
        assert_eq!(
            step,
            Ok(Step::Sample {
                probe: "cloudvm-1".into(),
                conn: ConnId(3),
                exchange,
                first: true,
            })
        );
        let (seq, t1) = request(&mut s, 2, 1_010 * MS);
        let Ok(Step::Sample { first, .. }) =
            s.on_datagram(&reply(seq, t1, t1, t1), probe_addr(), t1 + 10, t1 + 10)
        else {
            panic!("second exchange");
        };
        assert!(!first);
    }

    #[test]
    fn replayed_and_reordered_opens_are_dropped() {
        let mut s = sessions();
        request(&mut s, 5, 0);
        assert_eq!(
            s.on_datagram(&open(5), probe_addr(), 100 * MS, 100 * MS),
            Err(Rejected::Replayed { seq: 5, last: 5 })
        );
        assert_eq!(
            s.on_datagram(&open(4), probe_addr(), 100 * MS, 100 * MS),
            Err(Rejected::Replayed { seq: 4, last: 5 })
        );
        request(&mut s, 6, 100 * MS);
    }

    #[test]
    fn opens_cannot_make_requests_faster_than_the_least_gap() {
        let mut s = sessions();
        request(&mut s, 1, 0);
        assert_eq!(
            s.on_datagram(&open(2), probe_addr(), MS, MS),
            Err(Rejected::TooSoon)
        );
        request(&mut s, 3, 6 * MS);
    }

    #[test]
    fn replies_must_answer_the_outstanding_request_once() {
        let mut s = sessions();
        assert_eq!(
            s.on_datagram(&reply(1, 0, 0, 0), probe_addr(), 0, 0),
            Err(Rejected::Unsolicited)
        );
        let (seq, t1) = request(&mut s, 1, 0);
        for (bytes, from) in [
            (reply(seq + 1, t1, 1, 2), probe_addr()),
            (reply(seq, t1 - 1, 1, 2), probe_addr()),
            (reply(seq, t1, 1, 2), "198.18.0.66:40000".parse().unwrap()),
        ] {
            assert_eq!(
                s.on_datagram(&bytes, from, 10, 10),
                Err(Rejected::Unsolicited)
            );
        }
        let good = reply(seq, t1, 1, 2);
        assert!(s.on_datagram(&good, probe_addr(), 10, 10).is_ok());
        assert_eq!(
            s.on_datagram(&good, probe_addr(), 20, 20),
            Err(Rejected::Unsolicited),
            "a replayed reply"
        );
    }

    #[test]
    fn late_replies_are_dropped() {
        let mut s = sessions();
        let (seq, t1) = request(&mut s, 1, 0);
        let late = t1 + REPLY_TIMEOUT_NS + 1;
        assert_eq!(
            s.on_datagram(&reply(seq, t1, 1, 2), probe_addr(), late, late),
            Err(Rejected::Late)
        );
    }

    #[test]
    fn forged_short_and_foreign_datagrams_are_dropped() {
        let mut s = sessions();
        let forged = Datagram {
            session: SESSION,
            seq: 1,
            message: Message::Open,
        }
        .encode(&SessionKey::from_bytes([1; 32]));
        assert_eq!(
            s.on_datagram(&forged, probe_addr(), 0, 0),
            Err(Rejected::Invalid(InvalidDatagram::Mac))
        );
        assert_eq!(
            s.on_datagram(&open(1)[..40], probe_addr(), 0, 0),
            Err(Rejected::Invalid(InvalidDatagram::Length(40)))
        );
        assert_eq!(
            s.on_datagram(b"GET / HTTP/1.1", probe_addr(), 0, 0),
            Err(Rejected::Invalid(InvalidDatagram::Length(14)))
        );
        let stranger = Datagram {
            session: SessionId(78),
            seq: 1,
            message: Message::Open,
        }
        .encode(&key());
        assert_eq!(
            s.on_datagram(&stranger, probe_addr(), 0, 0),
            Err(Rejected::UnknownSession)
        );
        let request = Datagram {
            session: SESSION,
            seq: 1,
            message: Message::Request { t1_ns: 0 },
        }
        .encode(&key());
        assert_eq!(
            s.on_datagram(&request, probe_addr(), 0, 0),
            Err(Rejected::Unsolicited)
        );
        assert!(
            s.peers[&SESSION].last_open.is_none(),
            "nothing was accepted"
        );
    }

    #[tokio::test]
    async fn a_dropped_registration_ends_its_session() {
        let clock = Arc::new(
            UdpClock::bind("127.0.0.1:0".parse().unwrap(), Duration::from_secs(2))
                .await
                .unwrap(),
        );
        let (registration, offer) = clock.register("node-1", ConnId(1));
        assert_eq!(offer.port, u32::from(clock.port()));
        assert_eq!((offer.key.len(), offer.interval_ms), (32, 2_000));
        assert!(
            clock
                .sessions()
                .peers
                .contains_key(&SessionId(offer.session))
        );
        drop(registration);
        assert!(clock.sessions().peers.is_empty());
    }
}
