//! Packets built by hand for tests, here and in the crates that use this
//! library (feature `testing`): IPv4 with TCP, UDP or ICMP, wrapped in
//! Ethernet, VXLAN or IPIP ([`FrameBuilder`]), and the datagrams a raw ICMP
//! socket delivers ([`ipv4`], [`echo_reply_to`], [`icmp_error`]). IPv4 and
//! ICMP checksums are filled in; transport checksums are left zero (the
//! decoder ignores them). Not for production code: it panics on bad input.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::checksum::internet_checksum;
use crate::icmp::TYPE_ECHO_REPLY;
use crate::ipv4::IPV4_MIN_HEADER_LEN;

/// An IPv4 datagram (20-byte header, ID 0, DF, checksum filled) carrying
/// `payload` as ICMP.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    FrameBuilder::new(src, dst, 1, payload.to_vec())
        .ip_id(0)
        .ttl(ttl)
        .ip()
}

/// The echo reply a host sends back for `request` (an ICMP echo request).
pub fn echo_reply_to(request: &[u8]) -> Vec<u8> {
    let mut reply = request.to_vec();
    reply[0] = TYPE_ECHO_REPLY;
    reply[2..4].copy_from_slice(&[0, 0]);
    let sum = internet_checksum(&reply);
    reply[2..4].copy_from_slice(&sum.to_be_bytes());
    reply
}

/// An ICMP error message of `icmp_type`/`code` quoting the IPv4 datagram
/// `original` (its header and first 8 bytes of payload), with `rest` as
/// bytes 4..8 of the header (the next-hop MTU lives in 6..8).
pub fn icmp_error(icmp_type: u8, code: u8, rest: [u8; 4], original: &[u8]) -> Vec<u8> {
    let quote_len = original.len().min(IPV4_MIN_HEADER_LEN + 8);
    let mut msg = vec![icmp_type, code, 0, 0];
    msg.extend_from_slice(&rest);
    msg.extend_from_slice(&original[..quote_len]);
    let sum = internet_checksum(&msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}

/// An IPv4 datagram under construction.
#[derive(Debug, Clone)]
pub struct FrameBuilder {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    ttl: u8,
    protocol: u8,
    body: Vec<u8>,
}

fn sock(s: &str) -> SocketAddrV4 {
    s.parse().expect("ip:port")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

impl FrameBuilder {
    /// An IPv4 datagram carrying `body` as protocol `protocol` (ID 1, TTL 64).
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, body: Vec<u8>) -> Self {
        Self {
            src,
            dst,
            id: 1,
            ttl: 64,
            protocol,
            body,
        }
    }

    /// A TCP segment with `payload_len` zero bytes of payload.
    pub fn tcp(src: &str, dst: &str, seq: u32, ack: u32, flags: u8, payload_len: u32) -> Self {
        let (src, dst) = (sock(src), sock(dst));
        let mut body = Vec::with_capacity(20 + payload_len as usize);
        body.extend_from_slice(&src.port().to_be_bytes());
        body.extend_from_slice(&dst.port().to_be_bytes());
        body.extend_from_slice(&seq.to_be_bytes());
        body.extend_from_slice(&ack.to_be_bytes());
        body.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
        body.resize(20 + payload_len as usize, 0);
        Self::new(*src.ip(), *dst.ip(), 6, body)
    }

    /// A UDP datagram with `payload_len` zero bytes of payload.
    pub fn udp(src: &str, dst: &str, payload_len: u16) -> Self {
        Self::udp_with(src, dst, &vec![0; usize::from(payload_len)])
    }

    /// A UDP datagram carrying `payload`.
    pub fn udp_with(src: &str, dst: &str, payload: &[u8]) -> Self {
        let (src, dst) = (sock(src), sock(dst));
        let len = u16::try_from(8 + payload.len()).expect("UDP length");
        let mut body = Vec::new();
        body.extend_from_slice(&src.port().to_be_bytes());
        body.extend_from_slice(&dst.port().to_be_bytes());
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(payload);
        Self::new(*src.ip(), *dst.ip(), 17, body)
    }

    /// An ICMP echo request (`request`) or reply with 56 bytes of payload.
    pub fn icmp_echo(src: &str, dst: &str, request: bool, id: u16, seq: u16) -> Self {
        let mut body = vec![if request { 8 } else { 0 }, 0, 0, 0];
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&seq.to_be_bytes());
        body.resize(64, 0xa5);
        Self::new(ip(src), ip(dst), 1, body)
    }

    /// An ICMP error quoting `quoted` (an IPv4 datagram) as Linux does, up
    /// to 548 bytes; `mtu` goes in bytes 6..8.
    pub fn icmp_error(
        src: &str,
        dst: &str,
        icmp_type: u8,
        code: u8,
        mtu: u16,
        quoted: &[u8],
    ) -> Self {
        let mut body = vec![icmp_type, code, 0, 0, 0, 0];
        body.extend_from_slice(&mtu.to_be_bytes());
        body.extend_from_slice(&quoted[..quoted.len().min(548)]);
        Self::new(ip(src), ip(dst), 1, body)
    }

    /// Sets the IP ID.
    pub fn ip_id(mut self, id: u16) -> Self {
        self.id = id;
        self
    }

    /// Sets the TTL.
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// The IPv4 datagram (DF set), header checksum filled in.
    pub fn ip(self) -> Vec<u8> {
        let total = u16::try_from(20 + self.body.len()).expect("IPv4 total length");
        let mut out = vec![0x45, 0];
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&[0x40, 0, self.ttl, self.protocol, 0, 0]);
        out.extend_from_slice(&self.src.octets());
        out.extend_from_slice(&self.dst.octets());
        let sum = internet_checksum(&out);
        out[10..12].copy_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// The datagram in an Ethernet II frame.
    pub fn ethernet(self) -> Vec<u8> {
        let mut out = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00];
        out.extend_from_slice(&self.ip());
        out
    }

    /// The datagram's Ethernet frame in VXLAN (VNI `vni`) in UDP to `port`
    /// from `outer_src` to `outer_dst`.
    pub fn vxlan(self, outer_src: &str, outer_dst: &str, port: u16, vni: u32) -> Self {
        let mut payload = vec![0x08, 0, 0, 0];
        payload.extend_from_slice(&(vni << 8).to_be_bytes());
        payload.extend_from_slice(&self.ethernet());
        Self::udp_with(
            &format!("{outer_src}:54321"),
            &format!("{outer_dst}:{port}"),
            &payload,
        )
    }

    /// The datagram in IPIP from `outer_src` to `outer_dst`.
    pub fn ipip(self, outer_src: &str, outer_dst: &str) -> Self {
        Self::new(ip(outer_src), ip(outer_dst), 4, self.ip())
    }
}
