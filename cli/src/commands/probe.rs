//! `meshctl probe --from PROBE --to TARGET`: the planned, bidirectional
//! diagnosis. The coordinator plans and runs every check, captures on every
//! observer at once, and applies its rules; this command shows the run's
//! progress, saves the capture files, and prints the checks and the
//! verdict with its evidence and fix.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use probemesh_model::check::{CheckName, Direction, Status};
use probemesh_model::evidence::Source;
use probemesh_model::grpc::evidence_source;
use probemesh_model::path::Step;
use probemesh_model::verdict::{Cause, Class};
use probemesh_proto::{compat, pb};
use serde::Serialize;

use super::capture::{CaptureFiles, CaptureReport, InterfaceView, TimingView};
use crate::client::{Endpoint, Failure, exit};
use crate::output::{HtmlFile, OutputFormat, emit, run_footer};

const AFTER_HELP: &str = "\
What it does, in the field's order:
  1. resolves TARGET through the inventory: nodeport:PORT is every node's address
     at that port plus the Service's backend pods; svc:NS/NAME its ClusterIP and
     backends; pod:NS/NAME the pod's IP; dns:NAME a resolution check only;
  2. arms a synchronized, headers-only capture on the source and every node
     involved (NIC and overlay tunnel), all at one instant;
  3. runs, at once: icmp (20 echoes), icmp_large (--size with DF), tcp_connect,
     tcp_transfer (64 KiB), dns (resolv.conf vs cluster DNS vs upstream),
     listener (inside backend pods), node_facts and nat_rules on every node,
     and the same icmp checks back from the far side;
  4. when something failed: path (mtr) and pmtu;
  5. correlates the captures packet by packet and applies the rules.

Verdict classes: ok, network_unreachable (firewall, routing, overload, link),
port_unreachable (refused, loopback_only, filtered), dns_failure (pod_dns_config,
dns_service_down, dns_unreachable), mtu_blackhole, cni_failure
(kube_proxy_rules_missing, overlay_source_mismatch), degraded (loss, latency),
inconclusive (what is missing is listed).

Examples:
  meshctl probe --from cloudvm-1 --to nodeport:30080 --size 1472
  meshctl probe --from node-3 --to svc:default/web
  meshctl probe --from node-3@pod:default/client-3 --to dns:web.default.svc.cluster.local
  meshctl probe --from node-1 --to pod:default/web-0:8080 --no-capture -o json

Exit: 0 ok, 1 a fault was found, 2 bad input, 3 inconclusive, 4 coordinator
unreachable.";

/// `meshctl probe`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct ProbeArgs {
    /// Where the test starts: PROBE, or PROBE@pod:NAMESPACE/NAME for a pod on that probe's node.
    #[arg(long, value_name = "PROBE")]
    pub from: String,
    /// What to test: IP[:PORT], HOST[:PORT], probe:NAME[:PORT], nodeport:[NODE:]PORT,
    /// svc:NS/NAME[:PORT], pod:NS/NAME[:PORT], dns:NAME.
    #[arg(long, value_name = "TARGET")]
    pub to: String,
    /// ICMP payload of the large-packet check with DF, as ping -s (1472 fills a 1500-byte MTU).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(0..=65_507))]
    pub size: Option<u32>,
    /// Echoes per ICMP check [default: 20].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: Option<u32>,
    /// Wait per attempt (e.g. 500ms, 2s) for every check, exactly [default: the plain echoes 1s;
    /// the checks after them 4 x the path's measured round trip, at least 250ms].
    #[arg(long, value_name = "DUR", value_parser = crate::parse_positive_duration_arg)]
    pub timeout: Option<Duration>,
    /// Run without the synchronized captures.
    #[arg(long)]
    pub no_capture: bool,
    /// Directory for the capture files; each run gets OUT/RUN_ID/.
    #[arg(long, value_name = "DIR", default_value = "./captures")]
    pub out: PathBuf,
    /// Also write the run as one self-contained HTML page (verdict, evidence, ladder diagram of
    /// the followed packets, checks), linking the capture files.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

impl ProbeArgs {
    fn request(&self) -> pb::RunRequest {
        pb::RunRequest {
            from: self.from.clone(),
            kind: Some(pb::run_request::Kind::Probe(pb::DiagnosisRequest {
                to: self.to.clone(),
                size: self.size.unwrap_or(0),
                count: self.count.unwrap_or(0),
                timeout_us: self
                    .timeout
                    .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
                no_capture: self.no_capture,
            })),
        }
    }
}

/// The JSON shape of `meshctl probe -o json` (DESIGN §3).
#[derive(Debug, Serialize)]
pub struct ProbeReport {
    run_id: String,
    trace_id: String,
    from: String,
    target: TargetView,
    observers: Vec<ObserverView>,
    checks: Vec<CheckView>,
    verdict: VerdictView,
    timing: TimingView,
    artifacts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct TargetView {
    spec: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    endpoints: Vec<EndpointView>,
}

#[derive(Debug, Serialize)]
struct EndpointView {
    #[serde(skip_serializing_if = "String::is_empty")]
    node: String,
    ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u32>,
    role: String,
    reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    probe: String,
}

#[derive(Debug, Serialize)]
struct ObserverView {
    probe: String,
    interfaces: Vec<String>,
    /// Per interface: packets, kernel drops, and when its ring went live
    /// on the coordinator's clock.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    capture: Vec<InterfaceView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct CheckView {
    name: &'static str,
    from: String,
    to: String,
    direction: &'static str,
    #[serde(skip_serializing_if = "is_zero")]
    size: u32,
    status: &'static str,
    sent: u32,
    received: u32,
    rtt_ms: RttView,
    detail: String,
}

#[derive(Debug, Serialize)]
struct RttView {
    min: f64,
    avg: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct VerdictView {
    class: &'static str,
    cause: &'static str,
    summary: String,
    fix: String,
    confidence: f64,
    rule: String,
    /// The summary clause by clause, each with the evidence items (indices
    /// into `evidence`) behind it; empty for records older than typed
    /// evidence.
    claims: Vec<ClaimView>,
    evidence: Vec<EvidenceView>,
    missing: Vec<String>,
    /// The test packets' way, forward then return; the failing step names
    /// its blocker. Empty for records older than path steps.
    path: Vec<StepView>,
}

/// One path step: `{"leg", "at", "action", "detail", "resource": {"kind",
/// "name"}, "source": {...}, "evidence": [N]}`.
#[derive(Debug, Serialize)]
struct StepView {
    leg: &'static str,
    at: String,
    action: &'static str,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<ResourceView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<SourceView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    evidence: Vec<usize>,
    /// The step as the text report prints it.
    #[serde(skip)]
    line: String,
}

#[derive(Debug, Serialize)]
struct ResourceView {
    kind: &'static str,
    name: String,
}

impl From<Step> for StepView {
    fn from(s: Step) -> Self {
        StepView {
            line: s.to_string(),
            leg: s.leg.as_str(),
            at: s.at,
            action: s.action.as_str(),
            detail: s.detail,
            resource: s.resource.map(|r| ResourceView {
                kind: r.kind.as_str(),
                name: r.name,
            }),
            source: s.source.map(SourceView::from),
            evidence: s.evidence,
        }
    }
}

#[derive(Debug, Serialize)]
struct ClaimView {
    text: String,
    evidence: Vec<u32>,
}

#[derive(Debug, Serialize)]
struct EvidenceView {
    probe: String,
    observation: String,
    /// Where it comes from, for people (what older records carry).
    artifact: String,
    /// Where it comes from (DESIGN §5); absent in older records.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<SourceView>,
}

/// DESIGN §5: `{"check": NAME, "from", "to"} | {"capture": "PROBE/IFACE",
/// "packet": N} | {"inventory": "KIND/NS/NAME"}`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum SourceView {
    Check {
        check: &'static str,
        from: String,
        to: String,
    },
    Capture {
        capture: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        packet: Option<u64>,
    },
    Inventory {
        inventory: String,
    },
}

impl From<Source> for SourceView {
    fn from(s: Source) -> Self {
        match s {
            Source::Check { name, from, to } => SourceView::Check {
                check: name.as_str(),
                from,
                to,
            },
            Source::Capture {
                probe,
                interface,
                packet,
            } => SourceView::Capture {
                capture: format!("{probe}/{interface}"),
                packet,
            },
            Source::Inventory {
                kind,
                namespace,
                name,
            } => SourceView::Inventory {
                inventory: format!("{kind}/{namespace}/{name}"),
            },
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ProbeReport {
    /// The report of a finished probe run; `captures` is what was saved
    /// of its files, when they were collected.
    pub fn new(
        accepted: &pb::RunAccepted,
        record: &pb::RunRecord,
        captures: Option<&CaptureReport>,
    ) -> Self {
        let mut upgraded = record.clone();
        compat::upgrade(&mut upgraded);
        let diagnosis = upgraded.diagnosis.unwrap_or_default();
        let target = diagnosis.target.unwrap_or_default();
        let error = match record.result.as_ref().and_then(|r| r.outcome.as_ref()) {
            Some(pb::task_result::Outcome::Error(e)) => Some(e.message.clone()),
            _ if record.diagnosis.is_none() => Some("the run ended without a diagnosis".into()),
            _ => captures.and_then(|c| c.error().map(str::to_owned)),
        };
        let verdict = diagnosis.verdict.unwrap_or_else(|| pb::Verdict {
            class: pb::VerdictClass::Inconclusive.into(),
            summary: error.clone().unwrap_or_default(),
            ..Default::default()
        });
        let observers = match captures {
            Some(c) => c
                .observer_summaries()
                .map(|(probe, interfaces, error)| ObserverView {
                    probe: probe.to_owned(),
                    interfaces: interfaces.iter().map(|i| i.name().to_owned()).collect(),
                    capture: interfaces.to_vec(),
                    error: error.map(str::to_owned),
                })
                .collect(),
            None => record
                .observers
                .iter()
                .map(|o| ObserverView {
                    probe: o.probe.clone(),
                    interfaces: o.interfaces.clone(),
                    capture: Vec::new(),
                    error: None,
                })
                .collect(),
        };
        let timing = TimingView::from(record);
        let pick = |a: &str, b: &str| if a.is_empty() { b } else { a }.to_owned();
        Self {
            run_id: pick(&accepted.run_id, &record.run_id),
            trace_id: pick(&accepted.trace_id, &record.trace_id),
            from: record
                .request
                .as_ref()
                .map(|r| r.from.clone())
                .unwrap_or_default(),
            target: TargetView {
                spec: target.spec,
                name: target.name,
                endpoints: target
                    .endpoints
                    .into_iter()
                    .map(|e| EndpointView {
                        node: e.node,
                        ip: e.ip,
                        port: (e.port != 0).then_some(e.port),
                        role: e.role,
                        reason: e.reason,
                        probe: e.probe,
                    })
                    .collect(),
            },
            observers,
            checks: diagnosis
                .checks
                .into_iter()
                .map(|c| CheckView {
                    name: CheckName::try_from(c.name()).map_or("", CheckName::as_str),
                    direction: Direction::try_from(c.direction()).map_or("", Direction::as_str),
                    status: Status::try_from(c.status()).map_or("", Status::as_str),
                    from: c.from,
                    to: c.to,
                    size: c.size,
                    sent: c.sent,
                    received: c.received,
                    rtt_ms: RttView {
                        min: c.rtt_min_ms,
                        avg: c.rtt_avg_ms,
                        max: c.rtt_max_ms,
                    },
                    detail: c.detail,
                })
                .collect(),
            verdict: VerdictView {
                class: Class::try_from(verdict.class()).map_or("", Class::as_str),
                cause: Cause::try_from(verdict.cause()).map_or("", Cause::as_str),
                summary: verdict.summary,
                fix: verdict.fix,
                confidence: verdict.confidence,
                rule: verdict.rule,
                claims: verdict
                    .claims
                    .into_iter()
                    .map(|c| ClaimView {
                        text: c.text,
                        evidence: c.evidence,
                    })
                    .collect(),
                evidence: verdict
                    .evidence
                    .into_iter()
                    .map(|e| EvidenceView {
                        source: evidence_source(&e).ok().flatten().map(SourceView::from),
                        probe: e.probe,
                        observation: e.observation,
                        artifact: e.artifact,
                    })
                    .collect(),
                missing: verdict.missing,
                path: verdict
                    .path
                    .iter()
                    .filter_map(|s| Step::try_from(s).ok())
                    .map(StepView::from)
                    .collect(),
            },
            timing,
            artifacts: captures.map(|c| c.artifacts().to_vec()).unwrap_or_default(),
            error,
        }
    }

    /// 0 ok, 1 a fault, 2 bad input, 3 inconclusive.
    pub fn exit_code(&self) -> u8 {
        match self.verdict.class.parse::<Class>() {
            Ok(Class::Ok) => exit::OK,
            Ok(Class::Inconclusive) | Err(_) => exit::INCONCLUSIVE,
            Ok(_) => exit::FAULT,
        }
    }

    /// The report as printed.
    pub fn table_lines(&self) -> Vec<String> {
        let mut lines = vec![format!("probe {} → {}", self.from, self.target.spec)];
        for e in &self.target.endpoints {
            let addr = match e.port {
                Some(p) => format!("{}:{p}", e.ip),
                None => e.ip.clone(),
            };
            lines.push(format!("  {:<22} {:<10} {}", addr, e.role, e.reason));
        }
        lines.push(String::new());
        lines.push(format!(
            "{:<12} {:<28} {:<26} {:<7} {:>9} {:>9}  DETAIL",
            "CHECK", "FROM", "TO", "STATUS", "RECV/SENT", "RTT ms"
        ));
        for c in &self.checks {
            let counts = if c.sent > 0 {
                format!("{}/{}", c.received, c.sent)
            } else {
                "-".into()
            };
            let rtt = if c.rtt_ms.avg > 0.0 {
                format!("{:.3}", c.rtt_ms.avg)
            } else {
                "-".into()
            };
            let arrow = if c.direction == Direction::Reverse.as_str() {
                "⇠ "
            } else {
                ""
            };
            lines.push(format!(
                "{:<12} {:<28} {:<26} {:<7} {:>9} {:>9}  {}",
                c.name,
                format!("{arrow}{}", c.from),
                c.to,
                c.status,
                counts,
                rtt,
                c.detail
            ));
        }
        lines.push(String::new());
        let v = &self.verdict;
        let cause = if v.cause.is_empty() {
            String::new()
        } else {
            format!("/{}", v.cause)
        };
        lines.push(format!(
            "VERDICT  {}{cause}   (confidence {:.2}, rule {})",
            v.class, v.confidence, v.rule
        ));
        lines.push(format!("  {}", v.summary));
        if !v.evidence.is_empty() {
            lines.push("evidence:".into());
            for e in &v.evidence {
                lines.push(format!(
                    "  - [{}] {}  ({})",
                    e.probe, e.observation, e.artifact
                ));
            }
        }
        if !v.path.is_empty() {
            lines.push("path:".into());
            lines.extend(v.path.iter().map(|s| format!("  {}", s.line)));
        }
        if !v.fix.is_empty() {
            lines.push(format!("fix: {}", v.fix));
        }
        for m in &v.missing {
            lines.push(format!("missing: {m}"));
        }
        if let Some(e) = &self.error {
            lines.push(format!("error: {e}"));
        }
        lines.push(format!(
            "timing: {} ms, clock error ±{} us, capture skew {} us",
            self.timing.duration_ms, self.timing.clock_error_us, self.timing.capture_skew_us
        ));
        lines.extend(self.timing.arming_line());
        lines.extend(run_footer(&self.artifacts, &self.run_id, &self.trace_id));
        lines
    }
}

/// Runs `meshctl probe`; returns the exit code.
pub async fn run(
    args: ProbeArgs,
    endpoint: &Endpoint,
    output: OutputFormat,
) -> Result<u8, Failure> {
    let html = args.html.as_deref().map(HtmlFile::create).transpose()?;
    let mut files = if args.no_capture {
        None
    } else {
        Some(CaptureFiles::new(&args.out)?)
    };
    let live = std::io::stderr().is_terminal();
    let (accepted, record) = super::stream_run_with_steps(
        args.request(),
        endpoint,
        |progress| {
            if let Some(line) = files.as_mut().and_then(|f| f.progress(&progress))
                && line.starts_with("capture:")
            {
                eprintln!("{line}");
            }
        },
        |step| {
            let counter = if step.total > 0 {
                format!(" {}/{}", step.done, step.total)
            } else {
                String::new()
            };
            let line = format!("[{}{counter}] {}", step.phase, step.detail);
            let check = step.phase == "checks";
            if live && check {
                // One line that counts up on a terminal ...
                eprint!("\r\x1b[2K{line}");
            } else if live {
                eprint!("\r\x1b[2K");
                eprintln!("{line}");
            } else if !check || !step.detail.ends_with(": ok") || step.done == step.total {
                // ... and in a log, the phases, the checks that did not
                // pass, and the last one.
                eprintln!("{line}");
            }
        },
    )
    .await?;
    if live {
        eprint!("\r\x1b[2K");
    }
    let captures = files.map(|f| f.finish(&accepted, &record, ""));
    let report = ProbeReport::new(&accepted, &record, captures.as_ref());
    emit(output, &report, || report.table_lines())?;
    if let Some(html) = html {
        html.write_record(&record, &report.artifacts)?;
    }
    Ok(report.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_names_real_classes_with_their_own_causes() {
        let text = AFTER_HELP
            .split_once("Verdict classes:")
            .and_then(|(_, rest)| rest.split("\n\n").next())
            .expect("a class list")
            .replace('\n', " ");
        for class in Class::ALL {
            assert!(text.contains(class.as_str()), "{class} is not in --help");
        }
        for group in text.split(')') {
            let Some((head, causes)) = group.split_once('(') else {
                continue;
            };
            let class: Class = head
                .rsplit(',')
                .next()
                .unwrap_or_default()
                .trim()
                .parse()
                .unwrap();
            if class == Class::Inconclusive {
                continue;
            }
            for cause in causes.split(',').map(str::trim) {
                assert_eq!(
                    cause.parse::<Cause>().map(Cause::class),
                    Ok(class),
                    "{cause}"
                );
            }
        }
    }
}
