//! Who a certificate says its holder is.
//!
//! Every probemesh certificate carries exactly one URI SAN
//! `spiffe://probemesh/<role>/<name>`; the CN repeats the name for humans. This module parses
//! that identity out of a DER certificate and defines the roles and their rights. It does not
//! verify anything: chain, validity and signatures are the TLS layer's job (`tls`), so only call
//! [`Identity::from_cert_der`] on a certificate rustls has already verified.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;

/// The trust domain and path prefix of every probemesh SPIFFE ID.
pub const SPIFFE_PREFIX: &str = "spiffe://probemesh/";

/// Longest identity name, in bytes (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

/// Names no probe, join token or issued certificate may take: `ca` is the CA's own files in a
/// TLS directory, `admin` and `coordinator` the identities `meshctl certs init` creates. A probe
/// or token named after one of them would overwrite (or impersonate) it.
pub const RESERVED_NAMES: [&str; 3] = ["ca", "admin", "coordinator"];

/// What an identity may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A probe daemon: may attach to ProbeLink and nothing else.
    Probe,
    /// A person or automation that may read and start runs, captures and join tokens.
    Operator,
    /// A person who may only read (probes, runs).
    Viewer,
    /// The coordinator itself (its server certificate).
    Coordinator,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 4] = [Role::Probe, Role::Operator, Role::Viewer, Role::Coordinator];

    /// The role as spelled in SPIFFE IDs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Probe => "probe",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Coordinator => "coordinator",
        }
    }

    /// May call the read-only Control RPCs (operator, viewer).
    pub fn can_read_control(self) -> bool {
        matches!(self, Role::Operator | Role::Viewer)
    }

    /// May start runs and captures and create join tokens (operator only).
    pub fn can_start_runs(self) -> bool {
        self == Role::Operator
    }

    /// Is a probe daemon.
    pub fn is_probe(self) -> bool {
        self == Role::Probe
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownRole(s.to_owned()))
    }
}

/// A validated probe name (also what join tokens carry): a valid identity name (see
/// [`validate_name`]) that is not one of the [`RESERVED_NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProbeName(String);

impl ProbeName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, IdentityError> {
        validate_probe_name(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Gives back the inner string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ProbeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ProbeName {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for ProbeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Checks that `name` may be given to a probe, a join token or a newly issued certificate: a
/// valid identity name ([`validate_name`]) and not one of the [`RESERVED_NAMES`].
pub fn validate_probe_name(name: &str) -> Result<(), IdentityError> {
    validate_name(name)?;
    if RESERVED_NAMES.contains(&name) {
        return Err(IdentityError::ReservedName(name.to_owned()));
    }
    Ok(())
}

/// Checks that `name` is a valid identity name (any role, the reserved ones included): a
/// DNS-label-like string of 1..=63 characters from `a-z`, `0-9`, `-` and `.`, starting and
/// ending with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), IdentityError> {
    let refuse = |reason: String| {
        Err(IdentityError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("it is empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return refuse(format!(
            "it is {} characters long, at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return refuse(format!("character {c:?} is not allowed"));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return refuse("it must start and end with a letter or digit".to_owned());
    }
    Ok(())
}

/// The SPIFFE ID URI for `role`/`name`: `spiffe://probemesh/<role>/<name>`.
pub fn spiffe_uri(role: Role, name: &str) -> String {
    format!("{SPIFFE_PREFIX}{}/{name}", role.as_str())
}

/// SHA-256 of a certificate's DER encoding; displayed and parsed as `sha256:<64 hex>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CertFingerprint([u8; 32]);

impl CertFingerprint {
    /// Fingerprints a DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// Wraps raw digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({self})")
    }
}

impl FromStr for CertFingerprint {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdentityError::InvalidFingerprint(s.to_owned());
        let hex_part = s.strip_prefix("sha256:").ok_or_else(bad)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| bad())?;
        Ok(Self(bytes))
    }
}

/// The authenticated identity of a certificate holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The name from the SPIFFE ID (a valid [`ProbeName`]).
    pub name: String,
    /// The role from the SPIFFE ID.
    pub role: Role,
    /// SHA-256 of the certificate the identity was read from.
    pub fingerprint: CertFingerprint,
    /// The certificate's serial number, lowercase hex (what `meshctl certs revoke` takes).
    pub serial: String,
    /// The certificate's `notBefore`, seconds since the Unix epoch.
    pub not_before_unix: i64,
    /// The certificate's `notAfter`, seconds since the Unix epoch.
    pub not_after_unix: i64,
}

impl Identity {
    /// Reads the identity from a DER certificate's `spiffe://probemesh/<role>/<name>` URI SAN.
    ///
    /// Does not verify the certificate; see the module documentation.
    pub fn from_cert_der(der: &[u8]) -> Result<Identity, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::BadCertificate(format!("subjectAltName: {e}")))?
            .ok_or(IdentityError::NoSpiffeId)?;
        let mut uris = san.value.general_names.iter().filter_map(|gn| match gn {
            GeneralName::URI(uri) if uri.starts_with(SPIFFE_PREFIX) => Some(*uri),
            _ => None,
        });
        let uri = uris.next().ok_or(IdentityError::NoSpiffeId)?;
        if let Some(other) = uris.next() {
            return Err(IdentityError::SeveralSpiffeIds {
                first: uri.to_owned(),
                second: other.to_owned(),
            });
        }
        let (role, name) = parse_spiffe_uri(uri)?;
        Ok(Identity {
            name,
            role,
            fingerprint: CertFingerprint::of_der(der),
            serial: hex::encode(cert.tbs_certificate.raw_serial()),
            not_before_unix: cert.validity().not_before.timestamp(),
            not_after_unix: cert.validity().not_after.timestamp(),
        })
    }

    /// This identity's SPIFFE ID URI.
    pub fn spiffe_uri(&self) -> String {
        spiffe_uri(self.role, &self.name)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.role)
    }
}

/// Splits `spiffe://probemesh/<role>/<name>` into its role and validated name.
pub fn parse_spiffe_uri(uri: &str) -> Result<(Role, String), IdentityError> {
    let bad = |reason: &str| IdentityError::BadSpiffeId {
        uri: uri.to_owned(),
        reason: reason.to_owned(),
    };
    let path = uri
        .strip_prefix(SPIFFE_PREFIX)
        .ok_or_else(|| bad("it is not in the spiffe://probemesh/ trust domain"))?;
    let (role, name) = path
        .split_once('/')
        .ok_or_else(|| bad("expected spiffe://probemesh/<role>/<name>"))?;
    let role = role
        .parse::<Role>()
        .map_err(|_| bad("unknown role (expected probe, operator, viewer or coordinator)"))?;
    validate_name(name).map_err(|e| bad(&e.to_string()))?;
    Ok((role, name.to_owned()))
}

/// Why an identity, role, name or fingerprint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// A role string that is not one of the four roles.
    #[error("unknown role '{0}' (expected probe, operator, viewer or coordinator)")]
    UnknownRole(String),
    /// A name that breaks the naming rules.
    #[error(
        "invalid name '{name}': {reason} (names use a-z, 0-9, '-' and '.', 1 to 63 characters, starting and ending with a letter or digit)"
    )]
    InvalidName {
        /// What was given.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A reserved name asked for a probe, a token or a new certificate.
    #[error(
        "name '{0}' is reserved (ca, admin and coordinator are the CA and the identities `meshctl certs init` creates): pick another name"
    )]
    ReservedName(String),
    /// A fingerprint string not of the form `sha256:<64 hex>`.
    #[error("invalid certificate fingerprint '{0}' (expected sha256:<64 hex digits>)")]
    InvalidFingerprint(String),
    /// The bytes are not a parseable X.509 certificate.
    #[error("cannot parse the certificate: {0}")]
    BadCertificate(String),
    /// The certificate carries no `spiffe://probemesh/...` URI SAN.
    #[error(
        "the certificate has no spiffe://probemesh/<role>/<name> URI SAN (was it issued by `meshctl certs`?)"
    )]
    NoSpiffeId,
    /// The certificate carries more than one probemesh SPIFFE ID.
    #[error("the certificate has more than one probemesh SPIFFE ID ({first}, {second})")]
    SeveralSpiffeIds {
        /// The first one found.
        first: String,
        /// The second one found.
        second: String,
    },
    /// The SPIFFE ID is malformed.
    #[error("bad SPIFFE ID {uri}: {reason}")]
    BadSpiffeId {
        /// The URI SAN.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test]
    fn roles_round_trip_and_rights() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            assert_eq!(role.to_string(), role.as_str());
        }
        assert!(Role::Operator.can_read_control() && Role::Viewer.can_read_control());
        assert!(!Role::Probe.can_read_control() && !Role::Coordinator.can_read_control());
        assert!(Role::Operator.can_start_runs() && !Role::Viewer.can_start_runs());
        assert!(Role::Probe.is_probe() && !Role::Operator.is_probe());
        assert!(matches!(
            "admin".parse::<Role>(),
            Err(IdentityError::UnknownRole(_))
        ));
    }

    #[test_case("node-1")]
    #[test_case("cloudvm-1")]
    #[test_case("a")]
    #[test_case("9")]
    #[test_case("node-1.example.com")]
    #[test_case(&"a".repeat(63) ; "max length")]
    fn accepts_names(name: &str) {
        assert_eq!(ProbeName::new(name).unwrap().as_str(), name);
    }

    #[test_case("", "empty")]
    #[test_case(&"a".repeat(64), "at most 63")]
    #[test_case("Node-1", "'N'")]
    #[test_case("node_1", "'_'")]
    #[test_case("node 1", "' '")]
    #[test_case("node/1", "'/'")]
    #[test_case("-node", "start and end")]
    #[test_case("node-", "start and end")]
    #[test_case(".node", "start and end")]
    #[test_case("nöde", "'ö'")]
    fn refuses_names(name: &str, why: &str) {
        let err = ProbeName::new(name).unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
        assert!(err.contains("a-z, 0-9"), "{err}");
    }

    #[test]
    fn reserved_names_are_identities_but_never_probes() {
        for name in RESERVED_NAMES {
            assert!(validate_name(name).is_ok(), "{name} stays a valid identity");
            let err = ProbeName::new(name).unwrap_err();
            assert_eq!(err, IdentityError::ReservedName(name.to_owned()));
            assert!(err.to_string().contains("is reserved"), "{err}");
        }
        assert!(validate_probe_name("ca-1").is_ok());
        assert!(validate_probe_name("admins").is_ok());
    }

    #[test]
    fn spiffe_uri_round_trip() {
        for role in Role::ALL {
            let uri = spiffe_uri(role, "node-1");
            assert_eq!(parse_spiffe_uri(&uri).unwrap(), (role, "node-1".to_owned()));
        }
    }

    #[test_case("spiffe://other/probe/node-1", "trust domain")]
    #[test_case(
        "spiffe://probemesh/probe",
        "expected spiffe://probemesh/<role>/<name>"
    )]
    #[test_case("spiffe://probemesh/admin/node-1", "unknown role")]
    #[test_case("spiffe://probemesh/probe/node/1", "'/'")]
    #[test_case("spiffe://probemesh/probe/", "empty")]
    fn refuses_spiffe_uris(uri: &str, why: &str) {
        let err = parse_spiffe_uri(uri).unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
    }

    #[test]
    fn fingerprint_round_trip() {
        let fp = CertFingerprint::of_der(b"not really a certificate");
        let text = fp.to_string();
        assert!(
            text.starts_with("sha256:") && text.len() == 7 + 64,
            "{text}"
        );
        assert_eq!(text.parse::<CertFingerprint>().unwrap(), fp);
        assert!("sha1:00".parse::<CertFingerprint>().is_err());
        assert!("sha256:zz".parse::<CertFingerprint>().is_err());
    }

    #[test]
    fn identity_from_a_certificate_without_spiffe_id() {
        let rcgen::CertifiedKey { cert, .. } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        assert_eq!(
            Identity::from_cert_der(cert.der()).unwrap_err(),
            IdentityError::NoSpiffeId
        );
        assert!(matches!(
            Identity::from_cert_der(b"garbage"),
            Err(IdentityError::BadCertificate(_))
        ));
    }
}
