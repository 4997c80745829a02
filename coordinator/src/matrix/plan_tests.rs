use test_case::test_case;

use super::*;
use crate::diagnose::testing::lab_inventory;

fn probe(name: &str, role: pb::ProbeRole, addr: &str) -> pb::ProbeInfo {
    pb::ProbeInfo {
        name: name.into(),
        role: role.into(),
        connected: true,
        interfaces: vec![pb::Interface {
            name: "eth0".into(),
            mtu: 1500,
            addresses: vec![format!("{addr}/24")],
            up: true,
        }],
        ..Default::default()
    }
}

/// The lab's four probes, as the registry lists them.
fn lab_probes() -> Vec<pb::ProbeInfo> {
    vec![
        probe("cloudvm-1", pb::ProbeRole::External, "198.18.100.10"),
        probe("node-1", pb::ProbeRole::Node, "198.18.0.11"),
        probe("node-2", pb::ProbeRole::Node, "198.18.0.12"),
        probe("node-3", pb::ProbeRole::Node, "198.18.0.13"),
    ]
}

fn request(from: &str, to: &str) -> pb::MeshRequest {
    pb::MeshRequest {
        from: from.into(),
        to: to.into(),
        size: 1472,
        count: 0,
    }
}

fn lab_plan(from: &str, to: &str) -> Result<MatrixPlan, Error> {
    plan(&request(from, to), &lab_probes(), Some(&lab_inventory()))
}

fn refusal(r: Result<MatrixPlan, Error>) -> String {
    match r {
        Err(Error::InvalidRequest(why)) => why,
        other => panic!("expected an invalid request, got {other:?}"),
    }
}

#[test_case("", Selector::All)]
#[test_case("all", Selector::All)]
#[test_case(" role=node ", Selector::Role(pb::ProbeRole::Node))]
#[test_case("role=external", Selector::Role(pb::ProbeRole::External))]
#[test_case("node-1", Selector::Names(vec!["node-1".into()]))]
#[test_case("node-1, cloudvm-1", Selector::Names(vec!["node-1".into(), "cloudvm-1".into()]))]
fn selectors_parse(spec: &str, want: Selector) {
    assert_eq!(Selector::parse(spec, "--from").unwrap(), want);
}

#[test_case("role=master", "role is node or external")]
#[test_case("node-1,,node-2", "must be 1 to 253 bytes")]
fn bad_selectors_are_refused(spec: &str, says: &str) {
    let why = match Selector::parse(spec, "--to") {
        Err(Error::InvalidRequest(why)) => why,
        other => panic!("{other:?}"),
    };
    assert!(why.contains(says) && why.starts_with("--to"), "{why}");
}

#[test]
fn a_selector_lists_a_bounded_number_of_names() {
    let spec = vec!["n"; MAX_SELECTOR_NAMES + 1].join(",");
    let why = match Selector::parse(&spec, "--from") {
        Err(Error::InvalidRequest(why)) => why,
        other => panic!("{other:?}"),
    };
    assert!(why.contains("at most 128"), "{why}");
}

#[test]
fn the_whole_lab_is_four_rows_by_four_columns() {
    let p = lab_plan("all", "all").unwrap();
    let rows: Vec<&str> = p.sources.iter().map(|s| s.name.as_str()).collect();
    let cols: Vec<&str> = p.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(rows, ["cloudvm-1", "node-1", "node-2", "node-3"]);
    assert_eq!(cols, ["node-1", "node-2", "node-3", "cloudvm-1"]);
    // Per row: three nodes with three kinds each, the external host's address.
    assert_eq!(p.cells.len(), 4 * (3 * 3 + 1));
    assert_eq!(p.count, DEFAULT_COUNT);
}

#[test]
fn targets_are_the_internal_ip_a_pod_on_the_pod_network_and_the_first_nodeport() {
    let p = lab_plan("node-1", "node-2").unwrap();
    let tests: Vec<(pb::MeshTargetKind, &CellTest, &str)> = p
        .cells
        .iter()
        .map(|c| (c.kind, &c.test, c.probe_target.as_str()))
        .collect();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        tests,
        [
            (
                pb::MeshTargetKind::Node,
                &CellTest::Ping {
                    ip: ip("198.18.0.12"),
                    large: Some(1472)
                },
                "probe:node-2"
            ),
            (
                pb::MeshTargetKind::PodNetwork,
                &CellTest::Ping {
                    ip: ip("198.19.2.10"),
                    large: None
                },
                "pod:default/web-0"
            ),
            (
                pb::MeshTargetKind::Nodeport,
                &CellTest::Connect {
                    ip: ip("198.18.0.12"),
                    port: 30080
                },
                "nodeport:node-2:30080"
            ),
        ]
    );
}

#[test]
fn an_external_source_skips_the_pod_networks_with_the_reason() {
    let p = lab_plan("role=external", "node-3").unwrap();
    let pod = p
        .cells
        .iter()
        .find(|c| c.kind == pb::MeshTargetKind::PodNetwork)
        .unwrap();
    assert!(
        matches!(&pod.test, CellTest::Skip(why) if why.contains("outside the cluster")),
        "{pod:?}"
    );
    assert_eq!(p.sources.len(), 1);
}

#[test]
fn without_a_nodeport_service_those_cells_are_skipped() {
    let mut inv = lab_inventory();
    for s in &mut inv.services {
        for port in &mut s.ports {
            port.node_port = None;
        }
    }
    let p = plan(&request("node-1", "node-2"), &lab_probes(), Some(&inv)).unwrap();
    let np = p
        .cells
        .iter()
        .find(|c| c.kind == pb::MeshTargetKind::Nodeport)
        .unwrap();
    assert_eq!(
        np.test,
        CellTest::Skip("the inventory lists no NodePort Service".into())
    );
}

#[test]
fn an_offline_source_has_its_cells_skipped() {
    let mut probes = lab_probes();
    probes[1].connected = false;
    let p = plan(
        &request("node-1", "node-2"),
        &probes,
        Some(&lab_inventory()),
    )
    .unwrap();
    assert!(
        p.cells.iter().all(
            |c| matches!(&c.test, CellTest::Skip(why) if why == "probe node-1 is not connected")
        )
    );
}

#[test]
fn role_selects_rows_and_columns_alike() {
    let p = lab_plan("role=node", "role=external").unwrap();
    assert_eq!(p.sources.len(), 3);
    let cols: Vec<&str> = p.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(cols, ["cloudvm-1"]);
    assert_eq!(p.cells.len(), 3);
}

#[test]
fn unknown_names_are_refused_by_name() {
    let why = refusal(lab_plan("node-9", "all"));
    assert!(why.contains("no probe or node named 'node-9'"), "{why}");
}

#[test]
fn too_many_rows_are_refused_naming_the_bound() {
    let probes: Vec<pb::ProbeInfo> = (0..=MAX_SOURCES)
        .map(|i| probe(&format!("p-{i}"), pb::ProbeRole::External, "198.18.100.10"))
        .collect();
    let why = refusal(plan(&request("all", "p-1"), &probes, None));
    assert!(why.contains("65 probes, at most 64 rows"), "{why}");
    let why = refusal(plan(&request("p-1", "all"), &probes, None));
    assert!(why.contains("65 hosts, at most 64 columns"), "{why}");
}

#[test_case(21, 0, "at most 20 echoes")]
#[test_case(3, 65_508, "at most 65507 bytes")]
fn counts_and_sizes_are_bounded(count: u32, size: u32, says: &str) {
    let req = pb::MeshRequest {
        count,
        size,
        ..Default::default()
    };
    let why = refusal(plan(&req, &lab_probes(), Some(&lab_inventory())));
    assert!(why.contains(says), "{why}");
}
