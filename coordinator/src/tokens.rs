//! Join tokens for external hosts: one-time, expiring, bound to a name.
//!
//! The coordinator keeps only each token's id, name, expiry, use and the
//! SHA-256 of its secret; the secret itself exists only in the printed token.
//! With `--store DIR` the table is kept in `DIR/tokens.json` so tokens
//! survive a restart (written whole to a temporary file, fsync'd and renamed
//! into place, mode 0600). What a token is and when it may be redeemed
//! ([`TokenRecord`], [`Minted`]) is decided here for every store; the etcd
//! store keeps the same records under its keys.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use probemesh_proto::identity::ProbeName;
use probemesh_proto::pb;
use probemesh_proto::pki::CertAuthority;
use probemesh_proto::token::{JoinToken, SecretHash};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What is remembered of one token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The probe name it was issued for.
    pub name: String,
    /// SHA-256 of its secret, hex.
    pub secret_sha256: String,
    /// When it expires (coordinator clock).
    pub expires_unix_ms: i64,
    /// Whether it was redeemed.
    pub used: bool,
}

impl TokenRecord {
    /// Unused and unexpired at `now_unix_ms`.
    pub fn pending(&self, now_unix_ms: i64) -> bool {
        !self.used && self.expires_unix_ms > now_unix_ms
    }

    /// Why a token for the same name cannot be created while this one is pending.
    pub fn pending_refusal(&self, now_unix_ms: i64) -> Error {
        let name = &self.name;
        Error::NameTaken(format!(
            "a join token for '{name}' is pending (unused, expires in {}); use it, let it expire, \
             or withdraw it with `meshctl certs revoke {name}`",
            humantime::format_duration(Duration::from_secs(
                u64::try_from((self.expires_unix_ms - now_unix_ms) / 1_000).unwrap_or(0)
            ))
        ))
    }

    /// Whether `token` may be spent against this record at `now_unix_ms`.
    pub fn check_redeem(&self, token: &JoinToken, now_unix_ms: i64) -> Result<()> {
        let secret_ok = self
            .secret_sha256
            .parse::<SecretHash>()
            .is_ok_and(|stored| token.secret_matches(&stored));
        if !secret_ok || self.name != token.name.as_str() {
            return Err(Error::JoinRefused(
                "the token does not match what was issued (altered?); create a new one with `meshctl join-token create`".into(),
            ));
        }
        if self.used {
            return Err(already_used());
        }
        if self.expires_unix_ms <= now_unix_ms {
            return Err(Error::JoinRefused(format!(
                "this token expired {} ago; create a new one with `meshctl join-token create`",
                humantime::format_duration(Duration::from_secs(
                    u64::try_from((now_unix_ms - self.expires_unix_ms) / 1_000).unwrap_or(0)
                ))
            )));
        }
        Ok(())
    }
}

/// A new token: its id, what is stored of it, and what its creator is told.
#[derive(Debug)]
pub struct Minted {
    /// The token id (the store's key).
    pub id: String,
    /// What is stored.
    pub record: TokenRecord,
    /// The reply, holding the only copy of the secret.
    pub response: pb::CreateJoinTokenResponse,
}

impl Minted {
    /// A token for probe `name`, valid for `ttl` from `now_unix_ms`.
    pub fn new(name: &str, ttl: Duration, ca: &CertAuthority, now_unix_ms: i64) -> Result<Self> {
        let probe = ProbeName::new(name).map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_unix_ms = now_unix_ms.saturating_add(ttl_ms);
        let token = JoinToken::generate(probe, ca.pin(), expires_unix_ms / 1_000);
        Ok(Self {
            id: token.id.to_string(),
            record: TokenRecord {
                name: name.to_owned(),
                secret_sha256: token.secret_hash().to_string(),
                expires_unix_ms,
                used: false,
            },
            response: pb::CreateJoinTokenResponse {
                token: token.to_string(),
                expires_unix_ms,
            },
        })
    }
}

/// A token that is not (or no longer) stored.
pub fn unknown_token() -> Error {
    Error::JoinRefused(
        "this token is unknown to the coordinator (never issued here, or already expired and purged); \
         create a new one with `meshctl join-token create`"
            .into(),
    )
}

/// A token spent before.
pub fn already_used() -> Error {
    Error::JoinRefused(
        "this token was already used; tokens are one-time: create a new one with `meshctl join-token create`".into(),
    )
}

/// The token table.
#[derive(Debug, Default)]
pub struct TokenStore {
    tokens: Mutex<HashMap<String, TokenRecord>>,
    file: Option<PathBuf>,
}

impl TokenStore {
    /// A table kept in memory only.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// A table persisted in `dir/tokens.json`.
    pub fn open(dir: PathBuf) -> Result<Self> {
        let file = dir.join("tokens.json");
        let tokens = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Store {
                op: "parse token store",
                path: file.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(source) => {
                return Err(Error::Store {
                    op: "read token store",
                    path: file,
                    source,
                });
            }
        };
        Ok(Self {
            tokens: Mutex::new(tokens),
            file: Some(file),
        })
    }

    /// Creates a token for probe `name`, valid for `ttl` from `now_unix_ms`.
    /// Refuses a name with a pending (unused, unexpired) token.
    pub fn create(
        &self,
        name: &str,
        ttl: Duration,
        ca: &CertAuthority,
        now_unix_ms: i64,
    ) -> Result<pb::CreateJoinTokenResponse> {
        let minted = Minted::new(name, ttl, ca, now_unix_ms)?;
        let mut tokens = self.lock();
        tokens.retain(|_, t| t.pending(now_unix_ms));
        if let Some(pending) = tokens.values().find(|t| t.name == name) {
            return Err(pending.pending_refusal(now_unix_ms));
        }
        tokens.insert(minted.id, minted.record);
        self.persist(&tokens)?;
        Ok(minted.response)
    }

    /// Withdraws every unused token for `name` (its certificate is being
    /// revoked); returns how many there were.
    pub fn withdraw(&self, name: &str) -> Result<u32> {
        let mut tokens = self.lock();
        let before = tokens.len();
        tokens.retain(|_, t| t.used || t.name != name);
        let withdrawn = before - tokens.len();
        if withdrawn > 0 {
            self.persist(&tokens)?;
        }
        Ok(u32::try_from(withdrawn).unwrap_or(u32::MAX))
    }

    /// Spends `token` if it is known, unused, unexpired and unaltered;
    /// returns the probe name it was issued for.
    pub fn redeem(&self, token: &JoinToken, now_unix_ms: i64) -> Result<String> {
        let mut tokens = self.lock();
        let Some(record) = tokens.get_mut(&token.id.to_string()) else {
            return Err(unknown_token());
        };
        record.check_redeem(token, now_unix_ms)?;
        record.used = true;
        let name = record.name.clone();
        self.persist(&tokens)?;
        Ok(name)
    }

    fn persist(&self, tokens: &HashMap<String, TokenRecord>) -> Result<()> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(tokens).map_err(|e| Error::Store {
            op: "encode token store",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        probemesh_proto::pki::write_atomic(path, &bytes, true).map_err(|e| Error::Store {
            op: "write token store",
            path: path.clone(),
            source: std::io::Error::other(e),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TokenRecord>> {
        self.tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
