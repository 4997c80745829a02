//! The `conntrack-full` fault's machinery, run inside a node's namespace
//! (`ip netns exec mesh-node-2 meshctl lab conntrack-fill`):
//!
//! - **fill**: the table is filled up to `nf_conntrack_max` with *assured* UDP
//!   entries (seen both ways, then again after the kernel's 2 s stream delay),
//!   which the kernel never evicts early, so every new flow is dropped with
//!   "nf_conntrack: table full, dropping packet". The entries are made by
//!   forged packets on the loopback interface (a raw socket), so nothing
//!   leaves the namespace.
//! - **flush**: what `conntrack -F` does, over ctnetlink.
//!
//! `nf_conntrack_max` is global (read-only inside a namespace) but the count
//! is per namespace, so only this namespace fills up.
//! Requires `CAP_NET_RAW` and `CAP_NET_ADMIN` in the namespace.

use std::io::{self, Read as _};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use probemesh_packet::checksum::internet_checksum;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
const COUNT: &str = "/proc/sys/net/netfilter/nf_conntrack_count";
/// The source side of every forged flow.
const SRC: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 1);
/// First source port; each destination address takes `PORTS_PER_DST` of them.
const FIRST_PORT: u16 = 10_000;
const PORTS_PER_DST: u32 = 50_000;
/// UDP conntrack marks a flow a stream (and assured) only when it is still
/// active this long after its first reply.
const STREAM_DELAY: Duration = Duration::from_millis(2_100);

/// What a fill achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillReport {
    /// Flows forged.
    pub flows: usize,
    /// `nf_conntrack_count` afterwards.
    pub count: u64,
    /// `nf_conntrack_max`.
    pub max: u64,
    /// Time taken.
    pub elapsed: Duration,
}

/// One forged UDP flow: (source port, destination address).
fn flow(i: u32) -> (u16, Ipv4Addr) {
    let port = FIRST_PORT + u16::try_from(i % PORTS_PER_DST).unwrap_or(0);
    let group = i / PORTS_PER_DST;
    let [_, _, hi, lo] = (group + 1).to_be_bytes();
    (port, Ipv4Addr::new(127, 2, hi, lo))
}

/// An IPv4+UDP datagram with an empty payload (UDP checksum 0: none).
fn datagram(src: SocketAddrV4, dst: SocketAddrV4) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.ip().octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    let sum = internet_checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p[20..22].copy_from_slice(&src.port().to_be_bytes());
    p[22..24].copy_from_slice(&dst.port().to_be_bytes());
    p[24..26].copy_from_slice(&8u16.to_be_bytes());
    p
}

fn read_number(path: &str) -> anyhow::Result<u64> {
    std::fs::read_to_string(path)
        .with_context(|| format!("reading {path} (is nf_conntrack loaded?)"))?
        .trim()
        .parse()
        .with_context(|| format!("parsing {path}"))
}

/// Sends one forged datagram; `Ok(false)` when netfilter dropped it, which
/// for a new flow means the table is already full (the kernel answers a
/// local sender's dropped packet with EPERM).
fn send(sock: &Socket, src: SocketAddrV4, dst: SocketAddrV4) -> anyhow::Result<bool> {
    match sock.send_to(&datagram(src, dst), &SockAddr::from(dst)) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(false),
        Err(e) => Err(e).context("sending on the raw socket"),
    }
}

/// Fills this namespace's conntrack table (see the module docs). The table
/// is flushed first, so that no short-lived entry expires later and frees a
/// slot. Requires `net.netfilter.nf_conntrack_udp_timeout_stream` to be long
/// already, or the entries expire after it.
pub fn fill() -> anyhow::Result<FillReport> {
    let started = Instant::now();
    flush()?;
    let max = read_number(MAX)?;
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))
        .context("opening a raw IPv4 socket (needs CAP_NET_RAW)")?;
    let mut next: u32 = 0;
    let mut created: usize = 0;
    for _round in 0..6 {
        let count = read_number(COUNT)?;
        if count >= max {
            break;
        }
        let want = u32::try_from(max - count).context("conntrack table too large")?;
        let mut flows: Vec<(SocketAddrV4, SocketAddrV4)> = Vec::new();
        for i in next..next.saturating_add(want) {
            let (port, dst) = flow(i);
            let (a, b) = (SocketAddrV4::new(SRC, port), SocketAddrV4::new(dst, 7));
            if !send(&sock, a, b)? {
                break;
            }
            flows.push((a, b));
        }
        next = next.saturating_add(want);
        created += flows.len();
        for (a, b) in &flows {
            send(&sock, *b, *a)?;
        }
        std::thread::sleep(STREAM_DELAY);
        for (a, b) in &flows {
            send(&sock, *a, *b)?;
        }
    }
    let count = read_number(COUNT)?;
    if count < max {
        bail!("the conntrack table holds {count} of {max} entries after filling");
    }
    Ok(FillReport {
        flows: created,
        count,
        max,
        elapsed: started.elapsed(),
    })
}

/// `NETLINK_NETFILTER`.
const NETLINK_NETFILTER: i32 = 12;
/// `AF_NETLINK`.
const AF_NETLINK: i32 = 16;
/// `(NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE`.
const CT_DELETE: u16 = (1 << 8) | 2;
/// `NLM_F_REQUEST | NLM_F_ACK`.
const REQUEST_ACK: u16 = 1 | 4;
/// `NLMSG_ERROR` (also carries the acknowledgement).
const NLMSG_ERROR: u16 = 2;

/// The ctnetlink request that deletes every entry (all families).
fn flush_request() -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0..4].copy_from_slice(&20u32.to_ne_bytes());
    m[4..6].copy_from_slice(&CT_DELETE.to_ne_bytes());
    m[6..8].copy_from_slice(&REQUEST_ACK.to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // nfgenmsg.nfgen_family = AF_UNSPEC (0): every family.
    m
}

/// Reads the kernel's answer to [`flush_request`]: `Ok` for an ack.
fn parse_ack(reply: &[u8]) -> anyhow::Result<()> {
    if reply.len() < 20 {
        bail!("short netlink reply ({} bytes)", reply.len());
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if kind != NLMSG_ERROR {
        bail!("unexpected netlink reply type {kind}");
    }
    let errno = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
    if errno != 0 {
        return Err(io::Error::from_raw_os_error(-errno)).context("ctnetlink refused the flush");
    }
    Ok(())
}

/// Deletes every conntrack entry of this namespace (`conntrack -F`).
pub fn flush() -> anyhow::Result<()> {
    let sock = Socket::new(
        Domain::from(AF_NETLINK),
        Type::RAW,
        Some(Protocol::from(NETLINK_NETFILTER)),
    )
    .context("opening a netfilter netlink socket")?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.send(&flush_request())
        .context("sending the ctnetlink flush")?;
    let mut buf = [0u8; 256];
    let n = (&sock)
        .read(&mut buf)
        .context("reading the ctnetlink answer")?;
    parse_ack(&buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_flows_are_distinct_and_stay_on_loopback() {
        let mut seen = std::collections::HashSet::new();
        for i in (0..300_000).step_by(7) {
            let (port, dst) = flow(i);
            assert!(dst.is_loopback() && port >= FIRST_PORT, "{i}: {dst}:{port}");
            assert!(seen.insert((port, dst)), "flow {i} repeats");
        }
        assert_eq!(flow(0), (10_000, Ipv4Addr::new(127, 2, 0, 1)));
        assert_eq!(flow(50_000), (10_000, Ipv4Addr::new(127, 2, 0, 2)));
    }

    #[test]
    fn datagram_has_a_valid_ip_header() {
        let p = datagram(
            SocketAddrV4::new(SRC, 10_000),
            SocketAddrV4::new(Ipv4Addr::new(127, 2, 0, 1), 7),
        );
        assert_eq!(
            internet_checksum(&p[..20]),
            0,
            "a correct header sums to zero"
        );
        assert_eq!(&p[12..16], &[127, 1, 0, 1]);
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 7);
    }

    #[test]
    fn flush_request_and_acks() {
        let req = flush_request();
        assert_eq!(u32::from_ne_bytes([req[0], req[1], req[2], req[3]]), 20);
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), 0x0102);
        let mut ack = [0u8; 36];
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert!(parse_ack(&ack).is_ok());
        ack[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        let err = format!("{:#}", parse_ack(&ack).expect_err("EPERM"));
        assert!(err.contains("refused"), "{err}");
        assert!(parse_ack(&ack[..8]).is_err());
    }
}
