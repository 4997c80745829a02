//! The store's behaviour, one test body for both backends: the local store
//! in a temporary directory and a real one-member etcd on loopback
//! (`probemesh_tests::etcd::EtcdCluster`).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use probemesh_proto::pb;
use probemesh_proto::pki::{CertAuthority, Validity};
use probemesh_proto::token::JoinToken;
use probemesh_tests::etcd::EtcdCluster;

use super::etcd::EtcdStore;
use super::local::LocalStore;
use super::{Issuance, IssuedCertificate, StateStore};
use crate::error::Error;
use crate::etcd::{EtcdSettings, connect};
use crate::revocation::Revocation;

const NOW_MS: i64 = 1_800_000_000_000;

/// Where the state lives in a test.
enum Backend {
    Local(tempfile::TempDir),
    Etcd(EtcdCluster),
}

impl Backend {
    /// A store as a coordinator opens it at start: a restart is another call.
    async fn open(&self, coordinator: &str) -> Arc<dyn StateStore> {
        match self {
            Backend::Local(dir) => Arc::new(LocalStore::open(dir.path().into()).unwrap()),
            Backend::Etcd(cluster) => {
                let settings = EtcdSettings::new(cluster.endpoints());
                let client = connect(&settings).await.unwrap();
                Arc::new(EtcdStore::new(client, &settings, coordinator.into()))
            }
        }
    }

    /// The stores two coordinators would use at once: with the local store
    /// there is only one coordinator, so both are the same.
    async fn two(&self) -> (Arc<dyn StateStore>, Arc<dyn StateStore>) {
        let a = self.open("coordinator-a").await;
        let b = match self {
            Backend::Local(_) => Arc::clone(&a),
            Backend::Etcd(_) => self.open("coordinator-b").await,
        };
        (a, b)
    }
}

/// Runs `body` on a fresh `backend`. etcd is started outside the runtime
/// (its harness waits for a leader with its own).
fn run<Fut: Future<Output = ()>>(backend: fn() -> Backend, body: fn(Arc<Backend>) -> Fut) {
    let backend = Arc::new(backend());
    probemesh_tests::runtime().block_on(body(backend));
}

fn local() -> Backend {
    Backend::Local(tempfile::tempdir().unwrap())
}

fn etcd() -> Backend {
    Backend::Etcd(EtcdCluster::start(1))
}

/// A test for each backend.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn local() {
                super::run(super::local, super::$name);
            }
            #[test]
            fn etcd() {
                super::run(super::etcd, super::$name);
            }
        }
    )*};
}

on_both!(
    runs_are_listed_newest_first_and_survive_a_restart,
    a_token_is_redeemed_exactly_once,
    a_withdrawn_token_is_refused,
    revocations_and_certificates_are_kept,
);

fn record(id: &str, started_unix_ms: i64, state: pb::RunState) -> pb::RunRecord {
    let mut record = pb::RunRecord {
        run_id: id.into(),
        requester: "admin".into(),
        started_unix_ms,
        ..Default::default()
    };
    record.set_state(state);
    record
}

fn ids(page: &[pb::RunRecord]) -> Vec<&str> {
    page.iter().map(|r| r.run_id.as_str()).collect()
}

async fn runs_are_listed_newest_first_and_survive_a_restart(backend: Arc<Backend>) {
    let store = backend.open("coordinator-a").await;
    for (i, id) in ["aa01", "aa02", "bb03", "cc04", "dd05"].iter().enumerate() {
        let started = NOW_MS + i64::try_from(i).unwrap() * 1_000;
        store
            .write_run(record(id, started, pb::RunState::Running))
            .await
            .unwrap();
        if *id != "dd05" {
            store
                .write_run(record(id, started, pb::RunState::Done))
                .await
                .unwrap();
        }
    }
    let first = store.runs_page("", 2).await.unwrap();
    assert_eq!(ids(&first.items), ["dd05", "cc04"]);
    assert_eq!(first.next_token, "cc04");
    let second = store.runs_page(&first.next_token, 2).await.unwrap();
    assert_eq!(ids(&second.items), ["bb03", "aa02"]);
    let last = store.runs_page(&second.next_token, 2).await.unwrap();
    assert_eq!(ids(&last.items), ["aa01"]);
    assert_eq!(last.next_token, "");
    assert!(matches!(
        store.runs_page("zz99", 2).await,
        Err(Error::InvalidRequest(_))
    ));
    // By id, by a unique prefix; an ambiguous prefix finds nothing.
    let bb = store.run("bb03").await.unwrap().unwrap();
    assert_eq!(bb.state(), pb::RunState::Done);
    assert_eq!(store.run("b").await.unwrap(), Some(bb));
    assert_eq!(store.run("aa").await.unwrap(), None);
    assert_eq!(store.run("ee").await.unwrap(), None);
    // The writer sees its own run running.
    assert_eq!(
        store.run("dd05").await.unwrap().unwrap().state(),
        pb::RunState::Running
    );

    // A coordinator started afterwards (the writer gone) sees every run,
    // the one left running as interrupted.
    drop(store);
    let after = backend.open("coordinator-a2").await;
    let all = after.runs_page("", 10).await.unwrap();
    assert_eq!(ids(&all.items), ["dd05", "cc04", "bb03", "aa02", "aa01"]);
    assert_eq!(all.items[0].state(), pb::RunState::Interrupted);
    assert!(
        all.items[1..]
            .iter()
            .all(|r| r.state() == pb::RunState::Done)
    );
    assert_eq!(
        after.run("dd05").await.unwrap().unwrap().state(),
        pb::RunState::Interrupted
    );
}

fn authority() -> CertAuthority {
    let now = time::OffsetDateTime::from_unix_timestamp(NOW_MS / 1_000).unwrap();
    CertAuthority::generate(Validity::ca(now)).unwrap()
}

fn token_of(created: &pb::CreateJoinTokenResponse) -> JoinToken {
    created.token.parse().unwrap()
}

async fn a_token_is_redeemed_exactly_once(backend: Arc<Backend>) {
    let ca = authority();
    let (a, b) = backend.two().await;
    let created = a
        .create_token("cloudvm-1", Duration::from_secs(600), &ca, NOW_MS)
        .await
        .unwrap();
    let refused = b
        .create_token("cloudvm-1", Duration::from_secs(600), &ca, NOW_MS)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::NameTaken(m) if m.contains("pending")),
        "{refused}"
    );
    let token = token_of(&created);
    // Two coordinators redeem at the same moment: one succeeds.
    let (ra, rb) = tokio::join!(
        a.redeem_token(&token, NOW_MS),
        b.redeem_token(&token, NOW_MS)
    );
    let names: Vec<String> = [ra, rb].into_iter().filter_map(Result::ok).collect();
    assert_eq!(names, ["cloudvm-1"]);
    let again = a.redeem_token(&token, NOW_MS).await.unwrap_err();
    assert!(again.to_string().contains("already used"), "{again}");
    // Spent, the name may have a new token; the store outlives a restart.
    drop((a, b));
    let after = backend.open("coordinator-a2").await;
    let next = after
        .create_token("cloudvm-1", Duration::from_secs(600), &ca, NOW_MS)
        .await
        .unwrap();
    assert_eq!(
        after
            .redeem_token(&token_of(&next), NOW_MS + 1)
            .await
            .unwrap(),
        "cloudvm-1"
    );
    let expired = after
        .create_token("cloudvm-2", Duration::from_secs(60), &ca, NOW_MS)
        .await
        .unwrap();
    let late = after
        .redeem_token(&token_of(&expired), NOW_MS + 61_000)
        .await
        .unwrap_err();
    assert!(late.to_string().contains("expired"), "{late}");
}

async fn a_withdrawn_token_is_refused(backend: Arc<Backend>) {
    let ca = authority();
    let (a, b) = backend.two().await;
    let created = a
        .create_token("cloudvm-3", Duration::from_secs(600), &ca, NOW_MS)
        .await
        .unwrap();
    assert_eq!(b.withdraw_tokens("cloudvm-3").await.unwrap(), 1);
    assert_eq!(b.withdraw_tokens("cloudvm-3").await.unwrap(), 0);
    let refused = a
        .redeem_token(&token_of(&created), NOW_MS)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("unknown"), "{refused}");
}

async fn revocations_and_certificates_are_kept(backend: Arc<Backend>) {
    let (a, b) = backend.two().await;
    let mut followed = b.follow_revocations();
    let revocation = Revocation {
        name: "node-1".into(),
        serial: String::new(),
        revoked_unix_ms: NOW_MS,
        by: "admin".into(),
    };
    a.add_revocation(&revocation).await.unwrap();
    if let Some(rx) = followed.as_mut() {
        // The other coordinator hears of it.
        let started = Instant::now();
        let heard = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert_eq!(heard, Some(revocation.clone()));
        println!(
            "revocation seen by the other coordinator after {:?}",
            started.elapsed()
        );
    }
    let certificate = IssuedCertificate {
        serial: "0a1b2c".into(),
        name: "cloudvm-1".into(),
        role: "probe".into(),
        not_after_unix: NOW_MS / 1_000 + 3_600,
        issued_unix_ms: NOW_MS,
        by: Issuance::Join,
    };
    a.record_certificate(&certificate).await.unwrap();
    drop((a, b));
    let after = backend.open("coordinator-a2").await;
    assert_eq!(after.revocations().await.unwrap(), [revocation]);
    assert_eq!(
        after.certificate("0a1b2c").await.unwrap(),
        Some(certificate)
    );
    assert_eq!(after.certificate("ffff").await.unwrap(), None);
}

#[test]
fn an_unreachable_etcd_is_an_error_naming_it_within_the_time_bound() {
    let mut cluster = EtcdCluster::start(1);
    let endpoints = cluster.endpoint_list();
    probemesh_tests::runtime().block_on(async {
        let settings = EtcdSettings::new(cluster.endpoints());
        let client = connect(&settings).await.unwrap();
        let store = EtcdStore::new(client, &settings, "coordinator-a".into());
        cluster.kill(0);
        let started = Instant::now();
        let refused = store
            .write_run(record("ee06", NOW_MS, pb::RunState::Running))
            .await
            .unwrap_err();
        let took = started.elapsed();
        println!("a write to a dead etcd failed after {took:?}: {refused}");
        assert!(matches!(refused, Error::Etcd { .. }), "{refused}");
        assert!(refused.to_string().contains(&endpoints), "{refused}");
        assert!(took < Duration::from_secs(15), "{took:?}");
        assert_eq!(
            tonic::Status::from(refused).code(),
            tonic::Code::FailedPrecondition
        );
    });
}

#[test]
fn the_revocation_watch_comes_back_after_etcd_restarts() {
    let mut cluster = EtcdCluster::start(1);
    let runtime = probemesh_tests::runtime();
    let settings = EtcdSettings::new(cluster.endpoints());
    let open = |owner: &str| {
        let client = runtime.block_on(connect(&settings)).unwrap();
        EtcdStore::new(client, &settings, owner.into())
    };
    let (a, b) = (open("coordinator-a"), open("coordinator-b"));
    let mut followed = runtime.block_on(async { b.follow_revocations() }).unwrap();
    let revocation = |name: &str| Revocation {
        name: name.into(),
        serial: String::new(),
        revoked_unix_ms: NOW_MS,
        by: "admin".into(),
    };
    cluster.kill(0);
    // Give the watch time to notice it lost etcd.
    std::thread::sleep(Duration::from_secs(1));
    cluster.restart(0);
    let restarted = Instant::now();
    runtime.block_on(async {
        a.add_revocation(&revocation("node-2")).await.unwrap();
        let heard = tokio::time::timeout(Duration::from_secs(10), followed.recv())
            .await
            .expect("the watch came back within 10 s");
        assert_eq!(heard, Some(revocation("node-2")));
    });
    println!(
        "a revocation made after etcd restarted reached the other coordinator {:?} after the restart",
        restarted.elapsed()
    );
}
