//! The coordinator's shared state, the clock it runs on and its settings
//! (link timing, payload policy).
//!
//! The lowest layer of the run machinery: it holds the stores and registries
//! and knows nothing of how runs are planned or executed.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use probemesh_proto::pb;
use probemesh_proto::pki::CertAuthority;
use probemesh_proto::viewer_token::ViewerKey;

use crate::dispatch::Dispatcher;
use crate::inventory::InventorySource;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::registry::Registry;
use crate::revocation::Revocations;
use crate::runs::live::LiveRuns;
use crate::shutdown::Shutdown;
use crate::store::{Issuance, IssuedCertificate, StateStore};

/// Wall-clock time, injected so clock-sync and expiry logic can be tested.
pub trait WallClock: Send + Sync + std::fmt::Debug {
    /// Nanoseconds since the Unix epoch.
    fn now_unix_ns(&self) -> i64;

    /// Milliseconds since the Unix epoch.
    fn now_unix_ms(&self) -> i64 {
        self.now_unix_ns() / 1_000_000
    }
}

/// The system's realtime clock (`CLOCK_REALTIME`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_unix_ns(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

/// Timing knobs of the probe links.
#[derive(Debug, Clone, Copy)]
pub struct LinkTiming {
    /// How often probes send heartbeats; three missed ones disconnect a probe.
    pub heartbeat: Duration,
    /// How often a clock exchange runs per idle probe once synced (a run
    /// about to arm on the clock asks for a burst first).
    pub clock_interval: Duration,
    /// How long a new stream may take to send its Hello.
    pub hello_timeout: Duration,
}

impl Default for LinkTiming {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            clock_interval: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(10),
        }
    }
}

impl LinkTiming {
    /// Silence after which a probe is declared disconnected.
    pub fn liveness_bound(&self) -> Duration {
        self.heartbeat * 3
    }
}

/// Whether full-payload captures may be granted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PayloadPolicy {
    /// `--allow-payload-capture`: operators may ask for full packets.
    pub allowed: bool,
}

/// Who may enroll a node probe with a Kubernetes ServiceAccount token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEnrollment {
    /// The probe DaemonSet's ServiceAccount namespace.
    pub namespace: String,
    /// The probe DaemonSet's ServiceAccount name.
    pub service_account: String,
    /// The audience the projected token must be for.
    pub audience: String,
}

impl NodeEnrollment {
    /// The user name a TokenReview gives this ServiceAccount's tokens.
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
}

/// Everything the services share.
#[derive(Debug)]
pub struct Coordinator {
    registry: Mutex<Registry>,
    /// Tasks in flight.
    pub dispatcher: Dispatcher,
    /// Runs, join tokens, revocations and signed certificates, local or in
    /// etcd.
    pub store: Arc<dyn StateStore>,
    /// Revoked certificates, in memory: what the store holds (loaded at
    /// start, fed as others revoke).
    pub revocations: Revocations,
    /// Signs join CSRs.
    pub ca: CertAuthority,
    /// The cluster inventory, if any.
    pub inventory: InventorySource,
    /// Link timing.
    pub timing: LinkTiming,
    /// Wall clock.
    pub clock: Arc<dyn WallClock>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Whether full-payload captures may be granted.
    pub payload_policy: PayloadPolicy,
    /// Node enrollment by ServiceAccount token, when enabled.
    pub node_enrollment: Option<NodeEnrollment>,
    /// Lifetime of the probe certificates this coordinator signs (join,
    /// node enrollment, renewal over the stream).
    pub probe_cert_lifetime: Duration,
    /// The port probes and clients reach this coordinator on (0 when
    /// unknown); run captures leave its traffic out.
    pub listen_port: u16,
    /// Shutdown as the runs see it: stop taking runs, end those in flight.
    pub shutdown: Shutdown,
    /// What runs may aim at and how hard, and the audit log.
    pub policy: Policy,
    /// The runs in flight here, as the web view shows them.
    pub live: LiveRuns,
    /// Mints and checks the web view's viewer tokens.
    pub viewer_key: ViewerKey,
    /// The port the web view is served on (0: none).
    pub web_port: u16,
    /// Mesh matrix tasks in flight per source probe, across every matrix
    /// run on this coordinator.
    pub matrix_slots: ProbeSlots,
    /// With several coordinators: why this one is out of the shared state
    /// (its etcd lease lost), while it is; runs are refused meanwhile.
    out_of_mesh: Mutex<Option<String>>,
}

impl Coordinator {
    /// Assembles the state.
    pub fn new(
        store: Arc<dyn StateStore>,
        ca: CertAuthority,
        inventory: InventorySource,
        timing: LinkTiming,
        clock: Arc<dyn WallClock>,
    ) -> Self {
        let viewer_key = ViewerKey::derive(&ca);
        Self {
            registry: Mutex::new(Registry::default()),
            dispatcher: Dispatcher::default(),
            store,
            revocations: Revocations::default(),
            ca,
            inventory,
            timing,
            clock,
            metrics: Metrics::default(),
            payload_policy: PayloadPolicy::default(),
            node_enrollment: None,
            probe_cert_lifetime: Duration::from_secs(
                u64::try_from(probemesh_proto::pki::PROBE_LIFETIME.whole_seconds()).unwrap_or(0),
            ),
            listen_port: 0,
            shutdown: Shutdown::default(),
            policy: Policy::default(),
            out_of_mesh: Mutex::new(None),
            live: LiveRuns::default(),
            viewer_key,
            web_port: 0,
            matrix_slots: ProbeSlots::default(),
        }
    }

    /// Sets whether full-payload captures may be granted (default: no).
    pub fn with_payload_policy(mut self, policy: PayloadPolicy) -> Self {
        self.payload_policy = policy;
        self
    }

    /// Uses `revocations` (default: an empty list in memory).
    pub fn with_revocations(mut self, revocations: Revocations) -> Self {
        self.revocations = revocations;
        self
    }

    /// Enables node enrollment by ServiceAccount token.
    pub fn with_node_enrollment(mut self, enrollment: Option<NodeEnrollment>) -> Self {
        self.node_enrollment = enrollment;
        self
    }

    /// Sets the lifetime of the probe certificates this coordinator signs.
    pub fn with_probe_cert_lifetime(mut self, lifetime: Duration) -> Self {
        self.probe_cert_lifetime = lifetime;
        self
    }

    /// The validity of a probe certificate signed now.
    pub fn probe_validity(&self) -> probemesh_proto::pki::Validity {
        probemesh_proto::pki::Validity::starting_at(
            time::OffsetDateTime::now_utc(),
            time::Duration::try_from(self.probe_cert_lifetime).unwrap_or(time::Duration::DAY),
        )
    }

    /// Records `certificate_pem`, just signed for `by`, in the store: a
    /// certificate that cannot be recorded is not handed out.
    pub async fn record_issued(
        &self,
        certificate_pem: &str,
        by: Issuance,
    ) -> crate::error::Result<()> {
        let issued = IssuedCertificate::of_pem(certificate_pem, self.clock.now_unix_ms(), by)?;
        self.store.record_certificate(&issued).await
    }

    /// Sets the policy in force (default: the built-in rules, audit to the log).
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Records the port the web view is served on.
    pub fn with_web_port(mut self, port: u16) -> Self {
        self.web_port = port;
        self
    }

    /// Records the port this coordinator listens on.
    pub fn with_listen_port(mut self, port: u16) -> Self {
        self.listen_port = port;
        self
    }

    /// Detaches every probe whose stream this coordinator holds and tells
    /// each to reconnect (a `GoAway` saying `reason`: with several
    /// coordinators it dials the next one), failing their tasks in flight;
    /// returns how many there were.
    pub fn send_every_probe_away(&self, reason: &str) -> usize {
        let links = self.registry().detach_all();
        self.metrics.set_connected(0);
        for (name, link) in &links {
            let go_away = pb::CoordinatorMessage {
                msg: Some(pb::coordinator_message::Msg::GoAway(pb::GoAway {
                    reason: reason.to_owned(),
                    retry_after_ms: None,
                })),
            };
            // A full queue means a stuck probe: it reconnects when the stream ends.
            let _ = link.tx.try_send(Ok(go_away));
            self.metrics.forget_clock(name);
            self.dispatcher.fail_connection(name, link.conn);
        }
        links.len()
    }

    /// Marks this coordinator out of the shared state (`Some(why)`: its
    /// etcd lease is lost) or back in (`None`).
    pub fn set_out_of_mesh(&self, why: Option<String>) {
        *self
            .out_of_mesh
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = why;
    }

    /// Why this coordinator is out of the shared state, while it is.
    pub fn out_of_mesh(&self) -> Option<String> {
        self.out_of_mesh
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The registry, locked. Hold it briefly and never across an await.
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Most mesh matrix tasks in flight on one source probe at once, across
/// every matrix run on this coordinator: two matrices started together
/// load a probe no more than one does.
pub const MATRIX_TASKS_PER_PROBE: usize = 8;

/// One semaphore of [`MATRIX_TASKS_PER_PROBE`] permits per probe name,
/// shared by every run that asks for it.
#[derive(Debug, Default)]
pub struct ProbeSlots {
    slots: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl ProbeSlots {
    /// `probe`'s semaphore. Entries no run holds and no task uses are
    /// dropped on the way, so the table stays as large as the probes in
    /// use.
    pub fn of(&self, probe: &str) -> Arc<tokio::sync::Semaphore> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots.retain(|_, s| {
            Arc::strong_count(s) > 1 || s.available_permits() < MATRIX_TASKS_PER_PROBE
        });
        slots
            .entry(probe.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MATRIX_TASKS_PER_PROBE)))
            .clone()
    }
}

#[cfg(test)]
mod slot_tests {
    use super::*;

    #[test]
    fn runs_asking_for_one_probe_share_its_permits_and_idle_entries_go() {
        let slots = ProbeSlots::default();
        let a = slots.of("node-1");
        let b = slots.of("node-1");
        assert!(Arc::ptr_eq(&a, &b));
        let held = a.clone().try_acquire_many_owned(3).expect("permits");
        assert_eq!(b.available_permits(), MATRIX_TASKS_PER_PROBE - 3);
        drop((a, b));
        // Permits still held keep the entry; once free and unheld it goes.
        assert_eq!(
            slots.of("node-1").available_permits(),
            MATRIX_TASKS_PER_PROBE - 3
        );
        drop(held);
        let _ = slots.of("node-2");
        assert_eq!(slots.slots.lock().expect("lock").len(), 1);
    }
}
