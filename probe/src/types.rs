//! The probe's leaf layer: a newtype for every protocol quantity (payload
//! size, TTL, echo id and sequence, MTU, probe count). Plain values with
//! their ranges; no I/O, no wire (`pb`) and no import from any other module
//! of the crate, so every layer above (the platform layer first) may use them.

use std::fmt;

/// ICMP payload size in bytes, as `ping -s`: 0..=65507 (65535 minus the
/// 20-byte IPv4 header and the 8-byte ICMP header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PayloadSize(u16);

impl PayloadSize {
    /// The largest ICMP payload an IPv4 datagram can carry, in bytes.
    pub const MAX: u16 = 65507;

    /// A payload size in bytes; `None` above [`PayloadSize::MAX`].
    pub const fn new(bytes: u16) -> Option<Self> {
        if bytes <= Self::MAX {
            Some(Self(bytes))
        } else {
            None
        }
    }

    /// The size in bytes.
    pub const fn get(self) -> u16 {
        self.0
    }
}

/// IPv4 time-to-live of the packets we send, 1..=255 hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(u8);

impl Ttl {
    /// A TTL in hops; `None` for 0 (which the wire uses for "system default").
    pub const fn new(hops: u8) -> Option<Self> {
        if hops == 0 { None } else { Some(Self(hops)) }
    }

    /// The TTL in hops.
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// ICMP echo identifier and sequence number (`icmp_seq`; a task's first
/// probe is 1): the packet library's, one definition for every crate.
pub use probemesh_packet::icmp::{EchoId, EchoSeq as Seq};

/// A link or path MTU in bytes (IPv4 datagram size, headers included).
/// `u32` because loopback's is 65536.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mtu(pub u32);

impl fmt::Display for Mtu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How many probes (echoes or connects) a task sends: 1..=10000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeCount(u16);

impl ProbeCount {
    /// The most probes one task may send.
    pub const MAX: u16 = 10_000;

    /// A probe count; `None` for 0 or above [`ProbeCount::MAX`].
    pub const fn new(count: u16) -> Option<Self> {
        if count == 0 || count > Self::MAX {
            None
        } else {
            Some(Self(count))
        }
    }

    /// The count.
    pub const fn get(self) -> u16 {
        self.0
    }
}
