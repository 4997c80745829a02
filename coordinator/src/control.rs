//! The Control service: what `meshctl` calls.
//!
//! Viewers may read (probes, runs); operators may also act (start runs,
//! create join tokens, revoke certificates). Probe certificates may call nothing here.
//!
//! It authorizes, plans each run by its kind, opens the run's record and
//! event stream, and hands the run to its executor ([`crate::tool_run`],
//! [`crate::capture::run`], [`crate::diagnose::run`], [`crate::matrix::run`]); it executes nothing
//! itself.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use probemesh_proto::identity::validate_name;
use probemesh_proto::pb;
use probemesh_proto::tls::PeerInfo;
use probemesh_proto::token::MAX_TOKEN_TTL;
use probemesh_proto::viewer_token::{DEFAULT_VIEWER_TTL, MAX_VIEWER_TTL, ViewerClaims};
use rand::Rng as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::authz::{Access, Caller, authorize};
use crate::bounds;
use crate::capture::{self, plan::CapturePlan};
use crate::diagnose::{self, plan::DiagnosisPlan};
use crate::error::Error;
use crate::execute;
use crate::matrix::{self, plan::MatrixPlan};
use crate::policy::audit::AuditLine;
use crate::registry::Link;
use crate::revocation::Revocation;
use crate::state::Coordinator;
use crate::telemetry;
use crate::tool_run::{self, ToolPlan};

/// Longest serial accepted by RevokeCertificate, in hex digits (X.509 allows 20 bytes).
const MAX_SERIAL_HEX: usize = 40;
/// How long a revocation waits for room in a probe's queue to say why its
/// stream ends.
const REVOKE_SEND_WAIT: Duration = Duration::from_millis(200);

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
        self.gate(&req, "Control.ListProbes", Access::Read, "", |_| Ok(()))?;
        let r = req.get_ref();
        let probes = self.state.registry().list();
        let page = bounds::page(
            probes.iter(),
            |p| &p.name,
            &r.page_token,
            bounds::page_items(r.page_size),
            Clone::clone,
        )?;
        Ok(Response::new(pb::ListProbesResponse {
            probes: page.items,
            next_page_token: page.next_token,
        }))
    }

    type StartRunStream = RunStream;

    async fn start_run(
        &self,
        req: Request<pb::RunRequest>,
    ) -> Result<Response<Self::StartRunStream>, Status> {
        let r = req.get_ref();
        let target = format!(
            "{} from {} to {}",
            telemetry::request_kind(r),
            r.from,
            telemetry::request_target(r)
        );
        let (caller, ticket) = self.gate(
            &req,
            "Control.StartRun",
            Access::Operate,
            &target,
            |caller| {
                if self.state.shutdown.is_draining() {
                    return Err(Error::ShuttingDown);
                }
                if let Some(why) = self.state.out_of_mesh() {
                    return Err(Error::OutOfMesh(why));
                }
                bounds::check_run_request(r)?;
                let inventory = self.state.inventory.current();
                self.state.policy.admit(
                    &caller.identity,
                    r,
                    &self.state.registry(),
                    inventory.as_deref(),
                    tokio::time::Instant::now(),
                )
            },
        )?;
        let request = req.into_inner();
        let run_id = random_hex(8);
        let (span, trace_id) = telemetry::run_span(&run_id, &caller.identity.name, &request);
        let inventory = self.state.inventory.current();
        let mut planned = tracing::info_span!(parent: &span, "probemesh.plan").in_scope(|| {
            match &request.kind {
                Some(pb::run_request::Kind::Capture(req)) => capture::plan::plan(
                    req,
                    self.state.payload_policy,
                    &self.state.registry(),
                    inventory.as_deref(),
                )
                .map(Planned::Capture),
                Some(pb::run_request::Kind::Probe(probe)) => diagnose::plan::plan(
                    &request.from,
                    probe,
                    &self.state.registry(),
                    inventory.as_deref(),
                    self.state.payload_policy,
                    self.state.listen_port,
                )
                .map(|p| Planned::Probe(Box::new(p))),
                Some(pb::run_request::Kind::Mesh(mesh)) => {
                    matrix::plan::plan(mesh, &self.state.registry().list(), inventory.as_deref())
                        .map(Planned::Matrix)
                }
                _ => tool_run::prepare(&request, &self.state.registry(), inventory.as_deref())
                    .map(|(plan, link)| Planned::Single(plan, link)),
            }
            .inspect_err(|e| tracing::info!(error = %e, "run refused"))
        })?;
        planned
            .compile_filter()
            .await
            .inspect_err(|e| span.in_scope(|| tracing::info!(error = %e, "run refused")))?;
        if let Planned::Single(plan, _) = &planned {
            span.record("probe", plan.source.probe.as_str());
        }
        let mut record = pb::RunRecord {
            run_id: run_id.clone(),
            trace_id: trace_id.clone(),
            requester: caller.identity.name.clone(),
            request: Some(request.clone()),
            started_unix_ms: self.state.clock.now_unix_ms(),
            ..Default::default()
        };
        execute::begin(&self.state, &mut record)
            .instrument(span.clone())
            .await
            .inspect_err(|e| {
                span.in_scope(
                    || tracing::error!(error = %e, "run refused: its start cannot be recorded"),
                );
            })?;
        span.in_scope(|| tracing::info!(run_id = %run_id, trace_id = %trace_id, requester = %caller.identity.name, from = %request.from, "run started"));

        let (requester, rx) = mpsc::channel(64);
        let _ = requester.try_send(Ok(accepted(&run_id, trace_id)));
        let tx = self.state.live.follow(&run_id, requester);
        let state = self.state.clone();
        let run: Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match planned {
            Planned::Capture(plan) => Box::pin(capture::run::follow(state, plan, record, tx)),
            Planned::Single(plan, link) => {
                Box::pin(tool_run::follow(state, link, plan, record, tx))
            }
            Planned::Probe(plan) => Box::pin(diagnose::run::follow(state, *plan, record, tx)),
            Planned::Matrix(plan) => Box::pin(matrix::run::follow(state, plan, record, tx)),
        };
        // The ticket holds the run's share of the policy's limits until it ends.
        self.state.shutdown.spawn_run(
            async move {
                run.await;
                drop(ticket);
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_runs(
        &self,
        req: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        self.gate(&req, "Control.ListRuns", Access::Read, "", |_| Ok(()))?;
        let r = req.get_ref();
        let asked = if r.page_size == 0 {
            r.limit
        } else {
            r.page_size
        };
        let page = self
            .state
            .store
            .runs_page(&r.page_token, bounds::page_items(asked))
            .await?;
        Ok(Response::new(pb::ListRunsResponse {
            runs: page.items,
            next_page_token: page.next_token,
        }))
    }

    async fn get_run(
        &self,
        req: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::RunRecord>, Status> {
        let id = req.get_ref().run_id.clone();
        self.gate(&req, "Control.GetRun", Access::Read, &id, |_| Ok(()))?;
        let id = &req.get_ref().run_id;
        self.state
            .store
            .run(id)
            .await?
            .map(|record| Response::new(bounds::fit_run(&record)))
            .ok_or_else(|| Error::NotFound(format!("no run '{id}' (see `meshctl runs`)")).into())
    }

    async fn create_join_token(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        let name = req.get_ref().name.clone();
        let (caller, ()) = self.gate(
            &req,
            "Control.CreateJoinToken",
            Access::Operate,
            &name,
            |_| Ok(()),
        )?;
        let r = req.into_inner();
        let ttl = Duration::from_secs(r.ttl_seconds);
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(Error::InvalidRequest(format!(
                "token ttl must be between 1s and {}",
                humantime::format_duration(MAX_TOKEN_TTL)
            ))
            .into());
        }
        if self.state.registry().knows(&r.name) {
            return Err(Error::NameTaken(format!(
                "probe '{}' is registered with this coordinator: a token would hand its name to another host. \
                 Revoke its certificate first (`meshctl certs revoke {}`), or pick another name",
                r.name, r.name
            ))
            .into());
        }
        let issued = self
            .state
            .store
            .create_token(&r.name, ttl, &self.state.ca, self.state.clock.now_unix_ms())
            .await?;
        tracing::info!(name = %r.name, by = %caller.identity.name, expires_unix_ms = issued.expires_unix_ms, "join token created");
        Ok(Response::new(issued))
    }

    async fn revoke_certificate(
        &self,
        req: Request<pb::RevokeCertificateRequest>,
    ) -> Result<Response<pb::RevokeCertificateResponse>, Status> {
        let r = req.get_ref();
        let target = if r.name.is_empty() {
            r.serial.clone()
        } else {
            r.name.clone()
        };
        let (caller, ()) = self.gate(
            &req,
            "Control.RevokeCertificate",
            Access::Operate,
            &target,
            |_| Ok(()),
        )?;
        let r = req.into_inner();
        let serial = r.serial.trim().replace(':', "").to_ascii_lowercase();
        match (r.name.is_empty(), serial.is_empty()) {
            (false, true) => {
                validate_name(&r.name).map_err(|e| Error::InvalidRequest(e.to_string()))?
            }
            (true, false)
                if serial.len() <= MAX_SERIAL_HEX
                    && serial.bytes().all(|b| b.is_ascii_hexdigit()) => {}
            (true, false) => {
                return Err(Error::InvalidRequest(format!(
                    "serial '{}' is not up to {MAX_SERIAL_HEX} hex digits",
                    r.serial
                ))
                .into());
            }
            _ => {
                return Err(Error::InvalidRequest(
                    "name exactly one certificate name or one serial to revoke".into(),
                )
                .into());
            }
        }
        let now = self.state.clock.now_unix_ms();
        let revocation = Revocation {
            name: r.name.clone(),
            serial: serial.clone(),
            revoked_unix_ms: now,
            by: caller.identity.name.clone(),
        };
        self.state.store.add_revocation(&revocation).await?;
        self.state.revocations.add(revocation.clone());
        let tokens_withdrawn = if r.name.is_empty() {
            0
        } else {
            self.state.store.withdraw_tokens(&r.name).await?
        };
        let dropped_streams = drop_revoked(&self.state, &revocation).await;
        tracing::warn!(name = %r.name, %serial, by = %caller.identity.name, ?dropped_streams, tokens_withdrawn, "certificate revoked");
        if !serial.is_empty() {
            // Whose certificate it was, when a coordinator signed it (a
            // hand-issued one, `meshctl certs issue`, is not recorded).
            match self.state.store.certificate(&serial).await {
                Ok(Some(issued)) => {
                    tracing::warn!(%serial, name = %issued.name, role = %issued.role, issued_unix_ms = issued.issued_unix_ms, by = ?issued.by, "the revoked serial was signed by a coordinator")
                }
                Ok(None) => {
                    tracing::warn!(%serial, "the revoked serial was not signed by a coordinator of this mesh (hand-issued, or a typo?)")
                }
                Err(e) => tracing::warn!(%serial, error = %e, "cannot look up the revoked serial"),
            }
        }
        Ok(Response::new(pb::RevokeCertificateResponse {
            name: r.name,
            serial,
            revoked_unix_ms: now,
            dropped_streams,
            tokens_withdrawn,
        }))
    }

    async fn issue_viewer_token(
        &self,
        req: Request<pb::IssueViewerTokenRequest>,
    ) -> Result<Response<pb::IssueViewerTokenResponse>, Status> {
        let (caller, ttl) =
            self.gate(&req, "Control.IssueViewerToken", Access::Read, "", |_| {
                viewer_ttl(req.get_ref().ttl_seconds)
            })?;
        let now_ms = self.state.clock.now_unix_ms();
        let asked = now_ms.div_euclid(1_000).saturating_add(ttl);
        // A token never outlives the certificate it was issued for.
        let expires_unix = asked.min(caller.identity.not_after_unix);
        let claims = ViewerClaims {
            name: caller.identity.name.clone(),
            serial: caller.identity.serial.clone(),
            cert_not_before_unix: caller.identity.not_before_unix,
            expires_unix,
        };
        let token =
            self.state.viewer_key.mint(&claims).map_err(|e| {
                Error::InvalidRequest(format!("no token for this certificate: {e}"))
            })?;
        tracing::info!(identity = %caller.identity.name, expires_unix, "viewer token issued");
        Ok(Response::new(pb::IssueViewerTokenResponse {
            token,
            expires_unix_ms: expires_unix.saturating_mul(1_000),
            identity: caller.identity.name,
            web_port: u32::from(self.state.web_port),
        }))
    }
}

/// Applies the revocations other coordinators store (`rx`, from
/// [`crate::store::StateStore::follow_revocations`]): each new one counts
/// here at once and drops the live streams it covers, as a revocation made
/// here does. Ends when the store stops following.
pub async fn follow_revocations(state: Arc<Coordinator>, mut rx: mpsc::Receiver<Revocation>) {
    while let Some(revocation) = rx.recv().await {
        if state.revocations.add(revocation.clone()) {
            let dropped_streams = drop_revoked(&state, &revocation).await;
            tracing::warn!(name = %revocation.name, serial = %revocation.serial, by = %revocation.by, ?dropped_streams, "certificate revoked on another coordinator");
        }
    }
}

/// Drops, at once, the live streams of the certificates `revocation`
/// covers: each ends with a PermissionDenied status naming the revocation,
/// its tasks fail, and its probe is forgotten. Returns the probes dropped.
async fn drop_revoked(state: &Coordinator, revocation: &Revocation) -> Vec<String> {
    let dropped = state.registry().drop_revoked(|id| revocation.covers(id));
    let mut names = Vec::with_capacity(dropped.len());
    for (name, link) in dropped {
        let status = Status::permission_denied(format!(
            "the certificate of '{name}' was revoked by {}; this stream is closed",
            revocation.by
        ));
        // The stream ends with this status; a full queue ends it when the
        // last task holding the link lets go.
        let _ = tokio::time::timeout(REVOKE_SEND_WAIT, link.tx.send(Err(status))).await;
        state.metrics.forget_clock(&name);
        state.metrics.identity_refused("revoked_stream_dropped");
        state.dispatcher.fail_connection(&name, link.conn);
        tracing::warn!(probe = %name, conn = link.conn.0, "live stream of a revoked certificate dropped");
        names.push(name);
    }
    state
        .metrics
        .set_connected(state.registry().connected_count());
    names
}

impl ControlService {
    /// Every Control call's door: authorizes `req` for `call`, runs `check`
    /// (the policy, for the calls it governs) and writes the call's audit
    /// line, allowed or denied, naming what it was about (`target`).
    fn gate<T, R>(
        &self,
        req: &Request<T>,
        call: &'static str,
        access: Access,
        target: &str,
        check: impl FnOnce(&Caller) -> Result<R, Error>,
    ) -> Result<(Caller, R), Error> {
        let outcome = authorize(req, &self.state.revocations, call, access)
            .and_then(|caller| check(&caller).map(|r| (caller, r)));
        let peer = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.identity.as_ref());
        let rule = match &outcome {
            Ok(_) => "",
            Err(Error::PolicyDenied { rule, .. } | Error::PolicyExhausted { rule, .. }) => rule,
            Err(Error::NoCertificate { .. }) => "authz.certificate",
            Err(Error::Forbidden { .. }) => "authz.role",
            Err(Error::Revoked { .. }) => "authz.revoked",
            Err(Error::ShuttingDown) => "shutting-down",
            Err(Error::OutOfMesh(_)) => "out-of-mesh",
            Err(_) => "invalid-request",
        };
        self.state.policy.audit.record(&AuditLine {
            time_unix_ms: self.state.clock.now_unix_ms(),
            identity: peer.map_or("", |i| i.name.as_str()),
            role: peer.map_or("", |i| i.role.as_str()),
            call,
            target,
            decision: if outcome.is_ok() { "allow" } else { "deny" },
            rule,
        });
        if let Err(e) = &outcome {
            tracing::info!(call, error = %e, "call refused");
        }
        outcome
    }
}

/// A run request, planned.
enum Planned {
    /// One task on one probe.
    Single(ToolPlan, Link),
    /// A capture on several observers.
    Capture(CapturePlan),
    /// A diagnosis: many checks, captures, a verdict.
    Probe(Box<DiagnosisPlan>),
    /// `meshctl mesh`: every selected probe to every selected host.
    Matrix(MatrixPlan),
}

impl Planned {
    /// Compiles the capture filter, if the run captures (off the async
    /// threads, bounded: [`capture::compile`]).
    async fn compile_filter(&mut self) -> Result<(), Error> {
        let capture = match self {
            Planned::Capture(plan) => Some(plan),
            Planned::Probe(plan) => plan.capture.as_mut(),
            Planned::Single(..) | Planned::Matrix(_) => None,
        };
        match capture {
            Some(plan) => capture::compile::programs(&mut plan.template).await,
            None => Ok(()),
        }
    }
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

/// `n` random bytes as lowercase hex.
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill(bytes.as_mut_slice());
    hex::encode(bytes)
}

/// A viewer token's lifetime in seconds: `ttl_seconds`, or the default for
/// 0; refused past the longest.
fn viewer_ttl(ttl_seconds: u64) -> Result<i64, Error> {
    let ttl = if ttl_seconds == 0 {
        DEFAULT_VIEWER_TTL
    } else {
        Duration::from_secs(ttl_seconds)
    };
    if ttl > MAX_VIEWER_TTL {
        return Err(Error::InvalidRequest(format!(
            "a viewer token lives at most {}; ask for less with --ttl",
            humantime::format_duration(MAX_VIEWER_TTL)
        )));
    }
    Ok(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
}
