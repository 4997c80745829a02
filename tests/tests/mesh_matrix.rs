//! `meshctl mesh` in the lab: on the healthy lab every cell of the 4×4
//! matrix (cloudvm-1 and node-1..3, both directions of every pair) passes;
//! with `icmp-blocked` in, the failing cells are exactly the pairs the
//! fault's mechanism breaks, computed from the mechanism and the lab's
//! addresses (DESIGN §4, `probemesh_tests::matrix`), not read from the
//! output.

use std::collections::BTreeSet;

use probemesh_tests::lab::Lab;
use probemesh_tests::matrix::{PROBES, Pair, cells_with, icmp_blocked_pairs};

#[test]
fn the_matrix_fails_exactly_the_pairs_a_fault_breaks() {
    let Some(lab) = Lab::up() else { return };

    let healthy = lab.json(&["mesh"], 0);
    let names = |k: &str| -> Vec<String> {
        healthy[k]
            .as_array()
            .expect(k)
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let mut targets = names("targets");
    targets.sort();
    assert_eq!(names("sources"), PROBES, "rows");
    assert_eq!(targets, PROBES, "columns");
    assert_eq!(
        cells_with(&healthy, &["fail", "degraded"]),
        BTreeSet::<Pair>::new(),
        "the healthy lab has failing cells: {healthy:#}"
    );
    // Per source: 3 nodes × (address, pod network, NodePort) + cloudvm-1's address.
    assert_eq!(healthy["cells"].as_array().map(Vec::len), Some(4 * 10));
    let ok = cells_with(&healthy, &["ok"]);
    // cloudvm-1 is outside the cluster: its pod-network cells are skipped.
    assert_eq!(ok.len(), 40 - 3, "{healthy:#}");

    // icmp-blocked: node-2 drops ICMP echo requests to its own addresses
    // (the mechanism, in `icmp_blocked_pairs`).
    lab.fault("icmp-blocked");
    let faulty = lab.json(&["mesh"], 1);
    let expected = icmp_blocked_pairs(&faulty);
    // The address choice above is the plan's; the pairs it yields must be
    // every probe to node-2's InternalIP, nothing else.
    let every_probe_to_node_2: BTreeSet<Pair> = PROBES
        .iter()
        .map(|p| ((*p).to_owned(), "node-2".to_owned(), "node".to_owned()))
        .collect();
    assert_eq!(expected, every_probe_to_node_2);
    assert_eq!(
        cells_with(&faulty, &["fail", "degraded"]),
        expected,
        "failing cells under icmp-blocked: {faulty:#}"
    );
    for c in faulty["cells"].as_array().expect("cells") {
        if c["status"] == "fail" {
            let cmd = c["diagnose"].as_str().unwrap_or_default();
            assert!(
                cmd.starts_with(&format!(
                    "meshctl probe --from {} --to ",
                    c["from"].as_str().unwrap_or_default()
                )),
                "{c:#}"
            );
        }
    }

    // The run is recorded with its matrix.
    let run_id = faulty["run_id"].as_str().expect("run id").to_owned();
    let record = lab.json(&["runs", &run_id], 0);
    assert!(
        record.to_string().contains("node-2"),
        "meshctl runs {run_id} shows no matrix: {record:#}"
    );
}
