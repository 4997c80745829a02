//! The HTML report of real lab runs (`meshctl probe --html`, `meshctl runs
//! RUN_ID --html`), opened in headless Chromium: a screenshot of each page
//! is kept under `target/artifacts/html/` (with the page and its capture
//! files), and the DOM Chromium built is read back to check the ladder
//! against the verdict's own evidence: in the MTU black hole the lost
//! segments end where the evidence last saw them; with the dual IP the
//! tunnel packets leave with the outer source the evidence names.
//!
//! `MESH_UPDATE_SCREENSHOTS=1` also copies the MTU black hole's ladder to
//! `docs/img/ladder-mtu-blackhole.png`, the README's figure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use probemesh_tests::lab::{Lab, text};
use serde_json::Value;

/// Where a scenario's page, screenshot and captures go:
/// `target/artifacts/html/SCENARIO/`, emptied first.
fn artifacts(scenario: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/
    let target = exe
        .ancestors()
        .nth(3)
        .expect("test binary lives in target/<profile>/deps");
    let dir = target.join("artifacts/html").join(scenario);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// Headless Chromium on `page` (`scripts/deps.sh` installs it; no sandbox,
/// as the tests run as root).
fn chromium(args: &[&str], page: &str) -> Output {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(args)
        .arg(page)
        .output()
        .expect("chromium is missing: run scripts/deps.sh (it installs chromium)");
    assert!(out.status.success(), "chromium {args:?}: {}", text(&out));
    out
}

fn url(page: &Path, fragment: &str) -> String {
    format!("file://{}{fragment}", page.display())
}

/// A screenshot of `page` opened at `fragment` (`#ladder-only`: the
/// diagram alone), as `png`; asserts a PNG came out.
fn screenshot(page: &Path, fragment: &str, png: &Path, height: u32) {
    chromium(
        &[
            &format!("--screenshot={}", png.display()),
            &format!("--window-size=2000,{height}"),
        ],
        &url(page, fragment),
    );
    let bytes = std::fs::read(png).expect("the screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "{} is not a rendered page ({} bytes)",
        png.display(),
        bytes.len()
    );
}

/// Every element's attributes, in document order, from the DOM Chromium
/// built (`--dump-dom`).
fn dom(page: &Path) -> Vec<BTreeMap<String, String>> {
    let out = chromium(&["--dump-dom"], &url(page, ""));
    let html = String::from_utf8_lossy(&out.stdout);
    assert!(
        html.contains("</svg>") || html.contains("id=\"verdict\""),
        "{html}"
    );
    tags(&html)
}

/// The attributes of each start tag (quoted values, entities decoded).
fn tags(html: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    for chunk in html.split('<').skip(1) {
        if chunk.starts_with('/') || chunk.starts_with('!') {
            continue;
        }
        let mut attrs = BTreeMap::new();
        let mut rest = chunk;
        let name_end = rest.find(|c: char| c.is_whitespace() || c == '>' || c == '/');
        attrs.insert("<tag>".to_owned(), rest[..name_end.unwrap_or(0)].to_owned());
        while let Some(eq) = rest.find("=\"") {
            if rest[..eq].contains('>') {
                break;
            }
            let name = rest[..eq].rsplit(char::is_whitespace).next().unwrap_or("");
            let value_end = rest[eq + 2..].find('"').expect("closed attribute");
            let value = &rest[eq + 2..eq + 2 + value_end];
            attrs.insert(name.to_owned(), unescape(value));
            rest = &rest[eq + 2 + value_end + 1..];
        }
        out.push(attrs);
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

fn with<'a>(
    elements: &'a [BTreeMap<String, String>],
    attr: &'a str,
) -> impl Iterator<Item = &'a BTreeMap<String, String>> + 'a {
    elements.iter().filter(move |e| e.contains_key(attr))
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

    let elements = dom(&page);
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
    if std::env::var("MESH_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/img");
        std::fs::create_dir_all(&docs).expect("docs/img");
        std::fs::copy(
            dir.join("ladder.png"),
            docs.join("ladder-mtu-blackhole.png"),
        )
        .expect("copy the screenshot");
    }

    let elements = dom(&page);
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

    let elements = dom(&page);
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
