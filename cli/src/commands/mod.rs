//! One module per meshctl command family.

pub mod certs;
pub mod join_token;
pub mod probes;
pub mod runs;
pub mod tools;

use std::time::{Duration, UNIX_EPOCH};

/// Unix milliseconds as an RFC 3339 UTC timestamp (seconds precision).
pub fn format_unix_ms(ms: i64) -> String {
    u64::try_from(ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map(|ms| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        })
        .unwrap_or_else(|| "-".to_owned())
}

/// Nanoseconds as milliseconds with three decimals, as ping prints RTTs.
pub fn ns_to_ms(ns: i64) -> f64 {
    // i64 nanoseconds fit f64 exactly up to ~104 days: fine for RTTs.
    #[allow(clippy::cast_precision_loss)]
    let ms = ns as f64 / 1e6;
    (ms * 1000.0).round() / 1000.0
}
