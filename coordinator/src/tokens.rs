//! Join tokens for external hosts: one-time, expiring, bound to a name.
//!
//! The coordinator keeps only each token's id, name, expiry, use and the
//! SHA-256 of its secret; the secret itself exists only in the printed token.
//! With `--store DIR` the table is kept in `DIR/tokens.json` so tokens
//! survive a restart (written whole to a temporary file, fsync'd and renamed
//! into place, mode 0600).

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
struct TokenRecord {
    name: String,
    secret_sha256: String,
    expires_unix_ms: i64,
    used: bool,
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
        let probe = ProbeName::new(name).map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_unix_ms = now_unix_ms.saturating_add(ttl_ms);
        let token = JoinToken::generate(probe, ca.pin(), expires_unix_ms / 1_000);
        let record = TokenRecord {
            name: name.to_owned(),
            secret_sha256: token.secret_hash().to_string(),
            expires_unix_ms,
            used: false,
        };
        let mut tokens = self.lock();
        tokens.retain(|_, t| !t.used && t.expires_unix_ms > now_unix_ms);
        if let Some(pending) = tokens.values().find(|t| t.name == name) {
            return Err(Error::NameTaken(format!(
                "a join token for '{name}' is pending (unused, expires in {}); use it, let it expire, \
                 or withdraw it with `meshctl certs revoke {name}`",
                humantime::format_duration(Duration::from_secs(
                    u64::try_from((pending.expires_unix_ms - now_unix_ms) / 1_000).unwrap_or(0)
                ))
            )));
        }
        tokens.insert(token.id.to_string(), record);
        self.persist(&tokens)?;
        Ok(pb::CreateJoinTokenResponse {
            token: token.to_string(),
            expires_unix_ms,
        })
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
            return Err(Error::JoinRefused(
                "this token is unknown to the coordinator (never issued here, or already expired and purged); \
                 create a new one with `meshctl join-token create`"
                    .into(),
            ));
        };
        let secret_ok = record
            .secret_sha256
            .parse::<SecretHash>()
            .is_ok_and(|stored| token.secret_matches(&stored));
        if !secret_ok || record.name != token.name.as_str() {
            return Err(Error::JoinRefused(
                "the token does not match what was issued (altered?); create a new one with `meshctl join-token create`".into(),
            ));
        }
        if record.used {
            return Err(Error::JoinRefused(
                "this token was already used; tokens are one-time: create a new one with `meshctl join-token create`".into(),
            ));
        }
        if record.expires_unix_ms <= now_unix_ms {
            return Err(Error::JoinRefused(format!(
                "this token expired {} ago; create a new one with `meshctl join-token create`",
                humantime::format_duration(Duration::from_secs(
                    u64::try_from((now_unix_ms - record.expires_unix_ms) / 1_000).unwrap_or(0)
                ))
            )));
        }
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
