//! Executes a [`DiagnosisPlan`]: arms the captures on every observer for one
//! instant, runs the first wave of checks at once and each follow-up the
//! moment a result calls for it (timeouts derived from the measured round
//! trip, [`super::timing`]), stops the captures, correlates, applies the rules and
//! stores the record. Progress goes to the client as `RunStep`s.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use probemesh_model::check::{self, CheckName, Direction};
use probemesh_model::inventory::Inventory;
use probemesh_proto::pb;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::Instrument as _;

use super::checks;
use super::model::{Check, ObserverInterface};
use super::packets::Packets;
use super::plan::{self, DiagnosisPlan, PlannedCheck};
use super::rules::{self, Evidence};
use super::timing::Timing;
use crate::capture::run::{self as capture, CaptureOutcome};
use crate::correlate;
use crate::execute::{finish, task_error};
use crate::state::Coordinator;
use crate::tool_run::{self, run_plan};

/// Longest wait for every observer to arm before the checks start anyway.
const ARM_WAIT: Duration = Duration::from_secs(5);

type Tx = mpsc::Sender<Result<pb::RunEvent, Status>>;

/// Runs the plan to the end and sends the record.
pub async fn follow(
    state: Arc<Coordinator>,
    plan: DiagnosisPlan,
    mut record: pb::RunRecord,
    tx: Tx,
) {
    let started = tokio::time::Instant::now();
    let run_id = record.run_id.clone();
    let mut missing = Vec::new();
    clock_step(&state, &plan, &tx).await;

    let mut capture = None;
    match plan.capture.clone() {
        Some(cp) => {
            let observers = cp.observers.len();
            step(
                &tx,
                "capture",
                0,
                observers,
                "arming every observer for one instant",
            )
            .await;
            let mut running = capture::start(state.clone(), cp, &run_id, tx.clone()).await;
            let armed = running.armed(ARM_WAIT).await;
            step(
                &tx,
                "capture",
                armed,
                observers,
                &format!("{armed} of {observers} observers armed"),
            )
            .await;
            if armed < observers {
                missing.push(format!(
                    "captures: {} of {observers} observers could not arm",
                    observers - armed
                ));
            }
            capture = Some(running);
        }
        None => missing.push(format!("captures: none ({})", plan.capture_note)),
    }

    let mut done = run_checks(&state, &plan, &run_id, &tx).await;
    if let Some(what) = nat_target(&plan) {
        let inventory = state.inventory.current();
        let nodes: Vec<&str> = inventory
            .iter()
            .flat_map(|i| i.nodes.iter())
            .filter_map(|n| n.probe.as_deref())
            .collect();
        let nat = checks::nat_rules(&done, &what, &nodes);
        done.extend(nat);
    }
    missing.extend(
        done.iter()
            .filter(|c| !c.ran() && c.detail.starts_with("could not run"))
            .map(|c| format!("{} {} → {}: {}", c.name, c.from, c.to, c.detail)),
    );

    let packets = match capture {
        Some(running) => {
            step(
                &tx,
                "capture",
                0,
                0,
                "stopping the captures and collecting the files",
            )
            .await;
            running.stop().await;
            let outcome = running.finish().await;
            outcome.fill(&mut record);
            done.push(capture_check(&outcome));
            if !outcome.summary.skipped.is_empty() {
                missing.push(outcome.summary.skipped.clone());
            }
            Some(Packets::from_correlation(
                &outcome.correlation,
                &outcome.encapsulation,
                captured(&outcome.correlation),
            ))
        }
        None => None,
    };

    step(&tx, "diagnose", 0, 0, "applying the rules to the evidence").await;
    let inventory = state.inventory.current();
    let verdict = tracing::info_span!("probemesh.diagnose").in_scope(|| {
        rules::diagnose(&Evidence {
            source: &plan.source,
            target: &plan.target,
            checks: &done,
            packets: packets.as_ref(),
            inventory: inventory.as_deref(),
            missing: &missing,
        })
    });
    tracing::info!(class = %verdict.class, cause = verdict.cause.map_or("", |c| c.as_str()), rule = verdict.rule, "verdict");
    // Rules build summaries from cited evidence, so this finds nothing
    // unless a rule is wrong; say so loudly rather than ship the claim
    // silently (the rules' tests and the lab tests fail on it).
    for claim in verdict.unsupported(&done) {
        tracing::error!(rule = verdict.rule, %claim, "a verdict states what its evidence does not back");
    }
    record.diagnosis = Some(pb::Diagnosis {
        target: Some(plan.target.to_pb()),
        checks: done.iter().map(Check::to_pb).collect(),
        verdict: Some(verdict.to_pb()),
    });
    let elapsed_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let timing = record.timing.get_or_insert_with(pb::RunTiming::default);
    timing.duration_ms = elapsed_ms;
    finish(&state, record, None, started, &tx).await;
}

/// Runs the first wave at once and each follow-up the moment a result
/// calls for it, reporting every check as it ends. Checks paced by an
/// endpoint take their timeouts from its first echo reply ([`super::timing`]).
/// Results come back in plan order, the follow-ups after the first wave in
/// the order they started.
async fn run_checks(
    state: &Arc<Coordinator>,
    plan: &DiagnosisPlan,
    run_id: &str,
    tx: &Tx,
) -> Vec<Check> {
    let o = &plan.options;
    let timing = Timing::new(o.explicit_timeout.then_some(o.timeout), o.timeout);
    let inventory = state.inventory.current();
    let first = plan.checks.len();
    let mut started: Vec<PlannedCheck> = plan.checks.clone();
    let start = |i: usize, check: PlannedCheck| {
        let task_id = format!("{run_id}-{}", i + 1);
        run_check(
            state,
            &timing,
            check,
            task_id,
            inventory.clone(),
            run_id,
            tx,
        )
        .map(move |check| (i, check))
    };
    let mut running: FuturesUnordered<_> = started
        .iter()
        .enumerate()
        .map(|(i, check)| start(i, check.clone()))
        .collect();
    let mut ended: Vec<(usize, Check)> = Vec::with_capacity(first);
    let mut window = CounterWindow::new(state, plan, run_id);
    while let Some((i, check)) = running.next().await {
        window.ended(i);
        let line = format!(
            "{} {} → {}: {}",
            check.name, check.from, check.to, check.status
        );
        ended.push((i, check));
        let so_far: Vec<Check> = ended.iter().map(|(_, c)| c.clone()).collect();
        for more in plan::follow_ups(plan, &so_far, &started[first..]) {
            running.push(start(started.len(), more.clone()));
            started.push(more);
        }
        step(tx, "checks", ended.len(), started.len(), &line).await;
    }
    ended.sort_by_key(|(i, _)| *i);
    ended.into_iter().map(|(_, c)| c).collect()
}

/// The node facts' counter window, planned for the slowest case
/// ([`plan::counter_settle`]): once every other check of the first wave has
/// ended (its packets sent, answered or given up on) and their counters
/// have settled, the node facts still watching are told to read them now.
struct CounterWindow {
    /// First-wave checks that send packets and have not ended.
    senders: Vec<usize>,
    /// Node facts watching counters: probe and task id.
    watchers: Vec<(String, String)>,
    settle: Duration,
    state: Arc<Coordinator>,
}

impl CounterWindow {
    fn new(state: &Arc<Coordinator>, plan: &DiagnosisPlan, run_id: &str) -> Self {
        let mut senders = Vec::new();
        let mut watchers = Vec::new();
        for (i, check) in plan.checks.iter().enumerate() {
            match check.request.as_ref().and_then(|r| r.kind.as_ref()) {
                Some(pb::run_request::Kind::NodeFacts(f)) if f.counter_window_us > 0 => {
                    watchers.push((check.from.clone(), format!("{run_id}-{}", i + 1)));
                }
                Some(pb::run_request::Kind::NodeFacts(_)) | None => {}
                Some(_) => senders.push(i),
            }
        }
        let settle = plan::counter_settle(&plan.checks, &state.registry());
        Self {
            senders,
            watchers,
            settle,
            state: state.clone(),
        }
    }

    /// Check `i` ended; after the last sender, the watchers are stopped
    /// once the counters settled.
    fn ended(&mut self, i: usize) {
        let before = self.senders.len();
        self.senders.retain(|s| *s != i);
        if self.senders.is_empty() && before == 1 && !self.watchers.is_empty() {
            let (state, settle) = (self.state.clone(), self.settle);
            let watchers = std::mem::take(&mut self.watchers);
            tokio::spawn(
                async move {
                    tokio::time::sleep(settle).await;
                    for (probe, task_id) in watchers {
                        let link = state.registry().link(&probe);
                        if let Some(link) = link {
                            let stop = pb::CoordinatorMessage {
                                msg: Some(pb::coordinator_message::Msg::Stop(pb::StopTask {
                                    task_id,
                                })),
                            };
                            let _ = link.tx.send(Ok(stop)).await;
                        }
                    }
                }
                .in_current_span(),
            );
        }
    }
}

/// Runs one check: its timeouts from `timing` when it is paced, its echo
/// replies into `timing` when it measures an endpoint.
async fn run_check(
    state: &Arc<Coordinator>,
    timing: &Timing,
    mut check: PlannedCheck,
    task_id: String,
    inventory: Option<Arc<Inventory>>,
    run_id: &str,
    tx: &Tx,
) -> Check {
    let Some(request) = check.request.as_mut() else {
        return checks::summarize(&check, None);
    };
    if check.measures.is_none()
        && let Some(pb::run_request::Kind::Ping(ping)) = request.kind.as_mut()
    {
        // Only a check that measures an endpoint reads its echo replies
        // (as they come, `EACH`, the default); the others get the summary.
        ping.set_progress(pb::ProgressDelivery::None);
    }
    if !check.paced_by.is_empty() {
        let (near, far) = {
            let registry = state.registry();
            let clock_rtt = |probe: &str| registry.clock(probe).map(|s| s.round_trip());
            let far: Option<Duration> = check
                .paced_by
                .iter()
                .map(|p| p.probe.as_deref().and_then(clock_rtt))
                .collect::<Option<Vec<_>>>()
                .and_then(|rtts| rtts.into_iter().max());
            (
                clock_rtt(request.from.split('@').next().unwrap_or_default()),
                far,
            )
        };
        let hosts: Vec<&str> = check.paced_by.iter().map(|p| p.host.as_str()).collect();
        timing
            .timeouts(&hosts, near, far)
            .await
            .apply(request, plan::CONNECT_COUNT);
    }
    let prepared = tool_run::prepare(request, &state.registry(), inventory.as_deref());
    let result = match prepared {
        Ok((p, link)) => {
            let on_progress = |p: &mut pb::TaskProgress| {
                if let (Some(host), Some(pb::task_progress::Event::PingReply(reply))) =
                    (&check.measures, &p.event)
                {
                    timing.echo_reply(host, reply);
                }
                false
            };
            run_plan(state, link, p, run_id, task_id, tx, on_progress)
                .instrument(tracing::info_span!("probemesh.check", check = %check.name, from = %check.from, to = %check.to))
                .await
        }
        Err(e) => task_error(pb::task_error::Kind::ProbeFailure, e.to_string()),
    };
    checks::summarize(&check, Some(result))
}

/// What the NAT-rule checks look for: the Service port the node facts
/// were asked to match (a ClusterIP, a NodePort, or the cluster DNS).
fn nat_target(plan: &DiagnosisPlan) -> Option<String> {
    plan.checks
        .iter()
        .find_map(|c| match c.request.as_ref()?.kind.as_ref()? {
            pb::run_request::Kind::NodeFacts(f) if f.match_port != 0 => Some(c.to.clone()),
            _ => None,
        })
}

/// The captures as one check.
fn capture_check(outcome: &CaptureOutcome) -> Check {
    let mut packets = 0u64;
    let mut failed = Vec::new();
    for o in &outcome.observers {
        match o.result.as_ref().and_then(|r| r.outcome.as_ref()) {
            Some(pb::task_result::Outcome::Capture(c)) => {
                packets += c.interfaces.iter().map(|i| i.packets_written).sum::<u64>();
            }
            Some(pb::task_result::Outcome::Error(e)) => {
                failed.push(format!("{}: {}", o.probe, e.message))
            }
            _ => failed.push(format!("{}: no capture", o.probe)),
        }
    }
    let observers: Vec<String> = outcome
        .observers
        .iter()
        .map(|o| format!("{}:{}", o.probe, o.interfaces.join("+")))
        .collect();
    let mut detail = format!(
        "{packets} packets on {}; {} packets followed; skew {} us, clock error ±{} us",
        observers.join(", "),
        outcome.summary.fates_total,
        outcome.timing.capture_skew_us,
        outcome.timing.clock_error_us
    );
    if !failed.is_empty() {
        detail = format!("{detail}; failed: {}", failed.join("; "));
    }
    Check {
        name: CheckName::Capture,
        from: {
            let mut probes: Vec<&str> =
                outcome.observers.iter().map(|o| o.probe.as_str()).collect();
            probes.dedup();
            probes.join(",")
        },
        to: String::new(),
        size: 0,
        direction: Direction::Local,
        status: if failed.is_empty() {
            check::Status::Ok
        } else {
            check::Status::Fail
        },
        sent: 0,
        received: 0,
        rtt_ms: None,
        detail,
        observation: None,
        result: None,
    }
}

/// Reports the clocks of every probe the run uses.
async fn clock_step(state: &Coordinator, plan: &DiagnosisPlan, tx: &Tx) {
    let mut probes: Vec<String> = plan
        .checks
        .iter()
        .filter(|c| c.request.is_some())
        .map(|c| c.from.split('@').next().unwrap_or_default().to_owned())
        .collect();
    probes.sort();
    probes.dedup();
    crate::mesh::clock::refresh(state, &probes).await;
    let (synced, worst) = {
        let registry = state.registry();
        let clocks: Vec<_> = probes.iter().filter_map(|p| registry.clock(p)).collect();
        (
            clocks.len(),
            clocks.iter().map(|c| c.error_ns()).max().unwrap_or(0),
        )
    };
    step(
        tx,
        "clock",
        synced,
        probes.len(),
        &format!(
            "{synced} of {} probes on the coordinator's clock, worst error ±{} us",
            probes.len(),
            worst / 1_000
        ),
    )
    .await;
}

async fn step(tx: &Tx, phase: &str, done: usize, total: usize, detail: &str) {
    let event = pb::RunEvent {
        event: Some(pb::run_event::Event::Step(pb::RunStep {
            phase: phase.to_owned(),
            done: u32::try_from(done).unwrap_or(u32::MAX),
            total: u32::try_from(total).unwrap_or(u32::MAX),
            detail: detail.to_owned(),
        })),
    };
    let _ = tx.send(Ok(event)).await;
}

/// The interfaces whose capture came back and was read (an observer that
/// failed saw nothing, which is not the same as seeing no packet).
fn captured(correlation: &correlate::Correlation) -> Vec<ObserverInterface> {
    correlation
        .observed
        .iter()
        .map(|(probe, interface)| ObserverInterface {
            probe: probe.clone(),
            interface: interface.clone(),
        })
        .collect()
}
