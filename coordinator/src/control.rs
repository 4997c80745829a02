//! The Control service: what `meshctl` calls.
//!
//! Viewers may read (probes, runs); operators may also act (start runs,
//! create join tokens). Probe certificates may call nothing here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use probemesh_proto::pb;
use probemesh_proto::pb::run_request::Kind;
use rand::Rng as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::authz::{Access, authorize};
use crate::dispatch::TaskHandle;
use crate::error::Error;
use crate::resolve;
use crate::state::Coordinator;

/// Longest join-token lifetime accepted.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Slack added to a task's own bound before the coordinator gives up on it.
const TASK_SLACK: Duration = Duration::from_secs(5);

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
        let (task, bound) = plan_task(&self.state, &request)?;
        let link = {
            let registry = self.state.registry();
            match registry.link(&request.from) {
                Some(link) => link,
                None if registry.hello(&request.from).is_some() => {
                    return Err(Error::ProbeOffline(request.from).into());
                }
                None => return Err(Error::UnknownProbe(request.from).into()),
            }
        };
        let run_id = random_hex(8);
        let trace_id = random_hex(16);
        let task = pb::Task {
            task_id: format!("{run_id}-1"),
            run_id: run_id.clone(),
            trace_context: [(
                "traceparent".to_owned(),
                format!("00-{trace_id}-{}-01", random_hex(8)),
            )]
            .into(),
            kind: Some(task),
        };
        let started_unix_ms = self.state.clock.now_unix_ms();
        let record = pb::RunRecord {
            run_id: run_id.clone(),
            trace_id: trace_id.clone(),
            requester: caller.identity.name.clone(),
            request: Some(request.clone()),
            started_unix_ms,
            ..Default::default()
        };
        let handle = self
            .state
            .dispatcher
            .dispatch(&request.from, &link, task)
            .await
            .map_err(|e| Error::ProbeOffline(e.to_string()))?;
        tracing::info!(run_id = %run_id, trace_id = %trace_id, requester = %caller.identity.name, from = %request.from, "run started");

        let (tx, rx) = mpsc::channel(64);
        let accepted = pb::RunEvent {
            event: Some(pb::run_event::Event::Accepted(pb::RunAccepted {
                run_id: run_id.clone(),
                trace_id,
            })),
        };
        let _ = tx.try_send(Ok(accepted));
        let span = tracing::info_span!("run", run_id = %run_id, probe = %request.from);
        tokio::spawn(
            follow_run(self.state.clone(), link, handle, record, bound, tx).instrument(span),
        );
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

/// Validates the request's kind and aims it; returns the task and how long
/// the probe may take.
fn plan_task(
    state: &Coordinator,
    request: &pb::RunRequest,
) -> Result<(pb::task::Kind, Duration), Error> {
    if request.from.is_empty() {
        return Err(Error::InvalidRequest("--from PROBE is required".into()));
    }
    let registry = state.registry();
    match &request.kind {
        Some(Kind::Ping(p)) => {
            let aim = resolve::aim(&p.target, &registry)?;
            let bound = per_attempt_bound(p.count, p.interval_us, p.timeout_us);
            Ok((
                pb::task::Kind::Ping(pb::PingTask {
                    target: aim.host,
                    ..p.clone()
                }),
                bound,
            ))
        }
        Some(Kind::Tcping(t)) => {
            let spec = if t.port == 0 {
                t.host.clone()
            } else {
                format!("{}:{}", t.host, t.port)
            };
            let aim = resolve::aim(&spec, &registry)?;
            let port = aim.port.ok_or_else(|| {
                Error::InvalidRequest(format!("'{spec}' needs a port: tcping HOST:PORT"))
            })?;
            let bound = per_attempt_bound(t.count, t.interval_us, t.timeout_us);
            Ok((
                pb::task::Kind::Tcping(pb::TcpingTask {
                    host: aim.host,
                    port: u32::from(port.get()),
                    ..t.clone()
                }),
                bound,
            ))
        }
        None => Err(Error::InvalidRequest(
            "the run request names no test".into(),
        )),
    }
}

/// Upper bound of a count × (interval, timeout) task.
fn per_attempt_bound(count: u32, interval_us: u64, timeout_us: u64) -> Duration {
    let per = Duration::from_micros(interval_us.max(timeout_us).max(1_000_000));
    per.saturating_mul(count.max(1)) + TASK_SLACK
}

/// Streams the task's progress to the client, then stores and sends the
/// record. Cancels the task on the probe if the client goes away or the
/// bound passes.
async fn follow_run(
    state: Arc<Coordinator>,
    link: crate::registry::Link,
    mut handle: TaskHandle,
    mut record: pb::RunRecord,
    bound: Duration,
    tx: mpsc::Sender<Result<pb::RunEvent, Status>>,
) {
    let started = tokio::time::Instant::now();
    let deadline = tokio::time::sleep(bound);
    tokio::pin!(deadline);
    let run_id = record.run_id.clone();
    let from = record
        .request
        .as_ref()
        .map(|r| r.from.clone())
        .unwrap_or_default();
    let outcome = loop {
        tokio::select! {
            Some(p) = handle.progress.recv() => {
                let _ = tx.send(Ok(pb::RunEvent { event: Some(pb::run_event::Event::Progress(p)) })).await;
            }
            result = &mut handle.result => {
                // Drain progress that raced the result.
                while let Ok(p) = handle.progress.try_recv() {
                    let _ = tx.send(Ok(pb::RunEvent { event: Some(pb::run_event::Event::Progress(p)) })).await;
                }
                break result.unwrap_or_else(|_| task_error(
                    pb::task_error::Kind::ProbeFailure,
                    Error::ProbeLost(from.clone()).to_string(),
                ));
            }
            () = &mut deadline => {
                cancel(&state, &link, &handle.task_id).await;
                break task_error(
                    pb::task_error::Kind::ProbeFailure,
                    format!("probe '{from}' did not finish within {}", humanize(bound)),
                );
            }
            () = tx.closed() => {
                cancel(&state, &link, &handle.task_id).await;
                break task_error(pb::task_error::Kind::Cancelled, "the requester went away".into());
            }
        }
    };
    record.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    record.result = Some(pb::TaskResult {
        task_id: handle.task_id.clone(),
        ..outcome
    });
    if let Err(e) = state.runs.insert(record.clone()) {
        tracing::error!(error = %e, "could not store the run");
    }
    tracing::info!(run_id = %run_id, duration_ms = record.duration_ms, "run finished");
    let _ = tx
        .send(Ok(pb::RunEvent {
            event: Some(pb::run_event::Event::Finished(record)),
        }))
        .await;
}

async fn cancel(state: &Coordinator, link: &crate::registry::Link, task_id: &str) {
    state.dispatcher.forget(task_id);
    let msg = pb::CoordinatorMessage {
        msg: Some(pb::coordinator_message::Msg::Cancel(pb::CancelTask {
            task_id: task_id.to_owned(),
        })),
    };
    let _ = link.tx.send(Ok(msg)).await;
}

fn task_error(kind: pb::task_error::Kind, message: String) -> pb::TaskResult {
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
