//! probemesh's private PKI: the layout of a TLS directory, the certificate authority behind
//! `meshctl certs init` / `meshctl certs issue`, and the CSR signing behind the join flow.
//!
//! Every key is ECDSA P-256. Every leaf certificate names its holder twice: CN = name (for
//! humans) and the URI SAN `spiffe://probemesh/<role>/<name>` (what [`crate::identity`] reads).
//! Files are written to a temporary name in the same directory and then linked into place, so a
//! reader never sees a half-written file; key files are mode 0600.
//!
//! This module does not speak TLS; [`crate::tls`] turns the files into rustls configurations.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

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

use crate::identity::{CertFingerprint, IdentityError, Role, spiffe_uri, validate_name};

/// Name of the coordinator's certificate and key in a TLS directory.
pub const COORDINATOR_NAME: &str = "coordinator";
/// Name of the operator identity `meshctl certs init` creates.
pub const ADMIN_NAME: &str = "admin";
/// SANs every coordinator certificate carries: loopback only. Every other name or
/// address the coordinator is dialled by comes from `--coordinator-san` (the lab
/// passes its own address).
pub const DEFAULT_COORDINATOR_SANS: [&str; 2] = ["localhost", "127.0.0.1"];
/// Lifetime of a new CA.
pub const CA_LIFETIME: time::Duration = time::Duration::days(3650);
/// Lifetime of a new leaf certificate.
pub const LEAF_LIFETIME: time::Duration = time::Duration::days(365);
/// How far before "now" a new certificate's validity starts, to absorb clock skew between hosts.
pub const BACKDATE: time::Duration = time::Duration::minutes(5);

/// Errors of the PKI operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file that should be there is not.
    #[error("{} does not exist; {hint}", path.display())]
    MissingFile {
        /// The missing file.
        path: PathBuf,
        /// How to create it.
        hint: String,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    WriteFile {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Refused to overwrite an existing file.
    #[error("{} already exists; {hint}", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
        /// What to do instead.
        hint: &'static str,
    },
    /// A PEM file holds nothing usable of the expected kind.
    #[error("{}: no usable {what}: {reason}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What it should hold ("certificate", "private key").
        what: &'static str,
        /// Why it is unusable.
        reason: String,
    },
    /// A private key does not belong to the certificate next to it.
    #[error("{} is not the private key of {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
    },
    /// A bad identity name or role.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A `--coordinator-san` value that is neither an IP address nor a DNS name.
    #[error("invalid coordinator SAN '{san}': {reason}")]
    InvalidSan {
        /// What was given.
        san: String,
        /// Why it was refused.
        reason: String,
    },
    /// `not_after` is not after `not_before`.
    #[error("invalid validity: not_after {not_after} is not after not_before {not_before}")]
    InvalidValidity {
        /// Start of validity.
        not_before: OffsetDateTime,
        /// End of validity.
        not_after: OffsetDateTime,
    },
    /// Key or certificate generation failed.
    #[error("generating {what}: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The rcgen error.
        source: rcgen::Error,
    },
    /// A certificate signing request is malformed.
    #[error("certificate signing request refused: {0}")]
    BadCsr(String),
    /// A certificate signing request whose signature does not verify with its own key.
    #[error("certificate signing request refused: its signature does not verify")]
    CsrSignature,
    /// A CA pin that is not `sha256:<64 hex>`.
    #[error("invalid CA pin '{0}' (expected sha256:<64 hex digits>)")]
    InvalidPin(String),
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A directory of probemesh TLS material.
///
/// Layout: `ca.pem`, `ca-key.pem`, and `NAME.pem` / `NAME-key.pem` per identity
/// (`coordinator`, `admin`, probes...). A `NAME.pem` may hold the leaf followed by its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsDir {
    root: PathBuf,
}

impl TlsDir {
    /// A TLS directory at `path` (nothing is read or created).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { root: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `DIR/ca.pem`: the CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// `DIR/ca-key.pem`: the CA private key (only where certificates are issued).
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca-key.pem")
    }

    /// `DIR/NAME.pem`: the certificate (chain) of identity `name`.
    pub fn cert(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.pem"))
    }

    /// `DIR/NAME-key.pem`: the private key of identity `name`.
    pub fn key(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}-key.pem"))
    }
}

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

/// SHA-256 of the CA certificate's DER: what a join token pins. Displayed as `sha256:<hex>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CaPin(CertFingerprint);

impl CaPin {
    /// The pin of a DER CA certificate.
    pub fn of_der(ca_der: &[u8]) -> Self {
        Self(CertFingerprint::of_der(ca_der))
    }

    /// Wraps raw digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(CertFingerprint::from_bytes(bytes))
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Whether `der` is the pinned certificate.
    pub fn matches(&self, der: &[u8]) -> bool {
        CertFingerprint::of_der(der) == self.0
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaPin({})", self.0)
    }
}

impl FromStr for CaPin {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        s.parse::<CertFingerprint>()
            .map(Self)
            .map_err(|_| Error::InvalidPin(s.to_owned()))
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

/// What `init` created.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The TLS directory.
    pub dir: PathBuf,
    /// Every file written, CA first.
    pub files: Vec<PathBuf>,
    /// Pin of the new CA.
    pub ca_pin: CaPin,
    /// SANs of the coordinator certificate, as given (defaults first).
    pub coordinator_sans: Vec<String>,
}

/// `meshctl certs init`: creates a new CA, the coordinator's certificate (chain) and an operator
/// identity `admin` in `dir` (created if missing, mode 0700).
///
/// The coordinator certificate carries [`DEFAULT_COORDINATOR_SANS`] plus `coordinator_sans`
/// (IP addresses become IP SANs, anything else a DNS SAN). Refuses to touch a directory that
/// already holds any of the six files.
pub fn init(dir: &TlsDir, coordinator_sans: &[String]) -> Result<InitReport> {
    let now = OffsetDateTime::now_utc();
    let planned = [
        dir.ca_cert(),
        dir.ca_key(),
        dir.cert(COORDINATOR_NAME),
        dir.key(COORDINATOR_NAME),
        dir.cert(ADMIN_NAME),
        dir.key(ADMIN_NAME),
    ];
    if let Some(existing) = planned.iter().find(|p| p.exists()) {
        return Err(Error::AlreadyExists {
            path: existing.clone(),
            hint: "refusing to overwrite an existing CA: pick another --dir or remove it",
        });
    }
    let sans = coordinator_san_list(coordinator_sans);
    let ca = CertAuthority::generate(Validity::ca(now))?;
    let coordinator = ca.issue_coordinator(&sans, Validity::leaf(now))?;
    let admin = ca.issue(ADMIN_NAME, Role::Operator, Validity::leaf(now))?;
    create_private_dir(dir.path())?;
    let contents = [
        (ca.cert_pem.clone(), false),
        (ca.issuer.key().serialize_pem(), true),
        (coordinator.cert_pem, false),
        (coordinator.key_pem, true),
        (admin.cert_pem, false),
        (admin.key_pem, true),
    ];
    let staged = planned
        .iter()
        .zip(contents)
        .map(|(dest, (text, private))| StagedFile::write(dest, text.as_bytes(), private))
        .collect::<Result<Vec<_>>>()?;
    // Leaves first, the CA last: a half-committed init (a race) never leaves a usable-looking CA.
    for file in staged.iter().rev() {
        file.commit(
            false,
            "refusing to overwrite an existing CA: pick another --dir or remove it",
        )?;
    }
    Ok(InitReport {
        dir: dir.path().to_path_buf(),
        files: planned.to_vec(),
        ca_pin: ca.pin(),
        coordinator_sans: sans,
    })
}

/// Generates a P-256 key pair and a CSR (CN = `name`) for the join flow. Returns
/// `(csr_pem, key_pem)`; the key never leaves the host. The coordinator ignores everything in
/// the CSR but the public key.
pub fn generate_csr(name: &str) -> Result<(String, String)> {
    validate_name(name)?;
    let key = new_key()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|source| Error::Generate {
            what: "certificate signing request",
            source,
        })?;
    Ok((csr, key.serialize_pem()))
}

/// The certificate authority: its certificate and signing key.
pub struct CertAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
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

    /// `meshctl certs issue`: issues `name`/`role` with the default validity and writes
    /// `DIR/NAME.pem` and `DIR/NAME-key.pem`. Refuses to replace existing files unless `force`.
    /// Returns the paths written (certificate, key).
    pub fn issue_to_dir(
        &self,
        dir: &TlsDir,
        name: &str,
        role: Role,
        force: bool,
    ) -> Result<[PathBuf; 2]> {
        validate_name(name)?;
        let paths = [dir.cert(name), dir.key(name)];
        const HINT: &str = "pass --force to replace it";
        if !force && let Some(existing) = paths.iter().find(|p| p.exists()) {
            return Err(Error::AlreadyExists {
                path: existing.clone(),
                hint: HINT,
            });
        }
        let issued = self.issue(name, role, Validity::leaf(OffsetDateTime::now_utc()))?;
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
    /// signature does not verify is refused. Returns the certificate PEM (leaf only).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        name: &str,
        role: Role,
        validity: Validity,
    ) -> Result<String> {
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

/// Writes `contents` to `path` atomically (temporary file in the same directory, fsync, rename
/// over any existing file). `private` files (keys) get mode 0600, others 0644. A missing parent
/// directory is created with mode 0700.
pub fn write_atomic(path: &Path, contents: &[u8], private: bool) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    StagedFile::write(path, contents, private)?.commit(true, "")
}

/// Reads a whole text file; a missing file is reported with `hint` (how to create it).
pub(crate) fn read_text(path: &Path, hint: &str) -> Result<String> {
    fs::read_to_string(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            Error::MissingFile {
                path: path.to_path_buf(),
                hint: hint.to_owned(),
            }
        } else {
            Error::ReadFile {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

fn new_key() -> Result<KeyPair> {
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
fn coordinator_san_list(extra: &[String]) -> Vec<String> {
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

#[cfg(unix)]
fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| Error::WriteFile {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(not(unix))]
fn create_private_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|source| Error::WriteFile {
        path: path.to_path_buf(),
        source,
    })
}

/// A file fully written and synced under a temporary name next to its destination; removed on
/// drop unless committed by rename.
struct StagedFile {
    tmp: PathBuf,
    dest: PathBuf,
}

impl StagedFile {
    fn write(dest: &Path, contents: &[u8], private: bool) -> Result<Self> {
        let file_name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{file_name}.tmp-{:016x}", rand::random::<u64>()));
        let werr = |source| Error::WriteFile {
            path: tmp.clone(),
            source,
        };
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if private { 0o600 } else { 0o644 });
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut file = options.open(&tmp).map_err(werr)?;
        let staged = Self {
            tmp: tmp.clone(),
            dest: dest.to_path_buf(),
        };
        file.write_all(contents).map_err(werr)?;
        file.sync_all().map_err(werr)?;
        Ok(staged)
    }

    /// Moves the file into place. Without `replace`, an existing destination is an error
    /// (checked atomically with a hard link where the filesystem supports it).
    fn commit(&self, replace: bool, hint: &'static str) -> Result<()> {
        let werr = |source| Error::WriteFile {
            path: self.dest.clone(),
            source,
        };
        let exists = || Error::AlreadyExists {
            path: self.dest.clone(),
            hint,
        };
        if replace {
            return fs::rename(&self.tmp, &self.dest).map_err(werr);
        }
        match fs::hard_link(&self.tmp, &self.dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(exists()),
            Err(_) if self.dest.exists() => Err(exists()),
            Err(_) => fs::rename(&self.tmp, &self.dest).map_err(werr),
        }
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        // Already renamed into place, or linked and now redundant: either way it goes.
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn der_of(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn init_writes_the_six_files_and_refuses_to_run_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(tmp.path().join("tls"));
        let report = init(
            &dir,
            &[
                "mesh.example.com".to_owned(),
                "10.0.0.7".to_owned(),
                "198.18.255.1".to_owned(),
            ],
        )
        .unwrap();
        assert_eq!(report.files.len(), 6);
        for f in &report.files {
            assert!(f.exists(), "{}", f.display());
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [dir.ca_key(), dir.key("coordinator"), dir.key("admin")] {
                let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", key.display());
            }
        }

        let ca = CertAuthority::load(&dir).unwrap();
        assert_eq!(ca.pin(), report.ca_pin);

        let chain = fs::read_to_string(dir.cert("coordinator")).unwrap();
        let certs: Vec<_> = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(certs.len(), 2, "coordinator.pem holds leaf + CA");
        assert!(report.ca_pin.matches(&certs[1]));
        let id = Identity::from_cert_der(&certs[0]).unwrap();
        assert_eq!(
            (id.name.as_str(), id.role),
            ("coordinator", Role::Coordinator)
        );
        let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
        let san = leaf.subject_alternative_name().unwrap().unwrap().value;
        let names: Vec<String> = san
            .general_names
            .iter()
            .map(|g| match g {
                x509_parser::extensions::GeneralName::DNSName(d) => (*d).to_owned(),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    let octets: [u8; 4] = (*b).try_into().unwrap();
                    IpAddr::from(octets).to_string()
                }
                other => other.to_string(),
            })
            .collect();
        for want in [
            "localhost",
            "127.0.0.1",
            "198.18.255.1",
            "mesh.example.com",
            "10.0.0.7",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }

        let admin = fs::read_to_string(dir.cert("admin")).unwrap();
        let admin = Identity::from_cert_der(&der_of(&admin)).unwrap();
        assert_eq!((admin.name.as_str(), admin.role), ("admin", Role::Operator));

        let err = init(&dir, &[]).unwrap_err().to_string();
        assert!(err.contains("ca.pem already exists"), "{err}");
        assert!(err.contains("pick another --dir or remove it"), "{err}");
    }

    #[test]
    fn init_refuses_a_bad_san_before_writing_anything() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(tmp.path());
        let err = init(&dir, &["not a name!".to_owned()]).unwrap_err();
        assert!(matches!(err, Error::InvalidSan { .. }), "{err}");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn load_names_the_missing_file_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let err = CertAuthority::load(&TlsDir::new(tmp.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.pem does not exist"), "{err}");
        assert!(err.contains("meshctl certs init --dir"), "{err}");
    }

    #[test]
    fn issue_to_dir_refuses_overwrite_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(tmp.path());
        init(&dir, &[]).unwrap();
        let ca = CertAuthority::load(&dir).unwrap();
        let [cert, _key] = ca.issue_to_dir(&dir, "node-1", Role::Probe, false).unwrap();
        let first = fs::read_to_string(&cert).unwrap();
        let id = Identity::from_cert_der(&der_of(&first)).unwrap();
        assert_eq!((id.name.as_str(), id.role), ("node-1", Role::Probe));

        let err = ca
            .issue_to_dir(&dir, "node-1", Role::Probe, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("node-1.pem already exists") && err.contains("--force"),
            "{err}"
        );
        ca.issue_to_dir(&dir, "node-1", Role::Viewer, true).unwrap();
        let second = fs::read_to_string(&cert).unwrap();
        assert_ne!(first, second);
        assert_eq!(
            Identity::from_cert_der(&der_of(&second)).unwrap().role,
            Role::Viewer
        );
        assert!(
            ca.issue_to_dir(&dir, "Bad_Name", Role::Probe, false)
                .is_err()
        );
    }

    #[test]
    fn sign_csr_ignores_the_requested_names() {
        let ca = CertAuthority::generate(Validity::ca(OffsetDateTime::now_utc())).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["evil.example.com".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "admin");
        params.subject_alt_names.push(SanType::URI(
            Ia5String::try_from("spiffe://probemesh/operator/admin").unwrap(),
        ));
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();

        let now = OffsetDateTime::now_utc();
        let cert = ca
            .sign_csr(&csr, "cloudvm-1", Role::Probe, Validity::leaf(now))
            .unwrap();
        let der = der_of(&cert);
        let id = Identity::from_cert_der(&der).unwrap();
        assert_eq!((id.name.as_str(), id.role), ("cloudvm-1", Role::Probe));
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = parsed.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(san.general_names.len(), 1, "{:?}", san.general_names);
        let cn: Vec<_> = parsed
            .subject()
            .iter_common_name()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(cn, ["cloudvm-1"]);
        assert_eq!(
            parsed.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw(),
            "the CSR's key is certified"
        );
    }

    #[test]
    fn sign_csr_refuses_a_bad_signature_and_garbage() {
        let ca = CertAuthority::generate(Validity::ca(OffsetDateTime::now_utc())).unwrap();
        let validity = Validity::leaf(OffsetDateTime::now_utc());
        let (csr, _key) = generate_csr("cloudvm-1").unwrap();
        let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let tampered = pem_encode("CERTIFICATE REQUEST", &der);
        let err = ca
            .sign_csr(&tampered, "cloudvm-1", Role::Probe, validity)
            .unwrap_err();
        assert!(matches!(err, Error::CsrSignature), "{err}");
        assert!(matches!(
            ca.sign_csr("hello", "cloudvm-1", Role::Probe, validity),
            Err(Error::BadCsr(_))
        ));
        assert!(
            ca.sign_csr(&csr, "cloudvm-1", Role::Probe, validity)
                .is_ok()
        );
    }

    #[test]
    fn write_atomic_replaces_and_keeps_keys_private() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("sub").join("node-1-key.pem");
        write_atomic(&key, b"one", true).unwrap();
        write_atomic(&key, b"two", true).unwrap();
        assert_eq!(fs::read(&key).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(fs::read_dir(key.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn validity_must_be_a_window() {
        let ca = CertAuthority::generate(Validity::ca(OffsetDateTime::now_utc())).unwrap();
        let now = OffsetDateTime::now_utc();
        let backwards = Validity {
            not_before: now,
            not_after: now - time::Duration::days(1),
        };
        assert!(matches!(
            ca.issue("node-1", Role::Probe, backwards),
            Err(Error::InvalidValidity { .. })
        ));
    }

    #[test]
    fn pin_round_trips() {
        let pin = CaPin::of_der(b"ca");
        assert_eq!(pin.to_string().parse::<CaPin>().unwrap(), pin);
        assert!("sha256:12".parse::<CaPin>().is_err());
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let body: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            body.join("\n")
        )
    }
}
