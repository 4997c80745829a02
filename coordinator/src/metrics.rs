//! The coordinator's Prometheus metrics: what is connected, what ran, how
//! long it took, how far each probe's clock is, and what was refused.
//!
//! Handles are cheap to clone and updated where the events happen (attach,
//! detach, clock exchange, run end); [`Metrics::registry`] gathers them with
//! the values read at scrape time (TLS refusals, span export) for
//! `--metrics ADDR:PORT`. Names and units: see `docs/observability.md`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use probemesh_telemetry::SpanExportStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::clock::Sample;

/// Labels of per-kind series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabels {
    /// Task kind: `ping`, `tcp_transfer`, ...
    pub kind: String,
}

/// Labels of `probemesh_runs_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RunLabels {
    /// Task kind of the run.
    pub kind: String,
    /// `completed`, or the error kind (`invalid_input`, `probe_failure`,
    /// `cancelled`).
    pub result: String,
}

/// Labels of per-probe series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ProbeLabels {
    /// Probe name (its certificate's).
    pub probe: String,
}

/// Labels of `probemesh_identity_refusals_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `live_stream` (a second stream for a probe whose stream answers),
    /// `reserved_name`, `revoked` (a call or stream with a revoked
    /// certificate) or `revoked_stream_dropped`.
    pub reason: String,
}

/// Labels of `probemesh_certificate_expiry_timestamp_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CertLabels {
    /// `coordinator` (the serving certificate) or `ca`.
    pub name: String,
}

type Histograms = Family<KindLabels, Histogram, fn() -> Histogram>;
type SecondsGauge = Gauge<f64, AtomicU64>;

/// Run and task durations: 10 ms to about 80 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

/// Every metric the coordinator keeps.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `probemesh_probes_connected`.
    pub probes_connected: Gauge,
    /// `probemesh_runs_total{kind,result}`.
    pub runs: Family<RunLabels, Counter>,
    /// `probemesh_run_duration_seconds{kind}`.
    pub run_duration: Histograms,
    /// `probemesh_task_duration_seconds{kind}`.
    pub task_duration: Histograms,
    /// `probemesh_probe_clock_offset_seconds{probe}`.
    pub clock_offset: Family<ProbeLabels, SecondsGauge>,
    /// `probemesh_probe_clock_error_seconds{probe}`.
    pub clock_error: Family<ProbeLabels, SecondsGauge>,
    /// `probemesh_probe_attaches_total{probe}`.
    pub attaches: Family<ProbeLabels, Counter>,
    /// `probemesh_certificate_expiry_timestamp_seconds{name}`.
    pub certificate_expiry: Family<CertLabels, Gauge>,
    /// `probemesh_identity_refusals_total{reason}`.
    pub identity_refusals: Family<RefusalLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            probes_connected: Gauge::default(),
            runs: Family::default(),
            run_duration: Family::new_with_constructor(duration_histogram),
            task_duration: Family::new_with_constructor(duration_histogram),
            clock_offset: Family::default(),
            clock_error: Family::default(),
            attaches: Family::default(),
            certificate_expiry: Family::default(),
            identity_refusals: Family::default(),
        }
    }
}

impl Metrics {
    /// Sets the connected-probes gauge.
    pub fn set_connected(&self, connected: usize) {
        self.probes_connected
            .set(i64::try_from(connected).unwrap_or(i64::MAX));
    }

    /// Counts an attach of `probe` (first connection or reconnect).
    pub fn attached(&self, probe: &str) {
        self.attaches.get_or_create(&probe_labels(probe)).inc();
    }

    /// Counts an identity refusal (see [`RefusalLabels`]).
    pub fn identity_refused(&self, reason: &str) {
        self.identity_refusals
            .get_or_create(&RefusalLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Publishes `probe`'s best clock estimate.
    pub fn set_clock(&self, probe: &str, best: Sample) {
        let labels = probe_labels(probe);
        self.clock_offset
            .get_or_create(&labels)
            .set(ns_to_seconds(best.offset_ns));
        self.clock_error
            .get_or_create(&labels)
            .set(ns_to_seconds(best.error_ns()));
    }

    /// Forgets `probe`'s clock series (it disconnected; a stale offset would
    /// mislead).
    pub fn forget_clock(&self, probe: &str) {
        let labels = probe_labels(probe);
        self.clock_offset.remove(&labels);
        self.clock_error.remove(&labels);
    }

    /// Counts a finished run of `kind` with result class `result`.
    pub fn run_finished(&self, kind: &str, result: &str, took: Duration) {
        self.runs
            .get_or_create(&RunLabels {
                kind: kind.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.run_duration
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records how long a task of `kind` took from dispatch to its result.
    pub fn task_finished(&self, kind: &str, took: Duration) {
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

    /// A registry with every metric, the TLS listener's refusal count and
    /// the span export counters.
    pub fn registry(
        &self,
        refused_handshakes: Arc<AtomicU64>,
        spans: &SpanExportStats,
    ) -> Registry {
        let mut r = Registry::default();
        r.register(
            "probemesh_probes_connected",
            "Probes with a live ProbeLink stream",
            self.probes_connected.clone(),
        );
        r.register(
            "probemesh_runs",
            "Finished runs by task kind and result class (completed, or the error kind)",
            self.runs.clone(),
        );
        r.register(
            "probemesh_run_duration_seconds",
            "Run duration from accepted to stored, by task kind",
            self.run_duration.clone(),
        );
        r.register(
            "probemesh_task_duration_seconds",
            "Task latency from dispatch to the probe's result, by task kind",
            self.task_duration.clone(),
        );
        r.register(
            "probemesh_probe_clock_offset_seconds",
            "Probe clock minus coordinator clock, best (minimum-delay) sample",
            self.clock_offset.clone(),
        );
        r.register(
            "probemesh_probe_clock_error_seconds",
            "Bound on the error of the clock offset (half the round trip of its sample)",
            self.clock_error.clone(),
        );
        r.register(
            "probemesh_probe_attaches",
            "ProbeLink attaches per probe (first connection and every reconnect)",
            self.attaches.clone(),
        );
        r.register(
            "probemesh_certificate_expiry_timestamp_seconds",
            "notAfter of the coordinator's certificates, seconds since the Unix epoch",
            self.certificate_expiry.clone(),
        );
        r.register(
            "probemesh_identity_refusals",
            "Streams and calls refused for their identity (live_stream, reserved_name, revoked), and live streams dropped by a revocation",
            self.identity_refusals.clone(),
        );
        r.register_collector(Box::new(AtomicCounter {
            name: "probemesh_tls_handshake_refusals",
            help: "TLS handshakes refused by the listener (no or untrusted client certificate, bad TLS)",
            value: refused_handshakes,
        }));
        spans.register(&mut r);
        r
    }
}

fn probe_labels(probe: &str) -> ProbeLabels {
    ProbeLabels {
        probe: probe.to_owned(),
    }
}

/// Nanoseconds as seconds, for `_seconds` gauges.
#[allow(clippy::cast_precision_loss)] // offsets are far below 2^52 ns
fn ns_to_seconds(ns: i64) -> f64 {
    ns as f64 / 1e9
}

/// A counter kept elsewhere as an atomic, read at scrape time.
#[derive(Debug)]
struct AtomicCounter {
    name: &'static str,
    help: &'static str,
    value: Arc<AtomicU64>,
}

impl Collector for AtomicCounter {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(self.value.load(Ordering::Relaxed));
        let metric =
            encoder.encode_descriptor(self.name, self.help, None, counter.metric_type())?;
        counter.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        let mut out = String::new();
        let refused = Arc::new(AtomicU64::new(3));
        prometheus_client::encoding::prometheus_text::encode(
            &mut out,
            &m.registry(refused, &SpanExportStats::default()),
        )
        .unwrap();
        out
    }

    #[test]
    fn series_carry_prometheus_names_and_units() {
        let m = Metrics::default();
        m.set_connected(2);
        m.attached("node-1");
        m.run_finished("ping", "completed", Duration::from_millis(120));
        m.task_finished("ping", Duration::from_millis(100));
        m.set_clock(
            "node-1",
            Sample {
                offset_ns: 1_500_000,
                delay_ns: 400_000,
                path: crate::clock::ClockPath::Stream,
            },
        );
        m.set_certificate_expiry("ca", 1_900_000_000);
        let t = text(&m);
        for line in [
            "probemesh_probes_connected 2",
            "probemesh_runs_total{kind=\"ping\",result=\"completed\"} 1",
            "probemesh_run_duration_seconds_bucket{kind=\"ping\",le=\"0.16\"} 1",
            "probemesh_task_duration_seconds_count{kind=\"ping\"} 1",
            "probemesh_probe_clock_offset_seconds{probe=\"node-1\"} 0.0015",
            "probemesh_probe_clock_error_seconds{probe=\"node-1\"} 0.0002",
            "probemesh_probe_attaches_total{probe=\"node-1\"} 1",
            "probemesh_certificate_expiry_timestamp_seconds{name=\"ca\"} 1900000000",
            "probemesh_tls_handshake_refusals_total 3",
        ] {
            assert!(t.contains(line), "missing {line:?} in\n{t}");
        }
        m.forget_clock("node-1");
        assert!(!text(&m).contains("probe=\"node-1\"} 0.0015"));
    }
}
