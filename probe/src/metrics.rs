//! The probe's Prometheus metrics: the tasks it ran and its link to the
//! coordinator. Served on `--metrics ADDR:PORT` (`/metrics`); names and
//! units in `docs/observability.md`.

use std::time::Duration;

use probemesh_telemetry::SpanExportStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `probemesh_probe_tasks_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TaskLabels {
    /// Task kind: `ping`, `pmtu`, ...
    pub kind: String,
    /// `completed`, or the error kind (`invalid_input`, `probe_failure`,
    /// `cancelled`).
    pub outcome: String,
}

/// Labels of per-kind series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabels {
    /// Task kind.
    pub kind: String,
}

/// Labels of `probemesh_certificate_expiry_timestamp_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CertLabels {
    /// `probe` (this probe's client certificate) or `ca`.
    pub name: String,
}

type Histograms = Family<KindLabels, Histogram, fn() -> Histogram>;

/// Task durations: 10 ms to about 80 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

/// Every metric the probe keeps; cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `probemesh_probe_tasks_total{kind,outcome}`.
    pub tasks: Family<TaskLabels, Counter>,
    /// `probemesh_probe_task_duration_seconds{kind}`.
    pub task_duration: Histograms,
    /// `probemesh_probe_tasks_running`.
    pub tasks_running: Gauge,
    /// `probemesh_probe_link_attaches_total`.
    pub attaches: Counter,
    /// `probemesh_probe_link_failures_total`.
    pub link_failures: Counter,
    /// `probemesh_probe_link_up`.
    pub link_up: Gauge,
    /// `probemesh_certificate_expiry_timestamp_seconds{name}`.
    pub certificate_expiry: Family<CertLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            tasks: Family::default(),
            task_duration: Family::new_with_constructor(duration_histogram),
            tasks_running: Gauge::default(),
            attaches: Counter::default(),
            link_failures: Counter::default(),
            link_up: Gauge::default(),
            certificate_expiry: Family::default(),
        }
    }
}

impl Metrics {
    /// Counts a finished task and its duration.
    pub fn task_finished(&self, kind: &str, outcome: &str, took: Duration) {
        self.tasks
            .get_or_create(&TaskLabels {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.task_duration
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records the `notAfter` of certificate `name` (seconds since the epoch).
    pub fn set_certificate_expiry(&self, name: &str, not_after_unix: i64) {
        self.certificate_expiry
            .get_or_create(&CertLabels {
                name: name.to_owned(),
            })
            .set(not_after_unix);
    }

    /// A registry with every metric and the span export counters.
    pub fn registry(&self, spans: &SpanExportStats) -> Registry {
        let mut r = Registry::default();
        r.register(
            "probemesh_probe_tasks",
            "Tasks finished on this probe by kind and outcome (completed, or the error kind)",
            self.tasks.clone(),
        );
        r.register(
            "probemesh_probe_task_duration_seconds",
            "Task run time on this probe, by kind",
            self.task_duration.clone(),
        );
        r.register(
            "probemesh_probe_tasks_running",
            "Tasks running on this probe now",
            self.tasks_running.clone(),
        );
        r.register(
            "probemesh_probe_link_attaches",
            "Successful attaches to the coordinator (the first and every reconnect)",
            self.attaches.clone(),
        );
        r.register(
            "probemesh_probe_link_failures",
            "Coordinator sessions that ended (could not connect, failed, or closed), each followed by a reconnect attempt",
            self.link_failures.clone(),
        );
        r.register(
            "probemesh_probe_link_up",
            "1 while attached to the coordinator, else 0",
            self.link_up.clone(),
        );
        r.register(
            "probemesh_certificate_expiry_timestamp_seconds",
            "notAfter of this probe's certificates, seconds since the Unix epoch",
            self.certificate_expiry.clone(),
        );
        spans.register(&mut r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_carry_prometheus_names_and_units() {
        let m = Metrics::default();
        m.task_finished("ping", "completed", Duration::from_millis(30));
        m.attaches.inc();
        m.link_up.set(1);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(
            &mut out,
            &m.registry(&SpanExportStats::default()),
        )
        .unwrap();
        for line in [
            "probemesh_probe_tasks_total{kind=\"ping\",outcome=\"completed\"} 1",
            "probemesh_probe_task_duration_seconds_bucket{kind=\"ping\",le=\"0.04\"} 1",
            "probemesh_probe_link_attaches_total 1",
            "probemesh_probe_link_up 1",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
    }
}
