//! Executes a [`DiagnosisPlan`]: arms the captures on every observer for one
//! instant, runs the first wave of checks at once, then the follow-ups the
//! first wave calls for, stops the captures, correlates, applies the rules
//! and stores the record. Progress goes to the client as `RunStep`s.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use probemesh_model::check::{self, CheckName, Direction};
use probemesh_proto::pb;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::Instrument as _;

use super::checks;
use super::model::{Check, ObserverInterface};
use super::packets::Packets;
use super::plan::{self, DiagnosisPlan, PlannedCheck};
use super::rules::{self, Evidence};
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

    let first = plan.checks.len();
    let mut done = run_checks(&state, &plan.checks, &run_id, &tx, 0, first).await;
    let follow_ups = plan::follow_ups(&plan, &done);
    if !follow_ups.is_empty() {
        let more = run_checks(
            &state,
            &follow_ups,
            &run_id,
            &tx,
            first,
            first + follow_ups.len(),
        )
        .await;
        done.extend(more);
    }
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

/// Runs checks concurrently, reporting each as it ends; results come back
/// in plan order.
async fn run_checks(
    state: &Arc<Coordinator>,
    planned: &[PlannedCheck],
    run_id: &str,
    tx: &Tx,
    offset: usize,
    total: usize,
) -> Vec<Check> {
    let inventory = state.inventory.current();
    let mut running: FuturesUnordered<_> = planned
        .iter()
        .enumerate()
        .map(|(i, check)| {
            let task_id = format!("{run_id}-{}", offset + i + 1);
            let inventory = inventory.clone();
            async move {
                let Some(request) = &check.request else {
                    return (i, checks::summarize(check, None));
                };
                let prepared =
                    tool_run::prepare(request, &state.registry(), inventory.as_deref());
                let result = match prepared {
                    Ok((p, link)) => {
                        run_plan(state, link, p, run_id, task_id, tx, false)
                            .instrument(tracing::info_span!("probemesh.check", check = %check.name, from = %check.from, to = %check.to))
                            .await
                    }
                    Err(e) => task_error(pb::task_error::Kind::ProbeFailure, e.to_string()),
                };
                (i, checks::summarize(check, Some(result)))
            }
        })
        .collect();
    let mut out: Vec<Option<Check>> = vec![None; planned.len()];
    let mut finished = offset;
    while let Some((i, check)) = running.next().await {
        finished += 1;
        let line = format!(
            "{} {} → {}: {}",
            check.name, check.from, check.to, check.status
        );
        step(tx, "checks", finished, total, &line).await;
        out[i] = Some(check);
    }
    out.into_iter().flatten().collect()
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
