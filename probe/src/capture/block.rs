//! The layout of a `TPACKET_V3` ring block, parsed from plain bytes (no
//! I/O, no `unsafe`): a `tpacket_block_desc` header, then `num_pkts`
//! packets, each a `tpacket3_hdr`, a `sockaddr_ll`, and the captured bytes.
//! Every offset is checked against the block, so a corrupt block ends the
//! iteration with a [`BlockError`] instead of reading out of bounds.

use crate::platform::Timestamp;

/// Offset of `tpacket_hdr_v1.num_pkts` in the block.
const NUM_PKTS: usize = 12;
/// Offset of `tpacket_hdr_v1.offset_to_first_pkt`.
const OFFSET_TO_FIRST_PKT: usize = 16;
/// Offset of `tpacket_hdr_v1.blk_len` (bytes used, header included).
const BLK_LEN: usize = 20;
/// Size of the block header (`tpacket_block_desc`).
pub const BLOCK_HEADER_LEN: usize = 48;
/// Size of `tpacket3_hdr`, which is also where `sockaddr_ll` starts.
pub const PACKET_HEADER_LEN: usize = 48;
/// Size of `sockaddr_ll`.
const SOCKADDR_LL_LEN: usize = 20;
/// Offset of `sockaddr_ll.sll_pkttype` within it.
const SLL_PKTTYPE: usize = 10;
/// `TP_STATUS_VLAN_VALID`: `tp_vlan_tci` holds the tag the kernel stripped.
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;

/// Where a packet was going, from `sockaddr_ll.sll_pkttype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Addressed to this host (`PACKET_HOST`).
    Host,
    /// Link-layer broadcast (`PACKET_BROADCAST`).
    Broadcast,
    /// Link-layer multicast (`PACKET_MULTICAST`).
    Multicast,
    /// Addressed to another host, seen in promiscuous mode (`PACKET_OTHERHOST`).
    OtherHost,
    /// Sent by this host (`PACKET_OUTGOING`).
    Outgoing,
    /// Any other value (loopback, user, kernel).
    Other(u8),
}

impl PacketType {
    fn from_raw(raw: u8) -> Self {
        match raw {
            0 => PacketType::Host,
            1 => PacketType::Broadcast,
            2 => PacketType::Multicast,
            3 => PacketType::OtherHost,
            4 => PacketType::Outgoing,
            other => PacketType::Other(other),
        }
    }

    /// The pcapng `epb_flags` word: direction in bits 0-1 (1 inbound,
    /// 2 outbound) and the reception type in bits 2-4.
    pub fn epb_flags(self) -> u32 {
        match self {
            PacketType::Host => 0b001 << 2 | 1,
            PacketType::Multicast => 0b010 << 2 | 1,
            PacketType::Broadcast => 0b011 << 2 | 1,
            PacketType::OtherHost => 0b100 << 2 | 1,
            PacketType::Outgoing => 2,
            PacketType::Other(_) => 0,
        }
    }
}

/// One captured packet, borrowed from its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingPacket<'a> {
    /// When the kernel received or sent it (`tp_sec`/`tp_nsec`, `CLOCK_REALTIME`).
    pub timestamp: Timestamp,
    /// Length on the wire, bytes (`tp_len`).
    pub orig_len: u32,
    /// The captured bytes (at most the snap length), from the link header.
    pub data: &'a [u8],
    /// Direction and addressing.
    pub packet_type: PacketType,
    /// The VLAN tag the kernel stripped, when there was one.
    pub vlan_tci: Option<u16>,
}

/// Why a block could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The buffer is shorter than a block header.
    #[error("ring block of {0} bytes is shorter than its header")]
    Short(usize),
    /// `blk_len` or the first packet's offset lies outside the buffer.
    #[error(
        "ring block header is inconsistent: blk_len {blk_len}, first packet at {first}, buffer {len} bytes"
    )]
    Header {
        /// `blk_len` as read.
        blk_len: usize,
        /// `offset_to_first_pkt` as read.
        first: usize,
        /// The buffer's length.
        len: usize,
    },
    /// A packet's header or data lies outside the block.
    #[error("packet {index} of the ring block lies outside it (at offset {offset})")]
    Packet {
        /// Position of the packet in the block.
        index: u32,
        /// Its offset from the start of the block.
        offset: usize,
    },
}

/// Reads the packets of one block: checks the header, then yields each
/// packet (or one error, after which it stops).
pub fn parse_block(block: &[u8]) -> Result<BlockPackets<'_>, BlockError> {
    if block.len() < BLOCK_HEADER_LEN {
        return Err(BlockError::Short(block.len()));
    }
    let num_pkts = read_u32(block, NUM_PKTS).unwrap_or(0);
    let first = read_u32(block, OFFSET_TO_FIRST_PKT).unwrap_or(0) as usize;
    let blk_len = read_u32(block, BLK_LEN).unwrap_or(0) as usize;
    if blk_len > block.len() || (num_pkts > 0 && (first < BLOCK_HEADER_LEN || first >= blk_len)) {
        return Err(BlockError::Header {
            blk_len,
            first,
            len: block.len(),
        });
    }
    Ok(BlockPackets {
        block: &block[..blk_len],
        next_offset: first,
        index: 0,
        count: num_pkts,
    })
}

/// Iterator over the packets of a block; see [`parse_block`].
#[derive(Debug, Clone)]
pub struct BlockPackets<'a> {
    block: &'a [u8],
    next_offset: usize,
    index: u32,
    count: u32,
}

impl<'a> Iterator for BlockPackets<'a> {
    type Item = Result<RingPacket<'a>, BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        let index = self.index;
        let offset = self.next_offset;
        let parsed = parse_packet(self.block, offset);
        match parsed {
            Some((packet, next)) => {
                self.index += 1;
                let last = self.index == self.count;
                if !last {
                    match next.and_then(|n| offset.checked_add(n)) {
                        Some(n) if n < self.block.len() => self.next_offset = n,
                        _ => {
                            // The next packet cannot be found: yield this one,
                            // then report the break once.
                            self.count = self.index + 1;
                            self.next_offset = usize::MAX;
                        }
                    }
                }
                Some(Ok(packet))
            }
            None => {
                self.index = self.count;
                Some(Err(BlockError::Packet { index, offset }))
            }
        }
    }
}

/// Parses the packet at `offset`: the packet and the distance to the next
/// one (`None` when `tp_next_offset` is 0). `None` when out of bounds.
fn parse_packet(block: &[u8], offset: usize) -> Option<(RingPacket<'_>, Option<usize>)> {
    let header = block.get(offset..offset.checked_add(PACKET_HEADER_LEN + SOCKADDR_LL_LEN)?)?;
    let next = read_u32(header, 0)? as usize;
    let sec = read_u32(header, 4)?;
    let nsec = read_u32(header, 8)?;
    let snaplen = read_u32(header, 12)? as usize;
    let orig_len = read_u32(header, 16)?;
    let status = read_u32(header, 20)?;
    let mac = usize::from(read_u16(header, 24)?);
    let vlan_tci = read_u32(header, 32)?;
    let pkttype = *header.get(PACKET_HEADER_LEN + SLL_PKTTYPE)?;
    let start = offset.checked_add(mac)?;
    let data = block.get(start..start.checked_add(snaplen)?)?;
    let timestamp = i64::from(sec) * 1_000_000_000 + i64::from(nsec.min(999_999_999));
    let packet = RingPacket {
        timestamp: Timestamp::from_nanos(timestamp),
        orig_len,
        data,
        packet_type: PacketType::from_raw(pkttype),
        vlan_tci: (status & TP_STATUS_VLAN_VALID != 0).then_some(vlan_tci as u16),
    };
    Some((packet, (next != 0).then_some(next)))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(raw.try_into().ok()?))
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let raw = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes(raw.try_into().ok()?))
}

/// Builds blocks in the kernel's layout, for tests of the parser and of
/// what consumes it.
#[cfg(test)]
pub(crate) mod synthetic {
    use super::*;

    /// One packet to lay out: timestamp (s, ns), wire length, data, pkttype.
    pub(crate) struct Spec<'a> {
        pub sec: u32,
        pub nsec: u32,
        pub orig_len: u32,
        pub data: &'a [u8],
        pub pkttype: u8,
    }

    /// A block of `size` bytes holding `packets`, as the kernel writes it.
    pub(crate) fn block(size: usize, packets: &[Spec<'_>]) -> Vec<u8> {
        let mut block = vec![0u8; size];
        let put =
            |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        put(&mut block, 0, 3);
        put(&mut block, 8, 1);
        put(&mut block, NUM_PKTS, packets.len() as u32);
        put(&mut block, OFFSET_TO_FIRST_PKT, BLOCK_HEADER_LEN as u32);
        let mut offset = BLOCK_HEADER_LEN;
        for (i, p) in packets.iter().enumerate() {
            let mac = PACKET_HEADER_LEN + 32;
            let total = (mac + p.data.len()).next_multiple_of(16);
            let next = if i + 1 == packets.len() {
                0
            } else {
                total as u32
            };
            put(&mut block, offset, next);
            put(&mut block, offset + 4, p.sec);
            put(&mut block, offset + 8, p.nsec);
            put(&mut block, offset + 12, p.data.len() as u32);
            put(&mut block, offset + 16, p.orig_len);
            put(&mut block, offset + 20, 1);
            block[offset + 24..offset + 26].copy_from_slice(&(mac as u16).to_ne_bytes());
            block[offset + PACKET_HEADER_LEN + SLL_PKTTYPE] = p.pkttype;
            block[offset + mac..offset + mac + p.data.len()].copy_from_slice(p.data);
            offset += total;
        }
        put(&mut block, BLK_LEN, offset as u32);
        block
    }
}

#[cfg(test)]
mod tests {
    use super::synthetic::{Spec, block};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_block_yields_its_packets_with_times_lengths_and_directions() {
        let buf = block(
            4096,
            &[
                Spec {
                    sec: 1_800_000_000,
                    nsec: 123_456_789,
                    orig_len: 98,
                    data: &[0xaa; 64],
                    pkttype: 0,
                },
                Spec {
                    sec: 1_800_000_001,
                    nsec: 5,
                    orig_len: 1514,
                    data: &[0xbb; 128],
                    pkttype: 4,
                },
                Spec {
                    sec: 1_800_000_001,
                    nsec: 6,
                    orig_len: 60,
                    data: &[0xcc; 60],
                    pkttype: 1,
                },
            ],
        );
        let packets: Vec<_> = parse_block(&buf)
            .expect("valid block")
            .collect::<Result<_, _>>()
            .expect("valid packets");
        assert_eq!(packets.len(), 3);
        assert_eq!(packets[0].timestamp.as_nanos(), 1_800_000_000_123_456_789);
        assert_eq!((packets[0].orig_len, packets[0].data.len()), (98, 64));
        assert!(packets[0].data.iter().all(|&b| b == 0xaa));
        assert_eq!(packets[0].packet_type, PacketType::Host);
        assert_eq!(packets[1].packet_type, PacketType::Outgoing);
        assert_eq!((packets[1].orig_len, packets[1].data.len()), (1514, 128));
        assert_eq!(packets[2].packet_type, PacketType::Broadcast);
        assert_eq!(packets[2].vlan_tci, None);
    }

    #[test]
    fn an_empty_block_yields_nothing() {
        let buf = block(4096, &[]);
        assert_eq!(parse_block(&buf).expect("valid").count(), 0);
    }

    #[test]
    fn corrupt_blocks_end_with_an_error_not_a_panic() {
        assert_eq!(parse_block(&[0; 10]).err(), Some(BlockError::Short(10)));
        let mut buf = block(
            4096,
            &[Spec {
                sec: 1,
                nsec: 2,
                orig_len: 60,
                data: &[1; 60],
                pkttype: 0,
            }],
        );
        buf[BLK_LEN..BLK_LEN + 4].copy_from_slice(&10_000u32.to_ne_bytes());
        assert!(matches!(parse_block(&buf), Err(BlockError::Header { .. })));

        let mut buf = block(
            4096,
            &[Spec {
                sec: 1,
                nsec: 2,
                orig_len: 60,
                data: &[1; 60],
                pkttype: 0,
            }],
        );
        // Claims a snap length running past the block.
        let at = BLOCK_HEADER_LEN + 12;
        buf[at..at + 4].copy_from_slice(&5000u32.to_ne_bytes());
        let mut packets = parse_block(&buf).expect("header is fine");
        assert!(matches!(
            packets.next(),
            Some(Err(BlockError::Packet { index: 0, .. }))
        ));
        assert!(packets.next().is_none());

        // Announces two packets but the first has no successor.
        let mut buf = block(
            4096,
            &[Spec {
                sec: 1,
                nsec: 2,
                orig_len: 60,
                data: &[1; 60],
                pkttype: 0,
            }],
        );
        buf[NUM_PKTS..NUM_PKTS + 4].copy_from_slice(&2u32.to_ne_bytes());
        let results: Vec<_> = parse_block(&buf).expect("header is fine").collect();
        assert_eq!(results.len(), 2);
        assert!(results[0].is_ok());
        assert!(results[1].is_err());
    }

    #[test]
    fn epb_flags_follow_pcapng() {
        assert_eq!(PacketType::Host.epb_flags(), 0b00101);
        assert_eq!(PacketType::Outgoing.epb_flags(), 0b10);
        assert_eq!(PacketType::Broadcast.epb_flags(), 0b01101);
        assert_eq!(PacketType::Other(7).epb_flags(), 0);
    }

    proptest! {
        #[test]
        fn the_parser_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(packets) = parse_block(&bytes) {
                for p in packets.take(4096).flatten() {
                    prop_assert!(p.data.len() <= bytes.len());
                }
            }
        }

        #[test]
        fn the_parser_never_panics_on_mangled_blocks(
            flips in proptest::collection::vec((0usize..1024, any::<u8>()), 0..16),
        ) {
            let mut buf = block(1024, &[
                Spec { sec: 1, nsec: 2, orig_len: 98, data: &[7; 98], pkttype: 0 },
                Spec { sec: 3, nsec: 4, orig_len: 60, data: &[8; 60], pkttype: 4 },
            ]);
            for (at, value) in flips {
                buf[at] = value;
            }
            if let Ok(packets) = parse_block(&buf) {
                // Offsets only grow, so a 1 KiB block holds at most 1 KiB of items.
                prop_assert!(packets.count() <= 1024);
            }
        }
    }
}
