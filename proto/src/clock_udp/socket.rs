//! A UDP socket that reports when the kernel received each datagram.
//!
//! `SO_TIMESTAMPNS` makes the kernel stamp every datagram (CLOCK_REALTIME) as
//! it enters the stack, before any scheduling of the receiving task; the
//! stamp arrives as an `SCM_TIMESTAMPNS` control message of `recvmsg`. No
//! privileges are needed.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd as _;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// One datagram received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes placed in the buffer.
    pub len: usize,
    /// The datagram was longer than the buffer (its tail is lost).
    pub truncated: bool,
    /// Sender.
    pub from: SocketAddr,
    /// Kernel receive time, Unix ns (CLOCK_REALTIME); `None` if the kernel
    /// attached no timestamp.
    pub kernel_ns: Option<i64>,
}

/// A UDP socket with kernel receive timestamps.
#[derive(Debug)]
pub struct TimestampedUdp {
    socket: UdpSocket,
}

impl TimestampedUdp {
    /// Binds `addr` and asks the kernel for receive timestamps.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        setsockopt(&socket, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)?;
        Ok(Self { socket })
    }

    /// The address bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends one datagram.
    pub async fn send_to(&self, bytes: &[u8], to: SocketAddr) -> io::Result<()> {
        self.socket.send_to(bytes, to).await.map(drop)
    }

    /// Waits for the next datagram.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let fd = self.socket.as_raw_fd();
        self.socket
            .async_io(Interest::READABLE, || {
                let mut cmsg = nix::cmsg_space!(TimeSpec);
                let mut iov = [io::IoSliceMut::new(&mut *buf)];
                let msg = recvmsg::<SockaddrStorage>(
                    fd,
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_DONTWAIT,
                )
                .map_err(io::Error::from)?;
                let from = msg
                    .address
                    .as_ref()
                    .and_then(socket_addr)
                    .ok_or_else(|| io::Error::other("datagram without an IP sender"))?;
                let kernel_ns = msg.cmsgs().ok().and_then(|mut cmsgs| {
                    cmsgs.find_map(|c| match c {
                        ControlMessageOwned::ScmTimestampns(ts) => unix_ns(ts),
                        _ => None,
                    })
                });
                Ok(Received {
                    len: msg.bytes,
                    truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
                    from,
                    kernel_ns,
                })
            })
            .await
    }
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    addr.as_sockaddr_in()
        .map(|a| SocketAddr::V4(SocketAddrV4::from(*a)))
        .or_else(|| {
            addr.as_sockaddr_in6()
                .map(|a| SocketAddr::V6(SocketAddrV6::from(*a)))
        })
}

fn unix_ns(ts: TimeSpec) -> Option<i64> {
    ts.tv_sec()
        .checked_mul(1_000_000_000)?
        .checked_add(ts.tv_nsec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_datagrams_carry_kernel_timestamps() {
        let a = TimestampedUdp::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let b = TimestampedUdp::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        a.send_to(b"hello", b.local_addr().unwrap()).await.unwrap();
        let mut buf = [0u8; 4];
        let got = b.recv(&mut buf).await.unwrap();
        assert_eq!(got.from, a.local_addr().unwrap());
        assert_eq!((got.len, got.truncated), (4, true));
        let kernel = got.kernel_ns.expect("SCM_TIMESTAMPNS");
        assert!(i128::from(kernel) >= before as i128, "{kernel} < {before}");
    }
}
