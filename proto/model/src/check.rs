//! What a diagnosis check is, in the contract's words: its name
//! (`checks[].name`), which way it goes and how it ended. Their snake_case
//! strings (`as_str`, serde) are what `meshctl probe -o json` prints.
//!
//! Not the check itself (the coordinator's diagnosis builds typed checks
//! from the wire) and not the wire enums (their conversions are in the `grpc` module).

use std::fmt;

use serde::Serialize;

/// The checks a diagnosis can make (DESIGN §3 `checks[].name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckName {
    /// ICMP echo, ping's default size.
    Icmp,
    /// ICMP echo at `--size` with DF.
    IcmpLarge,
    /// Repeated TCP connects.
    TcpConnect,
    /// Bytes pushed and acknowledged.
    TcpTransfer,
    /// UDP echo.
    Udp,
    /// Path MTU search.
    Pmtu,
    /// mtr-style hops.
    Path,
    /// Resolution.
    Dns,
    /// What listens on the port.
    Listener,
    /// Interfaces, routes, tunnels, conntrack, drops.
    NodeFacts,
    /// The Service's NAT chain on a node (read from node facts).
    NatRules,
    /// The synchronized captures.
    Capture,
}

impl CheckName {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::Icmp => "icmp",
            CheckName::IcmpLarge => "icmp_large",
            CheckName::TcpConnect => "tcp_connect",
            CheckName::TcpTransfer => "tcp_transfer",
            CheckName::Udp => "udp",
            CheckName::Pmtu => "pmtu",
            CheckName::Path => "path",
            CheckName::Dns => "dns",
            CheckName::Listener => "listener",
            CheckName::NodeFacts => "node_facts",
            CheckName::NatRules => "nat_rules",
            CheckName::Capture => "capture",
        }
    }
}

/// Which way a check goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the source towards the target.
    Forward,
    /// From the target's side back to the source.
    Reverse,
    /// On one host (listeners, node facts).
    Local,
}

impl Direction {
    /// The name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Forward => "forward",
            Direction::Reverse => "reverse",
            Direction::Local => "local",
        }
    }
}

/// How a check ended (`checks[].status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It ran and passed.
    Ok,
    /// It ran and failed.
    Fail,
    /// It did not run (with why in its detail).
    Skipped,
}

impl Status {
    /// The name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fail => "fail",
            Status::Skipped => "skipped",
        }
    }
}

impl fmt::Display for CheckName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
