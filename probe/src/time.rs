//! The probe's wall clock as the link and the UDP clock exchange read it:
//! nanoseconds since the Unix epoch. One function, so both stamp their clock
//! samples the same way; it is not the kernel-timestamp clock of the platform
//! layer (`platform::Timestamp`), which reads `CLOCK_REALTIME` per packet.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch, the probe's clock (CLOCK_REALTIME);
/// 0 before the epoch, `i64::MAX` after the year 2262.
pub fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
