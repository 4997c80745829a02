//! The join flow's TLS client: no client certificate, and a server trusted only through the
//! CA whose fingerprint the join token pins. Not the mTLS client of every other call.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use super::{ALPN_H2, provider};
use crate::pki::CaPin;

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
