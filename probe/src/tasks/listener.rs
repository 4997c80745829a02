//! What listens, read from the kernel as `ss -lntup` does: TCP sockets in
//! LISTEN and unconnected UDP sockets of the current network namespace, with
//! the address they are bound to (0.0.0.0, 127.0.0.1, ::) and, best effort,
//! the owning process.
//!
//! Sans-IO: [`parse_proc_net`] (one `/proc/net/{tcp,tcp6,udp,udp6}` table),
//! [`listeners`] and [`socket_inode`]. The I/O is [`run`]. It reads
//! `/proc/thread-self/net/…`, not `/proc/net/…`: `/proc/net` follows
//! `/proc/self`, the process's main thread, while a task running in another
//! namespace runs on a thread that `setns()`'d alone. For the same reason
//! the reads are plain blocking reads on the calling thread (they are short
//! and bounded), never `spawn_blocking` onto a pool thread in another
//! namespace.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::error::{Error, Result};

/// Directory of the calling thread's network-namespace `/proc` tables.
pub const PROC_NET: &str = "/proc/thread-self/net";
/// Most processes scanned for socket owners.
const MAX_PROCESSES: usize = 4096;
/// Most file descriptors examined in all, for socket owners.
const MAX_FDS: usize = 200_000;
/// Most lines read from one `/proc/net` table.
pub const MAX_SOCKETS: usize = 100_000;
/// TCP state `TCP_LISTEN` in `/proc/net/tcp`.
const TCP_LISTEN: u8 = 0x0A;
/// Socket state `TCP_CLOSE`, which an unconnected UDP socket shows.
const UDP_UNCONNECTED: u8 = 0x07;

/// A validated listener task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Only sockets bound to this port; `None` = every listening socket.
    pub port: Option<u16>,
}

/// Transport and family of a socket table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// `/proc/net/tcp`.
    Tcp,
    /// `/proc/net/tcp6`.
    Tcp6,
    /// `/proc/net/udp`.
    Udp,
    /// `/proc/net/udp6`.
    Udp6,
}

impl Protocol {
    /// All four tables.
    pub const ALL: [Protocol; 4] = [Protocol::Tcp, Protocol::Tcp6, Protocol::Udp, Protocol::Udp6];

    /// The table's file name, as `ss` names the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Tcp6 => "tcp6",
            Protocol::Udp => "udp",
            Protocol::Udp6 => "udp6",
        }
    }

    fn is_v6(self) -> bool {
        matches!(self, Protocol::Tcp6 | Protocol::Udp6)
    }

    fn is_tcp(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Tcp6)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a `/proc/net/{tcp,udp}[6]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketEntry {
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port (unspecified:0 when unconnected).
    pub remote: SocketAddr,
    /// Kernel socket state (`TCP_*` numbering; 0x0A LISTEN, 0x07 CLOSE).
    pub state: u8,
    /// Send queue, bytes (0 for listeners).
    pub tx_queue: u32,
    /// Receive queue: bytes, or for a TCP listener the connections waiting
    /// in the accept queue.
    pub rx_queue: u32,
    /// Socket inode, to find the owning process (0 when orphaned).
    pub inode: u64,
}

/// Parses one `/proc/net` socket table (header line skipped, bad lines
/// ignored, at most [`MAX_SOCKETS`] lines). Addresses are the kernel's
/// `%08X` of each 32-bit word in host byte order.
pub fn parse_proc_net(text: &str, v6: bool) -> Vec<SocketEntry> {
    text.lines()
        .skip(1)
        .take(MAX_SOCKETS)
        .filter_map(|line| parse_line(line, v6))
        .collect()
}

fn parse_line(line: &str, v6: bool) -> Option<SocketEntry> {
    let mut fields = line.split_whitespace();
    let _sl = fields.next()?;
    let local = parse_endpoint(fields.next()?, v6)?;
    let remote = parse_endpoint(fields.next()?, v6)?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    let (tx, rx) = fields.next()?.split_once(':')?;
    let tx_queue = u32::from_str_radix(tx, 16).ok()?;
    let rx_queue = u32::from_str_radix(rx, 16).ok()?;
    let inode = fields.nth(4)?.parse().ok()?;
    Some(SocketEntry {
        local,
        remote,
        state,
        tx_queue,
        rx_queue,
        inode,
    })
}

fn parse_endpoint(field: &str, v6: bool) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = if v6 {
        if addr.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
            let word = addr.get(i * 8..i * 8 + 8)?;
            chunk.copy_from_slice(&u32::from_str_radix(word, 16).ok()?.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        if addr.len() != 8 {
            return None;
        }
        IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_ne_bytes(),
        ))
    };
    Some(SocketAddr::new(ip, port))
}

/// A listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Which table it came from.
    pub protocol: Protocol,
    /// Bound address and port (0.0.0.0 / :: = every address).
    pub local: SocketAddr,
    /// `LISTEN` (TCP) or `UNCONN` (UDP), as `ss` prints it.
    pub state: &'static str,
    /// Owning process, when visible.
    pub owner: Option<Owner>,
    /// TCP listener: connections waiting to be accepted; UDP: bytes queued.
    pub recv_queue: u32,
    /// Bytes waiting to be sent.
    pub send_queue: u32,
    /// Socket inode.
    pub inode: u64,
}

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Process id (in the probe's PID namespace).
    pub pid: u32,
    /// Its `comm` (up to 15 bytes).
    pub process: String,
}

/// The listening sockets among `entries` of table `protocol`, on `port`
/// when given.
pub fn listeners(protocol: Protocol, entries: &[SocketEntry], port: Option<u16>) -> Vec<Listener> {
    let wanted_state = if protocol.is_tcp() {
        TCP_LISTEN
    } else {
        UDP_UNCONNECTED
    };
    entries
        .iter()
        .filter(|e| e.state == wanted_state)
        .filter(|e| port.is_none_or(|p| e.local.port() == p))
        .map(|e| Listener {
            protocol,
            local: e.local,
            state: if protocol.is_tcp() {
                "LISTEN"
            } else {
                "UNCONN"
            },
            owner: None,
            recv_queue: e.rx_queue,
            send_queue: e.tx_queue,
            inode: e.inode,
        })
        .collect()
}

/// The inode of a `/proc/PID/fd/N` link target `socket:[12345]`.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Reads one socket table of the calling thread's namespace.
pub fn read_table(protocol: Protocol) -> Result<Vec<SocketEntry>> {
    let path = PathBuf::from(PROC_NET).join(protocol.as_str());
    let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadProc { path, source })?;
    Ok(parse_proc_net(&text, protocol.is_v6()))
}

/// Runs the task: every listening socket of the calling thread's network
/// namespace (on `spec.port` when given), sorted by port, with owners found
/// by scanning `/proc/*/fd` (bounded: [`MAX_PROCESSES`], [`MAX_FDS`]).
/// A missing IPv6 table (IPv6 disabled) is skipped; a missing IPv4 one is
/// an error.
pub fn run(spec: &ListenerSpec) -> Result<Vec<Listener>> {
    let mut found = Vec::new();
    for protocol in Protocol::ALL {
        match read_table(protocol) {
            Ok(entries) => found.extend(listeners(protocol, &entries, spec.port)),
            Err(Error::ReadProc { source, .. })
                if protocol.is_v6() && source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let owners = socket_owners(Path::new("/proc"), &found);
    for listener in &mut found {
        listener.owner = owners.get(&listener.inode).cloned();
    }
    found.sort_by_key(|l| (l.local.port(), l.protocol, l.local.ip()));
    Ok(found)
}

/// Maps the listeners' inodes to the processes holding them, best effort.
fn socket_owners(proc_root: &Path, listeners: &[Listener]) -> HashMap<u64, Owner> {
    let mut wanted: HashMap<u64, Option<Owner>> = listeners
        .iter()
        .filter(|l| l.inode != 0)
        .map(|l| (l.inode, None))
        .collect();
    let mut owners = HashMap::new();
    if wanted.is_empty() {
        return owners;
    }
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return owners;
    };
    let mut fds_seen = 0usize;
    let pids = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .take(MAX_PROCESSES);
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            fds_seen += 1;
            if fds_seen > MAX_FDS {
                return owners;
            }
            let Some(inode) = std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| l.to_str().and_then(socket_inode))
            else {
                continue;
            };
            if let Some(slot @ None) = wanted.get_mut(&inode) {
                let process = std::fs::read_to_string(proc_root.join(format!("{pid}/comm")))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_default();
                let owner = Owner { pid, process };
                *slot = Some(owner.clone());
                owners.insert(inode, owner);
            }
        }
        if owners.len() == wanted.len() {
            break;
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TCP: &str = include_str!("facts/fixtures/proc_net_tcp.txt");
    const TCP6: &str = include_str!("facts/fixtures/proc_net_tcp6.txt");
    const UDP: &str = include_str!("facts/fixtures/proc_net_udp.txt");
    const UDP6: &str = include_str!("facts/fixtures/proc_net_udp6.txt");

    fn bound(protocol: Protocol, text: &str, port: Option<u16>) -> Vec<(String, u32)> {
        listeners(protocol, &parse_proc_net(text, protocol.is_v6()), port)
            .iter()
            .map(|l| (l.local.to_string(), l.recv_queue))
            .collect()
    }

    #[test]
    fn tcp_listeners_show_their_bound_address() {
        assert_eq!(
            bound(Protocol::Tcp, TCP, None),
            [
                ("0.0.0.0:8080".to_owned(), 1),
                ("127.0.0.1:8081".to_owned(), 0)
            ],
            "established sockets are not listeners; the accept queue holds 1"
        );
        assert_eq!(
            bound(Protocol::Tcp, TCP, Some(8081)),
            [("127.0.0.1:8081".to_owned(), 0)]
        );
        assert_eq!(
            bound(Protocol::Tcp6, TCP6, None),
            [("[::]:53".to_owned(), 0), ("[::1]:9090".to_owned(), 0)]
        );
    }

    #[test]
    fn udp_bound_sockets_are_unconn() {
        let udp = listeners(Protocol::Udp, &parse_proc_net(UDP, false), None);
        assert_eq!(udp.len(), 1);
        assert_eq!(udp[0].local.to_string(), "127.0.0.1:53");
        assert_eq!((udp[0].state, udp[0].inode), ("UNCONN", 43038));
        assert_eq!(
            bound(Protocol::Udp6, UDP6, None),
            [("[::]:5353".to_owned(), 0)]
        );
    }

    #[test]
    fn all_entries_parse_including_connected_ones() {
        let all = parse_proc_net(TCP, false);
        assert_eq!(all.len(), 4);
        assert_eq!(all[2].remote.to_string(), "127.0.0.1:51908");
        assert_eq!(all[2].state, 1);
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[43034]"), Some(43034));
        assert_eq!(socket_inode("pipe:[43034]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    #[test]
    fn own_listener_is_found_with_its_process() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let found = run(&ListenerSpec { port: Some(port) }).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].local, socket.local_addr().unwrap());
        let owner = found[0].owner.as_ref().expect("our own socket is visible");
        assert_eq!(owner.pid, std::process::id());
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in "(.{0,120}\n){0,6}", v6 in any::<bool>(), link in ".{0,30}") {
            let entries = parse_proc_net(&text, v6);
            let _ = listeners(Protocol::Tcp, &entries, Some(80));
            let _ = socket_inode(&link);
        }

        #[test]
        fn numeric_lines_never_panic(words in proptest::collection::vec("[0-9A-F:]{0,40}", 0..14)) {
            let line = format!("header\n{}", words.join(" "));
            let _ = parse_proc_net(&line, false);
            let _ = parse_proc_net(&line, true);
        }
    }
}
