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

use super::plan::{CapturePlan, Observer};
use crate::correlate;
use crate::error::Error;
use crate::execute::{RunEvents, await_task, finish, task_error};
use crate::registry::Link;
use crate::state::Coordinator;

/// Time between dispatch and the common start instant while an observer
/// has not yet reported how long it takes to get ready to arm (its first
/// capture): the task's trip plus the ring set-up, which on a cold machine
/// took up to 340 ms in the lab with fixed 32 MiB rings (a late observer
/// logs "capture ready after its arming instant").
const UNMEASURED_LEAD: Duration = Duration::from_millis(500);
/// Least lead once every observer has reported its set-up time: room for
/// the task's thread to start and the engine to reach its sleep before the
/// instant on a loaded 2-core machine.
const MIN_LEAD: Duration = Duration::from_millis(50);
/// The lead covers the slowest recent set-up (dispatch to rings open, as
/// the observers measured it) times this, in percent: under a concurrent
/// build the slowest of 50 captures' set-ups was 1.15 times the slowest of
/// the ones before it.
const SET_UP_HEADROOM_PERCENT: u32 = 150;
/// Longest set-up time noted for an observer: with the headroom, the lead
/// stays well inside the minute a probe accepts to arm ahead.
const MAX_SET_UP: Duration = Duration::from_secs(10);
/// How often a capture looks whether every observer's fresh clock burst
/// is in (the registry's estimators are fed from the links' tasks).
const BURST_POLL: Duration = Duration::from_millis(2);
/// Largest capture file the coordinator keeps to correlate, bytes (headers-only
/// captures of a few seconds are far below it).
const MAX_CORRELATED_BYTES: usize = 64 << 20;
/// Time for the artifact to stream back after the window closes.
const TRANSFER_SLACK: Duration = Duration::from_secs(60);

/// An observer's clock as the coordinator sees it.
#[derive(Debug, Clone, Copy, Default)]
struct ObserverClock {
    offset_ns: i64,
    error_ns: i64,
}

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

/// Dispatches `plan` to its observers, armed for one instant ahead; their
/// progress (artifact chunks included) goes to `tx`, stamped with the
/// observer's name. Takes [`crate::clock_sync::CLOCK_BURST_WAIT`] first for
/// fresh clock exchanges ([`fresh_clocks`]).
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
    let clocks = fresh_clocks(&state, &plan.observers).await;
    let clock_wait = started.elapsed();
    let worst_rtt_ns = clocks
        .iter()
        .map(|c| c.error_ns.saturating_mul(2))
        .max()
        .unwrap_or(0);
    let set_up: Vec<Option<Duration>> = {
        let registry = state.registry();
        plan.observers
            .iter()
            .map(|o| registry.set_up(&o.probe))
            .collect()
    };
    let lead = arming_lead(
        Duration::from_nanos(u64::try_from(worst_rtt_ns).unwrap_or(0)),
        &set_up,
    );
    let t0_ns = state
        .clock
        .now_unix_ns()
        .saturating_add(i64::try_from(lead.as_nanos()).unwrap_or(i64::MAX));
    let bound = lead + plan.window + TRANSFER_SLACK;
    let tasks: Vec<pb::Task> = plan
        .observers
        .iter()
        .zip(&clocks)
        .enumerate()
        .map(|(i, (observer, clock))| pb::Task {
            task_id: format!("{run_id}-c{}", i + 1),
            run_id: run_id.to_owned(),
            trace_context: crate::telemetry::task_context(&tracing::Span::current()),
            netns: observer.netns.clone(),
            kind: Some(pb::task::Kind::Capture(pb::CaptureTask {
                interfaces: observer.interfaces.clone(),
                arm_at_unix_ns: t0_ns.saturating_add(clock.offset_ns),
                clock_note: format!(
                    "probe clock offset {:+.1} us ± {:.1} us vs the coordinator; run {run_id}",
                    clock.offset_ns as f64 / 1e3,
                    clock.error_ns as f64 / 1e3,
                ),
                ..plan.template.clone()
            })),
        })
        .collect();
    let (settled_tx, settled) = tokio::sync::watch::channel(0usize);
    let armed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<(Option<Link>, String)> = links
        .iter()
        .cloned()
        .zip(tasks.iter().map(|t| t.task_id.clone()))
        .collect();
    let observers = plan.observers.len();
    let armed_count = armed.clone();
    let timing = pb::RunTiming {
        clock_wait_ms: millis(clock_wait),
        arming_lead_ms: millis(lead),
        ..Default::default()
    };
    let collect = tokio::spawn(
        collect(
            state,
            plan,
            links,
            clocks,
            tasks,
            (bound, lead),
            (started, timing),
            tx,
            (settled_tx, armed_count),
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

/// How far ahead of now the common start instant lies: far enough that
/// every task arrives (four of the worst round trip) and every observer has
/// its rings open before it ([`SET_UP_HEADROOM_PERCENT`] of the slowest of
/// the set-up times the observers recently reported, plus [`MIN_LEAD`]).
/// [`UNMEASURED_LEAD`] at least while an observer has reported none.
fn arming_lead(worst_rtt: Duration, set_up: &[Option<Duration>]) -> Duration {
    let trip = worst_rtt.saturating_mul(4);
    let setup = match set_up.iter().copied().collect::<Option<Vec<_>>>() {
        Some(reported) => {
            MIN_LEAD
                + reported
                    .into_iter()
                    .max()
                    .unwrap_or_default()
                    .saturating_mul(SET_UP_HEADROOM_PERCENT)
                    / 100
        }
        None => UNMEASURED_LEAD,
    };
    trip.max(setup)
}

/// How long an observer took to get ready to arm, from what it reported
/// as it armed: the lead less its margin to the instant (dispatch to
/// rings open: the task's trip and start included), or, from a probe that
/// reports no margin, its ring set-up alone; `None` when it reported
/// neither.
/// [`MAX_SET_UP`] at most, so a wild report cannot push the lead past what
/// a probe accepts.
fn set_up_time(armed: &pb::CaptureArmed, lead: Duration) -> Option<Duration> {
    let took = match armed.ready_margin_us {
        Some(margin_us) => {
            let lead_us = i64::try_from(lead.as_micros()).unwrap_or(i64::MAX);
            let took_us = lead_us.saturating_sub(margin_us).max(0);
            Duration::from_micros(u64::try_from(took_us).unwrap_or(0))
        }
        None if armed.ring_open_us > 0 => Duration::from_micros(armed.ring_open_us),
        None => return None,
    };
    Some(took.min(MAX_SET_UP))
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

/// Each observer's clock from exchanges made just now: idle probes
/// exchange only every `clock_interval` (tens of seconds), so a burst goes
/// to every observer attached here (stream and UDP), while the clocks of
/// observers another coordinator holds are measured through it (which
/// bursts on them the same way, [`crate::mesh::clock`]); once every local
/// observer's burst is in (at most [`crate::clock_sync::CLOCK_BURST_WAIT`])
/// each gets the best sample since the burst began; an observer that
/// answered none keeps its best older one (or none: offset 0, no bound).
async fn fresh_clocks(state: &Arc<Coordinator>, observers: &[Observer]) -> Vec<ObserverClock> {
    let since_ns = state.clock.now_unix_ns();
    let (local, held_elsewhere) = {
        let registry = state.registry();
        let mut local: Vec<(&str, Link)> = Vec::new();
        let mut elsewhere: Vec<String> = Vec::new();
        for observer in observers {
            match registry.local_link(&observer.probe) {
                Some(link) => local.push((&observer.probe, link)),
                None if registry.remote(&observer.probe).is_some() => {
                    elsewhere.push(observer.probe.clone());
                }
                None => {}
            }
        }
        (local, elsewhere)
    };
    for (_, link) in &local {
        crate::clock_sync::clock_burst(state, link);
    }
    let local_wait = async {
        let deadline = tokio::time::Instant::now() + crate::clock_sync::CLOCK_BURST_WAIT;
        // Six of the eight: a burst's timers run late on a loaded probe and
        // its last exchanges come well after the span; the bound is that of
        // the best fresh exchange, however many there are.
        let wanted = crate::clock_sync::CLOCK_BURST as usize - 2;
        while !local.is_empty() && tokio::time::Instant::now() < deadline {
            let all_in = {
                let registry = state.registry();
                local
                    .iter()
                    .all(|(probe, _)| registry.burst_in(probe, since_ns, wanted))
            };
            if all_in {
                break;
            }
            tokio::time::sleep(BURST_POLL).await;
        }
    };
    tokio::join!(
        local_wait,
        crate::mesh::clock::refresh(state, &held_elsewhere)
    );
    let registry = state.registry();
    observers
        .iter()
        .map(|o| {
            registry
                .clock_since(&o.probe, since_ns)
                .or_else(|| registry.clock(&o.probe))
                .map(|s| ObserverClock {
                    offset_ns: s.offset_ns,
                    error_ns: s.error_ns(),
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Follows every observer's task to its result, keeping each file to
/// correlate, and counting observers as they arm (or give up).
#[allow(clippy::too_many_arguments)]
async fn collect(
    state: Arc<Coordinator>,
    plan: CapturePlan,
    links: Vec<Option<Link>>,
    clocks: Vec<ObserverClock>,
    tasks: Vec<pb::Task>,
    (bound, lead): (Duration, Duration),
    (started, mut timing): (tokio::time::Instant, pb::RunTiming),
    tx: RunEvents,
    (settled, armed_count): (
        tokio::sync::watch::Sender<usize>,
        Arc<std::sync::atomic::AtomicUsize>,
    ),
) -> CaptureOutcome {
    let armed: std::sync::Mutex<Arming> = std::sync::Mutex::new(Arming::default());
    let runs = plan
        .observers
        .iter()
        .zip(links)
        .zip(&clocks)
        .zip(tasks)
        .map(|(((observer, link), clock), task)| {
            let (state, tx, armed, settled, armed_count) =
                (&state, &tx, &armed, &settled, &armed_count);
            async move {
                let arm_at_ns = match &task.kind {
                    Some(pb::task::Kind::Capture(c)) => c.arm_at_unix_ns,
                    _ => 0,
                };
                let settle = || settled.send_modify(|n| *n += 1);
                let Some(link) = link else {
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
                    // An engine arms once per capture: a second report is
                    // not counted twice.
                    if let Some(pb::task_progress::Event::CaptureArmed(a)) = &p.event
                        && !settled_here
                    {
                        if let Some(took) = set_up_time(a, lead) {
                            state.registry().note_set_up(&observer.probe, took);
                        }
                        armed
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .note(a, arm_at_ns, *clock);
                        settled_here = true;
                        armed_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
                    settle();
                }
                (result, file)
            }
        });
    let (results, files): (Vec<_>, Vec<_>) =
        futures::future::join_all(runs).await.into_iter().unzip();
    let (correlation, encapsulation, summary) = tracing::info_span!("probemesh.correlate")
        .in_scope(|| correlate_files(&plan.observers, &clocks, &results, files));

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
