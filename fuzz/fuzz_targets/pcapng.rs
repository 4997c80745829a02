//! Capture files as the coordinator's correlator and `meshctl capture`'s
//! merge read them: every record of any byte string, never a panic, and
//! every frame through the decoder of its interface's link type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probemesh_packet::decode::decode;
use probemesh_packet::frame::LinkKind;
use probemesh_packet::pcapng::{Reader, Record};

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = Reader::new(data) else {
        return;
    };
    let mut links = Vec::new();
    for record in reader {
        match record {
            Ok(Record::Interface(interface)) => {
                let _ = interface.name();
                links.push(LinkKind::from_datalink(interface.link()));
            }
            Ok(Record::Packet(packet)) => {
                let link = links.get(packet.interface).copied().flatten();
                assert!(
                    packet.interface < links.len(),
                    "a packet of an unread interface"
                );
                if let Some(link) = link {
                    let _ = decode(link, packet.data());
                }
            }
            Err(_) => break,
        }
    }
});
