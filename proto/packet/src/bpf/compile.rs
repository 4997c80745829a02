//! Compiling tcpdump expressions with libpcap on a dead handle (no device,
//! no privileges). Only the coordinator builds this (feature `libpcap`):
//! probes receive instructions and `meshctl` sends expressions, so neither
//! links libpcap.

use super::{BpfInsn, CompiledFilter, FilterError, LinkLayer, check_size, clamp_snaplen, validate};

/// libpcap's `DLT_RAW` on Linux: packets start at the IPv4/IPv6 header.
const DLT_RAW_LINUX: i32 = 12;

impl LinkLayer {
    fn dlt(self) -> pcap::Linktype {
        match self {
            LinkLayer::Ethernet => pcap::Linktype::ETHERNET,
            LinkLayer::RawIp => pcap::Linktype(DLT_RAW_LINUX),
        }
    }
}

/// Compiles `expr` for Ethernet interfaces, keeping at most `snaplen` bytes
/// of each accepted packet (every `ret` of a non-zero constant is lowered to
/// `snaplen`). An empty expression accepts every packet.
pub fn compile(expr: &str, snaplen: u32) -> Result<Vec<BpfInsn>, FilterError> {
    compile_for(expr, snaplen, LinkLayer::Ethernet)
}

/// Compiles `expr` for link layer `link`; see [`compile`]. An expression
/// over the size bounds ([`check_size`]) is refused before compiling.
pub fn compile_for(expr: &str, snaplen: u32, link: LinkLayer) -> Result<Vec<BpfInsn>, FilterError> {
    check_size(expr)?;
    let libpcap = |e: pcap::Error| FilterError::Libpcap {
        expr: expr.to_string(),
        message: e.to_string(),
    };
    let handle = pcap::Capture::dead(link.dlt()).map_err(libpcap)?;
    let program = handle.compile(expr, true).map_err(|e| match e {
        pcap::Error::PcapError(message) => FilterError::Invalid {
            expr: expr.to_string(),
            message: clean_message(&message),
        },
        pcap::Error::InvalidInputString => FilterError::Invalid {
            expr: expr.to_string(),
            message: "the expression contains a NUL character".to_string(),
        },
        other => libpcap(other),
    })?;
    let mut insns = program
        .get_instructions()
        .iter()
        .map(|insn| parse_insn(&insn.to_string()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| FilterError::Libpcap {
            expr: expr.to_string(),
            message: "unexpected instruction format".to_string(),
        })?;
    clamp_snaplen(&mut insns, snaplen);
    validate(expr, &insns)?;
    Ok(insns)
}

/// Compiles `expr` for every [`LinkLayer`].
pub fn compile_filter(expr: &str, snaplen: u32) -> Result<CompiledFilter, FilterError> {
    Ok(CompiledFilter {
        expr: expr.to_string(),
        ethernet: compile_for(expr, snaplen, LinkLayer::Ethernet)?,
        raw_ip: compile_for(expr, snaplen, LinkLayer::RawIp)?,
    })
}

/// Strips libpcap's generic prefix, keeping the reason.
fn clean_message(message: &str) -> String {
    let message = message.trim();
    message
        .strip_prefix("can't parse filter expression: ")
        .unwrap_or(message)
        .to_string()
}

/// Parses the `code jt jf k` form the pcap crate prints (its only accessor).
fn parse_insn(text: &str) -> Option<BpfInsn> {
    let mut fields = text.split_whitespace();
    let insn = BpfInsn {
        code: fields.next()?.parse().ok()?,
        jt: fields.next()?.parse().ok()?,
        jf: fields.next()?.parse().ok()?,
        k: fields.next()?.parse().ok()?,
    };
    fields.next().is_none().then_some(insn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::tests::ICMP_ETHERNET;

    #[test]
    fn oversized_filters_are_refused_before_compiling() {
        let terms: Vec<String> = (0..6000)
            .map(|i| format!("host 198.18.{}.{}", i / 250, i % 250))
            .collect();
        let huge = terms.join(" or ");
        let started = std::time::Instant::now();
        let err = compile(&huge, 128).expect_err("must be refused");
        assert!(matches!(err, FilterError::TooLarge { .. }), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_millis(50),
            "{:?}",
            started.elapsed()
        );
        let short: Vec<&str> = (0..64).map(|_| "icmp").collect();
        assert!(
            compile(&short.join(" or "), 128).is_ok(),
            "64 terms compile"
        );
        let sixty_five: Vec<&str> = (0..65).map(|_| "icmp").collect();
        assert!(matches!(
            compile(&sixty_five.join(" or "), 128),
            Err(FilterError::TooLarge { .. })
        ));
        let deep = format!("{}icmp{}", "(".repeat(17), ")".repeat(17));
        assert!(matches!(
            compile(&deep, 128),
            Err(FilterError::TooLarge { .. })
        ));
        assert!(compile(&format!("{}icmp{}", "(".repeat(16), ")".repeat(16)), 128).is_ok());
    }

    #[test]
    fn bpf_icmp_compiles_like_tcpdump_with_the_snaplen() {
        assert_eq!(compile("icmp", 128).expect("compiles"), ICMP_ETHERNET);
    }

    #[test]
    fn bpf_raw_ip_programs_read_the_ip_header_at_offset_zero() {
        let program = compile_for("icmp", 128, LinkLayer::RawIp).expect("compiles");
        // Loads the protocol byte at IP offset 9, no Ethernet type check.
        assert!(
            program.iter().any(|i| i.code == 0x30 && i.k == 9),
            "{program:?}"
        );
        assert!(!program.iter().any(|i| i.k == 23), "{program:?}");
    }

    #[test]
    fn bpf_empty_expression_accepts_everything_up_to_the_snaplen() {
        assert_eq!(
            compile("", 96).expect("compiles"),
            [BpfInsn {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: 96
            }]
        );
        let both = compile_filter("", 262_144).expect("compiles");
        assert_eq!(both.program(LinkLayer::RawIp).len(), 1);
        assert_eq!(both.program(LinkLayer::Ethernet)[0].k, 65_535);
    }

    #[test]
    fn bpf_a_bad_expression_names_itself_and_libpcaps_reason() {
        let err = compile("tcp prot 80", 128).expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "invalid filter 'tcp prot 80': syntax error"
        );
        assert!(err.hint().contains("pcap-filter"));
        let err = compile("tcp port 99999", 128).expect_err("must fail");
        assert!(
            matches!(&err, FilterError::Invalid { message, .. } if message.contains("99999")),
            "{err}"
        );
        let err = compile("icmp\0", 128).expect_err("must fail");
        assert!(matches!(err, FilterError::Invalid { .. }), "{err}");
    }
}
