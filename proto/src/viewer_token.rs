//! Viewer tokens: how a browser reads the coordinators' web view without a
//! client certificate.
//!
//! `meshctl web-token` asks a coordinator (over mTLS, as an operator or a
//! viewer) for one; the coordinator mints it for the caller's certificate
//! and any coordinator of the mesh checks it: the MAC key is derived from
//! the CA key they all hold ([`CertAuthority::derive_secret`]), so nothing
//! is stored or shared. A token only ever reads, whatever its holder's
//! role. It names the certificate it was issued for (name, serial, issue
//! time), so revoking that certificate withdraws its tokens too, and it
//! never outlives that certificate.
//!
//! # Format
//!
//! `pmv1.` followed by the unpadded base64url encoding of
//!
//! | bytes   | field                                                        |
//! |---------|--------------------------------------------------------------|
//! | 8       | expiry, seconds since the Unix epoch, big-endian `i64`       |
//! | 8       | the certificate's `notBefore`, same encoding                 |
//! | 1       | length of the name, 1..=63                                   |
//! | n       | the certificate's name (ASCII)                               |
//! | s       | its serial, lowercase hex ASCII, 1..=40 (what is left)       |
//! | 32      | HMAC-SHA256 under the viewer key of `pmv1.` ‖ all the above |
//!
//! 209 characters at most.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use crate::identity::{MAX_NAME_LEN, validate_name};
use crate::pki::CertAuthority;

/// The prefix of every viewer token; the digit is the format version.
pub const VIEWER_TOKEN_PREFIX: &str = "pmv1.";
/// Lifetime when the request names none.
pub const DEFAULT_VIEWER_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// Longest lifetime a viewer token may be issued with.
pub const MAX_VIEWER_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);
/// Longest string even looked at as a viewer token (a bound before any work).
pub const MAX_VIEWER_TOKEN_LEN: usize = 256;

const MAC_LEN: usize = 32;
const MAX_SERIAL_LEN: usize = 40;
/// The label the MAC key is derived under.
const KEY_LABEL: &str = "probemesh viewer token v1";

/// What a viewer token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerClaims {
    /// The name of the certificate it was issued for.
    pub name: String,
    /// That certificate's serial, lowercase hex.
    pub serial: String,
    /// That certificate's `notBefore`, Unix seconds (revocation by name
    /// covers certificates issued up to the revocation).
    pub cert_not_before_unix: i64,
    /// When the token stops being accepted, Unix seconds.
    pub expires_unix: i64,
}

/// Why a string is not an acceptable viewer token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewerTokenError {
    /// Not a token at all, or damaged.
    #[error("not a viewer token (expected pmv1.…, as `meshctl web-token` prints)")]
    Malformed,
    /// Well formed, but not issued by this mesh's CA (or altered).
    #[error(
        "the token was not issued by this mesh (or was altered); get one with `meshctl web-token`"
    )]
    Forged,
    /// Issued here, but past its expiry.
    #[error("the token expired {ago_s}s ago; get a new one with `meshctl web-token`")]
    Expired {
        /// Seconds since it expired.
        ago_s: i64,
    },
}

/// The key that mints and checks viewer tokens.
pub struct ViewerKey(hmac::Key);

impl fmt::Debug for ViewerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ViewerKey(..)")
    }
}

impl ViewerKey {
    /// The mesh's key, derived from its CA key.
    pub fn derive(ca: &CertAuthority) -> Self {
        Self(hmac::Key::new(
            hmac::HMAC_SHA256,
            &ca.derive_secret(KEY_LABEL),
        ))
    }

    /// A token carrying `claims`. The name and serial must be a
    /// certificate's (a valid name, at most 40 hex digits): they come from
    /// a verified certificate, never from a request.
    pub fn mint(&self, claims: &ViewerClaims) -> Result<String, ViewerTokenError> {
        if validate_name(&claims.name).is_err()
            || !valid_serial(&claims.serial)
            || claims.name.len() > MAX_NAME_LEN
        {
            return Err(ViewerTokenError::Malformed);
        }
        let mut body = Vec::with_capacity(17 + claims.name.len() + claims.serial.len() + MAC_LEN);
        body.extend_from_slice(&claims.expires_unix.to_be_bytes());
        body.extend_from_slice(&claims.cert_not_before_unix.to_be_bytes());
        body.push(u8::try_from(claims.name.len()).map_err(|_| ViewerTokenError::Malformed)?);
        body.extend_from_slice(claims.name.as_bytes());
        body.extend_from_slice(claims.serial.as_bytes());
        let tag = self.tag(&body);
        body.extend_from_slice(tag.as_ref());
        Ok(format!(
            "{VIEWER_TOKEN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(body)
        ))
    }

    /// The claims of `token` if this mesh issued it, unaltered, and it has
    /// not expired at `now_unix`. Revocation is the caller's check.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<ViewerClaims, ViewerTokenError> {
        if token.len() > MAX_VIEWER_TOKEN_LEN {
            return Err(ViewerTokenError::Malformed);
        }
        let encoded = token
            .strip_prefix(VIEWER_TOKEN_PREFIX)
            .ok_or(ViewerTokenError::Malformed)?;
        let raw = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| ViewerTokenError::Malformed)?;
        let Some(split) = raw.len().checked_sub(MAC_LEN) else {
            return Err(ViewerTokenError::Malformed);
        };
        let (body, tag) = raw.split_at(split);
        // The MAC first: nothing of an unauthenticated body is believed.
        hmac::verify(&self.0, &signed(body), tag).map_err(|_| ViewerTokenError::Forged)?;
        let claims = parse_body(body).ok_or(ViewerTokenError::Malformed)?;
        if claims.expires_unix <= now_unix {
            return Err(ViewerTokenError::Expired {
                ago_s: now_unix - claims.expires_unix,
            });
        }
        Ok(claims)
    }

    fn tag(&self, body: &[u8]) -> hmac::Tag {
        hmac::sign(&self.0, &signed(body))
    }
}

/// What the MAC covers: the prefix (the format version) and the body.
fn signed(body: &[u8]) -> Vec<u8> {
    let mut signed = Vec::with_capacity(VIEWER_TOKEN_PREFIX.len() + body.len());
    signed.extend_from_slice(VIEWER_TOKEN_PREFIX.as_bytes());
    signed.extend_from_slice(body);
    signed
}

fn parse_body(body: &[u8]) -> Option<ViewerClaims> {
    let expires_unix = i64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    let cert_not_before_unix = i64::from_be_bytes(body.get(8..16)?.try_into().ok()?);
    let name_len = usize::from(*body.get(16)?);
    let name = std::str::from_utf8(body.get(17..17 + name_len)?).ok()?;
    let serial = std::str::from_utf8(body.get(17 + name_len..)?).ok()?;
    (validate_name(name).is_ok() && valid_serial(serial)).then(|| ViewerClaims {
        name: name.to_owned(),
        serial: serial.to_owned(),
        cert_not_before_unix,
        expires_unix,
    })
}

fn valid_serial(serial: &str) -> bool {
    (1..=MAX_SERIAL_LEN).contains(&serial.len())
        && serial
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Validity;

    fn claims() -> ViewerClaims {
        ViewerClaims {
            name: "alice".into(),
            serial: "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567".into(),
            cert_not_before_unix: 1_700_000_000,
            expires_unix: 2_000_000_000,
        }
    }

    fn ca() -> CertAuthority {
        CertAuthority::generate(Validity::ca(time::OffsetDateTime::now_utc())).expect("CA")
    }

    #[test]
    fn a_minted_token_verifies_with_its_claims_and_is_bounded() {
        let key = ViewerKey::derive(&ca());
        let token = key.mint(&claims()).expect("mint");
        assert!(token.starts_with(VIEWER_TOKEN_PREFIX));
        assert!(token.len() <= MAX_VIEWER_TOKEN_LEN, "{} chars", token.len());
        assert_eq!(key.verify(&token, 1_900_000_000), Ok(claims()));
    }

    #[test]
    fn the_longest_name_and_serial_still_fit_the_bound() {
        let key = ViewerKey::derive(&ca());
        let long = ViewerClaims {
            name: "a".repeat(MAX_NAME_LEN),
            ..claims()
        };
        let token = key.mint(&long).expect("mint");
        assert!(token.len() <= MAX_VIEWER_TOKEN_LEN, "{} chars", token.len());
        assert_eq!(key.verify(&token, 0).map(|c| c.name), Ok(long.name));
    }

    #[test]
    fn the_same_ca_key_checks_tokens_another_coordinator_minted() {
        let ca = ca();
        let token = ViewerKey::derive(&ca).mint(&claims()).expect("mint");
        assert!(ViewerKey::derive(&ca).verify(&token, 0).is_ok());
        assert_eq!(
            ViewerKey::derive(&self::ca()).verify(&token, 0),
            Err(ViewerTokenError::Forged)
        );
    }

    #[test]
    fn an_expired_token_is_refused_with_how_long_ago() {
        let key = ViewerKey::derive(&ca());
        let token = key.mint(&claims()).expect("mint");
        assert_eq!(
            key.verify(&token, 2_000_000_030),
            Err(ViewerTokenError::Expired { ago_s: 30 })
        );
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let key = ViewerKey::derive(&ca());
        let token = key.mint(&claims()).expect("mint");
        let raw = URL_SAFE_NO_PAD
            .decode(&token[VIEWER_TOKEN_PREFIX.len()..])
            .expect("base64");
        for i in 0..raw.len() {
            let mut altered = raw.clone();
            altered[i] ^= 0x01;
            let forged = format!("{VIEWER_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(&altered));
            assert!(
                key.verify(&forged, 0).is_err(),
                "byte {i} altered was accepted"
            );
        }
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let key = ViewerKey::derive(&ca());
        for input in [
            "",
            "pmv1.",
            "pmv1.!!!",
            "pmj1.AAAA",
            "Bearer pmv1.AAAA",
            &"pmv1.".repeat(100),
        ] {
            assert!(key.verify(input, 0).is_err(), "{input:?}");
        }
    }

    #[test]
    fn claims_that_are_no_certificate_are_not_minted() {
        let key = ViewerKey::derive(&ca());
        for bad in [
            ViewerClaims {
                name: "Not A Name".into(),
                ..claims()
            },
            ViewerClaims {
                serial: "XYZ".into(),
                ..claims()
            },
            ViewerClaims {
                serial: String::new(),
                ..claims()
            },
        ] {
            assert_eq!(key.mint(&bad), Err(ViewerTokenError::Malformed));
        }
    }
}
