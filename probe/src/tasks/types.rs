//! Validated task specs, the engine's input. Nothing here knows the wire
//! (`pb`) or a socket; the `convert` module converts at the boundary. The protocol
//! quantities the specs use live in the leaf layer [`crate::types`].

use std::time::Duration;

use crate::types::{PayloadSize, ProbeCount, Ttl};

/// A validated ping task (ICMPv4 echo, as `ping`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingSpec {
    /// IPv4 address or hostname, as given; resolved on the probe.
    pub target: String,
    /// ICMP payload size (`ping -s`).
    pub size: PayloadSize,
    /// Set DF and forbid local fragmentation (`ping -M do`); otherwise
    /// `ping -M dont` (no DF, the kernel fragments).
    pub dont_fragment: bool,
    /// Echoes to send (`ping -c`).
    pub count: ProbeCount,
    /// Time between two echoes (`ping -i`), 1 ms..=60 s.
    pub interval: Duration,
    /// How long each echo waits for its reply (`ping -W`), 1 ms..=60 s.
    pub timeout: Duration,
    /// TTL of the echoes; `None` keeps the system default.
    pub ttl: Option<Ttl>,
    /// How the per-echo events travel to the caller.
    pub delivery: Delivery,
}

/// How a task's per-attempt events travel to the caller (the link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Each event alone, the moment it is known (what callers that predate
    /// batching asked for).
    Each,
    /// Events in batches: one goes out when its first event is `window`
    /// old, when it holds `max` events, or when the task ends.
    Batched {
        /// Longest an event waits for company.
        window: Duration,
        /// Most events in one batch, 1 or more.
        max: usize,
    },
    /// No per-attempt events at all: the caller reads the result only.
    ResultOnly,
}

/// A validated tcping task (repeated TCP connects, as `paping`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpingSpec {
    /// IP address or hostname, as given; resolved on the probe.
    pub host: String,
    /// TCP port, 1..=65535.
    pub port: u16,
    /// Connects to attempt (`paping -c`).
    pub count: ProbeCount,
    /// How long one connect may take (`paping -t`), 1 ms..=60 s.
    pub timeout: Duration,
    /// Time between the starts of two attempts, 1 ms..=60 s.
    pub interval: Duration,
}
