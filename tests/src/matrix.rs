//! What `meshctl mesh` must find in the lab, computed from a fault's
//! mechanism and the lab's addresses (DESIGN §4), not read from the
//! output: shared by the terminal/JSON test (`tests/mesh_matrix.rs`) and
//! the heat-map test (`tests/report.rs`).

use std::collections::BTreeSet;

use serde_json::Value;

/// The lab's probes: the matrix's rows, and its columns in some order.
pub const PROBES: [&str; 4] = ["cloudvm-1", "node-1", "node-2", "node-3"];

/// Every address node-2's own stack answers for (DESIGN §4): eth0, the
/// `cni0` bridge (the pods' gateway) and the `flannel.1` VTEP.
const NODE_2_ADDRESSES: [&str; 3] = ["198.18.0.12", "198.19.2.1", "198.19.2.0"];

/// A cell as (from, to, kind).
pub type Pair = (String, String, String);

fn pair(c: &Value) -> Pair {
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    (s("from"), s("to"), s("kind"))
}

/// (from, to, kind) of every cell of `meshctl mesh -o json` with `status`
/// in `statuses`.
pub fn cells_with(matrix: &Value, statuses: &[&str]) -> BTreeSet<Pair> {
    matrix["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .filter(|c| statuses.contains(&c["status"].as_str().unwrap_or_default()))
        .map(pair)
        .collect()
}

/// The cells `icmp-blocked` breaks, from the matrix's own plan (which
/// address each cell tested). The fault: node-2's host firewall drops
/// ICMP echo requests in INPUT, i.e. to any address its own stack answers
/// for, from anywhere (itself included: lo goes through INPUT too). Pods
/// have their own stacks (FORWARD, not INPUT), replies are echo replies,
/// NodePorts are TCP: none of those break.
pub fn icmp_blocked_pairs(matrix: &Value) -> BTreeSet<Pair> {
    matrix["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .filter(|c| c["kind"] != "nodeport" && c["status"] != "skipped")
        .filter(|c| NODE_2_ADDRESSES.contains(&c["address"].as_str().unwrap_or_default()))
        .map(pair)
        .collect()
}
