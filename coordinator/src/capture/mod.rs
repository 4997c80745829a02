//! Capture runs (`meshctl capture`), and the captures a diagnosis arms.
//!
//! [`plan`] is pure: it turns a `CaptureRequest` into a [`plan::CapturePlan`]
//! (observers, filter bounded, payload policy applied); [`compile`] compiles
//! its filter in the blocking pool; [`run`] executes a plan on the probes
//! through [`crate::execute`], arming them for one instant ([`arm`]), and
//! correlates the files.

mod arm;
pub mod compile;
pub mod plan;
pub mod run;

#[cfg(test)]
mod run_tests;
