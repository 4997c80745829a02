//! The certificate authority: a new or loaded CA, and the leaf certificates it issues (with a
//! fresh key, or for a CSR's key in the join flow). It does not decide where files live
//! ([`super::files`]) nor speak TLS.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use rand::RngCore;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use super::files::{StagedFile, TlsDir, read_text};
use super::{
    BACKDATE, CA_LIFETIME, COORDINATOR_NAME, CaPin, DEFAULT_COORDINATOR_SANS, Error, LEAF_LIFETIME,
    PROBE_LIFETIME, Result,
};
use crate::identity::{Role, spiffe_uri, validate_name, validate_probe_name};

/// The window in which a certificate is valid (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// First instant of validity.
    pub not_before: OffsetDateTime,
    /// Last instant of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Valid from `now` minus [`BACKDATE`] until `now + lifetime`.
    pub fn starting_at(now: OffsetDateTime, lifetime: time::Duration) -> Self {
        Self {
            not_before: now - BACKDATE,
            not_after: now + lifetime,
        }
    }

    /// The default validity of a leaf certificate issued at `now` ([`LEAF_LIFETIME`]).
    pub fn leaf(now: OffsetDateTime) -> Self {
        Self::starting_at(now, LEAF_LIFETIME)
    }

    /// The default validity of a CA created at `now` ([`CA_LIFETIME`]).
    pub fn ca(now: OffsetDateTime) -> Self {
        Self::starting_at(now, CA_LIFETIME)
    }

    fn apply(self, params: &mut CertificateParams) -> Result<()> {
        if self.not_after <= self.not_before {
            return Err(Error::InvalidValidity {
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        Ok(())
    }
}

/// A freshly issued certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, followed by the CA certificate for the coordinator's chain.
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The certificate authority: its certificate and signing key.
pub struct CertAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    pub(super) issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAuthority")
            .field("pin", &self.pin())
            .finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// A new self-signed CA (in memory; [`init`] writes one to disk).
    pub fn generate(validity: Validity) -> Result<Self> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        // A unique name per CA: two installations' CAs must not look like the same issuer
        // (path building matches by name, which would turn "unknown CA" into "bad signature").
        let ca_name = format!("probemesh CA {:08x}", rand::random::<u32>());
        params.distinguished_name.push(DnType::CommonName, ca_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "probemesh");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        validity.apply(&mut params)?;
        let cert = params.self_signed(&key).map_err(|source| Error::Generate {
            what: "CA certificate",
            source,
        })?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads `DIR/ca.pem` and `DIR/ca-key.pem`, checking that the key belongs to the certificate.
    pub fn load(dir: &TlsDir) -> Result<Self> {
        let init_hint = format!(
            "create a CA with `meshctl certs init --dir {}`",
            dir.path().display()
        );
        let (cert_path, key_path) = (dir.ca_cert(), dir.ca_key());
        let cert_pem = read_text(&cert_path, &init_hint)?;
        let key_pem = read_text(&key_path, &init_hint)?;
        let bad_cert = |reason: String| Error::BadPem {
            path: cert_path.clone(),
            what: "certificate",
            reason,
        };
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| bad_cert(e.to_string()))?
            .into_owned();
        let key = KeyPair::from_pem(&key_pem).map_err(|e| Error::BadPem {
            path: key_path.clone(),
            what: "private key",
            reason: e.to_string(),
        })?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| bad_cert(e.to_string()))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(Error::KeyMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| bad_cert(e.to_string()))?;
        Ok(Self {
            cert_pem,
            cert_der,
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A 32-byte secret for `label` that every holder of this CA's key
    /// derives alike and nobody else can: HMAC-SHA256 keyed with the CA
    /// key, over the label. Every coordinator of a mesh holds the CA key, so
    /// a secret derived here needs no distribution and no store (the viewer
    /// tokens' MAC key); a new CA changes it.
    pub fn derive_secret(&self, label: &str) -> [u8; 32] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.issuer.key().serialize_der());
        let tag = ring::hmac::sign(&key, label.as_bytes());
        let mut secret = [0u8; 32];
        secret.copy_from_slice(tag.as_ref());
        secret
    }

    /// The pin of this CA (SHA-256 of its DER).
    pub fn pin(&self) -> CaPin {
        CaPin::of_der(&self.cert_der)
    }

    /// Issues a certificate and a new P-256 key for `name` in `role`, valid for `validity`
    /// (pass a window in the past to make an expired certificate for tests).
    ///
    /// The certificate holds the leaf only. For [`Role::Coordinator`] it also carries
    /// [`DEFAULT_COORDINATOR_SANS`]; use [`CertAuthority::issue_coordinator`] for more.
    pub fn issue(&self, name: &str, role: Role, validity: Validity) -> Result<IssuedCert> {
        let extra = if role == Role::Coordinator {
            san_types(&coordinator_san_list(&[]))?
        } else {
            Vec::new()
        };
        let key = new_key()?;
        let cert = leaf_params(name, role, validity, extra)?
            .signed_by(&key, &self.issuer)
            .map_err(|source| Error::Generate {
                what: "certificate",
                source,
            })?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues the coordinator's server certificate: SANs [`DEFAULT_COORDINATOR_SANS`] plus
    /// `sans`; `cert_pem` is the leaf followed by the CA certificate (the chain the join flow
    /// pins the CA from).
    pub fn issue_coordinator(&self, sans: &[String], validity: Validity) -> Result<IssuedCert> {
        let key = new_key()?;
        let cert = leaf_params(
            COORDINATOR_NAME,
            Role::Coordinator,
            validity,
            san_types(&coordinator_san_list(sans))?,
        )?
        .signed_by(&key, &self.issuer)
        .map_err(|source| Error::Generate {
            what: "coordinator certificate",
            source,
        })?;
        Ok(IssuedCert {
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// `meshctl certs issue`: issues `name`/`role` valid for `lifetime` (default: [`PROBE_LIFETIME`]
    /// for probes, [`LEAF_LIFETIME`] for the others) and writes `DIR/NAME.pem` and
    /// `DIR/NAME-key.pem`. Refuses to replace existing files unless `force`. Returns the paths
    /// written (certificate, key).
    pub fn issue_to_dir(
        &self,
        dir: &TlsDir,
        name: &str,
        role: Role,
        force: bool,
        lifetime: Option<time::Duration>,
    ) -> Result<[PathBuf; 2]> {
        validate_probe_name(name)?;
        let paths = [dir.cert(name), dir.key(name)];
        const HINT: &str = "pass --force to replace it";
        if !force && let Some(existing) = paths.iter().find(|p| p.exists()) {
            return Err(Error::AlreadyExists {
                path: existing.clone(),
                hint: HINT,
            });
        }
        let lifetime = lifetime.unwrap_or(if role.is_probe() {
            PROBE_LIFETIME
        } else {
            LEAF_LIFETIME
        });
        let issued = self.issue(
            name,
            role,
            Validity::starting_at(OffsetDateTime::now_utc(), lifetime),
        )?;
        let staged = [
            StagedFile::write(&paths[0], issued.cert_pem.as_bytes(), false)?,
            StagedFile::write(&paths[1], issued.key_pem.as_bytes(), true)?,
        ];
        for file in staged.iter().rev() {
            file.commit(force, HINT)?;
        }
        Ok(paths)
    }

    /// Signs a PEM CSR for `name`/`role`. Only the CSR's public key is used: the certificate
    /// carries exactly `name` and `role`, whatever subject or SANs the CSR asks for. A CSR whose
    /// signature does not verify is refused, and so is a reserved `name` (see
    /// [`crate::identity::RESERVED_NAMES`]). Returns the certificate PEM (leaf only).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        name: &str,
        role: Role,
        validity: Validity,
    ) -> Result<String> {
        validate_probe_name(name)?;
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| Error::BadCsr(format!("not a PEM CERTIFICATE REQUEST: {e}")))?;
        let (_, csr) = X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| Error::BadCsr(format!("not a PKCS#10 request: {e}")))?;
        csr.verify_signature().map_err(|_| Error::CsrSignature)?;
        let spki = SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
            .map_err(|e| Error::BadCsr(format!("unsupported public key: {e}")))?;
        let cert = leaf_params(name, role, validity, Vec::new())?
            .signed_by(&spki, &self.issuer)
            .map_err(|source| Error::Generate {
                what: "certificate",
                source,
            })?;
        Ok(cert.pem())
    }
}

pub(super) fn new_key() -> Result<KeyPair> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| Error::Generate {
        what: "P-256 key pair",
        source,
    })
}

/// A positive 127-bit random serial number.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// The defaults followed by `extra`, without duplicates, IPv6 brackets removed.
pub(super) fn coordinator_san_list(extra: &[String]) -> Vec<String> {
    let mut sans: Vec<String> = DEFAULT_COORDINATOR_SANS
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    for san in extra {
        let san = san
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    sans
}

fn san_types(sans: &[String]) -> Result<Vec<SanType>> {
    sans.iter()
        .map(|san| {
            if let Ok(ip) = san.parse::<IpAddr>() {
                return Ok(SanType::IpAddress(ip));
            }
            let refuse = |reason: &str| Error::InvalidSan {
                san: san.clone(),
                reason: reason.to_owned(),
            };
            let valid_dns = !san.is_empty()
                && san.len() <= 253
                && san
                    .split('.')
                    .all(|label| !label.is_empty() && label.len() <= 63)
                && san
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '*');
            if !valid_dns {
                return Err(refuse("not an IP address or a DNS name"));
            }
            Ia5String::try_from(san.as_str())
                .map(SanType::DnsName)
                .map_err(|e| refuse(&e.to_string()))
        })
        .collect()
}

fn leaf_params(
    name: &str,
    role: Role,
    validity: Validity,
    extra_sans: Vec<SanType>,
) -> Result<CertificateParams> {
    validate_name(name)?;
    let uri = spiffe_uri(role, name);
    let uri = Ia5String::try_from(uri.as_str()).map_err(|e| Error::InvalidSan {
        san: uri.clone(),
        reason: e.to_string(),
    })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = std::iter::once(SanType::URI(uri))
        .chain(extra_sans)
        .collect();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if role == Role::Coordinator {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    validity.apply(&mut params)?;
    Ok(params)
}
