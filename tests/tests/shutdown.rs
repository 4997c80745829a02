//! Clean shutdown (#14, item 5) and prompt reconnects (item 8): SIGTERM with
//! probes attached and a run in flight exits 0 within 5 s, ends the run with
//! "coordinator shutting down", frees the TCP, UDP and metrics ports for a
//! new coordinator at once, and the probes come back to it; a probe whose
//! coordinator vanishes after a short attach comes back promptly.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use probemesh_tests::{Mesh, free_port};

/// `GET /healthz` on the metrics port answers 200.
fn healthz(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut response = String::new();
    conn.write_all(request.as_bytes()).is_ok()
        && conn.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.1 200")
}

#[test]
fn sigterm_with_probes_attached_exits_within_5s_and_frees_every_port() {
    let metrics = free_port();
    let mut mesh = Mesh::start_with(&["--metrics", &format!("127.0.0.1:{metrics}")]);
    for name in ["node-a", "node-b"] {
        mesh.start_probe(name);
    }
    for name in ["node-a", "node-b"] {
        mesh.wait_connected(name, true, Duration::from_secs(10));
    }
    mesh.coordinator
        .wait_for_log("udp_clock=true", Duration::from_secs(1));
    assert!(healthz(metrics), "metrics endpoint answers before shutdown");

    // A run in flight: 100 echoes 200 ms apart would take 20 s.
    let run = mesh
        .meshctl_command(
            "admin",
            &[
                "ping",
                "--from",
                "node-a",
                "127.0.0.1",
                "-c",
                "100",
                "-i",
                "200ms",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start meshctl ping");
    mesh.coordinator
        .wait_for_log("run started", Duration::from_secs(10));

    let signalled = Instant::now();
    mesh.coordinator.signal("TERM");
    let status = mesh.coordinator.wait_exit(Duration::from_secs(5));
    let took = signalled.elapsed();
    eprintln!("mesh-coordinator exited {status} {took:?} after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}\n{}",
        mesh.coordinator.stderr()
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let log = mesh.coordinator.stderr();
    assert!(log.contains("told every probe to reconnect"), "{log}");

    let out = run.wait_with_output().expect("meshctl ping ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("coordinator shutting down"), "{said}");
    assert_ne!(out.status.code(), Some(0), "{said}");

    // The same TCP, UDP and metrics ports, right away.
    let restarted = Instant::now();
    mesh.restart_coordinator();
    let log = mesh.coordinator.stderr();
    assert!(
        log.contains("udp_clock=true"),
        "UDP clock port not free:\n{log}"
    );
    assert!(healthz(metrics), "metrics port not served again");
    for name in ["node-a", "node-b"] {
        mesh.wait_connected(name, true, Duration::from_secs(5));
    }
    eprintln!(
        "probes back {:?} after the restart began",
        restarted.elapsed()
    );
    for name in ["node-a", "node-b"] {
        let probe_log = mesh.probe(name).stderr();
        assert!(probe_log.contains("coordinator going away"), "{probe_log}");
    }
}

#[test]
fn a_probe_attached_for_a_few_heartbeats_comes_back_at_base_backoff() {
    let mut mesh = Mesh::start();
    mesh.start_probe("node-a");
    mesh.wait_connected("node-a", true, Duration::from_secs(10));

    // A long outage grows the probe's backoff to its cap (5–10 s a wait).
    mesh.coordinator.kill();
    std::thread::sleep(Duration::from_secs(8));
    mesh.restart_coordinator();
    mesh.wait_connected("node-a", true, Duration::from_secs(15));

    // Attached for more than three heartbeats: the backoff is reset, so a
    // second outage costs base waits (100–200 ms, doubling), not 5–10 s.
    std::thread::sleep(probemesh_tests::TEST_HEARTBEAT * 5);
    mesh.coordinator.kill();
    let restarted = Instant::now();
    mesh.restart_coordinator();
    mesh.wait_connected("node-a", true, Duration::from_secs(15));
    let back = restarted.elapsed();
    eprintln!("probe back {back:?} after a short outage");
    assert!(back < Duration::from_secs(4), "took {back:?}");
}
