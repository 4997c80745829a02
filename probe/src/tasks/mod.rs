//! The probe's task engine: runs the tests the coordinator hands down the
//! probe link (ICMP ping as `ping`, TCP connects as `paping`), reports each
//! probe as it happens, and returns a summary. It decides nothing about what
//! the results mean; that is the coordinator's job.
//!
//! Map, lowest layer first; each module imports only from the ones before
//! it. [`types`] (validated specs), [`error`], [`stats`], [`resolve`]
//! (names to addresses on this host) and [`context`] (who runs a task, and
//! [`context::Progress`], where its events go) are the base; ICMP bytes are
//! built and read by `probemesh_packet::icmp`. The engines come next, each emitting its own event type and returning its own
//! report: [`ping`] and [`tcping`]; [`transfer`] (TCP push watched through
//! `TCP_INFO`), [`udp_echo`] and [`responder`] (the far end they test
//! against); [`dns`], [`listener`], [`facts`]; [`pmtu`] and [`trace`]; and
//! [`capture`], which runs the capture engine ([`crate::capture`]) and
//! streams its file back. Raw sockets sit behind
//! [`crate::platform::IcmpSocket`]. Above the engines, [`spec`] names a task
//! of any kind; [`convert`] is the protobuf conversion (`pb` tasks into specs with typed `Invalid*` errors;
//! events, reports and errors into `pb`); `run` runs one wire task with
//! them; [`netns`] runs it inside another network namespace on a thread of
//! its own; [`run_task`] here is the entry the link calls.
//!
//! Cancellation: when the token fires, a task stops at once and returns a
//! `TaskError` of kind `KIND_CANCELLED` saying how many probes had gone out;
//! the progress events already sent are the partial record.

use probemesh_proto::pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub mod capture;
pub mod context;
pub mod convert;
pub mod dns;
pub mod error;
pub mod facts;
pub mod listener;
pub mod netns;
pub mod ping;
pub mod pmtu;
pub mod resolve;
pub mod responder;
pub mod spec;
pub mod stats;
pub mod tcping;
pub mod trace;
pub mod transfer;
pub mod types;
pub mod udp_echo;

mod run;

pub use error::{Error, Result};

pub use context::TaskContext;
pub use resolve::RESOLVE_TIMEOUT;

/// Task kinds this probe runs, and the ways it runs them, as announced in
/// its `Hello`.
pub fn capabilities() -> Vec<String> {
    let mut kinds = vec!["ping".to_owned(), "tcping".to_owned()];
    kinds.extend(["tcp_transfer", "udp_echo", "responder"].map(str::to_owned));
    kinds.extend(["dns", "listener", "node_facts"].map(str::to_owned));
    kinds.extend(["pmtu", "trace", "capture"].map(str::to_owned));
    kinds.push(probemesh_proto::CAPTURE_ARM_WHEN_TOLD.to_owned());
    kinds
}

/// Runs one task to the end: validates it (bad input gives a
/// `KIND_INVALID_INPUT` error naming the field and its allowed range),
/// resolves the target on this host, sends one `TaskProgress` per echo or
/// connect attempt as it is known, and returns the summary, or a `TaskError`
/// (`KIND_PROBE_FAILURE` when this host cannot do the work, e.g. no
/// `CAP_NET_RAW` for ping; `KIND_CANCELLED` when `cancel` fires). Never
/// panics on any input; runs at most about `count × interval + timeout`
/// (each at most 10 000 × 60 s + 60 s) plus [`RESOLVE_TIMEOUT`]; a capture
/// runs its duration (≤ 10 min) after its arming instant (≤ 60 s ahead),
/// then streams its file.
///
/// When `task.netns` names another network namespace the whole task runs
/// on a dedicated thread inside it (see [`netns`]; a missing namespace is
/// `KIND_INVALID_INPUT`); the rest of the probe never sees the namespace.
pub async fn run_task(
    task: pb::Task,
    progress: mpsc::Sender<pb::TaskProgress>,
    cancel: CancellationToken,
) -> pb::TaskResult {
    run_task_with(TaskContext::default(), task, progress, cancel).await
}

/// [`run_task`] for a probe that knows more about itself (its name).
pub async fn run_task_with(
    context: TaskContext,
    mut task: pb::Task,
    progress: mpsc::Sender<pb::TaskProgress>,
    cancel: CancellationToken,
) -> pb::TaskResult {
    match task.netns.take() {
        Some(ns) => netns::run_in_netns(ns, context, task, progress, cancel).await,
        None => run::run_here(context, task, progress, cancel).await,
    }
}

#[cfg(test)]
mod tests;
