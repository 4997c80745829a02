//! The run file's format, sans-IO: every record is a frame
//!
//! ```text
//! magic "\0pmr" (4 bytes) | length (u32 LE) | CRC-32 (u32 LE) of length and payload | payload (a RunRecord)
//! ```
//!
//! so that a damaged record is found and skipped, and reading picks up again
//! at the next frame whose checksum holds (the records after a damaged one are
//! kept). Files written before the frames (length-delimited records, no
//! checksum) are read by [`scan_legacy`], which cannot resynchronise: it keeps
//! what comes before the first damaged record.
//!
//! It reads and builds bytes only; opening, writing and syncing the file is
//! [`super::RunStore`]'s.

use probemesh_proto::pb;
use prost::Message as _;

/// Starts every frame. The leading zero byte never starts a legacy file (a
/// legacy record of length zero has no run id, and none was ever written).
pub const MAGIC: [u8; 4] = *b"\0pmr";

/// Magic, length and checksum.
pub const HEADER_LEN: usize = 12;

/// Largest payload a frame may claim (bytes); a larger length is damage. Far
/// above any record: replies are capped at 4 MiB.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// `record` as one frame.
pub fn encode(record: &pb::RunRecord) -> Vec<u8> {
    let payload = record.encode_to_vec();
    // Records are far below 4 GiB (they travel in 4 MiB gRPC messages).
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&len);
    frame.extend_from_slice(&checksum(len, &payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// A stretch of the file that held no readable record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset where it starts.
    pub offset: usize,
    /// How many bytes were skipped.
    pub skipped: usize,
}

/// What a run file holds.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every readable record, in file order.
    pub records: Vec<pb::RunRecord>,
    /// Every damaged stretch, in file order.
    pub damaged: Vec<Damage>,
}

impl Scan {
    /// Where the last readable record ends: a damaged stretch past it (a
    /// torn write at the end) holds nothing to keep.
    pub fn readable_end(&self, file_len: usize) -> usize {
        match self.damaged.last() {
            Some(d) if d.offset + d.skipped == file_len => d.offset,
            _ => file_len,
        }
    }
}

/// True when `bytes` were written before the frames: not empty, not starting
/// with a frame, and holding no frame anywhere (a framed file whose first
/// frame is damaged still has others).
pub fn is_legacy(bytes: &[u8]) -> bool {
    !bytes.is_empty() && !bytes.starts_with(&MAGIC) && next_frame(bytes, 0).is_none()
}

/// Reads a framed file: every frame whose checksum holds and whose payload
/// decodes, and the damaged stretches between them.
pub fn scan(bytes: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut at = 0;
    while at < bytes.len() {
        if let Some((record, len)) = frame_at(bytes, at) {
            scan.records.push(record);
            at += len;
            continue;
        }
        let next = next_frame(bytes, at + 1).unwrap_or(bytes.len());
        scan.damaged.push(Damage {
            offset: at,
            skipped: next - at,
        });
        at = next;
    }
    scan
}

/// Reads a legacy file (length-delimited records, no checksum): every
/// record up to the first that does not decode; the rest is one damaged
/// stretch, as nothing marks where the next record starts.
pub fn scan_legacy(bytes: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        let offset = bytes.len() - rest.len();
        match pb::RunRecord::decode_length_delimited(&mut rest) {
            Ok(record) => scan.records.push(record),
            Err(_) => {
                scan.damaged.push(Damage {
                    offset,
                    skipped: bytes.len() - offset,
                });
                break;
            }
        }
    }
    scan
}

/// The record framed at `at` and the frame's length, if a whole frame with a
/// matching checksum and a decodable payload starts there.
fn frame_at(bytes: &[u8], at: usize) -> Option<(pb::RunRecord, usize)> {
    let header = bytes.get(at..at.checked_add(HEADER_LEN)?)?;
    if header[..4] != MAGIC {
        return None;
    }
    let len_bytes: [u8; 4] = header[4..8].try_into().ok()?;
    let len = usize::try_from(u32::from_le_bytes(len_bytes)).ok()?;
    if len > MAX_PAYLOAD {
        return None;
    }
    let crc = u32::from_le_bytes(header[8..12].try_into().ok()?);
    let start = at + HEADER_LEN;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    if checksum(len_bytes, payload) != crc {
        return None;
    }
    let record = pb::RunRecord::decode(payload).ok()?;
    Some((record, HEADER_LEN + len))
}

/// Offset of the first whole, valid frame at or after `from`.
fn next_frame(bytes: &[u8], from: usize) -> Option<usize> {
    let tail = bytes.get(from..)?;
    tail.windows(MAGIC.len())
        .enumerate()
        .filter(|(_, w)| *w == MAGIC)
        .map(|(i, _)| from + i)
        .find(|&at| frame_at(bytes, at).is_some())
}

/// CRC-32 (IEEE) of the length field and the payload: a damaged length
/// fails the check as surely as a damaged payload.
fn checksum(len: [u8; 4], payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    crc.finalize()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn record(id: &str, requester: &str) -> pb::RunRecord {
        pb::RunRecord {
            run_id: id.into(),
            requester: requester.into(),
            started_unix_ms: 1_700_000_000_000,
            ..Default::default()
        }
    }

    fn file(records: &[pb::RunRecord]) -> (Vec<u8>, Vec<std::ops::Range<usize>>) {
        let mut bytes = Vec::new();
        let mut spans = Vec::new();
        for r in records {
            let start = bytes.len();
            bytes.extend(encode(r));
            spans.push(start..bytes.len());
        }
        (bytes, spans)
    }

    #[test]
    fn a_damaged_record_in_the_middle_loses_only_itself_and_is_reported() {
        let records: Vec<_> = (0..5)
            .map(|i| record(&format!("run-{i}"), "admin"))
            .collect();
        let (mut bytes, spans) = file(&records);
        let hit = spans[2].start + HEADER_LEN + 3;
        bytes[hit] ^= 0x55;
        let scan = scan(&bytes);
        let ids: Vec<_> = scan.records.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["run-0", "run-1", "run-3", "run-4"]);
        assert_eq!(
            scan.damaged,
            [Damage {
                offset: spans[2].start,
                skipped: spans[2].len()
            }]
        );
        assert_eq!(scan.readable_end(bytes.len()), bytes.len());
        assert!(!is_legacy(&bytes));
    }

    #[test]
    fn a_torn_tail_is_one_damaged_stretch_to_the_end() {
        let records: Vec<_> = (0..3)
            .map(|i| record(&format!("run-{i}"), "admin"))
            .collect();
        let (bytes, spans) = file(&records);
        let torn = &bytes[..spans[2].start + 5];
        let scan = scan(torn);
        assert_eq!(scan.records.len(), 2);
        assert_eq!(scan.readable_end(torn.len()), spans[2].start);
    }

    #[test]
    fn a_damaged_first_magic_is_not_taken_for_a_legacy_file() {
        let (mut bytes, _) = file(&[record("a", "x"), record("b", "y")]);
        bytes[1] = b'X';
        assert!(!is_legacy(&bytes));
        let ids: Vec<_> = scan(&bytes).records.into_iter().map(|r| r.run_id).collect();
        assert_eq!(ids, ["b"]);
    }

    #[test]
    fn legacy_files_are_recognised_and_read_up_to_their_damage() {
        let mut bytes = Vec::new();
        for id in ["old-1", "old-2"] {
            bytes.extend(record(id, "admin").encode_length_delimited_to_vec());
        }
        assert!(is_legacy(&bytes));
        bytes.extend_from_slice(&[0x40, 0x01]);
        let scan = scan_legacy(&bytes);
        assert_eq!(scan.records.len(), 2);
        assert_eq!(scan.damaged.len(), 1);
        assert_eq!(scan.damaged[0].skipped, 2);
        assert!(!is_legacy(&[]));
    }

    fn records() -> impl Strategy<Value = Vec<pb::RunRecord>> {
        prop::collection::vec(
            ("[a-f0-9]{16}", any::<String>()).prop_map(|(id, who)| record(&id, &who)),
            1..12,
        )
    }

    /// Random bytes with frame starts (magic, then any length and
    /// checksum) sown in, so bogus headers are met often.
    fn bytes_with_magics() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..64),
                any::<[u8; 8]>().prop_map(|tail| [MAGIC.as_slice(), &tail].concat()),
            ],
            0..48,
        )
        .prop_map(|chunks| chunks.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn truncation_keeps_every_whole_record(records in records(), cut in any::<prop::sample::Index>()) {
            let (bytes, spans) = file(&records);
            let cut = cut.index(bytes.len() + 1);
            let scan = scan(&bytes[..cut]);
            let whole: Vec<_> = spans.iter().zip(&records).filter(|(s, _)| s.end <= cut).map(|(_, r)| r.clone()).collect();
            prop_assert_eq!(&scan.records, &whole);
            prop_assert!(scan.damaged.len() <= 1);
            prop_assert_eq!(scan.readable_end(cut), spans.iter().map(|s| s.end).filter(|&e| e <= cut).max().unwrap_or(0));
        }

        #[test]
        fn corruption_loses_only_the_records_it_touches(
            records in records(),
            hits in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4),
        ) {
            let (mut bytes, spans) = file(&records);
            let len = bytes.len();
            let hit_at: Vec<usize> = hits.iter().map(|(i, _)| i.index(len)).collect();
            for (&at, (_, flip)) in hit_at.iter().zip(&hits) {
                bytes[at] ^= flip;
            }
            let scan = scan(&bytes);
            let untouched: Vec<_> = spans.iter().zip(&records)
                .filter(|(s, _)| !hit_at.iter().any(|h| s.contains(h)))
                .map(|(_, r)| r.clone())
                .collect();
            // Every untouched record is read, in order; nothing is invented.
            let mut read = scan.records.iter();
            for r in &untouched {
                prop_assert!(read.any(|x| x == r), "lost {:?}", r.run_id);
            }
            prop_assert!(scan.records.iter().all(|r| records.contains(r)));
            let skipped: usize = scan.damaged.iter().map(|d| d.skipped).sum();
            let kept: usize = scan.records.iter().map(|r| encode(r).len()).sum();
            prop_assert_eq!(skipped + kept, len);
        }
    }

    /// The store's records as a fuzz target: arbitrary bytes with frame
    /// headers sown in, for `MESH_FUZZ_SECONDS` (probemesh-budget).
    #[test]
    fn arbitrary_bytes_never_panic() {
        probemesh_budget::run_for("store records", bytes_with_magics(), |bytes| {
            let framed = scan(&bytes);
            let skipped: usize = framed.damaged.iter().map(|d| d.skipped).sum();
            let kept: usize = framed.records.iter().map(|r| encode(r).len()).sum();
            prop_assert!(skipped + kept <= bytes.len());
            let _ = scan_legacy(&bytes);
            let _ = is_legacy(&bytes);
            Ok(())
        });
    }
}
