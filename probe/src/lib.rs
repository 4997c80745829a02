//! mesh-probe: the probe daemon. It dials the coordinator, keeps one stream
//! open, and runs the network tests it is handed (ICMP, TCP, ...) in its own
//! network namespace, returning structured results. It plans nothing and
//! judges nothing: that is the coordinator's work.
//!
//! Map: [`link`] is the stream and reconnect loop, [`clock_udp`] the
//! kernel-timestamped clock exchange beside it; [`join`] enrolls an
//! external host; [`tasks`] runs the tests; [`capture`] is the packet
//! capture engine (rings, pcapng); [`platform`] holds the
//! privileged syscalls; [`metrics`] and [`telemetry`] are its Prometheus
//! metrics and its spans; [`interfaces`] and [`backoff`] are small helpers.

pub mod backoff;
pub mod capture;
pub mod clock_udp;
pub mod error;
pub mod interfaces;
pub mod join;
pub mod link;
pub mod metrics;
pub mod platform;
pub mod tasks;
pub mod telemetry;

pub use error::{Error, Result};
