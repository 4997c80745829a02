//! `meshctl transfer` and `meshctl udping`: push bytes over TCP and watch
//! them acknowledged (the test that shows "handshake fine, large segments
//! stall"), and a ping over UDP against a probe's responder, with sizes and
//! DF. Run remotely on a probe; printed as one summary block (transfer) or
//! the way ping prints (udping), with `-o json`.

use std::time::Duration;

use probemesh_proto::pb;
use serde::Serialize;

use crate::client::{Endpoint, Failure, exit};
use crate::output::{OutputFormat, emit};

use super::{ErrorView, micros, ns_to_ms};

/// Most bytes one transfer may push (16 MiB).
pub const MAX_TRANSFER_BYTES: u64 = 16 * 1024 * 1024;
/// Largest UDP payload over IPv4 (65535 − 20 IP − 8 UDP).
pub const MAX_UDP_SIZE: u32 = 65_507;
/// Most datagrams one udping may send.
pub const MAX_COUNT: u32 = 10_000;

/// `meshctl transfer`.
#[derive(Debug, clap::Args)]
pub struct TransferArgs {
    /// Probe to push from (PROBE or PROBE@pod:NAMESPACE/NAME).
    #[arg(long)]
    pub from: String,
    /// probe:NAME (its responder), HOST:PORT, IP:PORT or probe:NAME:PORT.
    pub target: String,
    /// Bytes to push after the handshake: N, or with KiB/MiB (1..=16MiB).
    #[arg(long = "bytes", default_value = "64KiB", value_parser = parse_bytes)]
    pub bytes: u64,
    /// Deadline of the whole test, connect included (e.g. 5s).
    #[arg(short = 't', long = "timeout", default_value = "5s", value_parser = crate::parse_positive_duration_arg)]
    pub timeout: Duration,
}

/// `meshctl udping`.
#[derive(Debug, clap::Args)]
pub struct UdpingArgs {
    /// Probe to send from (PROBE or PROBE@pod:NAMESPACE/NAME).
    #[arg(long)]
    pub from: String,
    /// probe:NAME (its responder), or IP:PORT / HOST:PORT of a UDP echo.
    pub target: String,
    /// UDP payload bytes (1472 fills a 1500-byte MTU with DF).
    #[arg(short = 's', long = "size", default_value_t = 56, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_UDP_SIZE)))]
    pub size: u32,
    /// Path MTU discovery: `do` sets DF and never fragments, `dont` lets datagrams fragment.
    #[arg(short = 'M', long = "pmtudisc", value_parser = ["do", "dont"], default_value = "dont")]
    pub pmtudisc: String,
    /// Datagrams to send.
    #[arg(short = 'c', long = "count", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_COUNT)))]
    pub count: u32,
    /// Wait between datagrams (e.g. 200ms, 1s).
    #[arg(short = 'i', long = "interval", default_value = "1s", value_parser = crate::parse_positive_duration_arg)]
    pub interval: Duration,
    /// How long to wait for each echo.
    #[arg(short = 'W', long = "timeout", default_value = "1s", value_parser = crate::parse_positive_duration_arg)]
    pub timeout: Duration,
}

/// Parses a byte count: `65536`, `64KiB`, `64K`, `1MiB`, `1M` (binary
/// units), within 1..=16 MiB.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KiB" | "kiB" => 1024,
        "M" | "MiB" => 1024 * 1024,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use a number of bytes, KiB or MiB)"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count (e.g. 65536, 64KiB, 1MiB)"))?;
    let bytes = n
        .checked_mul(multiplier)
        .filter(|b| (1..=MAX_TRANSFER_BYTES).contains(b))
        .ok_or_else(|| format!("{s:?} is out of range 1..=16MiB"))?;
    Ok(bytes)
}

/// Runs `meshctl transfer`; exit 0 when every byte was acknowledged, 1 when
/// not (stall, refused, reset, ...), 2 on bad input, 3 when the probe could
/// not run it.
pub async fn run(
    args: TransferArgs,
    endpoint: &Endpoint,
    output: OutputFormat,
) -> Result<u8, Failure> {
    let request = pb::RunRequest {
        from: args.from,
        kind: Some(pb::run_request::Kind::TcpTransfer(pb::TcpTransferTask {
            host: args.target,
            port: 0,
            bytes: args.bytes,
            timeout_us: micros(args.timeout),
            responder: false,
        })),
    };
    let table = output == OutputFormat::Table;
    if table && let Some(pb::run_request::Kind::TcpTransfer(t)) = &request.kind {
        println!(
            "TRANSFER {} bytes to {} over TCP, from probe {}:",
            t.bytes, t.host, request.from
        );
    }
    let mut report = Report::new(&request);
    stream(request, endpoint, &mut report, |_| {}).await?;
    emit(output, &report, || report.summary_lines())?;
    Ok(report.exit_code())
}

/// Runs `meshctl udping`; exit 0 when every datagram was echoed, 1 on loss
/// or errors, 2 on bad input, 3 when the probe could not run it.
pub async fn udping(
    args: UdpingArgs,
    endpoint: &Endpoint,
    output: OutputFormat,
) -> Result<u8, Failure> {
    let request = pb::RunRequest {
        from: args.from,
        kind: Some(pb::run_request::Kind::UdpEcho(pb::UdpEchoTask {
            host: args.target,
            port: 0,
            size: args.size,
            dont_fragment: args.pmtudisc == "do",
            count: args.count,
            interval_us: micros(args.interval),
            timeout_us: micros(args.timeout),
        })),
    };
    let table = output == OutputFormat::Table;
    if table && let Some(pb::run_request::Kind::UdpEcho(u)) = &request.kind {
        println!(
            "UDPING {} {} bytes of data, from probe {}{}.",
            u.host,
            u.size,
            request.from,
            if u.dont_fragment { ", DF set" } else { "" }
        );
    }
    let mut report = Report::new(&request);
    let target = report.target.clone();
    stream(request, endpoint, &mut report, |line| {
        if table {
            println!("{}", line.render(&target));
        }
    })
    .await?;
    emit(output, &report, || report.summary_lines())?;
    Ok(report.exit_code())
}

/// Starts the run and folds its events into `report`, handing each echo
/// line to `on_line` as it arrives.
async fn stream(
    request: pb::RunRequest,
    endpoint: &Endpoint,
    report: &mut Report,
    mut on_line: impl FnMut(&EchoLine),
) -> Result<(), Failure> {
    let mut lines = Vec::new();
    let (accepted, record) = super::stream_run(request, endpoint, |p| {
        if let Some(pb::task_progress::Event::UdpReply(r)) = p.event {
            let line = EchoLine::from(r);
            on_line(&line);
            lines.push(line);
        }
    })
    .await?;
    report.run_id = accepted.run_id;
    report.trace_id = accepted.trace_id;
    report.replies = lines;
    report.finish(record.result.unwrap_or_default(), record.duration_ms);
    Ok(())
}

/// The JSON shape of `meshctl transfer|udping -o json`.
#[derive(Debug, Serialize)]
pub struct Report {
    run_id: String,
    trace_id: String,
    from: String,
    kind: &'static str,
    target: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    replies: Vec<EchoLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transfer: Option<TransferView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    udping: Option<UdpingView>,
    error: Option<ErrorView>,
    duration_ms: i64,
}

/// A finished transfer.
#[derive(Debug, Serialize)]
struct TransferView {
    address: String,
    port: u32,
    outcome: String,
    connected: bool,
    completed: bool,
    handshake_ms: f64,
    bytes_sent: u64,
    bytes_acked: u64,
    retransmits: u32,
    mss: u32,
    pmtu: u32,
    rtt_ms: f64,
    elapsed_ms: f64,
    detail: String,
}

/// A finished udping.
#[derive(Debug, Serialize)]
struct UdpingView {
    address: String,
    port: u32,
    size: u32,
    transmitted: u32,
    received: u32,
    errors: u32,
    loss_pct: f64,
    rtt_ms: Option<RttView>,
}

#[derive(Debug, Serialize)]
struct RttView {
    min: f64,
    avg: f64,
    max: f64,
    mdev: f64,
}

/// One datagram's fate.
#[derive(Debug, Serialize)]
pub struct EchoLine {
    seq: u32,
    status: String,
    bytes: u32,
    rtt_ms: f64,
    detail: String,
}

impl From<pb::UdpEchoReply> for EchoLine {
    fn from(r: pb::UdpEchoReply) -> Self {
        Self {
            seq: r.seq,
            status: r.status,
            bytes: r.bytes,
            rtt_ms: ns_to_ms(r.rtt_ns),
            detail: r.detail,
        }
    }
}

impl EchoLine {
    /// The line ping would print for it.
    fn render(&self, target: &str) -> String {
        match self.status.as_str() {
            "reply" => format!(
                "{} bytes from {target}: udp_seq={} time={:.3} ms",
                self.bytes, self.seq, self.rtt_ms
            ),
            "timeout" => format!("no answer yet for udp_seq={}", self.seq),
            "icmp_error" => format!("From {target} udp_seq={} {}", self.seq, self.detail),
            _ => format!("udping: udp_seq={}: {}", self.seq, self.detail),
        }
    }
}

/// `0.31 ms`, `2.1 ms`, `5 s`.
fn human(ns: i64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    let ms = ns_to_ms(ns);
    if ms < 1000.0 {
        format!("{} ms", trim(format!("{ms:.2}")))
    } else {
        format!("{} s", trim(format!("{:.2}", ms / 1000.0)))
    }
}

fn loss_pct(sent: u32, answered: u32) -> f64 {
    if sent == 0 {
        return 0.0;
    }
    f64::from(sent.saturating_sub(answered)) * 100.0 / f64::from(sent)
}

impl Report {
    fn new(request: &pb::RunRequest) -> Self {
        let (kind, target) = match &request.kind {
            Some(pb::run_request::Kind::TcpTransfer(t)) => ("transfer", t.host.clone()),
            Some(pb::run_request::Kind::UdpEcho(u)) => ("udping", u.host.clone()),
            _ => ("unknown", String::new()),
        };
        Self {
            run_id: String::new(),
            trace_id: String::new(),
            from: request.from.clone(),
            kind,
            target,
            replies: Vec::new(),
            transfer: None,
            udping: None,
            error: None,
            duration_ms: 0,
        }
    }

    fn finish(&mut self, result: pb::TaskResult, duration_ms: i64) {
        self.duration_ms = duration_ms;
        match result.outcome {
            Some(pb::task_result::Outcome::TcpTransfer(r)) => {
                self.transfer = Some(TransferView {
                    address: r.address,
                    port: r.port,
                    outcome: r.outcome,
                    connected: r.connected,
                    completed: r.completed,
                    handshake_ms: ns_to_ms(r.handshake_ns),
                    bytes_sent: r.bytes_sent,
                    bytes_acked: r.bytes_acked,
                    retransmits: r.retransmits,
                    mss: r.mss,
                    pmtu: r.pmtu,
                    rtt_ms: f64::from(r.rtt_us) / 1000.0,
                    elapsed_ms: ns_to_ms(r.elapsed_ns),
                    detail: r.detail,
                });
            }
            Some(pb::task_result::Outcome::UdpEcho(s)) => {
                self.udping = Some(UdpingView {
                    loss_pct: loss_pct(s.transmitted, s.received),
                    address: s.address,
                    port: s.port,
                    size: s.size,
                    transmitted: s.transmitted,
                    received: s.received,
                    errors: s.errors,
                    rtt_ms: (s.received > 0).then(|| {
                        let r = s.rtt.unwrap_or_default();
                        RttView {
                            min: ns_to_ms(r.min_ns),
                            avg: ns_to_ms(r.avg_ns),
                            max: ns_to_ms(r.max_ns),
                            mdev: ns_to_ms(r.mdev_ns),
                        }
                    }),
                });
            }
            Some(pb::task_result::Outcome::Error(e)) => {
                self.error = Some(ErrorView::from_wire(&e));
            }
            Some(_) | None => {
                self.error = Some(ErrorView {
                    kind: "unknown",
                    message: "the run ended without a result of this kind".into(),
                });
            }
        }
    }

    /// The summary block, as printed in table mode.
    pub fn summary_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(t) = &self.transfer {
            lines.push(transfer_line(t));
        }
        if let Some(u) = &self.udping {
            lines.push(String::new());
            lines.push(format!(
                "--- {} ({}:{}) udping statistics, from {} ---",
                self.target, u.address, u.port, self.from
            ));
            let errs = if u.errors > 0 {
                format!("+{} errors, ", u.errors)
            } else {
                String::new()
            };
            let pct = format!("{:.4}", u.loss_pct);
            lines.push(format!(
                "{} packets transmitted, {} received, {errs}{}% packet loss",
                u.transmitted,
                u.received,
                pct.trim_end_matches('0').trim_end_matches('.')
            ));
            if let Some(r) = &u.rtt_ms {
                lines.push(format!(
                    "rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
                    r.min, r.avg, r.max, r.mdev
                ));
            }
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

    /// 0 all good, 1 a fault (stall, loss, refused...), 2 bad input, 3 the
    /// probe could not run it.
    pub fn exit_code(&self) -> u8 {
        if let Some(e) = &self.error {
            return if e.kind == "invalid_input" {
                exit::USAGE
            } else {
                exit::INCONCLUSIVE
            };
        }
        match (&self.transfer, &self.udping) {
            (Some(t), _) if t.completed => exit::OK,
            (Some(_), _) => exit::FAULT,
            (None, Some(u)) if u.received == u.transmitted && u.errors == 0 => exit::OK,
            (None, Some(_)) => exit::FAULT,
            (None, None) => exit::INCONCLUSIVE,
        }
    }
}

/// The one-line verdict of a transfer.
fn transfer_line(t: &TransferView) -> String {
    let at = format!("{}:{}", t.address, t.port);
    let handshake = human(ms_to_ns(t.handshake_ms));
    if t.completed {
        let data = human(ms_to_ns(t.elapsed_ms - t.handshake_ms));
        return format!(
            "Connected to {at} in {handshake}; sent {} bytes, {} acknowledged in {data}; mss {} pmtu {} retransmits {}",
            t.bytes_sent, t.bytes_acked, t.mss, t.pmtu, t.retransmits
        );
    }
    match t.outcome.as_str() {
        "refused" => format!("Connection refused ({at})"),
        "timeout" => format!("Connection timed out ({at}): {}", t.detail),
        "unreachable" => format!("Unreachable ({at}): {}", t.detail),
        _ if t.connected => format!("Connected to {at} in {handshake}; {}", t.detail),
        _ => format!("Transfer to {at} failed: {}", t.detail),
    }
}

fn ms_to_ns(ms: f64) -> i64 {
    // Milliseconds of one test (at most minutes): far inside i64 nanoseconds.
    #[allow(clippy::cast_possible_truncation)]
    let ns = (ms * 1e6).round() as i64;
    ns.max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("65536", Ok(65536) ; "plain")]
    #[test_case("64KiB", Ok(65536) ; "kib")]
    #[test_case("64K", Ok(65536) ; "k")]
    #[test_case("1MiB", Ok(1 << 20) ; "mib")]
    #[test_case("16MiB", Ok(16 << 20) ; "max")]
    #[test_case(" 2 KiB ", Ok(2048) ; "spaces")]
    fn byte_counts_parse(s: &str, expected: Result<u64, String>) {
        assert_eq!(parse_bytes(s), expected);
    }

    #[test_case("0" ; "zero")]
    #[test_case("17MiB" ; "over")]
    #[test_case("64GB" ; "unit")]
    #[test_case("KiB" ; "no digits")]
    #[test_case("" ; "empty")]
    #[test_case("99999999999999999999999MiB" ; "overflow")]
    #[test_case("-1" ; "negative")]
    fn bad_byte_counts_are_refused(s: &str) {
        assert!(parse_bytes(s).is_err(), "{s}");
    }

    fn transfer_report(result: pb::TcpTransferResult) -> Report {
        let mut report = Report::new(&pb::RunRequest {
            from: "cloudvm-1".into(),
            kind: Some(pb::run_request::Kind::TcpTransfer(pb::TcpTransferTask {
                host: "probe:node-1".into(),
                ..Default::default()
            })),
        });
        report.finish(
            pb::TaskResult {
                task_id: "t".into(),
                outcome: Some(pb::task_result::Outcome::TcpTransfer(result)),
            },
            5,
        );
        report
    }

    fn base() -> pb::TcpTransferResult {
        pb::TcpTransferResult {
            address: "198.18.0.11".into(),
            port: 41234,
            connected: true,
            handshake_ns: 310_000,
            bytes_sent: 65536,
            mss: 1448,
            pmtu: 1500,
            outcome: "connected".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_completed_transfer_prints_one_line_and_exits_0() {
        let report = transfer_report(pb::TcpTransferResult {
            bytes_acked: 65536,
            completed: true,
            elapsed_ns: 2_410_000,
            ..base()
        });
        assert_eq!(
            report.summary_lines()[0],
            "Connected to 198.18.0.11:41234 in 0.31 ms; sent 65536 bytes, 65536 acknowledged in 2.1 ms; mss 1448 pmtu 1500 retransmits 0"
        );
        assert_eq!(report.exit_code(), exit::OK);
    }

    #[test]
    fn a_stalled_transfer_says_why_and_exits_1() {
        let report = transfer_report(pb::TcpTransferResult {
            bytes_acked: 2896,
            retransmits: 14,
            elapsed_ns: 5_000_310_000,
            detail: "sent 65536 bytes, 2896 acknowledged after 5 s: large segments are not getting through (retransmits 14, mss 1448, pmtu 1500)".into(),
            ..base()
        });
        assert_eq!(
            report.summary_lines()[0],
            "Connected to 198.18.0.11:41234 in 0.31 ms; sent 65536 bytes, 2896 acknowledged after 5 s: large segments are not getting through (retransmits 14, mss 1448, pmtu 1500)"
        );
        assert_eq!(report.exit_code(), exit::FAULT);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["transfer"]["completed"], false);
        assert_eq!(json["transfer"]["retransmits"], 14);
        assert_eq!(json["kind"], "transfer");
    }

    #[test]
    fn refused_and_errors_map_to_exit_codes() {
        let refused = transfer_report(pb::TcpTransferResult {
            connected: false,
            outcome: "refused".into(),
            ..base()
        });
        assert_eq!(
            refused.summary_lines()[0],
            "Connection refused (198.18.0.11:41234)"
        );
        assert_eq!(refused.exit_code(), exit::FAULT);
        let mut bad = Report::new(&pb::RunRequest::default());
        bad.finish(
            pb::TaskResult {
                task_id: "t".into(),
                outcome: Some(pb::task_result::Outcome::Error(pb::TaskError {
                    kind: pb::task_error::Kind::InvalidInput.into(),
                    message: "network namespace /run/netns/x does not exist (pod gone?)".into(),
                })),
            },
            1,
        );
        assert_eq!(bad.exit_code(), exit::USAGE);
    }

    #[test]
    fn udping_prints_like_ping() {
        let mut report = Report::new(&pb::RunRequest {
            from: "node-1".into(),
            kind: Some(pb::run_request::Kind::UdpEcho(pb::UdpEchoTask {
                host: "probe:node-2".into(),
                ..Default::default()
            })),
        });
        let line = EchoLine::from(pb::UdpEchoReply {
            seq: 1,
            status: "reply".into(),
            rtt_ns: 123_456,
            bytes: 100,
            detail: String::new(),
        });
        assert_eq!(
            line.render("probe:node-2"),
            "100 bytes from probe:node-2: udp_seq=1 time=0.123 ms"
        );
        let err = EchoLine::from(pb::UdpEchoReply {
            seq: 2,
            status: "send_error".into(),
            detail: "local error: message too long, mtu=1400".into(),
            ..Default::default()
        });
        assert_eq!(
            err.render("x"),
            "udping: udp_seq=2: local error: message too long, mtu=1400"
        );
        report.finish(
            pb::TaskResult {
                task_id: "t".into(),
                outcome: Some(pb::task_result::Outcome::UdpEcho(pb::UdpEchoSummary {
                    address: "198.18.0.12".into(),
                    port: 40000,
                    size: 100,
                    transmitted: 3,
                    received: 2,
                    errors: 0,
                    rtt: Some(pb::RttStats {
                        min_ns: 100_000,
                        avg_ns: 150_000,
                        max_ns: 200_000,
                        mdev_ns: 50_000,
                    }),
                })),
            },
            3,
        );
        let lines = report.summary_lines();
        assert_eq!(
            lines[1],
            "--- probe:node-2 (198.18.0.12:40000) udping statistics, from node-1 ---"
        );
        assert_eq!(
            lines[2],
            "3 packets transmitted, 2 received, 33.3333% packet loss"
        );
        assert_eq!(
            lines[3],
            "rtt min/avg/max/mdev = 0.100/0.150/0.200/0.050 ms"
        );
        assert_eq!(report.exit_code(), exit::FAULT);
    }

    #[test]
    fn durations_print_short() {
        assert_eq!(human(310_000), "0.31 ms");
        assert_eq!(human(2_100_000), "2.1 ms");
        assert_eq!(human(5_000_000_000), "5 s");
        assert_eq!(human(1_250_000_000), "1.25 s");
    }
}
