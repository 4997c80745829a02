//! Linux implementation of [`super::IcmpSocket`]: a raw `AF_INET`/`SOCK_RAW`/
//! `IPPROTO_ICMP` socket (requires `CAP_NET_RAW`; the probe runs as root in
//! the lab and CI), non-blocking and driven by tokio's [`AsyncFd`], with
//! kernel receive timestamps (`SO_TIMESTAMPNS`) and a classic BPF filter
//! that keeps only our echo replies and ICMP errors.
//!
//! The one `setsockopt` neither socket2 nor nix wraps (`IP_MTU_DISCOVER`) is
//! called through libc here; this is the only module of the crate allowed
//! `unsafe`.
#![allow(unsafe_code)]

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrIn, getsockopt, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_gettime};
use socket2::{Domain, Protocol, SockAddr, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::{IcmpSocket, IcmpSocketOptions, Received, SendFailure, Timestamp};
use crate::tasks::error::{Error, Result};
use crate::tasks::icmp_packet::{TYPE_DEST_UNREACHABLE, TYPE_ECHO_REPLY, TYPE_TIME_EXCEEDED};
use crate::tasks::types::{EchoId, Mtu};

/// A raw ICMPv4 socket owned by one task.
#[derive(Debug)]
pub struct RawIcmpSocket {
    fd: AsyncFd<Socket>,
}

impl RawIcmpSocket {
    /// Opens and configures the socket. Requires `CAP_NET_RAW` (an
    /// unprivileged caller gets `Error::Socket` with `EPERM`) and a tokio
    /// runtime with I/O enabled.
    pub fn open(options: &IcmpSocketOptions) -> Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).map_err(
            failed("socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) (requires CAP_NET_RAW)"),
        )?;
        socket
            .set_nonblocking(true)
            .map_err(failed("set O_NONBLOCK"))?;
        if let Some(ttl) = options.ttl {
            socket
                .set_ttl_v4(u32::from(ttl.get()))
                .map_err(failed("setsockopt(IP_TTL)"))?;
        }
        let pmtu = if options.dont_fragment {
            libc::IP_PMTUDISC_DO
        } else {
            libc::IP_PMTUDISC_DONT
        };
        set_mtu_discover(&socket, pmtu).map_err(failed("setsockopt(IP_MTU_DISCOVER)"))?;
        setsockopt(&socket, sockopt::ReceiveTimestampns, &true).map_err(|e| Error::Socket {
            op: "setsockopt(SO_TIMESTAMPNS)",
            source: e.into(),
        })?;
        socket
            .attach_filter(&echo_filter(options.echo_id))
            .map_err(failed("setsockopt(SO_ATTACH_FILTER)"))?;
        // SAFETY: `socket` owns its fd (an `OwnedFd` inside), so `as_raw_fd`
        // always returns the same open descriptor until the socket is
        // dropped, which only happens when the `AsyncFd` owning it is.
        let fd = unsafe { AsyncFd::register(socket) }.map_err(|e| Error::Socket {
            op: "register with the tokio reactor",
            source: e.into_parts().1,
        })?;
        Ok(Self { fd })
    }
}

impl IcmpSocket for RawIcmpSocket {
    async fn send_to(&self, message: &[u8], to: Ipv4Addr) -> Result<Timestamp, SendFailure> {
        let addr = SockAddr::from(SocketAddrV4::new(to, 0));
        loop {
            let mut guard = self.fd.writable().await?;
            let sent_at = now()?;
            match guard.try_io(|socket| socket.get_ref().send_to(message, &addr)) {
                Ok(Ok(_)) => return Ok(sent_at),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    return Err(SendFailure::MessageTooLong {
                        mtu: route_mtu(to).ok(),
                    });
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => {}
            }
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            let mut guard = self.fd.readable().await?;
            if let Ok(result) = guard.try_io(|socket| recv_timestamped(socket.as_raw_fd(), buf)) {
                return result;
            }
        }
    }
}

/// MTU of the route the kernel would use to reach `to`, path-MTU cache
/// included: `getsockopt(IP_MTU)` on a UDP socket connected to `to` (no
/// packet is sent; no privilege needed).
pub fn route_mtu(to: Ipv4Addr) -> io::Result<Mtu> {
    let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    udp.connect((to, 9))?;
    let mtu = getsockopt(&udp, sockopt::IpMtu)?;
    u32::try_from(mtu)
        .map(Mtu)
        .map_err(|_| io::Error::other(format!("negative IP_MTU {mtu}")))
}

/// Wraps an OS error with the call that failed.
fn failed(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Socket { op, source }
}

/// The wall clock now, on `CLOCK_REALTIME` like `SO_TIMESTAMPNS`.
fn now() -> io::Result<Timestamp> {
    Ok(timestamp(clock_gettime(ClockId::CLOCK_REALTIME)?))
}

fn timestamp(ts: TimeSpec) -> Timestamp {
    Timestamp::from_nanos(
        ts.tv_sec()
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec()),
    )
}

/// One non-blocking `recvmsg`, reading the `SCM_TIMESTAMPNS` control message.
fn recv_timestamped(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    let mut control = nix::cmsg_space!(TimeSpec);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut control), MsgFlags::empty())?;
    let kernel_time = msg.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|cmsg| match cmsg {
            ControlMessageOwned::ScmTimestampns(ts) => Some(timestamp(ts)),
            _ => None,
        })
    });
    let at = match kernel_time {
        Some(at) => at,
        None => now()?,
    };
    Ok(Received { len: msg.bytes, at })
}

/// `setsockopt(IPPROTO_IP, IP_MTU_DISCOVER, value)`.
fn set_mtu_discover(socket: &Socket, value: libc::c_int) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .map_err(|_| io::Error::other("socklen_t overflow"))?;
    // SAFETY: the fd is open for the whole call (borrowed from `socket`); the
    // pointer and length describe `value`, a live `c_int` on this stack frame
    // that the kernel only reads, which is what IP_MTU_DISCOVER expects.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&raw const value).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Classic BPF opcodes (linux/filter.h) as `SockFilter` wants them.
const LDX_B_MSH: u16 = 0xb1;
const LD_B_IND: u16 = 0x50;
const LD_H_IND: u16 = 0x48;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;

/// A socket filter over the IPv4 datagram that accepts echo replies carrying
/// `id` and every destination-unreachable and time-exceeded error (their
/// quoted echo is matched in user space), and drops the rest: other tasks'
/// and processes' replies, and our own requests looped back on `lo`.
fn echo_filter(id: EchoId) -> [SockFilter; 9] {
    [
        // X = IPv4 header length.
        SockFilter::new(LDX_B_MSH, 0, 0, 0),
        // A = ICMP type.
        SockFilter::new(LD_B_IND, 0, 0, 0),
        SockFilter::new(JEQ_K, 0, 2, u32::from(TYPE_ECHO_REPLY)),
        // Echo reply: A = identifier; accept only ours.
        SockFilter::new(LD_H_IND, 0, 0, 4),
        SockFilter::new(JEQ_K, 2, 3, u32::from(id.0)),
        SockFilter::new(JEQ_K, 1, 0, u32::from(TYPE_DEST_UNREACHABLE)),
        SockFilter::new(JEQ_K, 0, 1, u32::from(TYPE_TIME_EXCEEDED)),
        SockFilter::new(RET_K, 0, 0, u32::MAX),
        SockFilter::new(RET_K, 0, 0, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_opcodes_match_linux_filter_h() {
        let op = |code: u32| u16::try_from(code).unwrap();
        assert_eq!(LDX_B_MSH, op(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH));
        assert_eq!(LD_B_IND, op(libc::BPF_LD | libc::BPF_B | libc::BPF_IND));
        assert_eq!(LD_H_IND, op(libc::BPF_LD | libc::BPF_H | libc::BPF_IND));
        assert_eq!(JEQ_K, op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K));
        assert_eq!(RET_K, op(libc::BPF_RET | libc::BPF_K));
    }

    #[test]
    fn loopback_route_mtu_is_readable_without_privilege() {
        let mtu = route_mtu(Ipv4Addr::LOCALHOST).unwrap();
        assert!(mtu.0 >= 1280, "{mtu}");
    }
}
