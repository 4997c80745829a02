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
//!
//! Map: this file holds the errors and the mTLS configurations; [`pinned`] the join flow's
//! pinned-CA verifier; [`incoming`] the server's stream of verified connections; [`connect`]
//! the client's dialling of a coordinator URL. It reads certificate files through [`crate::pki`],
//! which knows nothing of TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::identity::Identity;
use crate::pki::{self, COORDINATOR_NAME, TlsDir};

mod connect;
mod incoming;
mod pinned;

pub use connect::{CONTROL_MSS, connect, connect_lazy, coordinator_host};
pub use incoming::{TlsConn, TlsIncoming};
pub use pinned::pinned_client_config;

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
