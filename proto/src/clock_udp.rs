//! The UDP clock exchange's datagrams: encoding, decoding and their MAC.
//!
//! Sans-IO except [`socket`]. The exchange is the stream's NTP-style exchange
//! carried on UDP so both ends can take kernel receive timestamps
//! (`SO_TIMESTAMPNS`) instead of timing tokio + TLS + HTTP/2:
//!
//! ```text
//! probe ──Open{seq}──────────────────▶ coordinator   (opens NAT, paces the exchange)
//! probe ◀──Request{seq, t1}─────────── coordinator   t1: coordinator clock, just before sending
//! probe ──Reply{seq, t1, t2, t3}─────▶ coordinator   t2: probe kernel receive time, t3: probe send
//!                                                    t4: coordinator kernel receive time
//! ```
//!
//! The session id and the 32-byte key travel in the `Welcome` over mTLS; UDP
//! itself is never trusted: every datagram carries HMAC-SHA256 over all its
//! other bytes under the session's key, has an exact length per kind, and
//! sequence numbers only move forward.
//!
//! # Format (big-endian)
//!
//! | bytes | field                                                  |
//! |-------|--------------------------------------------------------|
//! | 4     | magic `PMCK`                                           |
//! | 1     | version, 1                                             |
//! | 1     | kind: 1 Open, 2 Request, 3 Reply                       |
//! | 2     | zero                                                   |
//! | 8     | session id                                             |
//! | 8     | seq                                                    |
//! | 0/8/24| body: Request t1; Reply t1, t2, t3 (Unix ns, `i64`)    |
//! | 32    | HMAC-SHA256(key, all the above)                        |
//!
//! Open is 56 bytes, Request 64, Reply 80.

pub mod socket;

use std::fmt;

use ring::hmac;

const MAGIC: [u8; 4] = *b"PMCK";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 24;
const TAG_LEN: usize = 32;

/// Longest datagram of the exchange (a Reply), bytes; receive buffers need
/// one byte more to notice anything longer.
pub const MAX_DATAGRAM: usize = HEADER_LEN + 24 + TAG_LEN;

/// Length of a session key, bytes.
pub const KEY_LEN: usize = 32;

/// Names one probe stream's UDP session; carried in clear in every datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

impl SessionId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

/// The HMAC-SHA256 key of one session. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct SessionKey {
    bytes: [u8; KEY_LEN],
    key: hmac::Key,
}

impl SessionKey {
    /// 32 bytes from the operating system's CSPRNG (via `rand`).
    pub fn random() -> Self {
        Self::from_bytes(rand::random())
    }

    /// The key with these bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self {
            bytes,
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        }
    }

    /// The key from a wire field, if it is exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; KEY_LEN]>::try_from(bytes).ok().map(Self::from_bytes)
    }

    /// The raw bytes, to send in a `Welcome`.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// What a datagram says, once its MAC checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// Probe → coordinator: please send a request (opens NAT on the way).
    Open,
    /// Coordinator → probe: `t1_ns`, coordinator clock, just before sending.
    Request {
        /// Coordinator clock, Unix ns.
        t1_ns: i64,
    },
    /// Probe → coordinator: the request's `t1_ns` echoed, with the probe's
    /// kernel receive time `t2_ns` and its send time `t3_ns` (probe clock).
    Reply {
        /// Coordinator clock, Unix ns (echoed).
        t1_ns: i64,
        /// Probe clock, Unix ns: the request arrived.
        t2_ns: i64,
        /// Probe clock, Unix ns: the reply left.
        t3_ns: i64,
    },
}

impl Message {
    fn kind(&self) -> u8 {
        match self {
            Self::Open => 1,
            Self::Request { .. } => 2,
            Self::Reply { .. } => 3,
        }
    }
}

/// One datagram of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// The session it belongs to.
    pub session: SessionId,
    /// Per sender and kind; only ever increases.
    pub seq: u64,
    /// What it says.
    pub message: Message,
}

/// Why bytes are not a datagram of the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDatagram {
    /// Shorter than any datagram, or not the length its kind has.
    #[error("datagram of {0} bytes has the wrong length")]
    Length(usize),
    /// Not `PMCK` version 1.
    #[error("not a probemesh clock datagram (magic or version)")]
    Magic,
    /// A kind byte no version-1 sender writes.
    #[error("unknown clock datagram kind {0}")]
    Kind(u8),
    /// The MAC does not match the session's key: forged, damaged, or sent
    /// under another session's key.
    #[error("clock datagram MAC does not verify")]
    Mac,
}

impl Datagram {
    /// The session a datagram claims, read before its key is known: the key
    /// is looked up by it. Checks only length, magic and version.
    pub fn peek_session(bytes: &[u8]) -> Result<SessionId, InvalidDatagram> {
        let header = bytes
            .first_chunk::<HEADER_LEN>()
            .ok_or(InvalidDatagram::Length(bytes.len()))?;
        if header[..4] != MAGIC || header[4] != VERSION {
            return Err(InvalidDatagram::Magic);
        }
        Ok(SessionId(read_u64(header, 8)))
    }

    /// The datagram's bytes, MAC included.
    pub fn encode(&self, key: &SessionKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_DATAGRAM);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.message.kind());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.session.0.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        match self.message {
            Message::Open => {}
            Message::Request { t1_ns } => out.extend_from_slice(&t1_ns.to_be_bytes()),
            Message::Reply {
                t1_ns,
                t2_ns,
                t3_ns,
            } => {
                for t in [t1_ns, t2_ns, t3_ns] {
                    out.extend_from_slice(&t.to_be_bytes());
                }
            }
        }
        let tag = hmac::sign(&key.key, &out);
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Parses and authenticates `bytes` under `key`.
    pub fn decode(bytes: &[u8], key: &SessionKey) -> Result<Self, InvalidDatagram> {
        let session = Self::peek_session(bytes)?;
        // peek_session checked the header's 24 bytes are there.
        let kind = bytes[5];
        let body_len = match kind {
            1 => 0,
            2 => 8,
            3 => 24,
            other => return Err(InvalidDatagram::Kind(other)),
        };
        if bytes.len() != HEADER_LEN + body_len + TAG_LEN {
            return Err(InvalidDatagram::Length(bytes.len()));
        }
        let (signed, tag) = bytes.split_at(HEADER_LEN + body_len);
        hmac::verify(&key.key, signed, tag).map_err(|_| InvalidDatagram::Mac)?;
        let message = match kind {
            1 => Message::Open,
            2 => Message::Request {
                t1_ns: read_i64(signed, HEADER_LEN),
            },
            _ => Message::Reply {
                t1_ns: read_i64(signed, HEADER_LEN),
                t2_ns: read_i64(signed, HEADER_LEN + 8),
                t3_ns: read_i64(signed, HEADER_LEN + 16),
            },
        };
        Ok(Self {
            session,
            seq: read_u64(signed, 16),
            message,
        })
    }
}

/// The 8 bytes at `at`; callers have checked the length.
fn read8(bytes: &[u8], at: usize) -> [u8; 8] {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .unwrap_or_default()
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(read8(bytes, at))
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(read8(bytes, at))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use test_case::test_case;

    use super::*;

    fn key(b: u8) -> SessionKey {
        SessionKey::from_bytes([b; KEY_LEN])
    }

    fn datagram(message: Message) -> Datagram {
        Datagram {
            session: SessionId(0x0102_0304_0506_0708),
            seq: 42,
            message,
        }
    }

    const REPLY: Message = Message::Reply {
        t1_ns: 1_700_000_000_000_000_000,
        t2_ns: -5,
        t3_ns: i64::MAX,
    };

    #[test_case(Message::Open, 56)]
    #[test_case(Message::Request { t1_ns: 1_700_000_000_123_456_789 }, 64)]
    #[test_case(REPLY, 80)]
    fn round_trips_at_its_fixed_length(message: Message, len: usize) {
        let d = datagram(message);
        let bytes = d.encode(&key(7));
        assert_eq!(bytes.len(), len);
        assert!(bytes.len() <= MAX_DATAGRAM);
        assert_eq!(Datagram::decode(&bytes, &key(7)), Ok(d));
        assert_eq!(Datagram::peek_session(&bytes), Ok(d.session));
    }

    #[test]
    fn another_key_does_not_verify() {
        let bytes = datagram(REPLY).encode(&key(7));
        assert_eq!(Datagram::decode(&bytes, &key(8)), Err(InvalidDatagram::Mac));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let bytes = datagram(REPLY).encode(&key(7));
        for i in 0..bytes.len() * 8 {
            let mut forged = bytes.clone();
            forged[i / 8] ^= 1 << (i % 8);
            assert!(
                Datagram::decode(&forged, &key(7)).is_err(),
                "bit {i} flipped still decodes"
            );
        }
    }

    #[test]
    fn a_request_cannot_pass_for_a_reply() {
        let mut bytes = datagram(Message::Request { t1_ns: 1 }).encode(&key(7));
        bytes[5] = 3;
        bytes.extend_from_slice(&[0; 16]);
        assert_eq!(Datagram::decode(&bytes, &key(7)), Err(InvalidDatagram::Mac));
    }

    #[test]
    fn short_long_and_foreign_bytes_are_rejected() {
        let bytes = datagram(Message::Open).encode(&key(7));
        assert_eq!(
            Datagram::decode(&bytes[..23], &key(7)),
            Err(InvalidDatagram::Length(23))
        );
        assert_eq!(
            Datagram::decode(&bytes[..55], &key(7)),
            Err(InvalidDatagram::Length(55))
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            Datagram::decode(&long, &key(7)),
            Err(InvalidDatagram::Length(57))
        );
        let mut foreign = bytes.clone();
        foreign[0] = b'X';
        assert_eq!(
            Datagram::decode(&foreign, &key(7)),
            Err(InvalidDatagram::Magic)
        );
        let mut future = bytes.clone();
        future[4] = 2;
        assert_eq!(
            Datagram::decode(&future, &key(7)),
            Err(InvalidDatagram::Magic)
        );
        let mut kind = bytes;
        kind[5] = 9;
        assert_eq!(
            Datagram::decode(&kind, &key(7)),
            Err(InvalidDatagram::Kind(9))
        );
    }

    #[test]
    fn key_bytes_stay_out_of_debug() {
        assert_eq!(format!("{:?}", key(0xab)), "SessionKey(..)");
        assert!(SessionKey::from_slice(&[1; 31]).is_none());
        assert_eq!(
            SessionKey::from_slice(&[1; 32]).map(|k| *k.as_bytes()),
            Some([1; 32])
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Datagram::peek_session(&bytes);
            let _ = Datagram::decode(&bytes, &key(7));
        }

        #[test]
        fn arbitrary_replies_round_trip(session: u64, seq: u64, t1: i64, t2: i64, t3: i64) {
            let d = Datagram {
                session: SessionId(session),
                seq,
                message: Message::Reply { t1_ns: t1, t2_ns: t2, t3_ns: t3 },
            };
            prop_assert_eq!(Datagram::decode(&d.encode(&key(1)), &key(1)), Ok(d));
        }
    }
}
