//! probemesh's private PKI: the layout of a TLS directory, the certificate authority behind
//! `meshctl certs init` / `meshctl certs issue`, and the CSR signing behind the join flow.
//!
//! Every key is ECDSA P-256. Every leaf certificate names its holder twice: CN = name (for
//! humans) and the URI SAN `spiffe://probemesh/<role>/<name>` (what [`crate::identity`] reads).
//! Files are written to a temporary name in the same directory and then linked into place, so a
//! reader never sees a half-written file; key files are mode 0600.
//!
//! Map: this file holds the errors, the CA pin and the two entry points ([`init`],
//! [`generate_csr`]); [`authority`] issues and signs certificates; [`files`] is the directory
//! layout and the atomic writes. This module does not speak TLS: the `tls` module, above it,
//! turns the files into rustls configurations.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;

use rcgen::{CertificateParams, DistinguishedName, DnType};
use time::OffsetDateTime;

use crate::identity::{CertFingerprint, IdentityError, Role, validate_probe_name};

mod authority;
mod files;

pub use authority::{CertAuthority, IssuedCert, Validity};
use authority::{coordinator_san_list, new_key};
pub(crate) use files::read_text;
use files::{StagedFile, create_private_dir};
pub use files::{TlsDir, write_atomic, write_new};

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
/// Lifetime of a probe certificate from the join flow, node enrollment or `certs issue --role
/// probe`: short, because probes renew over their stream at about 2/3 of it.
pub const PROBE_LIFETIME: time::Duration = time::Duration::days(7);
/// Lifetime of a new leaf certificate (operators, viewers, the coordinator).
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
        (ca.cert_pem().to_owned(), false),
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
    validate_probe_name(name)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::net::IpAddr;

    use rcgen::string::Ia5String;
    use rcgen::{KeyPair, SanType};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};

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
        let [cert, _key] = ca
            .issue_to_dir(&dir, "node-1", Role::Probe, false, None)
            .unwrap();
        let first = fs::read_to_string(&cert).unwrap();
        let id = Identity::from_cert_der(&der_of(&first)).unwrap();
        assert_eq!((id.name.as_str(), id.role), ("node-1", Role::Probe));
        let issued = id.not_before_unix + BACKDATE.whole_seconds();
        assert_eq!(id.not_after_unix - issued, PROBE_LIFETIME.whole_seconds());

        let err = ca
            .issue_to_dir(&dir, "node-1", Role::Probe, false, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("node-1.pem already exists") && err.contains("--force"),
            "{err}"
        );
        ca.issue_to_dir(&dir, "node-1", Role::Viewer, true, None)
            .unwrap();
        let second = fs::read_to_string(&cert).unwrap();
        assert_ne!(first, second);
        assert_eq!(
            Identity::from_cert_der(&der_of(&second)).unwrap().role,
            Role::Viewer
        );
        assert!(
            ca.issue_to_dir(&dir, "Bad_Name", Role::Probe, false, None)
                .is_err()
        );
    }

    #[test]
    fn reserved_names_are_never_issued_or_signed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(tmp.path());
        init(&dir, &[]).unwrap();
        let ca_key = fs::read(dir.ca_key()).unwrap();
        let ca = CertAuthority::load(&dir).unwrap();
        let (csr, _key) = generate_csr("node-1").unwrap();
        let validity = Validity::leaf(OffsetDateTime::now_utc());
        for name in crate::identity::RESERVED_NAMES {
            for force in [false, true] {
                let err = ca
                    .issue_to_dir(&dir, name, Role::Probe, force, None)
                    .unwrap_err();
                assert!(err.to_string().contains("is reserved"), "{err}");
            }
            let err = ca.sign_csr(&csr, name, Role::Probe, validity).unwrap_err();
            assert!(err.to_string().contains("is reserved"), "{err}");
            assert!(generate_csr(name).is_err());
        }
        assert_eq!(fs::read(dir.ca_key()).unwrap(), ca_key);
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
