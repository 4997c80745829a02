//! The policy (#14, item 6) on a loopback mesh: refusals name their rule and
//! make meshctl exit 2; a bad policy file stops the coordinator at start
//! with exit 2; the audit log has a line per Control call and survives a
//! restart.

use std::process::Stdio;
use std::time::Duration;

use probemesh_tests::{Mesh, assert_exit, run, stderr};

/// A mesh with probe `node-a` under the policy `json`, and the policy file
/// (kept for restarts).
fn mesh_with(json: &str) -> (Mesh, tempfile::NamedTempFile) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), json).expect("write policy");
    let path = file.path().to_str().expect("utf-8").to_owned();
    let mut mesh = Mesh::start_with(&["--policy", &path]);
    mesh.start_probe("node-a");
    mesh.wait_connected("node-a", true, Duration::from_secs(10));
    (mesh, file)
}

/// Asserts meshctl exited 2 naming `rule`.
fn refused_by(out: &std::process::Output, rule: &str) {
    assert_exit(out, 2, rule);
    let err = stderr(out);
    assert!(err.contains(&format!("policy rule {rule}: ")), "{err}");
}

#[test]
fn targets_and_intervals_are_refused_with_the_rule_name() {
    let (mesh, _policy) = mesh_with("{}");
    let port = mesh.url.rsplit(':').next().expect("port").to_owned();
    refused_by(
        &mesh.meshctl(&[
            "tcping",
            "--from",
            "node-a",
            &format!("127.0.0.1:{port}"),
            "-c",
            "1",
        ]),
        "targets.deny-coordinator-ports",
    );
    refused_by(
        &mesh.meshctl(&["ping", "--from", "node-a", "203.0.113.9", "-c", "1"]),
        "targets.default-deny",
    );
    refused_by(
        &mesh.meshctl(&[
            "ping",
            "--from",
            "node-a",
            "127.0.0.1",
            "-c",
            "2",
            "-i",
            "1ms",
        ]),
        "limits.min-interval",
    );
    assert_exit(
        &mesh.meshctl(&[
            "ping",
            "--from",
            "node-a",
            "127.0.0.1",
            "-c",
            "2",
            "-i",
            "20ms",
        ]),
        0,
        "a ping within the policy",
    );
}

#[test]
fn over_rate_and_over_concurrency_runs_are_refused_with_the_rule_name() {
    let (mut mesh, _policy) = mesh_with(
        r#"{"limits": {"rate_burst": 3, "rate_per_second": 0.01, "max_runs_per_probe": 1}}"#,
    );
    // One long run holds node-a's only slot.
    let mut long = mesh
        .meshctl_command(
            "admin",
            &[
                "ping",
                "--from",
                "node-a",
                "127.0.0.1",
                "-c",
                "50",
                "-i",
                "200ms",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a long ping");
    mesh.coordinator
        .wait_for_log("run started", Duration::from_secs(10));
    refused_by(
        &mesh.meshctl(&["ping", "--from", "node-a", "127.0.0.1", "-c", "1"]),
        "limits.max-runs-per-probe",
    );
    let _ = long.kill();
    let _ = long.wait();
    // The requester left: the run ends and frees its slot.
    probemesh_tests::wait_for("the long run to end", Duration::from_secs(10), || {
        let out = mesh.meshctl(&["ping", "--from", "node-a", "127.0.0.1", "-c", "1"]);
        (out.status.code() == Some(0)).then_some(())
    });
    // Two of the three tokens are spent (the long run, the last ping).
    assert_exit(
        &mesh.meshctl(&["ping", "--from", "node-a", "127.0.0.1", "-c", "1"]),
        0,
        "the burst's last run",
    );
    refused_by(
        &mesh.meshctl(&["ping", "--from", "node-a", "127.0.0.1", "-c", "1"]),
        "limits.rate",
    );

    // The audit log: a line per call, allowed or denied with the rule, and
    // it survives a restart.
    let audit = mesh.dir.path().join("store/audit.jsonl");
    let lines = |path: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .expect("audit log")
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    };
    let before = lines(&audit);
    let starts: Vec<_> = before
        .iter()
        .filter(|l| l["call"] == "Control.StartRun")
        .collect();
    assert!(
        starts
            .iter()
            .any(|l| l["decision"] == "deny" && l["rule"] == "limits.rate")
    );
    assert!(
        starts
            .iter()
            .any(|l| l["decision"] == "deny" && l["rule"] == "limits.max-runs-per-probe")
    );
    assert!(
        starts
            .iter()
            .all(|l| l["identity"] == "admin" && l["role"] == "operator")
    );
    assert!(
        starts
            .iter()
            .any(|l| l["decision"] == "allow" && l["target"] == "ping from node-a to 127.0.0.1")
    );
    assert!(before.iter().any(|l| l["call"] == "Control.ListProbes"));
    mesh.restart_coordinator();
    assert_exit(&mesh.meshctl(&["runs"]), 0, "meshctl runs");
    let after = lines(&audit);
    assert_eq!(after[..before.len()], before[..], "earlier lines kept");
    assert_eq!(
        after.last().expect("a new line")["call"],
        "Control.ListRuns"
    );
}

#[test]
fn a_bad_policy_file_stops_the_coordinator_at_start_with_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().to_str().expect("utf-8");
    assert_exit(
        &run("meshctl", &["certs", "init", "--dir", d]),
        0,
        "certs init",
    );
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        "{\n  \"limits\": {\n    \"min_interval_ms\": 10,\n    \"max_runs\": 3\n  }\n}\n",
    )
    .expect("write policy");
    let out = run(
        "mesh-coordinator",
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-dir",
            d,
            "--policy",
            policy.to_str().expect("utf-8"),
        ],
    );
    assert_exit(&out, 2, "a bad policy file");
    let err = stderr(&out);
    assert!(
        err.contains("unknown field `max_runs`") && err.contains("line 4"),
        "{err}"
    );
}
