//! Capture filter expressions: the size check, then libpcap's compiler for
//! both link layers on what passes it. Never a panic; a compiled program
//! passes `validate` and never keeps more than the snap length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probemesh_packet::bpf::{self, MAX_FILTER_BYTES};

const SNAPLEN: u32 = 256;

fuzz_target!(|data: &[u8]| {
    let Ok(expr) = std::str::from_utf8(data) else {
        return;
    };
    if expr.len() > MAX_FILTER_BYTES || bpf::check_size(expr).is_err() {
        return;
    }
    if let Ok(filter) = bpf::compile_filter(expr, SNAPLEN) {
        for program in [&filter.ethernet, &filter.raw_ip] {
            assert!(bpf::validate(expr, program).is_ok(), "{expr}");
            assert!(
                program.iter().all(|i| i.code != 0x06 || i.k <= SNAPLEN),
                "{expr}"
            );
        }
    }
});
