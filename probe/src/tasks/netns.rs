//! Running a task inside another network namespace (`Task.netns`: a pod's,
//! by path or PID). The whole task runs on a dedicated thread that entered
//! the namespace ([`crate::platform::netns::run_in`]); its progress goes
//! through the caller's channel and its result comes back through a
//! oneshot. Cancellation reaches it through the same token. A namespace
//! deleted while the task runs stays alive for that thread (it holds a
//! reference) until the task ends within its own bound.

use std::time::Duration;

use probemesh_proto::pb;
use probemesh_proto::pb::task_result::Outcome;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::convert::netns_target;
use crate::platform::netns::{Namespace, run_in};

/// How long a cancelled task inside a namespace may take to wind down
/// before the caller stops waiting and reports the cancellation itself.
pub const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// Runs `task` (whose `netns` was taken out into `netns`) inside that
/// namespace. Errors: a malformed reference or a namespace that does not
/// exist give `KIND_INVALID_INPUT`; a failing `setns` gives
/// `KIND_PROBE_FAILURE` with the errno.
pub async fn run_in_netns(
    netns: pb::NetnsRef,
    context: super::TaskContext,
    task: pb::Task,
    progress: mpsc::Sender<pb::TaskProgress>,
    cancel: CancellationToken,
) -> pb::TaskResult {
    let task_id = task.task_id.clone();
    let failed = |error: pb::TaskError| pb::TaskResult {
        task_id: task_id.clone(),
        outcome: Some(Outcome::Error(error)),
    };
    let (target, label) = match netns_target(netns) {
        Ok(target) => target,
        Err(invalid) => return failed((&invalid).into()),
    };
    let namespace = match Namespace::open(&target, &label) {
        Ok(ns) => ns,
        Err(error) => {
            tracing::info!(%task_id, %error, "task rejected");
            return failed((&error).into());
        }
    };
    let path = namespace.path().display().to_string();
    tracing::debug!(%task_id, netns = %path, %label, "running task in network namespace");
    let token = cancel.clone();
    let work = run_in(namespace, move || {
        super::run::run_here(context, task, progress, token)
    });
    tokio::pin!(work);
    let outcome = tokio::select! {
        outcome = &mut work => outcome,
        () = cancel.cancelled() => match tokio::time::timeout(CANCEL_GRACE, &mut work).await {
            Ok(outcome) => outcome,
            Err(_elapsed) => {
                tracing::warn!(%task_id, netns = %path, "task did not stop within the grace period");
                return failed(pb::TaskError {
                    kind: pb::task_error::Kind::Cancelled.into(),
                    message: format!(
                        "cancelled; the task in network namespace {path} did not stop within {CANCEL_GRACE:?}"
                    ),
                });
            }
        },
    };
    match outcome {
        Ok(result) => result,
        Err(error) => {
            tracing::info!(%task_id, %error, "task failed");
            failed((&error).into())
        }
    }
}
