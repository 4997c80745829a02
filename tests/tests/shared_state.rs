//! The coordinator's state in a real etcd, end to end with real processes
//! on loopback: runs and join tokens survive a coordinator restart; two
//! coordinators on one etcd see each other's runs and a token redeemed on
//! one is refused on the other; killing the etcd leader of three members
//! stops runs for less than 10 s; with etcd unreachable a run is refused
//! (exit 3, naming etcd and its endpoints) and accepted again once etcd is
//! back; a revocation on one coordinator drops the stream another holds; a
//! run whose coordinator is killed reads `interrupted`. Each test prints
//! how long recovery took.

use std::process::Output;
use std::time::{Duration, Instant};

use probemesh_tests::etcd::EtcdCluster;
use probemesh_tests::{Mesh, ONE_ECHO, assert_exit, command, run, stderr};

/// Longest pause of runs allowed when the etcd leader is killed.
const LEADER_LOSS_BOUND: Duration = Duration::from_secs(10);
/// Longest wait for runs to be accepted again after etcd came back.
const REJOIN_BOUND: Duration = Duration::from_secs(15);

/// A coordinator on `cluster` with probe `node-a` attached.
fn mesh_on(cluster: &EtcdCluster) -> Mesh {
    let mut mesh = Mesh::start_on_etcd(&cluster.endpoint_list());
    mesh.start_probe("node-a");
    mesh.wait_connected("node-a", true, Duration::from_secs(10));
    mesh
}

/// meshctl as `admin` against the coordinator at `url`.
fn meshctl_at(mesh: &Mesh, url: &str, args: &[&str]) -> Output {
    let mut full = vec![
        "--coordinator",
        url,
        "--tls-dir",
        mesh.tls_dir(),
        "--identity",
        "admin",
    ];
    full.extend_from_slice(args);
    command("meshctl", &full)
        .output()
        .unwrap_or_else(|e| panic!("cannot run meshctl: {e}"))
}

/// One cheap run on the coordinator at `url`: a single echo to loopback.
fn ping_at(mesh: &Mesh, url: &str) -> Output {
    meshctl_at(mesh, url, ONE_ECHO)
}

fn run_id(out: &Output) -> String {
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ping -o json");
    report["run_id"].as_str().expect("run_id").to_owned()
}

/// Run `id`'s state as `meshctl runs` on `url` lists it.
fn state_at(mesh: &Mesh, url: &str, id: &str) -> Option<String> {
    let out = meshctl_at(mesh, url, &["runs", "--limit", "1000", "-o", "json"]);
    assert_exit(&out, 0, "meshctl runs");
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("runs JSON");
    runs.iter()
        .find(|r| r["run_id"] == id)
        .and_then(|r| r["state"].as_str())
        .map(str::to_owned)
}

/// Runs a ping every 200 ms until one succeeds or `limit` passes; returns
/// how long it took and how many failed before.
fn until_a_run_succeeds(mesh: &Mesh, limit: Duration) -> (Duration, usize, String) {
    let started = Instant::now();
    let mut failed = 0;
    // Bounded by `limit` (each attempt is bounded by etcd's timeouts).
    while started.elapsed() < limit {
        let out = ping_at(mesh, &mesh.url);
        if out.status.code() == Some(0) {
            return (started.elapsed(), failed, run_id(&out));
        }
        failed += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no run succeeded within {limit:?} ({failed} failed)");
}

/// `mesh-probe join --enroll-only` with `token` at `url` into a fresh dir.
fn enroll_at(url: &str, token: &str) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    run(
        "mesh-probe",
        &[
            "join",
            "--enroll-only",
            "--coordinator",
            url,
            "--token",
            token,
            "--tls-dir",
            dir.path().to_str().expect("utf-8 directory"),
        ],
    )
}

/// The certificate records under the default prefix, read from etcd itself.
fn certificates_in(cluster: &EtcdCluster) -> Vec<serde_json::Value> {
    probemesh_tests::runtime().block_on(async {
        let mut client = etcd_client::Client::connect(cluster.endpoints(), None)
            .await
            .expect("connect to etcd");
        let got = client
            .get(
                "/probemesh/certificates/",
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .expect("read certificates");
        got.kvs()
            .iter()
            .map(|kv| serde_json::from_slice(kv.value()).expect("a JSON record"))
            .collect()
    })
}

#[test]
fn runs_and_tokens_survive_a_restart_and_are_shared_by_two_coordinators() {
    let cluster = EtcdCluster::start(1);
    let mut mesh = mesh_on(&cluster);
    let before = ping_at(&mesh, &mesh.url);
    assert_exit(&before, 0, "a run on etcd");
    let id = run_id(&before);
    let token = mesh.join_token("cloudvm-1", "1h");
    let second_token = mesh.join_token("cloudvm-2", "1h");

    mesh.restart_coordinator();
    mesh.wait_connected("node-a", true, Duration::from_secs(10));
    assert_eq!(state_at(&mesh, &mesh.url, &id).as_deref(), Some("done"));
    let again = mesh.meshctl(&["join-token", "create", "--name", "cloudvm-1", "--ttl", "1h"]);
    assert_exit(
        &again,
        2,
        "a second token for a name with one pending, after a restart",
    );
    assert!(stderr(&again).contains("pending"), "{}", stderr(&again));
    let after = ping_at(&mesh, &mesh.url);
    assert_exit(&after, 0, "a run after the restart");

    // A second coordinator on the same etcd sees both runs.
    let (_other, other_url) = mesh.start_another_coordinator();
    assert_eq!(state_at(&mesh, &other_url, &id).as_deref(), Some("done"));
    assert_eq!(
        state_at(&mesh, &other_url, &run_id(&after)).as_deref(),
        Some("done")
    );
    // A token created before the restart is redeemed on the second
    // coordinator, then refused on the first.
    assert_exit(
        &enroll_at(&other_url, &token),
        0,
        "join on the second coordinator",
    );
    let signed = certificates_in(&cluster);
    assert!(
        signed
            .iter()
            .any(|c| c["name"] == "cloudvm-1" && c["by"] == "join"),
        "the signed certificate is recorded in etcd: {signed:?}"
    );
    let refused = enroll_at(&mesh.url, &token);
    assert_ne!(refused.status.code(), Some(0), "a spent token joined twice");
    assert!(
        stderr(&refused).contains("already used"),
        "{}",
        stderr(&refused)
    );
    // The same token at both at once: exactly one joins.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| enroll_at(&mesh.url, &second_token));
        let b = s.spawn(|| enroll_at(&other_url, &second_token));
        (a.join().expect("join a"), b.join().expect("join b"))
    });
    let joined = [&a, &b]
        .iter()
        .filter(|o| o.status.code() == Some(0))
        .count();
    assert_eq!(joined, 1, "{}\n{}", stderr(&a), stderr(&b));
}

#[test]
fn killing_the_etcd_leader_pauses_runs_less_than_10_s() {
    let mut cluster = EtcdCluster::start(3);
    let mesh = mesh_on(&cluster);
    let before = ping_at(&mesh, &mesh.url);
    assert_exit(&before, 0, "a run before the leader is killed");
    let leader = cluster.leader();
    cluster.kill(leader);
    let (recovered, failed, id) = until_a_run_succeeds(&mesh, LEADER_LOSS_BOUND);
    eprintln!(
        "etcd leader (member {leader}) killed: a run succeeded {recovered:?} later ({failed} refused before)"
    );
    assert!(recovered < LEADER_LOSS_BOUND, "{recovered:?}");
    // Nothing recorded before was lost; the new run is listed too.
    assert_eq!(
        state_at(&mesh, &mesh.url, &run_id(&before)).as_deref(),
        Some("done")
    );
    assert_eq!(state_at(&mesh, &mesh.url, &id).as_deref(), Some("done"));
}

#[test]
fn with_etcd_unreachable_a_run_is_refused_and_accepted_again_once_it_is_back() {
    let mut cluster = EtcdCluster::start(1);
    let mesh = mesh_on(&cluster);
    let before = ping_at(&mesh, &mesh.url);
    assert_exit(&before, 0, "a run with etcd up");
    cluster.kill(0);
    let started = Instant::now();
    let refused = ping_at(&mesh, &mesh.url);
    let took = started.elapsed();
    assert_exit(&refused, 3, "a run that cannot be recorded");
    let err = stderr(&refused);
    assert!(
        err.contains("etcd") && err.contains(&cluster.endpoint_list()),
        "the error names etcd and its endpoints: {err}"
    );
    eprintln!("with etcd down a run was refused after {took:?}: {err}");

    cluster.restart(0);
    let (recovered, failed, id) = until_a_run_succeeds(&mesh, REJOIN_BOUND);
    eprintln!("etcd back: a run succeeded {recovered:?} later ({failed} refused before)");
    assert_eq!(
        state_at(&mesh, &mesh.url, &run_id(&before)).as_deref(),
        Some("done")
    );
    assert_eq!(state_at(&mesh, &mesh.url, &id).as_deref(), Some("done"));
}

#[test]
fn a_revocation_on_one_coordinator_drops_the_stream_another_holds() {
    let cluster = EtcdCluster::start(1);
    let mut mesh = mesh_on(&cluster);
    let (_other, other_url) = mesh.start_another_coordinator();
    let started = Instant::now();
    let out = meshctl_at(
        &mesh,
        &other_url,
        &["certs", "revoke", "node-a", "-o", "json"],
    );
    assert_exit(&out, 0, "revoke node-a on the other coordinator");
    let probe = mesh.probe("node-a");
    probemesh_tests::wait_for(
        "the probe's stream on the first coordinator ends",
        Duration::from_secs(2),
        || {
            probe
                .stderr()
                .contains("was revoked by admin")
                .then_some(())
        },
    );
    eprintln!(
        "a revocation on one coordinator dropped the stream another holds {} ms later",
        started.elapsed().as_millis()
    );
}

#[test]
fn a_run_in_flight_when_its_coordinator_is_killed_reads_interrupted() {
    let cluster = EtcdCluster::start(1);
    let mut mesh = mesh_on(&cluster);
    let id = mesh.kill_coordinator_mid_run();
    assert_eq!(
        state_at(&mesh, &mesh.url, &id).as_deref(),
        Some("interrupted")
    );
}
