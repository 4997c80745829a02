//! Join tokens: how an external host proves, once, that an operator let it in.
//!
//! `meshctl join-token create --name NAME` prints one string; `mesh-probe join --token` takes it.
//! The token carries a public id, a 32-byte one-time secret, the CA pin (so the joining host can
//! authenticate the coordinator before it has any certificate), the probe name and an expiry.
//! The coordinator keeps only `id → {name, SHA-256(secret), expiry, used}` ([`SecretHash`]).
//!
//! # Format
//!
//! `pmj1.` followed by the unpadded base64url encoding of
//!
//! | bytes     | field                                                      |
//! |-----------|------------------------------------------------------------|
//! | 4         | id                                                         |
//! | 32        | secret                                                     |
//! | 32        | CA pin (SHA-256 of the CA certificate DER)                 |
//! | 8         | expiry, seconds since the Unix epoch, big-endian `i64`     |
//! | 1..=63    | probe name (ASCII; its length is what is left)             |
//! | 4         | check: first 4 bytes of SHA-256(`pmj1.` ‖ all the above)  |
//!
//! The check only catches copy-paste damage; the security is the secret (compared in constant
//! time against the stored hash) and the pin. 124 characters for a 9-character name, 200 at most.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::identity::{IdentityError, MAX_NAME_LEN, ProbeName};
use crate::pki::CaPin;

/// The prefix of every join token; the digit is the format version.
pub const TOKEN_PREFIX: &str = "pmj1.";
/// Longest lifetime a join token may be created with (meshctl and the
/// coordinator both refuse longer; the shortest is one second).
pub const MAX_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

const ID_LEN: usize = 4;
const SECRET_LEN: usize = 32;
const PIN_LEN: usize = 32;
const EXPIRY_LEN: usize = 8;
const CHECK_LEN: usize = 4;
const FIXED_LEN: usize = ID_LEN + SECRET_LEN + PIN_LEN + EXPIRY_LEN;

/// Why a token string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The string does not start with [`TOKEN_PREFIX`].
    #[error(
        "not a probemesh join token (tokens start with '{TOKEN_PREFIX}'; create one with `meshctl join-token create --name NAME`)"
    )]
    NotAToken,
    /// Bad base64, wrong length or a failed check: copy-paste damage.
    #[error(
        "token is truncated or was altered ({0}); copy it again from `meshctl join-token create`"
    )]
    Damaged(&'static str),
    /// The token's name is not a valid probe name.
    #[error("token names an invalid probe: {0}")]
    InvalidName(IdentityError),
    /// A token id that is not 8 hex digits.
    #[error("invalid token id '{0}' (expected 8 hex digits)")]
    InvalidId(String),
    /// A stored secret hash that is not 64 hex digits.
    #[error("invalid secret hash (expected 64 hex digits)")]
    InvalidSecretHash,
}

/// The public id of a token (4 random bytes, shown as 8 hex digits); the coordinator's key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId([u8; ID_LEN]);

impl TokenId {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

impl FromStr for TokenId {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; ID_LEN];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| TokenError::InvalidId(s.to_owned()))?;
        Ok(Self(bytes))
    }
}

/// The one-time secret of a token. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret([u8; SECRET_LEN]);

impl TokenSecret {
    /// SHA-256 of the secret: what the coordinator stores.
    pub fn hash(&self) -> SecretHash {
        SecretHash(Sha256::digest(self.0).into())
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// SHA-256 of a token secret, as stored by the coordinator; hex in `Display`/`FromStr`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// Wraps stored digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Compares two hashes in constant time.
    pub fn ct_eq(&self, other: &SecretHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Display for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({self})")
    }
}

impl FromStr for SecretHash {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| TokenError::InvalidSecretHash)?;
        Ok(Self(bytes))
    }
}

/// A join token. `Display` prints the one copy-pasteable string (see the module docs for the
/// format); `FromStr` parses it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The probe name the joining host will get.
    pub name: ProbeName,
    /// Public id, the coordinator's lookup key.
    pub id: TokenId,
    /// The one-time secret.
    pub secret: TokenSecret,
    /// Pin of the CA the coordinator's certificate must chain to.
    pub ca_pin: CaPin,
    /// Expiry, seconds since the Unix epoch (coordinator clock).
    pub expires_unix_s: i64,
}

impl JoinToken {
    /// A new token with a random id and secret.
    pub fn generate(name: ProbeName, ca_pin: CaPin, expires_unix_s: i64) -> Self {
        let mut rng = rand::rng();
        let mut id = [0u8; ID_LEN];
        let mut secret = [0u8; SECRET_LEN];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        Self {
            name,
            id: TokenId(id),
            secret: TokenSecret(secret),
            ca_pin,
            expires_unix_s,
        }
    }

    /// SHA-256 of the secret: what the coordinator stores instead of the token.
    pub fn secret_hash(&self) -> SecretHash {
        self.secret.hash()
    }

    /// Whether this token's secret hashes to `stored` (constant-time comparison).
    pub fn secret_matches(&self, stored: &SecretHash) -> bool {
        self.secret_hash().ct_eq(stored)
    }

    /// Whether the token has expired at `now_unix_s` (seconds since the Unix epoch).
    pub fn is_expired(&self, now_unix_s: i64) -> bool {
        now_unix_s >= self.expires_unix_s
    }

    fn body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(FIXED_LEN + self.name.as_str().len() + CHECK_LEN);
        body.extend_from_slice(&self.id.0);
        body.extend_from_slice(&self.secret.0);
        body.extend_from_slice(self.ca_pin.as_bytes());
        body.extend_from_slice(&self.expires_unix_s.to_be_bytes());
        body.extend_from_slice(self.name.as_str().as_bytes());
        body
    }
}

fn array<const N: usize>(bytes: &[u8]) -> Result<[u8; N], TokenError> {
    bytes
        .try_into()
        .map_err(|_| TokenError::Damaged("bad layout"))
}

fn check(body: &[u8]) -> [u8; CHECK_LEN] {
    let digest = Sha256::new()
        .chain_update(TOKEN_PREFIX.as_bytes())
        .chain_update(body)
        .finalize();
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(&digest[..CHECK_LEN]);
    out
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = self.body();
        let sum = check(&bytes);
        bytes.extend_from_slice(&sum);
        write!(f, "{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let encoded = s
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::NotAToken)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| TokenError::Damaged("not base64url"))?;
        if bytes.len() < FIXED_LEN + 1 + CHECK_LEN {
            return Err(TokenError::Damaged("too short"));
        }
        if bytes.len() > FIXED_LEN + MAX_NAME_LEN + CHECK_LEN {
            return Err(TokenError::Damaged("too long"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECK_LEN);
        if check(body) != sum {
            return Err(TokenError::Damaged("check digits do not match"));
        }
        let (id, rest) = body.split_at(ID_LEN);
        let (secret, rest) = rest.split_at(SECRET_LEN);
        let (pin, rest) = rest.split_at(PIN_LEN);
        let (expiry, name) = rest.split_at(EXPIRY_LEN);
        let name =
            std::str::from_utf8(name).map_err(|_| TokenError::Damaged("name is not text"))?;
        let name = ProbeName::new(name).map_err(TokenError::InvalidName)?;
        Ok(Self {
            name,
            id: TokenId(array(id)?),
            secret: TokenSecret(array(secret)?),
            ca_pin: CaPin::from_bytes(array(pin)?),
            expires_unix_s: i64::from_be_bytes(array(expiry)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn token(name: &str) -> JoinToken {
        JoinToken::generate(
            ProbeName::new(name).unwrap(),
            CaPin::of_der(b"ca"),
            1_900_000_000,
        )
    }

    #[test_case("a")]
    #[test_case("cloudvm-1")]
    #[test_case(&"x".repeat(63) ; "longest name")]
    fn round_trips(name: &str) {
        let t = token(name);
        let text = t.to_string();
        assert!(text.starts_with("pmj1."), "{text}");
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "copy-pasteable: {text}"
        );
        assert_eq!(text.parse::<JoinToken>().unwrap(), t);
        assert_eq!(format!("  {text}\n").parse::<JoinToken>().unwrap(), t);
    }

    #[test]
    fn refuses_other_strings() {
        for s in ["", "hello", "pmj2.AAAA", "PMJ1.abc"] {
            assert_eq!(s.parse::<JoinToken>(), Err(TokenError::NotAToken), "{s}");
        }
        let msg = TokenError::NotAToken.to_string();
        assert!(msg.contains("not a probemesh join token"), "{msg}");
    }

    #[test]
    fn detects_truncation_and_tampering() {
        let text = token("cloudvm-1").to_string();
        let truncated = &text[..text.len() - 3];
        let err = truncated.parse::<JoinToken>().unwrap_err();
        assert!(matches!(err, TokenError::Damaged(_)), "{err}");
        assert!(
            err.to_string()
                .contains("token is truncated or was altered"),
            "{err}"
        );

        for i in TOKEN_PREFIX.len()..text.len() {
            let mut chars: Vec<char> = text.chars().collect();
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let altered: String = chars.into_iter().collect();
            assert!(
                matches!(altered.parse::<JoinToken>(), Err(TokenError::Damaged(_))),
                "altering char {i} went unnoticed"
            );
        }
        let err = "pmj1.!!!!".parse::<JoinToken>().unwrap_err();
        assert!(matches!(err, TokenError::Damaged("not base64url")), "{err}");
    }

    #[test]
    fn secret_hash_and_expiry() {
        let t = token("cloudvm-1");
        let stored = t.secret_hash();
        assert!(t.secret_matches(&stored));
        assert!(!token("cloudvm-1").secret_matches(&stored));
        assert_eq!(stored.to_string().parse::<SecretHash>().unwrap(), stored);
        assert!(!format!("{t:?}").contains(&hex::encode(t.secret.0)));
        assert!(!t.is_expired(1_899_999_999));
        assert!(t.is_expired(1_900_000_000));
        assert_eq!(t.id.to_string().parse::<TokenId>().unwrap(), t.id);
        assert_eq!(t.id.to_string().len(), 8);
    }
}
