//! Renewing the probe's certificate over its stream: when to ask (about
//! 2/3 of the way from issue to expiry), what to ask with (a CSR for a new
//! key made here), and storing the answer for the next connection.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use probemesh_proto::identity::Identity;
use probemesh_proto::pki::{self, BACKDATE, TlsDir};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::error::{Error, Result};

/// When the certificate in DIR/NAME.pem is due for renewal: 2/3 of the way
/// from its issue (`notBefore` plus the backdate every certificate carries)
/// to its `notAfter`. `None` when it cannot be read.
pub fn due(dir: &TlsDir, name: &str) -> Option<SystemTime> {
    let pem = std::fs::read(dir.cert(name)).ok()?;
    let der = CertificateDer::from_pem_slice(&pem).ok()?;
    let id = Identity::from_cert_der(der.as_ref()).ok()?;
    let issued = id.not_before_unix.saturating_add(BACKDATE.whole_seconds());
    let at = issued.saturating_add(id.not_after_unix.saturating_sub(issued) * 2 / 3);
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(at).ok()?))
}

/// A renewal asked for: the new key, kept until its certificate arrives.
#[derive(Clone)]
pub struct Request {
    key_pem: String,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Request(<key>)")
    }
}

impl Request {
    /// A new key and its CSR (PEM) for probe `name`.
    pub fn new(name: &str) -> Result<(Self, String)> {
        let (csr_pem, key_pem) = pki::generate_csr(name)?;
        Ok((Self { key_pem }, csr_pem))
    }

    /// Stores the renewed certificate and this request's key as DIR/NAME.pem
    /// and DIR/NAME-key.pem (each written atomically, key mode 0600), after
    /// checking it names this probe. The running stream keeps its
    /// connection; the next connection uses them. Returns the new `notAfter`
    /// (Unix seconds).
    pub fn store(self, dir: &TlsDir, name: &str, certificate_pem: &str) -> Result<i64> {
        let der = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
            .map_err(|e| Error::Refused(format!("renewed certificate unreadable: {e}")))?;
        let id = Identity::from_cert_der(der.as_ref())
            .map_err(|e| Error::Refused(format!("renewed certificate unreadable: {e}")))?;
        if id.name != name {
            return Err(Error::Refused(format!(
                "the coordinator renewed a certificate for '{}', not '{name}'",
                id.name
            )));
        }
        pki::write_atomic(&dir.key(name), self.key_pem.as_bytes(), true)?;
        pki::write_atomic(&dir.cert(name), certificate_pem.as_bytes(), false)?;
        Ok(id.not_after_unix)
    }
}
