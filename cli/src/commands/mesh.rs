//! `meshctl mesh`: the whole mesh as an N×N matrix, on demand. The
//! coordinator plans and runs every cell (bounded, see its `matrix`
//! module); this command shows the progress, prints one grid per target
//! kind, the failing pairs each with the `meshctl probe` that diagnoses it,
//! and exits 1 when any cell failed. `-o json` prints [`MeshReport`].

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use probemesh_model::mesh::{
    Diagnose, GRID_KINDS, cell_status_name, cell_text, diagnose, diagnose_command, grid_title,
    loss_pct, target_kind_name,
};
use probemesh_proto::pb;
use probemesh_report::PairLink;
use probemesh_report::listing::RunLine;
use serde::Serialize;

use crate::client::{Endpoint, Failure, exit};
use crate::output::{HtmlFile, OutputFormat, emit, run_footer};

const AFTER_HELP: &str = "\
What it does:
  every probe --from selects (rows) tests every host --to selects (columns),
  each pair on its own, so both directions of a pair are two cells:
    node         ICMP echoes to the host's address (a node's InternalIP, an
                 external probe's address), and one large echo with DF of
                 --size bytes;
    pod-network  ICMP echoes to a pod the inventory lists on the node's pod
                 network (from probes on nodes: pod networks are routed
                 between nodes, not from outside the cluster);
    nodeport     TCP connects to the node's address at the first NodePort
                 of the inventory's Services.
  The coordinator runs at most 32 tests of a matrix at once, and 8 on any one
  source probe across every matrix it runs; a matrix has at most 64 rows and
  64 columns.

SELECTOR: all (default), NAME[,NAME...] (probe or node names), role=node,
role=external.

Cells: `0% 0.4ms ✓` answered, median round trip (connect time for nodeport),
✓ the large packet got through; `✗1472` it did not; `33% 0.5ms` some lost;
`100% loss` none answered; `–` skipped (why is listed below); `·` does not
apply (an external host has no pod network or NodePort).

Examples:
  meshctl mesh
  meshctl mesh --from role=node --to node-2,cloudvm-1
  meshctl mesh --from cloudvm-1 --size 1472 --count 5
  meshctl mesh -o json | jq '.cells[] | select(.status == \"fail\")'
  meshctl mesh --html mesh.html   # a heat map to attach to a ticket
  meshctl mesh --diagnose 3 --html mesh.html
                                  # and a verdict for up to 3 failing pairs,
                                  # each linked from the heat map

Exit: 0 every cell ok, 1 a cell failed or lost packets, 2 bad input,
3 nothing could be tested, 4 coordinator unreachable.";

/// `meshctl mesh`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct MeshArgs {
    /// Rows: the probes that test (all, NAME[,NAME...], role=node|external).
    #[arg(long, value_name = "SELECTOR", default_value = "all")]
    pub from: String,
    /// Columns: the hosts tested (all, NAME[,NAME...], role=node|external).
    #[arg(long, value_name = "SELECTOR", default_value = "all")]
    pub to: String,
    /// ICMP payload of the large echo with DF to each host, as ping -s (0: none).
    #[arg(long, value_name = "BYTES", default_value_t = 1472,
          value_parser = clap::value_parser!(u32).range(0..=65_507))]
    pub size: u32,
    /// Echoes (connects) per cell [default: 3].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=20))]
    pub count: Option<u32>,
    /// Also write the matrix as one self-contained HTML page: a heat map per target kind,
    /// each failing cell linked to its pair's details and `meshctl probe` command (and, with
    /// --diagnose, to that run's report).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// After the matrix, diagnose up to N failing pairs, one after another: the `meshctl probe`
    /// each pair lists, without captures (run it yourself for the packets). Prints each verdict;
    /// with --html, each run's report is written next to FILE (FILE_STEM.RUN_ID.html) and the
    /// pair's cell links to it.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=MAX_DIAGNOSE))]
    pub diagnose: u32,
}

/// Most pairs `--diagnose` runs: each is a whole `meshctl probe`.
const MAX_DIAGNOSE: i64 = 8;

impl MeshArgs {
    fn request(&self) -> pb::RunRequest {
        pb::RunRequest {
            from: String::new(),
            kind: Some(pb::run_request::Kind::Mesh(pb::MeshRequest {
                from: self.from.clone(),
                to: self.to.clone(),
                size: self.size,
                count: self.count.unwrap_or(0),
            })),
        }
    }
}

/// `meshctl mesh -o json` (docs/mesh.md).
#[derive(Debug, Serialize)]
pub struct MeshReport {
    run_id: String,
    trace_id: String,
    /// Rows and columns, in order.
    sources: Vec<String>,
    targets: Vec<String>,
    /// The large echo's payload (0: none), echoes per cell.
    size: u32,
    count: u32,
    limits: Limits,
    cells: Vec<CellView>,
    summary: Summary,
    duration_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// `--diagnose`: the failing pairs diagnosed, in matrix order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    diagnosed: Vec<Diagnosed>,
}

/// One failing pair's `meshctl probe`, run by `--diagnose`.
#[derive(Debug, Serialize)]
struct Diagnosed {
    from: String,
    to: String,
    run_id: String,
    /// The verdict (class/cause), or why there is none.
    result: String,
    /// Its report, when --html wrote one.
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<String>,
}

#[derive(Debug, Serialize)]
struct Limits {
    max_concurrent: u32,
    max_per_probe: u32,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    ok: usize,
    degraded: usize,
    fail: usize,
    skipped: usize,
}

#[derive(Debug, Serialize)]
struct CellView {
    from: String,
    to: String,
    /// node / pod-network / nodeport.
    kind: &'static str,
    /// ok / degraded / fail / skipped.
    status: &'static str,
    address: String,
    address_reason: String,
    sent: u32,
    received: u32,
    loss_pct: f64,
    rtt_median_ms: f64,
    /// The large DF echo; absent when not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    large: Option<Large>,
    #[serde(skip_serializing_if = "String::is_empty")]
    reason: String,
    /// The command that diagnoses this cell (failing and degraded cells).
    #[serde(skip_serializing_if = "Option::is_none")]
    diagnose: Option<String>,
    /// The grid's text for this cell.
    #[serde(skip)]
    text: String,
}

#[derive(Debug, Serialize)]
struct Large {
    size: u32,
    sent: u32,
    received: u32,
}

impl CellView {
    fn new(c: &pb::MeshCell, size: u32) -> Self {
        Self {
            from: c.from.clone(),
            to: c.to.clone(),
            kind: target_kind_name(c.kind()),
            status: cell_status_name(c.status()),
            address: c.address.clone(),
            address_reason: c.address_reason.clone(),
            sent: c.sent,
            received: c.received,
            loss_pct: loss_pct(c.sent, c.received),
            rtt_median_ms: c.rtt_median_ms,
            large: c.large_run.then_some(Large {
                size,
                sent: c.large_sent,
                received: c.large_received,
            }),
            reason: c.reason.clone(),
            diagnose: diagnose_command(c, size),
            text: cell_text(c, size),
        }
    }
}

impl MeshReport {
    /// The report of a stored run (`meshctl runs RUN_ID`).
    pub fn from_record(record: &pb::RunRecord) -> Self {
        let accepted = pb::RunAccepted {
            run_id: record.run_id.clone(),
            trace_id: record.trace_id.clone(),
        };
        Self::new(&accepted, record)
    }

    fn new(accepted: &pb::RunAccepted, record: &pb::RunRecord) -> Self {
        let m = record.matrix.clone().unwrap_or_default();
        let cells: Vec<CellView> = m.cells.iter().map(|c| CellView::new(c, m.size)).collect();
        let mut summary = Summary::default();
        for c in &cells {
            match c.status {
                "ok" => summary.ok += 1,
                "degraded" => summary.degraded += 1,
                "fail" => summary.fail += 1,
                _ => summary.skipped += 1,
            }
        }
        let error = match (&record.matrix, record.failure.is_empty()) {
            (_, false) => Some(record.failure.clone()),
            (None, true) => Some("the run ended without a matrix".to_owned()),
            (Some(_), true) => None,
        };
        Self {
            run_id: accepted.run_id.clone(),
            trace_id: accepted.trace_id.clone(),
            sources: m.sources,
            targets: m.targets,
            size: m.size,
            count: m.count,
            limits: Limits {
                max_concurrent: m.max_concurrent,
                max_per_probe: m.max_per_probe,
            },
            cells,
            summary,
            duration_ms: record.duration_ms,
            error,
            diagnosed: Vec::new(),
        }
    }

    /// 1 when a cell failed or lost packets, 3 when nothing was tested.
    fn exit_code(&self) -> u8 {
        let s = &self.summary;
        if s.fail + s.degraded > 0 {
            exit::FAULT
        } else if s.ok == 0 || self.error.is_some() {
            exit::INCONCLUSIVE
        } else {
            exit::OK
        }
    }

    /// One grid per kind that has cells, the legend, the failing pairs and
    /// the skip reasons.
    pub fn table_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(e) = &self.error {
            lines.push(format!("error: {e}"));
        }
        for kind in GRID_KINDS {
            let name = target_kind_name(kind);
            if !self.cells.iter().any(|c| c.kind == name) {
                continue;
            }
            lines.push(grid_title(kind, self.count, self.size));
            lines.extend(self.grid(name));
            lines.push(String::new());
        }
        lines.push(
            "✓ large packet through  ✗N large packet (N B) lost  – skipped  · does not apply"
                .into(),
        );
        let s = &self.summary;
        lines.push(format!(
            "{} cells: {} ok, {} degraded, {} failed, {} skipped ({} ms)",
            self.cells.len(),
            s.ok,
            s.degraded,
            s.fail,
            s.skipped,
            self.duration_ms
        ));
        let broken: Vec<&CellView> = self.cells.iter().filter(|c| c.diagnose.is_some()).collect();
        if !broken.is_empty() {
            lines.push(String::new());
            lines.push("failing pairs:".into());
            for c in broken {
                lines.push(format!(
                    "  {} → {} {} ({}): {}",
                    c.from, c.to, c.kind, c.address, c.reason
                ));
                if let Some(cmd) = &c.diagnose {
                    lines.push(format!("      {cmd}"));
                }
            }
        }
        if !self.diagnosed.is_empty() {
            lines.push(String::new());
            lines.push(format!(
                "diagnosed ({} of {} failing pairs, meshctl probe without captures):",
                self.diagnosed.len(),
                self.cells.iter().filter(|c| c.diagnose.is_some()).count()
            ));
            for d in &self.diagnosed {
                let html = d
                    .html
                    .as_ref()
                    .map_or_else(String::new, |h| format!("  {h}"));
                lines.push(format!(
                    "  {} → {}  {}  run {}{html}",
                    d.from, d.to, d.result, d.run_id
                ));
            }
        }
        let mut skips: Vec<(&str, usize)> = Vec::new();
        for c in self.cells.iter().filter(|c| c.status == "skipped") {
            match skips.iter_mut().find(|(r, _)| *r == c.reason) {
                Some((_, n)) => *n += 1,
                None => skips.push((&c.reason, 1)),
            }
        }
        if !skips.is_empty() {
            lines.push(String::new());
            lines.push("skipped:".into());
            lines.extend(skips.iter().map(|(r, n)| format!("  {n} × {r}")));
        }
        lines.push(String::new());
        lines.extend(run_footer(&[], &self.run_id, &self.trace_id));
        lines
    }

    /// Rows: sources; columns: targets; `·` where no cell of `kind` exists.
    fn grid(&self, kind: &str) -> Vec<String> {
        let text = |from: &str, to: &str| {
            self.cells
                .iter()
                .find(|c| c.kind == kind && c.from == from && c.to == to)
                .map_or_else(|| "·".to_owned(), |c| c.text.clone())
        };
        let corner = "from \\ to";
        let first = self
            .sources
            .iter()
            .map(|s| s.chars().count())
            .chain([corner.chars().count()])
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = self
            .targets
            .iter()
            .map(|t| {
                self.sources
                    .iter()
                    .map(|s| text(s, t).chars().count())
                    .chain([t.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let row = |head: &str, cells: Vec<String>| {
            let mut line = format!("  {head:<first$}");
            for (cell, w) in cells.iter().zip(&widths) {
                line.push_str(&format!("  {cell:<w$}"));
            }
            line.trim_end().to_owned()
        };
        let mut lines = vec![row(corner, self.targets.clone())];
        for s in &self.sources {
            lines.push(row(s, self.targets.iter().map(|t| text(s, t)).collect()));
        }
        lines
    }
}

/// Runs `meshctl mesh`; returns the exit code.
pub async fn run(args: MeshArgs, endpoint: &Endpoint, output: OutputFormat) -> Result<u8, Failure> {
    // A bad --html path is bad input (exit 2), found before the run.
    let html = args.html.as_deref().map(HtmlFile::create).transpose()?;
    let live = std::io::stderr().is_terminal();
    let (accepted, record) = super::stream_run_with_steps(
        args.request(),
        endpoint,
        |_| {},
        |step| {
            let line = format!(
                "[{} {}/{}] {}",
                step.phase, step.done, step.total, step.detail
            );
            if live {
                // One line that counts up on a terminal ...
                eprint!("\r\x1b[2K{line}");
            } else if !(step.detail.ends_with(": ok") || step.detail.ends_with(": skipped"))
                || step.done == step.total
            {
                // ... and in a log, the cells that failed, and the last.
                eprintln!("{line}");
            }
        },
    )
    .await?;
    if live {
        eprint!("\r\x1b[2K");
    }
    let mut report = MeshReport::new(&accepted, &record);
    let mut links = Vec::new();
    if args.diagnose > 0
        && let Some(matrix) = &record.matrix
    {
        let pairs = failing_pairs(matrix, args.diagnose);
        for (k, pair) in pairs.iter().enumerate() {
            eprintln!(
                "[diagnose {}/{}] meshctl probe --from {} --to {}",
                k + 1,
                pairs.len(),
                pair.from,
                pair.to
            );
            let (done, link) = diagnose_pair(pair, args.html.as_deref(), endpoint).await?;
            links.extend(link);
            report.diagnosed.push(done);
        }
    }
    emit(output, &report, || report.table_lines())?;
    if let Some(html) = html {
        html.write_mesh(&record, &links)?;
    }
    Ok(report.exit_code())
}

/// The first `n` broken cells' diagnoses, one per (from, to), in matrix
/// order.
fn failing_pairs(matrix: &pb::MeshMatrix, n: u32) -> Vec<Diagnose> {
    let mut pairs: Vec<Diagnose> = Vec::new();
    for d in matrix.cells.iter().filter_map(|c| diagnose(c, matrix.size)) {
        if pairs.len() >= usize::try_from(n).unwrap_or(usize::MAX) {
            break;
        }
        if !pairs.iter().any(|p| p.from == d.from && p.to == d.to) {
            pairs.push(d);
        }
    }
    pairs
}

/// Runs `pair`'s `meshctl probe` without captures; with the heat map at
/// `html`, writes its report next to it and returns the link to it.
async fn diagnose_pair(
    pair: &Diagnose,
    html: Option<&Path>,
    endpoint: &Endpoint,
) -> Result<(Diagnosed, Option<PairLink>), Failure> {
    let request = pb::RunRequest {
        from: pair.from.clone(),
        kind: Some(pb::run_request::Kind::Probe(pb::DiagnosisRequest {
            to: pair.to.clone(),
            size: pair.size.unwrap_or(0),
            no_capture: true,
            ..Default::default()
        })),
    };
    let (accepted, record) =
        super::stream_run_with_steps(request, endpoint, |_| {}, |_| {}).await?;
    let mut done = Diagnosed {
        from: pair.from.clone(),
        to: pair.to.clone(),
        run_id: accepted.run_id.clone(),
        result: RunLine::from(&record).result,
        html: None,
    };
    let Some(page) = html else {
        return Ok((done, None));
    };
    let stem = page
        .file_stem()
        .map_or_else(|| "mesh".to_owned(), |s| s.to_string_lossy().into_owned());
    let name = format!("{stem}.{}.html", accepted.run_id);
    let path = page.with_file_name(&name);
    HtmlFile::create(&path)?.write_record(&record, &[])?;
    done.html = Some(path.display().to_string());
    let link = PairLink {
        from: pair.from.clone(),
        to: pair.to.clone(),
        href: name,
    };
    Ok((done, Some(link)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(from: &str, to: &str, kind: pb::MeshTargetKind, received: u32) -> pb::MeshCell {
        let mut c = pb::MeshCell {
            from: from.into(),
            to: to.into(),
            address: "198.18.0.12".into(),
            sent: 3,
            received,
            rtt_median_ms: 0.412,
            probe_target: format!("probe:{to}"),
            ..Default::default()
        };
        c.set_kind(kind);
        c.set_status(match received {
            3 => pb::MeshCellStatus::Ok,
            0 => pb::MeshCellStatus::Fail,
            _ => pb::MeshCellStatus::Degraded,
        });
        c
    }

    fn report(cells: Vec<pb::MeshCell>) -> MeshReport {
        let record = pb::RunRecord {
            matrix: Some(pb::MeshMatrix {
                sources: vec!["node-1".into(), "node-2".into()],
                targets: vec!["node-1".into(), "node-2".into(), "cloudvm-1".into()],
                cells,
                size: 1472,
                count: 3,
                max_concurrent: 32,
                max_per_probe: 8,
            }),
            ..Default::default()
        };
        MeshReport::new(&pb::RunAccepted::default(), &record)
    }

    #[test]
    fn the_grid_has_a_row_per_source_and_names_the_failing_pair_with_its_command() {
        let mut large_lost = cell("node-1", "node-2", pb::MeshTargetKind::Node, 3);
        large_lost.large_run = true;
        large_lost.large_sent = 3;
        large_lost.set_status(pb::MeshCellStatus::Fail);
        let r = report(vec![
            cell("node-1", "node-1", pb::MeshTargetKind::Node, 3),
            large_lost,
            cell("node-2", "node-1", pb::MeshTargetKind::Node, 0),
            cell("node-2", "node-2", pb::MeshTargetKind::Node, 2),
        ]);
        let lines = r.table_lines();
        let grid: Vec<&str> = lines.iter().skip(1).take(3).map(String::as_str).collect();
        assert_eq!(
            grid,
            [
                "  from \\ to  node-1      node-2            cloudvm-1",
                "  node-1     0% 0.412ms  0% 0.412ms ✗1472  ·",
                "  node-2     100% loss   33.3% 0.412ms     ·",
            ]
        );
        let text = lines.join("\n");
        assert!(text.contains("meshctl probe --from node-1 --to probe:node-2 --size 1472"));
        assert!(text.contains("meshctl probe --from node-2 --to probe:node-1\n"));
        assert_eq!(r.exit_code(), exit::FAULT);
    }

    #[test]
    fn all_ok_exits_0_and_nothing_tested_exits_3() {
        let ok = report(vec![cell("node-1", "node-2", pb::MeshTargetKind::Node, 3)]);
        assert_eq!(ok.exit_code(), exit::OK);
        let mut skipped = cell("node-1", "node-2", pb::MeshTargetKind::Node, 0);
        skipped.set_status(pb::MeshCellStatus::Skipped);
        assert_eq!(report(vec![skipped]).exit_code(), exit::INCONCLUSIVE);
    }
}
