//! Executes a [`MatrixPlan`]: every cell as ordinary tool tasks
//! ([`crate::tool_run`]), at most [`MAX_CONCURRENT`] tasks at once in the
//! run and [`MATRIX_TASKS_PER_PROBE`] on any one source probe across every
//! matrix run of this coordinator, each cell reported as
//! it ends (`k of n cells`), then the matrix stored in the run's record.
//!
//! A cell's wait per echo or connect is derived from the clock-exchange
//! round trips of the probes at both ends, as the diagnosis derives its
//! paced waits ([`crate::diagnose::timing::Timeouts::derived`]); a cell with
//! no measured round trip waits [`FIXED_ATTEMPT`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use probemesh_model::mesh::{cell_status_name, target_kind_name};
use probemesh_proto::pb;
use tokio::sync::{Semaphore, mpsc};
use tonic::Status;
use tracing::Instrument as _;

use super::plan::{CellTest, MatrixPlan, PlannedCell};
use crate::diagnose::timing::Timeouts;
use crate::execute::{finish, task_error};
use crate::state::{Coordinator, MATRIX_TASKS_PER_PROBE};
use crate::tool_run::{self, run_plan};

/// Most tasks of one matrix in flight at once.
pub const MAX_CONCURRENT: usize = 32;
/// The gap between a cell's echoes (connects): short, a matrix is a sweep.
pub const INTERVAL: Duration = Duration::from_millis(50);
/// A cell's wait per attempt when no round trip was measured.
pub const FIXED_ATTEMPT: Duration = Duration::from_secs(1);

type Tx = mpsc::Sender<Result<pb::RunEvent, Status>>;

/// Runs the matrix to the end and sends the record.
pub async fn follow(state: Arc<Coordinator>, plan: MatrixPlan, mut record: pb::RunRecord, tx: Tx) {
    let started = tokio::time::Instant::now();
    let run_id = record.run_id.clone();
    let run_cap = Semaphore::new(MAX_CONCURRENT);
    let probe_caps: HashMap<&str, Arc<Semaphore>> = plan
        .sources
        .iter()
        .map(|s| (s.name.as_str(), state.matrix_slots.of(&s.name)))
        .collect();
    let total = plan.cells.len();
    let mut running: FuturesUnordered<_> = plan
        .cells
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            let caps = (&run_cap, probe_caps.get(cell.from.as_str()).map(|s| &**s));
            let task_id = format!("{run_id}-{}", i + 1);
            run_cell(&state, &plan, cell, caps, task_id, &run_id, &tx).map(move |c| (i, c))
        })
        .collect();
    let mut cells: Vec<Option<pb::MeshCell>> = vec![None; total];
    let mut done = 0;
    while let Some((i, cell)) = running.next().await {
        done += 1;
        let line = format!(
            "{} → {} {}: {}",
            cell.from,
            cell.to,
            target_kind_name(cell.kind()),
            cell_status_name(cell.status())
        );
        step(&tx, done, total, &line).await;
        if let Some(slot) = cells.get_mut(i) {
            *slot = Some(cell);
        }
    }
    drop(running);
    record.matrix = Some(pb::MeshMatrix {
        sources: plan.sources.iter().map(|s| s.name.clone()).collect(),
        targets: plan.targets.iter().map(|t| t.name.clone()).collect(),
        cells: cells.into_iter().flatten().collect(),
        size: plan.size,
        count: plan.count,
        max_concurrent: u32::try_from(MAX_CONCURRENT).unwrap_or(u32::MAX),
        max_per_probe: u32::try_from(MATRIX_TASKS_PER_PROBE).unwrap_or(u32::MAX),
    });
    finish(&state, record, None, started, &tx).await;
}

/// Runs one cell under the caps: one permit per task it dispatches.
async fn run_cell(
    state: &Arc<Coordinator>,
    plan: &MatrixPlan,
    cell: &PlannedCell,
    (run_cap, probe_cap): (&Semaphore, Option<&Semaphore>),
    task_id: String,
    run_id: &str,
    tx: &Tx,
) -> pb::MeshCell {
    let mut out = pb::MeshCell {
        from: cell.from.clone(),
        to: cell.to.clone(),
        kind: cell.kind.into(),
        address: cell.address.clone(),
        address_reason: cell.address_reason.clone(),
        probe_target: cell.probe_target.clone(),
        ..Default::default()
    };
    let tasks = match &cell.test {
        CellTest::Skip(why) => {
            out.set_status(pb::MeshCellStatus::Skipped);
            out.reason = why.clone();
            return out;
        }
        CellTest::Ping { large: Some(_), .. } => 2,
        CellTest::Ping { .. } | CellTest::Connect { .. } => 1,
    };
    // A cell takes all its permits at once, its probe's first: a cell
    // waiting for its busy probe then holds none of the run's. The
    // semaphores live as long as the run and are never closed.
    let Some(probe_cap) = probe_cap else {
        out.set_status(pb::MeshCellStatus::Skipped);
        out.reason = format!("{} is not a row of this matrix", cell.from);
        return out;
    };
    let (Ok(_probe), Ok(_run)) = (
        probe_cap.acquire_many(tasks).await,
        run_cap.acquire_many(tasks).await,
    ) else {
        out.set_status(pb::MeshCellStatus::Skipped);
        out.reason = "the run's concurrency caps are gone".into();
        return out;
    };
    let attempt = attempt_wait(state, cell);
    let count = plan.count;
    let request = |kind| pb::RunRequest {
        from: cell.from.clone(),
        kind: Some(kind),
    };
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let span = tracing::info_span!("probemesh.cell", from = %cell.from, to = %cell.to, kind = target_kind_name(cell.kind));
    let work = async {
        match &cell.test {
            CellTest::Ping { ip, large } => {
                let ping = |size: u32, dont_fragment: bool| {
                    request(pb::run_request::Kind::Ping(pb::PingTask {
                        target: ip.to_string(),
                        size,
                        dont_fragment,
                        count,
                        interval_us: us(INTERVAL),
                        timeout_us: us(attempt),
                        ..Default::default()
                    }))
                };
                let small = execute(state, ping(56, false), format!("{task_id}-a"), run_id, tx);
                let (small, big) = match large {
                    Some(size) => {
                        let big =
                            execute(state, ping(*size, true), format!("{task_id}-b"), run_id, tx);
                        let (s, b) = tokio::join!(small, big);
                        (s, Some(b))
                    }
                    None => (small.await, None),
                };
                read_ping(&mut out, small, big);
            }
            CellTest::Connect { ip, port } => {
                let tcping = request(pb::run_request::Kind::Tcping(pb::TcpingTask {
                    host: ip.to_string(),
                    port: u32::from(*port),
                    count,
                    timeout_us: us(attempt),
                    interval_us: us(INTERVAL),
                }));
                let result = execute(state, tcping, format!("{task_id}-a"), run_id, tx).await;
                read_connects(&mut out, result);
            }
            CellTest::Skip(_) => {}
        }
        out
    };
    work.instrument(span).await
}

/// What one attempt may wait: derived from the slower end's clock round
/// trip, [`FIXED_ATTEMPT`] when neither end has one.
fn attempt_wait(state: &Coordinator, cell: &PlannedCell) -> Duration {
    let registry = state.registry();
    let rtt = |probe: &str| registry.clock(probe).map(|s| s.round_trip());
    let rtts = [Some(cell.from.as_str()), cell.far_probe.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(rtt)
        .max();
    rtts.map_or(FIXED_ATTEMPT, |r| Timeouts::derived(r).attempt)
}

/// Plans and runs one task, its progress kept (the echoes' round trips).
async fn execute(
    state: &Arc<Coordinator>,
    request: pb::RunRequest,
    task_id: String,
    run_id: &str,
    tx: &Tx,
) -> (pb::TaskResult, Vec<i64>) {
    let inventory = state.inventory.current();
    let prepared = tool_run::prepare(&request, &state.registry(), inventory.as_deref());
    let mut rtts = Vec::new();
    let result = match prepared {
        Ok((plan, link)) => {
            let on_progress = |p: &mut pb::TaskProgress| {
                use pb::task_progress::Event;
                match &p.event {
                    Some(Event::PingReply(r)) if r.status() == pb::ping_reply::Status::Reply => {
                        rtts.push(r.rtt_ns);
                    }
                    Some(Event::PingReplies(batch)) => rtts.extend(
                        batch
                            .replies
                            .iter()
                            .filter(|r| r.status() == pb::ping_reply::Status::Reply)
                            .map(|r| r.rtt_ns),
                    ),
                    Some(Event::TcpingAttempt(a))
                        if a.outcome() == pb::tcping_attempt::Outcome::Connected =>
                    {
                        rtts.push(a.latency_ns);
                    }
                    _ => {}
                }
                // The matrix reports cells, not every echo.
                false
            };
            run_plan(state, link, plan, run_id, task_id, tx, on_progress).await
        }
        Err(e) => task_error(pb::task_error::Kind::ProbeFailure, e.to_string()),
    };
    (result, rtts)
}

/// The median of round trips in nanoseconds, as milliseconds.
fn median_ms(mut rtts: Vec<i64>) -> f64 {
    rtts.sort_unstable();
    let Some(&mid) = rtts.get(rtts.len() / 2) else {
        return 0.0;
    };
    let ns = if rtts.len().is_multiple_of(2) {
        let lower = rtts.get(rtts.len() / 2 - 1).copied().unwrap_or(mid);
        lower / 2 + mid / 2
    } else {
        mid
    };
    // Round trips are far below 2^53 ns.
    #[allow(clippy::cast_precision_loss)]
    let ms = ns as f64 / 1e6;
    (ms * 1000.0).round() / 1000.0
}

fn error_of(result: &pb::TaskResult) -> Option<String> {
    match &result.outcome {
        Some(pb::task_result::Outcome::Error(e)) => Some(e.message.clone()),
        None => Some("the probe returned no result".into()),
        Some(_) => None,
    }
}

fn read_ping(
    out: &mut pb::MeshCell,
    (small, rtts): (pb::TaskResult, Vec<i64>),
    big: Option<(pb::TaskResult, Vec<i64>)>,
) {
    if let Some(why) = error_of(&small) {
        out.set_status(pb::MeshCellStatus::Fail);
        out.reason = format!("could not run: {why}");
        return;
    }
    if let Some(pb::task_result::Outcome::Ping(p)) = &small.outcome {
        out.sent = p.transmitted;
        out.received = p.received;
    }
    out.rtt_median_ms = median_ms(rtts);
    let mut reasons = Vec::new();
    if let Some((big, _)) = big {
        out.large_run = true;
        match (&big.outcome, error_of(&big)) {
            (Some(pb::task_result::Outcome::Ping(p)), _) => {
                out.large_sent = p.transmitted;
                out.large_received = p.received;
            }
            (_, Some(why)) => reasons.push(format!("large packet could not run: {why}")),
            _ => {}
        }
    }
    let status = grade(out.sent, out.received, "echoes", &mut reasons);
    let large = if out.large_run {
        grade(
            out.large_sent,
            out.large_received,
            "large DF echoes",
            &mut reasons,
        )
    } else {
        pb::MeshCellStatus::Ok
    };
    out.set_status(worst(status, large));
    out.reason = reasons.join("; ");
}

fn read_connects(out: &mut pb::MeshCell, (result, rtts): (pb::TaskResult, Vec<i64>)) {
    if let Some(why) = error_of(&result) {
        out.set_status(pb::MeshCellStatus::Fail);
        out.reason = format!("could not run: {why}");
        return;
    }
    let mut reasons = Vec::new();
    if let Some(pb::task_result::Outcome::Tcping(t)) = &result.outcome {
        out.sent = t.attempted;
        out.received = t.connected;
        if t.refused > 0 {
            reasons.push(format!("{} refused", t.refused));
        }
        if t.timed_out > 0 {
            reasons.push(format!("{} timed out", t.timed_out));
        }
    }
    out.rtt_median_ms = median_ms(rtts);
    let status = grade(out.sent, out.received, "connects", &mut Vec::new());
    out.set_status(status);
    out.reason = reasons.join(", ");
}

/// ok when every one came back, fail when none did, degraded between.
fn grade(sent: u32, received: u32, what: &str, reasons: &mut Vec<String>) -> pb::MeshCellStatus {
    if sent > 0 && received >= sent {
        return pb::MeshCellStatus::Ok;
    }
    reasons.push(format!("{received} of {sent} {what} answered"));
    if received == 0 {
        pb::MeshCellStatus::Fail
    } else {
        pb::MeshCellStatus::Degraded
    }
}

fn worst(a: pb::MeshCellStatus, b: pb::MeshCellStatus) -> pb::MeshCellStatus {
    let rank = |s: pb::MeshCellStatus| match s {
        pb::MeshCellStatus::Fail => 3,
        pb::MeshCellStatus::Degraded => 2,
        pb::MeshCellStatus::Ok => 1,
        pb::MeshCellStatus::Skipped | pb::MeshCellStatus::Unspecified => 0,
    };
    if rank(a) >= rank(b) { a } else { b }
}

async fn step(tx: &Tx, done: usize, total: usize, detail: &str) {
    let event = pb::RunEvent {
        event: Some(pb::run_event::Event::Step(pb::RunStep {
            phase: "cells".to_owned(),
            done: u32::try_from(done).unwrap_or(u32::MAX),
            total: u32::try_from(total).unwrap_or(u32::MAX),
            detail: detail.to_owned(),
        })),
    };
    let _ = tx.send(Ok(event)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median_ms(vec![3_000_000, 1_000_000, 2_000_000]), 2.0);
        assert_eq!(median_ms(vec![1_000_000, 2_000_000]), 1.5);
        assert_eq!(median_ms(Vec::new()), 0.0);
    }

    #[test]
    fn a_cell_fails_when_nothing_or_the_large_packet_never_answers() {
        let mut r = Vec::new();
        assert_eq!(grade(3, 3, "echoes", &mut r), pb::MeshCellStatus::Ok);
        assert_eq!(grade(3, 1, "echoes", &mut r), pb::MeshCellStatus::Degraded);
        assert_eq!(grade(3, 0, "echoes", &mut r), pb::MeshCellStatus::Fail);
        assert_eq!(r, ["1 of 3 echoes answered", "0 of 3 echoes answered"]);
        assert_eq!(
            worst(pb::MeshCellStatus::Ok, pb::MeshCellStatus::Fail),
            pb::MeshCellStatus::Fail
        );
    }
}
