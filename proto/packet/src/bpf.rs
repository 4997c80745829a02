//! Capture filters: tcpdump expressions (pcap-filter(7)) compiled to classic
//! BPF programs, the form the kernel runs on an `AF_PACKET` socket
//! (`SO_ATTACH_FILTER`).
//!
//! Compilation uses libpcap through a *dead* handle (no device, no
//! privileges), behind the `libpcap` feature that only the coordinator
//! enables ([`compile`]); probes receive instructions and never link libpcap. This module is not a BPF verifier:
//! the kernel checks the program when it is attached, [`validate`] only
//! rejects what can be told without running it, with a readable message.

use std::fmt;

/// The kernel's limit on the length of a classic BPF program (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

/// Longest filter expression compiled (bytes). Real capture filters are a
/// line; libpcap's compile time and memory grow faster than linearly with
/// the expression, so the bound is checked before any work.
pub const MAX_FILTER_BYTES: usize = 1024;
/// Most primitives joined by `and`/`or` (and their `&&`/`||` spellings).
pub const MAX_FILTER_TERMS: usize = 64;
/// Deepest nesting of parentheses.
pub const MAX_FILTER_DEPTH: usize = 16;

/// `BPF_RET | BPF_K`: return the constant `k` (bytes to keep; 0 drops).
pub(crate) const RET_K: u16 = 0x06;
/// Mask of the instruction class bits of `code`.
const CLASS_MASK: u16 = 0x07;
/// Class `BPF_RET`.
const CLASS_RET: u16 = 0x06;
/// Class `BPF_JMP`.
const CLASS_JMP: u16 = 0x05;
/// `BPF_JMP | BPF_JA`: unconditional jump by `k`.
const JMP_JA: u16 = 0x05;

/// One classic BPF instruction (`struct sock_filter`), in host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BpfInsn {
    /// Opcode: class, size, mode and source bits.
    pub code: u16,
    /// Instructions to skip when a conditional jump is true.
    pub jt: u8,
    /// Instructions to skip when a conditional jump is false.
    pub jf: u8,
    /// The constant operand (offset, immediate, or bytes kept by `ret`).
    pub k: u32,
}

impl BpfInsn {
    /// Packs the instruction into one `u64` for the wire (a `repeated fixed64`):
    /// `code` in bits 63..48, `jt` in 47..40, `jf` in 39..32, `k` in 31..0.
    pub const fn to_wire(self) -> u64 {
        ((self.code as u64) << 48)
            | ((self.jt as u64) << 40)
            | ((self.jf as u64) << 32)
            | self.k as u64
    }

    /// Unpacks an instruction packed by [`BpfInsn::to_wire`]; every `u64` is
    /// some instruction, [`validate`] tells whether the program makes sense.
    pub const fn from_wire(word: u64) -> Self {
        Self {
            code: (word >> 48) as u16,
            jt: (word >> 40) as u8,
            jf: (word >> 32) as u8,
            k: word as u32,
        }
    }
}

impl fmt::Display for BpfInsn {
    /// The `tcpdump -dd` form: `{ 0x28, 0, 0, 0x0000000c }`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{ 0x{:x}, {}, {}, 0x{:08x} }}",
            self.code, self.jt, self.jf, self.k
        )
    }
}

/// Which header a program expects at offset 0 of the packet it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkLayer {
    /// An Ethernet header (Ethernet, veth, bridges, VXLAN devices, `lo`).
    Ethernet,
    /// The IP header directly (IPIP/SIT tunnels, WireGuard, tun devices).
    RawIp,
}

/// A filter expression compiled for every link layer a probe may meet, so
/// the probe picks the program that matches each interface it captures on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFilter {
    /// The expression as the user wrote it (empty: every packet).
    pub expr: String,
    /// The program for interfaces with an Ethernet header.
    pub ethernet: Vec<BpfInsn>,
    /// The program for interfaces whose packets start at the IP header.
    pub raw_ip: Vec<BpfInsn>,
}

impl CompiledFilter {
    /// The program to attach on an interface of link layer `link`.
    pub fn program(&self, link: LinkLayer) -> &[BpfInsn] {
        match link {
            LinkLayer::Ethernet => &self.ethernet,
            LinkLayer::RawIp => &self.raw_ip,
        }
    }
}

/// Why a filter expression or program was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// libpcap could not compile the expression; `message` is its reason
    /// (e.g. `syntax error`, `illegal port number 99999 > 65535`). Not
    /// retryable: the user must change the expression.
    #[error("invalid filter '{expr}': {message}")]
    Invalid {
        /// The expression as given.
        expr: String,
        /// libpcap's message, without its "can't parse filter expression" prefix.
        message: String,
    },
    /// libpcap itself failed (no memory for a dead handle, odd output).
    #[error("compiling filter '{expr}': libpcap: {message}")]
    Libpcap {
        /// The expression as given.
        expr: String,
        /// What went wrong.
        message: String,
    },
    /// The expression is over a size bound; refused before compiling.
    #[error("filter refused before compiling: {reason}")]
    TooLarge {
        /// Which bound, and by how much.
        reason: String,
    },
    /// The program cannot be attached as it is (too long, empty, jumps out
    /// of range, does not end in `ret`).
    #[error("filter '{expr}' is not a usable BPF program: {reason}")]
    Program {
        /// The expression the program claims to come from.
        expr: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl FilterError {
    /// A line that helps the user fix the expression, to print under the error.
    pub fn hint(&self) -> &'static str {
        match self {
            FilterError::Invalid { .. } => {
                "filters use tcpdump's expression language (man 7 pcap-filter), e.g. 'icmp or tcp port 80', 'host 198.18.0.11 and udp port 8472'"
            }
            FilterError::Libpcap { .. } => "check that libpcap is installed (libpcap0.8)",
            FilterError::TooLarge { .. } => {
                "capture filters are one line: narrow it to the hosts and ports of the path (e.g. 'host 198.18.0.11 and tcp port 80'), or capture with a broader filter and filter when reading"
            }
            FilterError::Program { .. } => {
                "compile the filter with meshctl or the coordinator; programs are limited to 4096 instructions"
            }
        }
    }
}

/// Checks `expr` against [`MAX_FILTER_BYTES`], [`MAX_FILTER_TERMS`] and
/// [`MAX_FILTER_DEPTH`] in one pass, before any compiling.
pub fn check_size(expr: &str) -> Result<(), FilterError> {
    let too_large = |reason: String| Err(FilterError::TooLarge { reason });
    if expr.len() > MAX_FILTER_BYTES {
        return too_large(format!("{} bytes, at most {MAX_FILTER_BYTES}", expr.len()));
    }
    let joins = expr
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|w| matches!(*w, "and" | "or" | "&&" | "||"))
        .count();
    if joins + 1 > MAX_FILTER_TERMS {
        return too_large(format!(
            "{} terms joined by and/or, at most {MAX_FILTER_TERMS}",
            joins + 1
        ));
    }
    let mut depth = 0usize;
    for c in expr.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_FILTER_DEPTH {
            return too_large(format!("parentheses nested over {MAX_FILTER_DEPTH} deep"));
        }
    }
    Ok(())
}

/// Lowers every `ret #k` with `k > snaplen` to `ret #snaplen`, so the kernel
/// keeps at most `snaplen` bytes of each packet. `ret #0` (drop) is kept.
pub fn clamp_snaplen(program: &mut [BpfInsn], snaplen: u32) {
    for insn in program.iter_mut().filter(|i| i.code == RET_K) {
        insn.k = insn.k.min(snaplen);
    }
}

/// Checks what can be checked without the kernel: 1..=[`MAX_INSNS`]
/// instructions, every jump lands inside the program, and the last
/// instruction returns. `expr` only labels the error.
pub fn validate(expr: &str, program: &[BpfInsn]) -> Result<(), FilterError> {
    let refuse = |reason: String| FilterError::Program {
        expr: expr.to_string(),
        reason,
    };
    if program.is_empty() {
        return Err(refuse("no instructions".to_string()));
    }
    if program.len() > MAX_INSNS {
        return Err(refuse(format!(
            "{} instructions, more than the kernel's limit of {MAX_INSNS}",
            program.len()
        )));
    }
    for (pc, insn) in program.iter().enumerate() {
        if insn.code & CLASS_MASK != CLASS_JMP {
            continue;
        }
        let remaining = program.len() - pc - 1;
        let farthest = if insn.code == JMP_JA {
            usize::try_from(insn.k).unwrap_or(usize::MAX)
        } else {
            usize::from(insn.jt.max(insn.jf))
        };
        if farthest >= remaining {
            return Err(refuse(format!("instruction {pc} jumps past the end")));
        }
    }
    match program.last() {
        Some(last) if last.code & CLASS_MASK == CLASS_RET => Ok(()),
        _ => Err(refuse("the last instruction does not return".to_string())),
    }
}

#[cfg(feature = "libpcap")]
mod compile;
#[cfg(feature = "libpcap")]
pub use compile::{compile, compile_filter, compile_for};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `tcpdump -dd icmp` on Ethernet with snaplen 128 after clamping.
    pub(crate) const ICMP_ETHERNET: [BpfInsn; 6] = [
        BpfInsn {
            code: 0x28,
            jt: 0,
            jf: 0,
            k: 12,
        },
        BpfInsn {
            code: 0x15,
            jt: 0,
            jf: 3,
            k: 0x800,
        },
        BpfInsn {
            code: 0x30,
            jt: 0,
            jf: 0,
            k: 23,
        },
        BpfInsn {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: 1,
        },
        BpfInsn {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 128,
        },
        BpfInsn {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];

    #[test]
    fn bpf_instructions_survive_the_wire_packing() {
        for insn in ICMP_ETHERNET {
            assert_eq!(BpfInsn::from_wire(insn.to_wire()), insn);
        }
        assert_eq!(ICMP_ETHERNET[1].to_wire(), 0x0015_0003_0000_0800);
        assert_eq!(ICMP_ETHERNET[1].to_string(), "{ 0x15, 0, 3, 0x00000800 }");
    }

    #[test]
    fn bpf_validate_refuses_what_the_kernel_would() {
        assert!(validate("x", &ICMP_ETHERNET).is_ok());
        assert!(validate("x", &[]).is_err());
        let mut jumps_out = ICMP_ETHERNET;
        jumps_out[1].jf = 4;
        let err = validate("x", &jumps_out).expect_err("jump past the end");
        assert!(err.to_string().contains("instruction 1 jumps"), "{err}");
        let no_ret = &ICMP_ETHERNET[..4];
        assert!(validate("x", no_ret).is_err());
        let long = vec![ICMP_ETHERNET[5]; MAX_INSNS + 1];
        assert!(validate("x", &long).is_err());
        let ja = [
            BpfInsn {
                code: JMP_JA,
                jt: 0,
                jf: 0,
                k: 1,
            },
            ICMP_ETHERNET[5],
        ];
        assert!(validate("x", &ja).is_err());
    }

    proptest! {
        #[test]
        fn bpf_wire_packing_round_trips(word: u64) {
            prop_assert_eq!(BpfInsn::from_wire(word).to_wire(), word);
        }

        #[test]
        fn bpf_clamping_never_raises_a_return(k: u32, snaplen in 64u32..=262_144) {
            let mut program = [BpfInsn { code: RET_K, jt: 0, jf: 0, k }];
            clamp_snaplen(&mut program, snaplen);
            prop_assert_eq!(program[0].k, k.min(snaplen));
        }
    }
}
