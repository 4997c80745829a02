//! Enrollment: an external host with a join token (`mesh-probe join`), a
//! node of a Kubernetes cluster with its projected ServiceAccount token
//! (`--kube-token-file`).
//!
//! The key is generated here and never leaves the host. The coordinator is
//! authenticated by the CA fingerprint pinned in the join token, or by the
//! cluster's CA file (no client certificate yet); the token authenticates
//! us. The issued certificate carries exactly the name the join token was
//! made for, or the node the ServiceAccount token's pod runs on.

use std::path::Path;

use probemesh_proto::pb;
use probemesh_proto::pki::{self, CaPin, TlsDir};
use probemesh_proto::token::JoinToken;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

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
    store(response, token.name.as_str(), &key_pem, dir)
}

/// Enrolls node `name` with `coordinator` using the projected ServiceAccount
/// token in `token_file`, trusting the coordinator by the CA in `ca_file`;
/// writes DIR/ca.pem, DIR/NAME.pem and DIR/NAME-key.pem.
pub async fn enroll_node(
    coordinator: &str,
    name: &str,
    token_file: &Path,
    ca_file: &Path,
    dir: TlsDir,
) -> Result<Enrolled> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| Error::JoinRefused(format!("reading {}: {e}", path.display())))
    };
    let token = String::from_utf8_lossy(&read(token_file)?)
        .trim()
        .to_owned();
    let ca_der = CertificateDer::from_pem_slice(&read(ca_file)?).map_err(|e| {
        Error::JoinRefused(format!(
            "{} holds no PEM certificate: {e}",
            ca_file.display()
        ))
    })?;
    let tls = probemesh_proto::tls::pinned_client_config(&CaPin::of_der(ca_der.as_ref()));
    let channel = probemesh_proto::tls::connect(coordinator, tls).await?;
    let (csr_pem, key_pem) = pki::generate_csr(name)?;
    let response = pb::enrollment_client::EnrollmentClient::new(channel)
        .enroll_node(pb::NodeEnrollRequest {
            node_name: name.to_owned(),
            service_account_token: token,
            csr_pem,
        })
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unavailable => Error::Stream(status.message().to_owned()),
            _ => Error::JoinRefused(status.message().to_owned()),
        })?
        .into_inner();
    store(response, name, &key_pem, dir)
}

/// Checks that the coordinator issued the name asked for and stores the CA,
/// key and certificate.
fn store(response: pb::JoinResponse, name: &str, key_pem: &str, dir: TlsDir) -> Result<Enrolled> {
    if response.name != name {
        return Err(Error::JoinRefused(format!(
            "the coordinator issued a certificate for '{}' but this probe asked for '{name}'",
            response.name
        )));
    }
    pki::write_atomic(&dir.ca_cert(), response.ca_pem.as_bytes(), false)?;
    pki::write_atomic(&dir.key(name), key_pem.as_bytes(), true)?;
    pki::write_atomic(&dir.cert(name), response.certificate_pem.as_bytes(), false)?;
    tracing::info!(%name, dir = %dir.path().display(), "enrolled; certificate stored");
    Ok(Enrolled {
        name: name.to_owned(),
        tls_dir: dir,
    })
}
