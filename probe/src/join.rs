//! Enrollment: an external host with a join token (`mesh-probe join`), a
//! node of a Kubernetes cluster with its projected ServiceAccount token
//! (`--kube-token-file`).
//!
//! The key is generated here and never leaves the host. The coordinator is
//! authenticated by the CA fingerprint pinned in the join token, or by the
//! cluster's CA file (no client certificate yet); the token authenticates
//! us. The issued certificate carries exactly the name the join token was
//! made for, or the node the ServiceAccount token's pod runs on.
//!
//! `mesh-probe join` never replaces a file: an existing DIR/NAME.pem or
//! DIR/NAME-key.pem, or a DIR/ca.pem of another CA than the token pins, is
//! refused before the coordinator is contacted (and again, atomically, when
//! the files are created). A node enrolling by ServiceAccount token renews
//! its own NAME files that way, so it replaces them; it too keeps a ca.pem
//! that holds another CA.

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
    refuse_existing(&dir, token.name.as_str())?;
    if let Some(ca_der) = read_ca(&dir.ca_cert())?
        && !token.ca_pin.matches(&ca_der)
    {
        return Err(other_ca(&dir));
    }
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
    store(response, token.name.as_str(), &key_pem, dir, Replace::Never)
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
    store(response, name, &key_pem, dir, Replace::OwnFiles)
}

/// What enrollment may replace in the TLS directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Nothing (`mesh-probe join`).
    Never,
    /// The probe's own NAME.pem and NAME-key.pem (a node renewing by ServiceAccount token).
    OwnFiles,
}

/// How to get out of a refusal to overwrite.
const KEEP_HINT: &str = "mesh-probe join never replaces a key or certificate: pass another --tls-dir, or move the file away if this host is to be enrolled again";

/// Refuses when DIR/NAME-key.pem or DIR/NAME.pem exists.
fn refuse_existing(dir: &TlsDir, name: &str) -> Result<()> {
    match [dir.key(name), dir.cert(name)]
        .into_iter()
        .find(|p| p.exists())
    {
        Some(path) => Err(pki::Error::AlreadyExists {
            path,
            hint: KEEP_HINT,
        }
        .into()),
        None => Ok(()),
    }
}

/// The DER of the CA certificate in `path`, if the file exists.
fn read_ca(path: &Path) -> Result<Option<Vec<u8>>> {
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::File {
                op: "reading",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let der = CertificateDer::from_pem_slice(&pem).map_err(|e| pki::Error::BadPem {
        path: path.to_path_buf(),
        what: "certificate",
        reason: e.to_string(),
    })?;
    Ok(Some(der.as_ref().to_vec()))
}

/// DIR/ca.pem holds another CA than the one enrolling with.
fn other_ca(dir: &TlsDir) -> Error {
    pki::Error::AlreadyExists {
        path: dir.ca_cert(),
        hint: "it holds another CA than the coordinator's: pass another --tls-dir (a directory per CA)",
    }
    .into()
}

/// Checks that the coordinator issued the name asked for and stores the CA
/// (unless the same CA is there already), key and certificate, replacing
/// only what `replace` allows.
fn store(
    response: pb::JoinResponse,
    name: &str,
    key_pem: &str,
    dir: TlsDir,
    replace: Replace,
) -> Result<Enrolled> {
    if response.name != name {
        return Err(Error::JoinRefused(format!(
            "the coordinator issued a certificate for '{}' but this probe asked for '{name}'",
            response.name
        )));
    }
    let ca_der = CertificateDer::from_pem_slice(response.ca_pem.as_bytes())
        .map_err(|e| Error::JoinRefused(format!("the coordinator sent no usable CA: {e}")))?;
    match read_ca(&dir.ca_cert())? {
        Some(existing) if existing != ca_der.as_ref() => return Err(other_ca(&dir)),
        Some(_) => {}
        None => pki::write_new(&dir.ca_cert(), response.ca_pem.as_bytes(), false, KEEP_HINT)?,
    }
    let files = [
        (dir.key(name), key_pem.as_bytes(), true),
        (dir.cert(name), response.certificate_pem.as_bytes(), false),
    ];
    for (path, contents, private) in files {
        match replace {
            Replace::Never => pki::write_new(&path, contents, private, KEEP_HINT)?,
            Replace::OwnFiles => pki::write_atomic(&path, contents, private)?,
        }
    }
    tracing::info!(%name, dir = %dir.path().display(), "enrolled; certificate stored");
    Ok(Enrolled {
        name: name.to_owned(),
        tls_dir: dir,
    })
}
