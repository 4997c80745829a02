//! probemesh-packet: the one packet library.
//!
//! Everything that reads or writes bytes of a packet or a capture file lives
//! here, once, in layers that import downwards only:
//! - [`checksum`]: the Internet checksum;
//! - [`ipv4`], [`icmp`], [`frame`]: bounds-checked views over IPv4, ICMP
//!   (with the echo request probemesh sends and the reading of what comes
//!   back), and the link, TCP, UDP and VXLAN headers of captured frames,
//!   built on `pnet_packet` with length guards in front of it;
//! - [`decode`]: a captured frame decoded into owned values, through
//!   tunnels;
//! - [`pcapng`]: reading capture files and the blocks probemesh writes;
//! - [`bpf`]: classic BPF programs and their compilation from tcpdump
//!   expressions (compiling needs the `libpcap` feature).
//!
//! It does no I/O: sockets and rings belong to the probe's platform layer,
//! files to whoever writes them. Feature `testing` exports hand-built
//! packets for other crates' tests ([`testing`]).

pub mod bpf;
pub mod checksum;
pub mod decode;
pub mod frame;
#[cfg(test)]
mod fuzz_tests;
pub mod icmp;
pub mod ipv4;
pub mod pcapng;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// Why bytes could not be read as the expected header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the header needs.
    #[error("{what}: need {need} bytes, got {got}")]
    Truncated {
        /// Which header.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// The link header carries something other than IPv4 (IPv6, ARP, ...).
    #[error("EtherType {0:#06x} is not IPv4")]
    NotIpv4EtherType(u16),
    /// The IP version nibble is not 4.
    #[error("not an IPv4 header (version {0})")]
    NotIpv4(u8),
    /// The IHL field gives a header shorter than 20 bytes.
    #[error("IPv4 header length {0} bytes is below 20")]
    BadHeaderLength(usize),
}

fn truncated(what: &'static str, need: usize, got: usize) -> DecodeError {
    DecodeError::Truncated { what, need, got }
}
