//! The `/metrics` endpoint: a prometheus-client registry over plain HTTP/1.
//!
//! Answers OpenMetrics text when the scraper asks for it (Prometheus does),
//! the classic Prometheus text format (0.0.4) otherwise (curl, promtool).
//! Every other path is a 404. Unauthenticated by design, like every
//! Prometheus exporter: bind it to an address only the scraper reaches.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse as _;
use prometheus_client::registry::Registry;

/// `Content-Type` of OpenMetrics text.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {source}")]
pub struct MetricsBindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why binding failed.
    pub source: std::io::Error,
}

/// Binds `addr` and serves `registry` on `GET /metrics` for the life of the
/// process. Returns the bound address (useful with port 0).
pub async fn serve_metrics(
    addr: SocketAddr,
    registry: Registry,
) -> Result<SocketAddr, MetricsBindError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsBindError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsBindError { addr, source })?;
    let registry = Arc::new(registry);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let registry = registry.clone();
            async move { render(&registry, &headers) }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "metrics served on /metrics");
    Ok(bound)
}

fn render(registry: &Registry, headers: &HeaderMap) -> axum::response::Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let mut body = String::new();
    let (encoded, content_type) = if openmetrics {
        (
            prometheus_client::encoding::text::encode(&mut body, registry),
            OPENMETRICS,
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut body, registry),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    };
    match encoded {
        Ok(()) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
