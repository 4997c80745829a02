//! `meshctl mesh` in the lab: on the healthy lab every cell of the 4×4
//! matrix (cloudvm-1 and node-1..3, both directions of every pair) passes;
//! with `icmp-blocked` in, the failing cells are exactly the pairs the
//! fault's mechanism breaks, computed here from the mechanism and the lab's
//! addresses (DESIGN §4), not read from the output.

use std::collections::BTreeSet;

use probemesh_tests::lab::Lab;
use serde_json::Value;

const PROBES: [&str; 4] = ["cloudvm-1", "node-1", "node-2", "node-3"];

/// Every address node-2's own stack answers for (DESIGN §4): eth0, the
/// `cni0` bridge (the pods' gateway) and the `flannel.1` VTEP.
const NODE_2_ADDRESSES: [&str; 3] = ["198.18.0.12", "198.19.2.1", "198.19.2.0"];

/// (from, to, kind) of every cell with `status` in `statuses`.
fn cells_with(matrix: &Value, statuses: &[&str]) -> BTreeSet<(String, String, String)> {
    matrix["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .filter(|c| statuses.contains(&c["status"].as_str().unwrap_or_default()))
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("from"), s("to"), s("kind"))
        })
        .collect()
}

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
        BTreeSet::new(),
        "the healthy lab has failing cells: {healthy:#}"
    );
    // Per source: 3 nodes × (address, pod network, NodePort) + cloudvm-1's address.
    assert_eq!(healthy["cells"].as_array().map(Vec::len), Some(4 * 10));
    let ok = cells_with(&healthy, &["ok"]);
    // cloudvm-1 is outside the cluster: its pod-network cells are skipped.
    assert_eq!(ok.len(), 40 - 3, "{healthy:#}");

    // icmp-blocked: node-2's host firewall drops ICMP echo requests in
    // INPUT, i.e. to any address its own stack answers for, from anywhere
    // (itself included: lo goes through INPUT too). Pods have their own
    // stacks (FORWARD, not INPUT), replies are echo replies, NodePorts are
    // TCP: none of those break.
    lab.fault("icmp-blocked");
    let faulty = lab.json(&["mesh"], 1);
    let expected: BTreeSet<(String, String, String)> = faulty["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .filter(|c| c["kind"] != "nodeport" && c["status"] != "skipped")
        .filter(|c| NODE_2_ADDRESSES.contains(&c["address"].as_str().unwrap_or_default()))
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("from"), s("to"), s("kind"))
        })
        .collect();
    // The address choice above is the plan's; the pairs it yields must be
    // every probe to node-2's InternalIP, nothing else.
    let every_probe_to_node_2: BTreeSet<(String, String, String)> = PROBES
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
