//! The probe's side of ProbeLink: dial out to the coordinator, say Hello,
//! keep heartbeats and clock replies flowing (and the UDP clock exchange,
//! [`crate::clock_udp`], when the Welcome offers one), run the tasks pushed down the
//! stream, renew its certificate over the stream at about 2/3 of its
//! lifetime ([`crate::renew`]), and reconnect with backoff forever.
//!
//! Session lifecycle ([`Session`]):
//! `Connecting` → (TLS + Attach ok) → `Attached` → (stream ends or errs) →
//! `Waiting` (backoff) → `Connecting` … until shutdown.
//!
//! The backoff resets once a session has been attached for
//! [`STABLE_HEARTBEATS`] heartbeats, and when the coordinator sends GoAway
//! (it is shutting down): the probe then reconnects at once, or after the
//! GoAway's `retry_after_ms`.
//!
//! With several coordinators ([`Coordinators`], shuffled once at start) each
//! new attempt after a failure, a closed stream or a GoAway dials the next
//! address: any live coordinator serves the probe.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use probemesh_proto::pb;
use probemesh_proto::pb::coordinator_message::Msg;
use probemesh_proto::pki::TlsDir;
use probemesh_telemetry::{Condition, task_kind_name, task_result_class};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::backoff::Backoff;
use crate::capture::{ArmSignal, Told};
use crate::coordinators::Coordinators;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::platform::Timestamp;
use crate::renew;
use crate::telemetry::Moments;
use crate::time::unix_ns;

/// Heartbeat intervals attached after which the connection counts as held
/// and the backoff resets.
pub const STABLE_HEARTBEATS: u32 = 3;
/// Longest wait a GoAway may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Heartbeat interval until the coordinator's Welcome says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Messages queued towards the coordinator.
const OUT_BUFFER: usize = 256;

/// Who this probe is and where to report.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    /// Probe name; must match its certificate (DIR/NAME.pem).
    pub name: String,
    /// The coordinators (`https://HOST:PORT` each) this probe may attach to.
    pub coordinators: Coordinators,
    /// Directory holding ca.pem and NAME.pem/NAME-key.pem.
    pub tls_dir: std::path::PathBuf,
    /// Node of the cluster, or a host outside it.
    pub role: pb::ProbeRole,
    /// Free-form labels shown in `meshctl probes`.
    pub labels: BTreeMap<String, String>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The readiness condition this link sets (`/readyz`): it holds while
    /// the stream to the coordinator is attached.
    pub attached: Condition,
}

/// Where the reconnect loop stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// Dialling the coordinator and attaching.
    Connecting,
    /// Attached; serving the stream.
    Attached,
    /// Waiting out the backoff after a failure or a closed stream.
    Waiting(Duration),
}

/// Runs the probe until `shutdown` is cancelled. Fails only on local
/// configuration errors (missing certificates); network trouble is retried.
pub async fn run(settings: ProbeSettings, shutdown: CancellationToken) -> Result<()> {
    let mut backoff = Backoff::default();
    let mut coordinators = settings.coordinators.clone();
    coordinators.shuffle(&mut rand::rng());
    loop {
        let coordinator = coordinators.current().to_owned();
        // Read on every connection: a certificate renewed over the last
        // stream is used from the next one.
        let tls = probemesh_proto::tls::client_config(
            &TlsDir::new(settings.tls_dir.clone()),
            &settings.name,
        )?;
        tracing::debug!(state = ?Session::Connecting, %coordinator);
        let outcome = tokio::select! {
            r = session(&settings, &coordinator, tls.clone(), &mut backoff) => r,
            () = shutdown.cancelled() => return Ok(()),
        };
        settings.metrics.link_up.set(0);
        settings.metrics.link_failures.inc();
        coordinators.advance();
        let mut retry_after = None;
        match outcome {
            Ok(Ended::Closed) => {
                settings
                    .attached
                    .fails(format!("{coordinator} closed the stream; reconnecting"));
                tracing::warn!(%coordinator, "coordinator closed the stream")
            }
            Ok(Ended::GoAway(go_away)) => {
                settings.attached.fails(format!(
                    "{} is going away ({}); reconnecting",
                    coordinator, go_away.reason
                ));
                tracing::info!(%coordinator, reason = %go_away.reason, "coordinator going away; reconnecting");
                backoff.reset();
                // Another coordinator is dialled at once; the one going
                // away is waited for only when it is the only one.
                retry_after = go_away
                    .retry_after_ms
                    .filter(|_| !coordinators.several())
                    .map(|ms| Duration::from_millis(u64::from(ms)).min(MAX_RETRY_AFTER));
            }
            Err(e) => {
                settings
                    .attached
                    .fails(format!("no stream to {coordinator}: {e}"));
                tracing::warn!(%coordinator, error = %e, "probe link failed")
            }
        }
        let wait = retry_after.unwrap_or_else(|| backoff.next_delay(rand::random::<f64>()));
        tracing::info!(state = ?Session::Waiting(wait), "reconnecting in {wait:?}");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// How an attached session ended without an error.
#[derive(Debug)]
enum Ended {
    /// The coordinator closed the stream.
    Closed,
    /// The coordinator said it is going away.
    GoAway(pb::GoAway),
}

/// One attached session; returns when the stream ends. Resets `backoff`
/// once attached for [`STABLE_HEARTBEATS`] heartbeat intervals.
async fn session(
    settings: &ProbeSettings,
    coordinator: &str,
    tls: Arc<rustls::ClientConfig>,
    backoff: &mut Backoff,
) -> Result<Ended> {
    let channel = probemesh_proto::tls::connect(coordinator, tls).await?;
    let mut client = pb::probe_link_client::ProbeLinkClient::new(channel);
    let (out, out_rx) = mpsc::channel(OUT_BUFFER);
    let hello = pb::Hello {
        name: settings.name.clone(),
        role: settings.role.into(),
        labels: settings.labels.clone().into_iter().collect(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        capabilities: crate::tasks::capabilities(),
        interfaces: crate::interfaces::list().iter().map(Into::into).collect(),
    };
    send(&out, pb::probe_message::Msg::Hello(hello)).await?;
    let mut inbound = client
        .attach(ReceiverStream::new(out_rx))
        .await
        .map_err(|status| Error::Refused(status.message().to_owned()))?
        .into_inner();
    tracing::info!(state = ?Session::Attached, %coordinator, "attached to coordinator");
    settings.metrics.attaches.inc();
    settings.metrics.link_up.set(1);
    settings.attached.holds();

    let mut heartbeat = tokio::time::interval(DEFAULT_HEARTBEAT);
    let mut beat = 0u64;
    // Heartbeats since the Welcome; the first is sent at once, so the
    // `STABLE_HEARTBEATS + 1`-th goes out that many intervals in.
    let mut session_beats = 0u32;
    let mut running: HashMap<String, Running> = HashMap::new();
    // Ends this session's UDP clock exchange when dropped (or replaced),
    // and passes it the coordinator's ClockBursts.
    let mut udp_clock: Option<(tokio_util::sync::DropGuard, mpsc::Sender<pb::ClockBurst>)> = None;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let dir = TlsDir::new(settings.tls_dir.clone());
    let renew_sleep = tokio::time::sleep_until(until(renew::due(&dir, &settings.name)));
    tokio::pin!(renew_sleep);
    // The key of a renewal asked for, until its certificate arrives.
    let mut renewal: Option<renew::Request> = None;
    let mut renewal_asked = false;
    let result = loop {
        tokio::select! {
            msg = inbound.message() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => break Ok(Ended::Closed),
                    Err(status) => break Err(Error::Stream(status.message().to_owned())),
                };
                let received_ns = unix_ns();
                match msg.msg {
                    Some(Msg::Welcome(w)) => {
                        let every = Duration::from_millis(u64::from(w.heartbeat_interval_ms).max(100));
                        heartbeat = tokio::time::interval(every);
                        session_beats = 0;
                        if let Some(offer) = w.udp_clock {
                            let cancel = CancellationToken::new();
                            let (bursts, asked) = mpsc::channel(1);
                            tokio::spawn(crate::clock_udp::run(offer, coordinator.to_owned(), asked, cancel.clone()));
                            udp_clock = Some((cancel.drop_guard(), bursts));
                        }
                    }
                    Some(Msg::ClockRequest(r)) => {
                        let reply = pb::ClockReply { seq: r.seq, t1_ns: r.t1_ns, t2_ns: received_ns, t3_ns: unix_ns() };
                        send(&out, pb::probe_message::Msg::ClockReply(reply)).await?;
                    }
                    Some(Msg::Task(task)) => {
                        let tokens = Running::default();
                        running.insert(task.task_id.clone(), tokens.clone());
                        let context = crate::tasks::TaskContext { probe_name: settings.name.clone(), stop: tokens.stop, arm: tokens.arm };
                        tokio::spawn(execute(task, context, out.clone(), tokens.cancel, done_tx.clone(), settings.metrics.clone()));
                    }
                    Some(Msg::Cancel(c)) => {
                        if let Some(tokens) = running.remove(&c.task_id) {
                            tracing::info!(task_id = %c.task_id, "task cancelled by the coordinator");
                            tokens.cancel.cancel();
                        }
                    }
                    Some(Msg::Certificate(c)) => match renewal.take() {
                        Some(request) => match request.store(&dir, &settings.name, &c.certificate_pem) {
                            Ok(not_after) => {
                                settings.metrics.set_certificate_expiry("probe", not_after);
                                tracing::info!("certificate renewed over the stream; used from the next connection");
                                renew_sleep.as_mut().reset(until(renew::due(&dir, &settings.name)));
                                renewal_asked = false;
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot store the renewed certificate"),
                        },
                        None => tracing::warn!("ignoring a certificate nobody asked for"),
                    },
                    Some(Msg::GoAway(go_away)) => break Ok(Ended::GoAway(go_away)),
                    Some(Msg::ClockBurst(burst)) => {
                        // One burst pending is enough: a second asked meanwhile is the same burst.
                        if let Some((_, bursts)) = &udp_clock {
                            let _ = bursts.try_send(burst);
                        }
                    }
                    Some(Msg::Arm(a)) => match running.get(&a.task_id) {
                        Some(_) if a.arm_at_unix_ns < 0 => tracing::warn!(task_id = %a.task_id, arm_at_unix_ns = a.arm_at_unix_ns, "ignoring an arming instant before the Unix epoch"),
                        Some(tokens) => tokens.arm.arm(Told { at: Timestamp::from_nanos(a.arm_at_unix_ns), clock: a.clock_note }),
                        None => tracing::debug!(task_id = %a.task_id, "arming instant for a task no longer running"),
                    },
                    Some(Msg::Stop(s)) => {
                        if let Some(tokens) = running.get(&s.task_id) {
                            tracing::info!(task_id = %s.task_id, "task stopped early by the coordinator");
                            tokens.stop.cancel();
                        }
                    }
                    None => {}
                }
            }
            _ = heartbeat.tick() => {
                beat += 1;
                session_beats = session_beats.saturating_add(1);
                if session_beats == STABLE_HEARTBEATS + 1 {
                    backoff.reset();
                }
                send(&out, pb::probe_message::Msg::Heartbeat(pb::Heartbeat { seq: beat })).await?;
            }
            Some(task_id) = done_rx.recv() => {
                running.remove(&task_id);
            }
            () = &mut renew_sleep, if !renewal_asked => {
                renewal_asked = true;
                let (request, csr_pem) = renew::Request::new(&settings.name)?;
                renewal = Some(request);
                tracing::info!("asking the coordinator to renew this probe's certificate");
                send(&out, pb::probe_message::Msg::Renew(pb::CertificateRenewal { csr_pem })).await?;
            }
        }
    };
    for tokens in running.values() {
        tokens.cancel.cancel();
    }
    drop(udp_clock);
    result
}

/// A running task's two ways to end early: `cancel` abandons it, `stop`
/// ends it normally (a capture still delivers its file); and the arming
/// instant of a capture told to wait for it.
#[derive(Debug, Clone, Default)]
struct Running {
    cancel: CancellationToken,
    stop: CancellationToken,
    arm: ArmSignal,
}

/// Runs one task, forwarding its progress, then sends its result.
async fn execute(
    task: pb::Task,
    context: crate::tasks::TaskContext,
    out: mpsc::Sender<pb::ProbeMessage>,
    cancel: CancellationToken,
    done: mpsc::UnboundedSender<String>,
    metrics: Metrics,
) {
    let task_id = task.task_id.clone();
    let span = crate::telemetry::task_span(&task);
    let kind = task.kind.as_ref().map_or("none", task_kind_name);
    let started = Instant::now();
    metrics.tasks_running.inc();
    let (progress_tx, mut progress_rx) = mpsc::channel::<pb::TaskProgress>(64);
    let forward_out = out.clone();
    let mut moments = Moments::new(span.clone());
    let forwarder = tokio::spawn(async move {
        while let Some(p) = progress_rx.recv().await {
            moments.observe(&p);
            if send(&forward_out, pb::probe_message::Msg::Progress(p))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut result = crate::tasks::run_task_with(context, task, progress_tx, cancel)
        .instrument(span)
        .await;
    let _ = forwarder.await;
    metrics.tasks_running.dec();
    metrics.task_finished(kind, task_result_class(&result), started.elapsed());
    result.task_id.clone_from(&task_id);
    let _ = send(&out, pb::probe_message::Msg::Result(result)).await;
    let _ = done.send(task_id);
}

/// The instant `at` falls on (now when it is past; far off when unknown).
fn until(at: Option<std::time::SystemTime>) -> tokio::time::Instant {
    const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);
    let wait = at.map_or(NEVER, |at| {
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
    });
    tokio::time::Instant::now() + wait
}

async fn send(out: &mpsc::Sender<pb::ProbeMessage>, msg: pb::probe_message::Msg) -> Result<()> {
    out.send(pb::ProbeMessage { msg: Some(msg) })
        .await
        .map_err(|_| Error::Stream("outbound stream closed".into()))
}
