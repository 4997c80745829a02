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

/// Bytes a captured packet occupies in a ring block besides its captured
/// bytes: `tpacket3_hdr` and `sockaddr_ll` (68), aligned so that the
/// network header lands on 16 bytes (at most 96 in all).
const SLOT_OVERHEAD: u64 = 96;
/// Packets per second one interface is sized for: a busy node link's
/// small-packet peak (a flood ping across a veth carries about 150 000).
const EXPECTED_RATE: u64 = 500_000;
/// How long the ring must hold packets at [`EXPECTED_RATE`] while the
/// reader is off the CPU (a loaded 2-core machine).
const RING_HOLD: Duration = Duration::from_millis(100);
/// Bytes per ring block: holds a frame of the largest snap length
/// (256 KiB), so no frame is ever cut to fit a block.
const BLOCK_SIZE: u32 = 1 << 20;
/// Fewest blocks per ring, so the kernel always has one to fill while the
/// reader copies others.
const MIN_BLOCKS: u32 = 4;
/// Most blocks per ring (64 MiB).
const MAX_BLOCKS: u32 = 64;
/// Most blocks over all the rings of one capture (128 MiB).
const MAX_CAPTURE_BLOCKS: u32 = 128;

/// Shape of a receive ring. The defaults (32 blocks of 1 MiB, retired after
/// 10 ms) hold about 150 000 headers-only packets between two reads;
/// [`RingConfig::sized_for`] shapes a capture's rings.
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

impl RingConfig {
    /// A ring for one of `interfaces` interfaces captured at `snaplen`:
    /// [`RING_HOLD`] of packets at [`EXPECTED_RATE`], each taking its snap
    /// length plus [`SLOT_OVERHEAD`], in 1 MiB blocks; between 4 and 64
    /// blocks, and at most 128 over all the capture's rings (never under 4
    /// each). Smaller rings are faster to set up, so arming comes sooner.
    pub fn sized_for(snaplen: u32, interfaces: usize) -> Self {
        let slot = frame_slot(snaplen);
        let held = EXPECTED_RATE * u64::try_from(RING_HOLD.as_millis()).unwrap_or(u64::MAX) / 1000;
        let wanted =
            u32::try_from((held * slot).div_ceil(u64::from(BLOCK_SIZE))).unwrap_or(u32::MAX);
        let shared = MAX_CAPTURE_BLOCKS / u32::try_from(interfaces.max(1)).unwrap_or(u32::MAX);
        Self {
            block_size: BLOCK_SIZE,
            block_count: wanted.min(MAX_BLOCKS).min(shared).max(MIN_BLOCKS),
            ..Self::default()
        }
    }

    /// Bytes of ring memory, all blocks.
    pub fn bytes(&self) -> u64 {
        u64::from(self.block_size) * u64::from(self.block_count)
    }

    /// The largest frame a block holds: a packet captured at a snap length
    /// whose slot is larger would be cut short by the kernel.
    pub fn max_frame(&self) -> u64 {
        u64::from(self.block_size) - 48
    }
}

/// Bytes a packet captured at `snaplen` may occupy in a ring block.
pub fn frame_slot(snaplen: u32) -> u64 {
    (u64::from(snaplen) + SLOT_OVERHEAD).next_multiple_of(16)
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

/// Sleeps until `CLOCK_REALTIME` reaches `at` (an absolute sleep, so time
/// lost between reading the clock and sleeping does not push the wake-up
/// later); returns at once for an instant already past. A signal ends it
/// early.
pub fn sleep_until(at: Timestamp) -> io::Result<()> {
    let nanos = at.as_nanos();
    let request = nix::sys::time::TimeSpec::new(
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000),
    );
    match nix::time::clock_nanosleep(
        ClockId::CLOCK_REALTIME,
        nix::time::ClockNanosleepFlags::TIMER_ABSTIME,
        &request,
    ) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The calling thread in `SCHED_FIFO` at the lowest real-time priority
/// until dropped, when its previous policy comes back: its wake-up at an
/// arming instant then preempts ordinary threads instead of waiting for a
/// busy core. Requires `CAP_SYS_NICE`; hold it only around a bounded wait.
#[derive(Debug)]
pub struct RealtimeGuard {
    policy: libc::c_int,
    priority: libc::c_int,
    /// Scheduling is per thread: the guard stays on the thread it raised.
    _thread: std::marker::PhantomData<*const ()>,
}

impl RealtimeGuard {
    /// Raises the calling thread; an error (no `CAP_SYS_NICE`) leaves it as
    /// it was.
    pub fn raise() -> io::Result<Self> {
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; both calls only read its
        // scheduling state, `param` is a valid sched_param for the call.
        let policy = unsafe { libc::sched_getscheduler(0) };
        if policy < 0 || unsafe { libc::sched_getparam(0, &raw mut param) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let fifo = libc::sched_param { sched_priority: 1 };
        // SAFETY: pid 0 is the calling thread; `fifo` is a valid sched_param
        // that lives for the call.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const fifo) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            policy,
            priority: param.sched_priority,
            _thread: std::marker::PhantomData,
        })
    }
}

impl Drop for RealtimeGuard {
    fn drop(&mut self) {
        let param = libc::sched_param {
            sched_priority: self.priority,
        };
        // SAFETY: pid 0 is the calling thread (the guard is not Send, so it
        // drops on the thread that raised it); `param` is a valid
        // sched_param that lives for the call.
        let rc = unsafe { libc::sched_setscheduler(0, self.policy, &raw const param) };
        if rc != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "cannot restore the capture thread's scheduling policy");
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::spec::{HEADERS_ONLY_SNAPLEN, MAX_SNAPLEN, MIN_SNAPLEN};
    use test_case::test_case;

    const MIB: u32 = 1 << 20;

    #[test_case(HEADERS_ONLY_SNAPLEN, 1 => 11 ; "headers only: 50 000 slots of 224 bytes")]
    #[test_case(MIN_SNAPLEN, 1 => 8 ; "the smallest snap length")]
    #[test_case(1514, 1 => 64 ; "full frames hit the per-ring bound")]
    #[test_case(1514, 4 => 32 ; "four interfaces share the capture's bound")]
    #[test_case(HEADERS_ONLY_SNAPLEN, 16 => 8 ; "sixteen interfaces get what they need")]
    #[test_case(MAX_SNAPLEN, 16 => 8 ; "sixteen full-payload interfaces share 128 blocks")]
    #[test_case(HEADERS_ONLY_SNAPLEN, 0 => 11 ; "no interface counts as one")]
    fn rings_are_sized_from_the_snap_length_and_the_rate(snaplen: u32, interfaces: usize) -> u32 {
        let config = RingConfig::sized_for(snaplen, interfaces);
        assert_eq!(config.block_size, MIB);
        config.block_count
    }

    #[test]
    fn a_frame_of_any_allowed_snap_length_fits_a_block() {
        for snaplen in [
            MIN_SNAPLEN,
            HEADERS_ONLY_SNAPLEN,
            1514,
            9000,
            65_535,
            MAX_SNAPLEN,
        ] {
            let config = RingConfig::sized_for(snaplen, 1);
            assert!(
                frame_slot(snaplen) <= config.max_frame(),
                "snaplen {snaplen}: slot {} > block room {}",
                frame_slot(snaplen),
                config.max_frame()
            );
            assert!(config.block_count >= MIN_BLOCKS);
        }
    }
}
