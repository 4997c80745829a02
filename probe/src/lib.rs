//! mesh-probe: the probe daemon. It dials the coordinator, keeps one stream
//! open, and runs the network tests it is handed (ICMP, TCP, ...) in its own
//! network namespace, returning structured results. It plans nothing and
//! judges nothing: that is the coordinator's work.
//!
//! Map, lowest layer first; each module imports only from the ones before it:
//! 1. [`types`]: the leaf, a newtype per protocol quantity (`EchoId`, `Mtu`,
//!    `Ttl`, ...), and [`time`], the probe's wall clock.
//! 2. [`platform`]: the privileged syscalls behind small traits (raw ICMP
//!    sockets, `AF_PACKET` rings, namespaces, `TCP_INFO`), with its own error.
//! 3. [`capture`]: the packet capture engine (rings, pcapng).
//! 4. [`tasks`]: the test engines (ping, tcping, transfers, DNS, facts,
//!    path MTU, trace, capture task), each emitting its own events and
//!    report, then `tasks::convert`, the conversion between the wire (`pb`)
//!    and the engines' specs, events and reports, and the runner the link
//!    calls (`tasks::run_task`).
//! 5. [`clock_udp`]: the kernel-timestamped UDP clock exchange.
//! 6. [`link`]: the stream to the coordinator and its reconnect loop, which
//!    runs the tasks and the UDP clock exchange; [`join`] enrolls an
//!    external host.
//!
//! Beside them: [`error`] (the daemon's error), [`metrics`] and
//! [`telemetry`] (Prometheus metrics, spans), [`interfaces`], [`backoff`] and
//! [`coordinators`] (small helpers).

pub mod backoff;
pub mod capture;
pub mod clock_udp;
pub mod coordinators;
pub mod error;
pub mod interfaces;
pub mod join;
pub mod link;
pub mod metrics;
pub mod platform;
pub mod renew;
pub mod tasks;
pub mod telemetry;
pub mod time;
pub mod types;

pub use error::{Error, Result};
