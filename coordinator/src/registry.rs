//! The probe registry: who is attached, since when, last heard from, and
//! each probe's clock estimate.
//!
//! Plain state behind the coordinator's mutex; every method takes the current
//! instant from its caller, so liveness rules are testable without sleeping.
//!
//! With several coordinators it also knows the probes whose streams the
//! others hold ([`Remote`]): each has a [`Link`] too, whose messages a relay
//! carries to the owner, so the run code sends to a remote probe as to a
//! local one. A probe's own stream here always wins over a remote entry.

use std::collections::BTreeMap;
use std::net::SocketAddr;

#[cfg(test)]
use probemesh_proto::identity::CertFingerprint;
use probemesh_proto::identity::Identity;
use probemesh_proto::pb;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

use crate::clock::{ClockEstimator, Exchange, Sample};

/// Messages queued towards one probe's stream.
pub type LinkSender = mpsc::Sender<Result<pb::CoordinatorMessage, tonic::Status>>;

/// Identifies one attachment of a probe; a reconnect gets a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// The live side of an attached probe.
#[derive(Debug, Clone)]
pub struct Link {
    /// This attachment.
    pub conn: ConnId,
    /// Queue into the probe's stream.
    pub tx: LinkSender,
}

/// What the registry knows of one probe.
#[derive(Debug)]
struct Entry {
    hello: pb::Hello,
    identity: Identity,
    remote_addr: SocketAddr,
    link: Option<Link>,
    connected_since_unix_ms: i64,
    last_seen_unix_ms: i64,
    last_seen: Instant,
    clock: ClockEstimator,
}

/// Why an attach was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachRefused {
    /// The Hello names someone other than the certificate.
    #[error("hello names probe '{claimed}' but the certificate is for '{certified}'")]
    NameMismatch { claimed: String, certified: String },
    /// The name's stream is live (heard from within the liveness bound):
    /// one live stream per probe, whatever the certificate.
    #[error(
        "probe '{name}' already has a live stream ({which} certificate, heard from {silent_ms} ms ago); \
         one live stream per probe: a second connection takes over only after the first has been \
         silent for {bound_ms} ms (missed heartbeats). Stop the other process using this identity, \
         or revoke its certificate with `meshctl certs revoke {name}`"
    )]
    StreamLive {
        name: String,
        /// "the same" or "another".
        which: &'static str,
        silent_ms: u128,
        bound_ms: u128,
    },
    /// Several coordinators: another live coordinator holds the name's
    /// stream (its record in etcd is under that coordinator's lease).
    #[error(
        "probe '{name}' already has a live stream on coordinator '{holder}' ({url}); one live stream \
         per probe across coordinators: the name frees when that stream ends or that coordinator's \
         lease ({lease_s} s) lapses. Stop the other process using this identity, or revoke its \
         certificate with `meshctl certs revoke {name}`"
    )]
    HeldElsewhere {
        name: String,
        holder: String,
        url: String,
        lease_s: i64,
    },
}

/// Outcome of a successful attach.
#[derive(Debug)]
pub struct Attached {
    /// The new attachment.
    pub conn: ConnId,
    /// The silent stream this attach took over, if any.
    pub replaced: Option<Link>,
}

/// A probe whose stream another coordinator holds.
#[derive(Debug)]
pub struct Remote {
    /// Who holds it, as recorded in etcd.
    pub owner: pb::ProbeOwner,
    /// The relay towards it.
    pub link: Link,
    /// The owner's Peer channel (clock exchanges, relays).
    pub peer: tonic::transport::Channel,
    /// Its clock against this coordinator, once measured ([`Sample::chain`]).
    pub clock: Option<Sample>,
}

/// All probes ever attached since the coordinator started, and the probes
/// other coordinators hold.
#[derive(Debug, Default)]
pub struct Registry {
    entries: BTreeMap<String, Entry>,
    remote: BTreeMap<String, Remote>,
    /// This coordinator's id and URL, with several coordinators.
    member: Option<(String, String)>,
    next_conn: u64,
}

impl Registry {
    /// Attaches `identity` with its Hello. While the name's stream is live
    /// (heard from within `bound`) any second stream is refused, with the same
    /// certificate or another: a stolen certificate cannot take over a probe
    /// that answers. A stream silent for longer than `bound` is taken over.
    #[allow(clippy::too_many_arguments)] // one attach, its facts and the clock
    pub fn attach(
        &mut self,
        identity: &Identity,
        hello: pb::Hello,
        remote_addr: SocketAddr,
        tx: LinkSender,
        now: Instant,
        now_unix_ms: i64,
        bound: Duration,
    ) -> Result<Attached, AttachRefused> {
        if hello.name != identity.name {
            return Err(AttachRefused::NameMismatch {
                claimed: hello.name,
                certified: identity.name.clone(),
            });
        }
        if let Some(existing) = self.entries.get(&identity.name)
            && existing.link.is_some()
        {
            let silent = now.saturating_duration_since(existing.last_seen);
            if silent <= bound {
                return Err(AttachRefused::StreamLive {
                    name: identity.name.clone(),
                    which: if existing.identity.fingerprint == identity.fingerprint {
                        "the same"
                    } else {
                        "another"
                    },
                    silent_ms: silent.as_millis(),
                    bound_ms: bound.as_millis(),
                });
            }
        }
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        let link = Link { conn, tx };
        let entry = Entry {
            hello,
            identity: identity.clone(),
            remote_addr,
            link: Some(link),
            connected_since_unix_ms: now_unix_ms,
            last_seen_unix_ms: now_unix_ms,
            last_seen: now,
            clock: ClockEstimator::default(),
        };
        let replaced = self
            .entries
            .insert(identity.name.clone(), entry)
            .and_then(|old| old.link);
        Ok(Attached { conn, replaced })
    }

    /// Names this coordinator (several coordinators): `meshctl probes` shows
    /// it as the holder of its own probes.
    pub fn set_member(&mut self, id: &str, url: &str) {
        self.member = Some((id.to_owned(), url.to_owned()));
    }

    /// Records that another coordinator holds `name`'s stream; its tasks go
    /// through `tx` (a relay to `peer`). Replaces an earlier remote entry.
    /// Returns the link's attachment id.
    pub fn set_remote(
        &mut self,
        name: &str,
        owner: pb::ProbeOwner,
        tx: LinkSender,
        peer: tonic::transport::Channel,
    ) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        let remote = Remote {
            owner,
            link: Link { conn, tx },
            peer,
            clock: None,
        };
        self.remote.insert(name.to_owned(), remote);
        conn
    }

    /// Forgets that another coordinator holds `name` (its stream ended or
    /// moved); returns the dropped entry.
    pub fn forget_remote(&mut self, name: &str) -> Option<Remote> {
        self.remote.remove(name)
    }

    /// The probes other coordinators hold.
    pub fn remote_names(&self) -> Vec<String> {
        self.remote.keys().cloned().collect()
    }

    /// Every stream held here: name, Hello, remote address, connected
    /// since (Unix ms) and attachment.
    pub fn attached(&self) -> Vec<(String, pb::Hello, String, i64, ConnId)> {
        self.entries
            .iter()
            .filter_map(|(name, e)| {
                let link = e.link.as_ref()?;
                Some((
                    name.clone(),
                    e.hello.clone(),
                    e.remote_addr.to_string(),
                    e.connected_since_unix_ms,
                    link.conn,
                ))
            })
            .collect()
    }

    /// The remote entry of `name`, unless this coordinator holds its stream.
    pub fn remote(&self, name: &str) -> Option<&Remote> {
        if self.local_link(name).is_some() {
            return None;
        }
        self.remote.get(name)
    }

    /// Stores the measured clock of remote probe `name`.
    pub fn set_remote_clock(&mut self, name: &str, sample: Sample) {
        if let Some(r) = self.remote.get_mut(name) {
            r.clock = Some(sample);
        }
    }

    /// Marks the probe disconnected if `conn` is still its current attachment.
    /// Returns true when it was.
    pub fn detach(&mut self, name: &str, conn: ConnId) -> bool {
        match self.entries.get_mut(name) {
            Some(e) if e.link.as_ref().is_some_and(|l| l.conn == conn) => {
                e.link = None;
                true
            }
            _ => false,
        }
    }

    /// Records that the probe was heard from on `conn`.
    pub fn touch(&mut self, name: &str, conn: ConnId, now: Instant, now_unix_ms: i64) {
        if let Some(e) = self.current(name, conn) {
            e.last_seen = now;
            e.last_seen_unix_ms = now_unix_ms;
        }
    }

    /// Feeds a clock exchange for the probe on `conn`.
    pub fn observe_clock(
        &mut self,
        name: &str,
        conn: ConnId,
        exchange: Exchange,
    ) -> Option<Sample> {
        let e = self.current(name, conn)?;
        match e.clock.observe(exchange) {
            Ok(sample) => Some(sample),
            Err(reason) => {
                tracing::debug!(probe = name, %reason, "clock exchange rejected");
                None
            }
        }
    }

    /// Disconnects every probe not heard from within `bound`; returns their
    /// names and attachments. Dropping their link ends the stream towards them.
    pub fn expire(&mut self, now: Instant, bound: Duration) -> Vec<(String, ConnId)> {
        let mut expired = Vec::new();
        for (name, e) in &mut self.entries {
            if now.saturating_duration_since(e.last_seen) > bound
                && let Some(link) = e.link.take()
            {
                expired.push((name.clone(), link.conn));
            }
        }
        expired
    }

    /// Disconnects every probe (the coordinator is shutting down); returns
    /// their names and links, for a last message before the links drop.
    pub fn detach_all(&mut self) -> Vec<(String, Link)> {
        self.entries
            .iter_mut()
            .filter_map(|(name, e)| e.link.take().map(|link| (name.clone(), link)))
            .collect()
    }

    /// Whether `ip` is an address on an interface of a registered probe.
    pub fn has_interface_address(&self, ip: std::net::IpAddr) -> bool {
        self.entries
            .values()
            .map(|e| &e.hello)
            .chain(self.remote.values().filter_map(|r| r.owner.hello.as_ref()))
            .flat_map(|h| &h.interfaces)
            .flat_map(|i| &i.addresses)
            .any(|a| a.split('/').next().and_then(|s| s.parse().ok()) == Some(ip))
    }

    /// The live link to `name`: its stream here, else the relay to the
    /// coordinator holding it.
    pub fn link(&self, name: &str) -> Option<Link> {
        self.local_link(name)
            .or_else(|| self.remote.get(name).map(|r| r.link.clone()))
    }

    /// The live link to `name` when its stream is held here.
    pub fn local_link(&self, name: &str) -> Option<Link> {
        self.entries.get(name).and_then(|e| e.link.clone())
    }

    /// Whether probe `name` has attached since the coordinator started
    /// (connected now or not), here or to another coordinator.
    pub fn knows(&self, name: &str) -> bool {
        self.entries.contains_key(name) || self.remote.contains_key(name)
    }

    /// Drops every live stream whose certificate `revoked` says is revoked,
    /// and forgets those probes (their names are free for a new join token).
    /// Returns the probes and the links that were theirs.
    pub fn drop_revoked(&mut self, revoked: impl Fn(&Identity) -> bool) -> Vec<(String, Link)> {
        let names: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| revoked(&e.identity))
            .map(|(name, _)| name.clone())
            .collect();
        names
            .into_iter()
            .filter_map(|name| {
                let entry = self.entries.remove(&name)?;
                entry.link.map(|link| (name, link))
            })
            .collect()
    }

    /// The certificate identity of `name`'s stream `conn`, while current.
    pub fn identity(&self, name: &str, conn: ConnId) -> Option<&Identity> {
        self.entries
            .get(name)
            .filter(|e| e.link.as_ref().is_some_and(|l| l.conn == conn))
            .map(|e| &e.identity)
    }

    /// The Hello a probe sent on its latest attach (here, else to the
    /// coordinator holding it).
    pub fn hello(&self, name: &str) -> Option<&pb::Hello> {
        match (self.entries.get(name), self.remote(name)) {
            (_, Some(r)) => r.owner.hello.as_ref(),
            (e, None) => e.map(|e| &e.hello),
        }
    }

    /// The probe's best clock sample against this coordinator, if any (for a
    /// remote probe, the last relayed estimate).
    pub fn clock(&self, name: &str) -> Option<Sample> {
        match self.remote(name) {
            Some(r) => r.clock,
            None => self.entries.get(name).and_then(|e| e.clock.best()),
        }
    }

    /// The probe's best clock sample from exchanges completed at or after
    /// `t_ns` (coordinator clock) on its stream here, if any.
    pub fn clock_since(&self, name: &str, t_ns: i64) -> Option<Sample> {
        self.entries
            .get(name)
            .and_then(|e| e.clock.best_since(t_ns))
    }

    /// Whether the fresh burst of exchanges with `name` is in: `count`
    /// exchanges completed at or after `t_ns` (coordinator clock) on the
    /// path of its best sample (UDP where it gets through, whose samples
    /// are the tightest: the stream's would not improve the bound).
    pub fn burst_in(&self, name: &str, t_ns: i64, count: usize) -> bool {
        self.entries.get(name).is_some_and(|e| {
            e.clock
                .best()
                .is_some_and(|best| e.clock.count_since(t_ns, best.path) >= count)
        })
    }

    /// Every known probe, by name: those held here (or once held) and
    /// those other coordinators hold.
    pub fn list(&self) -> Vec<pb::ProbeInfo> {
        let (member_id, member_url) = self.member.clone().unwrap_or_default();
        let mut list: BTreeMap<&str, pb::ProbeInfo> = self
            .entries
            .iter()
            .map(|(name, e)| {
                let best = e.clock.best();
                let info = pb::ProbeInfo {
                    name: name.clone(),
                    role: e.hello.role,
                    labels: e.hello.labels.clone(),
                    remote_addr: e.remote_addr.to_string(),
                    connected: e.link.is_some(),
                    last_seen_unix_ms: e.last_seen_unix_ms,
                    clock_offset_us: best.map_or(0, |s| s.offset_ns / 1_000),
                    clock_error_us: best.map_or(0, |s| s.error_ns() / 1_000),
                    clock_synced: best.is_some(),
                    version: e.hello.version.clone(),
                    capabilities: e.hello.capabilities.clone(),
                    interfaces: e.hello.interfaces.clone(),
                    connected_since_unix_ms: e.connected_since_unix_ms,
                    clock_path: best.map_or("", |s| s.path.as_str()).to_owned(),
                    coordinator: member_id.clone(),
                    coordinator_url: member_url.clone(),
                };
                (name.as_str(), info)
            })
            .collect();
        for (name, r) in &self.remote {
            if self.local_link(name).is_some() {
                continue;
            }
            let hello = r.owner.hello.clone().unwrap_or_default();
            let info = pb::ProbeInfo {
                name: name.clone(),
                role: hello.role,
                labels: hello.labels,
                remote_addr: r.owner.remote_addr.clone(),
                connected: true,
                last_seen_unix_ms: 0,
                clock_offset_us: r.clock.map_or(0, |s| s.offset_ns / 1_000),
                clock_error_us: r.clock.map_or(0, |s| s.error_ns() / 1_000),
                clock_synced: r.clock.is_some(),
                version: hello.version,
                capabilities: hello.capabilities,
                interfaces: hello.interfaces,
                connected_since_unix_ms: r.owner.connected_since_unix_ms,
                clock_path: r.clock.map_or("", |s| s.path.as_str()).to_owned(),
                coordinator: r.owner.coordinator.clone(),
                coordinator_url: r.owner.coordinator_url.clone(),
            };
            list.insert(name.as_str(), info);
        }
        list.into_values().collect()
    }

    /// Number of probes with a live stream.
    pub fn connected_count(&self) -> usize {
        self.entries.values().filter(|e| e.link.is_some()).count()
    }

    fn current(&mut self, name: &str, conn: ConnId) -> Option<&mut Entry> {
        self.entries
            .get_mut(name)
            .filter(|e| e.link.as_ref().is_some_and(|l| l.conn == conn))
    }
}

/// The liveness bound of the registry's tests.
#[cfg(test)]
pub(crate) const BOUND: Duration = Duration::from_secs(3);

/// A registry with probes `node-1`, `node-2`, ... attached (see
/// [`test_probe`]), for tests of code that reads it.
#[cfg(test)]
pub(crate) fn attached(names: &[&str]) -> Registry {
    let mut reg = Registry::default();
    for (i, name) in (0u8..).zip(names) {
        let (identity, hello) = test_probe(i, name);
        let (tx, _rx) = mpsc::channel(1);
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        if let Err(e) = reg.attach(&identity, hello, addr, tx, Instant::now(), 0, BOUND) {
            panic!("attach {name}: {e}");
        }
    }
    reg
}

/// The certificate identity and Hello of test probe `name`, the `i`-th
/// (from 0): `lo` (127.0.0.1) and `eth0` at 198.18.0.1N, N = `i` + 1.
#[cfg(test)]
pub(crate) fn test_probe(i: u8, name: &str) -> (Identity, pb::Hello) {
    let identity = Identity {
        name: name.into(),
        role: probemesh_proto::identity::Role::Probe,
        fingerprint: CertFingerprint::from_bytes([i; 32]),
        serial: format!("{i:02x}"),
        not_before_unix: 0,
        not_after_unix: 0,
    };
    let iface = |name: &str, mtu, addr: String| pb::Interface {
        name: name.into(),
        mtu,
        addresses: vec![addr],
        up: true,
    };
    let hello = pb::Hello {
        name: name.into(),
        interfaces: vec![
            iface("lo", 65_536, "127.0.0.1/8".into()),
            iface("eth0", 1_500, format!("198.18.0.{}/24", 11 + i)),
        ],
        ..Default::default()
    };
    (identity, hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::clock::ClockPath;
    use probemesh_proto::identity::Role;

    fn identity(name: &str, cert: u8) -> Identity {
        Identity {
            name: name.into(),
            role: Role::Probe,
            fingerprint: CertFingerprint::from_bytes([cert; 32]),
            serial: format!("{cert:02x}"),
            not_before_unix: 0,
            not_after_unix: 0,
        }
    }

    fn hello(name: &str) -> pb::Hello {
        pb::Hello {
            name: name.into(),
            ..Default::default()
        }
    }

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 5000))
    }

    fn attach(reg: &mut Registry, id: &Identity, now: Instant) -> Result<Attached, AttachRefused> {
        let (tx, _rx) = mpsc::channel(1);
        reg.attach(id, hello(&id.name), addr(), tx, now, 0, BOUND)
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_stream_is_never_replaced_a_silent_one_is_taken_over() {
        let mut reg = Registry::default();
        let first = attach(&mut reg, &identity("node-1", 1), Instant::now()).unwrap();
        assert!(first.replaced.is_none());
        tokio::time::advance(BOUND).await;
        for (cert, which) in [(1, "the same"), (2, "another")] {
            let err = attach(&mut reg, &identity("node-1", cert), Instant::now()).unwrap_err();
            assert!(
                matches!(&err, AttachRefused::StreamLive { which: w, silent_ms: 3_000, .. } if *w == which),
                "{err}"
            );
            assert!(
                err.to_string().contains("meshctl certs revoke node-1"),
                "{err}"
            );
        }
        assert_eq!(reg.link("node-1").map(|l| l.conn), Some(first.conn));
        // Silent past the bound: the new stream takes over.
        tokio::time::advance(Duration::from_millis(1)).await;
        let again = attach(&mut reg, &identity("node-1", 1), Instant::now()).unwrap();
        assert_eq!(again.replaced.map(|l| l.conn), Some(first.conn));
        // Once the holder is gone, another certificate may take the name.
        assert!(reg.detach("node-1", again.conn));
        assert!(attach(&mut reg, &identity("node-1", 2), Instant::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn hello_must_name_the_certificate() {
        let mut reg = Registry::default();
        let (tx, _rx) = mpsc::channel(1);
        let err = reg
            .attach(
                &identity("node-1", 1),
                hello("node-2"),
                addr(),
                tx,
                Instant::now(),
                0,
                BOUND,
            )
            .unwrap_err();
        assert_eq!(
            err,
            AttachRefused::NameMismatch {
                claimed: "node-2".into(),
                certified: "node-1".into()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stale_detach_does_not_disconnect_the_new_stream() {
        let mut reg = Registry::default();
        let old = attach(&mut reg, &identity("node-1", 1), Instant::now()).unwrap();
        tokio::time::advance(BOUND * 2).await;
        let new = attach(&mut reg, &identity("node-1", 1), Instant::now()).unwrap();
        assert!(!reg.detach("node-1", old.conn));
        assert_eq!(reg.link("node-1").map(|l| l.conn), Some(new.conn));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_beyond_the_bound_disconnects() {
        let mut reg = Registry::default();
        let bound = BOUND;
        let start = Instant::now();
        let a = attach(&mut reg, &identity("node-1", 1), start).unwrap();
        attach(&mut reg, &identity("node-2", 2), start).unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        reg.touch("node-1", a.conn, Instant::now(), 2_000);
        tokio::time::advance(Duration::from_millis(1_500)).await;
        let expired = reg.expire(Instant::now(), bound);
        assert_eq!(
            expired.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["node-2"]
        );
        assert_eq!(reg.connected_count(), 1);
        let listed = reg.list();
        assert!(listed.iter().any(|p| p.name == "node-2" && !p.connected));
        assert!(
            listed
                .iter()
                .any(|p| p.name == "node-1" && p.connected && p.last_seen_unix_ms == 2_000)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn clock_estimate_reaches_the_listing() {
        let mut reg = Registry::default();
        let a = attach(&mut reg, &identity("node-1", 1), Instant::now()).unwrap();
        let e = Exchange {
            path: ClockPath::Udp,
            t1_ns: 0,
            t2_ns: 5_500_000,
            t3_ns: 5_600_000,
            t4_ns: 1_100_000,
        };
        reg.observe_clock("node-1", a.conn, e);
        let p = &reg.list()[0];
        assert!(p.clock_synced);
        assert_eq!((p.clock_offset_us, p.clock_error_us), (5_000, 500));
        assert_eq!(p.clock_path, "udp");
    }

    #[tokio::test]
    async fn a_remote_probe_is_listed_with_its_holder_and_a_local_stream_wins() {
        let mut reg = attached(&["node-1"]);
        reg.set_member("c0", "https://c0:7443");
        let (_, hello) = test_probe(1, "node-2");
        let owner = pb::ProbeOwner {
            coordinator: "c1".into(),
            coordinator_url: "https://c1:7443".into(),
            hello: Some(hello),
            remote_addr: "127.0.0.1:9".into(),
            connected_since_unix_ms: 5,
        };
        let peer = tonic::transport::Endpoint::from_static("https://c1:7443").connect_lazy();
        let (tx, mut rx) = mpsc::channel(1);
        let conn = reg.set_remote("node-2", owner, tx, peer);
        // The run code sends to it as to a local probe; the relay receives.
        let link = reg.link("node-2").expect("a relayed link");
        assert_eq!(link.conn, conn);
        link.tx
            .send(Ok(pb::CoordinatorMessage::default()))
            .await
            .unwrap();
        assert!(rx.recv().await.is_some());
        assert!(reg.local_link("node-2").is_none());
        assert!(reg.has_interface_address("198.18.0.12".parse().unwrap()));
        let holders: Vec<(String, String, bool)> = reg
            .list()
            .into_iter()
            .map(|p| (p.name, p.coordinator, p.connected))
            .collect();
        assert_eq!(
            holders,
            [
                ("node-1".into(), "c0".into(), true),
                ("node-2".into(), "c1".into(), true)
            ]
        );
        let chained = Sample {
            offset_ns: 7_000,
            delay_ns: 100_000,
            path: ClockPath::Relay,
        };
        reg.set_remote_clock("node-2", chained);
        assert_eq!(reg.clock("node-2"), Some(chained));
        // A stream held here wins over the remote record.
        let (identity, hello) = test_probe(1, "node-2");
        let (tx, _rx) = mpsc::channel(1);
        let addr = SocketAddr::from(([127, 0, 0, 1], 2));
        let here = reg
            .attach(&identity, hello, addr, tx, Instant::now(), 0, BOUND)
            .unwrap();
        assert_eq!(reg.link("node-2").map(|l| l.conn), Some(here.conn));
        assert!(reg.remote("node-2").is_none());
        assert_eq!(reg.list()[1].coordinator, "c0");
        assert!(reg.forget_remote("node-2").is_some());
        assert_eq!(reg.remote_names(), Vec::<String>::new());
    }
}
