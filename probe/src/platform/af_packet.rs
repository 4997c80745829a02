//! `AF_PACKET` capture rings: one socket per interface with a classic BPF
//! filter attached in the kernel and a memory-mapped `TPACKET_V3` receive
//! ring, behind a small safe API ([`PacketRing`]). Requires `CAP_NET_RAW`.
//!
//! Order of set-up, so that no packet is ever seen unfiltered: the socket is
//! made with protocol 0 (it receives nothing), the filter is attached, the
//! ring is configured and mapped, and only then [`PacketRing::bind`] binds it
//! to the interface with `ETH_P_ALL`, the instant the capture goes live. The
//! ring is therefore empty before the filter applies and needs no draining.
//!
//! Sockets and interface look-ups act in the network namespace of the
//! *calling thread*: open rings on the thread that has entered the
//! namespace. The block layout is parsed elsewhere
//! (the capture engine's `block` module), over the plain bytes this module hands out.
//! This is one of the few modules allowed `unsafe` (mmap, setsockopt,
//! bind, poll, ioctl, prctl), each use with its `// SAFETY:` comment.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::time::{ClockId, clock_gettime};
use probemesh_packet::bpf::{BpfInsn, LinkLayer};
use socket2::{Domain, SockFilter, Socket, Type};

use super::Timestamp;

/// Offset of `tpacket_hdr_v1.block_status` in a block (`tpacket_block_desc`).
const BLOCK_STATUS_OFFSET: usize = 8;
/// `ETH_P_ALL`: every protocol, the bind protocol of a capture.
const ETH_P_ALL: u16 = 0x0003;
/// `ARPHRD_*` link types whose packets start with an Ethernet header.
const ARPHRD_ETHERNET_LIKE: [u16; 2] = [libc::ARPHRD_ETHER, libc::ARPHRD_LOOPBACK];
/// `ARPHRD_RAWIP` (not in libc): raw IP devices such as some modems.
const ARPHRD_RAWIP: u16 = 519;
/// `ARPHRD_*` link types whose packets start at the IP header.
const ARPHRD_RAW_IP: [u16; 6] = [
    libc::ARPHRD_NONE,
    libc::ARPHRD_TUNNEL,
    libc::ARPHRD_TUNNEL6,
    libc::ARPHRD_SIT,
    libc::ARPHRD_PPP,
    ARPHRD_RAWIP,
];

/// Shape of a receive ring. The defaults (32 blocks of 1 MiB, retired after
/// 10 ms) hold about 150 000 headers-only packets between two reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes per block: a multiple of the page size, a power of two.
    pub block_size: u32,
    /// Blocks in the ring.
    pub block_count: u32,
    /// The kernel hands over a block that is not full after this long.
    pub block_timeout: Duration,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            block_size: 1 << 20,
            block_count: 32,
            block_timeout: Duration::from_millis(10),
        }
    }
}

/// Kernel counters of one socket (`PACKET_STATISTICS`, `tpacket_stats_v3`),
/// cumulative since the ring was bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets the filter accepted, dropped ones included (`tp_packets`).
    pub received: u64,
    /// Packets dropped because the ring was full (`tp_drops`).
    pub drops: u64,
    /// Times the ring froze because no block was free (`tp_freeze_q_cnt`).
    pub freezes: u64,
}

/// What `poll` said about one ring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// A block is waiting to be read.
    pub readable: bool,
    /// The socket has a pending error (e.g. `ENETDOWN`: the interface went
    /// down or away); read it with [`PacketRing::take_error`].
    pub error: bool,
}

/// An `AF_PACKET` socket with its `TPACKET_V3` receive ring.
#[derive(Debug)]
pub struct PacketRing {
    socket: Socket,
    map: NonNull<u8>,
    map_len: usize,
    block_size: usize,
    block_count: usize,
    next_block: usize,
    totals: KernelStats,
}

// SAFETY: the mapping is owned by this value alone (it is unmapped in Drop)
// and reached only through `&mut self` or a `Block` borrowing `&mut self`, so
// moving the ring to another thread moves its only user with it.
unsafe impl Send for PacketRing {}

impl PacketRing {
    /// Opens a socket that receives nothing yet, attaches `filter`, and maps
    /// a receive ring shaped by `config`. Requires `CAP_NET_RAW`. Call
    /// [`PacketRing::bind`] to start receiving.
    pub fn open(filter: &[BpfInsn], config: RingConfig) -> io::Result<Self> {
        // Protocol 0: no packet is queued on this socket until `bind`.
        let socket = Socket::new(Domain::PACKET, Type::RAW, None)?;
        let program: Vec<SockFilter> = filter
            .iter()
            .map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k))
            .collect();
        socket.attach_filter(&program)?;
        let fd = socket.as_raw_fd();
        set_option(
            fd,
            libc::PACKET_VERSION,
            &(libc::tpacket_versions::TPACKET_V3 as libc::c_int),
        )?;
        let frame_size: u32 = 2048;
        let request = libc::tpacket_req3 {
            tp_block_size: config.block_size,
            tp_block_nr: config.block_count,
            tp_frame_size: frame_size,
            tp_frame_nr: config.block_size / frame_size * config.block_count,
            tp_retire_blk_tov: u32::try_from(config.block_timeout.as_millis()).unwrap_or(u32::MAX),
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        set_option(fd, libc::PACKET_RX_RING, &request)?;
        let block_size = config.block_size as usize;
        let block_count = config.block_count as usize;
        let map_len = block_size * block_count;
        // SAFETY: a fresh shared mapping of the ring the kernel just
        // allocated for `fd` (length = blocks x block size, offset 0); the
        // result is checked for MAP_FAILED before use.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map =
            NonNull::new(map.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Self {
            socket,
            map,
            map_len,
            block_size,
            block_count,
            next_block: 0,
            totals: KernelStats::default(),
        })
    }

    /// Binds the socket to interface `ifindex` for every protocol: from
    /// now on the kernel fills the ring. Returns the `CLOCK_REALTIME`
    /// instant read right after the bind, when the capture was live.
    pub fn bind(&mut self, ifindex: u32) -> io::Result<Timestamp> {
        let ifindex =
            i32::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let address = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as libc::sa_family_t,
            sll_protocol: ETH_P_ALL.to_be(),
            sll_ifindex: ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        // SAFETY: `address` is a valid, initialized sockaddr_ll that lives
        // for the call, and the length passed is its exact size.
        let rc = unsafe {
            libc::bind(
                self.socket.as_raw_fd(),
                (&raw const address).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        realtime_now()
    }

    /// The next block the kernel has handed over, in ring order, or `None`
    /// when it still owns it. Dropping the [`Block`] returns it to the kernel.
    pub fn next_block(&mut self) -> Option<Block<'_>> {
        let index = self.next_block;
        // SAFETY: `index < block_count`, so the block lies inside the mapping.
        let start = unsafe { self.map.as_ptr().add(index * self.block_size) };
        let status = block_status(start);
        if status.load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            return None;
        }
        self.next_block = (index + 1) % self.block_count;
        Some(Block {
            start,
            len: self.block_size,
            _ring: std::marker::PhantomData,
        })
    }

    /// Waits up to `timeout` until one of `rings` has a block or an error.
    /// Returns one [`Readiness`] per ring, in order.
    pub fn poll(rings: &[PacketRing], timeout: Duration) -> io::Result<Vec<Readiness>> {
        let mut fds: Vec<libc::pollfd> = rings
            .iter()
            .map(|r| libc::pollfd {
                fd: r.socket.as_raw_fd(),
                events: libc::POLLIN | libc::POLLERR,
                revents: 0,
            })
            .collect();
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd entries that
        // lives for the call; the fds are open (owned by `rings`).
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        if rc < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                return Ok(vec![Readiness::default(); rings.len()]);
            }
            return Err(error);
        }
        Ok(fds
            .iter()
            .map(|p| Readiness {
                readable: p.revents & libc::POLLIN != 0,
                error: p.revents & (libc::POLLERR | libc::POLLNVAL | libc::POLLHUP) != 0,
            })
            .collect())
    }

    /// The socket's pending error (`SO_ERROR`), cleared by reading it.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.socket.take_error()
    }

    /// Cumulative kernel counters. The kernel resets its counters on every
    /// read; this adds them up.
    pub fn stats(&mut self) -> io::Result<KernelStats> {
        let mut raw = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `raw` and `len` are valid for writes and live for the
        // call; `len` holds the size of `raw`, which the kernel respects.
        let rc = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut raw).cast::<libc::c_void>(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.totals.received += u64::from(raw.tp_packets);
        self.totals.drops += u64::from(raw.tp_drops);
        self.totals.freezes += u64::from(raw.tp_freeze_q_cnt);
        Ok(self.totals)
    }
}

impl Drop for PacketRing {
    fn drop(&mut self) {
        // SAFETY: `map`/`map_len` describe the mapping made in `open`, and no
        // `Block` outlives the ring (they borrow it), so nothing points into
        // it any more. The socket closes after this.
        unsafe {
            libc::munmap(self.map.as_ptr().cast::<libc::c_void>(), self.map_len);
        }
    }
}

/// One block handed over by the kernel: its bytes stay stable until the
/// block is dropped, which returns it to the kernel.
#[derive(Debug)]
pub struct Block<'ring> {
    start: *mut u8,
    len: usize,
    _ring: std::marker::PhantomData<&'ring mut PacketRing>,
}

impl Block<'_> {
    /// The whole block: a `tpacket_block_desc` followed by its packets.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the block lies inside the live mapping (the ring is
        // borrowed for the block's lifetime) and belongs to user space while
        // TP_STATUS_USER is set, so the kernel does not write it; the slice
        // borrow ends before `drop` hands it back.
        unsafe { std::slice::from_raw_parts(self.start, self.len) }
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        block_status(self.start).store(libc::TP_STATUS_KERNEL, Ordering::Release);
    }
}

/// The status word of the block at `start` (inside a live ring mapping).
fn block_status<'a>(start: *mut u8) -> &'a AtomicU32 {
    // SAFETY: callers pass the start of a block inside a live mapping; blocks
    // are page-aligned, so the word at offset 8 is 4-byte aligned, and the
    // kernel and this process both access it atomically.
    unsafe { AtomicU32::from_ptr(start.add(BLOCK_STATUS_OFFSET).cast::<u32>()) }
}

/// `setsockopt(fd, SOL_PACKET, option, value)`.
fn set_option<T>(fd: RawFd, option: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to an initialized `T` that lives for the call,
    // and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            option,
            (value as *const T).cast::<libc::c_void>(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Now on `CLOCK_REALTIME`, the clock of the kernel's packet timestamps.
pub fn realtime_now() -> io::Result<Timestamp> {
    let now = clock_gettime(ClockId::CLOCK_REALTIME).map_err(io::Error::from)?;
    Ok(Timestamp::from_nanos(
        now.tv_sec() * 1_000_000_000 + now.tv_nsec(),
    ))
}

/// Sets the calling thread's timer slack to `nanos` (Linux adds 50 µs by
/// default to every sleep), so a sleep until an arming instant lands on time.
pub fn set_timer_slack(nanos: u64) -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches only
    // the calling thread's timer slack.
    let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, nanos as libc::c_ulong, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Index of interface `name` in the calling thread's network namespace, or
/// `None` when there is no such interface.
pub fn interface_index(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok().filter(|&i| i != 0)
}

/// Names of the interfaces in the calling thread's network namespace.
pub fn interface_names() -> io::Result<Vec<String>> {
    let list = nix::net::if_::if_nameindex().map_err(io::Error::from)?;
    Ok(list
        .iter()
        .map(|i| i.name().to_string_lossy().into_owned())
        .collect())
}

/// The link layer of interface `name` (from its `ARPHRD_*` type, read with
/// `SIOCGIFHWADDR` in the calling thread's namespace): `Ok(Err(arphrd))` for
/// a type this capture does not handle.
pub fn link_layer(name: &str) -> io::Result<Result<LinkLayer, u16>> {
    let c_name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let bytes = c_name.as_bytes_with_nul();
    // SAFETY: `ifreq` is plain old data (arrays and a union of integers and
    // sockaddrs), so all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if bytes.len() > request.ifr_name.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (dst, &src) in request.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let socket = Socket::new(Domain::PACKET, Type::RAW, None)?;
    // SAFETY: the fd is open for the call (borrowed from `socket`) and
    // `request` is a valid ifreq with a NUL-terminated name that lives for
    // the call; SIOCGIFHWADDR writes only inside it.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFHWADDR, &raw mut request) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR succeeded, so the kernel wrote the `ifru_hwaddr`
    // member of the union; reading it reads initialized memory.
    let arphrd = unsafe { request.ifr_ifru.ifru_hwaddr.sa_family };
    Ok(if ARPHRD_ETHERNET_LIKE.contains(&arphrd) {
        Ok(LinkLayer::Ethernet)
    } else if ARPHRD_RAW_IP.contains(&arphrd) {
        Ok(LinkLayer::RawIp)
    } else {
        Err(arphrd)
    })
}
