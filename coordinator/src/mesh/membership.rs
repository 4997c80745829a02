//! Membership and probe ownership in etcd (`--etcd`).
//!
//! Each coordinator registers under `Keys::coordinator(id)` with a lease of
//! [`LEASE_TTL_SECS`] kept alive every [`KEEP_ALIVE_EVERY`]; every probe
//! stream it holds is recorded under `Keys::probe(name)` in the same lease
//! ([`pb::ProbeOwner`]). A claim is one transaction: the key is absent, or
//! already this coordinator's. A name another coordinator holds is waited
//! for up to [`CLAIM_WAIT`] (its lease lapses within the TTL when that
//! coordinator died), then refused with the holder named
//! ([`AttachRefused::HeldElsewhere`]). When a
//! coordinator dies its lease expires and every name it held frees at once.
//!
//! Every coordinator watches `Keys::probe_prefix()`: a probe another one
//! holds becomes a remote registry entry with a relay
//! ([`crate::mesh::relay`]); a deleted key removes it.
//!
//! Lifecycle of the lease ([`Membership::run`]): `Held` (kept alive) →
//! (keep-alive refused or failing past the TTL) → `Lost` → a new lease, the
//! member key and every stream held here claimed again (a stream whose name
//! another coordinator took meanwhile is dropped: the probe reconnects) →
//! `Held`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp};
use etcd_client::{TxnOpResponse, WatchOptions};
use probemesh_proto::pb;
use prost::Message as _;
use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::etcd::{EtcdSettings, Keys, retry};
use crate::mesh::relay::attach_remote;
use crate::registry::AttachRefused;
use crate::state::Coordinator;

/// Lease time-to-live, seconds: a coordinator killed without warning frees
/// its probes' names within this, so they re-attach elsewhere within 5 s.
pub const LEASE_TTL_SECS: i64 = 3;
/// Keep-alive period: three per TTL.
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(1);
/// How long an attach waits for a name another coordinator holds to free.
pub const CLAIM_WAIT: Duration = Duration::from_millis(LEASE_TTL_SECS as u64 * 1_000 + 1_000);
/// Pause between claims of a held name.
const CLAIM_RETRY: Duration = Duration::from_millis(200);
/// Pause before watching again after the watch failed.
const REWATCH_PAUSE: Duration = Duration::from_secs(1);

/// Who this coordinator is to the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id (`--id`), unique among the coordinators sharing the prefix.
    pub id: String,
    /// Where the others reach it (`--advertise`): `https://HOST:PORT`.
    pub url: String,
}

impl Member {
    /// This run of the coordinator (see [`crate::etcd::incarnation`]).
    pub fn incarnation(&self, started_unix_ms: i64) -> String {
        crate::etcd::incarnation(&self.id, started_unix_ms)
    }
}

/// This coordinator's membership: its lease, the names it holds, and the
/// Peer channels to the others.
pub struct Membership {
    client: Client,
    keys: Keys,
    endpoints: String,
    member: Member,
    started_unix_ms: i64,
    peer_tls: Arc<tokio_rustls::rustls::ClientConfig>,
    lease: Mutex<i64>,
    claimed: Mutex<BTreeSet<String>>,
    peers: Mutex<std::collections::HashMap<String, Channel>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("member", &self.member)
            .field("endpoints", &self.endpoints)
            .field("lease", &*lock(&self.lease))
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Registers `member` under a new lease. `peer_tls` is the client
    /// configuration other coordinators are called with (the coordinator's
    /// own certificate).
    pub async fn join(
        settings: &EtcdSettings,
        client: Client,
        member: Member,
        started_unix_ms: i64,
        peer_tls: Arc<tokio_rustls::rustls::ClientConfig>,
    ) -> Result<Arc<Self>> {
        let membership = Arc::new(Self {
            client,
            keys: settings.keys(),
            endpoints: settings.endpoint_list(),
            member,
            started_unix_ms,
            peer_tls,
            lease: Mutex::new(0),
            claimed: Mutex::new(BTreeSet::new()),
            peers: Mutex::default(),
        });
        membership.register().await?;
        Ok(membership)
    }

    /// This coordinator.
    pub fn member(&self) -> &Member {
        &self.member
    }

    /// Records that this coordinator holds `hello.name`'s stream, waiting up
    /// to [`CLAIM_WAIT`] for another holder's name to free.
    pub async fn claim(
        &self,
        hello: &pb::Hello,
        remote_addr: &str,
        now_unix_ms: i64,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        let owner = pb::ProbeOwner {
            coordinator: self.member.id.clone(),
            coordinator_url: self.member.url.clone(),
            hello: Some(hello.clone()),
            remote_addr: remote_addr.to_owned(),
            connected_since_unix_ms: now_unix_ms,
        };
        loop {
            match self.try_claim(&hello.name, &owner).await? {
                None => {
                    lock(&self.claimed).insert(hello.name.clone());
                    return Ok(());
                }
                Some(holder) if tokio::time::Instant::now() >= deadline => {
                    return Err(AttachRefused::HeldElsewhere {
                        name: hello.name.clone(),
                        holder: holder.coordinator,
                        url: holder.coordinator_url,
                        lease_s: LEASE_TTL_SECS,
                    }
                    .into());
                }
                Some(_) => tokio::time::sleep(CLAIM_RETRY).await,
            }
        }
    }

    /// One claim transaction; returns the other holder when there is one.
    async fn try_claim(
        &self,
        name: &str,
        owner: &pb::ProbeOwner,
    ) -> Result<Option<pb::ProbeOwner>> {
        let key = self.keys.probe(name);
        let lease = *lock(&self.lease);
        let value = owner.encode_to_vec();
        let put = || {
            TxnOp::put(
                key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )
        };
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([put()])
            .or_else([TxnOp::get(key.clone(), None)]);
        let response = self
            .etcd("claim a probe name in", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if response.succeeded() {
            return Ok(None);
        }
        let Some((holder, revision)) = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| {
                (
                    pb::ProbeOwner::decode(kv.value()).unwrap_or_default(),
                    kv.mod_revision(),
                )
            }),
            _ => None,
        }) else {
            // Deleted between the compare and the get: try again at once.
            return Ok(Some(pb::ProbeOwner::default()));
        };
        if holder.coordinator != self.member.id {
            return Ok(Some(holder));
        }
        // Ours already (a reconnect here, or a claim again under a new
        // lease): take it over unless it changed meanwhile.
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([put()]);
        let response = self
            .etcd("claim a probe name in", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        Ok((!response.succeeded()).then(pb::ProbeOwner::default))
    }

    /// Removes the record of `name` when this lease holds it.
    async fn release(&self, name: &str) -> Result<()> {
        let key = self.keys.probe(name);
        let lease = *lock(&self.lease);
        let txn = Txn::new()
            .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
            .and_then([TxnOp::delete(key, None)]);
        self.etcd("release a probe name in", |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
        .map(drop)
    }

    /// Frees every name at once (revokes the lease): a graceful leave.
    pub async fn leave(&self) {
        let lease = *lock(&self.lease);
        if let Err(e) = self
            .etcd("revoke the lease in", |mut c| async move {
                c.lease_revoke(lease).await
            })
            .await
        {
            tracing::warn!(error = %e, "could not revoke the membership lease; it lapses within its TTL");
        }
    }

    /// Keeps the lease alive, releases names whose streams ended, and
    /// follows the probes the others hold, for the coordinator's lifetime.
    pub async fn run(self: Arc<Self>, state: Arc<Coordinator>) {
        state
            .registry()
            .set_member(&self.member.id, &self.member.url);
        tokio::spawn(self.clone().watch_probes(state.clone()));
        loop {
            let lease = *lock(&self.lease);
            if let Err(e) = self.keep_alive(lease, &state).await {
                state.set_out_of_mesh(Some(e.to_string()));
                // Its names have lapsed and it cannot record runs: the
                // probes are better served by a coordinator that reaches etcd.
                let probes = state.send_every_probe_away(
                    "coordinator lost its etcd lease: reconnect to another coordinator",
                );
                tracing::warn!(error = %e, probes, "membership lease lost; probes sent to the other coordinators; registering again");
            }
            tokio::time::sleep(KEEP_ALIVE_EVERY).await;
            match self.register().await {
                Ok(()) => {
                    state.set_out_of_mesh(None);
                    self.claim_again(&state).await;
                }
                Err(e) => tracing::warn!(error = %e, "cannot register in etcd; retrying"),
            }
        }
    }

    /// Grants a lease and writes the member key under it.
    async fn register(&self) -> Result<()> {
        let granted = self
            .etcd("grant a lease in", |mut c| async move {
                c.lease_grant(LEASE_TTL_SECS, None).await
            })
            .await?;
        let lease = granted.id();
        *lock(&self.lease) = lease;
        let value = pb::CoordinatorMember {
            id: self.member.id.clone(),
            url: self.member.url.clone(),
            started_unix_ms: self.started_unix_ms,
        }
        .encode_to_vec();
        let key = self.keys.coordinator(&self.member.id);
        self.etcd("register the coordinator in", |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })
        .await?;
        tracing::info!(id = %self.member.id, url = %self.member.url, lease, "registered in etcd");
        Ok(())
    }

    /// Keeps `lease` alive until it is lost; each period also releases the
    /// names whose streams ended here.
    async fn keep_alive(&self, lease: i64, state: &Coordinator) -> Result<()> {
        let (mut keeper, mut responses) = self
            .etcd("keep the lease alive in", |mut c| async move {
                c.lease_keep_alive(lease).await
            })
            .await?;
        let mut tick = tokio::time::interval(KEEP_ALIVE_EVERY);
        let mut last_kept = tokio::time::Instant::now();
        let ttl = Duration::from_secs(LEASE_TTL_SECS as u64);
        loop {
            tick.tick().await;
            if last_kept.elapsed() > ttl {
                return Err(self.lost("the lease was not renewed within its TTL"));
            }
            let kept = tokio::time::timeout(KEEP_ALIVE_EVERY, async {
                keeper.keep_alive().await?;
                responses.message().await
            })
            .await;
            match kept {
                Ok(Ok(Some(r))) if r.ttl() > 0 => last_kept = tokio::time::Instant::now(),
                Ok(Ok(_)) => return Err(self.lost("etcd says the lease expired")),
                Ok(Err(e)) => tracing::debug!(error = %e, "lease keep-alive failed"),
                Err(_) => tracing::debug!("lease keep-alive unanswered"),
            }
            self.release_ended(state).await;
        }
    }

    fn lost(&self, why: &'static str) -> Error {
        Error::LeaseLost {
            id: self.member.id.clone(),
            why,
        }
    }

    /// Releases the names claimed here whose streams have ended.
    async fn release_ended(&self, state: &Coordinator) {
        let ended: Vec<String> = {
            let registry = state.registry();
            lock(&self.claimed)
                .iter()
                .filter(|name| registry.local_link(name).is_none())
                .cloned()
                .collect()
        };
        for name in ended {
            if let Err(e) = self.release(&name).await {
                tracing::warn!(probe = %name, error = %e, "could not release the probe's name");
                continue;
            }
            // A reconnect may have claimed it again meanwhile.
            if state.registry().local_link(&name).is_none() {
                lock(&self.claimed).remove(&name);
            }
        }
    }

    /// Claims again, under the new lease, every stream held here; a stream
    /// whose name another coordinator took meanwhile is dropped.
    async fn claim_again(&self, state: &Coordinator) {
        let held = state.registry().attached();
        for (name, hello, remote_addr, since, conn) in held {
            let owner = pb::ProbeOwner {
                coordinator: self.member.id.clone(),
                coordinator_url: self.member.url.clone(),
                hello: Some(hello),
                remote_addr,
                connected_since_unix_ms: since,
            };
            match self.try_claim(&name, &owner).await {
                Ok(None) => {}
                Ok(Some(holder)) => {
                    tracing::warn!(probe = %name, holder = %holder.coordinator, "another coordinator took the probe while the lease was lost; dropping its stream here");
                    if state.registry().detach(&name, conn) {
                        state.dispatcher.fail_connection(&name, conn);
                    }
                }
                Err(e) => {
                    tracing::warn!(probe = %name, error = %e, "could not claim the probe again")
                }
            }
        }
    }

    /// Follows `Keys::probe_prefix()`: lists it, then watches it from the
    /// list's revision; lists again after a broken watch.
    async fn watch_probes(self: Arc<Self>, state: Arc<Coordinator>) {
        loop {
            if let Err(e) = self.list_and_watch(&state).await {
                tracing::warn!(error = %e, "watch of the probes in etcd broke; listing again");
            }
            tokio::time::sleep(REWATCH_PAUSE).await;
        }
    }

    async fn list_and_watch(&self, state: &Arc<Coordinator>) -> Result<()> {
        let prefix = self.keys.probe_prefix();
        let listed = self
            .etcd("list the probes in", |mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let mut present = BTreeSet::new();
        for kv in listed.kvs() {
            let name = kv.key_str().unwrap_or_default().trim_start_matches(&prefix);
            present.insert(name.to_owned());
            self.owner_changed(state, name, kv.value());
        }
        for name in state.registry().remote_names() {
            if !present.contains(&name) {
                state.registry().forget_remote(&name);
            }
        }
        let revision = listed.header().map_or(0, |h| h.revision());
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut client = self.client.clone();
        let mut stream = client
            .watch(prefix.clone(), Some(options))
            .await
            .map_err(|source| self.error("watch the probes in", source))?;
        while let Some(response) = stream
            .message()
            .await
            .map_err(|source| self.error("watch the probes in", source))?
        {
            if response.canceled() {
                let reason = etcd_client::Error::WatchError(response.cancel_reason().to_owned());
                return Err(self.error("watch the probes in", reason));
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let name = kv.key_str().unwrap_or_default().trim_start_matches(&prefix);
                match event.event_type() {
                    EventType::Put => self.owner_changed(state, name, kv.value()),
                    EventType::Delete => {
                        state.registry().forget_remote(name);
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies one probe record: a probe another coordinator holds gets a
    /// relay (unless it already has one to that coordinator).
    fn owner_changed(&self, state: &Arc<Coordinator>, name: &str, value: &[u8]) {
        let Ok(owner) = pb::ProbeOwner::decode(value) else {
            tracing::warn!(probe = %name, "unreadable probe record in etcd; ignored");
            return;
        };
        if owner.coordinator == self.member.id {
            state.registry().forget_remote(name);
            return;
        }
        if state
            .registry()
            .remote(name)
            .is_some_and(|r| r.owner.coordinator == owner.coordinator)
        {
            return;
        }
        match self.peer(&owner.coordinator_url) {
            Ok(peer) => {
                attach_remote(state, name, owner, peer);
            }
            Err(e) => {
                tracing::warn!(probe = %name, url = %owner.coordinator_url, error = %e, "cannot reach the coordinator holding the probe")
            }
        }
    }

    /// The Peer channel to the coordinator at `url` (one per URL, connected
    /// on first use).
    fn peer(&self, url: &str) -> Result<Channel> {
        let mut peers = lock(&self.peers);
        if let Some(channel) = peers.get(url) {
            return Ok(channel.clone());
        }
        let channel = probemesh_proto::tls::connect_lazy(url, self.peer_tls.clone())?;
        peers.insert(url.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Runs one etcd call with the bounded retry.
    async fn etcd<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        retry(|| call(self.client.clone()))
            .await
            .map_err(|source| self.error(op, source))
    }

    fn error(&self, op: &'static str, source: etcd_client::Error) -> Error {
        Error::Etcd {
            op,
            endpoints: self.endpoints.clone(),
            source,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
