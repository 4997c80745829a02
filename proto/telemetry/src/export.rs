//! The span export path: a bounded queue in front of the SDK's batch
//! processor and an OTLP/gRPC exporter, both counted.
//!
//! The SDK's `BatchSpanProcessor` already drops spans when its queue is full,
//! but only says so in a log line. [`BoundedProcessor`] keeps the count of
//! spans handed on and not yet through an export attempt; once that reaches
//! [`MAX_QUEUED_SPANS`] it drops the span itself and counts it
//! (`reason="queue_full"`), so the SDK's own queue (sized the same) never
//! fills. [`CountingExporter`] counts every span of a batch the collector
//! accepted (`probemesh_otel_spans_exported_total`) or that failed after the
//! exporter's retries and timeout (`reason="export_failed"`). Ending a span
//! never waits on the network: exports run on the SDK's own thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_otlp::{ExporterBuildError, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor,
};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Spans waiting for (or in) an export before new ones are dropped.
pub const MAX_QUEUED_SPANS: usize = 2048;

/// Per-attempt bound of an export when `OTEL_EXPORTER_OTLP_TIMEOUT` is not
/// set (retries included).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a span never reached the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// [`MAX_QUEUED_SPANS`] were already waiting (collector slow or absent).
    QueueFull,
    /// The batch it was in failed to export (collector down, refused it, or
    /// timed out).
    ExportFailed,
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            Self::QueueFull => "queue_full",
            Self::ExportFailed => "export_failed",
        })
    }
}

/// Label set of `probemesh_otel_spans_dropped_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DropLabels {
    /// Why the spans were lost.
    pub reason: DropReason,
}

/// Counters of the span export; cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub struct SpanExportStats {
    /// Spans the collector accepted.
    pub exported: Counter,
    /// Spans lost, by reason.
    pub dropped: Family<DropLabels, Counter>,
}

impl Default for SpanExportStats {
    /// Both drop reasons start at 0, so the series exist before the first
    /// drop (`rate()` and alerts see them).
    fn default() -> Self {
        let dropped = Family::default();
        for reason in [DropReason::QueueFull, DropReason::ExportFailed] {
            let _ = dropped.get_or_create(&DropLabels { reason });
        }
        Self {
            exported: Counter::default(),
            dropped,
        }
    }
}

impl SpanExportStats {
    /// Registers `probemesh_otel_spans_exported_total` and
    /// `probemesh_otel_spans_dropped_total{reason}`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "probemesh_otel_spans_exported",
            "Spans accepted by the OTLP collector",
            self.exported.clone(),
        );
        registry.register(
            "probemesh_otel_spans_dropped",
            "Spans that never reached the OTLP collector: queue_full = dropped because 2048 \
             spans were already waiting for a slow or absent collector; export_failed = in a \
             batch whose export failed after retries and timeout",
            self.dropped.clone(),
        );
    }

    fn drop_spans(&self, reason: DropReason, n: usize) {
        self.dropped
            .get_or_create(&DropLabels { reason })
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }
}

/// The span processor for an OTLP collector: `endpoint`, or the standard
/// environment variables when `None`.
pub fn bounded_otlp_processor(
    endpoint: Option<&str>,
    stats: &SpanExportStats,
) -> Result<BoundedProcessor, ExporterBuildError> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let timeout_from_env = [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    if !timeout_from_env {
        builder = builder.with_timeout(EXPORT_TIMEOUT);
    }
    let in_flight = Arc::new(AtomicUsize::new(0));
    let exporter = CountingExporter {
        inner: builder.build()?,
        in_flight: in_flight.clone(),
        stats: stats.clone(),
        failing: AtomicBool::new(false),
    };
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(MAX_QUEUED_SPANS)
        .build();
    Ok(BoundedProcessor {
        inner: BatchSpanProcessor::builder(exporter)
            .with_batch_config(config)
            .build(),
        in_flight,
        stats: stats.clone(),
    })
}

/// A batch processor that drops, and counts, what does not fit in its queue.
#[derive(Debug)]
pub struct BoundedProcessor {
    inner: BatchSpanProcessor,
    in_flight: Arc<AtomicUsize>,
    stats: SpanExportStats,
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_QUEUED_SPANS).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.inner.on_end(span);
        } else {
            self.stats.drop_spans(DropReason::QueueFull, 1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// An exporter that counts what it delivered and what it lost, and logs
/// when exports start and stop failing (once each, not per batch).
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    in_flight: Arc<AtomicUsize>,
    stats: SpanExportStats,
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let n = batch.len();
        let sent = self.inner.export(batch);
        async move {
            let result = sent.await;
            // Saturating: spans the SDK ends during shutdown were never admitted.
            let _ = self
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                    Some(q.saturating_sub(n))
                });
            match &result {
                Ok(()) => {
                    self.stats
                        .exported
                        .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
                    if self.failing.swap(false, Ordering::AcqRel) {
                        tracing::info!("span export to the OTLP collector works again");
                    }
                }
                Err(e) => {
                    self.stats.drop_spans(DropReason::ExportFailed, n);
                    if !self.failing.swap(true, Ordering::AcqRel) {
                        tracing::warn!(error = %e, spans = n, "span export to the OTLP collector failed; dropping spans until it answers (see probemesh_otel_spans_dropped_total)");
                    }
                }
            }
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::error::OTelSdkError;

    /// An exporter that fails every batch, like an absent collector.
    #[derive(Debug)]
    struct Down;

    impl SpanExporter for Down {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            Err(OTelSdkError::InternalFailure("collector down".into()))
        }
    }

    fn counting(stats: &SpanExportStats) -> CountingExporter<Down> {
        CountingExporter {
            inner: Down,
            in_flight: Arc::new(AtomicUsize::new(3)),
            stats: stats.clone(),
            failing: AtomicBool::new(false),
        }
    }

    fn span() -> SpanData {
        use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "probemesh.run".into(),
            start_time: std::time::SystemTime::UNIX_EPOCH,
            end_time: std::time::SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    #[test]
    fn failed_exports_count_every_span_of_the_batch() {
        let stats = SpanExportStats::default();
        let exporter = counting(&stats);
        let result = block_on(exporter.export(vec![span(), span(), span()]));
        assert!(result.is_err());
        let failed = stats
            .dropped
            .get_or_create(&DropLabels {
                reason: DropReason::ExportFailed,
            })
            .get();
        assert_eq!(failed, 3);
        assert_eq!(exporter.in_flight.load(Ordering::Acquire), 0);
        assert_eq!(stats.exported.get(), 0);
    }

    /// Runs a future that never waits on I/O to completion.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }
}
