//! The capture report: each observer's outcome (its verified file or why
//! there is none), the run's timing, the table and JSON output, the exit
//! code. It saves files only through the artifact assembler.

use std::path::Path;

use probemesh_model::timeline;
use probemesh_proto::pb;
use serde::Serialize;

use super::artifacts::Artifacts;
use super::correlation::CorrelationView;
use super::progress::short_interface;
use crate::client::exit;
use crate::commands::ns_to_us;
use crate::output::run_footer;

/// The JSON shape of `meshctl capture -o json`.
#[derive(Debug, Serialize)]
pub struct CaptureReport {
    pub(super) run_id: String,
    trace_id: String,
    pub(super) filter: String,
    observers: Vec<ObserverView>,
    timing: TimingView,
    /// Every test packet followed across the observers (the coordinator's
    /// correlation).
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation: Option<CorrelationView>,
    /// Saved files, the merged one last.
    pub(super) artifacts: Vec<String>,
    /// What went wrong for the run as a whole (not one observer).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip)]
    error_kind: Option<Status>,
}

/// One observer in the report.
#[derive(Debug, Serialize)]
pub(super) struct ObserverView {
    pub(super) probe: String,
    interfaces: Vec<InterfaceView>,
    /// Probe clock minus coordinator clock, microseconds.
    clock_offset_us: f64,
    /// Error bound of the offset, microseconds.
    clock_error_us: f64,
    /// Why the capture stopped: duration, packet_limit, byte_limit, stopped.
    stop: Option<&'static str>,
    /// The verified file.
    artifact: Option<String>,
    error: Option<String>,
    #[serde(skip)]
    pub(super) clock_offset_ns: i64,
    #[serde(skip)]
    pub(super) clock_error_ns: i64,
    #[serde(skip)]
    status: Status,
}

/// One captured interface of an observer, as printed and in JSON.
#[derive(Debug, Clone, Serialize)]
pub struct InterfaceView {
    name: String,
    packets: u64,
    kernel_drops: u64,
    /// When its ring went live, coordinator clock, Unix ns.
    armed_unix_ns: i64,
}

/// A run's clock error, capture skew and duration, as in JSON, and what
/// its capture phase spent.
#[derive(Debug, Default, Serialize)]
pub struct TimingView {
    pub(crate) clock_error_us: i64,
    pub(crate) capture_skew_us: i64,
    pub(crate) duration_ms: i64,
    /// Waiting for fresh clock exchanges before arming.
    clock_wait_ms: i64,
    /// Dispatch to the common arming instant.
    arming_lead_ms: i64,
    /// The latest observer's arming after its instant, its own clock.
    arm_late_us: i64,
    /// Observers whose rings were ready only after the instant.
    ready_late: u32,
    /// The least time an observer was ready ahead of the instant.
    ready_margin_us: i64,
    /// Stop asked to every file back and correlated.
    collect_ms: i64,
}

impl TimingView {
    /// The capture phase in one line (`None` when nothing was armed):
    /// what it added to the run, and why an observer armed late.
    pub(crate) fn arming_line(&self) -> Option<String> {
        (self.arming_lead_ms > 0).then(|| {
            format!(
                "arming: clock exchanges {} ms, lead {} ms (least margin {} us), latest arming {} us \
                 after the instant, {} ready late; collect {} ms",
                self.clock_wait_ms,
                self.arming_lead_ms,
                self.ready_margin_us,
                self.arm_late_us,
                self.ready_late,
                self.collect_ms
            )
        })
    }
}

impl From<&pb::RunRecord> for TimingView {
    /// The record's timing, or just its duration when it has none.
    fn from(record: &pb::RunRecord) -> Self {
        record.timing.map_or(
            TimingView {
                duration_ms: record.duration_ms,
                ..TimingView::default()
            },
            |t| TimingView {
                clock_error_us: t.clock_error_us,
                capture_skew_us: t.capture_skew_us,
                duration_ms: t.duration_ms,
                clock_wait_ms: t.clock_wait_ms,
                arming_lead_ms: t.arming_lead_ms,
                arm_late_us: t.arm_late_us,
                ready_late: t.ready_late,
                ready_margin_us: t.ready_margin_us,
                collect_ms: t.collect_ms,
            },
        )
    }
}

impl InterfaceView {
    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// How an observer (or the run) ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Captured,
    Failed,
    BadInput,
    Inconclusive,
}

impl Status {
    fn of_error(e: &pb::TaskError) -> Self {
        match e.kind() {
            pb::task_error::Kind::InvalidInput => Status::BadInput,
            pb::task_error::Kind::Cancelled => Status::Inconclusive,
            pb::task_error::Kind::ProbeFailure | pb::task_error::Kind::Unspecified => {
                Status::Failed
            }
        }
    }
}

fn stop_name(stop: pb::CaptureStop) -> Option<&'static str> {
    match stop {
        pb::CaptureStop::Duration => Some("duration"),
        pb::CaptureStop::PacketLimit => Some("packet_limit"),
        pb::CaptureStop::ByteLimit => Some("byte_limit"),
        pb::CaptureStop::Stopped => Some("stopped"),
        pb::CaptureStop::Unspecified => None,
    }
}

impl ObserverView {
    /// The observer's outcome; its artifact (if any) is verified and saved
    /// through `artifacts`.
    fn new(observer: &pb::ObserverResult, artifacts: &mut Artifacts) -> Self {
        let mut view = Self {
            probe: observer.probe.clone(),
            interfaces: observer
                .interfaces
                .iter()
                .map(|name| InterfaceView {
                    name: short_interface(&observer.probe, name).to_owned(),
                    packets: 0,
                    kernel_drops: 0,
                    armed_unix_ns: 0,
                })
                .collect(),
            clock_offset_us: ns_to_us(observer.clock_offset_ns),
            clock_error_us: ns_to_us(observer.clock_error_ns),
            clock_offset_ns: observer.clock_offset_ns,
            clock_error_ns: observer.clock_error_ns,
            stop: None,
            artifact: None,
            error: None,
            status: Status::Inconclusive,
        };
        let outcome = observer.result.as_ref().and_then(|r| r.outcome.as_ref());
        match outcome {
            Some(pb::task_result::Outcome::Capture(c)) => {
                view.stop = stop_name(c.stop());
                if !c.interfaces.is_empty() {
                    view.interfaces = c
                        .interfaces
                        .iter()
                        .map(|s| InterfaceView {
                            name: short_interface(&observer.probe, &s.interface).to_owned(),
                            packets: s.packets_written,
                            kernel_drops: s.kernel_drops,
                            armed_unix_ns: timeline::to_coordinator_ns(
                                s.armed_unix_ns,
                                observer.clock_offset_ns,
                                observer.clock_error_ns,
                            ),
                        })
                        .collect();
                }
                match &c.artifact {
                    Some(info) => match artifacts.finish(&observer.probe, info) {
                        Ok(path) => {
                            view.artifact = Some(path.display().to_string());
                            view.status = Status::Captured;
                        }
                        Err(e) => {
                            view.error = Some(e.to_string());
                            view.status = Status::Failed;
                        }
                    },
                    None => {
                        view.error = Some("the probe announced no capture file".into());
                        view.status = Status::Failed;
                    }
                }
            }
            Some(pb::task_result::Outcome::Error(e)) => {
                view.error = Some(e.message.clone());
                view.status = Status::of_error(e);
            }
            Some(_) => {
                view.error = Some("the probe answered with something other than a capture".into());
                view.status = Status::Failed;
            }
            None => view.error = Some("no result from this probe".into()),
        }
        view
    }
}

impl CaptureReport {
    pub(super) fn new(
        accepted: &pb::RunAccepted,
        record: &pb::RunRecord,
        filter: &str,
        artifacts: &mut Artifacts,
    ) -> Self {
        let observers: Vec<ObserverView> = record
            .observers
            .iter()
            .map(|o| ObserverView::new(o, artifacts))
            .collect();
        artifacts.abandon_unfinished();
        let timing = TimingView::from(record);
        let (error, error_kind) = match record.result.as_ref().and_then(|r| r.outcome.as_ref()) {
            Some(pb::task_result::Outcome::Error(e)) => {
                (Some(e.message.clone()), Some(Status::of_error(e)))
            }
            _ if observers.is_empty() => (
                Some("the run ended without any observer's result".into()),
                Some(Status::Inconclusive),
            ),
            _ => (None, None),
        };
        Self {
            run_id: if accepted.run_id.is_empty() {
                record.run_id.clone()
            } else {
                accepted.run_id.clone()
            },
            trace_id: if accepted.trace_id.is_empty() {
                record.trace_id.clone()
            } else {
                accepted.trace_id.clone()
            },
            filter: filter.to_owned(),
            observers,
            timing,
            correlation: record.correlation.as_ref().map(CorrelationView::from),
            artifacts: Vec::new(),
            error,
            error_kind,
        }
    }

    /// Records a failure of the command itself (merge, moving files).
    pub(super) fn fail(&mut self, message: String) {
        self.error = Some(match self.error.take() {
            Some(earlier) => format!("{earlier}; {message}"),
            None => message,
        });
        if self.error_kind != Some(Status::BadInput) {
            self.error_kind = Some(Status::Failed);
        }
    }

    /// Rewrites artifact paths from the staging directory to `dir`.
    pub(super) fn relocate(&mut self, staging: &Path, dir: &Path) {
        let moved = |p: &str| {
            Path::new(p).strip_prefix(staging).map_or_else(
                |_| p.to_owned(),
                |rest| dir.join(rest).display().to_string(),
            )
        };
        for o in &mut self.observers {
            o.artifact = o.artifact.as_deref().map(moved);
        }
        self.artifacts = self.artifacts.iter().map(|p| moved(p)).collect();
    }

    /// Saved files, the merged one last.
    pub fn artifacts(&self) -> &[String] {
        &self.artifacts
    }

    /// Per observer: the probe, its interfaces, and why it has no file.
    pub fn observer_summaries(
        &self,
    ) -> impl Iterator<Item = (&str, &[InterfaceView], Option<&str>)> {
        self.observers.iter().map(|o| {
            (
                o.probe.as_str(),
                o.interfaces.as_slice(),
                o.error.as_deref(),
            )
        })
    }

    /// Why the files could not all be kept, when they could not.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub(super) fn saved(&self) -> impl Iterator<Item = (&ObserverView, &str)> {
        self.observers
            .iter()
            .filter_map(|o| o.artifact.as_deref().map(|a| (o, a)))
    }

    /// 0 every observer captured; 2 an observer (or the run) refused the
    /// input; 1 an observer failed or the merge did; 3 otherwise inconclusive.
    pub fn exit_code(&self) -> u8 {
        let statuses: Vec<Status> = self
            .observers
            .iter()
            .map(|o| o.status)
            .chain(self.error_kind)
            .collect();
        if statuses.contains(&Status::BadInput) {
            exit::USAGE
        } else if statuses.contains(&Status::Failed) {
            exit::FAULT
        } else if statuses.contains(&Status::Inconclusive) || self.observers.is_empty() {
            exit::INCONCLUSIVE
        } else {
            exit::OK
        }
    }

    /// The report as printed.
    pub fn table_lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "{:<14} {:<16} {:>10} {:>8}  {:<13} FILE",
            "PROBE", "INTERFACE", "PACKETS", "DROPS", "STOP"
        )];
        for o in &self.observers {
            let stop = o
                .stop
                .unwrap_or(if o.error.is_some() { "failed" } else { "-" });
            let file = o.artifact.as_deref().unwrap_or("-");
            if o.interfaces.is_empty() {
                lines.push(format!(
                    "{:<14} {:<16} {:>10} {:>8}  {:<13} {file}",
                    o.probe, "-", "-", "-", stop
                ));
            }
            for i in &o.interfaces {
                lines.push(format!(
                    "{:<14} {:<16} {:>10} {:>8}  {:<13} {file}",
                    o.probe, i.name, i.packets, i.kernel_drops, stop
                ));
            }
        }
        for o in &self.observers {
            if let Some(e) = &o.error {
                lines.push(format!("{}: {e}", o.probe));
            }
        }
        if let Some(e) = &self.error {
            lines.push(format!("capture: {e}"));
        }
        lines.push(format!(
            "timing: clock error ±{} us, capture skew {} us, duration {} ms",
            self.timing.clock_error_us, self.timing.capture_skew_us, self.timing.duration_ms
        ));
        lines.extend(self.timing.arming_line());
        if let Some(c) = &self.correlation {
            lines.extend(c.lines());
        }
        lines.extend(run_footer(&self.artifacts, &self.run_id, &self.trace_id));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::super::artifacts::tests::{chunk, info, names_in};
    use super::*;

    fn observer(probe: &str, outcome: pb::task_result::Outcome) -> pb::ObserverResult {
        pb::ObserverResult {
            probe: probe.into(),
            interfaces: vec!["eth0".into()],
            result: Some(pb::TaskResult {
                task_id: "t".into(),
                outcome: Some(outcome),
            }),
            clock_offset_ns: 1_500,
            clock_error_ns: 40_000,
        }
    }

    fn captured(probe: &str, content: &[u8]) -> pb::task_result::Outcome {
        pb::task_result::Outcome::Capture(pb::CaptureResult {
            stop: pb::CaptureStop::Duration.into(),
            interfaces: vec![pb::CaptureInterfaceStats {
                interface: format!("{probe}/eth0"),
                armed_unix_ns: 10_000,
                packets_written: 12,
                kernel_drops: 1,
                ..Default::default()
            }],
            artifact: Some(info(&format!("{probe}.pcapng"), content)),
            ..Default::default()
        })
    }

    fn failed(kind: pb::task_error::Kind, message: &str) -> pb::task_result::Outcome {
        pb::task_result::Outcome::Error(pb::TaskError {
            kind: kind.into(),
            message: message.into(),
        })
    }

    fn report_for(observers: Vec<pb::ObserverResult>, dir: &Path) -> CaptureReport {
        let mut artifacts = Artifacts::new(dir.to_path_buf());
        artifacts
            .accept("node-1", &chunk("node-1.pcapng", 0, b"pcap"))
            .expect("chunk");
        let record = pb::RunRecord {
            run_id: "run-1".into(),
            trace_id: "trace-1".into(),
            observers,
            timing: Some(pb::RunTiming {
                clock_error_us: 40,
                capture_skew_us: 12,
                duration_ms: 5_100,
                clock_wait_ms: 38,
                arming_lead_ms: 90,
                arm_late_us: 15,
                ready_late: 0,
                ready_margin_us: 61_000,
                collect_ms: 0,
            }),
            ..Default::default()
        };
        CaptureReport::new(&pb::RunAccepted::default(), &record, "icmp", &mut artifacts)
    }

    #[test]
    fn every_observer_captured_exits_zero_and_reports_the_contract_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = report_for(
            vec![observer("node-1", captured("node-1", b"pcap"))],
            dir.path(),
        );
        assert_eq!(report.exit_code(), exit::OK);
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["run_id"], "run-1");
        assert_eq!(json["timing"]["clock_error_us"], 40);
        assert_eq!(json["timing"]["capture_skew_us"], 12);
        assert_eq!(json["timing"]["arming_lead_ms"], 90);
        assert_eq!(json["timing"]["ready_late"], 0);
        assert!(
            report
                .table_lines()
                .iter()
                .any(|l| l.starts_with("arming: clock exchanges 38 ms, lead 90 ms")),
            "{:?}",
            report.table_lines()
        );
        assert_eq!(json["observers"][0]["stop"], "duration");
        assert_eq!(json["observers"][0]["clock_offset_us"], 1.5);
        assert_eq!(json["observers"][0]["interfaces"][0]["name"], "eth0");
        assert_eq!(json["observers"][0]["interfaces"][0]["kernel_drops"], 1);
        // The offset (1.5 us) is inside its error bound (40 us): the clocks
        // agree within what can be measured, so the instant is not moved.
        assert_eq!(
            json["observers"][0]["interfaces"][0]["armed_unix_ns"],
            10_000
        );
        let lines = report.table_lines();
        assert!(
            lines.contains(
                &"timing: clock error ±40 us, capture skew 12 us, duration 5100 ms".to_owned()
            ),
            "{lines:?}"
        );
        assert_eq!(
            lines.last().map(String::as_str),
            Some("run run-1 · trace trace-1")
        );
    }

    #[test]
    fn a_failed_observer_exits_one_and_bad_input_exits_two() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = report_for(
            vec![
                observer("node-1", captured("node-1", b"pcap")),
                observer(
                    "node-2",
                    failed(pb::task_error::Kind::ProbeFailure, "no CAP_NET_RAW"),
                ),
            ],
            dir.path(),
        );
        assert_eq!(report.exit_code(), exit::FAULT);
        assert!(
            report
                .table_lines()
                .contains(&"node-2: no CAP_NET_RAW".to_owned())
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let report = report_for(
            vec![observer(
                "node-1",
                failed(pb::task_error::Kind::InvalidInput, "no interface eth9"),
            )],
            dir.path(),
        );
        assert_eq!(report.exit_code(), exit::USAGE);
        // The chunks of a node that then failed leave nothing behind.
        assert!(names_in(dir.path()).is_empty());

        let dir = tempfile::tempdir().expect("tempdir");
        let report = report_for(Vec::new(), dir.path());
        assert_eq!(report.exit_code(), exit::INCONCLUSIVE);
    }

    #[test]
    fn a_corrupt_artifact_fails_its_observer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = report_for(
            vec![observer("node-1", captured("node-1", b"pca?"))],
            dir.path(),
        );
        assert_eq!(report.exit_code(), exit::FAULT);
        assert!(report.observers[0].artifact.is_none());
        assert!(names_in(dir.path()).is_empty());
    }
}
