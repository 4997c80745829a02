//! `meshctl probe`: a planned, bidirectional diagnosis with a verdict.
//!
//! - [`target`] expands the TARGET through the inventory into endpoints;
//! - [`plan`] chooses the checks (both directions), the observers and their
//!   interfaces, and the follow-ups the first wave calls for;
//! - [`run`] executes: synchronized captures armed before any check,
//!   checks dispatched as ordinary tool tasks, then correlation;
//! - [`model`] is the typed check the rules read, and where captures saw
//!   packets;
//! - [`checks`] reads each task result as ok / fail / skipped;
//! - [`packets`] reduces the correlated captures to rule evidence;
//! - [`rules`] is the table of rules that turns the evidence into a
//!   verdict in DESIGN §1's classes, citing where each observation comes
//!   from. It never knows what was done to the network;
//! - [`path`] traces the test packets step by step for the verdict, the
//!   failing step naming the blocker the deciding rule cites.

pub mod checks;
pub mod model;
pub mod packets;
pub mod path;
pub mod plan;
pub mod rules;
pub mod run;
pub mod target;
pub mod timing;

#[cfg(test)]
pub(crate) mod testing;
