//! External hosts joining with a token: success, then refusal of a reused,
//! an expired, an altered and a wrongly pinned token.

use std::time::Duration;

use probemesh_proto::pki::{CertAuthority, TlsDir};
use probemesh_proto::token::JoinToken;
use probemesh_tests::{Daemon, Mesh, assert_exit, bin, run, stderr};

#[test]
fn join_flow_and_refusals() {
    let mesh = Mesh::start();
    let host = tempfile::tempdir().expect("tmp");
    let hd = host.path().to_str().expect("utf-8").to_owned();

    // Success: join, then run as the probe; it registers as external.
    let t = mesh.join_token("cloudvm-1", "1h");
    let mut cmd = std::process::Command::new(bin("mesh-probe"));
    cmd.args([
        "join",
        "--coordinator",
        &mesh.url,
        "--token",
        &t,
        "--tls-dir",
        &hd,
    ]);
    let joined = Daemon::spawn("mesh-probe join", cmd);
    let p = mesh.wait_connected("cloudvm-1", true, Duration::from_secs(10));
    assert_eq!(p["role"], "external");
    assert!(host.path().join("cloudvm-1.pem").exists());
    assert!(host.path().join("cloudvm-1-key.pem").exists());
    assert!(
        !mesh.dir.path().join("cloudvm-1-key.pem").exists(),
        "the key never leaves the host"
    );
    mesh.coordinator
        .wait_for_log("external probe enrolled", Duration::from_secs(2));
    drop(joined);
    // The coordinator recorded the certificate it signed.
    let issued = std::fs::read_to_string(mesh.dir.path().join("store/issued.jsonl"))
        .expect("store/issued.jsonl");
    let line: serde_json::Value =
        serde_json::from_str(issued.lines().next().expect("one line")).expect("JSON line");
    assert_eq!(
        (&line["name"], &line["role"], &line["by"]),
        (&"cloudvm-1".into(), &"probe".into(), &"join".into()),
        "{line}"
    );
    assert!(
        line["serial"].as_str().is_some_and(|s| !s.is_empty()),
        "{line}"
    );

    // Reused.
    let again = tempfile::tempdir().expect("tmp");
    let out = mesh.enroll(&t, again.path());
    assert_exit(&out, 2, "reused token");
    assert!(stderr(&out).contains("already used"), "{}", stderr(&out));
    assert!(
        !again.path().join("cloudvm-1.pem").exists(),
        "nothing written on refusal"
    );

    // Expired.
    let short = mesh.join_token("cloudvm-2", "1s");
    std::thread::sleep(Duration::from_millis(1_500));
    let out = mesh.enroll(&short, again.path());
    assert_exit(&out, 2, "expired token");
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));

    // Altered: the name swapped for another in an otherwise valid token.
    let fresh = mesh.join_token("cloudvm-3", "1h");
    let mut parsed: JoinToken = fresh.parse().expect("token parses");
    parsed.name = "node-1".parse().expect("name");
    let out = mesh.enroll(&parsed.to_string(), again.path());
    assert_exit(&out, 2, "altered token");
    assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));

    // Garbled: not a token at all.
    let mut garbled = fresh.clone();
    garbled.truncate(fresh.len() - 5);
    let out = mesh.enroll(&garbled, again.path());
    assert_exit(&out, 2, "truncated token");

    // Pinned to another CA: the host refuses the coordinator.
    let foreign = tempfile::tempdir().expect("tmp");
    assert_exit(
        &run(
            "meshctl",
            &[
                "certs",
                "init",
                "--dir",
                foreign.path().to_str().expect("utf-8"),
            ],
        ),
        0,
        "foreign",
    );
    let mut pinned: JoinToken = fresh.parse().expect("token parses");
    pinned.ca_pin = CertAuthority::load(&TlsDir::new(foreign.path()))
        .expect("ca")
        .pin();
    let out = mesh.enroll(&pinned.to_string(), again.path());
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("CA fingerprint does not match"),
        "{}",
        stderr(&out)
    );
    // The genuine token was not spent by the refused attempts.
    let out = mesh.enroll(&fresh, again.path());
    assert_exit(&out, 0, "genuine token after refusals");
}
