//! The scale simulator against a real coordinator, small: 50 simulated
//! probes (real mTLS streams, real certificates) attach, a capture fanned
//! out to all of them completes with every probe's answer, and a probe
//! whose stream falls silent without hanging up is declared lost within
//! three heartbeat intervals. `tests/bench/scale.sh` runs the same
//! simulator at 1,000 and 10,000 probes for the figures.

use std::time::{Duration, Instant};

use probemesh_tests::sim::{self, LinkState};
use probemesh_tests::{Mesh, TEST_HEARTBEAT};

const PROBES: usize = 50;

#[test]
fn simulated_probes_attach_answer_a_fan_out_and_a_silent_one_is_lost() {
    let mesh = Mesh::start();
    let names = sim::names("sim", PROBES);
    sim::issue_certificates(mesh.dir.path(), &names).expect("sign the probes' certificates");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let coordinators = [mesh.url.clone()];
    let mut probes = rt
        .block_on(sim::spawn_all(&names, &coordinators, mesh.dir.path(), 0))
        .expect("start the simulated probes");
    let missing = rt.block_on(sim::wait_attached(&mut probes, Duration::from_secs(30)));
    assert!(missing.is_empty(), "not attached: {missing:?}");
    let listed = mesh.probes_json();
    let connected = listed.iter().filter(|p| p["connected"] == true).count();
    assert_eq!(connected, PROBES, "meshctl probes: {listed:?}");

    let record = rt
        .block_on(sim::fan_out_capture(
            &mesh.url,
            mesh.dir.path(),
            "admin",
            &names,
        ))
        .expect("the fan-out run");
    assert_eq!(record.observers.len(), PROBES, "{record:?}");
    assert_eq!(sim::captured(&record), PROBES, "{record:?}");

    // Freeze one probe: its connection stays open, nothing moves on it.
    let silent = &probes[PROBES - 1];
    silent.freeze();
    let frozen_at = Instant::now();
    let needle = format!("disconnected probe={} ", silent.name);
    mesh.coordinator
        .wait_for_log(&needle, TEST_HEARTBEAT * 3 + Duration::from_secs(5));
    let lost_after = frozen_at.elapsed();
    eprintln!("a silent probe was declared lost {lost_after:?} after it froze");
    // Its last heartbeat went out at most one interval before it froze;
    // the sweep runs once an interval.
    assert!(
        lost_after >= TEST_HEARTBEAT * 2
            && lost_after <= TEST_HEARTBEAT * 4 + Duration::from_millis(500),
        "lost after {lost_after:?}, heartbeat {TEST_HEARTBEAT:?}"
    );
    assert_eq!(silent.state(), LinkState::Frozen);
    mesh.wait_connected(&silent.name, false, Duration::from_secs(5));
    let still = probes
        .iter()
        .filter(|p| p.state() == LinkState::Attached)
        .count();
    assert_eq!(still, PROBES - 1, "the others stay attached");
    drop(probes);
}
