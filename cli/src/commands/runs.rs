//! `meshctl runs [RUN_ID]`: run history, or one run in full.

use std::path::PathBuf;

use probemesh_proto::pb;
use probemesh_report::listing::{RunLine, format_unix_ms};
use serde::Serialize;

use crate::client::{Endpoint, Failure};
use crate::output::{HtmlFile, OutputFormat, emit, print_json};

use super::tools::ToolReport;

/// `meshctl runs`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// Show this run in full (a unique prefix of its id is enough).
    pub run_id: Option<String>,
    /// How many runs to list, newest first (0: every run the coordinator
    /// keeps; they come in pages of at most 500).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// With RUN_ID: also write the run as one self-contained HTML page (verdict, evidence, ladder
    /// diagram of the followed packets, checks).
    #[arg(long, value_name = "FILE", requires = "run_id")]
    pub html: Option<PathBuf>,
}

/// One run in full (`meshctl runs RUN_ID -o json`): its report with the
/// run's state.
#[derive(Debug, Serialize)]
struct RunView<'a, T> {
    #[serde(flatten)]
    report: &'a T,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

#[derive(Debug, Serialize)]
struct RunRow {
    run_id: String,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
    started: String,
    requester: String,
    from: String,
    kind: &'static str,
    target: String,
    result: String,
    duration_ms: i64,
}

impl From<&pb::RunRecord> for RunRow {
    fn from(r: &pb::RunRecord) -> Self {
        let line = RunLine::from(r);
        Self {
            run_id: line.run_id,
            state: line.state,
            failure: line.failure,
            started: format_unix_ms(line.started_unix_ms),
            requester: line.requester,
            from: line.from,
            kind: line.kind,
            target: line.target,
            result: line.result,
            duration_ms: line.duration_ms,
        }
    }
}

/// Lists runs or shows one.
pub async fn run(args: RunsArgs, endpoint: &Endpoint, output: OutputFormat) -> Result<(), Failure> {
    // A bad --html path is bad input (exit 2) whether or not the
    // coordinator answers.
    let html = args.html.as_deref().map(HtmlFile::create).transpose()?;
    let mut control = endpoint.control().await?;
    if let Some(id) = args.run_id {
        let record = control
            .get_run(pb::GetRunRequest { run_id: id })
            .await?
            .into_inner();
        if let Some(html) = html {
            html.write_record(&record, &[])?;
        }
        let row = RunRow::from(&record);
        let header = format!(
            "run {}  {}  started {}  by {}  ({} ms)",
            row.run_id, row.state, row.started, row.requester, row.duration_ms
        );
        let failed: Vec<String> = row.failure.iter().map(|f| format!("failed: {f}")).collect();
        if record.diagnosis.is_some() {
            let report = super::probe::ProbeReport::new(&pb::RunAccepted::default(), &record, None);
            let lines = [vec![header], failed, report.table_lines()].concat();
            return show_run(output, &row, &report, lines);
        }
        if record.matrix.is_some() {
            // The matrix's own table names a failure (`error: ...`).
            let report = super::mesh::MeshReport::from_record(&record);
            let lines = [vec![header], report.table_lines()].concat();
            return show_run(output, &row, &report, lines);
        }
        let report = ToolReport::from_record(record);
        let what = format!(
            "{} from {} to {}: {}",
            row.kind, row.from, row.target, row.result
        );
        let lines = [vec![header, what], failed, report.summary_lines()].concat();
        return show_run(output, &row, &report, lines);
    }
    let wanted = match args.limit {
        0 => usize::MAX,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let mut rows: Vec<RunRow> = Vec::new();
    let mut page_token = String::new();
    for _ in 0..super::MAX_PAGES {
        let page = control
            .list_runs(pb::ListRunsRequest {
                limit: 0,
                page_size: u32::try_from(wanted - rows.len()).unwrap_or(u32::MAX),
                page_token,
            })
            .await?
            .into_inner();
        let room = wanted - rows.len();
        rows.extend(page.runs.iter().take(room).map(RunRow::from));
        page_token = page.next_page_token;
        if page_token.is_empty() || rows.len() >= wanted {
            break;
        }
    }
    match output {
        OutputFormat::Json => print_json(&rows).map_err(|e| Failure::usage(e.to_string())),
        OutputFormat::Table => {
            println!(
                "{:<17} {:<12} {:<21} {:<10} {:<12} {:<7} {:<24} {:>8}  RESULT",
                "RUN", "STATE", "STARTED", "BY", "FROM", "TEST", "TARGET", "MS"
            );
            for r in &rows {
                println!(
                    "{:<17} {:<12} {:<21} {:<10} {:<12} {:<7} {:<24} {:>8}  {}",
                    r.run_id,
                    r.state,
                    r.started,
                    r.requester,
                    r.from,
                    r.kind,
                    r.target,
                    r.duration_ms,
                    r.result
                );
            }
            Ok(())
        }
    }
}

/// Prints one run: `report` with the run's state in JSON, else `lines`.
fn show_run<T: Serialize>(
    output: OutputFormat,
    row: &RunRow,
    report: &T,
    lines: Vec<String>,
) -> Result<(), Failure> {
    let view = RunView {
        report,
        state: row.state,
        failure: row.failure.clone(),
    };
    emit(output, &view, || lines)
}
