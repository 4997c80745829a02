//! Telemetry set-up shared by `mesh-coordinator` and `mesh-probe`: one place
//! for logs, traces and the metrics endpoint.
//!
//! - **Logs**: `tracing` to stderr, text or JSON lines, filtered by
//!   `RUST_LOG` (default `info`). JSON lines carry the fields of the spans
//!   they are logged in (`span`, `spans`), so a line inside a run shows the
//!   run span's `run_id` and `trace_id`.
//! - **Traces**: every span named `probemesh.*` (coordinator) or `probe.*`
//!   (probe) is an OpenTelemetry span; tracing events inside them become span
//!   events. Span ids exist even when nothing is exported, so a run always
//!   has a real trace id. With an OTLP endpoint (`--otlp-endpoint`, or the
//!   standard `OTEL_EXPORTER_OTLP_ENDPOINT`) finished spans go through a
//!   bounded queue to an OTLP/gRPC exporter ([`export`]); a missing or slow
//!   collector costs dropped spans, counted, never a slower run.
//! - **Propagation**: W3C `traceparent`/`tracestate` in a plain string map
//!   ([`inject`], [`set_parent`]), as carried by `pb::Task.trace_context`.
//! - **Metrics and health**: [`http::serve_metrics`] serves a
//!   prometheus-client registry on `/metrics`, liveness on `/healthz` and the
//!   daemon's [`Readiness`] on `/readyz`.
//!
//! It is not where metrics are defined: each daemon keeps its own.

pub mod export;
pub mod health;
pub mod http;

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use export::SpanExportStats;
pub use health::{Condition, Readiness};
use probemesh_proto::pb;

/// Span names exported as OpenTelemetry spans start with one of these.
pub const EXPORTED_SPAN_PREFIXES: [&str; 2] = ["probemesh.", "probe."];

/// How long [`Telemetry::shutdown`] waits for the last spans to leave.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// What a daemon tells [`Telemetry::init`].
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
    /// says otherwise (`mesh-coordinator`, `mesh-probe`).
    pub service_name: &'static str,
    /// Log JSON lines instead of text.
    pub json: bool,
    /// OTLP/gRPC collector URL (`http://HOST:4317`). `None` exports only when
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// is set.
    pub otlp_endpoint: Option<String>,
    /// Extra resource attributes (`host.name`, `probemesh.probe.name`, ...);
    /// `OTEL_RESOURCE_ATTRIBUTES` overrides them.
    pub resource: Vec<(&'static str, String)>,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter rejected its configuration (bad endpoint URL).
    #[error("cannot set up the OTLP exporter for '{endpoint}': {source}")]
    Exporter {
        /// The endpoint given, or where the environment pointed.
        endpoint: String,
        /// The exporter's reason.
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The installed telemetry: keep it for the process's lifetime and call
/// [`Telemetry::shutdown`] on the way out.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    stats: SpanExportStats,
    exporting_to: Option<String>,
}

impl Telemetry {
    /// Installs the global `tracing` subscriber (logs + OpenTelemetry layer)
    /// and, when an endpoint is configured, the OTLP exporter. Call once,
    /// first thing in `main`, inside the Tokio runtime (the gRPC exporter
    /// needs it).
    pub fn init(config: TelemetryConfig) -> Result<Self, TelemetryError> {
        let stats = SpanExportStats::default();
        let exporting_to = config.otlp_endpoint.clone().or_else(endpoint_from_env);
        let mut provider = SdkTracerProvider::builder()
            .with_resource(resource(config.service_name, config.resource));
        if let Some(endpoint) = &exporting_to {
            let processor = export::bounded_otlp_processor(config.otlp_endpoint.as_deref(), &stats)
                .map_err(|source| TelemetryError::Exporter {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            provider = provider.with_span_processor(processor);
        }
        let provider = provider.build();
        let tracer = provider.tracer(config.service_name);

        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        let fmt = if config.json {
            fmt.json().boxed()
        } else {
            fmt.boxed()
        };
        let otel = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_threads(false)
            // Nothing here reads OpenTelemetry's current context (parents
            // come from the tracing span tree, propagation from explicit
            // spans), and attaching it on every enter and exit costs a
            // long-lived task's span on each poll.
            .with_context_activation(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_event()
                    || EXPORTED_SPAN_PREFIXES
                        .iter()
                        .any(|p| meta.name().starts_with(p))
            }));
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .with(otel)
            .init();
        if let Some(endpoint) = &exporting_to {
            tracing::info!(%endpoint, "exporting spans over OTLP/gRPC");
        }
        Ok(Self {
            provider,
            stats,
            exporting_to,
        })
    }

    /// Counters of the span export, to register with the daemon's metrics.
    pub fn span_export_stats(&self) -> &SpanExportStats {
        &self.stats
    }

    /// Flushes what is queued (for at most about two seconds: an absent
    /// collector must not hold up the exit) and stops the exporter.
    pub async fn shutdown(self) {
        if self.exporting_to.is_none() {
            return;
        }
        let provider = self.provider;
        let flush =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_FLUSH));
        // A failed flush only means lost spans, already counted; exit anyway.
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH + Duration::from_millis(500), flush).await;
    }
}

/// The collector the standard environment variables point at, if any.
fn endpoint_from_env() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .filter_map(|var| std::env::var(var).ok())
    .find(|v| !v.trim().is_empty())
}

/// `service.name` and the daemon's attributes, then `OTEL_RESOURCE_ATTRIBUTES`
/// and `OTEL_SERVICE_NAME` on top, plus the SDK's `telemetry.sdk.*`.
fn resource(service_name: &'static str, attributes: Vec<(&'static str, String)>) -> Resource {
    let mut builder = Resource::builder_empty()
        .with_service_name(service_name)
        .with_attributes(
            attributes
                .into_iter()
                .map(|(k, v)| KeyValue::new(k, Value::from(v))),
        )
        .with_detectors(&[
            Box::new(TelemetryResourceDetector),
            Box::new(EnvResourceDetector::new()),
        ]);
    if let Some(name) = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
    {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// This host's name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`), for the
/// `host.name` resource attribute.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The W3C trace context of `span` (`traceparent`, and `tracestate` when
/// there is one), ready for `pb::Task.trace_context`. Empty when the span is
/// not traced.
pub fn inject(span: &tracing::Span) -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier
}

/// Makes `span` a child of the remote span in `carrier` (a
/// `pb::Task.trace_context`). Call before anything reads the span's
/// context; a missing or malformed `traceparent` leaves the span a root.
pub fn set_parent(span: &tracing::Span, carrier: &HashMap<String, String>) {
    let cx = TraceContextPropagator::new().extract(carrier);
    if !cx.span().span_context().is_valid() {
        return;
    }
    if let Err(e) = span.set_parent(cx) {
        tracing::debug!(error = %e, "cannot attach the span to its remote parent");
    }
}

/// The trace id of `span`, 32 lowercase hex digits, or `None` when the span
/// is not traced (no telemetry installed, or filtered out).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The snake_case name of a task kind (`ping`, `tcp_transfer`, ...), for
/// metric labels and span attributes.
pub fn task_kind_name(kind: &pb::task::Kind) -> &'static str {
    use pb::task::Kind;
    match kind {
        Kind::Ping(_) => "ping",
        Kind::Tcping(_) => "tcping",
        Kind::TcpTransfer(_) => "tcp_transfer",
        Kind::UdpEcho(_) => "udp_echo",
        Kind::Pmtu(_) => "pmtu",
        Kind::Trace(_) => "trace",
        Kind::Dns(_) => "dns",
        Kind::Listener(_) => "listener",
        Kind::NodeFacts(_) => "node_facts",
        Kind::Responder(_) => "responder",
        Kind::Capture(_) => "capture",
    }
}

/// The class of a task result for metric labels: `completed` when the task
/// produced its summary, else the error kind (`invalid_input`,
/// `probe_failure`, `cancelled`, `unspecified`).
pub fn task_result_class(result: &pb::TaskResult) -> &'static str {
    use pb::task_error::Kind;
    match &result.outcome {
        Some(pb::task_result::Outcome::Error(e)) => match e.kind() {
            Kind::InvalidInput => "invalid_input",
            Kind::ProbeFailure => "probe_failure",
            Kind::Cancelled => "cancelled",
            Kind::Unspecified => "unspecified",
        },
        Some(_) => "completed",
        None => "unspecified",
    }
}

/// The `notAfter` of the first certificate in a PEM file, in seconds since
/// the Unix epoch; `None` when the file cannot be read or parsed.
pub fn certificate_expiry_unix(path: &std::path::Path) -> Option<i64> {
    let pem = std::fs::read(path).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_round_trips_through_a_map() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let parent = tracing::info_span!("probemesh.run");
            let carrier = inject(&parent);
            let traceparent = carrier.get("traceparent").expect("traceparent injected");
            let parent_trace = trace_id(&parent).expect("parent is traced");
            assert!(
                traceparent.starts_with(&format!("00-{parent_trace}-")),
                "{traceparent}"
            );

            let child = tracing::info_span!("probe.task");
            set_parent(&child, &carrier);
            assert_eq!(trace_id(&child), Some(parent_trace));
        });
    }

    #[test]
    fn a_bad_traceparent_leaves_a_root_span() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("probe.task");
            let carrier = HashMap::from([("traceparent".to_owned(), "00-zz-01".to_owned())]);
            set_parent(&span, &carrier);
            let id = trace_id(&span).expect("a root span is traced");
            assert_eq!(id.len(), 32);
        });
    }

    #[test]
    fn untraced_spans_have_no_trace_id() {
        let span = tracing::info_span!("probemesh.run");
        assert_eq!(trace_id(&span), None);
        assert!(inject(&span).is_empty());
    }
}
