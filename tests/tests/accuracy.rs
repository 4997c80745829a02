//! The accuracy benchmark as a test: a fixed, seeded sample of composed lab
//! faults (`tests/bench/accuracy.py --cases 20 --seed 7 --healthy 4`), each
//! injected the real way and diagnosed by `meshctl probe` from evidence
//! only. It fails on any claim without its evidence, any false alarm on the
//! healthy lab, and class accuracy under the floor measured when the rules
//! last changed (a ratchet: raise it as the rules improve, never lower it
//! to let a regression through).

use std::process::Command;

use probemesh_tests::bin;
use probemesh_tests::lab::{Lab, text};

/// Class accuracy the sample must reach, percent.
const CLASS_FLOOR: f64 = 95.0;

/// The number after `prefix` on the line that starts with it.
fn figure(out: &str, prefix: &str) -> f64 {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no '{prefix}' line in:\n{out}"))
}

#[test]
fn a_seeded_sample_of_composed_faults_is_diagnosed_from_evidence() {
    let Some(lab) = Lab::take() else { return };
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{root}/bench/accuracy.py"))
        .args(["--cases", "20", "--seed", "7", "--healthy", "4"])
        .env("MESHCTL", bin("meshctl"))
        .env("MESH_CONFIG", lab.config())
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the benchmark did not run through:\n{}",
        text(&out)
    );
    eprintln!("{stdout}");
    assert_eq!(figure(&stdout, "unsupported claims: "), 0.0, "{stdout}");
    assert_eq!(figure(&stdout, "false alarms: "), 0.0, "{stdout}");
    let class = figure(&stdout, "class accuracy: ");
    assert!(
        class >= CLASS_FLOOR,
        "class accuracy {class} % < {CLASS_FLOOR} %:\n{stdout}"
    );
}
