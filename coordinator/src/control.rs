//! The Control service: what `meshctl` calls.
//!
//! Viewers may read (probes, runs); operators may also act (start runs,
//! create join tokens). Probe certificates may call nothing here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use probemesh_proto::pb;
use probemesh_telemetry::{task_kind_name, task_result_class};
use rand::Rng as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::authz::{Access, authorize};
use crate::dispatch::TaskHandle;
use crate::error::Error;
use crate::plan::{self, Plan, ResponderPort};
use crate::registry::Link;
use crate::state::Coordinator;
use crate::telemetry;

/// Longest join-token lifetime accepted.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Control over the shared state.
#[derive(Debug, Clone)]
pub struct ControlService {
    state: Arc<Coordinator>,
}

impl ControlService {
    /// The service.
    pub fn new(state: Arc<Coordinator>) -> Self {
        Self { state }
    }
}

type RunStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::control_server::Control for ControlService {
    async fn list_probes(
        &self,
        req: Request<pb::ListProbesRequest>,
    ) -> Result<Response<pb::ListProbesResponse>, Status> {
        authorize(&req, "Control.ListProbes", Access::Read)?;
        let probes = self.state.registry().list();
        Ok(Response::new(pb::ListProbesResponse { probes }))
    }

    type StartRunStream = RunStream;

    async fn start_run(
        &self,
        req: Request<pb::RunRequest>,
    ) -> Result<Response<Self::StartRunStream>, Status> {
        let caller = authorize(&req, "Control.StartRun", Access::Operate)?;
        let request = req.into_inner();
        let run_id = random_hex(8);
        let (span, trace_id) = telemetry::run_span(&run_id, &caller.identity.name, &request);
        let inventory = self.state.inventory.current();
        let planned = tracing::info_span!(parent: &span, "probemesh.plan").in_scope(|| {
            match &request.kind {
                Some(pb::run_request::Kind::Capture(capture)) => crate::capture::plan(
                    capture,
                    self.state.payload_policy,
                    &self.state.registry(),
                    inventory.as_deref(),
                )
                .map(Planned::Capture),
                Some(pb::run_request::Kind::Probe(probe)) => crate::diagnose::plan::plan(
                    &request.from,
                    probe,
                    &self.state.registry(),
                    inventory.as_deref(),
                    self.state.payload_policy,
                    self.state.listen_port,
                )
                .map(|p| Planned::Probe(Box::new(p))),
                _ => {
                    // One guard for both lookups: the registry's mutex is
                    // not reentrant.
                    let registry = self.state.registry();
                    plan::plan(&request, &registry, inventory.as_deref()).and_then(|plan| {
                        let link = registry
                            .link(&plan.source.probe)
                            .ok_or_else(|| Error::ProbeOffline(plan.source.probe.clone()))?;
                        Ok(Planned::Single(plan, link))
                    })
                }
            }
            .inspect_err(|e| tracing::info!(error = %e, "run refused"))
        })?;
        if let Planned::Single(plan, _) = &planned {
            span.record("probe", plan.source.probe.as_str());
        }
        let record = pb::RunRecord {
            run_id: run_id.clone(),
            trace_id: trace_id.clone(),
            requester: caller.identity.name.clone(),
            request: Some(request.clone()),
            started_unix_ms: self.state.clock.now_unix_ms(),
            ..Default::default()
        };
        span.in_scope(|| tracing::info!(run_id = %run_id, trace_id = %trace_id, requester = %caller.identity.name, from = %request.from, "run started"));

        let (tx, rx) = mpsc::channel(64);
        let _ = tx.try_send(Ok(accepted(&run_id, trace_id)));
        let state = self.state.clone();
        match planned {
            Planned::Capture(plan) => {
                tokio::spawn(crate::capture::follow(state, plan, record, tx).instrument(span))
            }
            Planned::Single(plan, link) => {
                tokio::spawn(follow_run(state, link, plan, record, tx).instrument(span))
            }
            Planned::Probe(plan) => tokio::spawn(
                crate::diagnose::run::follow(state, *plan, record, tx).instrument(span),
            ),
        };
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_runs(
        &self,
        req: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        authorize(&req, "Control.ListRuns", Access::Read)?;
        let limit = usize::try_from(req.get_ref().limit).unwrap_or(usize::MAX);
        Ok(Response::new(pb::ListRunsResponse {
            runs: self.state.runs.list(limit),
        }))
    }

    async fn get_run(
        &self,
        req: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::RunRecord>, Status> {
        authorize(&req, "Control.GetRun", Access::Read)?;
        let id = &req.get_ref().run_id;
        self.state
            .runs
            .get(id)
            .map(Response::new)
            .ok_or_else(|| Error::NotFound(format!("no run '{id}' (see `meshctl runs`)")).into())
    }

    async fn create_join_token(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        let caller = authorize(&req, "Control.CreateJoinToken", Access::Operate)?;
        let r = req.into_inner();
        let ttl = Duration::from_secs(r.ttl_seconds);
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(Error::InvalidRequest(format!(
                "token ttl must be between 1s and {}",
                humanize(MAX_TOKEN_TTL)
            ))
            .into());
        }
        let issued = self.state.tokens.create(
            &r.name,
            ttl,
            &self.state.ca,
            self.state.clock.now_unix_ms(),
        )?;
        tracing::info!(name = %r.name, by = %caller.identity.name, expires_unix_ms = issued.expires_unix_ms, "join token created");
        Ok(Response::new(issued))
    }
}

/// Executes a one-task plan and stores and sends its record.
async fn follow_run(
    state: Arc<Coordinator>,
    link: Link,
    plan: Plan,
    mut record: pb::RunRecord,
    tx: mpsc::Sender<Result<pb::RunEvent, Status>>,
) {
    let started = tokio::time::Instant::now();
    let task_id = format!("{}-1", record.run_id);
    let result = run_plan(&state, link, plan, &record.run_id, task_id, &tx, true).await;
    record.result = Some(result);
    finish(&state, record, None, started, &tx).await;
}

/// Executes a plan: starts the target's responder when needed, dispatches
/// the task, streams its progress to the client when `forward`, and
/// returns its result. Cancels what it started if the client goes away or
/// the bound passes.
pub(crate) async fn run_plan(
    state: &Coordinator,
    link: Link,
    mut plan: Plan,
    run_id: &str,
    task_id: String,
    tx: &mpsc::Sender<Result<pb::RunEvent, Status>>,
    forward: bool,
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
                |_| forward,
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

/// Streams progress until the result, the bound, or the client leaving;
/// `on_progress` sees (and may stamp) each event, and says whether it is
/// sent to the client.
pub(crate) async fn await_task(
    state: &Coordinator,
    link: &Link,
    mut handle: TaskHandle,
    bound: Duration,
    tx: &mpsc::Sender<Result<pb::RunEvent, Status>>,
    probe: &str,
    mut on_progress: impl FnMut(&mut pb::TaskProgress) -> bool,
) -> pb::TaskResult {
    let deadline = tokio::time::sleep(bound);
    tokio::pin!(deadline);
    let mut progress = |mut p| {
        on_progress(&mut p).then_some(pb::RunEvent {
            event: Some(pb::run_event::Event::Progress(p)),
        })
    };
    loop {
        tokio::select! {
            Some(p) = handle.progress.recv() => {
                if let Some(event) = progress(p) {
                    let _ = tx.send(Ok(event)).await;
                }
            }
            result = &mut handle.result => {
                // Drain progress that raced the result.
                while let Ok(p) = handle.progress.try_recv() {
                    if let Some(event) = progress(p) {
                        let _ = tx.send(Ok(event)).await;
                    }
                }
                return result.unwrap_or_else(|_| {
                    task_error(pb::task_error::Kind::ProbeFailure, Error::ProbeLost(probe.to_owned()).to_string())
                });
            }
            () = &mut deadline => {
                cancel(state, link, &handle.task_id).await;
                return task_error(
                    pb::task_error::Kind::ProbeFailure,
                    format!("probe '{probe}' did not finish within {}", humanize(bound)),
                );
            }
            () = tx.closed() => {
                cancel(state, link, &handle.task_id).await;
                return task_error(pb::task_error::Kind::Cancelled, "the requester went away".into());
            }
        }
    }
}

/// A run request, planned.
enum Planned {
    /// One task on one probe.
    Single(Plan, Link),
    /// A capture on several observers.
    Capture(crate::capture::CapturePlan),
    /// A diagnosis: many checks, captures, a verdict.
    Probe(Box<crate::diagnose::plan::DiagnosisPlan>),
}

/// The first event of every run.
fn accepted(run_id: &str, trace_id: String) -> pb::RunEvent {
    pb::RunEvent {
        event: Some(pb::run_event::Event::Accepted(pb::RunAccepted {
            run_id: run_id.to_owned(),
            trace_id,
        })),
    }
}

/// How long a responder may take to announce its ports.
const RESPONDER_READY: Duration = Duration::from_secs(5);

/// Starts `need.probe`'s responder for task `for_task` and waits for its ports.
async fn start_responder(
    state: &Coordinator,
    run_id: &str,
    for_task: &str,
    need: &plan::ResponderNeed,
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
                humanize(RESPONDER_READY)
            )))
        }
    }
}

/// Stamps, stores and sends the finished record.
pub(crate) async fn finish(
    state: &Coordinator,
    mut record: pb::RunRecord,
    result: Option<pb::TaskResult>,
    started: tokio::time::Instant,
    tx: &mpsc::Sender<Result<pb::RunEvent, Status>>,
) {
    if let Some(result) = result {
        record.result = Some(result);
    }
    record.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    tracing::info_span!("probemesh.store").in_scope(|| {
        if let Err(e) = state.runs.insert(record.clone()) {
            tracing::error!(error = %e, "could not store the run");
        }
    });
    if let Some(request) = &record.request {
        // A diagnosis is labelled by its verdict class, a tool run by how
        // its task ended.
        let result = record
            .diagnosis
            .as_ref()
            .and_then(|d| d.verdict.as_ref())
            .map(|v| v.class.as_str())
            .or_else(|| record.result.as_ref().map(task_result_class))
            .unwrap_or("unspecified");
        state
            .metrics
            .run_finished(telemetry::request_kind(request), result, started.elapsed());
    }
    tracing::info!(run_id = %record.run_id, duration_ms = record.duration_ms, "run finished");
    let _ = tx
        .send(Ok(pb::RunEvent {
            event: Some(pb::run_event::Event::Finished(record)),
        }))
        .await;
}

async fn cancel(state: &Coordinator, link: &Link, task_id: &str) {
    state.dispatcher.forget(task_id);
    let msg = pb::CoordinatorMessage {
        msg: Some(pb::coordinator_message::Msg::Cancel(pb::CancelTask {
            task_id: task_id.to_owned(),
        })),
    };
    let _ = link.tx.send(Ok(msg)).await;
}

pub(crate) fn task_error(kind: pb::task_error::Kind, message: String) -> pb::TaskResult {
    pb::TaskResult {
        task_id: String::new(),
        outcome: Some(pb::task_result::Outcome::Error(pb::TaskError {
            kind: kind.into(),
            message,
        })),
    }
}

/// `n` random bytes as lowercase hex.
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill(bytes.as_mut_slice());
    hex::encode(bytes)
}

fn humanize(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
