//! `meshctl ping` and `meshctl tcping`: the classic tools, run remotely on a
//! probe, printed the way the classic tool prints (ping's per-reply lines and
//! statistics; paping's attempts and connection statistics).

use std::time::Duration;

use probemesh_proto::pb;
use probemesh_proto::pb::ping_reply::Status as ReplyStatus;
use probemesh_proto::pb::tcping_attempt::Outcome;
use serde::Serialize;

use crate::client::{Endpoint, Failure, exit};
use crate::output::{OutputFormat, emit};

use super::{ErrorView, micros, ns_to_ms};

/// Largest ICMP payload over IPv4 (65535 − 20 IP − 8 ICMP).
pub const MAX_PING_SIZE: u32 = 65_507;
/// Most attempts a single command may ask for.
pub const MAX_COUNT: u32 = 10_000;

/// `meshctl ping`.
#[derive(Debug, clap::Args)]
pub struct PingArgs {
    /// Probe to ping from.
    #[arg(long)]
    pub from: String,
    /// IP, hostname (resolved on the probe) or probe:NAME.
    pub target: String,
    /// ICMP payload bytes, as `ping -s` (1472 fills a 1500-byte MTU).
    #[arg(short = 's', long = "size", default_value_t = 56, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_PING_SIZE)))]
    pub size: u32,
    /// Path MTU discovery: `do` sets DF and never fragments, `dont` lets packets fragment.
    #[arg(short = 'M', long = "pmtudisc", value_parser = ["do", "dont"], default_value = "dont")]
    pub pmtudisc: String,
    /// Echo requests to send.
    #[arg(short = 'c', long = "count", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_COUNT)))]
    pub count: u32,
    /// Wait between requests (e.g. 200ms, 1s).
    #[arg(short = 'i', long = "interval", default_value = "1s", value_parser = crate::parse_positive_duration_arg)]
    pub interval: Duration,
    /// How long to wait for each reply.
    #[arg(short = 'W', long = "timeout", default_value = "1s", value_parser = crate::parse_positive_duration_arg)]
    pub timeout: Duration,
    /// IP time to live (1..=255; default: the system's).
    #[arg(short = 't', long = "ttl", value_parser = clap::value_parser!(u32).range(1..=255))]
    pub ttl: Option<u32>,
    /// Quiet, as `ping -q`: no line per reply, the statistics only (the
    /// probe then sends no per-reply progress at all).
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
}

/// `meshctl tcping`.
#[derive(Debug, clap::Args)]
pub struct TcpingArgs {
    /// Probe to connect from.
    #[arg(long)]
    pub from: String,
    /// HOST:PORT, IP:PORT or probe:NAME:PORT.
    pub target: String,
    /// Connection attempts.
    #[arg(short = 'c', long = "count", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_COUNT)))]
    pub count: u32,
    /// Timeout of each attempt (e.g. 500ms, 2s).
    #[arg(short = 't', long = "timeout", default_value = "1s", value_parser = crate::parse_positive_duration_arg)]
    pub timeout: Duration,
    /// Wait between attempts.
    #[arg(short = 'i', long = "interval", default_value = "1s", value_parser = crate::parse_positive_duration_arg)]
    pub interval: Duration,
}

/// Runs `meshctl ping`.
pub async fn ping(
    args: PingArgs,
    endpoint: &Endpoint,
    output: OutputFormat,
) -> Result<u8, Failure> {
    let request = pb::RunRequest {
        from: args.from,
        kind: Some(pb::run_request::Kind::Ping(pb::PingTask {
            target: args.target,
            size: args.size,
            dont_fragment: args.pmtudisc == "do",
            count: args.count,
            interval_us: micros(args.interval),
            timeout_us: micros(args.timeout),
            ttl: args.ttl.unwrap_or(0),
            progress: ping_delivery(args.quiet, output).into(),
        })),
    };
    run_tool(request, endpoint, output).await
}

/// How the probe should send the replies: none when quiet, a few
/// milliseconds late when a human reads them as they come, in large batches
/// when they are printed at the end (`-o json`).
fn ping_delivery(quiet: bool, output: OutputFormat) -> pb::ProgressDelivery {
    match (quiet, output) {
        (true, _) => pb::ProgressDelivery::None,
        (false, OutputFormat::Table) => pb::ProgressDelivery::Batched,
        (false, _) => pb::ProgressDelivery::Bulk,
    }
}

/// Runs `meshctl tcping`.
pub async fn tcping(
    args: TcpingArgs,
    endpoint: &Endpoint,
    output: OutputFormat,
) -> Result<u8, Failure> {
    let request = pb::RunRequest {
        from: args.from,
        kind: Some(pb::run_request::Kind::Tcping(pb::TcpingTask {
            host: args.target,
            port: 0,
            count: args.count,
            timeout_us: micros(args.timeout),
            interval_us: micros(args.interval),
        })),
    };
    run_tool(request, endpoint, output).await
}

/// Starts the run, prints progress as it streams (table mode), then the
/// summary; returns the exit code.
async fn run_tool(
    request: pb::RunRequest,
    endpoint: &Endpoint,
    output: OutputFormat,
) -> Result<u8, Failure> {
    let mut report = ToolReport::new(&request);
    let table = output == OutputFormat::Table;
    if table {
        println!("{}", header(&request));
    }
    let mut lines = Vec::new();
    let (accepted, record) = super::stream_run(request, endpoint, |p| {
        for line in ProgressLine::all(p) {
            if table {
                println!("{}", line.render());
            }
            lines.push(line);
        }
    })
    .await?;
    report.run_id = accepted.run_id;
    report.trace_id = accepted.trace_id;
    report.progress = lines;
    report.finish(record.result.unwrap_or_default(), record.duration_ms);
    emit(output, &report, || report.summary_lines())?;
    Ok(report.exit_code())
}

fn header(request: &pb::RunRequest) -> String {
    match &request.kind {
        Some(pb::run_request::Kind::Ping(p)) => format!(
            "PING {} {}({}) bytes of data, from probe {}{}.",
            p.target,
            p.size,
            p.size + 28,
            request.from,
            if p.dont_fragment { ", DF set" } else { "" }
        ),
        Some(pb::run_request::Kind::Tcping(t)) => format!(
            "Connecting to {} on TCP from probe {}:",
            t.host, request.from
        ),
        _ => String::new(),
    }
}

/// The JSON shape of `meshctl ping|tcping -o json` (and of `meshctl runs ID`).
#[derive(Debug, Serialize)]
pub struct ToolReport {
    run_id: String,
    trace_id: String,
    from: String,
    kind: &'static str,
    target: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    progress: Vec<ProgressLine>,
    summary: Option<Summary>,
    error: Option<ErrorView>,
    duration_ms: i64,
}

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Summary {
    Ping {
        address: String,
        size: u32,
        dont_fragment: bool,
        transmitted: u32,
        received: u32,
        errors: u32,
        loss_pct: f64,
        rtt_ms: Option<RttView>,
        elapsed_ms: f64,
    },
    Tcping {
        address: String,
        port: u32,
        attempted: u32,
        connected: u32,
        refused: u32,
        timed_out: u32,
        failed: u32,
        loss_pct: f64,
        latency_ms: Option<RttView>,
    },
}

#[derive(Debug, Serialize)]
struct RttView {
    min: f64,
    avg: f64,
    max: f64,
    mdev: f64,
}

impl From<pb::RttStats> for RttView {
    fn from(r: pb::RttStats) -> Self {
        Self {
            min: ns_to_ms(r.min_ns),
            avg: ns_to_ms(r.avg_ns),
            max: ns_to_ms(r.max_ns),
            mdev: ns_to_ms(r.mdev_ns),
        }
    }
}

/// One reply or attempt.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProgressLine {
    /// An ICMP echo outcome.
    Reply {
        seq: u32,
        status: &'static str,
        from: String,
        bytes: u32,
        ttl: u32,
        rtt_ms: f64,
        icmp_type: u32,
        icmp_code: u32,
        mtu: u32,
        detail: String,
    },
    /// A TCP connect outcome.
    Attempt {
        seq: u32,
        outcome: &'static str,
        address: String,
        latency_ms: f64,
        detail: String,
    },
}

impl ProgressLine {
    /// The lines of one progress message: one, or each reply of a batch in
    /// order.
    pub fn all(p: pb::TaskProgress) -> Vec<Self> {
        match p.event {
            Some(pb::task_progress::Event::PingReplies(batch)) => {
                batch.replies.into_iter().map(Self::reply).collect()
            }
            event => vec![Self::from(pb::TaskProgress { event, ..p })],
        }
    }

    fn reply(r: pb::PingReply) -> Self {
        ProgressLine::Reply {
            seq: r.seq,
            status: match r.status() {
                ReplyStatus::Reply => "reply",
                ReplyStatus::Timeout => "timeout",
                ReplyStatus::IcmpError => "icmp_error",
                ReplyStatus::SendError => "send_error",
                ReplyStatus::Unspecified => "unknown",
            },
            from: r.from,
            bytes: r.bytes,
            ttl: r.ttl,
            rtt_ms: ns_to_ms(r.rtt_ns),
            icmp_type: r.icmp_type,
            icmp_code: r.icmp_code,
            mtu: r.mtu,
            detail: r.detail,
        }
    }
}

impl From<pb::TaskProgress> for ProgressLine {
    fn from(p: pb::TaskProgress) -> Self {
        match p.event {
            Some(pb::task_progress::Event::PingReply(r)) => Self::reply(r),
            Some(pb::task_progress::Event::TcpingAttempt(a)) => ProgressLine::Attempt {
                seq: a.seq,
                outcome: outcome_name(a.outcome()),
                address: a.address,
                latency_ms: ns_to_ms(a.latency_ns),
                detail: a.detail,
            },
            // Other tests' progress never reaches ping/tcping.
            _ => ProgressLine::Attempt {
                seq: 0,
                outcome: "unknown",
                address: String::new(),
                latency_ms: 0.0,
                detail: String::new(),
            },
        }
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Connected => "connected",
        Outcome::Refused => "refused",
        Outcome::Timeout => "timeout",
        Outcome::Unreachable => "unreachable",
        Outcome::Error | Outcome::Unspecified => "error",
    }
}

impl ProgressLine {
    /// The line the classic tool would print.
    pub fn render(&self) -> String {
        match self {
            ProgressLine::Reply {
                seq,
                status,
                from,
                bytes,
                ttl,
                rtt_ms,
                mtu,
                detail,
                ..
            } => match *status {
                "reply" => format!(
                    "{bytes} bytes from {from}: icmp_seq={seq} ttl={ttl} time={rtt_ms:.3} ms"
                ),
                "timeout" => format!("no answer yet for icmp_seq={seq}"),
                "icmp_error" if *mtu > 0 => {
                    format!("From {from} icmp_seq={seq} Frag needed and DF set (mtu = {mtu})")
                }
                "icmp_error" => format!("From {from} icmp_seq={seq} {detail}"),
                _ => format!("ping: {detail}"),
            },
            ProgressLine::Attempt {
                outcome,
                address,
                latency_ms,
                detail,
                ..
            } => match *outcome {
                "connected" => {
                    format!("Connected to {address}: time={latency_ms:.2}ms protocol=TCP")
                }
                "refused" => format!("Connection refused ({address})"),
                "timeout" => format!("Connection timed out ({address})"),
                _ => format!("Connection failed ({address}): {detail}"),
            },
        }
    }
}

impl ToolReport {
    fn new(request: &pb::RunRequest) -> Self {
        let (kind, target) = super::kind_and_target(request);
        Self {
            run_id: String::new(),
            trace_id: String::new(),
            from: request.from.clone(),
            kind,
            target,
            progress: Vec::new(),
            summary: None,
            error: None,
            duration_ms: 0,
        }
    }

    /// The report of a stored run (no per-reply progress is kept).
    pub fn from_record(record: pb::RunRecord) -> Self {
        let mut report = Self::new(&record.request.clone().unwrap_or_default());
        report.run_id = record.run_id;
        report.trace_id = record.trace_id;
        report.finish(record.result.unwrap_or_default(), record.duration_ms);
        report
    }

    fn finish(&mut self, result: pb::TaskResult, duration_ms: i64) {
        self.duration_ms = duration_ms;
        match result.outcome {
            Some(pb::task_result::Outcome::Ping(s)) => {
                self.summary = Some(Summary::Ping {
                    loss_pct: loss_pct(s.transmitted, s.received),
                    address: s.address,
                    size: s.size,
                    dont_fragment: s.dont_fragment,
                    transmitted: s.transmitted,
                    received: s.received,
                    errors: s.errors,
                    rtt_ms: (s.received > 0).then(|| s.rtt.unwrap_or_default().into()),
                    elapsed_ms: ns_to_ms(s.elapsed_ns),
                });
            }
            Some(pb::task_result::Outcome::Tcping(s)) => {
                self.summary = Some(Summary::Tcping {
                    loss_pct: loss_pct(s.attempted, s.connected),
                    address: s.address,
                    port: s.port,
                    attempted: s.attempted,
                    connected: s.connected,
                    refused: s.refused,
                    timed_out: s.timed_out,
                    failed: s.failed,
                    latency_ms: (s.connected > 0).then(|| s.latency.unwrap_or_default().into()),
                });
            }
            Some(pb::task_result::Outcome::Error(e)) => {
                self.error = Some(ErrorView::from_wire(&e));
            }
            None => {
                self.error = Some(ErrorView::missing());
            }
            // Other tests have their own reports; a stored one is summarised
            // by `meshctl runs`.
            Some(_) => {}
        }
    }

    /// Summary lines as the classic tool prints them.
    pub fn summary_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        match &self.summary {
            Some(Summary::Ping {
                address,
                transmitted,
                received,
                errors,
                loss_pct,
                rtt_ms,
                elapsed_ms,
                ..
            }) => {
                lines.push(String::new());
                lines.push(format!(
                    "--- {} ({address}) ping statistics, from {} ---",
                    self.target, self.from
                ));
                let errs = if *errors > 0 {
                    format!("+{errors} errors, ")
                } else {
                    String::new()
                };
                lines.push(format!(
                    "{transmitted} packets transmitted, {received} received, {errs}{}% packet loss, time {:.0}ms",
                    trim_pct(*loss_pct),
                    elapsed_ms
                ));
                if let Some(r) = rtt_ms {
                    lines.push(format!(
                        "rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
                        r.min, r.avg, r.max, r.mdev
                    ));
                }
            }
            Some(Summary::Tcping {
                attempted,
                connected,
                loss_pct,
                latency_ms,
                ..
            }) => {
                lines.push(String::new());
                lines.push("Connection statistics:".into());
                lines.push(format!(
                    "\tAttempted = {attempted}, Connected = {connected}, Failed = {} ({loss_pct:.2}%)",
                    attempted - connected
                ));
                if let Some(l) = latency_ms {
                    lines.push("Approximate connection times:".into());
                    lines.push(format!(
                        "\tMinimum = {:.2}ms, Maximum = {:.2}ms, Average = {:.2}ms",
                        l.min, l.max, l.avg
                    ));
                }
            }
            None => {}
        }
        if let Some(e) = &self.error {
            lines.push(format!(
                "{} failed on probe {}: {}",
                self.kind, self.from, e.message
            ));
        }
        lines.push(format!("run {} · trace {}", self.run_id, self.trace_id));
        lines
    }

    /// 0 all answered, 1 loss or errors (a fault), 2 bad input, 3 the probe could not do it.
    pub fn exit_code(&self) -> u8 {
        match (&self.summary, &self.error) {
            (_, Some(e)) if e.kind == "invalid_input" => exit::USAGE,
            (_, Some(_)) | (None, None) => exit::INCONCLUSIVE,
            (
                Some(Summary::Ping {
                    transmitted,
                    received,
                    errors,
                    ..
                }),
                None,
            ) => {
                if received == transmitted && *errors == 0 {
                    exit::OK
                } else {
                    exit::FAULT
                }
            }
            (
                Some(Summary::Tcping {
                    attempted,
                    connected,
                    ..
                }),
                None,
            ) => {
                if attempted == connected {
                    exit::OK
                } else {
                    exit::FAULT
                }
            }
        }
    }
}

fn loss_pct(sent: u32, answered: u32) -> f64 {
    if sent == 0 {
        return 0.0;
    }
    f64::from(sent.saturating_sub(answered)) * 100.0 / f64::from(sent)
}

/// `33.3333` / `0` / `100`, as ping prints percentages.
fn trim_pct(p: f64) -> String {
    let s = format!("{p:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_print_like_ping() {
        assert_eq!(trim_pct(loss_pct(3, 2)), "33.3333");
        assert_eq!(trim_pct(loss_pct(3, 3)), "0");
        assert_eq!(trim_pct(loss_pct(3, 0)), "100");
        assert_eq!(trim_pct(loss_pct(0, 0)), "0");
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        let req = pb::RunRequest {
            from: "node-1".into(),
            kind: Some(pb::run_request::Kind::Ping(pb::PingTask::default())),
        };
        let mut r = ToolReport::new(&req);
        r.finish(
            pb::TaskResult {
                outcome: Some(pb::task_result::Outcome::Ping(pb::PingSummary {
                    transmitted: 3,
                    received: 3,
                    ..Default::default()
                })),
                ..Default::default()
            },
            10,
        );
        assert_eq!(r.exit_code(), exit::OK);
        r.finish(
            pb::TaskResult {
                outcome: Some(pb::task_result::Outcome::Ping(pb::PingSummary {
                    transmitted: 3,
                    received: 1,
                    ..Default::default()
                })),
                ..Default::default()
            },
            10,
        );
        assert_eq!(r.exit_code(), exit::FAULT);
        r.summary = None;
        r.finish(
            pb::TaskResult {
                outcome: Some(pb::task_result::Outcome::Error(pb::TaskError {
                    kind: pb::task_error::Kind::InvalidInput.into(),
                    message: "size".into(),
                })),
                ..Default::default()
            },
            10,
        );
        assert_eq!(r.exit_code(), exit::USAGE);
    }

    #[test]
    fn reply_lines_look_like_ping() {
        let line = ProgressLine::from(pb::TaskProgress {
            task_id: "t".into(),
            event: Some(pb::task_progress::Event::PingReply(pb::PingReply {
                seq: 1,
                status: ReplyStatus::Reply.into(),
                from: "198.18.0.12".into(),
                bytes: 64,
                ttl: 63,
                rtt_ns: 123_456,
                ..Default::default()
            })),
            ..Default::default()
        });
        assert_eq!(
            line.render(),
            "64 bytes from 198.18.0.12: icmp_seq=1 ttl=63 time=0.123 ms"
        );
    }

    #[test]
    fn a_batch_prints_every_reply_in_order() {
        let reply = |seq, status: ReplyStatus| pb::PingReply {
            seq,
            status: status.into(),
            from: "198.18.0.12".into(),
            bytes: 64,
            ttl: 63,
            rtt_ns: 250_000,
            ..Default::default()
        };
        let lines = ProgressLine::all(pb::TaskProgress {
            task_id: "t".into(),
            event: Some(pb::task_progress::Event::PingReplies(pb::PingReplyBatch {
                replies: vec![
                    reply(1, ReplyStatus::Reply),
                    reply(2, ReplyStatus::Timeout),
                    reply(3, ReplyStatus::Reply),
                ],
            })),
            ..Default::default()
        });
        let rendered: Vec<String> = lines.iter().map(ProgressLine::render).collect();
        assert_eq!(
            rendered,
            [
                "64 bytes from 198.18.0.12: icmp_seq=1 ttl=63 time=0.250 ms",
                "no answer yet for icmp_seq=2",
                "64 bytes from 198.18.0.12: icmp_seq=3 ttl=63 time=0.250 ms",
            ]
        );
        assert_eq!(
            ping_delivery(false, OutputFormat::Table),
            pb::ProgressDelivery::Batched
        );
        assert_eq!(
            ping_delivery(false, OutputFormat::Json),
            pb::ProgressDelivery::Bulk
        );
        assert_eq!(
            ping_delivery(true, OutputFormat::Table),
            pb::ProgressDelivery::None
        );
    }
}
