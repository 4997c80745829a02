//! probemesh-packet: the one packet library.
//!
//! Everything that reads or writes bytes of a packet or a capture file lives
//! here, once: classic BPF programs and their compilation from tcpdump
//! expressions ([`bpf`]; compiling needs the `libpcap` feature). It does no
//! I/O: sockets and rings belong to the probe's platform layer.

pub mod bpf;
