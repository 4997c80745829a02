//! The ProbeLink service: each probe's long-lived stream.
//!
//! Attach: certificate must be a probe's; the first message must be a Hello
//! naming the certificate's probe, within `hello_timeout`. Then the
//! coordinator answers Welcome (with a UDP clock session when
//! [`crate::clock_udp`] is bound), runs clock exchanges
//! ([`crate::clock_sync`]), and routes the probe's heartbeats, progress and results.
//! One live stream per probe: while a probe's stream answers, a second
//! stream for its name is refused (same certificate or not); a stream silent
//! for three heartbeats is taken over. The stream ends when the probe hangs
//! up, is taken over, or falls silent for three heartbeats. With several
//! coordinators the rule holds across them: the name is claimed in etcd
//! first ([`crate::mesh::membership`]).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use probemesh_proto::identity::{Role, validate_probe_name};
use probemesh_proto::pb;
use probemesh_proto::pb::probe_message::Msg;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use crate::authz::{Access, authorize};
use crate::clock::{ClockPath, Exchange};
use crate::clock_udp::{Registration, UdpClock};
use crate::error::Error;
use crate::mesh::membership::Membership;
use crate::registry::ConnId;
use crate::state::Coordinator;
use crate::store::Issuance;

/// Messages queued towards one probe before senders wait.
const LINK_BUFFER: usize = 64;
/// Largest renewal CSR accepted (a P-256 CSR is about 500 bytes).
const MAX_CSR: usize = 8 << 10;
/// ProbeLink over the shared state.
#[derive(Debug, Clone)]
pub struct LinkService {
    state: Arc<Coordinator>,
    udp_clock: Option<Arc<UdpClock>>,
    membership: Option<Arc<Membership>>,
}

impl LinkService {
    /// The service; `udp_clock`, when bound, is offered to every probe;
    /// with `membership` (several coordinators) each stream's name is
    /// claimed in etcd before it is attached.
    pub fn new(
        state: Arc<Coordinator>,
        udp_clock: Option<Arc<UdpClock>>,
        membership: Option<Arc<Membership>>,
    ) -> Self {
        Self {
            state,
            udp_clock,
            membership,
        }
    }
}

type OutStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::probe_link_server::ProbeLink for LinkService {
    type AttachStream = OutStream;

    async fn attach(
        &self,
        req: Request<Streaming<pb::ProbeMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let caller = authorize(
            &req,
            &self.state.revocations,
            "ProbeLink.Attach",
            Access::Probe,
        )
        .inspect_err(|e| {
            if matches!(e, Error::Revoked { .. }) {
                self.state.metrics.identity_refused("revoked");
            }
        })?;
        let remote = caller
            .remote_addr
            .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        validate_probe_name(&caller.identity.name).map_err(|e| {
            self.state.metrics.identity_refused("reserved_name");
            tracing::warn!(probe = %caller.identity.name, %remote, reason = %e, "probe attach refused");
            Error::InvalidRequest(format!("no probe may attach under this name: {e}"))
        })?;
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(self.state.timing.hello_timeout, inbound.message())
            .await
            .map_err(|_| Error::InvalidRequest("no Hello within the hello timeout".into()))??;
        let hello = match first.and_then(|m| m.msg) {
            Some(Msg::Hello(h)) => h,
            _ => {
                return Err(Error::InvalidRequest(
                    "the first message on a probe link must be Hello".into(),
                )
                .into());
            }
        };
        let name = caller.identity.name.clone();
        crate::bounds::check_hello(&hello).inspect_err(
            |e| tracing::warn!(probe = %name, %remote, reason = %e, "probe attach refused"),
        )?;
        // A Hello naming someone else is refused by the registry below,
        // before anything is claimed in that name.
        if let Some(membership) = self.membership.as_ref().filter(|_| hello.name == name) {
            let now_ms = self.state.clock.now_unix_ms();
            membership
                .claim(&hello, &remote.to_string(), now_ms)
                .await
                .inspect_err(|e| {
                    self.state.metrics.identity_refused("live_stream");
                    tracing::warn!(probe = %name, %remote, reason = %e, "probe attach refused");
                })?;
        }
        let (tx, rx) = mpsc::channel(LINK_BUFFER);
        let attached = {
            let now_ms = self.state.clock.now_unix_ms();
            self.state.registry().attach(
                &caller.identity,
                hello.clone(),
                remote,
                tx.clone(),
                tokio::time::Instant::now(),
                now_ms,
                self.state.timing.liveness_bound(),
            )
        };
        let attached = attached
            .inspect_err(|e| {
                self.state.metrics.identity_refused("live_stream");
                tracing::warn!(probe = %name, %remote, reason = %e, "probe attach refused");
            })
            .map_err(Error::from)?;
        if let Some(old) = attached.replaced {
            tracing::info!(probe = %name, %remote, "probe reconnected; taking over its silent stream");
            self.state.dispatcher.fail_connection(&name, old.conn);
        }
        self.state.metrics.attached(&name);
        self.state
            .metrics
            .set_connected(self.state.registry().connected_count());
        tracing::info!(
            probe = %name, %remote, role = hello.role().as_str_name(), version = %hello.version,
            "probe attached"
        );
        let (udp_session, udp_clock) = match &self.udp_clock {
            Some(clock) => {
                let (registration, offer) = clock.register(&name, attached.conn);
                (Some(registration), Some(offer))
            }
            None => (None, None),
        };
        let welcome = pb::CoordinatorMessage {
            msg: Some(pb::coordinator_message::Msg::Welcome(pb::Welcome {
                heartbeat_interval_ms: u32::try_from(self.state.timing.heartbeat.as_millis())
                    .unwrap_or(u32::MAX),
                udp_clock,
            })),
        };
        // The channel is fresh and has room: this cannot wait.
        let _ = tx.try_send(Ok(welcome));

        let span = tracing::info_span!("probe_link", probe = %name, conn = attached.conn.0);
        tokio::spawn(
            crate::clock_sync::run(self.state.clone(), tx.downgrade()).instrument(span.clone()),
        );
        drop(tx);
        tokio::spawn(
            read_loop(
                self.state.clone(),
                name,
                attached.conn,
                inbound,
                udp_session,
            )
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Reads the probe's messages until the stream ends, then detaches it and
/// ends its UDP clock session.
async fn read_loop(
    state: Arc<Coordinator>,
    name: String,
    conn: ConnId,
    mut inbound: Streaming<pb::ProbeMessage>,
    udp_session: Option<Registration>,
) {
    loop {
        match inbound.message().await {
            Ok(Some(msg)) => receive(&state, &name, conn, msg).await,
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(reason = %status.message(), "probe stream ended with an error");
                break;
            }
        }
    }
    hang_up(&state, &name, conn);
    drop(udp_session);
}

/// Takes one message from probe `name` on attachment `conn`: marks the
/// probe alive, feeds its clock replies to the estimator, and routes its
/// progress and results to whoever dispatched the task.
pub(crate) async fn receive(state: &Coordinator, name: &str, conn: ConnId, msg: pb::ProbeMessage) {
    let now = tokio::time::Instant::now();
    let now_ns = state.clock.now_unix_ns();
    state.registry().touch(name, conn, now, now_ns / 1_000_000);
    match msg.msg {
        Some(Msg::Heartbeat(_)) | None => {}
        Some(Msg::Hello(_)) => tracing::debug!("ignoring a repeated Hello"),
        Some(Msg::ClockReply(r)) => {
            let exchange = Exchange {
                path: ClockPath::Stream,
                t1_ns: r.t1_ns,
                t2_ns: r.t2_ns,
                t3_ns: r.t3_ns,
                t4_ns: now_ns,
            };
            let best = {
                let mut registry = state.registry();
                registry.observe_clock(name, conn, exchange);
                registry.clock(name)
            };
            if let Some(best) = best {
                state.metrics.set_clock(name, best);
            }
        }
        Some(Msg::Progress(p)) => state.dispatcher.progress(name, p).await,
        Some(Msg::Result(r)) => state.dispatcher.complete(name, r),
        Some(Msg::Renew(r)) => renew(state, name, conn, &r.csr_pem).await,
    }
}

/// Signs a renewal for the stream's own probe, unless its certificate is
/// revoked, and sends it down the stream.
async fn renew(state: &Coordinator, name: &str, conn: ConnId, csr_pem: &str) {
    let (identity, link) = {
        let registry = state.registry();
        match (registry.identity(name, conn).cloned(), registry.link(name)) {
            (Some(identity), Some(link)) if link.conn == conn => (identity, link),
            _ => return,
        }
    };
    if state.revocations.find(&identity).is_some() {
        tracing::warn!("renewal refused: the certificate is revoked");
        return;
    }
    if csr_pem.len() > MAX_CSR {
        tracing::warn!(
            len = csr_pem.len(),
            "renewal refused: CSR over {MAX_CSR} bytes"
        );
        return;
    }
    let validity = state.probe_validity();
    match state.ca.sign_csr(csr_pem, name, Role::Probe, validity) {
        Ok(certificate_pem) => {
            if let Err(e) = state
                .record_issued(&certificate_pem, Issuance::Renewal)
                .await
            {
                tracing::error!(error = %e, "renewal withheld: the certificate could not be recorded; the probe asks again");
                return;
            }
            let msg = pb::CoordinatorMessage {
                msg: Some(pb::coordinator_message::Msg::Certificate(
                    pb::RenewedCertificate { certificate_pem },
                )),
            };
            if link.tx.send(Ok(msg)).await.is_ok() {
                tracing::info!(not_after = %validity.not_after, "probe certificate renewed over the stream");
            }
        }
        Err(e) => tracing::warn!(error = %e, "renewal refused"),
    }
}

/// Ends probe `name`'s attachment `conn` after its stream closed: detaches
/// it (unless a reconnect replaced it) and fails the tasks sent over it.
pub(crate) fn hang_up(state: &Coordinator, name: &str, conn: ConnId) {
    if state.registry().detach(name, conn) {
        tracing::info!("probe detached");
        state.metrics.forget_clock(name);
        state
            .metrics
            .set_connected(state.registry().connected_count());
    }
    state.dispatcher.fail_connection(name, conn);
}

/// Disconnects probes that fell silent; runs for the coordinator's lifetime.
pub async fn liveness_sweeper(state: Arc<Coordinator>) {
    let mut tick = tokio::time::interval(state.timing.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let expired = state
            .registry()
            .expire(tokio::time::Instant::now(), state.timing.liveness_bound());
        if !expired.is_empty() {
            state
                .metrics
                .set_connected(state.registry().connected_count());
        }
        for (name, conn) in expired {
            state.metrics.forget_clock(&name);
            state.dispatcher.fail_connection(&name, conn);
            tracing::warn!(probe = %name, bound = ?state.timing.liveness_bound(), "probe missed three heartbeats; disconnected");
        }
    }
}
