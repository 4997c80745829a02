//! `meshctl mesh`: the whole mesh as an N×N matrix, on demand (issue 17) —
//! every selected probe to every selected node's address, pod network and
//! NodePort, and to every external probe, both ways (each pair is a row
//! and a column). Not `mesh`: that module is the coordinators' membership.
//!
//! - [`plan`] is pure: selectors, registry and inventory into the cells,
//!   every list bounded;
//! - [`run`] executes the cells as tool tasks under a per-run and a
//!   per-probe cap, streams `k of n cells`, and stores the matrix in the
//!   run's record, where `meshctl runs ID` (and a renderer) reads it.

pub mod plan;
pub mod run;
