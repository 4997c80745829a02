//! Captured frames and ICMP datagrams: the first byte picks the link layer,
//! the rest goes through the decoder (tunnels included), the IPv4/ICMP views
//! and the echo classifier the probe runs on every reply. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probemesh_packet::decode::decode;
use probemesh_packet::frame::LinkKind;
use probemesh_packet::icmp::{EchoId, IcmpView, classify_echo};
use probemesh_packet::ipv4::Ipv4View;

const LINKS: [LinkKind; 4] = [
    LinkKind::Ethernet,
    LinkKind::RawIp,
    LinkKind::LinuxSll,
    LinkKind::LinuxSll2,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, frame)) = data.split_first() else {
        return;
    };
    let link = LINKS[usize::from(selector) % LINKS.len()];
    if let Ok(packet) = decode(link, frame) {
        let _ = packet.flow().to_string();
        let _ = packet.outer_addresses();
    }
    if let Ok(ip) = Ipv4View::new(frame) {
        let _ = ip.header();
        if let Ok(icmp) = IcmpView::new(ip.payload()) {
            let _ = (icmp.next_hop_mtu(), icmp.checksum_ok(), icmp.body().len());
        }
    }
    if let Some(response) = classify_echo(frame, EchoId(u16::from(selector))) {
        let _ = format!("{response:?}");
    }
});
