//! The coordinator's read-only web view (`mesh-coordinator --web`, served
//! by the lab on :7444) on real lab runs, read by curl (which checks the
//! coordinator's certificate against the mesh's CA) and by headless
//! Chromium:
//! - nobody, a probe's certificate, a forged, expired or revoked token,
//!   and a revoked viewer certificate are refused, and nothing is writable;
//! - a viewer certificate reads; `meshctl web-token`'s link logs a browser
//!   in, which then sees the runs with the live progress of a running one,
//!   a run's report, and the latest matrix, whose failing cells are exactly
//!   the pairs the fault breaks and link to the `meshctl probe` run of
//!   their pair.
//!
//! Screenshots go to `target/artifacts/html/web/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use probemesh_tests::html::{Browser, artifacts, with};
use probemesh_tests::lab::{Lab, text};
use probemesh_tests::matrix::{Pair, icmp_blocked_pairs};
use serde_json::Value;

/// What curl got: the status and the body.
fn curl(ca: &Path, url: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--noproxy", "*", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(args)
        .args(["-w", "\n%{http_code}", url])
        .output()
        .expect("curl is missing: run scripts/deps.sh");
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = all.rsplit_once('\n').unwrap_or(("", &all));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// `meshctl web-token` as `identity` from `tls` (the lab's admin when
/// `None`), with `ttl`.
fn web_token(lab: &Lab, identity: Option<(&str, &Path)>, ttl: &str) -> Value {
    let mut args = vec!["web-token", "--ttl", ttl];
    let tls_dir;
    if let Some((name, dir)) = identity {
        tls_dir = dir.display().to_string();
        args.extend(["--identity", name, "--tls-dir", &tls_dir]);
    }
    lab.json(&args, 0)
}

#[test]
fn the_web_view_reads_runs_reports_and_the_matrix_for_viewers_only() {
    let Some(lab) = Lab::up() else { return };
    let status = lab.status();
    let web = status["web"]
        .as_str()
        .expect("lab status names the web view")
        .trim_end_matches('/')
        .to_owned();
    let state_dir = PathBuf::from(status["state_dir"].as_str().expect("state_dir"));
    let ca = state_dir.join("tls/ca.pem");
    let dir = artifacts("web");

    // Nobody, a probe, a forged token: refused; and nothing is writable.
    let (code, body) = curl(&ca, &format!("{web}/"), &[]);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("meshctl web-token"), "{body}");
    let probe = state_dir.join("probes/node-1");
    let probe_cert = [
        "--cert",
        &probe.join("node-1.pem").display().to_string(),
        "--key",
        &probe.join("node-1-key.pem").display().to_string(),
    ]
    .map(str::to_owned);
    let probe_cert: Vec<&str> = probe_cert.iter().map(String::as_str).collect();
    let (code, body) = curl(&ca, &format!("{web}/"), &probe_cert);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("role probe"), "{body}");
    let admin = web_token(&lab, None, "10m");
    let token = admin["token"].as_str().expect("token").to_owned();
    assert_eq!(admin["identity"], "admin");
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let (code, body) = curl(&ca, &format!("{web}/"), &["-H", &bearer(&forged)]);
    assert_eq!(code, 401, "{body}");
    for method in ["POST", "PUT", "DELETE"] {
        let (code, _) = curl(
            &ca,
            &format!("{web}/"),
            &["-X", method, "-H", &bearer(&token)],
        );
        assert_eq!(code, 405, "{method} / must not be allowed");
    }

    // Runs to show: a matrix with one fault in, the probe run of one of
    // its failing pairs, and a ping still running while the page is read.
    lab.fault("icmp-blocked");
    let matrix = lab.json(&["mesh"], 1);
    let broken = icmp_blocked_pairs(&matrix);
    let probed = matrix["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .find(|c| c["status"] == "fail")
        .expect("a failing cell")
        .clone();
    let diagnose: Vec<String> = probed["diagnose"]
        .as_str()
        .expect("diagnose")
        .split_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect();
    let diagnose: Vec<&str> = diagnose.iter().map(String::as_str).collect();
    let probe_run = lab.json(&[diagnose.as_slice(), &["--no-capture"]].concat(), 1);
    let probe_run_id = probe_run["run_id"].as_str().expect("run_id").to_owned();
    let mut ping = lab
        .command(&[
            "ping",
            "--from",
            "node-1",
            "198.18.0.13",
            "-c",
            "40",
            "-i",
            "200ms",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("meshctl ping");

    // A browser logs in with the link and sees the running ping's progress.
    let browser = Browser::new();
    let login = admin["url"].as_str().expect("the link to the web view");
    assert!(login.starts_with(&format!("{web}/login?token=")), "{login}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let (runs_html, runs) = loop {
        let (html, elements) = browser.dom(login, r#"id="runs""#);
        let progressing = with(&elements, "data-state")
            .any(|e| e["data-state"] == "running" && e.get("data-run").is_some())
            && html.contains("running · ");
        if progressing || Instant::now() > deadline {
            break (html, elements);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        runs_html.contains("running · ") && runs_html.contains("progress"),
        "no live progress of the running ping: {runs_html}"
    );
    assert!(runs_html.contains(r#"http-equiv="refresh""#));
    let listed: BTreeSet<&str> = with(&runs, "data-run")
        .map(|e| e["data-run"].as_str())
        .collect();
    assert!(listed.contains(probe_run_id.as_str()), "{listed:?}");
    browser.screenshot(&format!("{web}/"), &dir.join("runs.png"), 700);
    let _ = ping.wait();

    // The cookie carries on: the probe run's report, with its verdict.
    let (report, _) = browser.dom(&format!("{web}/runs/{probe_run_id}"), "class=\"verdict");
    let class = probe_run["verdict"]["class"].as_str().expect("class");
    assert!(
        report.contains(class),
        "the report lacks the verdict {class}"
    );
    browser.screenshot(
        &format!("{web}/runs/{probe_run_id}"),
        &dir.join("report.png"),
        1200,
    );

    // The latest matrix: failing cells exactly the broken pairs; the one
    // probed links to its run.
    let (_, mesh) = browser.dom(&format!("{web}/mesh"), r#"id="legend""#);
    browser.screenshot(&format!("{web}/mesh"), &dir.join("mesh.png"), 900);
    let pair = |e: &std::collections::BTreeMap<String, String>| -> Pair {
        (
            e["data-from"].clone(),
            e["data-to"].clone(),
            e["data-kind"].clone(),
        )
    };
    let failing: BTreeSet<Pair> = mesh
        .iter()
        .filter(|e| e["<tag>"] == "td")
        .filter(|e| {
            e.get("data-status")
                .is_some_and(|s| s == "fail" || s == "degraded")
        })
        .map(pair)
        .collect();
    assert_eq!(failing, broken, "failing cells of the web view's matrix");
    let run_href = format!("/runs/{probe_run_id}");
    assert!(
        with(&mesh, "href").any(|e| e["href"] == run_href),
        "the probed pair's entry does not link to {run_href}"
    );
    lab.clear();

    // A viewer's own certificate reads; revoking it withdraws it and its
    // tokens. An expired token is refused.
    let viewer_dir = tempfile::tempdir().expect("tempdir");
    for f in ["ca.pem", "ca-key.pem"] {
        std::fs::copy(state_dir.join("tls").join(f), viewer_dir.path().join(f)).expect("copy CA");
    }
    let issued = lab.meshctl(&[
        "certs",
        "issue",
        "--dir",
        &viewer_dir.path().display().to_string(),
        "--name",
        "alice",
        "--role",
        "viewer",
    ]);
    assert!(issued.status.success(), "{}", text(&issued));
    std::fs::remove_file(viewer_dir.path().join("ca-key.pem")).expect("drop the CA key");
    let alice_cert = [
        "--cert",
        &viewer_dir.path().join("alice.pem").display().to_string(),
        "--key",
        &viewer_dir
            .path()
            .join("alice-key.pem")
            .display()
            .to_string(),
    ]
    .map(str::to_owned);
    let alice_cert: Vec<&str> = alice_cert.iter().map(String::as_str).collect();
    let (code, body) = curl(&ca, &format!("{web}/"), &alice_cert);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("read as <b>alice</b>"), "{body}");
    let alice = web_token(&lab, Some(("alice", viewer_dir.path())), "10m");
    let alice_token = alice["token"].as_str().expect("token").to_owned();
    let (code, _) = curl(&ca, &format!("{web}/"), &["-H", &bearer(&alice_token)]);
    assert_eq!(code, 200);
    let short = web_token(&lab, None, "1s");
    let short = short["token"].as_str().expect("token").to_owned();
    let revoked = lab.meshctl(&["certs", "revoke", "alice"]);
    assert!(revoked.status.success(), "{}", text(&revoked));
    let (code, body) = curl(&ca, &format!("{web}/"), &alice_cert);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("revoked"), "{body}");
    let (code, body) = curl(&ca, &format!("{web}/"), &["-H", &bearer(&alice_token)]);
    assert_eq!(
        code, 403,
        "a revoked certificate's token still reads: {body}"
    );
    std::thread::sleep(Duration::from_millis(2100));
    let (code, body) = curl(&ca, &format!("{web}/"), &["-H", &bearer(&short)]);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("expired"), "{body}");
}
