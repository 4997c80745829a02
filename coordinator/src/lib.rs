//! mesh-coordinator: the probemesh control plane.
//!
//! It registers probes (who they are comes from their certificates), keeps a
//! clock-offset estimate per probe, dispatches tasks down each probe's
//! stream, stores runs, and enrolls external hosts with join tokens. It is
//! not a CLI (that is meshctl) and runs no tests itself (probes do).
//!
//! Map, lowest layer first (each imports only from those above it in this
//! list; `scripts/check-structure.py` checks it):
//! - state: [`clock`], [`registry`], [`dispatch`], [`runs`], [`tokens`],
//!   [`revocation`] (kept by the [`store`], local or etcd),
//!   [`inventory`], [`metrics`], [`shutdown`], and the [`policy`] over
//!   them, gathered in [`state`]; [`bounds`] holds the size bounds on
//!   inputs and the paging of list replies; [`etcd`] connects to the
//!   shared state and lays out its keys;
//! - [`execute`]: run execution (await a dispatched task, cancel, finish
//!   and store a run); beside it [`mesh`], several coordinators (membership
//!   in etcd, the relay to a probe another coordinator holds, the clock
//!   chain through it), and [`clock_sync`]: the clock exchanges on each
//!   stream, and the fresh burst a run asks for before it arms;
//! - the runs: [`tool_run`] (one tool on one probe), [`capture`] (the
//!   distributed tcpdump, correlated by [`correlate`]) and [`diagnose`]
//!   (`meshctl probe`), each a pure plan and its execution, with targets
//!   resolved by [`resolve`]; above them [`matrix`] (`meshctl mesh`, many
//!   tool runs in an N×N grid, its waits derived as the diagnosis's);
//! - the services: [`control`] answers meshctl, [`link`] is each probe's
//!   stream (with [`clock_udp`]), [`peer`] answers other coordinators,
//!   [`enroll`] answers joins, [`authz`]
//!   decides who may call what; [`web`] is the read-only web view;
//!   [`server`] binds and serves them;
//!   [`telemetry`] makes the spans.

pub mod authz;
pub mod bounds;
pub mod capture;
pub mod clock;
pub mod clock_sync;
pub mod clock_udp;
pub mod control;
pub mod correlate;
pub mod diagnose;
pub mod dispatch;
pub mod enroll;
pub mod error;
pub mod etcd;
pub mod execute;
pub mod inventory;
pub mod link;
pub mod matrix;
pub mod mesh;
pub mod metrics;
pub mod peer;
pub mod policy;
pub mod registry;
pub mod resolve;
pub mod revocation;
pub mod runs;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod tool_run;
pub mod web;

pub use error::{Error, Result};

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
pub(crate) mod testing;
