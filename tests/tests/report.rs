//! The HTML report of real lab runs (`meshctl probe --html`, `meshctl runs
//! RUN_ID --html`), opened in headless Chromium: a screenshot of each page
//! is kept under `target/artifacts/html/` (with the page and its capture
//! files), and the DOM Chromium built is read back to check the ladder
//! against the verdict's own evidence: in the MTU black hole the lost
//! segments end where the evidence last saw them; with the dual IP the
//! tunnel packets leave with the outer source the evidence names.
//!
//! The mesh heat map (`meshctl mesh --html`) under `icmp-blocked` is read
//! back the same way: its failing cells are exactly the pairs the fault
//! breaks, each linked to its pair's entry.
//!
//! `MESH_UPDATE_SCREENSHOTS=1` also copies the MTU black hole's ladder to
//! `docs/img/ladder-mtu-blackhole.png` and the heat map to
//! `docs/img/mesh-matrix.png`, the README's figures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use probemesh_tests::html::{artifacts, dom, screenshot, with};
use probemesh_tests::lab::{Lab, text};
use probemesh_tests::matrix::{Pair, icmp_blocked_pairs};
use serde_json::Value;

/// `MESH_UPDATE_SCREENSHOTS=1`: copies `png` over the README's figure
/// `docs/img/NAME`.
fn update_figure(png: &Path, name: &str) {
    if std::env::var("MESH_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/img");
        std::fs::create_dir_all(&docs).expect("docs/img");
        std::fs::copy(png, docs.join(name)).expect("copy the screenshot");
    }
}

/// `meshctl probe` for a catalogue fault's command, with `--html`; returns
/// the JSON report and the page.
fn probe_html(lab: &Lab, fault: &str, dir: &Path) -> (Value, PathBuf) {
    let e = lab.fault_entry(fault);
    let page = dir.join("report.html");
    let captures = dir.join("captures");
    let args = [
        "probe",
        "--from",
        &e.from,
        "--to",
        &e.to,
        "--size",
        &e.size,
        "--out",
        captures.to_str().expect("utf-8"),
        "--html",
        page.to_str().expect("utf-8"),
        "-o",
        "json",
    ];
    let out = lab.meshctl(&args);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("probe output is not JSON ({err}):\n{}", text(&out)));
    assert!(page.is_file(), "no page written: {}", text(&out));
    (report, page)
}

/// The checks the page lists, and the verdict class it shows.
fn verdict_and_checks(elements: &[BTreeMap<String, String>]) -> (String, Vec<String>) {
    let class = with(elements, "data-class")
        .next()
        .and_then(|e| e.get("data-class").cloned())
        .unwrap_or_default();
    let statuses = with(elements, "data-check")
        .filter(|e| e["<tag>"] == "tr")
        .map(|e| e["data-status"].clone())
        .collect();
    (class, statuses)
}

/// The evidence item whose observation contains `needle`: its capture
/// observer (`PROBE/IFACE`) and observation.
fn captured_evidence(report: &Value, needle: &str) -> (String, String) {
    report["verdict"]["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|e| {
            let observation = e["observation"].as_str()?;
            let capture = e["source"]["capture"].as_str()?;
            observation
                .contains(needle)
                .then(|| (capture.to_owned(), observation.to_owned()))
        })
        .unwrap_or_else(|| panic!("no capture evidence says {needle:?}:\n{report:#}"))
}

/// The healthy run, rendered from the store by `meshctl runs RUN_ID --html`.
#[test]
fn a_healthy_run_renders_ok_with_its_ladder() {
    let Some(lab) = Lab::up() else { return };
    let dir = artifacts("healthy");
    let e = lab.fault_entry("mtu-blackhole");
    let captures = dir.join("captures");
    let report = lab.json(
        &[
            "probe",
            "--from",
            &e.from,
            "--to",
            &e.to,
            "--size",
            &e.size,
            "--out",
            captures.to_str().expect("utf-8"),
        ],
        0,
    );
    let run_id = report["run_id"].as_str().expect("run id");
    let page = dir.join("report.html");
    let out = lab.meshctl(&["runs", run_id, "--html", page.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
    screenshot(&page, "", &dir.join("page.png"), 2400);
    screenshot(&page, "#ladder-only", &dir.join("ladder.png"), 2000);

    let elements = dom(&page, "</svg>");
    let (class, statuses) = verdict_and_checks(&elements);
    assert_eq!(class, "ok");
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| s != "fail"),
        "{statuses:?}"
    );
    // One lane per observed interface, and packets drawn across them.
    let lanes: Vec<&String> = with(&elements, "data-observer")
        .filter(|e| e["class"] == "lane")
        .map(|e| &e["data-observer"])
        .collect();
    for o in report["observers"].as_array().expect("observers") {
        for i in o["interfaces"].as_array().expect("interfaces") {
            let lane = format!(
                "{}/{}",
                o["probe"].as_str().unwrap_or(""),
                i.as_str().unwrap_or("")
            );
            assert!(lanes.contains(&&lane), "no lane for {lane}: {lanes:?}");
        }
    }
    let hops = with(&elements, "data-flow").count();
    assert!(hops > 10, "only {hops} sightings drawn");
    let ids = with(&elements, "id")
        .filter(|e| e["id"] == "run-id" || e["id"] == "trace-id")
        .count();
    assert_eq!(ids, 2);
}

#[test]
fn the_mtu_black_hole_ladder_stops_the_lost_segments_where_the_evidence_saw_them_last() {
    let Some(lab) = Lab::up() else { return };
    let dir = artifacts("mtu-blackhole");
    lab.fault("mtu-blackhole");
    let (report, page) = probe_html(&lab, "mtu-blackhole", &dir);
    screenshot(&page, "", &dir.join("page.png"), 2400);
    screenshot(&page, "#ladder-only", &dir.join("ladder.png"), 2000);
    update_figure(&dir.join("ladder.png"), "ladder-mtu-blackhole.png");

    let elements = dom(&page, "id=\"verdict\"");
    assert_eq!(verdict_and_checks(&elements).0, "mtu_blackhole");
    // "tcp 198.18.100.10 > 198.18.0.12:30080 7056 bytes leaves cloudvm-1/eth0
    // and is never seen further" (or the large echo: "icmp echo 198.18.100.10
    // > 198.18.0.12 1514 bytes ..."): its protocol and destination address.
    let (last_seen, observation) = captured_evidence(&report, "never seen further");
    let protocol = observation
        .split_whitespace()
        .next()
        .expect("the packet's protocol");
    let to = observation
        .split_whitespace()
        .skip_while(|w| *w != ">")
        .nth(1)
        .expect("the packet's destination");
    let address = |endpoint: &str| endpoint.split(':').next().unwrap_or_default().to_owned();
    // A lost mark's flow as first seen: "tcp 198.18.100.10:54836 -> 198.18.0.12:30080".
    let lost: Vec<&BTreeMap<String, String>> = with(&elements, "data-lost-at")
        .filter(|e| {
            let flow = &e["data-flow"];
            flow.starts_with(&format!("{protocol} "))
                && flow.rsplit(" -> ").next().map(address) == Some(address(to))
        })
        .collect();
    assert!(!lost.is_empty(), "no lost {protocol} packet to {to} drawn");
    for l in &lost {
        assert_eq!(l["data-lost-at"], last_seen, "{l:?}");
    }
    // The evidence item links to that observer's lane, which exists.
    let item = with(&elements, "data-capture")
        .find(|e| e["data-capture"] == last_seen)
        .expect("the evidence item in the page");
    assert_eq!(item["<tag>"], "li");
    assert!(
        with(&elements, "data-observer")
            .any(|e| e["class"] == "lane" && e["data-observer"] == last_seen)
    );
    // The capture files are linked relative to the page, and are there.
    let files: Vec<&String> = with(&elements, "href")
        .filter(|e| e.get("class").is_some_and(|c| c == "file"))
        .map(|e| &e["href"])
        .collect();
    assert!(!files.is_empty(), "no capture file linked");
    for f in files {
        assert!(f.starts_with("captures/"), "{f}");
        assert!(
            page.parent().expect("dir").join(f).is_file(),
            "{f} is not beside the page"
        );
    }
}

#[test]
fn the_dual_ip_ladder_shows_the_wrong_outer_source_the_evidence_names() {
    let Some(lab) = Lab::up() else { return };
    let dir = artifacts("dual-ip");
    lab.fault("dual-ip");
    let (report, page) = probe_html(&lab, "dual-ip", &dir);
    screenshot(&page, "", &dir.join("page.png"), 2400);
    screenshot(&page, "#ladder-only", &dir.join("ladder.png"), 2000);

    let elements = dom(&page, "id=\"verdict\"");
    assert_eq!(verdict_and_checks(&elements).0, "cni_failure");
    // "VXLAN packets leave node-3/eth0 with outer source 198.18.0.23 (...)"
    let (sender, observation) = captured_evidence(&report, "with outer source");
    let wrong = observation
        .split("with outer source ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the outer source");
    let sent: Vec<&BTreeMap<String, String>> = with(&elements, "data-outer-src")
        .filter(|e| e["data-observer"] == sender && !e["data-outer-src"].is_empty())
        .collect();
    assert!(
        !sent.is_empty(),
        "no tunnelled sighting at {sender} drawn:\n{report:#}"
    );
    for hop in &sent {
        assert_eq!(hop["data-outer-src"], wrong, "{hop:?}");
    }
}

/// `meshctl mesh --html` with `icmp-blocked` in: the cells the page marks
/// failing are exactly the pairs the fault's mechanism breaks, and each
/// links to its pair's entry, which names the same pair and carries the
/// command the JSON (and the terminal) gives for it.
#[test]
fn the_mesh_heat_map_fails_exactly_the_pairs_a_fault_breaks() {
    let Some(lab) = Lab::up() else { return };
    let dir = artifacts("mesh-icmp-blocked");
    lab.fault("icmp-blocked");
    let page = dir.join("mesh.html");
    let matrix = lab.json(
        &[
            "mesh",
            "--diagnose",
            "1",
            "--html",
            page.to_str().expect("utf-8"),
        ],
        1,
    );
    screenshot(&page, "", &dir.join("page.png"), 900);
    update_figure(&dir.join("page.png"), "mesh-matrix.png");

    let elements = dom(&page, "id=\"legend\"");
    let cells: Vec<(usize, &BTreeMap<String, String>)> = elements
        .iter()
        .enumerate()
        .filter(|(_, e)| e["<tag>"] == "td" && e.contains_key("data-status"))
        .collect();
    let pair = |e: &BTreeMap<String, String>| -> Pair {
        (
            e["data-from"].clone(),
            e["data-to"].clone(),
            e["data-kind"].clone(),
        )
    };
    // Every cell of the run is drawn once, with its status.
    let json = matrix["cells"].as_array().expect("cells");
    let drawn: BTreeMap<Pair, &str> = cells
        .iter()
        .filter(|(_, e)| e["data-status"] != "n.a.")
        .map(|(_, e)| (pair(e), e["data-status"].as_str()))
        .collect();
    assert_eq!(drawn.len(), json.len(), "{drawn:?}");
    for c in json {
        let key = (
            c["from"].as_str().unwrap_or_default().to_owned(),
            c["to"].as_str().unwrap_or_default().to_owned(),
            c["kind"].as_str().unwrap_or_default().to_owned(),
        );
        assert_eq!(drawn.get(&key).copied(), c["status"].as_str(), "{key:?}");
    }

    let failing: Vec<(usize, &BTreeMap<String, String>)> = cells
        .iter()
        .filter(|(_, e)| e["data-status"] == "fail" || e["data-status"] == "degraded")
        .copied()
        .collect();
    let expected = icmp_blocked_pairs(&matrix);
    assert!(!expected.is_empty());
    assert_eq!(
        failing
            .iter()
            .map(|(_, e)| pair(e))
            .collect::<BTreeSet<Pair>>(),
        expected,
        "failing cells of the heat map under icmp-blocked"
    );
    let html = std::fs::read_to_string(&page).expect("the page");
    for (i, cell) in &failing {
        let link = &elements[i + 1];
        assert_eq!(link["<tag>"], "a", "{cell:?} is not a link");
        let id = link["href"].strip_prefix('#').expect("an in-page link");
        let entry = with(&elements, "id")
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("{cell:?} links to #{id}, which is not there"));
        assert_eq!(entry["<tag>"], "li");
        assert_eq!(pair(entry), pair(cell));
        let cmd = json
            .iter()
            .find(|c| {
                let c = |k: &str| c[k].as_str().unwrap_or_default();
                (c("from"), c("to"), c("kind"))
                    == (
                        cell["data-from"].as_str(),
                        cell["data-to"].as_str(),
                        cell["data-kind"].as_str(),
                    )
            })
            .and_then(|c| c["diagnose"].as_str())
            .expect("a failing cell's command in the JSON");
        assert!(
            html.contains(&format!(r#"<code class="diagnose">{cmd}</code>"#)),
            "no {cmd:?} on the page"
        );
    }
    // Cells that pass, were skipped or do not apply link nowhere.
    for (i, cell) in &cells {
        if !failing.iter().any(|(j, _)| j == i) {
            assert_ne!(
                elements.get(i + 1).map(|e| e["<tag>"].as_str()),
                Some("a"),
                "{cell:?}"
            );
        }
    }
    assert!(
        cells.iter().any(|(_, e)| e["data-status"] == "n.a."),
        "cloudvm-1 has no pod network: its column has n.a. cells"
    );

    // --diagnose 1: the first failing pair's `meshctl probe` ran, its
    // report was written next to the page, and the pair links to it.
    let diagnosed = matrix["diagnosed"].as_array().expect("diagnosed");
    assert_eq!(diagnosed.len(), 1, "{matrix:#}");
    let d = &diagnosed[0];
    let first = json
        .iter()
        .find(|c| c["status"] == "fail")
        .expect("a failing cell");
    assert_eq!(d["from"], first["from"]);
    assert!(
        first["diagnose"]
            .as_str()
            .is_some_and(|cmd| cmd.contains(&format!("--to {}", d["to"].as_str().unwrap_or("?")))),
        "{d} is not the pair's own command {}",
        first["diagnose"]
    );
    let report = PathBuf::from(d["html"].as_str().expect("its report"));
    let name = report.file_name().expect("a file").to_string_lossy();
    assert!(
        with(&elements, "href").any(|e| e["href"] == name),
        "no link to {name}"
    );
    let text = std::fs::read_to_string(&report).expect("the diagnosed run's report");
    let result = d["result"].as_str().expect("result");
    assert!(result.contains('/'), "a verdict, class/cause: {result}");
    assert!(text.contains(result.split('/').next().unwrap_or(result)));
}
