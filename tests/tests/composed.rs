//! Composed lab faults (`meshctl lab fault compose`), made and undone for
//! real: the lab comes up once, every namespace's rules, routes (and live
//! route-cache exceptions), addresses and links are recorded, then for a
//! sample that covers every family of the ground-truth table each part is
//! injected, its entry's plain-tool `observe` command must show the
//! symptom, `meshctl lab clear` undoes it, the symptom is gone and the
//! recorded state is exactly back.
//!
//! Root and network namespaces; fails loudly without them, skips only with
//! `MESH_SKIP_NETNS=1`.

use std::process::Command;
use std::time::Instant;

use probemesh_tests::lab::{Lab, ns_output, text};
use serde_json::Value;

const NAMESPACES: [&str; 8] = [
    "mesh-fabric",
    "mesh-node-1",
    "mesh-node-2",
    "mesh-node-3",
    "mesh-cloudvm-1",
    "mesh-pod-web-0",
    "mesh-pod-dns-0",
    "mesh-pod-client-3",
];

/// What the observe command does with the fault in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shows {
    /// It fails (no reply, no connection, no answer).
    Failure,
    /// It succeeds but reports packet loss.
    Loss,
}

/// One part per family of the table (14), places spread over the fabric
/// (both directions), every node, hooks, pods and cloudvm-1.
const SAMPLE: [(&str, Shows); 14] = [
    ("drop/icmp@node-2:input", Shows::Failure),
    ("reject-tcp-reset/tcp@fabric:to-node-1", Shows::Failure),
    ("route-removed@node-2", Shows::Failure),
    ("mtu-shrink-frag-filtered@node-1", Shows::Failure),
    ("mtu-shrink-frag-allowed@node-2", Shows::Failure),
    ("loss@fabric:to-node-3", Shows::Loss),
    ("listener-stopped@pod:dns-0", Shows::Failure),
    ("listener-loopback@pod:web-0", Shows::Failure),
    ("dns-drop@pod:client-3", Shows::Failure),
    ("dns-nxdomain@pod:dns-0", Shows::Failure),
    ("dnat-wrong-port@node-3", Shows::Failure),
    ("conntrack-full@node-1", Shows::Failure),
    ("second-address@node-1", Shows::Failure),
    ("link-down@pod:web-0", Shows::Failure),
];

/// `iptables-save` without counters, comments or tables that hold nothing
/// (an empty all-ACCEPT table left behind by a deleted rule filters
/// nothing: iptables cannot unload a table from a namespace).
fn rules(ns: &str) -> String {
    let out = ns_output(ns, &["iptables-save"]);
    assert!(
        out.status.success(),
        "iptables-save in {ns}: {}",
        text(&out)
    );
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut kept = Vec::new();
    for table in all.split("COMMIT\n") {
        let lines: Vec<String> = table
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| match l.rfind(" [") {
                Some(at) if l.starts_with(':') => l[..at].to_owned(),
                _ => l.to_owned(),
            })
            .collect();
        let empty = lines
            .iter()
            .all(|l| l.starts_with('*') || (l.starts_with(':') && l.ends_with(" ACCEPT")));
        if !lines.is_empty() && !empty {
            kept.extend(lines);
            kept.push("COMMIT".to_owned());
        }
    }
    kept.join("\n")
}

fn ip(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["ip", "-n", ns];
    full.extend_from_slice(args);
    let out = Command::new(full[0])
        .args(&full[1..])
        .output()
        .expect("ip runs");
    assert!(out.status.success(), "{full:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every namespace's rules, routes, live route-cache exceptions (a learned
/// path MTU), addresses and links.
fn snapshot() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for ns in NAMESPACES {
        let cache: String = ip(ns, &["-o", "route", "show", "cache"])
            .lines()
            .filter(|l| l.contains(" mtu ") || l.contains("expires"))
            .collect::<Vec<_>>()
            .join("\n");
        for (what, state) in [
            ("iptables-save", rules(ns)),
            ("ip route", ip(ns, &["route"])),
            ("ip route show cache", cache),
            ("ip addr", ip(ns, &["addr"])),
            ("ip link", ip(ns, &["link"])),
        ] {
            all.push((format!("{ns}: {what}"), state));
        }
    }
    all
}

fn assert_same(before: &[(String, String)], after: &[(String, String)], spec: &str) {
    for ((what, a), (_, b)) in before.iter().zip(after) {
        assert_eq!(
            a, b,
            "{spec}: `{what}` is not back to the baseline after `lab clear`"
        );
    }
}

/// Runs an observe command (a shell line); returns (exit code, output).
fn observe(cmd: &str) -> (i32, String) {
    let out = Command::new("timeout")
        .args(["20", "bash", "-c", cmd])
        .output()
        .expect("bash runs");
    (out.status.code().unwrap_or(-1), text(&out))
}

fn loss_percent(output: &str) -> f64 {
    output
        .split(',')
        .find_map(|p| p.trim().strip_suffix("% packet loss"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no packet loss figure in {output}"))
}

#[test]
fn composed_faults_show_their_symptom_and_clear_exactly() {
    let Some(lab) = Lab::up() else { return };
    let started = Instant::now();
    let baseline = snapshot();
    for (spec, shows) in SAMPLE {
        let part = Instant::now();
        let entry = lab.json(&["lab", "fault", "compose", spec, "--dry-run"], 0);
        assert_eq!(entry["name"], spec, "{entry:#}");
        let cmd = entry["observe"].as_str().expect("observe").to_owned();
        let (code, out) = observe(&cmd);
        assert_eq!(code, 0, "{spec}: `{cmd}` fails on the healthy lab:\n{out}");

        let injected: Value = lab.json(&["lab", "fault", "compose", spec], 0);
        assert_eq!(injected, entry, "inject prints the dry run's entry");
        assert_eq!(lab.status()["fault"], spec);
        let (code, out) = observe(&cmd);
        match shows {
            Shows::Failure => assert_ne!(code, 0, "{spec}: `{cmd}` still works:\n{out}"),
            Shows::Loss => {
                assert_eq!(code, 0, "{spec}: `{cmd}`:\n{out}");
                assert!(loss_percent(&out) > 0.0, "{spec}: no loss:\n{out}");
            }
        }

        lab.clear();
        assert_eq!(lab.status()["fault"], Value::Null);
        let (code, out) = observe(&cmd);
        assert_eq!(code, 0, "{spec}: `{cmd}` still fails after clear:\n{out}");
        if shows == Shows::Loss {
            assert!(loss_percent(&out) < 5.0, "{spec}: loss after clear:\n{out}");
        }
        assert_same(&baseline, &snapshot(), spec);
        eprintln!("{spec}: {:.1} s", part.elapsed().as_secs_f64());
    }

    // A composed fault is replaced like a catalogue one: the next
    // injection clears it first, and `lab fault NAME` takes its name.
    let first = "route-blackhole@cloudvm-1";
    let second = "drop/tcp@node-3:forward";
    lab.json(&["lab", "fault", first], 0);
    assert_eq!(lab.status()["fault"], first);
    lab.json(&["lab", "fault", "compose", second], 0);
    assert_eq!(lab.status()["fault"], second);
    lab.fault("icmp-blocked");
    lab.clear();
    assert_same(&baseline, &snapshot(), "a fault replaced twice");
    eprintln!(
        "{} composed faults injected and cleared in {:.1} s",
        SAMPLE.len() + 2,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn bad_specs_exit_2_and_change_nothing() {
    let Some(lab) = Lab::take() else { return };
    for spec in [
        "drop@nowhere",
        "loss@node-2:input",
        "route-removed@cloudvm-1",
        "shake@node-1",
    ] {
        let out = lab.meshctl(&["lab", "fault", "compose", spec]);
        assert_eq!(out.status.code(), Some(2), "{spec}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("unknown") || err.contains("is refused:"),
            "{spec}: {err}"
        );
    }
    let status = lab.status();
    assert_eq!(status["state"], "down", "nothing was made: {status:#}");
}
