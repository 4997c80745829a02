//! Putting a probe's timestamps on the coordinator's clock — one rule for
//! everyone who does it (the coordinator's capture skew, meshctl's merged
//! capture).
//!
//! A clock offset is an estimate with an error bound (half the round trip
//! of its best sample). An estimate no larger than its own bound says only
//! that the clocks agree within what can be measured; subtracting it would
//! move packets by noise and can reorder hops that are microseconds apart
//! (two namespaces on one kernel clock). So an offset is applied only when
//! it exceeds its bound.

/// The correction to subtract from a probe timestamp, nanoseconds: the
/// offset (probe clock minus coordinator clock) when it exceeds its error
/// bound, else 0.
pub fn correction_ns(offset_ns: i64, error_ns: i64) -> i64 {
    if offset_ns.unsigned_abs() > error_ns.unsigned_abs() {
        offset_ns
    } else {
        0
    }
}

/// A probe-clock instant (Unix ns) on the coordinator's clock.
pub fn to_coordinator_ns(probe_ns: i64, offset_ns: i64, error_ns: i64) -> i64 {
    probe_ns.saturating_sub(correction_ns(offset_ns, error_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_within_their_bound_are_not_applied() {
        assert_eq!(correction_ns(18_000, 500_000), 0);
        assert_eq!(correction_ns(-499_999, 500_000), 0);
        assert_eq!(correction_ns(2_000_000, 500_000), 2_000_000);
        assert_eq!(correction_ns(-2_000_000, 500_000), -2_000_000);
        assert_eq!(to_coordinator_ns(10_000_000, 2_000_000, 1_000), 8_000_000);
        assert_eq!(to_coordinator_ns(10_000_000, 20, 1_000), 10_000_000);
        assert_eq!(correction_ns(i64::MIN, i64::MAX), i64::MIN);
    }
}
