//! Simulated probes for the scale benchmark (`src/bin/scale.rs`) and its
//! test (`tests/scale.rs`): many probe links in one process.
//!
//! Each simulated probe is a real probe link as far as the coordinator can
//! tell: its own mTLS connection with its own certificate signed by the
//! mesh's CA ([`issue_certificates`]), a real Hello, heartbeats at the
//! interval the Welcome names, answers to the stream's clock requests, the
//! UDP clock exchange through the probe crate's own
//! [`mesh_probe::clock_udp::run`], and an immediate trivial answer to every
//! task (an empty capture result; any other task is refused as a probe
//! failure). What it is not: a probe. It runs no task and does not
//! reconnect; a link that ends stays ended and says why.
//!
//! A probe can be frozen ([`SimProbe::freeze`]): it stops reading and
//! sending but keeps its connection open, which is how a probe whose
//! process hangs or whose network vanished looks to the coordinator.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use probemesh_proto::identity::Role;
use probemesh_proto::pb;
use probemesh_proto::pb::coordinator_message::Msg;
use probemesh_proto::pki::{CertAuthority, TlsDir, Validity};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Messages queued towards the coordinator per simulated probe (a
/// heartbeat, clock replies and task answers; nothing waits long).
const OUT_BUFFER: usize = 16;
/// Heartbeat interval until the Welcome names one (as the probe).
const FIRST_HEARTBEAT: Duration = Duration::from_secs(1);
/// Smallest heartbeat interval a Welcome may ask for (as the probe).
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// Where one simulated probe's link stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Connecting, attaching, or waiting for the Welcome.
    Connecting,
    /// The Welcome came: the coordinator holds the stream.
    Attached,
    /// Frozen on purpose: the connection is open, nothing moves on it.
    Frozen,
    /// The link ended; why.
    Ended(String),
}

/// A running simulated probe.
#[derive(Debug)]
pub struct SimProbe {
    /// The probe's name (and its certificate's).
    pub name: String,
    state: watch::Receiver<LinkState>,
    freeze: CancellationToken,
    stop: CancellationToken,
}

impl SimProbe {
    /// Starts probe `name` on the current tokio runtime, attaching to
    /// `coordinator` (`https://HOST:PORT`) with `tls_dir/NAME.pem`.
    pub fn spawn(name: &str, coordinator: &str, tls_dir: &Path) -> anyhow::Result<Self> {
        let tls = probemesh_proto::tls::client_config(&TlsDir::new(tls_dir), name)
            .with_context(|| format!("TLS configuration of simulated probe {name}"))?;
        let (state_tx, state) = watch::channel(LinkState::Connecting);
        let freeze = CancellationToken::new();
        let stop = CancellationToken::new();
        let link = Link {
            name: name.to_owned(),
            coordinator: coordinator.to_owned(),
            freeze: freeze.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            let ended = link.run(tls, &state_tx).await;
            let why = match ended {
                Ok(why) => why,
                Err(e) => format!("{e:#}"),
            };
            state_tx.send_replace(LinkState::Ended(why));
        });
        Ok(Self {
            name: name.to_owned(),
            state,
            freeze,
            stop,
        })
    }

    /// Where the link stands now.
    pub fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    /// Waits until the link is attached or has ended, at most `within`;
    /// returns where it stands then.
    pub async fn settled(&mut self, within: Duration) -> LinkState {
        let _ = tokio::time::timeout(
            within,
            self.state
                .wait_for(|s| matches!(s, LinkState::Attached | LinkState::Ended(_))),
        )
        .await;
        self.state()
    }

    /// Stops reading and sending, keeping the connection open.
    pub fn freeze(&self) {
        self.freeze.cancel();
    }
}

impl Drop for SimProbe {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One simulated probe's link task.
struct Link {
    name: String,
    coordinator: String,
    freeze: CancellationToken,
    stop: CancellationToken,
}

impl Link {
    /// Attaches and serves the stream until it ends, the probe is stopped,
    /// or (frozen) stopped; returns why it ended.
    async fn run(
        self,
        tls: Arc<rustls::ClientConfig>,
        state: &watch::Sender<LinkState>,
    ) -> anyhow::Result<String> {
        let channel = tokio::select! {
            c = probemesh_proto::tls::connect(&self.coordinator, tls) => c?,
            () = self.stop.cancelled() => return Ok("stopped".into()),
        };
        let mut client = pb::probe_link_client::ProbeLinkClient::new(channel);
        let (out, out_rx) = mpsc::channel(OUT_BUFFER);
        out.send(message(pb::probe_message::Msg::Hello(self.hello())))
            .await?;
        let mut inbound = tokio::select! {
            r = client.attach(ReceiverStream::new(out_rx)) => r.context("attach refused")?.into_inner(),
            () = self.stop.cancelled() => return Ok("stopped".into()),
        };
        let mut heartbeat = tokio::time::interval(FIRST_HEARTBEAT);
        let mut beat = 0u64;
        // Ends the UDP clock exchange when dropped, and passes it the
        // coordinator's ClockBursts.
        let mut udp_clock: Option<(tokio_util::sync::DropGuard, mpsc::Sender<pb::ClockBurst>)> =
            None;
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return Ok("stopped".into()),
                () = self.freeze.cancelled() => break,
                msg = inbound.message() => {
                    let msg = match msg {
                        Ok(Some(m)) => m,
                        Ok(None) => return Ok("the coordinator closed the stream".into()),
                        Err(status) => return Ok(format!("stream error: {}", status.message())),
                    };
                    let received_ns = mesh_probe::time::unix_ns();
                    match msg.msg {
                        Some(Msg::Welcome(w)) => {
                            let every = Duration::from_millis(u64::from(w.heartbeat_interval_ms))
                                .max(MIN_HEARTBEAT);
                            heartbeat = tokio::time::interval(every);
                            if let Some(offer) = w.udp_clock {
                                let cancel = CancellationToken::new();
                                let (bursts, asked) = mpsc::channel(1);
                                tokio::spawn(mesh_probe::clock_udp::run(
                                    offer,
                                    self.coordinator.clone(),
                                    asked,
                                    cancel.clone(),
                                ));
                                udp_clock = Some((cancel.drop_guard(), bursts));
                            }
                            state.send_replace(LinkState::Attached);
                        }
                        Some(Msg::ClockRequest(r)) => {
                            let reply = pb::ClockReply {
                                seq: r.seq,
                                t1_ns: r.t1_ns,
                                t2_ns: received_ns,
                                t3_ns: mesh_probe::time::unix_ns(),
                            };
                            out.send(message(pb::probe_message::Msg::ClockReply(reply))).await?;
                        }
                        Some(Msg::Task(task)) => {
                            out.send(message(pb::probe_message::Msg::Result(answer(&task)))).await?;
                        }
                        Some(Msg::ClockBurst(burst)) => {
                            if let Some((_, bursts)) = &udp_clock {
                                let _ = bursts.try_send(burst);
                            }
                        }
                        Some(Msg::GoAway(g)) => return Ok(format!("the coordinator is going away: {}", g.reason)),
                        Some(Msg::Cancel(_) | Msg::Stop(_) | Msg::Arm(_) | Msg::Certificate(_)) | None => {}
                    }
                }
                _ = heartbeat.tick() => {
                    beat += 1;
                    out.send(message(pb::probe_message::Msg::Heartbeat(pb::Heartbeat { seq: beat }))).await?;
                }
            }
        }
        // Frozen: hold the stream, its sender and the connection open, move nothing.
        drop(udp_clock);
        state.send_replace(LinkState::Frozen);
        self.stop.cancelled().await;
        drop((out, inbound, client));
        Ok("stopped".into())
    }

    fn hello(&self) -> pb::Hello {
        pb::Hello {
            name: self.name.clone(),
            role: pb::ProbeRole::Node.into(),
            labels: [("simulated".to_owned(), "true".to_owned())].into(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: vec!["capture".to_owned()],
            interfaces: vec![pb::Interface {
                name: "lo".to_owned(),
                mtu: 65_536,
                addresses: vec!["127.0.0.1/8".to_owned()],
                up: true,
            }],
        }
    }
}

fn message(msg: pb::probe_message::Msg) -> pb::ProbeMessage {
    pb::ProbeMessage { msg: Some(msg) }
}

/// The trivial answer to `task`: an empty capture (nothing captured, no
/// file), or a probe failure for any other kind.
fn answer(task: &pb::Task) -> pb::TaskResult {
    let outcome = match task.kind {
        Some(pb::task::Kind::Capture(_)) => pb::task_result::Outcome::Capture(pb::CaptureResult {
            ended_unix_ns: mesh_probe::time::unix_ns(),
            ..Default::default()
        }),
        _ => pb::task_result::Outcome::Error(pb::TaskError {
            kind: pb::task_error::Kind::ProbeFailure.into(),
            message: "a simulated probe answers captures only".to_owned(),
        }),
    };
    pb::TaskResult {
        task_id: task.task_id.clone(),
        outcome: Some(outcome),
    }
}

/// Probe names `PREFIX1` .. `PREFIXn`.
pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i}")).collect()
}

/// Signs a probe certificate for each of `names` with the CA in `tls_dir`
/// (its `ca.pem` and `ca-key.pem`), written as `NAME.pem`/`NAME-key.pem`
/// there.
pub fn issue_certificates(tls_dir: &Path, names: &[String]) -> anyhow::Result<()> {
    let dir = TlsDir::new(tls_dir);
    let ca = CertAuthority::load(&dir).context("load the CA")?;
    let validity = Validity::leaf(time::OffsetDateTime::now_utc());
    for name in names {
        let issued = ca
            .issue(name, Role::Probe, validity)
            .with_context(|| format!("issue a certificate for {name}"))?;
        std::fs::write(dir.cert(name), issued.cert_pem)
            .with_context(|| format!("write {}", dir.cert(name).display()))?;
        std::fs::write(dir.key(name), issued.key_pem)
            .with_context(|| format!("write {}", dir.key(name).display()))?;
    }
    Ok(())
}

/// Starts every probe of `names`, the i-th on `coordinators[i % len]`, at
/// most `per_second` new connections a second (0 = no limit).
pub async fn spawn_all(
    names: &[String],
    coordinators: &[String],
    tls_dir: &Path,
    per_second: u32,
) -> anyhow::Result<Vec<SimProbe>> {
    anyhow::ensure!(!coordinators.is_empty(), "no coordinator address given");
    let mut probes = Vec::with_capacity(names.len());
    let gap = (per_second > 0).then(|| Duration::from_secs(1) / per_second);
    for (i, name) in names.iter().enumerate() {
        probes.push(SimProbe::spawn(
            name,
            &coordinators[i % coordinators.len()],
            tls_dir,
        )?);
        if let Some(gap) = gap {
            tokio::time::sleep(gap).await;
        }
    }
    Ok(probes)
}

/// Waits until every probe is attached or ended, at most `within` in all;
/// returns the names of those not attached, with where they stand.
pub async fn wait_attached(probes: &mut [SimProbe], within: Duration) -> Vec<(String, LinkState)> {
    let deadline = tokio::time::Instant::now() + within;
    let mut missing = Vec::new();
    for p in probes.iter_mut() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match p.settled(left).await {
            LinkState::Attached => {}
            other => missing.push((p.name.clone(), other)),
        }
    }
    missing
}

/// Runs one capture on `observers` (each on interface `lo`) through
/// Control.StartRun as `identity` on `coordinator`, and returns the
/// finished record.
pub async fn fan_out_capture(
    coordinator: &str,
    tls_dir: &Path,
    identity: &str,
    observers: &[String],
) -> anyhow::Result<pb::RunRecord> {
    let tls = probemesh_proto::tls::client_config(&TlsDir::new(tls_dir), identity)?;
    let channel = probemesh_proto::tls::connect(coordinator, tls).await?;
    fan_out_on(channel, observers).await
}

/// [`fan_out_capture`] over an open channel.
pub async fn fan_out_on(
    channel: tonic::transport::Channel,
    observers: &[String],
) -> anyhow::Result<pb::RunRecord> {
    let mut control = pb::control_client::ControlClient::new(channel);
    let request = pb::RunRequest {
        from: String::new(),
        kind: Some(pb::run_request::Kind::Capture(pb::CaptureRequest {
            on: vec![
                observers
                    .iter()
                    .map(|o| format!("{o}:lo"))
                    .collect::<Vec<_>>()
                    .join(","),
            ],
            duration_us: 1_000,
            ..Default::default()
        })),
    };
    let mut events = control
        .start_run(request)
        .await
        .context("StartRun refused")?
        .into_inner();
    while let Some(event) = events.message().await.context("run event stream")? {
        if let Some(pb::run_event::Event::Finished(record)) = event.event {
            return Ok(record);
        }
    }
    anyhow::bail!("the run's event stream ended without its record")
}

/// How many of `record`'s observers answered with a capture result.
pub fn captured(record: &pb::RunRecord) -> usize {
    record
        .observers
        .iter()
        .filter(|o| {
            matches!(
                o.result.as_ref().and_then(|r| r.outcome.as_ref()),
                Some(pb::task_result::Outcome::Capture(_))
            )
        })
        .count()
}
