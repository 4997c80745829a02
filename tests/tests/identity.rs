//! Identity you can trust and withdraw (issue 14, items 2 and 3): reserved
//! names refused by every entry point, `mesh-probe join` never overwriting,
//! one live stream per certificate, join tokens only for free names,
//! revocation that drops a live stream, renewal over the stream.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use probemesh_proto::identity::{Identity, RESERVED_NAMES, Role};
use probemesh_proto::pb;
use probemesh_proto::pki::{CertAuthority, TlsDir, Validity};
use probemesh_tests::{Mesh, assert_exit, copy_into, run, runtime, stderr, stdout};
use sha2::{Digest as _, Sha256};

/// `genuine` with its name replaced by `name` and a matching check: what an
/// attacker (or a coordinator without the name rules) could hand out.
fn forge_token(genuine: &str, name: &str) -> String {
    const FIXED: usize = 4 + 32 + 32 + 8;
    let body = URL_SAFE_NO_PAD
        .decode(genuine.strip_prefix("pmj1.").expect("token prefix"))
        .expect("base64url");
    let mut forged = body[..FIXED].to_vec();
    forged.extend_from_slice(name.as_bytes());
    let sum = Sha256::new()
        .chain_update(b"pmj1.")
        .chain_update(&forged)
        .finalize();
    forged.extend_from_slice(&sum[..4]);
    format!("pmj1.{}", URL_SAFE_NO_PAD.encode(forged))
}

/// Every file of `dir`, by name, with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (
                p.file_name().expect("name").to_string_lossy().into_owned(),
                bytes,
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn reserved_names_are_refused_by_every_entry_point() {
    let mesh = Mesh::start();
    let ca = CertAuthority::load(&TlsDir::new(mesh.dir.path())).expect("ca");
    let genuine = mesh.join_token("cloudvm-1", "1h");
    let host = tempfile::tempdir().expect("tmp");
    for name in RESERVED_NAMES {
        let out = run(
            "meshctl",
            &[
                "certs",
                "issue",
                "--dir",
                mesh.tls_dir(),
                "--name",
                name,
                "--role",
                "probe",
                "--force",
            ],
        );
        assert_exit(&out, 2, "certs issue of a reserved name");
        assert!(stderr(&out).contains("is reserved"), "{}", stderr(&out));

        let out = mesh.meshctl(&["join-token", "create", "--name", name]);
        assert_exit(&out, 2, "join-token create for a reserved name");
        assert!(stderr(&out).contains("is reserved"), "{}", stderr(&out));

        // The coordinator refuses the same request made without meshctl.
        let (create, joined, enroll) = runtime().block_on(async {
            let channel = control_channel(&mesh, "admin").await;
            let create = pb::control_client::ControlClient::new(channel)
                .create_join_token(pb::CreateJoinTokenRequest {
                    name: name.to_owned(),
                    ttl_seconds: 60,
                })
                .await
                .expect_err("reserved token name");
            let tls = probemesh_proto::tls::pinned_client_config(&ca.pin());
            let channel = probemesh_proto::tls::connect(&mesh.url, tls)
                .await
                .expect("tls");
            let mut enrollment = pb::enrollment_client::EnrollmentClient::new(channel);
            let joined = enrollment
                .join(pb::JoinRequest {
                    token: forge_token(&genuine, name),
                    csr_pem: String::new(),
                })
                .await
                .expect_err("forged token");
            let enroll = enrollment
                .enroll_node(pb::NodeEnrollRequest {
                    node_name: name.to_owned(),
                    service_account_token: "t".to_owned(),
                    csr_pem: String::new(),
                })
                .await
                .expect_err("reserved node name");
            (create, joined, enroll)
        });
        for status in [create, joined, enroll] {
            assert!(
                status.message().contains("is reserved"),
                "{name}: {status:?}"
            );
        }

        // A forged token: the probe refuses it before dialling anyone.
        let out = mesh.enroll(&forge_token(&genuine, name), host.path());
        assert_exit(&out, 2, "join with a reserved-name token");
        assert!(stderr(&out).contains("is reserved"), "{}", stderr(&out));
    }
    // Hello: a probe certificate named `coordinator`, made with the CA's
    // library (no command issues one), is refused at attach.
    let rogue = tempfile::tempdir().expect("tmp");
    let issued = ca
        .issue(
            "coordinator",
            Role::Probe,
            Validity::leaf(time::OffsetDateTime::now_utc()),
        )
        .expect("issue");
    let rd = rogue.path();
    std::fs::write(rd.join("coordinator.pem"), &issued.cert_pem).expect("write");
    std::fs::write(rd.join("coordinator-key.pem"), &issued.key_pem).expect("write");
    std::fs::write(rd.join("ca.pem"), ca.cert_pem()).expect("write");
    let probe = mesh.spawn_probe("coordinator", rd.to_str().expect("utf-8").to_owned());
    probe.wait_for_log("is reserved", Duration::from_secs(10));
    assert!(
        !mesh
            .probes_json()
            .iter()
            .any(|p| p["name"] == "coordinator"),
        "a reserved name never registers"
    );
}

async fn control_channel(mesh: &Mesh, identity: &str) -> tonic::transport::Channel {
    let tls = probemesh_proto::tls::client_config(&TlsDir::new(mesh.dir.path()), identity)
        .expect("client config");
    probemesh_proto::tls::connect(&mesh.url, tls)
        .await
        .expect("connect")
}

#[test]
fn the_ca_directory_survives_join_attempts() {
    let mesh = Mesh::start();
    let ca_dir = mesh.dir.path();
    mesh.issue("node-x", "probe");
    let before = snapshot(ca_dir);

    // A token named `ca` would have written ca-key.pem: refused, exit 2.
    let genuine = mesh.join_token("cloudvm-1", "1h");
    let out = mesh.enroll(&forge_token(&genuine, "ca"), ca_dir);
    assert_exit(&out, 2, "join with a token named ca");
    assert!(stderr(&out).contains("is reserved"), "{}", stderr(&out));

    // A name whose files are there: refused before the coordinator is
    // asked, so the token stays good for another directory.
    let t = mesh.join_token("node-x", "1h");
    let out = mesh.enroll(&t, ca_dir);
    assert_exit(&out, 2, "join over existing NAME files");
    let err = stderr(&out);
    assert!(
        err.contains("node-x-key.pem already exists") && err.contains("another --tls-dir"),
        "{err}"
    );
    assert_eq!(
        snapshot(ca_dir),
        before,
        "nothing in the CA directory changed"
    );

    // A directory holding another CA: refused, that CA untouched.
    let foreign = tempfile::tempdir().expect("tmp");
    let fd = foreign.path().to_str().expect("utf-8");
    assert_exit(
        &run("meshctl", &["certs", "init", "--dir", fd]),
        0,
        "foreign init",
    );
    let foreign_before = snapshot(foreign.path());
    let out = mesh.enroll(&t, foreign.path());
    assert_exit(&out, 2, "join into another CA's directory");
    assert!(
        stderr(&out).contains("holds another CA"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(foreign.path()), foreign_before);

    // The same token into an empty directory: enrolled, key private.
    let host = tempfile::tempdir().expect("tmp");
    assert_exit(&mesh.enroll(&t, host.path()), 0, "join into a fresh dir");
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
    };
    assert_eq!(mode(&host.path().join("node-x-key.pem")), 0o600);
    // Joining a second time into it: refused, files kept.
    let kept = snapshot(host.path());
    let out = mesh.enroll(&mesh.join_token("cloudvm-1b", "1h"), host.path());
    assert_exit(&out, 0, "another name, same directory");
    let again = mesh.join_token("cloudvm-1c", "1h");
    std::fs::write(host.path().join("cloudvm-1c.pem"), b"mine").expect("write");
    let out = mesh.enroll(&again, host.path());
    assert_exit(&out, 2, "existing certificate");
    assert_eq!(
        std::fs::read(host.path().join("cloudvm-1c.pem")).expect("read"),
        b"mine"
    );
    assert!(
        kept.iter()
            .all(|(n, b)| snapshot(host.path()).contains(&(n.clone(), b.clone())))
    );

    // And the CA's own directory, for a new name: ca.pem (the same CA) is
    // left as it is.
    assert_exit(
        &mesh.enroll(&mesh.join_token("cloudvm-2", "1h"), ca_dir),
        0,
        "join into the CA dir",
    );
    let after = snapshot(ca_dir);
    for (name, bytes) in &before {
        assert!(
            after.contains(&(name.clone(), bytes.clone())),
            "{name} changed"
        );
    }
}

/// Issue 14, item 2: a stolen probe certificate no longer takes over the
/// probe. The impostor is refused while the real probe's stream answers,
/// and a task for the probe reaches the real one.
#[test]
fn an_impostor_with_the_same_certificate_is_refused_while_the_probe_answers() {
    let mut mesh = Mesh::start();
    mesh.start_probe("node-a");
    mesh.wait_connected("node-a", true, Duration::from_secs(10));
    let stolen = tempfile::tempdir().expect("tmp");
    for file in ["ca.pem", "node-a.pem", "node-a-key.pem"] {
        copy_into(mesh.dir.path(), stolen.path(), file);
    }
    let impostor = mesh.spawn_probe("node-a", stolen.path().to_str().expect("utf-8").to_owned());
    impostor.wait_for_log(
        "already has a live stream (the same certificate",
        Duration::from_secs(10),
    );
    let out = mesh.meshctl(&[
        "ping",
        "--from",
        "node-a",
        "127.0.0.1",
        "-c",
        "3",
        "-o",
        "json",
    ]);
    assert_exit(&out, 0, "ping from node-a while the impostor knocks");
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(run.to_string().contains("127.0.0.1"), "{run}");
    assert!(
        !impostor.stderr().contains("attached to coordinator"),
        "the impostor never attached:\n{}",
        impostor.stderr()
    );
    let log = mesh.coordinator.stderr();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("probe attached") && l.contains("node-a"))
            .count(),
        1,
        "one attach of node-a, the real probe's:\n{log}"
    );
    assert!(
        mesh.probe("node-a")
            .stderr()
            .contains("attached to coordinator")
    );
}

/// Issue 14, item 2: a join token for a name a probe holds would hand the
/// name to another host. Refused, and so is a second pending token; after
/// `meshctl certs revoke NAME` the name is free again.
#[test]
fn join_tokens_only_for_names_no_probe_holds() {
    let mut mesh = Mesh::start();
    mesh.start_probe("node-a");
    mesh.wait_connected("node-a", true, Duration::from_secs(10));
    let out = mesh.meshctl(&["join-token", "create", "--name", "node-a"]);
    assert_exit(&out, 2, "token for a held name");
    assert!(
        stderr(&out).contains("is registered")
            && stderr(&out).contains("meshctl certs revoke node-a"),
        "{}",
        stderr(&out)
    );
    mesh.join_token("cloudvm-1", "1h");
    let out = mesh.meshctl(&["join-token", "create", "--name", "cloudvm-1"]);
    assert_exit(&out, 2, "second token for a pending name");
    assert!(stderr(&out).contains("is pending"), "{}", stderr(&out));

    // Revoking the pending name withdraws its token.
    let out = mesh.meshctl(&["certs", "revoke", "cloudvm-1", "-o", "json"]);
    assert_exit(&out, 0, "revoke cloudvm-1");
    let revoked: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(revoked["tokens_withdrawn"], 1, "{revoked}");
    mesh.join_token("cloudvm-1", "1h");
}

/// Issue 14, item 2: `meshctl certs revoke` drops a live stream within a
/// second, the certificate cannot reconnect, and a certificate issued
/// afterwards for the same name works.
#[test]
fn a_revoked_certificate_loses_its_live_stream_at_once() {
    let mut mesh = Mesh::start();
    mesh.start_probe("node-a");
    mesh.wait_connected("node-a", true, Duration::from_secs(10));
    let started = Instant::now();
    let out = mesh.meshctl(&["certs", "revoke", "node-a", "-o", "json"]);
    assert_exit(&out, 0, "revoke node-a");
    let revoked: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        revoked["dropped_streams"],
        serde_json::json!(["node-a"]),
        "{revoked}"
    );
    let probe = mesh.probe("node-a");
    probemesh_tests::wait_for(
        "the probe sees its stream end",
        Duration::from_secs(1),
        || {
            probe
                .stderr()
                .contains("was revoked by admin")
                .then_some(())
        },
    );
    let took = started.elapsed();
    eprintln!(
        "revoked stream dropped {} ms after `meshctl certs revoke` started",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    // It cannot come back: the coordinator refuses it on connect.
    mesh.coordinator
        .wait_for_log("refused: certificate revoked", Duration::from_secs(10));
    assert!(
        !mesh
            .probes_json()
            .iter()
            .any(|p| p["name"] == "node-a" && p["connected"] == true),
        "the revoked certificate is not connected"
    );
    // Nor may it call Control: an operator certificate revoked by serial.
    mesh.issue("ops", "operator");
    let serial = Identity::from_cert_der(&der_of(&mesh.dir.path().join("ops.pem")))
        .expect("identity")
        .serial;
    assert_exit(
        &mesh.meshctl_as("ops", &["probes"]),
        0,
        "ops before revocation",
    );
    let out = mesh.meshctl(&["certs", "revoke", &serial]);
    assert_exit(&out, 0, "revoke by serial");
    assert!(stdout(&out).contains(&serial), "{}", stdout(&out));
    let out = mesh.meshctl_as("ops", &["probes"]);
    assert_exit(&out, 4, "revoked operator");
    assert!(
        stderr(&out).contains("was revoked by admin"),
        "{}",
        stderr(&out)
    );

    // A certificate issued after the revocation works.
    std::thread::sleep(Duration::from_millis(1_100));
    let _ = mesh.probes.pop();
    let out = run(
        "meshctl",
        &[
            "certs",
            "issue",
            "--dir",
            mesh.tls_dir(),
            "--name",
            "node-a",
            "--role",
            "probe",
            "--force",
        ],
    );
    assert_exit(&out, 0, "re-issue node-a");
    let again = mesh.spawn_probe("node-a", mesh.tls_dir().to_owned());
    mesh.wait_connected("node-a", true, Duration::from_secs(10));
    drop(again);
}

/// The DER of the first certificate in PEM file `path`.
fn der_of(path: &Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(path).expect("read certificate");
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64")
}

/// Issue 14, item 2: probe certificates are short-lived and renewed over
/// the stream. With a 6 s lifetime the probe asks at about 4 s, stores the
/// new certificate and key, and its next connection uses them: revoking the
/// old certificate's serial drops the stream, and the probe comes back with
/// the renewed one.
#[test]
fn a_probe_renews_its_certificate_over_the_stream() {
    let mesh = Mesh::start_with(&["--probe-cert-lifetime", "6s"]);
    let host = tempfile::tempdir().expect("tmp");
    let t = mesh.join_token("cloudvm-1", "1h");
    let mut cmd = std::process::Command::new(probemesh_tests::bin("mesh-probe"));
    cmd.args([
        "join",
        "--coordinator",
        &mesh.url,
        "--token",
        &t,
        "--tls-dir",
    ])
    .arg(host.path());
    let probe = probemesh_tests::Daemon::spawn("mesh-probe join", cmd);
    mesh.wait_connected("cloudvm-1", true, Duration::from_secs(10));
    let cert = host.path().join("cloudvm-1.pem");
    let first = Identity::from_cert_der(&der_of(&cert)).expect("identity");
    let issued = first.not_before_unix + probemesh_proto::pki::BACKDATE.whole_seconds();
    assert_eq!(
        first.not_after_unix - issued,
        6,
        "the coordinator's lifetime"
    );

    probe.wait_for_log(
        "certificate renewed over the stream",
        Duration::from_secs(10),
    );
    mesh.coordinator.wait_for_log(
        "probe certificate renewed over the stream",
        Duration::from_secs(2),
    );
    let renewed = Identity::from_cert_der(&der_of(&cert)).expect("identity");
    assert_eq!(renewed.name, "cloudvm-1");
    assert_ne!(renewed.serial, first.serial);
    assert!(renewed.not_after_unix > first.not_after_unix);
    let mode = {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(host.path().join("cloudvm-1-key.pem"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode, 0o600);

    // The live stream still runs on the first certificate: revoking it
    // drops the stream, and the probe reconnects with the renewed one.
    let out = mesh.meshctl(&["certs", "revoke", &first.serial, "-o", "json"]);
    assert_exit(&out, 0, "revoke the first certificate");
    let revoked: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        revoked["dropped_streams"],
        serde_json::json!(["cloudvm-1"]),
        "{revoked}"
    );
    probe.wait_for_log("was revoked by admin", Duration::from_secs(2));
    mesh.wait_connected("cloudvm-1", true, Duration::from_secs(5));
}
