//! Reading a TCP socket's kernel state (`getsockopt(IPPROTO_TCP, TCP_INFO)`):
//! how many bytes the peer has acknowledged, retransmissions, MSS, path MTU
//! and smoothed RTT. This is how the transfer task tells "the data got
//! through" from "large segments stall" without any help from the peer.
//!
//! Neither nix nor socket2 wraps `TCP_INFO`, so the call goes through libc
//! here, one of the few modules allowed `unsafe`. No privilege is needed.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};

/// The fields of `struct tcp_info` the probe uses, from one `TCP_INFO` read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpInfo {
    /// Bytes the peer has acknowledged since the connection started
    /// (`tcpi_bytes_acked`, RFC 4898 `tcpEStatsAppHCThruOctetsAcked`; the
    /// handshake's SYN may count as one byte: compare against a baseline).
    pub bytes_acked: u64,
    /// Segments retransmitted over the connection's life (`tcpi_total_retrans`).
    pub total_retransmits: u32,
    /// Current sender MSS in bytes (`tcpi_snd_mss`), lowered by PMTU discovery.
    pub snd_mss: u32,
    /// Path MTU the socket uses, bytes (`tcpi_pmtu`).
    pub pmtu: u32,
    /// Smoothed round-trip time, microseconds (`tcpi_rtt`).
    pub rtt_us: u32,
    /// Segments sent and not yet acknowledged (`tcpi_unacked`).
    pub unacked: u32,
    /// The peer's advertised receive window, bytes (`tcpi_snd_wnd`, kernel
    /// 5.4+; `None` on older kernels). Zero means the peer stopped reading.
    pub snd_wnd: Option<u32>,
}

/// Reads `TCP_INFO` of a connected TCP socket.
///
/// Fails with the OS error on a socket that is not TCP. Kernels older than
/// 4.1 do not fill `tcpi_bytes_acked`; that is reported as an error
/// (`ENOTSUP`) rather than as zero bytes acknowledged.
pub fn tcp_info(socket: &impl AsFd) -> io::Result<TcpInfo> {
    let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
    let full = std::mem::size_of::<libc::tcp_info>();
    let mut len = libc::socklen_t::try_from(full)
        .map_err(|_| io::Error::other("struct tcp_info does not fit socklen_t"))?;
    // SAFETY: the fd is borrowed from `socket` and stays open for the call;
    // `info` is a zeroed, properly aligned `tcp_info` of `len` bytes that the
    // kernel writes at most `len` bytes into, and `len` is a live socklen_t.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `tcp_info` is plain old data (integers only), so the zeroed
    // bytes plus whatever prefix the kernel wrote form a valid value.
    let info = unsafe { info.assume_init() };
    let filled = usize::try_from(len).unwrap_or(0);
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + size_of::<u64>();
    if filled < needed {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("TCP_INFO returned {filled} bytes, too old a kernel for tcpi_bytes_acked"),
        ));
    }
    let wnd_end = std::mem::offset_of!(libc::tcp_info, tcpi_snd_wnd) + size_of::<u32>();
    Ok(TcpInfo {
        bytes_acked: info.tcpi_bytes_acked,
        total_retransmits: info.tcpi_total_retrans,
        snd_mss: info.tcpi_snd_mss,
        pmtu: info.tcpi_pmtu,
        rtt_us: info.tcpi_rtt,
        unacked: info.tcpi_unacked,
        snd_wnd: (filled >= wnd_end).then_some(info.tcpi_snd_wnd),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};

    #[test]
    fn loopback_bytes_are_acknowledged() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let before = tcp_info(&client).unwrap();
        client.write_all(&[7u8; 4096]).unwrap();
        let mut buf = [0u8; 4096];
        server.read_exact(&mut buf).unwrap();
        let mut acked = 0;
        for _ in 0..200 {
            acked = tcp_info(&client).unwrap().bytes_acked - before.bytes_acked;
            if acked >= 4096 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(acked, 4096);
        let info = tcp_info(&client).unwrap();
        assert!(info.snd_mss > 0 && info.pmtu >= 1280, "{info:?}");
        assert_eq!(info.unacked, 0);
        assert!(info.snd_wnd.is_some_and(|w| w > 0), "{info:?}");
    }

    #[test]
    fn udp_sockets_have_no_tcp_info() {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(tcp_info(&udp).is_err());
    }
}
