//! TLS transport plumbing shared by `mesh-coordinator`, `mesh-probe` and `meshctl`.
//!
//! - Server: [`server_config`] and [`TlsIncoming`], a stream of verified connections for
//!   `tonic::transport::Server::serve_with_incoming`. Each connection carries a [`PeerInfo`]
//!   that handlers read with `request.extensions().get::<PeerInfo>()`.
//! - Client: [`client_config`] (mTLS with a TLS directory identity), [`pinned_client_config`]
//!   (the join flow: no client certificate, the server must chain to a pinned CA) and
//!   [`connect`] / [`connect_lazy`] to turn `https://HOST:PORT` into a tonic `Channel`.
//!
//! TLS is done here with tokio-rustls (ring provider), never by tonic: tonic only sees plain
//! byte streams. Authorization (which role may call what) is not done here; see the services.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::codegen::http::uri::InvalidUri;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::identity::Identity;
use crate::pki::{self, COORDINATOR_NAME, CaPin, TlsDir};

/// How long a client may take to complete the TLS handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`connect`] may take to open TCP and finish the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keep-alive ping interval of client channels (keeps NAT state of long-lived probe
/// streams alive and detects dead coordinators).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long a keep-alive ping may go unanswered before the channel is considered dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept(2)` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Verified connections waiting for tonic to pick them up.
const ACCEPT_QUEUE: usize = 64;
const ALPN_H2: &[u8] = b"h2";

/// Errors of the TLS plumbing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading certificate material (missing file, bad PEM, ...).
    #[error(transparent)]
    Pki(#[from] pki::Error),
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("building the TLS {side} configuration from {}: {source}", dir.display())]
    Config {
        /// `server` or `client`.
        side: &'static str,
        /// The TLS directory the material came from.
        dir: std::path::PathBuf,
        /// The rustls error.
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built from the CA.
    #[error("building the client certificate verifier from {}: {source}", path.display())]
    Verifier {
        /// The CA file.
        path: std::path::PathBuf,
        /// The rustls error.
        source: rustls::server::VerifierBuilderError,
    },
    /// The coordinator URL is not `https://HOST:PORT`.
    #[error(
        "invalid coordinator URL '{url}': {reason} (expected https://HOST:PORT, e.g. https://198.18.255.1:7443)"
    )]
    InvalidUrl {
        /// What was given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TCP or TLS to the coordinator failed. Retryable.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The coordinator URL.
        url: String,
        /// The whole error chain, innermost cause last.
        reason: String,
    },
}

impl Error {
    /// Whether trying again later may succeed (network trouble, not configuration).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Connect { .. })
    }
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who is on the other end of a server connection; a request extension on every call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// The identity from the client's verified certificate; `None` if it presented none
    /// (allowed only for `Enrollment/Join`, which the services enforce).
    pub identity: Option<Identity>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The coordinator's server configuration from `DIR/coordinator.pem` (chain) and
/// `DIR/coordinator-key.pem`, verifying client certificates against `DIR/ca.pem` when presented
/// (expired or foreign certificates fail the handshake; no certificate is accepted). ALPN `h2`.
pub fn server_config(dir: &TlsDir) -> Result<Arc<ServerConfig>> {
    let init_hint = format!(
        "create it with `meshctl certs init --dir {}`",
        dir.path().display()
    );
    let roots = load_roots(&dir.ca_cert(), &init_hint)?;
    let chain = load_certs(&dir.cert(COORDINATOR_NAME), &init_hint)?;
    let key = load_key(&dir.key(COORDINATOR_NAME), &init_hint)?;
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|source| Error::Verifier {
            path: dir.ca_cert(),
            source,
        })?;
    let config_err = |source| Error::Config {
        side: "server",
        dir: dir.path().to_path_buf(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(config_err)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// An mTLS client configuration for identity `identity_name`: trusts `DIR/ca.pem` and presents
/// `DIR/NAME.pem` with `DIR/NAME-key.pem`. ALPN `h2`.
pub fn client_config(dir: &TlsDir, identity_name: &str) -> Result<Arc<ClientConfig>> {
    let ca_hint = format!(
        "copy ca.pem from the coordinator's TLS directory, or create a CA with `meshctl certs init --dir {}`",
        dir.path().display()
    );
    let id_hint = format!(
        "issue it with `meshctl certs issue --dir {} --name {identity_name} --role probe|operator|viewer`",
        dir.path().display()
    );
    let roots = load_roots(&dir.ca_cert(), &ca_hint)?;
    let chain = load_certs(&dir.cert(identity_name), &id_hint)?;
    let key = load_key(&dir.key(identity_name), &id_hint)?;
    let config_err = |source| Error::Config {
        side: "client",
        dir: dir.path().to_path_buf(),
        source,
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(config_err)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The join flow's client configuration: no client certificate; the server's chain must
/// contain the CA certificate whose SHA-256 is `pin`, and the leaf must verify against that
/// CA as the only root (name, validity, signature). ALPN `h2`.
pub fn pinned_client_config(pin: &CaPin) -> Arc<ClientConfig> {
    let provider = provider();
    let verifier = PinnedCaVerifier {
        pin: pin.clone(),
        provider: provider.clone(),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // Fails only for a provider without TLS 1.2/1.3 cipher suites; ring has both.
        .expect("the ring provider supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Arc::new(config)
}

/// The server chain contained no certificate matching the pin.
#[derive(Debug)]
struct PinMismatch {
    pin: CaPin,
    presented: Vec<String>,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CA fingerprint does not match the token's pin {} (the server presented {}); \
             is this the coordinator that issued the token?",
            self.pin,
            self.presented.join(", ")
        )
    }
}

impl std::error::Error for PinMismatch {}

/// Verifies a server by a pinned CA found in the presented chain (see [`pinned_client_config`]).
#[derive(Debug)]
struct PinnedCaVerifier {
    pin: CaPin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = || std::iter::once(end_entity).chain(intermediates);
        let Some(ca) = chain().find(|c| self.pin.matches(c)) else {
            let presented = chain().map(|c| CaPin::of_der(c).to_string()).collect();
            return Err(rustls::Error::Other(OtherError(Arc::new(PinMismatch {
                pin: self.pin.clone(),
                presented,
            }))));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| {
                    rustls::Error::General(format!("pinned CA is unusable as a root: {e}"))
                })?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verified TLS connections accepted from a listener, for
/// `tonic::transport::Server::serve_with_incoming`.
///
/// Handshakes run concurrently in their own tasks, each bounded by [`HANDSHAKE_TIMEOUT`], so a
/// slow client cannot stall the others. A failed handshake is logged
/// (`tls handshake refused`, with `peer` and `reason`), counted in
/// [`TlsIncoming::refused_handshakes`], and never ends the stream. Dropping the stream stops
/// accepting and closes the listener.
#[derive(Debug)]
pub struct TlsIncoming {
    conns: mpsc::Receiver<TlsConn>,
    refused: Arc<AtomicU64>,
    local_addr: Option<SocketAddr>,
    accept_loop: JoinHandle<()>,
}

impl TlsIncoming {
    /// Starts accepting on `listener`. Must be called inside a tokio runtime.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> Self {
        let (tx, conns) = mpsc::channel(ACCEPT_QUEUE);
        let refused = Arc::new(AtomicU64::new(0));
        let local_addr = listener.local_addr().ok();
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(config),
            tx,
            refused.clone(),
        ));
        Self {
            conns,
            refused,
            local_addr,
            accept_loop,
        }
    }

    /// The number of refused handshakes so far (a live counter, e.g. for metrics).
    pub fn refused_handshakes(&self) -> Arc<AtomicU64> {
        self.refused.clone()
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl tokio_stream::Stream for TlsIncoming {
    type Item = io::Result<TlsConn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().conns.poll_recv(cx).map(|conn| conn.map(Ok))
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<TlsConn>,
    refused: Arc<AtomicU64>,
) {
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, addr)) => {
                tokio::spawn(handshake(
                    tcp,
                    addr,
                    acceptor.clone(),
                    tx.clone(),
                    refused.clone(),
                ));
            }
            Err(err) => {
                tracing::warn!(reason = %err, "accepting a TCP connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn handshake(
    tcp: TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<TlsConn>,
    refused: Arc<AtomicU64>,
) {
    // Best effort: Nagle only delays small gRPC frames.
    let _ = tcp.set_nodelay(true);
    let outcome = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Err(_) => Err(format!(
            "handshake not finished within {}s",
            HANDSHAKE_TIMEOUT.as_secs()
        )),
        Ok(Err(err)) => Err(refusal_reason(&err)),
        Ok(Ok(stream)) => peer_identity(&stream).map(|identity| TlsConn {
            inner: stream,
            peer: PeerInfo {
                remote_addr: addr,
                identity,
            },
        }),
    };
    match outcome {
        Ok(conn) => {
            // The receiver is gone only when the server is shutting down.
            let _ = tx.send(conn).await;
        }
        Err(reason) => {
            refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %addr, reason = %reason, "tls handshake refused");
        }
    }
}

/// The identity in the client's (already verified) leaf certificate, if it sent one.
fn peer_identity(
    stream: &tokio_rustls::server::TlsStream<TcpStream>,
) -> Result<Option<Identity>, String> {
    match stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    {
        None => Ok(None),
        Some(leaf) => Identity::from_cert_der(leaf)
            .map(Some)
            .map_err(|e| format!("client certificate carries no usable identity: {e}")),
    }
}

/// A one-line reason for a failed handshake that names the rustls error kind, e.g.
/// `invalid peer certificate: UnknownIssuer` or
/// `invalid peer certificate: Expired: certificate expired: ...`.
fn refusal_reason(err: &io::Error) -> String {
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(cert_err)) => {
            let kind = certificate_error_kind(cert_err);
            let text = cert_err.to_string();
            if text.starts_with(&kind) {
                format!("invalid peer certificate: {text}")
            } else {
                format!("invalid peer certificate: {kind}: {text}")
            }
        }
        Some(tls_err) => tls_err.to_string(),
        None => err.to_string(),
    }
}

/// The variant name of a certificate error without rustls' `Context` suffix (`Expired`,
/// `UnknownIssuer`, `NotValidYet`, ...).
fn certificate_error_kind(err: &CertificateError) -> String {
    let debug = format!("{err:?}");
    let name = debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default();
    name.strip_suffix("Context").unwrap_or(name).to_owned()
}

/// One accepted, verified server-side TLS connection.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl TlsConn {
    /// Who is on the other end.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }
}

impl fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConn")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

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

fn load_certs(path: &Path, hint: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = pki::read_text(path, hint)?;
    let bad = |reason: String| pki::Error::BadPem {
        path: path.to_path_buf(),
        what: "certificate",
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block".to_owned()).into());
    }
    Ok(certs)
}

fn load_key(path: &Path, hint: &str) -> Result<PrivateKeyDer<'static>> {
    let pem = pki::read_text(path, hint)?;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
        pki::Error::BadPem {
            path: path.to_path_buf(),
            what: "private key",
            reason: e.to_string(),
        }
        .into()
    })
}

fn load_roots(path: &Path, hint: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, hint)? {
        roots.add(cert).map_err(|e| pki::Error::BadPem {
            path: path.to_path_buf(),
            what: "CA certificate",
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
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

    #[test]
    fn certificate_error_kinds_are_the_variant_names() {
        use rustls::pki_types::UnixTime;
        let expired = CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(20)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(10)),
        };
        assert_eq!(certificate_error_kind(&expired), "Expired");
        assert_eq!(
            certificate_error_kind(&CertificateError::UnknownIssuer),
            "UnknownIssuer"
        );
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(expired),
        );
        let reason = refusal_reason(&io);
        assert!(
            reason.starts_with("invalid peer certificate: Expired: certificate expired"),
            "{reason}"
        );
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(
            refusal_reason(&io),
            "invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn client_config_names_the_missing_file_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(tmp.path());
        let err = client_config(&dir, "node-1").unwrap_err().to_string();
        assert!(
            err.contains("ca.pem does not exist") && err.contains("meshctl certs init"),
            "{err}"
        );
        pki::init(&dir, &[]).unwrap();
        let err = client_config(&dir, "node-1").unwrap_err().to_string();
        assert!(err.contains("node-1.pem does not exist"), "{err}");
        assert!(
            err.contains("meshctl certs issue --dir") && err.contains("--name node-1"),
            "{err}"
        );
        assert!(client_config(&dir, "admin").is_ok());
        assert!(server_config(&dir).is_ok());
    }
}
