//! The client side of the transport: parses `https://HOST:PORT`, dials it with a small MSS,
//! runs TLS with tokio-rustls and hands tonic a `Channel`. It builds no TLS configuration
//! (the parent module does) and does not retry: callers own their reconnect loops.

use std::fmt;
use std::io;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::codegen::http::uri::InvalidUri;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{CONNECT_TIMEOUT, Error, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, Result};

/// A parsed `https://HOST:PORT`.
#[derive(Debug, Clone)]
struct CoordinatorUrl {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
}

impl CoordinatorUrl {
    fn parse(url: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|e: InvalidUri| invalid(&e.to_string()))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some(other) => return Err(invalid(&format!("scheme '{other}' is not supported"))),
            None => return Err(invalid("the https:// scheme is missing")),
        }
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("the host is missing"))?;
        let port = uri
            .port_u16()
            .ok_or_else(|| invalid("the port is missing"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("a path or query is not allowed"));
        }
        let server_name = ServerName::try_from(host.to_owned())
            .map_err(|e| invalid(&format!("'{host}' is not a valid host name: {e}")))?;
        Ok(Self {
            host: host.to_owned(),
            port,
            server_name,
        })
    }

    /// The tonic endpoint. Its URI says `http` so that tonic never tries TLS itself (it would
    /// refuse `https` without its own TLS feature); requests still carry `https` as origin.
    fn endpoint(&self, url: &str) -> Result<Endpoint> {
        let authority = match self.server_name {
            ServerName::IpAddress(rustls::pki_types::IpAddr::V6(_)) => {
                format!("[{}]:{}", self.host, self.port)
            }
            _ => format!("{}:{}", self.host, self.port),
        };
        let invalid = |e: &dyn fmt::Display| Error::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        };
        let origin: Uri = format!("https://{authority}")
            .parse()
            .map_err(|e: InvalidUri| invalid(&e))?;
        Ok(Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| invalid(&e))?
            .origin(origin)
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true))
    }
}

type ClientTls = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

fn connector(
    target: CoordinatorUrl,
    config: Arc<ClientConfig>,
) -> impl tower::Service<
    Uri,
    Response = ClientTls,
    Error = io::Error,
    Future = impl Future<Output = io::Result<ClientTls>> + Send,
> + Send
+ 'static {
    let tls = TlsConnector::from(config);
    tower::service_fn(move |_: Uri| {
        let tls = tls.clone();
        let target = target.clone();
        async move {
            let tcp = dial(&target.host, target.port).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(target.server_name, tcp).await?;
            Ok(TokioIo::new(stream))
        }
    })
}

/// MSS of control connections, bytes: small enough to cross any tunnel
/// (IPv6's minimum MTU of 1280 less headers), so that a probe's link to the
/// coordinator survives the MTU black holes it is sent to diagnose. Set
/// before connecting, it is what the SYN announces, so the coordinator's
/// segments are as small as ours.
pub const CONTROL_MSS: u32 = 1200;

/// Opens a TCP connection to `host:port` (each resolved address in turn)
/// with [`CONTROL_MSS`].
async fn dial(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let attempt = async {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            socket.set_tcp_mss(CONTROL_MSS)?;
            socket.set_nonblocking(true)?;
            tokio::net::TcpSocket::from_std_stream(socket.into())
                .connect(addr)
                .await
        };
        match attempt.await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))
    }))
}

/// Connects to `https://HOST:PORT` (host: DNS name or IP; the server certificate must be valid
/// for it) over TLS with `config`, within [`CONNECT_TIMEOUT`].
pub async fn connect(url: &str, config: Arc<ClientConfig>) -> Result<Channel> {
    let target = CoordinatorUrl::parse(url)?;
    target
        .endpoint(url)?
        .connect_with_connector(connector(target, config))
        .await
        .map_err(|e| Error::Connect {
            url: url.to_owned(),
            reason: error_chain(&e),
        })
}

/// The host and port of a coordinator URL (`https://HOST:PORT`), brackets
/// stripped from an IPv6 literal.
pub fn coordinator_host(url: &str) -> Result<(String, u16)> {
    let target = CoordinatorUrl::parse(url)?;
    Ok((target.host, target.port))
}

/// Like [`connect`], but connects on first use (and reconnects after failures); only the URL
/// is checked now.
pub fn connect_lazy(url: &str, config: Arc<ClientConfig>) -> Result<Channel> {
    let target = CoordinatorUrl::parse(url)?;
    Ok(target
        .endpoint(url)?
        .connect_with_connector_lazy(connector(target, config)))
}

/// `outer: inner: innermost`, skipping causes whose text the chain already contains.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("https://198.18.255.1:7443", "198.18.255.1", 7443)]
    #[test_case("https://coordinator.mesh.svc:7443/", "coordinator.mesh.svc", 7443)]
    #[test_case("https://[::1]:7443", "::1", 7443)]
    fn parses_urls(url: &str, host: &str, port: u16) {
        let parsed = CoordinatorUrl::parse(url).unwrap();
        assert_eq!((parsed.host.as_str(), parsed.port), (host, port));
        assert!(parsed.endpoint(url).is_ok());
    }

    #[test_case("http://198.18.255.1:7443", "scheme 'http'")]
    #[test_case("198.18.255.1:7443", "scheme")]
    #[test_case("https://198.18.255.1", "port is missing")]
    #[test_case("https://198.18.255.1:7443/control", "path")]
    #[test_case("", "")]
    fn refuses_urls(url: &str, why: &str) {
        let err = CoordinatorUrl::parse(url).unwrap_err().to_string();
        assert!(
            err.contains(why) && err.contains("https://HOST:PORT"),
            "{err}"
        );
    }
}
