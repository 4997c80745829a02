//! A coordinator cut off from etcd (every TCP connection to it reset, new
//! ones refused) hands its probes over to a coordinator that still reaches
//! etcd, refuses the runs it could not record with an error naming etcd, and
//! once the path heals registers again and takes runs.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use probemesh_tests::etcd::{Cuttable, EtcdCluster};
use probemesh_tests::{Daemon, assert_exit, bin, command, free_port, run, stderr, wait_for};

const PROBES: [&str; 2] = ["p-1", "p-2"];

fn coordinator(dir: &str, id: &str, listen: &str, etcd: &str) -> Daemon {
    let mut cmd = Command::new(bin("mesh-coordinator"));
    cmd.args(["--listen", listen, "--tls-dir", dir, "--heartbeat", "300ms"])
        .args(["--etcd", etcd, "--id", id]);
    let daemon = Daemon::spawn(&format!("mesh-coordinator {id}"), cmd);
    daemon.wait_for_log("coordinator serving", Duration::from_secs(20));
    daemon
}

fn meshctl(dir: &str, url: &str, args: &[&str]) -> Output {
    let mut full = vec![
        "--coordinator",
        url,
        "--tls-dir",
        dir,
        "--identity",
        "admin",
    ];
    full.extend_from_slice(args);
    command("meshctl", &full).output().expect("run meshctl")
}

/// Which coordinator holds each connected probe, as the one at `url` lists them.
fn holders(dir: &str, url: &str) -> BTreeMap<String, String> {
    probemesh_tests::holders(&meshctl(dir, url, &["probes", "-o", "json"]))
}

fn all_held_by(dir: &str, url: &str, id: &str) -> bool {
    let held = holders(dir, url);
    held.len() == PROBES.len() && held.values().all(|h| h == id)
}

fn ping(dir: &str, url: &str) -> Output {
    meshctl(
        dir,
        url,
        &[
            "ping",
            "--from",
            "p-1",
            "127.0.0.1",
            "-c",
            "1",
            "-o",
            "json",
        ],
    )
}

#[test]
fn a_coordinator_cut_off_from_etcd_hands_its_probes_over_and_rejoins() {
    let etcd = EtcdCluster::start(1);
    let path = Cuttable::new(&etcd);
    let tls = tempfile::tempdir().expect("temp dir");
    let d = tls.path().to_str().expect("utf-8 temp path").to_owned();
    assert_exit(
        &run("meshctl", &["certs", "init", "--dir", &d]),
        0,
        "certs init",
    );
    let (listen0, listen1) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let (url0, url1) = (format!("https://{listen0}"), format!("https://{listen1}"));

    // c1 reaches etcd through the path the test cuts; the probes attach to
    // it while c0 is not up yet.
    let _c1 = coordinator(&d, "c1", &listen1, &path.endpoint_list());
    let mut probes = Vec::new();
    for name in PROBES {
        let issued = run(
            "meshctl",
            &[
                "certs", "issue", "--dir", &d, "--name", name, "--role", "probe",
            ],
        );
        assert_exit(&issued, 0, "certs issue");
        let mut cmd = Command::new(bin("mesh-probe"));
        cmd.args(["--name", name, "--coordinator", &format!("{url0},{url1}")])
            .args(["--tls-dir", &d]);
        probes.push(Daemon::spawn(&format!("mesh-probe {name}"), cmd));
    }
    wait_for("both probes on c1", Duration::from_secs(20), || {
        all_held_by(&d, &url1, "c1").then_some(())
    });
    let _c0 = coordinator(&d, "c0", &listen0, &etcd.endpoint_list());
    wait_for("c0 to see c1's probes", Duration::from_secs(10), || {
        all_held_by(&d, &url0, "c1").then_some(())
    });
    assert_exit(&ping(&d, &url1), 0, "a run on c1 before the cut");

    let cut = Instant::now();
    path.cut();
    wait_for(
        "c1's probes re-attached to c0",
        Duration::from_secs(15),
        || all_held_by(&d, &url0, "c0").then_some(()),
    );
    let moved = cut.elapsed();
    let refused = ping(&d, &url1);
    eprintln!(
        "c1 cut off from etcd: its probes re-attached to c0 in {moved:?}; a run on c1: exit {:?}: {}",
        refused.status.code(),
        stderr(&refused).trim()
    );
    assert!(moved < Duration::from_secs(10), "hand-over took {moved:?}");
    assert_exit(&refused, 3, "a run on the coordinator cut off from etcd");
    assert!(stderr(&refused).contains("etcd"), "{}", stderr(&refused));
    assert_exit(&ping(&d, &url0), 0, "a run on c0 meanwhile");

    path.heal();
    let healed = Instant::now();
    let mut refused_after = 0;
    // Bounded: each attempt ends within etcd's timeouts, 20 s in all.
    while ping(&d, &url1).status.code() != Some(0) {
        refused_after += 1;
        assert!(
            healed.elapsed() < Duration::from_secs(20),
            "c1 still refuses runs 20 s after the path healed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "path healed: c1 took a run again after {:?} ({refused_after} refused meanwhile)",
        healed.elapsed()
    );
}
