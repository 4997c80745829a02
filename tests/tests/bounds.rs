//! Issue 14, items 7 and 8: inputs that cost work or are stored are bounded
//! before the work, and list replies come in bounded pages, so one oversized
//! Hello or stored run cannot make `meshctl probes` / `meshctl runs` fail
//! for everyone; and meshctl refuses bad usage with exit 2.

use std::time::Duration;

use probemesh_proto::pb;
use probemesh_proto::pki::TlsDir;
use probemesh_tests::{Mesh, assert_exit, runtime};
use prost::Message as _;

/// A Hello with 3.5 MB of labels once made every `meshctl probes` fail
/// (over gRPC's 4 MB message limit). It is refused at attach, naming the
/// bound, and the listing keeps working.
#[test]
fn a_hello_with_oversized_labels_is_refused_and_probes_keep_listing() {
    let mut mesh = Mesh::start();
    mesh.start_probe("node-a");
    mesh.issue("node-big", "probe");
    mesh.wait_connected("node-a", true, Duration::from_secs(10));
    let status = runtime().block_on(async {
        let tls = probemesh_proto::tls::client_config(&TlsDir::new(mesh.dir.path()), "node-big")
            .expect("probe tls");
        let channel = probemesh_proto::tls::connect(&mesh.url, tls)
            .await
            .expect("connects");
        let hello = pb::Hello {
            name: "node-big".into(),
            labels: (0..35)
                .map(|i| (format!("k{i}"), "v".repeat(100_000)))
                .collect(),
            ..Default::default()
        };
        let first = pb::ProbeMessage {
            msg: Some(pb::probe_message::Msg::Hello(hello)),
        };
        pb::probe_link_client::ProbeLinkClient::new(channel)
            .attach(tokio_stream::iter([first]))
            .await
            .expect_err("an oversized hello is refused")
    });
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("hello refused") && status.message().contains("at most 262144"),
        "{status:?}"
    );
    let names: Vec<_> = mesh
        .probes_json()
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["node-a"]);
}

/// A stored run of `filter_bytes` of capture filter, as older coordinators
/// wrote them.
fn old_record(i: usize, filter_bytes: usize) -> pb::RunRecord {
    pb::RunRecord {
        run_id: format!("{i:016x}"),
        requester: "admin".into(),
        started_unix_ms: 1_700_000_000_000 + i64::try_from(i).unwrap_or_default(),
        request: Some(pb::RunRequest {
            from: "node-a".into(),
            kind: Some(pb::run_request::Kind::Capture(pb::CaptureRequest {
                on: vec!["node-a".into()],
                filter: "x".repeat(filter_bytes),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

/// 700 stored runs (more than one page holds), one of them with a 4.5 MB
/// filter from before requests were bounded, which once broke `meshctl
/// runs` across restarts: meshctl pages through all of them, the oversized
/// one listed trimmed with a result that says so.
#[test]
fn meshctl_runs_pages_through_a_long_history_and_trims_an_oversized_record() {
    const RUNS: usize = 700;
    const HUGE: usize = 300;
    let mesh = Mesh::start_prepared(|store| {
        let mut bytes = Vec::new();
        for i in 0..RUNS {
            let filter = if i == HUGE { 4_500_000 } else { 20 };
            old_record(i, filter)
                .encode_length_delimited(&mut bytes)
                .expect("encodes");
        }
        std::fs::write(store.join("runs.pb"), bytes).expect("old store");
    });
    let out = mesh.meshctl(&["runs", "--limit", "0", "-o", "json"]);
    assert_exit(&out, 0, "meshctl runs --limit 0");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON rows");
    let ids: Vec<_> = rows
        .iter()
        .map(|r| r["run_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let newest_first: Vec<_> = (0..RUNS).rev().map(|i| format!("{i:016x}")).collect();
    assert_eq!(ids, newest_first);
    let huge = &rows[RUNS - 1 - HUGE];
    assert!(
        huge["result"]
            .as_str()
            .unwrap_or_default()
            .contains("record trimmed"),
        "{huge}"
    );

    let out = mesh.meshctl(&["runs", "-o", "json"]);
    assert_exit(&out, 0, "meshctl runs");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON rows");
    assert_eq!(rows.len(), 20, "the default --limit");
    let out = mesh.meshctl(&["runs", &format!("{HUGE:016x}")]);
    assert_exit(&out, 0, "meshctl runs ID of the oversized record");
}

/// Issue 14, item 8: bad usage exits 2 with the rule and the way out, and
/// nothing is run or stored.
#[test]
fn bad_usage_is_refused_with_exit_2_and_nothing_is_stored() {
    let mut mesh = Mesh::start();
    mesh.start_probe("node-a");
    mesh.wait_connected("node-a", true, Duration::from_secs(10));
    let refused = |args: &[&str], says: &str| {
        let out = mesh.meshctl(args);
        assert_exit(&out, 2, &args.join(" "));
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(said.contains(says), "{args:?}: {said}");
    };
    // `-i 0` once became 1 s without a word.
    refused(
        &["ping", "--from", "node-a", "127.0.0.1", "-i", "0s"],
        "must be more than 0",
    );
    // A port on a ping target was dropped without a word.
    refused(
        &["ping", "--from", "node-a", "127.0.0.1:80", "-c", "1"],
        "meshctl tcping --from node-a 127.0.0.1:80",
    );
    // Tabs and newlines were stored and printed raw.
    refused(
        &["ping", "--from", "node-a", "127.0.0.1\n", "-c", "1"],
        "control character '\\n'",
    );
    refused(
        &["tcping", "--from", "node-a", "127.0.0.1:80\tx", "-c", "1"],
        "control character '\\t'",
    );
    // --ttl 0s once made a token; over 7 days is refused too.
    refused(
        &["join-token", "create", "--name", "ext-1", "--ttl", "0s"],
        "from 1s to 7days",
    );
    refused(
        &["join-token", "create", "--name", "ext-1", "--ttl", "8d"],
        "from 1s to 7days",
    );
    refused(&["web-token", "--ttl", "13h"], "from 1s to 12h");
    // A URL that is none is bad usage (2), not an unreachable coordinator (4).
    let out = probemesh_tests::run(
        "meshctl",
        &[
            "--coordinator",
            "notaurl",
            "--tls-dir",
            mesh.tls_dir(),
            "probes",
        ],
    );
    assert_exit(&out, 2, "--coordinator notaurl");
    let runs = mesh.meshctl(&["runs", "-o", "json"]);
    assert_exit(&runs, 0, "meshctl runs");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&runs.stdout).expect("JSON rows");
    assert!(rows.is_empty(), "nothing ran: {rows:?}");
}

/// Issue 14, item 8: after the coordinator dies (kill -9), meshctl's hint
/// blamed the TLS handshake. It says the coordinator is down or restarting.
#[test]
fn a_dead_coordinator_is_not_blamed_on_tls() {
    let mut mesh = Mesh::start();
    mesh.start_probe("node-a");
    mesh.wait_connected("node-a", true, Duration::from_secs(10));
    std::thread::scope(|s| {
        let ping = s.spawn(|| {
            mesh.meshctl(&[
                "ping",
                "--from",
                "node-a",
                "127.0.0.1",
                "-c",
                "50",
                "-i",
                "100ms",
            ])
        });
        std::thread::sleep(Duration::from_millis(1500));
        mesh.coordinator.signal("KILL");
        let out = ping.join().expect("ping thread");
        assert_exit(&out, 4, "ping while the coordinator dies");
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!said.contains("tls handshake"), "{said}");
        assert!(said.contains("down or restarting"), "{said}");
    });
    let out = mesh.meshctl(&["probes"]);
    assert_exit(&out, 4, "probes with the coordinator gone");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!said.contains("tls handshake"), "{said}");
}
