//! The daemons' plain HTTP/1 endpoint: `/metrics`, a prometheus-client
//! registry, and the health checks a kubelet or load balancer asks.
//!
//! - `GET /metrics`: OpenMetrics text when the scraper asks for it
//!   (Prometheus does), the classic Prometheus text format (0.0.4) otherwise
//!   (curl, promtool).
//! - `GET /healthz`: `200 ok` while the process answers at all (liveness).
//! - `GET /readyz`: `200 ok` when every [`Readiness`] condition holds, else
//!   `503` and one line naming what does not (readiness).
//!
//! Every other path is a 404. Unauthenticated by design, like every
//! Prometheus exporter: bind it to an address only the scraper reaches.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse as _;
use prometheus_client::registry::Registry;

use crate::health::Readiness;

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

/// The metrics endpoint, served on its own task until [`MetricsServer::stop`]
/// (or for the life of the process when the handle is dropped).
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving; the listening socket is closed when this returns.
    pub async fn stop(self) {
        self.task.abort();
        // The task ends cancelled: its listener is dropped by now.
        let _ = self.task.await;
    }
}

/// Binds `addr` and serves `registry` on `GET /metrics`, liveness on
/// `GET /healthz` and `readiness` on `GET /readyz`, until the returned
/// handle is stopped.
pub async fn serve_metrics(
    addr: SocketAddr,
    registry: Registry,
    readiness: Readiness,
) -> Result<MetricsServer, MetricsBindError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsBindError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsBindError { addr, source })?;
    let registry = Arc::new(registry);
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move |headers: HeaderMap| {
                let registry = registry.clone();
                async move { render(&registry, &headers) }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let readiness = readiness.clone();
                async move { ready(&readiness) }
            }),
        );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "metrics served on /metrics, health on /healthz and /readyz");
    Ok(MetricsServer { addr: bound, task })
}

/// `200 ok`, or `503` with the failing conditions on one line.
fn ready(readiness: &Readiness) -> axum::response::Response {
    match readiness.check() {
        Ok(()) => "ok\n".into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// `GET path` over a raw HTTP/1.0 connection: the status code and body.
    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: probemesh\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_owned())
    }

    #[tokio::test]
    async fn readyz_follows_the_conditions_and_healthz_stays_up() {
        let readiness = Readiness::default();
        let link = readiness.condition("coordinator", "not attached yet");
        let server = serve_metrics(
            "127.0.0.1:0".parse().unwrap(),
            Registry::default(),
            readiness,
        )
        .await
        .unwrap();
        let addr = server.addr();

        assert_eq!(
            get(addr, "/readyz").await,
            (503, "not ready: coordinator: not attached yet\n".to_owned())
        );
        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".to_owned()));

        link.holds();
        assert_eq!(get(addr, "/readyz").await, (200, "ok\n".to_owned()));

        link.fails("stream to https://c:7443 is down: connection refused");
        assert_eq!(
            get(addr, "/readyz").await,
            (
                503,
                "not ready: coordinator: stream to https://c:7443 is down: connection refused\n"
                    .to_owned()
            )
        );
        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".to_owned()));
        assert_eq!(get(addr, "/metrics").await.0, 200);
        assert_eq!(get(addr, "/nothing").await.0, 404);

        server.stop().await;
        tokio::net::TcpListener::bind(addr)
            .await
            .expect("the port is free once the endpoint is stopped");
    }
}
