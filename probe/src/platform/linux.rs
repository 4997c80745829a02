//! Linux implementation of [`super::IcmpSocket`]: a raw `AF_INET`/`SOCK_RAW`/
//! `IPPROTO_ICMP` socket (requires `CAP_NET_RAW`; the probe runs as root in
//! the lab and CI), non-blocking and driven by tokio's [`AsyncFd`] (or, as
//! [`PolledIcmpSocket`], by a thread of its own with `ppoll`), with kernel
//! receive timestamps (`SO_TIMESTAMPNS`) and a classic BPF filter that keeps
//! only our echo replies and ICMP errors.
//!
//! The calls neither socket2 nor nix wraps (`setsockopt(IP_MTU_DISCOVER)`,
//! `ioctl(SIOCGIFMTU)`, `ppoll` with nanoseconds) go through libc here; this is the only module of the
//! crate allowed `unsafe`. Also here: per-probe TTL and the path-MTU probing
//! mode for the path tasks, and the routing table of the calling thread's
//! namespace.
#![allow(unsafe_code)]

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrIn, getsockopt, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_gettime};
use socket2::{Domain, Protocol, SockAddr, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::error::{Error, Result};
use super::{IcmpSocket, IcmpSocketOptions, Received, SendFailure, Timestamp};
use crate::types::{EchoId, Mtu, Ttl};
use probemesh_packet::icmp::{TYPE_DEST_UNREACHABLE, TYPE_ECHO_REPLY, TYPE_TIME_EXCEEDED};

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
        let socket = configured_icmp_socket(options)?;
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

/// A raw ICMPv4 socket, non-blocking and configured as `options` say (see
/// the module docs).
fn configured_icmp_socket(options: &IcmpSocketOptions) -> Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).map_err(failed(
        "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) (requires CAP_NET_RAW)",
    ))?;
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
    Ok(socket)
}

/// Sends `message` to `to` on a non-blocking ICMP socket; the wall-clock
/// time read just before the call starts the round trip.
fn send_icmp(
    socket: &Socket,
    message: &[u8],
    to: Ipv4Addr,
) -> io::Result<Result<Timestamp, SendFailure>> {
    let addr = SockAddr::from(SocketAddrV4::new(to, 0));
    let sent_at = now()?;
    match socket.send_to(message, &addr) {
        Ok(_) => Ok(Ok(sent_at)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
        Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
            Ok(Err(SendFailure::MessageTooLong {
                mtu: route_mtu(to).ok(),
            }))
        }
        Err(e) => Ok(Err(e.into())),
    }
}

impl IcmpSocket for RawIcmpSocket {
    async fn send_to(&self, message: &[u8], to: Ipv4Addr) -> Result<Timestamp, SendFailure> {
        loop {
            let mut guard = self.fd.writable().await?;
            if let Ok(sent) = guard.try_io(|socket| send_icmp(socket.get_ref(), message, to)) {
                return sent?;
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

/// The socket of [`RawIcmpSocket`] for a thread that waits on it itself with
/// `poll(2)`, as iputils ping does: no tokio reactor knows its fd, so a
/// datagram wakes that thread only, not a runtime as well.
#[derive(Debug)]
pub struct PolledIcmpSocket {
    socket: Socket,
}

/// What [`PolledIcmpSocket::wait`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollReadiness {
    /// A datagram (or a pending error) can be read from the socket.
    pub readable: bool,
    /// The other fd is readable (or closed): the waiter is asked to stop.
    pub woken: bool,
}

impl PolledIcmpSocket {
    /// Opens and configures the socket as [`RawIcmpSocket::open`] does, in
    /// the calling thread's network namespace. Requires `CAP_NET_RAW`.
    pub fn open(options: &IcmpSocketOptions) -> Result<Self> {
        Ok(Self {
            socket: configured_icmp_socket(options)?,
        })
    }

    /// Sends `message` to `to`; returns the wall-clock time read just
    /// before the send call. A full send buffer is a refused send, as for
    /// ping.
    pub fn send_to(&self, message: &[u8], to: Ipv4Addr) -> Result<Timestamp, SendFailure> {
        send_icmp(&self.socket, message, to)?
    }

    /// Reads one datagram into `buf` without waiting; `None` when none is
    /// queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        match recv_timestamped(self.socket.as_raw_fd(), buf) {
            Ok(received) => Ok(Some(received)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits up to `timeout` (nanosecond precision, `ppoll(2)`) until the
    /// socket or `wake` is readable. An interrupted wait returns early with
    /// nothing ready.
    pub fn wait(&self, wake: BorrowedFd<'_>, timeout: Duration) -> io::Result<PollReadiness> {
        let mut fds = [
            libc::pollfd {
                fd: self.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
        };
        // SAFETY: `fds` is a live array of two pollfd entries for the whole
        // call, whose fds are open (borrowed from `self` and `wake`);
        // `timeout` is a live timespec the kernel only reads; a null signal
        // mask keeps the thread's own.
        let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &raw const timeout, std::ptr::null()) };
        if rc < 0 {
            let error = io::Error::last_os_error();
            return if error.kind() == io::ErrorKind::Interrupted {
                Ok(PollReadiness::default())
            } else {
                Err(error)
            };
        }
        let any = libc::POLLIN | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
        Ok(PollReadiness {
            readable: fds[0].revents & any != 0,
            woken: fds[1].revents & any != 0,
        })
    }
}

impl RawIcmpSocket {
    /// Sets the TTL of the next messages sent, in hops (path trace: one
    /// setting per probe; the socket belongs to one task, which sends its
    /// probes one at a time).
    pub fn set_ttl(&self, ttl: Ttl) -> Result<()> {
        self.fd
            .get_ref()
            .set_ttl_v4(u32::from(ttl.get()))
            .map_err(failed("setsockopt(IP_TTL)"))
    }

    /// Sets DF but sizes against the interface MTU, ignoring the kernel's
    /// path-MTU cache (`IP_PMTUDISC_PROBE`, `tracepath`'s mode): a path-MTU
    /// search must see what the path does, not what an earlier
    /// frag-needed taught the kernel. Sends above the interface MTU still
    /// fail with `EMSGSIZE`.
    pub fn probe_past_path_mtu_cache(&self) -> Result<()> {
        set_mtu_discover(self.fd.get_ref(), libc::IP_PMTUDISC_PROBE)
            .map_err(failed("setsockopt(IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)"))
    }
}

/// One TCP probe of a path trace: a non-blocking connect whose SYN leaves
/// with a chosen TTL. Routers short of the destination answer the SYN with
/// an ICMP time-exceeded quoting its source port ([`TcpProbe::local_port`]);
/// the destination answers SYN-ACK (the connect completes) or RST (refused).
/// No privilege needed.
#[derive(Debug)]
pub struct TcpProbe {
    fd: AsyncFd<Socket>,
    local_port: u16,
}

impl TcpProbe {
    /// Sends the SYN: binds an ephemeral port, sets `IP_TTL` and starts a
    /// non-blocking connect to `to`. Needs a tokio runtime with I/O.
    pub fn start(to: SocketAddrV4, ttl: Ttl) -> io::Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket.set_ttl_v4(u32::from(ttl.get()))?;
        socket.bind(&SockAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))?;
        match socket.connect(&SockAddr::from(to)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let local_port = socket.local_addr()?.as_socket().map_or(0, |a| a.port());
        // SAFETY: `socket` owns its fd and moves into the `AsyncFd`, which
        // deregisters it before dropping (and closing) it.
        let fd = unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)?;
        Ok(Self { fd, local_port })
    }

    /// The local port of the SYN.
    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    /// Waits for the connect to end: `Ok(true)` connected (SYN-ACK),
    /// `Ok(false)` refused (RST), `Err` anything else (an ICMP error, which
    /// the raw ICMP socket reports with its sender). Dropping the future (or
    /// the probe) closes the socket.
    pub async fn finish(self) -> io::Result<bool> {
        let mut guard = self.fd.writable().await?;
        guard.clear_ready();
        match self.fd.get_ref().take_error()? {
            None => Ok(true),
            Some(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Ok(false),
            Some(e) => Err(e),
        }
    }
}

/// The routing table of the calling thread's network namespace, as the
/// kernel prints it in `/proc/thread-self/net/route` (not `/proc/self`,
/// which shows the main thread's namespace: tasks run on a thread that
/// entered another one).
pub fn read_route_table() -> Result<String> {
    let path = std::path::Path::new(ROUTE_TABLE);
    std::fs::read_to_string(path).map_err(|source| Error::ReadProc {
        path: path.to_owned(),
        source,
    })
}

/// Where [`read_route_table`] reads.
const ROUTE_TABLE: &str = "/proc/thread-self/net/route";

/// MTU of interface `name` in the calling thread's network namespace
/// (`ioctl(SIOCGIFMTU)` on a fresh UDP socket; `/sys/class/net` would show
/// the namespace sysfs was mounted in). No privilege needed.
pub fn interface_mtu(name: &str) -> io::Result<Mtu> {
    let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    // SAFETY: `ifreq` is plain old data (arrays and a union of integers and
    // pointers), for which all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= request.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    for (slot, &byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = libc::c_char::from_ne_bytes([byte]);
    }
    // SAFETY: the fd is open for the whole call (borrowed from `udp`);
    // `request` is a live, NUL-terminated `ifreq` on this stack frame (the
    // name is shorter than IFNAMSIZ and the rest is zero), which
    // SIOCGIFMTU reads the name from and writes `ifru_mtu` into.
    let rc = unsafe { libc::ioctl(udp.as_raw_fd(), libc::SIOCGIFMTU, &raw mut request) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU succeeded, so the kernel wrote the `ifru_mtu` member
    // of the union; reading an `int` member of a zero-initialised union of
    // integers is defined either way.
    let mtu = unsafe { request.ifr_ifru.ifru_mtu };
    u32::try_from(mtu)
        .map(Mtu)
        .map_err(|_| io::Error::other(format!("negative MTU {mtu} on {name}")))
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

/// The wall clock now, on `CLOCK_REALTIME` like `SO_TIMESTAMPNS`: the clock
/// to subtract a send time from when the answer is not a timestamped ICMP
/// datagram (a TCP connect completing).
pub fn now() -> io::Result<Timestamp> {
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

/// `setsockopt(IPPROTO_IP, IP_MTU_DISCOVER, value)` on any IPv4 socket
/// (`IP_PMTUDISC_DO` sets DF and refuses to fragment locally).
pub fn set_mtu_discover(socket: &Socket, value: libc::c_int) -> io::Result<()> {
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
    fn loopback_interface_mtu_is_readable_without_privilege() {
        let mtu = interface_mtu("lo").unwrap();
        assert!(mtu.0 >= 1280, "{mtu}");
        assert!(interface_mtu("").is_err());
        assert!(interface_mtu("a-name-far-too-long-for-ifnamsiz").is_err());
        assert!(read_route_table().unwrap().starts_with("Iface"));
    }

    #[test]
    fn loopback_route_mtu_is_readable_without_privilege() {
        let mtu = route_mtu(Ipv4Addr::LOCALHOST).unwrap();
        assert!(mtu.0 >= 1280, "{mtu}");
    }
}
