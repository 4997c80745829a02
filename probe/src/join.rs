//! `mesh-probe join`: enrollment of an external host with a join token.
//!
//! The key is generated here and never leaves the host. The coordinator is
//! authenticated by the CA fingerprint pinned in the token (no client
//! certificate yet); the token's one-time secret authenticates us. The
//! issued certificate carries exactly the name the token was made for.

use probemesh_proto::pb;
use probemesh_proto::pki::{self, TlsDir};
use probemesh_proto::token::JoinToken;

use crate::error::{Error, Result};

/// What enrollment stored.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The probe name from the token (and the certificate).
    pub name: String,
    /// Where the certificate and key were written.
    pub tls_dir: TlsDir,
}

/// Enrolls with `coordinator` using `token`, writing DIR/ca.pem, DIR/NAME.pem
/// and DIR/NAME-key.pem.
pub async fn join(coordinator: &str, token: &str, dir: TlsDir) -> Result<Enrolled> {
    let token: JoinToken = token.trim().parse()?;
    let tls = probemesh_proto::tls::pinned_client_config(&token.ca_pin);
    let channel = probemesh_proto::tls::connect(coordinator, tls).await?;
    let (csr_pem, key_pem) = pki::generate_csr(token.name.as_str())?;
    let response = pb::enrollment_client::EnrollmentClient::new(channel)
        .join(pb::JoinRequest {
            token: token.to_string(),
            csr_pem,
        })
        .await
        .map_err(|status| Error::JoinRefused(status.message().to_owned()))?
        .into_inner();
    if response.name != token.name.as_str() {
        return Err(Error::JoinRefused(format!(
            "the coordinator issued a certificate for '{}' but the token is for '{}'",
            response.name, token.name
        )));
    }
    pki::write_atomic(&dir.ca_cert(), response.ca_pem.as_bytes(), false)?;
    pki::write_atomic(&dir.key(token.name.as_str()), key_pem.as_bytes(), true)?;
    pki::write_atomic(
        &dir.cert(token.name.as_str()),
        response.certificate_pem.as_bytes(),
        false,
    )?;
    tracing::info!(name = %token.name, dir = %dir.path().display(), "enrolled; certificate stored");
    Ok(Enrolled {
        name: token.name.into_string(),
        tls_dir: dir,
    })
}
