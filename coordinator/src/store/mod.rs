//! Where the coordinator's durable state lives: runs, join tokens,
//! revocations and the certificates it signed, behind one interface,
//! [`StateStore`], with two implementations:
//!
//! - [`local::LocalStore`]: the `--store DIR` files (`runs.pb`,
//!   `tokens.json`, `revoked.json`, `issued.jsonl`), or memory only without
//!   `--store`; for one coordinator;
//! - [`etcd::EtcdStore`]: etcd (`--etcd`), shared by every coordinator of
//!   the mesh.
//!
//! The rest of the coordinator holds an `Arc<dyn StateStore>` and does not
//! know which it has. A write that cannot be made is an error to the
//! caller, never a silent loss. The revocation list every call checks is
//! not read from here on each call: it is kept in memory
//! ([`crate::revocation::Revocations`]), loaded at start and fed by
//! [`StateStore::follow_revocations`] when other coordinators revoke.

pub mod etcd;
pub mod local;

use std::time::Duration;

use probemesh_proto::identity::Identity;
use probemesh_proto::pb;
use probemesh_proto::pki::CertAuthority;
use probemesh_proto::token::JoinToken;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;

use crate::bounds::Page;
use crate::error::{Error, Result};
use crate::revocation::Revocation;

/// One certificate this coordinator signed (join, node enrollment, renewal
/// over the stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    /// Serial, lowercase hex (what `meshctl certs revoke` takes).
    pub serial: String,
    /// The certificate's name.
    pub name: String,
    /// Its role (`probe`, `operator`, ...).
    pub role: String,
    /// `notAfter`, seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// When it was signed, milliseconds since the Unix epoch (coordinator clock).
    pub issued_unix_ms: i64,
    /// What it was signed for.
    pub by: Issuance,
}

/// How a certificate came to be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Issuance {
    /// An external host redeemed a join token.
    Join,
    /// A node probe showed its ServiceAccount token.
    NodeEnrollment,
    /// A probe renewed its certificate over its stream.
    Renewal,
}

impl IssuedCertificate {
    /// The record of `certificate_pem`, signed at `issued_unix_ms` for `by`.
    pub fn of_pem(certificate_pem: &str, issued_unix_ms: i64, by: Issuance) -> Result<Self> {
        let der = CertificateDer::from_pem_slice(certificate_pem.as_bytes()).map_err(|e| {
            Error::InvalidRequest(format!("the signed certificate is not PEM: {e}"))
        })?;
        let id = Identity::from_cert_der(&der).map_err(|e| {
            Error::InvalidRequest(format!("the signed certificate has no identity: {e}"))
        })?;
        Ok(Self {
            serial: id.serial,
            name: id.name,
            role: id.role.as_str().to_owned(),
            not_after_unix: id.not_after_unix,
            issued_unix_ms,
            by,
        })
    }
}

/// The coordinator's durable state. Every method that writes returns only
/// once the write is durable (synced to disk, or committed by etcd), and an
/// error when it could not be made.
#[tonic::async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Where the state lives, for logs and messages.
    fn describe(&self) -> String;

    /// Records a run, superseding an earlier record of the same run id.
    async fn write_run(&self, record: pb::RunRecord) -> Result<()>;

    /// Keeps `record` in this coordinator's memory only: what it knows of a
    /// run whose record could not be written.
    fn note_run(&self, record: pb::RunRecord);

    /// One run by id, or by a unique prefix of its id.
    async fn run(&self, run_id: &str) -> Result<Option<pb::RunRecord>>;

    /// The page of the history after run `token` (from the newest when
    /// empty), newest first, at most `size` runs.
    async fn runs_page(&self, token: &str, size: usize) -> Result<Page<pb::RunRecord>>;

    /// Creates a join token for probe `name`, valid for `ttl` from
    /// `now_unix_ms`; refuses a name with a pending (unused, unexpired) token.
    async fn create_token(
        &self,
        name: &str,
        ttl: Duration,
        ca: &CertAuthority,
        now_unix_ms: i64,
    ) -> Result<pb::CreateJoinTokenResponse>;

    /// Withdraws every unused token for `name`; returns how many there were.
    async fn withdraw_tokens(&self, name: &str) -> Result<u32>;

    /// Spends `token` (exactly once, whichever coordinator is asked) if it
    /// is known, unused, unexpired and unaltered; returns its probe name.
    async fn redeem_token(&self, token: &JoinToken, now_unix_ms: i64) -> Result<String>;

    /// Every stored revocation.
    async fn revocations(&self) -> Result<Vec<Revocation>>;

    /// Stores `revocation`.
    async fn add_revocation(&self, revocation: &Revocation) -> Result<()>;

    /// Revocations stored by others from now on (and, after a reconnect,
    /// again every stored one), for a store shared by several coordinators;
    /// `None` when nobody else writes. Call once.
    fn follow_revocations(&self) -> Option<mpsc::Receiver<Revocation>>;

    /// Records a certificate this coordinator signed.
    async fn record_certificate(&self, certificate: &IssuedCertificate) -> Result<()>;

    /// The record of the certificate with `serial`, if it was signed here.
    async fn certificate(&self, serial: &str) -> Result<Option<IssuedCertificate>>;
}

#[cfg(test)]
mod tests;
