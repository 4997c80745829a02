//! [`TaskSpec`]: a validated task of any kind, what the protobuf conversion
//! makes of a `pb::Task` and what the runner dispatches on. It sits above
//! the engines (it names each one's spec) and below the conversion.

use super::types::{PingSpec, TcpingSpec};
use super::{capture, dns, facts, listener, pmtu, responder, trace, transfer, udp_echo};

/// A validated task of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskSpec {
    /// ICMP echo.
    Ping(PingSpec),
    /// TCP connect.
    Tcping(TcpingSpec),
    /// TCP transfer (push bytes, watch them acknowledged).
    TcpTransfer(transfer::TcpTransferSpec),
    /// UDP echo against a responder.
    UdpEcho(udp_echo::UdpEchoSpec),
    /// The responder (TCP sink, UDP echo).
    Responder(responder::ResponderSpec),
    /// DNS resolution against resolv.conf's and explicit servers.
    Dns(dns::DnsSpec),
    /// Listening sockets.
    Listener(listener::ListenerSpec),
    /// Node facts (interfaces, routes, NAT paths, counters).
    NodeFacts(facts::NodeFactsSpec),
    /// Path MTU search.
    Pmtu(pmtu::PmtuSpec),
    /// Path trace (mtr).
    Trace(trace::TraceSpec),
    /// Packet capture, streamed back as a pcapng file.
    Capture(capture::CaptureTaskSpec),
}
