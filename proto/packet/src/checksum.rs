//! The Internet checksum (RFC 1071), the one copy in the tree: IPv4 headers,
//! ICMP messages and UDP/TCP (with their pseudo-header, which the caller
//! lays out) all use it. Computed by `pnet_packet::util::checksum`; this
//! module only names it and pins its behaviour with tests.

/// The Internet checksum of `data`: one's complement of the one's complement
/// sum of its 16-bit big-endian words, an odd last byte padded with zero.
/// A buffer whose checksum field is filled in correctly sums to 0; an empty
/// buffer gives 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    // A skipped word past the end: every word counts.
    pnet_packet::util::checksum(data, usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_the_rfc1071_example() {
        // RFC 1071 section 3 example: sum 0xddf2, checksum its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2);
        assert_eq!(
            internet_checksum(&[0xff]),
            !0xff00,
            "odd length pads with zero"
        );
    }

    proptest! {
        #[test]
        fn a_filled_in_checksum_sums_to_zero(mut data in proptest::collection::vec(any::<u8>(), 2..300)) {
            data[0] = 0;
            data[1] = 0;
            let sum = internet_checksum(&data);
            data[..2].copy_from_slice(&sum.to_be_bytes());
            prop_assert_eq!(internet_checksum(&data), 0);
        }
    }
}
