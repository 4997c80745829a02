//! Fuzz-style property tests of what the proto crate parses from outside:
//! join tokens, certificate identities (any DER, and real certificates with
//! odd names and SANs made with rcgen) and the CSR a joining host sends.
//! Each runs for `MESH_FUZZ_SECONDS` (probemesh-budget); properties: never a
//! panic, errors are values, what parses prints back to itself.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use probemesh_budget::run_for;
use probemesh_proto::identity::{
    Identity, IdentityError, ProbeName, Role, SPIFFE_PREFIX, parse_spiffe_uri,
};
use probemesh_proto::pki::{CaPin, CertAuthority, Validity, generate_csr};
use probemesh_proto::token::{JoinToken, TOKEN_PREFIX, TokenError};
use proptest::prelude::*;
use rcgen::string::Ia5String;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("a valid instant")
}

/// A valid probe name: what `meshctl join-token create --name` accepts.
fn probe_name() -> impl Strategy<Value = ProbeName> {
    "[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?"
        .prop_map(|s| ProbeName::new(&s).expect("the pattern is a valid name"))
}

/// Replaces, inserts or removes one character of `text` at `at`.
fn mutate(text: &str, at: usize, op: u8, c: char) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let i = at % (chars.len() + 1);
    match op % 3 {
        0 if i < chars.len() => chars[i] = c,
        1 => chars.insert(i, c),
        _ => chars.truncate(i),
    }
    chars.into_iter().collect()
}

#[test]
fn join_token_text_never_panics_and_round_trips() {
    let text = prop_oneof![
        any::<String>(),
        "\\PC{0,250}",
        "pmj1\\.[A-Za-z0-9_=+/-]{0,220}",
        "[ \t\n]{0,3}pmj1\\.[A-Za-z0-9_-]{90,200}[ \t\n]{0,3}",
    ];
    run_for("join token text", text, |text| {
        if let Ok(token) = text.parse::<JoinToken>() {
            let printed = token.to_string();
            prop_assert_eq!(printed.parse::<JoinToken>(), Ok(token));
        }
        Ok(())
    });
}

#[test]
fn join_tokens_altered_by_one_character_are_refused_not_panicked_on() {
    let case = (
        probe_name(),
        any::<[u8; 8]>(),
        any::<i64>(),
        any::<usize>(),
        any::<u8>(),
        any::<char>(),
    );
    run_for(
        "join token altered",
        case,
        |(name, pin, expiry, at, op, c)| {
            let token = JoinToken::generate(name, CaPin::of_der(&pin), expiry);
            let text = token.to_string();
            prop_assert_eq!(text.parse::<JoinToken>(), Ok(token.clone()));
            let altered = mutate(&text, at, op, c);
            match altered.parse::<JoinToken>() {
                // Only changes the parser ignores (surrounding whitespace)
                // or that give back the same bytes may pass.
                Ok(parsed) => prop_assert_eq!(parsed, token, "{} was accepted", altered),
                Err(TokenError::NotAToken) => {
                    prop_assert!(!altered.trim().starts_with(TOKEN_PREFIX))
                }
                Err(TokenError::Damaged(_)) => {}
                // A bad name behind good check digits: the check missed an
                // alteration.
                Err(other) => prop_assert!(false, "{} gave {}", altered, other),
            }
            Ok(())
        },
    );
}

#[test]
fn certificate_identity_of_arbitrary_der_is_a_value() {
    let der = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        // A DER SEQUENCE header in front of noise, so x509-parser gets past
        // its first byte.
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(|mut v| {
            let len = u8::try_from(v.len().min(127)).unwrap_or(127);
            v.splice(0..0, [0x30, len]);
            v
        }),
    ];
    run_for("certificate identity, arbitrary DER", der, |der| {
        if let Ok(identity) = Identity::from_cert_der(&der) {
            prop_assert_eq!(
                parse_spiffe_uri(&identity.spiffe_uri()),
                Ok((identity.role, identity.name.clone()))
            );
        }
        Ok(())
    });
}

/// A SAN a certificate may carry; URIs are often almost-SPIFFE.
#[derive(Debug, Clone)]
enum San {
    Uri(String),
    Dns(String),
    Ip([u8; 4]),
}

fn san() -> impl Strategy<Value = San> {
    let role = prop_oneof![
        Just("probe"),
        Just("operator"),
        Just("viewer"),
        Just("coordinator"),
        Just("admin"),
        Just(""),
        Just("Probe"),
    ];
    let name = prop_oneof!["[a-z0-9.-]{0,70}", "[ -~]{0,20}"];
    let spiffe = (role, name, "/?[ -~]{0,8}").prop_map(|(role, name, tail)| {
        let tail = if tail.starts_with('/') {
            tail
        } else {
            String::new()
        };
        format!("{SPIFFE_PREFIX}{role}/{name}{tail}")
    });
    prop_oneof![
        3 => spiffe.prop_map(San::Uri),
        1 => "(spiffe://|https://)[ -~]{0,40}".prop_map(San::Uri),
        1 => "[a-z0-9.*-]{1,30}".prop_map(San::Dns),
        1 => any::<[u8; 4]>().prop_map(San::Ip),
    ]
}

fn key() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(|| KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key"))
}

/// A self-signed certificate with common name `cn` and `sans`, or `None`
/// when rcgen refuses them (non-ASCII in an IA5 string).
fn certificate(cn: &str, sans: &[San]) -> Option<Vec<u8>> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    for san in sans {
        params.subject_alt_names.push(match san {
            San::Uri(uri) => SanType::URI(Ia5String::try_from(uri.as_str()).ok()?),
            San::Dns(name) => SanType::DnsName(Ia5String::try_from(name.as_str()).ok()?),
            San::Ip(octets) => SanType::IpAddress((*octets).into()),
        });
    }
    params
        .self_signed(key())
        .ok()
        .map(|cert| cert.der().to_vec())
}

#[test]
fn certificate_identity_of_real_certificates_with_odd_names() {
    let case = (
        "\\PC{0,40}",
        proptest::collection::vec(san(), 0..4),
        any::<usize>(),
        any::<u8>(),
    );
    run_for(
        "certificate identity, rcgen certificates",
        case,
        |(cn, sans, at, byte)| {
            let Some(der) = certificate(&cn, &sans) else {
                return Err(TestCaseError::reject("rcgen refused the SANs"));
            };
            let spiffe: Vec<&str> = sans
                .iter()
                .filter_map(|s| match s {
                    San::Uri(uri) if uri.starts_with(SPIFFE_PREFIX) => Some(uri.as_str()),
                    _ => None,
                })
                .collect();
            match (Identity::from_cert_der(&der), spiffe.as_slice()) {
                (Ok(identity), [uri]) => prop_assert_eq!(identity.spiffe_uri(), *uri),
                (Ok(identity), _) => prop_assert!(false, "{identity:?} from {spiffe:?}"),
                (Err(IdentityError::NoSpiffeId), []) => {}
                (Err(IdentityError::SeveralSpiffeIds { .. }), [_, _, ..]) => {}
                (Err(e), [uri]) => prop_assert!(parse_spiffe_uri(uri).is_err(), "{e}"),
                (Err(e), _) => prop_assert!(false, "{e} for {spiffe:?}"),
            }
            let mut damaged = der.clone();
            let i = at % damaged.len();
            damaged[i] ^= byte.max(1);
            let _ = Identity::from_cert_der(&damaged);
            let _ = Identity::from_cert_der(&der[..i]);
            Ok(())
        },
    );
}

fn authority() -> &'static CertAuthority {
    static CA: OnceLock<CertAuthority> = OnceLock::new();
    CA.get_or_init(|| CertAuthority::generate(Validity::ca(now())).expect("a CA"))
}

fn csr_der() -> &'static [u8] {
    static CSR: OnceLock<Vec<u8>> = OnceLock::new();
    CSR.get_or_init(|| {
        let (pem, _key) = generate_csr("joiner").expect("a CSR");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body).expect("PEM body")
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        STANDARD.encode(der)
    )
}

#[test]
fn csr_pem_is_signed_as_the_ca_decides_or_refused() {
    let csr = prop_oneof![
        "\\PC{0,300}",
        proptest::collection::vec(any::<u8>(), 0..400)
            .prop_map(|der| pem("CERTIFICATE REQUEST", &der)),
        (any::<usize>(), any::<u8>(), any::<bool>()).prop_map(|(at, byte, cut)| {
            let mut der = csr_der().to_vec();
            let i = at % der.len();
            if cut {
                der.truncate(i);
            } else {
                der[i] ^= byte.max(1);
            }
            pem("CERTIFICATE REQUEST", &der)
        }),
        Just(pem("CERTIFICATE REQUEST", csr_der())),
    ];
    run_for("join CSR (PEM)", csr, |csr| {
        match authority().sign_csr(&csr, "joiner", Role::Probe, Validity::leaf(now())) {
            Ok(cert) => {
                let body: String = cert.lines().filter(|l| !l.starts_with("-----")).collect();
                let der = STANDARD.decode(body).expect("the CA's own PEM");
                let identity = Identity::from_cert_der(&der).expect("the CA's own certificate");
                prop_assert_eq!(
                    (identity.name.as_str(), identity.role),
                    ("joiner", Role::Probe)
                );
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        Ok(())
    });
}
