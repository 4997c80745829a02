//! One module per meshctl command family.

pub mod capture;
pub mod certs;
pub mod dig;
pub mod inspect;
pub mod join_token;
pub mod mesh;
pub mod path;
pub mod probe;
pub mod probes;
pub mod runs;
pub mod tools;
pub mod transfer;
pub mod web_token;

use std::time::Duration;

use probemesh_proto::pb;
use probemesh_proto::pb::task_result::Outcome;
pub use probemesh_report::listing::{format_unix_ms, kind_and_target};
use serde::Serialize;

use crate::client::{Endpoint, Failure, exit};

/// Most pages a listing follows (`meshctl probes`, `meshctl runs`): far
/// more than a coordinator keeps, a bound against a server that never ends.
pub const MAX_PAGES: usize = 1_000;

/// Nanoseconds as milliseconds with three decimals, as ping prints RTTs.
pub fn ns_to_ms(ns: i64) -> f64 {
    // i64 nanoseconds fit f64 exactly up to ~104 days: fine for RTTs.
    #[allow(clippy::cast_precision_loss)]
    let ms = ns as f64 / 1e6;
    (ms * 1000.0).round() / 1000.0
}

/// Nanoseconds as microseconds with three decimals, as clock offsets print.
pub fn ns_to_us(ns: i64) -> f64 {
    // Offsets are far below 2^53 ns.
    #[allow(clippy::cast_precision_loss)]
    let us = ns as f64 / 1e3;
    (us * 1000.0).round() / 1000.0
}

/// A duration as whole microseconds, as the wire carries timeouts and
/// intervals (saturating).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A task error, as printed and in JSON.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorView {
    /// invalid_input, probe_failure, cancelled or unknown.
    pub kind: &'static str,
    /// What went wrong.
    pub message: String,
}

impl ErrorView {
    /// The probe's error.
    pub fn from_wire(e: &pb::TaskError) -> Self {
        Self {
            kind: match e.kind() {
                pb::task_error::Kind::InvalidInput => "invalid_input",
                pb::task_error::Kind::ProbeFailure => "probe_failure",
                pb::task_error::Kind::Cancelled => "cancelled",
                pb::task_error::Kind::Unspecified => "unknown",
            },
            message: e.message.clone(),
        }
    }

    /// A run that ended without any result.
    pub fn missing() -> Self {
        Self {
            kind: "unknown",
            message: "the run ended without a result".into(),
        }
    }

    /// The error a run's outcome carries, if it is one (no outcome at all
    /// is [`ErrorView::missing`]); `None` for a result.
    pub fn from_outcome(outcome: Option<&Outcome>) -> Option<Self> {
        match outcome {
            Some(Outcome::Error(e)) => Some(Self::from_wire(e)),
            None => Some(Self::missing()),
            Some(_) => None,
        }
    }

    /// 2 for bad input, else 3 (the probe could not do it).
    pub fn exit_code(&self) -> u8 {
        if self.kind == "invalid_input" {
            exit::USAGE
        } else {
            exit::INCONCLUSIVE
        }
    }
}

/// One finished single-task run: its ids and the task's outcome.
#[derive(Debug)]
pub struct Finished {
    /// The run id.
    pub run_id: String,
    /// The run's trace id.
    pub trace_id: String,
    /// The task's outcome, if the run produced one.
    pub outcome: Option<Outcome>,
}

#[cfg(test)]
impl Finished {
    /// Run `r1` (trace `t1`) that ended with `outcome`.
    pub(crate) fn with_outcome(outcome: Outcome) -> Self {
        Self {
            run_id: "r1".into(),
            trace_id: "t1".into(),
            outcome: Some(outcome),
        }
    }
}

/// Starts a single-task run, ignores its progress and waits for its record.
pub async fn run_once(endpoint: &Endpoint, request: pb::RunRequest) -> Result<Finished, Failure> {
    let (accepted, record) = stream_run(request, endpoint, |_| {}).await?;
    Ok(Finished {
        run_id: accepted.run_id,
        trace_id: accepted.trace_id,
        outcome: record.result.and_then(|r| r.outcome),
    })
}

/// Starts a run and follows it to the end, handing each progress event to
/// `on_progress` as it arrives. Returns the acceptance (run and trace ids)
/// and the final record. Every command that runs a test goes through here.
pub async fn stream_run(
    request: pb::RunRequest,
    endpoint: &Endpoint,
    on_progress: impl FnMut(pb::TaskProgress),
) -> Result<(pb::RunAccepted, pb::RunRecord), Failure> {
    stream_run_with_steps(request, endpoint, on_progress, |_| {}).await
}

/// [`stream_run`] for runs with several phases: `on_step` sees where the
/// run is (clock, capture, checks n/m, diagnose).
pub async fn stream_run_with_steps(
    request: pb::RunRequest,
    endpoint: &Endpoint,
    mut on_progress: impl FnMut(pb::TaskProgress),
    mut on_step: impl FnMut(pb::RunStep),
) -> Result<(pb::RunAccepted, pb::RunRecord), Failure> {
    let mut request = request;
    endpoint.qualify(&mut request);
    let mut control = endpoint.control().await?;
    let mut stream = control.start_run(request.clone()).await?.into_inner();
    let mut accepted = pb::RunAccepted::default();
    let mut record = None;
    while let Some(event) = stream.message().await? {
        match event.event {
            Some(pb::run_event::Event::Accepted(a)) => accepted = a,
            Some(pb::run_event::Event::Progress(p)) => on_progress(p),
            Some(pb::run_event::Event::Step(s)) => on_step(s),
            Some(pb::run_event::Event::Finished(r)) => record = Some(r),
            None => {}
        }
    }
    let record = record.unwrap_or_else(|| pb::RunRecord {
        request: Some(request),
        ..Default::default()
    });
    Ok((accepted, record))
}
