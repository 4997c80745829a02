//! probemesh-model: the domain types every side shares, without I/O.
//!
//! TARGET specs ([`target`]), durations ([`duration`]), the cluster
//! [`inventory`] format, the common [`timeline`] of a run, and the verdict
//! classes and causes of DESIGN §1 ([`verdict`]), a diagnosis check's name,
//! direction and status ([`check`]), where a verdict's evidence comes from
//! and the claims its summary makes ([`evidence`]), the path a verdict
//! traces step by step ([`path`]), the names of a mesh matrix's cells
//! ([`mesh`]), and their conversions to and from the
//! wire enums ([`grpc`]). It is not the wire (that is
//! `probemesh-proto`): no sockets, no clocks; the one file it reads is the
//! inventory a caller names (`Inventory::load`).

pub mod check;
pub mod duration;
pub mod evidence;
pub mod grpc;
pub mod inventory;
pub mod mesh;
pub mod path;
pub mod target;
pub mod timeline;
pub mod verdict;
