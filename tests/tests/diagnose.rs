//! `meshctl probe` in the lab: for every fault of the catalogue, the same
//! command gives `ok` on the healthy lab and the fault's verdict once the
//! fault is in, reached from evidence only (the coordinator is never told
//! which fault was injected). The probe command and the expected class and
//! cause come from `meshctl lab fault --list -o json`, the catalogue itself.

use std::process::{Command, Output};

use probemesh_tests::lab::{FaultEntry, Lab, text};
use probemesh_tests::verdict::unsupported_claims;
use serde_json::Value;

/// Runs `meshctl probe` with the entry's arguments (captures into a temp
/// dir); returns the report and the exit code.
fn probe(lab: &Lab, e: &FaultEntry, out: &std::path::Path) -> (Value, i32) {
    let out = out.to_str().expect("utf-8");
    let args = [
        "probe", "--from", &e.from, "--to", &e.to, "--size", &e.size, "--out", out, "-o", "json",
    ];
    let output: Output = lab.meshctl(&args);
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("probe output is not JSON ({err}):\n{}", text(&output)));
    assert_eq!(
        unsupported_claims(&report),
        Vec::<String>::new(),
        "a verdict states what its evidence does not back:\n{report:#}"
    );
    (report, output.status.code().unwrap_or(-1))
}

/// Every evidence observation and the summary, as one string to search.
fn said(report: &Value) -> String {
    let v = &report["verdict"];
    let mut all = vec![v["summary"].as_str().unwrap_or_default().to_owned()];
    for e in v["evidence"].as_array().into_iter().flatten() {
        all.push(format!("{} {}", e["probe"], e["observation"]));
    }
    all.join("\n")
}

/// The healthy lab is `ok` for the entry's command; with the fault in it
/// is the catalogue's verdict (exit 1). Returns the fault's report (its
/// capture files live as long as the returned directory).
fn diagnose(name: &str) -> Option<(Value, tempfile::TempDir)> {
    let lab = Lab::up()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let faulty = diagnosed(&lab, name, dir.path());
    Some((faulty, dir))
}

/// [`diagnose`] on a lab that is up: healthy `ok`, the fault's verdict,
/// then the fault cleared. Returns the fault's report.
fn diagnosed(lab: &Lab, name: &str, dir: &std::path::Path) -> Value {
    let e = lab.fault_entry(name);
    let (healthy, code) = probe(lab, &e, dir);
    assert_eq!(
        (healthy["verdict"]["class"].as_str(), code),
        (Some("ok"), 0),
        "{name}: the healthy lab must be ok for `probe --from {} --to {}`:\n{healthy:#}",
        e.from,
        e.to
    );

    lab.fault(name);
    let (faulty, code) = probe(lab, &e, dir);
    let v = &faulty["verdict"];
    assert_eq!(
        (v["class"].as_str(), code),
        (Some(e.class.as_str()), 1),
        "{name}: wrong class:\n{faulty:#}"
    );
    if let Some(cause) = &e.cause {
        assert_eq!(
            v["cause"],
            cause.as_str(),
            "{name}: wrong cause:\n{faulty:#}"
        );
    }
    for field in ["summary", "fix", "rule"] {
        assert!(
            !v[field].as_str().unwrap_or_default().is_empty(),
            "{name}: empty {field}:\n{faulty:#}"
        );
    }
    assert!(
        !v["evidence"].as_array().expect("evidence").is_empty(),
        "{name}: a verdict without evidence:\n{faulty:#}"
    );
    eprintln!(
        "{name}: {} ms, {}/{}: {}",
        faulty["timing"]["duration_ms"], v["class"], v["cause"], v["summary"]
    );
    lab.clear();
    faulty
}

fn assert_says(report: &Value, needles: &[&str]) {
    let s = said(report);
    for n in needles {
        assert!(
            s.contains(n),
            "the verdict does not mention {n:?}:\n{report:#}"
        );
    }
}

#[test]
fn icmp_blocked_is_a_firewall() {
    let Some((r, _files)) = diagnose("icmp-blocked") else {
        return;
    };
    assert_says(&r, &["198.18.0.12", "TCP to the same host works"]);
}

#[test]
fn route_missing_is_routing() {
    let Some((r, _files)) = diagnose("route-missing") else {
        return;
    };
    assert_says(&r, &["198.19.2.0", "node-3"]);
}

#[test]
fn app_down_is_refused() {
    let Some((r, _files)) = diagnose("app-down") else {
        return;
    };
    assert_says(&r, &["8080", "nothing listens"]);
}

#[test]
fn listen_loopback_is_loopback_only() {
    let Some((r, _files)) = diagnose("listen-loopback") else {
        return;
    };
    assert_says(&r, &["127.0.0.1:8080"]);
}

#[test]
fn port_filtered_is_filtered_where_the_syns_stop() {
    let Some((r, _files)) = diagnose("port-filtered") else {
        return;
    };
    // The captures show the SYNs reaching node-2's NIC unanswered.
    assert_says(&r, &["node-2/eth0", "never answered"]);
}

#[test]
fn mtu_blackhole_names_both_mtus_and_the_lost_segments() {
    let Some((r, _files)) = diagnose("mtu-blackhole") else {
        return;
    };
    assert_says(&r, &["1440", "1500", "never seen further"]);
    // The path: sent from the source, dropped where the captures lose it,
    // and that step names the interface whose MTU is the path's.
    let path = r["verdict"]["path"].as_array().expect("path");
    assert_eq!(path[0]["action"], "sent", "{path:#?}");
    let failing = path
        .iter()
        .find(|s| s["action"] == "dropped")
        .unwrap_or_else(|| panic!("no dropped step: {path:#?}"));
    assert_eq!(failing["resource"]["kind"], "interface", "{failing:#}");
    assert!(
        failing["resource"]["name"]
            .as_str()
            .is_some_and(|n| n.contains("mtu 1440")),
        "{failing:#}"
    );
    // Every observer's file is saved, web-0's own next to its node's (two
    // observers on one probe keep apart), plus the merged one; the capture
    // files are real pcapng, readable by tshark.
    let observers = r["observers"].as_array().expect("observers");
    assert!(
        observers.iter().all(|o| o["error"].is_null()),
        "{observers:#?}"
    );
    assert!(
        observers
            .iter()
            .any(|o| o["probe"] == "node-2@pod:default/web-0"),
        "{observers:#?}"
    );
    let artifacts = r["artifacts"].as_array().expect("artifacts");
    assert_eq!(artifacts.len(), observers.len() + 1, "{r:#}");
    assert!(
        artifacts.iter().any(|a| a
            .as_str()
            .is_some_and(|a| a.ends_with("node-2@pod-default-web-0.pcapng"))),
        "{artifacts:#?}"
    );
    for a in artifacts {
        let path = a.as_str().expect("path");
        let out = Command::new("tshark")
            .args(["-r", path, "-c", "1"])
            .output()
            .expect("tshark");
        assert!(
            out.status.success(),
            "tshark cannot read {path}: {}",
            text(&out)
        );
    }
}

#[test]
fn dns_down_is_dns_service_down() {
    let Some((r, _files)) = diagnose("dns-down") else {
        return;
    };
    assert_says(&r, &["198.19.1.53"]);
}

#[test]
fn pod_dns_config_is_pod_dns_config() {
    let Some((r, _files)) = diagnose("pod-dns-config") else {
        return;
    };
    // The resolv.conf, and the pod spec it comes from (the lab's API).
    assert_says(&r, &["198.18.200.53", "dnsPolicy None", "spec.dnsConfig"]);
}

#[test]
fn kube_proxy_missing_is_dns_unreachable_pointing_at_kube_proxy() {
    let Some((r, _files)) = diagnose("kube-proxy-missing") else {
        return;
    };
    // The inventory comes from the lab's Kubernetes API: the verdict cites
    // the Pending pod itself, the scheduler's reason and the missing
    // priority class (reference incident 3).
    assert_says(
        &r,
        &[
            "kube-proxy on node-3",
            "198.18.200.10",
            "Unschedulable",
            "no priorityClassName",
        ],
    );
    let cited = r["verdict"]["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["source"]["inventory"] == "pod/kube-system/kube-proxy-node3");
    assert!(
        cited,
        "no evidence cites the kube-proxy pod:
{r:#}"
    );
    assert!(
        r["verdict"]["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("node-3"),
        "{r:#}"
    );
}

#[test]
fn dual_ip_is_an_overlay_source_mismatch_naming_both_addresses() {
    let Some((r, _files)) = diagnose("dual-ip") else {
        return;
    };
    assert_says(&r, &["198.18.0.23", "198.18.0.13"]);
    let summary = r["verdict"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with("node-3 "),
        "the sender is node-3: {r:#}"
    );
}

#[test]
fn conntrack_full_is_overload() {
    let Some((r, _files)) = diagnose("conntrack-full") else {
        return;
    };
    assert_says(&r, &["node-2", "conntrack"]);
}

#[test]
fn packet_loss_is_degraded_loss() {
    let Some((r, _files)) = diagnose("packet-loss") else {
        return;
    };
    assert_says(&r, &["lost"]);
}

#[test]
fn backlog_full_is_backlog_overflow() {
    let Some((r, _files)) = diagnose("backlog-full") else {
        return;
    };
    assert_says(&r, &["unaccepted", "8080"]);
}

#[test]
fn ports_exhausted_is_port_exhaustion() {
    let Some((r, _files)) = diagnose("ports-exhausted") else {
        return;
    };
    assert_says(&r, &["node-1", "ephemeral ports"]);
}

/// The faults the nftables pass runs: those whose diagnosis reads Service
/// NAT (kube-proxy's rules, a ClusterIP, a NodePort, the cluster DNS by its
/// ClusterIP; two composed ones whose NAT is missing or stale), and one
/// that only sits beside it (a full conntrack table). All 14 catalogue
/// faults pass in this mode too (122 s on 2 cores); these keep the pass
/// near half of that.
const NFTABLES_PASS: [&str; 9] = [
    "nat-missing@node-1",
    "dnat-wrong-port@node-3",
    "kube-proxy-missing",
    "dual-ip",
    "app-down",
    "port-filtered",
    "mtu-blackhole",
    "dns-down",
    "conntrack-full",
];

/// kube-proxy in nftables mode (`lab up --proxy-mode nftables`): the lab
/// says so, a probe's nat_rules check walks kube-proxy's table (its chain
/// names, the endpoint conntrack saw), and the catalogue's faults get the
/// same verdicts on one lab, each cleared before the next.
#[test]
fn the_catalogue_holds_with_kube_proxy_in_nftables_mode() {
    let Some(lab) = Lab::up_with(&["--proxy-mode", "nftables"]) else {
        return;
    };
    let started = std::time::Instant::now();
    assert_eq!(lab.status()["proxy_mode"], "nftables");
    let r = lab.json(
        &[
            "probe",
            "--from",
            "node-1",
            "--to",
            "svc:default/web",
            "--no-capture",
        ],
        0,
    );
    let nat = r["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "nat_rules" && c["from"] == "node-1")
        .unwrap_or_else(|| panic!("no nat_rules check from node-1: {r:#}"));
    let detail = nat["detail"].as_str().unwrap_or_default();
    for needle in [
        "nftables ip kube-proxy: services -> @service-ips -> service-",
        "-default/web/tcp/http -> endpoint-",
        "-default/web/tcp/http__198.19.2.10/8080 -> DNAT 198.19.2.10:8080",
        "answered by 198.19.2.10:8080",
    ] {
        assert!(detail.contains(needle), "{needle:?} not in {nat:#}");
    }
    assert_eq!(nat["status"], "ok", "{nat:#}");

    let dir = tempfile::tempdir().expect("tempdir");
    for name in NFTABLES_PASS {
        let faulty = diagnosed(&lab, name, dir.path());
        if name == "kube-proxy-missing" {
            assert_says(&faulty, &["kube-proxy on node-3", "198.18.200.10"]);
            assert!(
                faulty["verdict"]["fix"]
                    .as_str()
                    .is_some_and(|f| f.contains("table ip kube-proxy")),
                "{faulty:#}"
            );
        }
    }
    eprintln!(
        "nftables pass: {} faults in {:.1} s",
        NFTABLES_PASS.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn the_report_follows_the_contract_and_is_stored() {
    let Some(lab) = Lab::up() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8");
    let r = lab.json(
        &[
            "probe",
            "--from",
            "cloudvm-1",
            "--to",
            "nodeport:30080",
            "--size",
            "1472",
            "--out",
            out,
        ],
        0,
    );
    assert_eq!(r["trace_id"].as_str().map(str::len), Some(32), "{r:#}");
    assert_eq!(unsupported_claims(&r), Vec::<String>::new(), "{r:#}");
    let evidence = r["verdict"]["evidence"].as_array().expect("evidence");
    assert!(
        !evidence.is_empty() && evidence.iter().all(|e| e["source"]["check"].is_string()),
        "an ok verdict cites the checks that passed: {r:#}"
    );
    assert_eq!(r["target"]["spec"], "nodeport:30080");
    let endpoints = r["target"]["endpoints"].as_array().expect("endpoints");
    for node in ["node-1", "node-2", "node-3"] {
        assert!(
            endpoints
                .iter()
                .any(|e| e["node"] == node && e["port"] == 30080 && e["role"] == "node"),
            "{node} missing from {endpoints:#?}"
        );
    }
    assert!(
        endpoints
            .iter()
            .any(|e| e["role"] == "backend" && e["ip"] == "198.19.2.10")
    );
    let observers: Vec<&str> = r["observers"]
        .as_array()
        .expect("observers")
        .iter()
        .filter_map(|o| o["probe"].as_str())
        .collect();
    // Every node, and node-2 again inside the backend pod web-0, named as
    // a source in a pod is (`PROBE@pod:NS/NAME`).
    assert_eq!(
        observers,
        [
            "cloudvm-1",
            "node-1",
            "node-2",
            "node-2@pod:default/web-0",
            "node-3"
        ]
    );
    let checks = r["checks"].as_array().expect("checks");
    for name in [
        "icmp",
        "icmp_large",
        "tcp_connect",
        "tcp_transfer",
        "node_facts",
        "nat_rules",
        "capture",
    ] {
        assert!(checks.iter().any(|c| c["name"] == name), "no {name} check");
    }
    let large = checks
        .iter()
        .find(|c| c["name"] == "icmp_large" && c["from"] == "cloudvm-1")
        .expect("icmp_large");
    assert_eq!(
        (large["size"].as_u64(), large["status"].as_str()),
        (Some(1472), Some("ok"))
    );
    assert_eq!(large["sent"], large["received"]);
    assert!(
        checks
            .iter()
            .any(|c| c["direction"] == "reverse" && c["from"] == "node-2" && c["status"] == "ok"),
        "no reverse check from node-2"
    );
    for key in ["clock_error_us", "capture_skew_us", "duration_ms"] {
        assert!(r["timing"][key].is_i64(), "timing.{key}: {r:#}");
    }
    let run_id = r["run_id"].as_str().expect("run id");
    assert!(
        r["artifacts"]
            .as_array()
            .expect("artifacts")
            .iter()
            .any(|a| a
                .as_str()
                .is_some_and(|p| p.ends_with(&format!("{run_id}/merged.pcapng")))),
        "{r:#}"
    );

    // Stored by the coordinator: listed, and shown in full.
    let runs = lab.json(&["runs"], 0);
    let row = runs
        .as_array()
        .expect("runs")
        .iter()
        .find(|row| row["run_id"] == run_id)
        .expect("the run is listed");
    assert_eq!(
        (row["kind"].as_str(), row["result"].as_str()),
        (Some("probe"), Some("ok"))
    );
    let full = lab.json(&["runs", run_id], 0);
    assert_eq!(full["verdict"]["class"], "ok");
    assert_eq!(full["checks"].as_array().map(Vec::len), Some(checks.len()));

    // Without captures: the same verdict, no files.
    let quick = lab.json(
        &[
            "probe",
            "--from",
            "node-1",
            "--to",
            "svc:default/web",
            "--no-capture",
        ],
        0,
    );
    assert_eq!(quick["artifacts"].as_array().map(Vec::len), Some(0));
    assert!(
        quick["verdict"]["missing"]
            .as_array()
            .expect("missing")
            .iter()
            .any(|m| m.as_str().is_some_and(|m| m.contains("--no-capture"))),
        "{quick:#}"
    );
}

#[test]
fn bad_input_exits_2_and_a_dead_source_is_inconclusive() {
    let Some(lab) = Lab::up() else { return };
    for (args, says) in [
        (
            vec!["probe", "--from", "node-9", "--to", "nodeport:30080"],
            "node-9",
        ),
        (
            vec!["probe", "--from", "node-1", "--to", "svc:default/nope"],
            "default/nope",
        ),
        (
            vec!["probe", "--from", "node-1", "--to", "nodeport:31999"],
            "31999",
        ),
        (
            vec!["probe", "--from", "node-1", "--to", "bad target!"],
            "bad target",
        ),
        (
            vec![
                "probe",
                "--from",
                "node-1",
                "--to",
                "198.18.0.12",
                "--size",
                "70000",
            ],
            "70000",
        ),
    ] {
        let out = lab.meshctl(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(says),
            "{args:?} does not name {says:?}: {stderr}"
        );
    }

    // node-2's probe dies: nothing can run from it, and the verdict says so.
    let status = lab.status();
    let pid = status["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .find(|p| p["name"] == "probe-node-2")
        .and_then(|p| p["pid"].as_i64())
        .unwrap_or_else(|| panic!("no probe-node-2 in {status:#}"));
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .output()
        .expect("kill");
    assert!(killed.status.success(), "{}", text(&killed));
    probemesh_tests::wait_for(
        "node-2 disconnected",
        std::time::Duration::from_secs(15),
        || {
            let probes = lab.json(&["probes"], 0);
            probes
                .as_array()?
                .iter()
                .any(|p| p["name"] == "node-2" && p["connected"] == false)
                .then_some(())
        },
    );
    let r = lab.json(
        &[
            "probe",
            "--from",
            "node-2",
            "--to",
            "nodeport:node-1:30080",
            "--no-capture",
        ],
        3,
    );
    assert_eq!(r["verdict"]["class"], "inconclusive", "{r:#}");
    assert_eq!(unsupported_claims(&r), Vec::<String>::new(), "{r:#}");
    let missing = r["verdict"]["missing"].to_string();
    assert!(missing.contains("node-2"), "{r:#}");
}
