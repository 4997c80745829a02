//! End to end on loopback with real processes: certificates, a coordinator,
//! two probes, remote ping/tcping with real figures, and liveness (a frozen
//! probe is declared disconnected within three heartbeats; a killed one at
//! once; both come back).

use std::time::Duration;

use probemesh_tests::{Mesh, TEST_HEARTBEAT, assert_exit, stdout};

#[test]
fn probes_register_run_tests_and_track_liveness() {
    let mut mesh = Mesh::start();
    mesh.start_probe("node-a");
    mesh.start_probe("node-b");
    for name in ["node-a", "node-b"] {
        let p = mesh.wait_connected(name, true, Duration::from_secs(10));
        assert_eq!(p["role"], "node");
        assert!(
            p["addr"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1:")),
            "{p}"
        );
        assert!(p["version"].as_str().is_some_and(|v| !v.is_empty()));
        assert!(p["interfaces"].as_array().is_some_and(|i| !i.is_empty()));
    }

    // The clock exchanges ran: both probes share this kernel's clock, so the
    // offset must sit within its own error bound (plus scheduling slack).
    let p = mesh.wait_connected("node-a", true, Duration::from_secs(5));
    let offset = p["clock_offset_us"].as_i64().expect("offset");
    let error = p["clock_error_us"].as_i64().expect("error bound");
    assert!(
        offset.abs() <= error + 1_000,
        "offset {offset} us, bound {error} us"
    );

    // tcping from node-a to a listener this test owns.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let target = listener.local_addr().expect("addr").to_string();
    let out = mesh.meshctl(&[
        "tcping", "--from", "node-a", &target, "-c", "3", "-i", "100ms", "-o", "json",
    ]);
    assert_exit(&out, 0, "tcping to a listener");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["summary"]["attempted"], 3);
    assert_eq!(report["summary"]["connected"], 3);
    assert!(
        report["summary"]["latency_ms"]["avg"]
            .as_f64()
            .is_some_and(|v| v > 0.0),
        "{report}"
    );
    assert_eq!(report["run_id"].as_str().map(str::len), Some(16));
    assert_eq!(report["trace_id"].as_str().map(str::len), Some(32));
    drop(listener);

    // tcping to a closed port: refused, exit 1 (a fault was found).
    let out = mesh.meshctl(&[
        "tcping", "--from", "node-b", &target, "-c", "2", "-i", "100ms",
    ]);
    assert_exit(&out, 1, "tcping to a closed port");
    assert!(
        stdout(&out).contains("Connection refused"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("Attempted = 2, Connected = 0"),
        "{}",
        stdout(&out)
    );

    // ping from node-b: real replies with RTTs, printed like ping.
    let out = mesh.meshctl(&[
        "ping",
        "--from",
        "node-b",
        "127.0.0.1",
        "-c",
        "3",
        "-i",
        "100ms",
    ]);
    assert_exit(&out, 0, "ping loopback");
    let text = stdout(&out);
    assert!(
        text.contains("3 packets transmitted, 3 received, 0% packet loss"),
        "{text}"
    );
    assert!(text.contains("rtt min/avg/max/mdev = "), "{text}");
    assert!(text.contains("icmp_seq=3"), "{text}");

    // The runs are in the history.
    let out = mesh.meshctl(&["runs", "-o", "json"]);
    assert_exit(&out, 0, "runs");
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0]["kind"], "ping");
    assert_eq!(runs[0]["requester"], "admin");
    let id = runs[0]["run_id"].as_str().expect("id");
    let out = mesh.meshctl(&["runs", &id[..8]]);
    assert_exit(&out, 0, "runs ID prefix");
    assert!(
        stdout(&out).contains("3 packets transmitted"),
        "{}",
        stdout(&out)
    );

    // Freeze node-b: its connection stays open but heartbeats stop. It must
    // show disconnected within three heartbeats, plus one sweep tick and the
    // time meshctl itself takes to ask (polled, on a possibly busy machine).
    mesh.probe("node-b").signal("STOP");
    let frozen_at = std::time::Instant::now();
    mesh.wait_connected("node-b", false, Duration::from_secs(5));
    let took = frozen_at.elapsed();
    assert!(
        took <= TEST_HEARTBEAT * 4 + Duration::from_millis(700),
        "disconnect took {took:?}"
    );
    // A run from a disconnected probe is inconclusive (exit 3), not a hang.
    let out = mesh.meshctl(&["ping", "--from", "node-b", "127.0.0.1", "-c", "1"]);
    assert_exit(&out, 3, "ping from a disconnected probe");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not connected"));
    // Thawed, it reconnects by itself.
    mesh.probe("node-b").signal("CONT");
    mesh.wait_connected("node-b", true, Duration::from_secs(10));

    // Killed: disconnected at once (the stream closes); restarted: back.
    mesh.probe("node-a").kill();
    mesh.wait_connected("node-a", false, Duration::from_secs(3));
    let restarted = mesh.spawn_probe("node-a", mesh.tls_dir().to_owned());
    mesh.wait_connected("node-a", true, Duration::from_secs(10));
    drop(restarted);
}

#[test]
fn bad_input_is_refused_with_exit_2() {
    let mut mesh = Mesh::start();
    mesh.start_probe("node-a");
    mesh.wait_connected("node-a", true, Duration::from_secs(10));
    let cases: &[(&[&str], &str)] = &[
        (
            &["ping", "--from", "node-a", "127.0.0.1", "-s", "65508"],
            "65508",
        ),
        (&["ping", "--from", "node-a", "127.0.0.1", "-c", "0"], "0"),
        (
            &["ping", "--from", "node-a", "127.0.0.1", "-i", "fast"],
            "invalid duration 'fast'",
        ),
        (&["ping", "--from", "node-a", "127.0.0.1", "-t", "0"], "0"),
        (
            &["ping", "--from", "node-x", "127.0.0.1"],
            "no probe named 'node-x'",
        ),
        (&["ping", "--from", "node-a", "svc:web"], "NAMESPACE/NAME"),
        (&["tcping", "--from", "node-a", "127.0.0.1"], "needs a port"),
        (&["tcping", "--from", "node-a", "127.0.0.1:0"], "not a port"),
        (&["runs", "ffffffffffff"], "no run"),
    ];
    for (args, needle) in cases {
        let out = mesh.meshctl(args);
        assert_exit(&out, 2, &format!("meshctl {args:?}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "meshctl {args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // An unresolvable name is bad input, reported by the probe that tried.
    let out = mesh.meshctl(&[
        "ping",
        "--from",
        "node-a",
        "no-such-host.invalid",
        "-c",
        "1",
    ]);
    assert_exit(&out, 2, "unresolvable host");
}
