//! mesh-coordinator: the probemesh control plane.
//!
//! It registers probes (who they are comes from their certificates), keeps a
//! clock-offset estimate per probe, dispatches tasks down each probe's
//! stream, stores runs, and enrolls external hosts with join tokens. It is
//! not a CLI (that is meshctl) and runs no tests itself (probes do).
//!
//! Map: [`server`] binds and serves; [`link`] is each probe's stream;
//! [`control`] answers meshctl, executing what [`plan`] decides (targets
//! resolved by [`resolve`] through the registry and [`inventory`]); [`enroll`] answers joins; [`registry`],
//! [`clock`] (fed by [`link`] and [`clock_udp`]), [`dispatch`], [`runs`], [`tokens`] are the state they share;
//! [`authz`] decides who may call what; [`metrics`] and [`telemetry`] are
//! its Prometheus metrics and its spans.

pub mod authz;
pub mod capture;
pub mod clock;
pub mod clock_udp;
pub mod control;
pub mod correlate;
pub mod diagnose;
pub mod dispatch;
pub mod enroll;
pub mod error;
pub mod inventory;
pub mod link;
pub mod metrics;
pub mod plan;
pub mod registry;
pub mod resolve;
pub mod runs;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tokens;

pub use error::{Error, Result};
