//! The etcd store (`--etcd`): the state every coordinator of a mesh shares.
//!
//! | what | key (under the prefix, [`Keys`]) | value |
//! |---|---|---|
//! | a run | `runs/ID` | `pb::RunRecord` bytes |
//! | the run listing | `run-order/INVERTED_MS/ID` | the id of the coordinator that wrote the record last |
//! | a join token | `tokens/ID` (on a lease ending a minute after its expiry) | [`TokenRecord`] JSON |
//! | the pending token of a name | `token-names/NAME` (same lease) | the token id |
//! | a revocation | `revocations/name:NAME:MS` or `revocations/serial:SERIAL` | [`Revocation`] JSON |
//! | a signed certificate | `certificates/SERIAL` (on a lease ending a day after its `notAfter`) | [`IssuedCertificate`] JSON |
//!
//! Several coordinators write at once, so every read-then-write is a
//! transaction on what was read: a token is created only while the name key
//! is as it was read (no pending token appeared meanwhile), and redeemed
//! only while the token's key is at the revision read (two coordinators
//! redeeming one token at once: one succeeds). A run and its listing entry
//! are written in one transaction. The listing's keys sort newest first, so
//! a page is one range read with a limit.
//!
//! A run left `running` by a coordinator that is gone is shown
//! `interrupted` **on read**: a `running` record whose writer (a
//! coordinator's incarnation: its id and start time) is not this
//! coordinator and is not among the live members under `coordinators/`
//! (its lease ended, or it restarted) is returned as `interrupted`;
//! nothing is rewritten.
//!
//! Every call is bounded in time and retried while etcd is unavailable
//! ([`crate::etcd::retry`]); what still fails is an [`Error::Etcd`] to the
//! caller naming the endpoints.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use probemesh_proto::pb;
use probemesh_proto::pki::CertAuthority;
use probemesh_proto::token::JoinToken;
use prost::Message as _;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::{IssuedCertificate, StateStore};
use crate::bounds::{self, Page};
use crate::error::{Error, Result};
use crate::etcd::{EtcdSettings, Keys, retry};
use crate::revocation::Revocation;
use crate::runs::MAX_RUNS;
use crate::tokens::{Minted, TokenRecord, already_used, unknown_token};

/// Records fetched in one transaction (etcd allows 128 operations).
const GETS_PER_TXN: usize = 100;
/// How long a token's keys outlive its expiry (so a late redeem is told
/// "expired", not "unknown").
const TOKEN_GRACE: Duration = Duration::from_secs(60);
/// How long a certificate's record outlives its `notAfter`.
const CERTIFICATE_GRACE: Duration = Duration::from_secs(86_400);
/// Pauses of the revocation watch after an error: first, and at most.
const WATCH_PAUSE: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(2));
/// Revocations queued for the follower before the watch waits for it.
const FOLLOW_QUEUE: usize = 256;

/// The state in etcd.
pub struct EtcdStore {
    client: Client,
    keys: Keys,
    prefix: String,
    endpoints: String,
    /// This coordinator's id (its `coordinators/ID` key is kept alive
    /// under its lease while it lives).
    owner: String,
    /// Records this coordinator could not write (see [`StateStore::note_run`]).
    notes: std::sync::Mutex<HashMap<String, pb::RunRecord>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("keys", &self.keys)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// The store at `settings`, over `client`, writing as coordinator `owner`.
    pub fn new(client: Client, settings: &EtcdSettings, owner: String) -> Self {
        Self {
            client,
            keys: settings.keys(),
            prefix: settings.prefix.clone(),
            endpoints: settings.endpoint_list(),
            owner,
            notes: std::sync::Mutex::default(),
        }
    }

    /// Runs `call` on a client, bounded and retried; an error names `op`.
    async fn call<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        retry(|| call(self.client.clone()))
            .await
            .map_err(|source| Error::Etcd {
                op,
                endpoints: self.endpoints.clone(),
                source,
            })
    }

    async fn get(
        &self,
        op: &'static str,
        key: String,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse> {
        self.call(op, |mut c| {
            let key = key.clone();
            let options = options.clone();
            async move { c.get(key, options).await }
        })
        .await
    }

    async fn txn(&self, op: &'static str, txn: Txn) -> Result<etcd_client::TxnResponse> {
        self.call(op, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// A lease lasting `ttl` (at least a second).
    async fn lease(&self, op: &'static str, ttl: Duration) -> Result<i64> {
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let granted = self
            .call(
                op,
                |mut c| async move { c.lease_grant(seconds, None).await },
            )
            .await?;
        Ok(granted.id())
    }

    /// A stored value that does not parse: the key is named, the value skipped.
    fn damaged(key: &[u8], error: impl std::fmt::Display) {
        tracing::warn!(key = %String::from_utf8_lossy(key), %error, "etcd store: skipped a value that does not parse");
    }

    /// The records of `ids`, in that order (those missing left out).
    async fn records(&self, ids: &[String]) -> Result<Vec<pb::RunRecord>> {
        let mut records = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(GETS_PER_TXN) {
            let txn = Txn::new().and_then(
                chunk
                    .iter()
                    .map(|id| TxnOp::get(self.keys.run(id), None))
                    .collect::<Vec<_>>(),
            );
            for response in self.txn("read runs from", txn).await?.op_responses() {
                let etcd_client::TxnOpResponse::Get(got) = response else {
                    continue;
                };
                for kv in got.kvs() {
                    match pb::RunRecord::decode(kv.value()) {
                        Ok(record) => records.push(record),
                        Err(e) => Self::damaged(kv.key(), e),
                    }
                }
            }
        }
        Ok(records)
    }

    /// Shows `running` records whose writer is gone as `interrupted`, and
    /// what this coordinator knows better ([`StateStore::note_run`]).
    async fn settle(&self, records: &mut [pb::RunRecord]) -> Result<()> {
        {
            let notes = self.lock_notes();
            for record in records.iter_mut() {
                if let Some(noted) = notes.get(&record.run_id) {
                    *record = noted.clone();
                }
            }
        }
        let running: Vec<usize> = (0..records.len())
            .filter(|i| records[*i].state() == pb::RunState::Running)
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        let live = self.live_coordinators().await?;
        for i in running {
            let record = &mut records[i];
            let owner = self.owner_of(record).await?;
            if owner.as_deref() != Some(self.owner.as_str())
                && !owner.is_some_and(|o| live.contains(&o))
            {
                record.set_state(pb::RunState::Interrupted);
            }
        }
        Ok(())
    }

    /// The incarnations ([`crate::etcd::incarnation`]) of the coordinators
    /// alive now, from their membership records.
    async fn live_coordinators(&self) -> Result<HashSet<String>> {
        let prefix = self.keys.coordinator_prefix();
        let got = self
            .get(
                "list coordinators in",
                prefix,
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        Ok(got
            .kvs()
            .iter()
            .filter_map(|kv| pb::CoordinatorMember::decode(kv.value()).ok())
            .map(|m| crate::etcd::incarnation(&m.id, m.started_unix_ms))
            .collect())
    }

    /// The coordinator that wrote `record` last.
    async fn owner_of(&self, record: &pb::RunRecord) -> Result<Option<String>> {
        let key = self.keys.run_order(record.started_unix_ms, &record.run_id);
        let got = self.get("read a run's coordinator from", key, None).await?;
        Ok(got
            .kvs()
            .first()
            .and_then(|kv| kv.value_str().ok().map(str::to_owned)))
    }

    fn lock_notes(&self) -> std::sync::MutexGuard<'_, HashMap<String, pb::RunRecord>> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every value under `prefix`, parsed as JSON (damaged ones skipped),
    /// and the revision read at.
    async fn json_under<T: DeserializeOwned>(
        &self,
        op: &'static str,
        prefix: String,
    ) -> Result<(Vec<T>, i64)> {
        let got = self
            .get(op, prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = got.header().map_or(0, |h| h.revision());
        let values = got
            .kvs()
            .iter()
            .filter_map(|kv| {
                serde_json::from_slice(kv.value())
                    .inspect_err(|e| Self::damaged(kv.key(), e))
                    .ok()
            })
            .collect();
        Ok((values, revision))
    }
}

/// The end of the range of keys starting with `prefix` (which ends with `/`).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The key of `revocation` under `revocations/`.
fn revocation_key(revocation: &Revocation) -> String {
    if revocation.serial.is_empty() {
        format!("name:{}:{}", revocation.name, revocation.revoked_unix_ms)
    } else {
        format!("serial:{}", revocation.serial)
    }
}

#[tonic::async_trait]
impl StateStore for EtcdStore {
    fn describe(&self) -> String {
        format!(
            "etcd at {} under {} as coordinator {}",
            self.endpoints, self.prefix, self.owner
        )
    }

    async fn write_run(&self, record: pb::RunRecord) -> Result<()> {
        let txn = Txn::new().and_then([
            TxnOp::put(self.keys.run(&record.run_id), record.encode_to_vec(), None),
            TxnOp::put(
                self.keys.run_order(record.started_unix_ms, &record.run_id),
                self.owner.clone(),
                None,
            ),
        ]);
        self.txn("record a run in", txn).await?;
        self.lock_notes().remove(&record.run_id);
        Ok(())
    }

    fn note_run(&self, record: pb::RunRecord) {
        let mut notes = self.lock_notes();
        if notes.len() < MAX_RUNS {
            notes.insert(record.run_id.clone(), record);
        }
    }

    async fn run(&self, run_id: &str) -> Result<Option<pb::RunRecord>> {
        if run_id.is_empty() {
            return Ok(None);
        }
        // The exact id, else a unique prefix of one.
        let got = self
            .get(
                "read a run from",
                self.keys.run(run_id),
                Some(GetOptions::new().with_prefix().with_limit(2)),
            )
            .await?;
        let kvs = got.kvs();
        let exact = self.keys.run(run_id);
        let kv = match kvs {
            [one] => one,
            _ => match kvs.iter().find(|kv| kv.key() == exact.as_bytes()) {
                Some(kv) => kv,
                None => return Ok(None),
            },
        };
        let mut records = match pb::RunRecord::decode(kv.value()) {
            Ok(record) => vec![record],
            Err(e) => {
                Self::damaged(kv.key(), e);
                return Ok(None);
            }
        };
        self.settle(&mut records).await?;
        Ok(records.pop())
    }

    async fn runs_page(&self, token: &str, size: usize) -> Result<Page<pb::RunRecord>> {
        let prefix = self.keys.run_order_prefix();
        let start = if token.is_empty() {
            prefix.clone()
        } else {
            let got = self
                .get("read a run from", self.keys.run(token), None)
                .await?;
            let Some(after) = got
                .kvs()
                .first()
                .and_then(|kv| pb::RunRecord::decode(kv.value()).ok())
            else {
                return Err(Error::InvalidRequest(format!(
                    "page token {} names no stored run: list again from the start",
                    bounds::elide(token)
                )));
            };
            // Just past the token's own entry.
            format!("{}\0", self.keys.run_order(after.started_unix_ms, token))
        };
        let end = prefix_end(&prefix);
        let limit = i64::try_from(size.max(1))
            .unwrap_or(i64::MAX)
            .saturating_add(1);
        let listed = self
            .get(
                "list runs in",
                start,
                Some(GetOptions::new().with_range(end).with_limit(limit)),
            )
            .await?;
        let ids: Vec<String> = listed
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok()?.rsplit('/').next().map(str::to_owned))
            .collect();
        let mut records = self.records(&ids).await?;
        self.settle(&mut records).await?;
        // The extra record tells whether there is a next page.
        bounds::page(records.iter(), |r| &r.run_id, "", size, bounds::fit_run)
    }

    async fn create_token(
        &self,
        name: &str,
        ttl: Duration,
        ca: &CertAuthority,
        now_unix_ms: i64,
    ) -> Result<pb::CreateJoinTokenResponse> {
        let minted = Minted::new(name, ttl, ca, now_unix_ms)?;
        let name_key = self.keys.token_name(name);
        let got = self
            .get("read join tokens from", name_key.clone(), None)
            .await?;
        // The name key as read: absent, or at this revision.
        let unchanged = match got.kvs().first() {
            None => Compare::version(name_key.clone(), CompareOp::Equal, 0),
            Some(kv) => {
                let id = kv.value_str().unwrap_or_default();
                let token = self
                    .get("read join tokens from", self.keys.token(id), None)
                    .await?;
                if let Some(pending) = token
                    .kvs()
                    .first()
                    .and_then(|t| serde_json::from_slice::<TokenRecord>(t.value()).ok())
                    .filter(|t| t.pending(now_unix_ms))
                {
                    return Err(pending.pending_refusal(now_unix_ms));
                }
                Compare::mod_revision(name_key.clone(), CompareOp::Equal, kv.mod_revision())
            }
        };
        let record = serde_json::to_vec(&minted.record).map_err(|e| {
            Error::InvalidRequest(format!("cannot encode a join token record: {e}"))
        })?;
        let lease = self
            .lease("create a join token in", ttl.saturating_add(TOKEN_GRACE))
            .await?;
        let put = || Some(PutOptions::new().with_lease(lease));
        let txn = Txn::new().when([unchanged]).and_then([
            TxnOp::put(name_key, minted.id.clone(), put()),
            TxnOp::put(self.keys.token(&minted.id), record, put()),
        ]);
        if !self.txn("create a join token in", txn).await?.succeeded() {
            return Err(Error::NameTaken(format!(
                "another coordinator created a join token for '{name}' at the same moment; \
                 use that one, or withdraw it with `meshctl certs revoke {name}`"
            )));
        }
        Ok(minted.response)
    }

    async fn withdraw_tokens(&self, name: &str) -> Result<u32> {
        let name_key = self.keys.token_name(name);
        let got = self
            .get("read join tokens from", name_key.clone(), None)
            .await?;
        let Some(id) = got.kvs().first().and_then(|kv| kv.value_str().ok()) else {
            return Ok(0);
        };
        let token_key = self.keys.token(id);
        let token = self
            .get("read join tokens from", token_key.clone(), None)
            .await?;
        let Some(kv) = token.kvs().first() else {
            return Ok(0);
        };
        let unused = serde_json::from_slice::<TokenRecord>(kv.value()).is_ok_and(|t| !t.used);
        if !unused {
            return Ok(0);
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                token_key.clone(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([
                TxnOp::delete(token_key, None),
                TxnOp::delete(name_key, None),
            ]);
        // Redeemed meanwhile: nothing left to withdraw.
        Ok(u32::from(
            self.txn("withdraw a join token in", txn).await?.succeeded(),
        ))
    }

    async fn redeem_token(&self, token: &JoinToken, now_unix_ms: i64) -> Result<String> {
        let key = self.keys.token(&token.id.to_string());
        let got = self.get("read join tokens from", key.clone(), None).await?;
        let Some(kv) = got.kvs().first() else {
            return Err(unknown_token());
        };
        let mut record: TokenRecord = serde_json::from_slice(kv.value()).map_err(|e| {
            Self::damaged(kv.key(), &e);
            unknown_token()
        })?;
        record.check_redeem(token, now_unix_ms)?;
        record.used = true;
        let spent = serde_json::to_vec(&record).map_err(|e| {
            Error::InvalidRequest(format!("cannot encode a join token record: {e}"))
        })?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([TxnOp::put(
                key,
                spent,
                Some(PutOptions::new().with_ignore_lease()),
            )]);
        if !self.txn("redeem a join token in", txn).await?.succeeded() {
            // Another coordinator redeemed (or withdrew) it first.
            return Err(already_used());
        }
        Ok(record.name)
    }

    async fn revocations(&self) -> Result<Vec<Revocation>> {
        Ok(self
            .json_under("read revocations from", self.keys.revocation_prefix())
            .await?
            .0)
    }

    async fn add_revocation(&self, revocation: &Revocation) -> Result<()> {
        let key = self.keys.revocation(&revocation_key(revocation));
        let value = serde_json::to_vec(revocation)
            .map_err(|e| Error::InvalidRequest(format!("cannot encode a revocation: {e}")))?;
        self.call("record a revocation in", |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, None).await }
        })
        .await?;
        Ok(())
    }

    fn follow_revocations(&self) -> Option<mpsc::Receiver<Revocation>> {
        let (tx, rx) = mpsc::channel(FOLLOW_QUEUE);
        let follower = Follower {
            client: self.client.clone(),
            prefix: self.keys.revocation_prefix(),
            endpoints: self.endpoints.clone(),
            tx,
        };
        tokio::spawn(follower.run());
        Some(rx)
    }

    async fn record_certificate(&self, certificate: &IssuedCertificate) -> Result<()> {
        let now_unix = certificate.issued_unix_ms / 1_000;
        let remaining =
            u64::try_from(certificate.not_after_unix.saturating_sub(now_unix)).unwrap_or(0);
        let lease = self
            .lease(
                "record a certificate in",
                Duration::from_secs(remaining).saturating_add(CERTIFICATE_GRACE),
            )
            .await?;
        let key = self.keys.certificate(&certificate.serial);
        let value = serde_json::to_vec(certificate).map_err(|e| {
            Error::InvalidRequest(format!("cannot encode a certificate record: {e}"))
        })?;
        self.call("record a certificate in", |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })
        .await?;
        Ok(())
    }

    async fn certificate(&self, serial: &str) -> Result<Option<IssuedCertificate>> {
        let got = self
            .get(
                "read a certificate from",
                self.keys.certificate(serial),
                None,
            )
            .await?;
        Ok(got
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice(kv.value()).ok()))
    }
}

/// Feeds the revocations stored under `prefix` to `tx`: every stored one,
/// then each new one as etcd reports it; after an error (etcd gone, the
/// watch cancelled, its revision compacted away) it reads everything again
/// and watches from there. Ends when the receiver is dropped.
struct Follower {
    client: Client,
    prefix: String,
    endpoints: String,
    tx: mpsc::Sender<Revocation>,
}

/// Where the follower is.
enum Follow {
    /// Reading every stored revocation.
    Read,
    /// Watching from this revision.
    Watch(i64),
    /// Waiting before reading again, after an error.
    Pause(Duration),
    /// The receiver is gone.
    Done,
}

impl Follower {
    async fn run(mut self) {
        let mut state = Follow::Read;
        let mut pause = WATCH_PAUSE.0;
        loop {
            state = match state {
                Follow::Read => match self.read().await {
                    Ok(Some(revision)) => {
                        pause = WATCH_PAUSE.0;
                        Follow::Watch(revision + 1)
                    }
                    Ok(None) => Follow::Done,
                    Err(e) => {
                        tracing::warn!(endpoints = %self.endpoints, error = %e, "revocation watch: cannot read; retrying");
                        Follow::Pause(pause)
                    }
                },
                Follow::Watch(from) => self.watch(from).await,
                Follow::Pause(wait) => {
                    tokio::time::sleep(wait).await;
                    pause = (pause * 2).min(WATCH_PAUSE.1);
                    if self.tx.is_closed() {
                        Follow::Done
                    } else {
                        Follow::Read
                    }
                }
                Follow::Done => return,
            };
        }
    }

    /// Sends every stored revocation; returns the revision read at, or
    /// `None` when the receiver is gone.
    async fn read(&mut self) -> std::result::Result<Option<i64>, etcd_client::Error> {
        let prefix = self.prefix.clone();
        let got = retry(|| {
            let (mut c, prefix) = (self.client.clone(), prefix.clone());
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
        for kv in got.kvs() {
            if !self.send(kv).await {
                return Ok(None);
            }
        }
        Ok(Some(got.header().map_or(0, |h| h.revision())))
    }

    /// Watches from revision `from` until the watch ends.
    async fn watch(&mut self, from: i64) -> Follow {
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut stream = match self.client.watch(self.prefix.clone(), Some(options)).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(endpoints = %self.endpoints, error = %e, "revocation watch: cannot start; reading again");
                return Follow::Pause(WATCH_PAUSE.0);
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(response)) => {
                    if response.compact_revision() > 0 || response.canceled() {
                        tracing::warn!(compacted_to = response.compact_revision(), reason = %response.cancel_reason(), "revocation watch ended; reading again");
                        return Follow::Read;
                    }
                    for event in response.events() {
                        if event.event_type() == EventType::Put
                            && let Some(kv) = event.kv()
                            && !self.send(kv).await
                        {
                            return Follow::Done;
                        }
                    }
                }
                Ok(None) => return Follow::Pause(WATCH_PAUSE.0),
                Err(e) => {
                    tracing::warn!(endpoints = %self.endpoints, error = %e, "revocation watch lost; reading again");
                    return Follow::Pause(WATCH_PAUSE.0);
                }
            }
        }
    }

    /// Sends the revocation in `kv` (skipping one that does not parse);
    /// false when the receiver is gone.
    async fn send(&self, kv: &etcd_client::KeyValue) -> bool {
        match serde_json::from_slice::<Revocation>(kv.value()) {
            Ok(revocation) => self.tx.send(revocation).await.is_ok(),
            Err(e) => {
                EtcdStore::damaged(kv.key(), e);
                true
            }
        }
    }
}
