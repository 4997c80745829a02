//! The server side of the transport: accepts TCP connections, runs each TLS handshake in its
//! own task, and yields verified connections carrying their [`PeerInfo`] to tonic. It does not
//! authorize calls; the services do.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use rustls::{CertificateError, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

use super::{ACCEPT_BACKOFF, ACCEPT_QUEUE, HANDSHAKE_TIMEOUT, PeerInfo};
use crate::identity::Identity;

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
}
