//! Tool runs: one classic tool (`meshctl ping`, `tcping`, `mtr`, `pmtu`,
//! `dig`, ...) run as one task on one probe. A diagnosis runs each of its
//! checks as a tool run too.
//!
//! [`plan`] is pure: it says where the task runs, what it is aimed at, how
//! long it may take and whether the target probe must first start its
//! responder. This module executes a [`ToolPlan`] through
//! [`crate::execute`]: responder first when needed, then the task.

use std::sync::Arc;
use std::time::Duration;

use probemesh_model::inventory::Inventory;
use probemesh_proto::pb;
use probemesh_telemetry::task_kind_name;
use tracing::Instrument as _;

use crate::dispatch::TaskHandle;
use crate::error::Error;
use crate::execute::{RunEvents, await_task, cancel, finish, task_error};
use crate::registry::{Link, Registry};
use crate::state::Coordinator;
use crate::telemetry;

pub mod plan;
#[cfg(test)]
mod tests;

pub use plan::ToolPlan;
use plan::{ResponderNeed, ResponderPort};

/// How long a responder may take to announce its ports.
const RESPONDER_READY: Duration = Duration::from_secs(5);

/// Plans `request` and finds the link to the probe it runs on. One guard
/// serves both lookups: the registry's mutex is not reentrant.
pub fn prepare(
    request: &pb::RunRequest,
    registry: &Registry,
    inventory: Option<&Inventory>,
) -> Result<(ToolPlan, Link), Error> {
    let plan = plan::plan(request, registry, inventory)?;
    let link = registry
        .link(&plan.source.probe)
        .ok_or_else(|| Error::ProbeOffline(plan.source.probe.clone()))?;
    Ok((plan, link))
}

/// Executes a one-task plan as a whole run on `link`, then stores and sends
/// its record.
pub async fn follow(
    state: Arc<Coordinator>,
    link: Link,
    plan: ToolPlan,
    mut record: pb::RunRecord,
    tx: RunEvents,
) {
    let started = tokio::time::Instant::now();
    let task_id = format!("{}-1", record.run_id);
    let result = run_plan(&state, link, plan, &record.run_id, task_id, &tx, |_| true).await;
    record.result = Some(result);
    finish(&state, record, None, started, &tx).await;
}

/// Executes a plan: starts the target's responder when needed, dispatches
/// the task, hands each progress event to `on_progress` (which says
/// whether it goes on to the client), and
/// returns its result. Cancels what it started if the client goes away or
/// the bound passes.
pub(crate) async fn run_plan(
    state: &Coordinator,
    link: Link,
    mut plan: ToolPlan,
    run_id: &str,
    task_id: String,
    tx: &RunEvents,
    on_progress: impl FnMut(&mut pb::TaskProgress) -> bool,
) -> pb::TaskResult {
    let responder = match &plan.responder {
        Some(need) => match start_responder(state, run_id, &task_id, need)
            .instrument(tracing::info_span!("probemesh.responder", probe = %need.probe))
            .await
        {
            Ok((handle, ports)) => {
                plan.set_responder_port(match need.port {
                    ResponderPort::Tcp => ports.tcp_port,
                    ResponderPort::Udp => ports.udp_port,
                });
                Some(handle)
            }
            Err(result) => return result,
        },
        None => None,
    };
    let kind = task_kind_name(&plan.kind);
    let dispatch_span = tracing::info_span!("probemesh.dispatch", probe = %plan.source.probe, kind);
    let task = pb::Task {
        task_id,
        run_id: run_id.to_owned(),
        trace_context: telemetry::task_context(&dispatch_span),
        netns: plan.source.netns.clone(),
        kind: Some(plan.kind.clone()),
    };
    let dispatched = tokio::time::Instant::now();
    let outcome = match state
        .dispatcher
        .dispatch(&plan.source.probe, &link, task)
        .instrument(dispatch_span)
        .await
    {
        Ok(handle) => {
            await_task(
                state,
                &link,
                handle,
                plan.bound,
                tx,
                &plan.source.probe,
                on_progress,
            )
            .instrument(tracing::info_span!("probemesh.await", probe = %plan.source.probe, kind))
            .await
        }
        Err(e) => task_error(pb::task_error::Kind::ProbeFailure, e.to_string()),
    };
    state.metrics.task_finished(kind, dispatched.elapsed());
    if let Some((rlink, rhandle)) = responder {
        cancel(state, &rlink, &rhandle.task_id).await;
    }
    outcome
}

/// Starts `need.probe`'s responder for task `for_task` and waits for its ports.
async fn start_responder(
    state: &Coordinator,
    run_id: &str,
    for_task: &str,
    need: &ResponderNeed,
) -> Result<((Link, TaskHandle), pb::ResponderReady), pb::TaskResult> {
    let fail = |msg: String| task_error(pb::task_error::Kind::ProbeFailure, msg);
    let link = state
        .registry()
        .link(&need.probe)
        .ok_or_else(|| fail(Error::ProbeOffline(need.probe.clone()).to_string()))?;
    let task = pb::Task {
        task_id: format!("{for_task}-responder"),
        run_id: run_id.to_owned(),
        kind: Some(pb::task::Kind::Responder(pb::ResponderTask::default())),
        trace_context: telemetry::task_context(&tracing::Span::current()),
        ..Default::default()
    };
    let mut handle = state
        .dispatcher
        .dispatch(&need.probe, &link, task)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let ready = tokio::time::timeout(RESPONDER_READY, async {
        while let Some(p) = handle.progress.recv().await {
            if let Some(pb::task_progress::Event::ResponderReady(r)) = p.event {
                return Some(r);
            }
        }
        None
    })
    .await;
    match ready {
        Ok(Some(ports)) => Ok(((link, handle), ports)),
        _ => {
            cancel(state, &link, &handle.task_id).await;
            Err(fail(format!(
                "probe '{}' did not start its responder within {}",
                need.probe,
                humantime::format_duration(RESPONDER_READY)
            )))
        }
    }
}
