//! probemesh-packet: the one packet library.
//!
//! Everything that reads or writes bytes of a packet or a capture file lives
//! here, once: the Internet checksum ([`checksum`]), pcapng reading and the
//! blocks probemesh writes ([`pcapng`]), and classic BPF programs and their
//! compilation from tcpdump expressions ([`bpf`]; compiling needs the
//! `libpcap` feature). It does no I/O: sockets and rings belong to the
//! probe's platform layer, files to whoever writes them.

pub mod bpf;
pub mod checksum;
pub mod pcapng;
