//! Executes a capture run: the distributed tcpdump. Several observers
//! (probes, or pod namespaces on them) capture at once, armed for one
//! instant on the coordinator's clock, each told that instant in its own
//! clock.
//!
//! [`start`] dispatches and streams every observer's progress (stamped with
//! the observer's name, artifact chunks included); [`RunningCapture`] waits
//! for them to arm, stops them early and collects the files, which are
//! correlated with the run's clock error and capture skew. [`follow`] is a
//! whole `meshctl capture` run. Planning is [`super::plan`]'s.

use std::sync::Arc;
use std::time::Duration;

use probemesh_proto::identity::ProbeName;
use probemesh_proto::pb;
use tracing::Instrument as _;

use super::arm::{self, CommonInstant, ObserverClock};
use super::plan::{CapturePlan, Observer};
use crate::correlate;
use crate::error::Error;
use crate::execute::{RunEvents, await_task, finish, task_error};
use crate::registry::Link;
use crate::state::Coordinator;

/// Largest capture file the coordinator keeps to correlate, bytes (headers-only
/// captures of a few seconds are far below it).
const MAX_CORRELATED_BYTES: usize = 64 << 20;
/// Time for the artifact to stream back after the window closes.
const TRANSFER_SLACK: Duration = Duration::from_secs(60);

/// Runs a planned capture to the end and sends the record.
pub async fn follow(
    state: Arc<Coordinator>,
    plan: CapturePlan,
    mut record: pb::RunRecord,
    tx: RunEvents,
) {
    let started = tokio::time::Instant::now();
    let outcome = start(state.clone(), plan, &record.run_id, tx.clone())
        .await
        .finish()
        .await;
    outcome.fill(&mut record);
    finish(&state, record, None, started, &tx).await;
}

/// What a finished capture gives a run.
#[derive(Debug)]
pub struct CaptureOutcome {
    /// One entry per observer.
    pub observers: Vec<pb::ObserverResult>,
    /// Every test packet followed across the observers.
    pub correlation: correlate::Correlation,
    /// Tunnel traffic per observer.
    pub encapsulation: Vec<correlate::EncapsulationSource>,
    /// The same, as it travels in the record.
    pub summary: pb::CorrelationSummary,
    /// Clock error and capture skew.
    pub timing: pb::RunTiming,
}

impl CaptureOutcome {
    /// Puts the observers, correlation and timing into `record`.
    pub fn fill(&self, record: &mut pb::RunRecord) {
        record.observers.clone_from(&self.observers);
        record.correlation = Some(self.summary.clone());
        record.timing = Some(self.timing);
    }
}

/// A capture armed (or arming) on its observers.
#[derive(Debug)]
pub struct RunningCapture {
    collect: tokio::task::JoinHandle<CaptureOutcome>,
    /// Observers settled so far: armed, or ended without arming.
    settled: tokio::sync::watch::Receiver<usize>,
    /// Observers that armed every interface.
    armed: Arc<std::sync::atomic::AtomicUsize>,
    observers: usize,
    tasks: Vec<(Option<Link>, String)>,
    /// When [`RunningCapture::stop`] was first asked.
    stopped: std::sync::OnceLock<tokio::time::Instant>,
}

impl RunningCapture {
    /// Waits until every observer has armed or given up, at most `within`;
    /// returns how many armed.
    pub async fn armed(&mut self, within: Duration) -> usize {
        let all = self.observers;
        let _ = tokio::time::timeout(within, self.settled.wait_for(|n| *n >= all)).await;
        self.armed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ends every observer's capture early (its file still comes back).
    pub async fn stop(&self) {
        let _ = self.stopped.set(tokio::time::Instant::now());
        for (link, task_id) in &self.tasks {
            if let Some(link) = link {
                let msg = pb::CoordinatorMessage {
                    msg: Some(pb::coordinator_message::Msg::Stop(pb::StopTask {
                        task_id: task_id.clone(),
                    })),
                };
                let _ = link.tx.send(Ok(msg)).await;
            }
        }
    }

    /// Waits for every observer's result and file, then correlates.
    pub async fn finish(self) -> CaptureOutcome {
        let mut outcome = self.collect.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "capture collection failed");
            CaptureOutcome {
                observers: Vec::new(),
                correlation: correlate::Correlation::default(),
                encapsulation: Vec::new(),
                summary: pb::CorrelationSummary {
                    skipped: format!("capture collection failed: {e}"),
                    ..Default::default()
                },
                timing: pb::RunTiming::default(),
            }
        });
        if let Some(stopped) = self.stopped.get() {
            outcome.timing.collect_ms = millis(stopped.elapsed());
        }
        outcome
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Dispatches `plan` to its observers and arms them for one instant
/// ([`super::arm`]); their progress (artifact chunks included) goes to
/// `tx`, stamped with the observer's name.
pub async fn start(
    state: Arc<Coordinator>,
    plan: CapturePlan,
    run_id: &str,
    tx: RunEvents,
) -> RunningCapture {
    let started = tokio::time::Instant::now();
    let links: Vec<Option<Link>> = {
        let registry = state.registry();
        plan.observers
            .iter()
            .map(|o| registry.link(&o.probe))
            .collect()
    };
    let told_later = arm::all_told_later(&state, &plan.observers, &links);
    let clocks = arm::fresh_clocks(&state, &plan.observers).await;
    let clock_wait = started.elapsed();
    let dispatched = tokio::time::Instant::now();
    let (instant_tx, instant) = tokio::sync::watch::channel(None);
    let up_front = if told_later {
        None
    } else {
        let common = Arc::new(arm::up_front(&state, clocks.clone(), clock_wait));
        instant_tx.send_replace(Some(common.clone()));
        Some(common)
    };
    let window = plan.window;
    let tasks: Vec<pb::Task> = plan
        .observers
        .iter()
        .enumerate()
        .map(|(i, observer)| {
            let (arm_at_unix_ns, clock_note) = match &up_front {
                Some(common) => {
                    let clock = common.clocks.get(i).copied().unwrap_or_default();
                    (clock.local(common.t0_ns), clock.note(run_id))
                }
                None => (0, String::new()),
            };
            pb::Task {
                task_id: format!("{run_id}-c{}", i + 1),
                run_id: run_id.to_owned(),
                trace_context: crate::telemetry::task_context(&tracing::Span::current()),
                netns: observer.netns.clone(),
                kind: Some(pb::task::Kind::Capture(pb::CaptureTask {
                    interfaces: observer.interfaces.clone(),
                    arm_at_unix_ns,
                    clock_note,
                    arm_when_told: told_later,
                    ..plan.template.clone()
                })),
            }
        })
        .collect();
    let (settled_tx, settled) = tokio::sync::watch::channel(0usize);
    let (readiness_tx, readiness) =
        tokio::sync::watch::channel(vec![arm::Readiness::SettingUp; tasks.len()]);
    let armed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<(Option<Link>, String)> = links
        .iter()
        .cloned()
        .zip(tasks.iter().map(|t| t.task_id.clone()))
        .collect();
    if told_later {
        let told = handles
            .iter()
            .map(|(link, task_id)| arm::Told {
                link: link.clone(),
                task_id: task_id.clone(),
            })
            .collect();
        tokio::spawn(
            arm::arm_when_ready(
                state.clone(),
                (clocks, clock_wait),
                told,
                (run_id.to_owned(), dispatched),
                readiness,
                instant_tx,
            )
            .in_current_span(),
        );
    }
    let observers = plan.observers.len();
    let armed_count = armed.clone();
    let collect = tokio::spawn(
        collect(
            state,
            plan,
            links,
            tasks,
            window + arm::READY_WAIT + TRANSFER_SLACK,
            (started, instant),
            tx,
            Signals {
                settled: settled_tx,
                armed: armed_count,
                readiness: readiness_tx,
            },
        )
        .in_current_span(),
    );
    RunningCapture {
        collect,
        settled,
        armed,
        observers,
        tasks: handles,
        stopped: std::sync::OnceLock::new(),
    }
}

/// What [`collect`] tells as the observers move: how many settled (armed,
/// or ended without arming), how many armed, which are ready.
#[derive(Debug)]
struct Signals {
    settled: tokio::sync::watch::Sender<usize>,
    armed: Arc<std::sync::atomic::AtomicUsize>,
    readiness: tokio::sync::watch::Sender<Vec<arm::Readiness>>,
}

/// What the observers said as they armed, for the run's timing.
#[derive(Debug, Default)]
struct Arming {
    /// Every interface's armed instant, coordinator clock, ns.
    instants: Vec<i64>,
    /// The latest arming after its instant, on the observer's clock, ns.
    late_ns: i64,
    /// Observers ready only after the instant.
    ready_late: u32,
    /// The least margin to the instant reported, us.
    least_margin_us: Option<i64>,
}

impl Arming {
    /// Notes one observer's `CaptureArmed` for the instant `arm_at_ns`
    /// (its clock), whose offset is `clock`.
    fn note(&mut self, armed: &pb::CaptureArmed, arm_at_ns: i64, clock: ObserverClock) {
        for i in &armed.interfaces {
            self.instants
                .push(probemesh_model::timeline::to_coordinator_ns(
                    i.armed_unix_ns,
                    clock.offset_ns,
                    clock.error_ns,
                ));
            self.late_ns = self.late_ns.max(i.armed_unix_ns.saturating_sub(arm_at_ns));
        }
        if let Some(margin) = armed.ready_margin_us {
            self.ready_late += u32::from(margin < 0);
            self.least_margin_us = Some(self.least_margin_us.map_or(margin, |m| m.min(margin)));
        }
    }

    /// Fills the arming part of `timing`.
    fn fill(&self, timing: &mut pb::RunTiming) {
        timing.capture_skew_us = self
            .instants
            .iter()
            .max()
            .zip(self.instants.iter().min())
            .map_or(0, |(max, min)| max - min)
            / 1_000;
        timing.arm_late_us = self.late_ns / 1_000;
        timing.ready_late = self.ready_late;
        timing.ready_margin_us = self.least_margin_us.unwrap_or(0);
    }
}

/// Follows every observer's task to its result, keeping each file to
/// correlate, and counting observers as they arm (or give up).
#[allow(clippy::too_many_arguments)]
async fn collect(
    state: Arc<Coordinator>,
    plan: CapturePlan,
    links: Vec<Option<Link>>,
    tasks: Vec<pb::Task>,
    bound: Duration,
    (started, mut instant): (
        tokio::time::Instant,
        tokio::sync::watch::Receiver<Option<Arc<CommonInstant>>>,
    ),
    tx: RunEvents,
    signals: Signals,
) -> CaptureOutcome {
    let armed: std::sync::Mutex<Arming> = std::sync::Mutex::new(Arming::default());
    let runs = plan.observers.iter().zip(links).zip(tasks).enumerate().map(
        |(i, ((observer, link), task))| {
            let (state, tx, armed, signals, instant) = (&state, &tx, &armed, &signals, &instant);
            async move {
                let settle = || signals.settled.send_modify(|n| *n += 1);
                let gone = || {
                    signals.readiness.send_if_modified(|r| {
                        let was = r.get(i).copied();
                        if let Some(x) = r.get_mut(i) {
                            *x = arm::Readiness::Gone;
                        }
                        was == Some(arm::Readiness::SettingUp)
                    });
                };
                let Some(link) = link else {
                    gone();
                    settle();
                    let error = Error::ProbeOffline(observer.probe.clone()).to_string();
                    return (task_error(pb::task_error::Kind::ProbeFailure, error), None);
                };
                let handle = match state
                    .dispatcher
                    .dispatch(&observer.probe, &link, task)
                    .await
                {
                    Ok(h) => h,
                    Err(e) => {
                        gone();
                        settle();
                        return (
                            task_error(pb::task_error::Kind::ProbeFailure, e.to_string()),
                            None,
                        );
                    }
                };
                // The file streams through here anyway: keep a copy (up to
                // a bound) to correlate once every observer has finished.
                let mut file: Option<Vec<u8>> = Some(Vec::new());
                let mut settled_here = false;
                let label = observer.label();
                let pod_file = observer.pod_artifact_name();
                let stamp = |p: &mut pb::TaskProgress| {
                    p.probe.clone_from(&label);
                    if let (Some(pb::task_progress::Event::ArtifactChunk(c)), Some(name)) =
                        (&mut p.event, &pod_file)
                    {
                        c.name.clone_from(name);
                    }
                    if let Some(pb::task_progress::Event::ArtifactChunk(c)) = &p.event {
                        file = file.take().filter(|f| {
                            u64::try_from(f.len()).unwrap_or(u64::MAX) == c.offset
                                && f.len() + c.data.len() <= MAX_CORRELATED_BYTES
                        });
                        if let Some(f) = file.as_mut() {
                            f.extend_from_slice(&c.data);
                        }
                    }
                    if let Some(pb::task_progress::Event::CaptureReady(_)) = &p.event {
                        signals.readiness.send_modify(|r| {
                            if let Some(x) = r.get_mut(i) {
                                *x = arm::Readiness::Ready;
                            }
                        });
                        // Between observers and the coordinator: the
                        // requester hears the arming, not this.
                        return false;
                    }
                    // An engine arms once per capture: a second report is
                    // not counted twice.
                    if let Some(pb::task_progress::Event::CaptureArmed(a)) = &p.event
                        && !settled_here
                    {
                        // Armed for an instant chosen (a capture stopped
                        // before one was chosen arms at once: no skew).
                        if let Some(common) = instant.borrow().as_ref() {
                            let clock = common.clocks.get(i).copied().unwrap_or_default();
                            armed
                                .lock()
                                .unwrap_or_else(|poisoned| poisoned.into_inner())
                                .note(a, clock.local(common.t0_ns), clock);
                        }
                        settled_here = true;
                        signals
                            .armed
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        settle();
                    }
                    true
                };
                let mut result =
                    await_task(state, &link, handle, bound, tx, &observer.probe, stamp)
                        .instrument(
                            tracing::info_span!("probemesh.capture", probe = %observer.probe),
                        )
                        .await;
                if let (Some(pb::task_result::Outcome::Capture(c)), Some(name)) =
                    (&mut result.outcome, observer.pod_artifact_name())
                    && let Some(artifact) = c.artifact.as_mut()
                {
                    artifact.name = name;
                }
                if !settled_here {
                    gone();
                    settle();
                }
                (result, file)
            }
        },
    );
    let (results, files): (Vec<_>, Vec<_>) =
        futures::future::join_all(runs).await.into_iter().unzip();
    drop(signals);
    // Chosen by now, unless every observer ended first: then once the
    // clocks are measured (bounded); never chosen only if the armer died.
    let common = match instant.wait_for(Option::is_some).await {
        Ok(chosen) => chosen.clone().unwrap_or_default(),
        Err(_) => Arc::default(),
    };
    let clocks: Vec<ObserverClock> = (0..plan.observers.len())
        .map(|i| common.clocks.get(i).copied().unwrap_or_default())
        .collect();
    let (correlation, encapsulation, summary) = tracing::info_span!("probemesh.correlate")
        .in_scope(|| correlate_files(&plan.observers, &clocks, &results, files));

    let mut timing = pb::RunTiming {
        clock_wait_ms: millis(common.clock_wait),
        arming_lead_ms: millis(common.lead),
        ..Default::default()
    };
    armed
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .fill(&mut timing);
    let observers = plan
        .observers
        .iter()
        .zip(results)
        .zip(&clocks)
        .map(|((o, result), clock)| pb::ObserverResult {
            probe: o.label(),
            interfaces: o.interfaces.clone(),
            result: Some(result),
            clock_offset_ns: clock.offset_ns,
            clock_error_ns: clock.error_ns,
        })
        .collect();
    timing.clock_error_us = clocks.iter().map(|c| c.error_ns).max().unwrap_or(0) / 1_000;
    timing.duration_ms = millis(started.elapsed());
    CaptureOutcome {
        observers,
        correlation,
        encapsulation,
        summary,
        timing,
    }
}

/// Follows every test packet across the observers' files: each observer's
/// copy is used only when its result names an artifact of exactly that size.
fn correlate_files(
    observers: &[Observer],
    clocks: &[ObserverClock],
    results: &[pb::TaskResult],
    files: Vec<Option<Vec<u8>>>,
) -> (
    correlate::Correlation,
    Vec<correlate::EncapsulationSource>,
    pb::CorrelationSummary,
) {
    let mut observations = Vec::new();
    let mut missing = Vec::new();
    for (((observer, clock), result), file) in observers.iter().zip(clocks).zip(results).zip(files)
    {
        let expected = match &result.outcome {
            Some(pb::task_result::Outcome::Capture(c)) => c.artifact.as_ref().map(|a| a.size_bytes),
            _ => None,
        };
        let whole = file.filter(|f| Some(u64::try_from(f.len()).unwrap_or(u64::MAX)) == expected);
        let parsed = whole
            .ok_or_else(|| "no complete capture".to_owned())
            .and_then(|bytes| {
                let name = ProbeName::new(&observer.probe).map_err(|e| e.to_string())?;
                let mut obs =
                    correlate::from_pcapng(&name, clock.offset_ns, clock.error_ns, &bytes)
                        .map_err(|e| e.to_string())?;
                if let Some(pod) = &observer.pod {
                    for o in &mut obs {
                        o.interface = pod_interface(pod, &o.interface);
                    }
                }
                Ok(obs)
            });
        match parsed {
            Ok(obs) => observations.extend(obs),
            Err(why) => missing.push(format!("{}: {why}", observer.probe)),
        }
    }
    let correlation = correlate::correlate(&observations, &correlate::CorrelateConfig::default());
    let encapsulation = correlate::encapsulation_sources(&observations);
    let mut summary = correlate::summary::summarize(&correlation, &encapsulation);
    if !missing.is_empty() {
        summary.skipped = format!("not correlated: {}", missing.join("; "));
    }
    (correlation, encapsulation, summary)
}

/// How an interface inside pod `NS/NAME` is named among its node's
/// interfaces in the correlation: `pod:NS/NAME/IFACE`, so a packet seen in
/// the pod is never taken for one seen on the node's own `IFACE`.
fn pod_interface(pod: &str, interface: &str) -> String {
    let iface = interface.rsplit('/').next().unwrap_or(interface);
    format!("pod:{pod}/{iface}")
}
