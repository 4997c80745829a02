//! `meshctl mtr` and `meshctl pmtu`: the path tools, run remotely on a probe.
//! `mtr` prints the report `mtr -r -n` prints (same header, columns and
//! widths), then the reading rules the probe applied to it; `pmtu` prints
//! tracepath's way: the local interface MTU, one line per size probed, the
//! `Resume: pmtu N` line, and a warning when packets vanish without a
//! frag-needed (a black hole). Both have `-o json` with their own shapes.

use std::time::Duration;

use probemesh_proto::pb;
use serde::Serialize;

use crate::client::{Endpoint, Failure, exit};
use crate::output::{OutputFormat, emit};

use super::{ErrorView, format_unix_ms, micros, ns_to_ms, stream_run};

/// Most rounds (`mtr -c`).
pub const MAX_ROUNDS: u32 = 100;
/// Most hops (`mtr -m`).
pub const MAX_HOPS: u32 = 64;
/// Longest wait per probe.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest interval between rounds.
pub const MAX_INTERVAL: Duration = Duration::from_secs(10);
/// Width of the host column of `mtr -r` (its `len_hosts`), bytes.
const MTR_HOST_WIDTH: usize = 33;

/// `meshctl mtr`.
#[derive(Debug, clap::Args)]
pub struct MtrArgs {
    /// Probe to trace from: NAME, or NAME@pod:NAMESPACE/POD.
    #[arg(long)]
    pub from: String,
    /// IPv4 address or hostname (resolved on the probe).
    pub target: String,
    /// TCP SYN probes to --port (default 80); the destination answers SYN-ACK or RST.
    #[arg(short = 'T', long, conflicts_with = "udp")]
    pub tcp: bool,
    /// UDP probes to --port + TTL − 1 (default 33434); the destination answers port unreachable.
    #[arg(short = 'u', long)]
    pub udp: bool,
    /// Rounds of probes (`mtr -c`).
    #[arg(short = 'c', long = "report-cycles", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_ROUNDS)))]
    pub count: u32,
    /// Highest TTL probed (`mtr -m`).
    #[arg(short = 'm', long = "max-ttl", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_HOPS)))]
    pub max_hops: u32,
    /// Destination port of TCP and UDP probes (`mtr -P`).
    #[arg(short = 'P', long = "port", value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub port: Option<u32>,
    /// Time between rounds (at most 10s).
    #[arg(short = 'i', long = "interval", default_value = "1s", value_parser = crate::parse_positive_duration_arg)]
    pub interval: Duration,
    /// How long a round waits for answers (at most 5s).
    #[arg(long = "timeout", default_value = "1s", value_parser = crate::parse_positive_duration_arg)]
    pub timeout: Duration,
}

/// `meshctl pmtu`.
#[derive(Debug, clap::Args)]
pub struct PmtuArgs {
    /// Probe to search from: NAME, or NAME@pod:NAMESPACE/POD.
    #[arg(long)]
    pub from: String,
    /// IPv4 address or hostname (resolved on the probe).
    pub target: String,
    /// Upper bound of the search, bytes (default: the egress interface MTU).
    #[arg(long = "max-mtu", value_parser = clap::value_parser!(u32).range(68..=65535))]
    pub max_mtu: Option<u32>,
    /// How long each probe waits for its answer (at most 5s).
    #[arg(short = 'W', long = "timeout", default_value = "1s", value_parser = crate::parse_positive_duration_arg)]
    pub timeout: Duration,
    /// Probes per size before it counts as lost.
    #[arg(long = "attempts", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub attempts: u32,
}

fn at_most(what: &str, d: Duration, max: Duration) -> Result<(), Failure> {
    if d > max {
        return Err(Failure::usage(format!(
            "{what} {} is above the limit of {}",
            humantime::format_duration(d),
            humantime::format_duration(max)
        )));
    }
    Ok(())
}

/// Runs `meshctl mtr`.
pub async fn mtr(args: MtrArgs, endpoint: &Endpoint, output: OutputFormat) -> Result<u8, Failure> {
    at_most("--timeout", args.timeout, MAX_TIMEOUT)?;
    at_most("--interval", args.interval, MAX_INTERVAL)?;
    let mode = if args.tcp {
        pb::trace_task::Mode::Tcp
    } else if args.udp {
        pb::trace_task::Mode::Udp
    } else {
        pb::trace_task::Mode::Icmp
    };
    let request = pb::RunRequest {
        from: args.from,
        kind: Some(pb::run_request::Kind::Trace(pb::TraceTask {
            target: args.target,
            mode: mode.into(),
            port: args.port.unwrap_or(0),
            count: args.count,
            max_hops: args.max_hops,
            interval_us: micros(args.interval),
            timeout_us: micros(args.timeout),
        })),
    };
    let (accepted, record) = stream_run(request, endpoint, |_| {}).await?;
    let report = MtrReport::new(accepted, record);
    emit(output, &report, || report.lines())?;
    Ok(report.exit_code())
}

/// Runs `meshctl pmtu`.
pub async fn pmtu(
    args: PmtuArgs,
    endpoint: &Endpoint,
    output: OutputFormat,
) -> Result<u8, Failure> {
    at_most("--timeout", args.timeout, MAX_TIMEOUT)?;
    let request = pb::RunRequest {
        from: args.from,
        kind: Some(pb::run_request::Kind::Pmtu(pb::PmtuTask {
            target: args.target,
            max_mtu: args.max_mtu.unwrap_or(0),
            timeout_us: micros(args.timeout),
            attempts: args.attempts,
        })),
    };
    let table = output == OutputFormat::Table;
    let (accepted, record) = stream_run(request, endpoint, |event| {
        if table && let Some(pb::task_progress::Event::PmtuStep(step)) = &event.event {
            println!("{}", step_line(step));
        }
    })
    .await?;
    let report = PmtuReport::new(accepted, record);
    emit(output, &report, || report.summary_lines())?;
    Ok(report.exit_code())
}

/// One hop of `meshctl mtr -o json`; times in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct HopView {
    /// TTL, 1-based.
    pub hop: u32,
    /// Address that answered, or `???`.
    pub host: String,
    /// Percent unanswered.
    pub loss_pct: f64,
    /// Probes sent.
    pub sent: u32,
    /// Answers received.
    pub received: u32,
    /// Newest round trip.
    pub last_ms: f64,
    /// Mean round trip.
    pub avg_ms: f64,
    /// Best round trip.
    pub best_ms: f64,
    /// Worst round trip.
    pub worst_ms: f64,
    /// Standard deviation (mtr's, n − 1).
    pub stdev_ms: f64,
}

impl From<&pb::TraceHop> for HopView {
    fn from(h: &pb::TraceHop) -> Self {
        Self {
            hop: h.ttl,
            host: h.host.clone(),
            loss_pct: h.loss_pct,
            sent: h.sent,
            received: h.received,
            last_ms: h.last_ms,
            avg_ms: h.avg_ms,
            best_ms: h.best_ms,
            worst_ms: h.worst_ms,
            stdev_ms: h.stdev_ms,
        }
    }
}

/// The JSON shape of `meshctl mtr -o json`.
#[derive(Debug, Clone, Serialize)]
pub struct MtrReport {
    run_id: String,
    trace_id: String,
    from: String,
    target: String,
    address: String,
    mode: String,
    /// RFC 3339, when the coordinator started the run.
    started: String,
    reached: bool,
    /// First hop of loss continuing to the last hop; 0 when none.
    loss_from_hop: u32,
    hops: Vec<HopView>,
    /// The reading rules applied to this report.
    reading: Vec<String>,
    error: Option<ErrorView>,
    duration_ms: i64,
}

impl MtrReport {
    /// The report of a finished run (streamed or stored).
    pub fn new(accepted: pb::RunAccepted, record: pb::RunRecord) -> Self {
        let request = record.request.clone().unwrap_or_default();
        let target = match &request.kind {
            Some(pb::run_request::Kind::Trace(t)) => t.target.clone(),
            _ => String::new(),
        };
        let mut report = Self {
            run_id: first_non_empty(accepted.run_id, record.run_id),
            trace_id: first_non_empty(accepted.trace_id, record.trace_id),
            from: request.from,
            target,
            address: String::new(),
            mode: String::new(),
            started: format_unix_ms(record.started_unix_ms),
            reached: false,
            loss_from_hop: 0,
            hops: Vec::new(),
            reading: Vec::new(),
            error: None,
            duration_ms: record.duration_ms,
        };
        match record.result.and_then(|r| r.outcome) {
            Some(pb::task_result::Outcome::Trace(t)) => {
                report.address = t.address;
                report.mode = t.mode;
                report.reached = t.reached;
                report.loss_from_hop = t.loss_from_hop;
                report.hops = t.hops.iter().map(HopView::from).collect();
                report.reading = t.reading;
            }
            Some(pb::task_result::Outcome::Error(e)) => {
                report.error = Some(ErrorView::from_wire(&e))
            }
            _ => report.error = Some(ErrorView::missing()),
        }
        report
    }

    /// The report as `mtr -r -n` prints it, then the reading rules and the
    /// run's ids.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let started = self
            .started
            .strip_suffix('Z')
            .map_or_else(|| self.started.clone(), |s| format!("{s}+0000"));
        lines.push(format!("Start: {started}"));
        lines.push(mtr_header(&self.from));
        for hop in &self.hops {
            lines.push(mtr_hop_line(hop));
        }
        if !self.reading.is_empty() {
            lines.push("Reading:".to_owned());
            lines.extend(self.reading.iter().map(|r| format!("  {r}")));
        }
        if let Some(e) = &self.error {
            lines.push(format!("mtr failed on probe {}: {}", self.from, e.message));
        }
        lines.push(format!("run {} · trace {}", self.run_id, self.trace_id));
        lines
    }

    /// 0 destination reached without real loss; 1 not reached or loss to the
    /// end; 2 bad input; 3 the probe could not do it.
    pub fn exit_code(&self) -> u8 {
        match &self.error {
            Some(e) => e.exit_code(),
            None if self.reached && self.loss_from_hop == 0 => exit::OK,
            None => exit::FAULT,
        }
    }
}

fn first_non_empty(a: String, b: String) -> String {
    if a.is_empty() { b } else { a }
}

/// Writes `text` at byte `offset` of `line` as C's `snprintf(buf + offset)`
/// does: what was there from `offset` on is replaced.
fn put_at(line: &mut String, offset: usize, text: &str) {
    let mut cut = offset.min(line.len());
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    line.truncate(cut);
    while line.len() < offset {
        line.push(' ');
    }
    line.push_str(text);
}

/// mtr 0.95's report columns: `(header, width)` after the host column.
const MTR_COLUMNS: [(&str, usize); 8] = [
    ("Loss%", 6),
    ("Snt", 6),
    (" ", 1),
    ("Last", 6),
    ("Avg", 6),
    ("Best", 6),
    ("Wrst", 6),
    ("StDev", 6),
];

/// `HOST: NAME` padded to the host column, then the right-aligned titles.
pub fn mtr_header(host: &str) -> String {
    let mut line = format!("HOST: {host:<MTR_HOST_WIDTH$}");
    let mut at = MTR_HOST_WIDTH;
    for (title, width) in MTR_COLUMNS {
        put_at(&mut line, at, &format!("{title:>width$}"));
        at += width;
    }
    line
}

/// ` N.|-- HOST` then each figure at its column, written over whatever
/// overflowed (as mtr does: a 100.0% loss loses its `%`).
pub fn mtr_hop_line(hop: &HopView) -> String {
    let mut line = format!(" {:>2}.|-- {:<MTR_HOST_WIDTH$}", hop.hop, hop.host);
    let fields = [
        format!(" {:4.1}%", hop.loss_pct),
        format!(" {:5}", hop.sent),
        " ".to_owned(),
        format!(" {:5.1}", hop.last_ms),
        format!(" {:5.1}", hop.avg_ms),
        format!(" {:5.1}", hop.best_ms),
        format!(" {:5.1}", hop.worst_ms),
        format!(" {:5.1}", hop.stdev_ms),
    ];
    let mut at = MTR_HOST_WIDTH;
    for (text, (_, width)) in fields.iter().zip(MTR_COLUMNS) {
        put_at(&mut line, at, text);
        at += width;
    }
    line
}

/// One size of a pmtu search, as it streams.
fn step_line(step: &pb::PmtuStep) -> String {
    let what = match step.outcome.as_str() {
        "ok" => "ok".to_owned(),
        "lost" => "no reply".to_owned(),
        "frag_needed" if step.reported_mtu > 0 => {
            format!(
                "frag needed, mtu {} (from {})",
                step.reported_mtu, step.from
            )
        }
        "frag_needed" => format!("frag needed, no mtu (from {})", step.from),
        "local_too_big" if step.reported_mtu > 0 => {
            format!("local error: message too long, mtu={}", step.reported_mtu)
        }
        "local_too_big" => "local error: message too long".to_owned(),
        other => other.to_owned(),
    };
    format!("     {:>5} bytes: {what}", step.mtu)
}

/// One size probed, in `meshctl pmtu -o json`.
#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    /// Whole IPv4 packet size, bytes.
    pub mtu: u32,
    /// ok, lost, frag_needed or local_too_big.
    pub outcome: String,
    /// MTU a frag-needed (or the local route) reported; 0 when none.
    pub reported_mtu: u32,
    /// Who sent the frag-needed.
    pub from: String,
}

/// The JSON shape of `meshctl pmtu -o json`.
#[derive(Debug, Clone, Serialize)]
pub struct PmtuReport {
    run_id: String,
    trace_id: String,
    from: String,
    target: String,
    address: String,
    interface: String,
    interface_mtu: u32,
    /// Largest whole-packet size that crossed; 0 when nothing did.
    path_mtu: u32,
    blackhole: bool,
    frag_needed_from: String,
    frag_needed_mtu: u32,
    steps: Vec<StepView>,
    elapsed_ms: f64,
    error: Option<ErrorView>,
    duration_ms: i64,
}

impl PmtuReport {
    /// The report of a finished run (streamed or stored).
    pub fn new(accepted: pb::RunAccepted, record: pb::RunRecord) -> Self {
        let request = record.request.clone().unwrap_or_default();
        let target = match &request.kind {
            Some(pb::run_request::Kind::Pmtu(p)) => p.target.clone(),
            _ => String::new(),
        };
        let mut report = Self {
            run_id: first_non_empty(accepted.run_id, record.run_id),
            trace_id: first_non_empty(accepted.trace_id, record.trace_id),
            from: request.from,
            target,
            address: String::new(),
            interface: String::new(),
            interface_mtu: 0,
            path_mtu: 0,
            blackhole: false,
            frag_needed_from: String::new(),
            frag_needed_mtu: 0,
            steps: Vec::new(),
            elapsed_ms: 0.0,
            error: None,
            duration_ms: record.duration_ms,
        };
        match record.result.and_then(|r| r.outcome) {
            Some(pb::task_result::Outcome::Pmtu(p)) => {
                report.address = p.address;
                report.interface = p.interface;
                report.interface_mtu = p.interface_mtu;
                report.path_mtu = p.path_mtu;
                report.blackhole = p.blackhole;
                report.frag_needed_from = p.frag_needed_from;
                report.frag_needed_mtu = p.frag_needed_mtu;
                report.elapsed_ms = ns_to_ms(p.elapsed_ns);
                report.steps = p
                    .steps
                    .into_iter()
                    .map(|s| StepView {
                        mtu: s.mtu,
                        outcome: s.outcome,
                        reported_mtu: s.reported_mtu,
                        from: s.from,
                    })
                    .collect();
            }
            Some(pb::task_result::Outcome::Error(e)) => {
                report.error = Some(ErrorView::from_wire(&e))
            }
            _ => report.error = Some(ErrorView::missing()),
        }
        report
    }

    /// tracepath's way: the local MTU, the resume line, and the black-hole
    /// warning (the per-size lines stream before these).
    pub fn summary_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(e) = &self.error {
            lines.push(format!("pmtu failed on probe {}: {}", self.from, e.message));
        } else {
            let via = if self.interface.is_empty() {
                String::new()
            } else {
                format!(" via {}", self.interface)
            };
            lines.push(format!(
                " 1?: [LOCALHOST]                      pmtu {}{via}",
                self.interface_mtu
            ));
            if self.path_mtu == 0 {
                lines.push(format!(
                    "     Resume: no reply at any size: {} ({}) is unreachable",
                    self.target, self.address
                ));
            } else {
                lines.push(format!("     Resume: pmtu {}", self.path_mtu));
            }
            if self.frag_needed_mtu > 0 {
                lines.push(format!(
                    "     frag needed from {}: mtu {}",
                    self.frag_needed_from, self.frag_needed_mtu
                ));
            }
            if self.blackhole {
                lines.push(format!(
                    "WARNING: PMTU black hole: packets above {} bytes vanish and no ICMP frag-needed comes back (interface mtu {})",
                    self.path_mtu, self.interface_mtu
                ));
            }
        }
        lines.push(format!("run {} · trace {}", self.run_id, self.trace_id));
        lines
    }

    /// 0 a path MTU found with working PMTU discovery; 1 a black hole or an
    /// unreachable target; 2 bad input; 3 the probe could not do it.
    pub fn exit_code(&self) -> u8 {
        match &self.error {
            Some(e) => e.exit_code(),
            None if self.blackhole || self.path_mtu == 0 => exit::FAULT,
            None => exit::OK,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(n: u32, host: &str, loss: f64) -> HopView {
        HopView {
            hop: n,
            host: host.into(),
            loss_pct: loss,
            sent: 10,
            received: 10,
            last_ms: 0.1,
            avg_ms: 0.1,
            best_ms: 0.1,
            worst_ms: 0.2,
            stdev_ms: 0.0,
        }
    }

    #[test]
    fn lines_match_mtr_report() {
        // Captured from `mtr -r -n -c 2 127.0.0.1` (mtr 0.95) on a host named vm.
        assert_eq!(
            mtr_header("vm"),
            "HOST: vm                          Loss%   Snt   Last   Avg  Best  Wrst StDev"
        );
        let mut h = hop(1, "127.0.0.1", 0.0);
        h.sent = 2;
        h.worst_ms = 0.1;
        assert_eq!(
            mtr_hop_line(&h),
            "  1.|-- 127.0.0.1                  0.0%     2    0.1   0.1   0.1   0.1   0.0"
        );
        assert_eq!(
            mtr_hop_line(&hop(1, "198.18.0.1", 0.0)),
            "  1.|-- 198.18.0.1                 0.0%    10    0.1   0.1   0.1   0.2   0.0"
        );
        // mtr's 100.0% overflows its column and loses the '%'.
        assert_eq!(
            mtr_hop_line(&hop(12, "???", 100.0)),
            " 12.|-- ???                       100.0    10    0.1   0.1   0.1   0.2   0.0"
        );
    }

    #[test]
    fn mtr_exit_codes() {
        let record = |outcome| pb::RunRecord {
            result: Some(pb::TaskResult {
                outcome: Some(outcome),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ok = MtrReport::new(
            pb::RunAccepted::default(),
            record(pb::task_result::Outcome::Trace(pb::TraceResult {
                reached: true,
                ..Default::default()
            })),
        );
        assert_eq!(ok.exit_code(), exit::OK);
        let lossy = MtrReport::new(
            pb::RunAccepted::default(),
            record(pb::task_result::Outcome::Trace(pb::TraceResult {
                reached: true,
                loss_from_hop: 2,
                ..Default::default()
            })),
        );
        assert_eq!(lossy.exit_code(), exit::FAULT);
        let bad = MtrReport::new(
            pb::RunAccepted::default(),
            record(pb::task_result::Outcome::Error(pb::TaskError {
                kind: pb::task_error::Kind::InvalidInput.into(),
                message: "trace.count".into(),
            })),
        );
        assert_eq!(bad.exit_code(), exit::USAGE);
    }

    #[test]
    fn pmtu_prints_resume_and_warns_of_black_holes() {
        let record = pb::RunRecord {
            request: Some(pb::RunRequest {
                from: "node-1".into(),
                kind: Some(pb::run_request::Kind::Pmtu(pb::PmtuTask {
                    target: "198.19.2.10".into(),
                    ..Default::default()
                })),
            }),
            result: Some(pb::TaskResult {
                outcome: Some(pb::task_result::Outcome::Pmtu(pb::PmtuResult {
                    address: "198.19.2.10".into(),
                    interface: "eth0".into(),
                    interface_mtu: 1500,
                    path_mtu: 1440,
                    blackhole: true,
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let report = PmtuReport::new(pb::RunAccepted::default(), record);
        let lines = report.summary_lines();
        assert_eq!(
            lines[0],
            " 1?: [LOCALHOST]                      pmtu 1500 via eth0"
        );
        assert_eq!(lines[1], "     Resume: pmtu 1440");
        assert!(lines[2].starts_with("WARNING: PMTU black hole: packets above 1440 bytes"));
        assert_eq!(report.exit_code(), exit::FAULT);
        let step = pb::PmtuStep {
            mtu: 1500,
            outcome: "frag_needed".into(),
            reported_mtu: 1440,
            from: "198.18.0.1".into(),
        };
        assert_eq!(
            step_line(&step),
            "      1500 bytes: frag needed, mtu 1440 (from 198.18.0.1)"
        );
    }
}
