//! `meshctl capture` in the lab: three observers on three hosts and two
//! layers (cloudvm-1's NIC, node-1's NIC, node-2's VXLAN device), armed for
//! one instant, while cloudvm-1 opens connections to a NodePort. Every file
//! is read back by tshark; the merged file puts each SYN's hops in causal
//! order on the common clock.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use probemesh_tests::lab::{Lab, text};
use serde_json::Value;

/// (epoch seconds, interface name, TCP source port) of every initial SYN.
fn syns(file: &Path) -> Vec<(f64, String, u16)> {
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(file)
        .args([
            "-Y",
            "tcp.flags.syn == 1 && tcp.flags.ack == 0",
            "-T",
            "fields",
        ])
        .args([
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.interface_name",
            "-e",
            "tcp.srcport",
        ])
        .output()
        .expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark -r {}: {}",
        file.display(),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((
                f.next()?.parse().ok()?,
                f.next()?.to_owned(),
                f.next()?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn three_observers_capture_one_timeline_across_nat_and_vxlan() {
    let Some(lab) = Lab::up() else { return };
    let out_dir = tempfile::tempdir().expect("tmp");
    let out = out_dir.path().to_str().expect("utf-8");
    let connections = 5;

    let capture = capture_during(
        &lab,
        &[
            "--on",
            "cloudvm-1:eth0,node-1:eth0,node-2:flannel.1",
            "--filter",
            "tcp port 30080 or tcp port 8080 or udp port 8472",
            "--duration",
            "4s",
        ],
        out,
        || {
            let tcping = lab.meshctl(&[
                "tcping",
                "--from",
                "cloudvm-1",
                "198.18.0.11:30080",
                "-c",
                &connections.to_string(),
                "-i",
                "100ms",
            ]);
            assert_eq!(tcping.status.code(), Some(0), "{}", text(&tcping));
        },
    );

    // Headers only by default, every observer's file on disk and complete.
    let artifacts: Vec<String> = capture["artifacts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        artifacts.len(),
        4,
        "three observers and the merged file: {capture}"
    );
    for a in &artifacts {
        assert!(Path::new(a).exists(), "{a}");
        assert!(!a.ends_with(".part"), "{a}");
    }
    let timing = &capture["timing"];
    eprintln!("capture timing: {timing}");
    assert!(
        timing["capture_skew_us"]
            .as_i64()
            .is_some_and(|s| (0..1_000_000).contains(&s)),
        "{timing}"
    );
    assert!(timing["clock_error_us"].as_i64().is_some(), "{timing}");

    // Each observer saw one SYN per connection.
    let merged = artifacts
        .iter()
        .find(|a| a.ends_with("merged.pcapng"))
        .expect("merged file");
    let per_observer: BTreeMap<String, usize> = artifacts
        .iter()
        .filter(|a| !a.ends_with("merged.pcapng"))
        .map(|a| (a.clone(), syns(Path::new(a)).len()))
        .collect();
    for (file, n) in &per_observer {
        assert_eq!(*n, connections, "{file}: {per_observer:?}");
    }

    // In the merged file, every connection's SYN goes cloudvm-1 -> node-1
    // -> node-2's VXLAN device, in that order on the common clock. The
    // NodePort's masquerade rewrites the client port, so connections are
    // matched by their order (they are 100 ms apart, far more than a hop).
    let mut by_hop: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (t, iface, _port) in syns(Path::new(merged)) {
        by_hop.entry(iface).or_default().push(t);
    }
    let hop = |name: &str| by_hop.get(name).cloned().unwrap_or_default();
    let (cloud, node1, node2) = (
        hop("cloudvm-1/eth0"),
        hop("node-1/eth0"),
        hop("node-2/flannel.1"),
    );
    assert!(
        cloud.len() == connections && node1.len() == connections && node2.len() == connections,
        "{by_hop:?}"
    );
    for i in 0..connections {
        assert!(
            cloud[i] < node1[i] && node1[i] < node2[i],
            "connection {i}: {} {} {}",
            cloud[i],
            node1[i],
            node2[i]
        );
    }

    // The coordinator followed each connection's SYN across the hops: the
    // NodePort's DNAT to web-0 and the VXLAN hop to node-2, answered.
    let fates: Vec<&Value> = capture["correlation"]["fates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| {
            f["packet"]
                .as_str()
                .is_some_and(|p| p.starts_with("tcp") && p.contains("[SYN]"))
        })
        .collect();
    assert_eq!(fates.len(), connections, "{}", capture["correlation"]);
    for fate in fates {
        let hops = fate["hops"].as_array().cloned().unwrap_or_default();
        let transforms: Vec<String> = hops.iter().flat_map(|h| strs(&h["transforms"])).collect();
        let observers: Vec<String> = hops
            .iter()
            .filter_map(|h| h["observer"].as_str().map(str::to_owned))
            .collect();
        assert!(
            transforms
                .iter()
                .any(|t| t.starts_with("DNAT 198.18.0.11:30080 -> 198.19.2.10:8080")),
            "{fate}"
        );
        assert!(
            transforms
                .iter()
                .any(|t| t.starts_with("VXLAN vni 1 198.18.0.11 -> 198.18.0.12")),
            "{fate}"
        );
        assert!(observers.contains(&"node-2/flannel.1".to_owned()), "{fate}");
        assert_eq!(fate["answered"], true, "{fate}");
    }

    // Headers only: tshark sees the 128-byte snap length.
    let info = Command::new("capinfos")
        .arg(merged)
        .output()
        .expect("capinfos");
    let info_text = String::from_utf8_lossy(&info.stdout);
    assert!(info_text.contains("128"), "{info_text}");
}

#[test]
fn bad_captures_end_cleanly_with_clear_messages() {
    let Some(lab) = Lab::up() else { return };
    let out_dir = tempfile::tempdir().expect("tmp");
    let out = out_dir.path().to_str().expect("utf-8");
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &[
                "capture",
                "--on",
                "node-1:eth0",
                "--filter",
                "tcp prot 80",
                "--duration",
                "1s",
                "--out",
                out,
            ],
            2,
            "tcp prot 80",
        ),
        (
            &[
                "capture",
                "--on",
                "node-1:eth9",
                "--filter",
                "icmp",
                "--duration",
                "1s",
                "--out",
                out,
            ],
            2,
            "eth9",
        ),
        (
            &[
                "capture",
                "--on",
                "node-1:eth0",
                "--duration",
                "1s",
                "--payload",
                "--out",
                out,
            ],
            2,
            "--allow-payload-capture",
        ),
        (
            &[
                "capture",
                "--on",
                "node-9:eth0",
                "--duration",
                "1s",
                "--out",
                out,
            ],
            2,
            "node-9",
        ),
    ];
    for (args, code, needle) in cases {
        let res = lab.meshctl(args);
        assert_eq!(
            res.status.code(),
            Some(*code),
            "meshctl {args:?}: {}",
            text(&res)
        );
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
        assert!(all.contains(needle), "meshctl {args:?}: {all}");
    }
    // A capture that hits its packet limit ends with what it has, complete.
    // A capture that hits its packet limit ends early with what it has,
    // complete and readable.
    let limited = capture_during(
        &lab,
        &[
            "--on",
            "node-1:eth0",
            "--filter",
            "icmp",
            "--duration",
            "8s",
            "--max-packets",
            "3",
        ],
        out,
        || {
            let ping = lab.meshctl(&[
                "ping",
                "--from",
                "cloudvm-1",
                "198.18.0.11",
                "-c",
                "6",
                "-i",
                "100ms",
            ]);
            assert_eq!(ping.status.code(), Some(0), "{}", text(&ping));
        },
    );
    let observer = &limited["observers"][0];
    assert_eq!(observer["stop"], "packet_limit", "{limited}");
    assert_eq!(observer["interfaces"][0]["packets"], 3, "{limited}");
    assert!(
        limited["timing"]["duration_ms"]
            .as_i64()
            .is_some_and(|ms| ms < 8_000),
        "ended early: {limited}"
    );
    // Nothing claims to be complete when it is not.
    let partial: Vec<_> = walk(out_dir.path())
        .into_iter()
        .filter(|p| p.ends_with(".part"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
}

/// Runs `meshctl capture ARGS --out OUT -o json` (expecting exit 0) and,
/// once every observer is surely armed (the window opens ~0.3 s after the
/// request), `traffic`; returns the capture's report.
fn capture_during(lab: &Lab, args: &[&str], out: &str, traffic: impl FnOnce()) -> Value {
    std::thread::scope(|s| {
        let capture = s.spawn(|| {
            let mut full = vec!["capture"];
            full.extend_from_slice(args);
            full.extend(["--out", out]);
            lab.json(&full, 0)
        });
        std::thread::sleep(std::time::Duration::from_millis(1_000));
        traffic();
        capture.join().expect("capture thread")
    })
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn dual_ip_vxlan_leaves_with_the_wrong_outer_source_and_is_not_answered() {
    let Some(lab) = Lab::up() else { return };
    lab.fault("dual-ip");
    let out_dir = tempfile::tempdir().expect("tmp");
    let out = out_dir.path().to_str().expect("utf-8");
    let capture = capture_during(
        &lab,
        &[
            "--on",
            "node-3:eth0,node-2:eth0",
            "--filter",
            "udp port 8472",
            "--duration",
            "3s",
        ],
        out,
        || {
            // node-3 -> the web Service: DNAT to web-0 on node-2, over VXLAN.
            let tcping = lab.meshctl(&[
                "tcping",
                "--from",
                "node-3",
                "198.18.200.80:80",
                "-c",
                "2",
                "-t",
                "500ms",
                "-i",
                "200ms",
            ]);
            assert_eq!(
                tcping.status.code(),
                Some(1),
                "the fault breaks the path: {}",
                text(&tcping)
            );
        },
    );
    let correlation = &capture["correlation"];
    let sources: Vec<(String, String)> = correlation["encapsulation"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["observer"].as_str().unwrap_or("").to_owned(),
                e["outer_src"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        sources.contains(&("node-3/eth0".to_owned(), "198.18.0.23".to_owned())),
        "{correlation}"
    );
    assert!(
        !sources
            .iter()
            .any(|(o, src)| o == "node-3/eth0" && src == "198.18.0.13"),
        "{correlation}"
    );
    let syn = correlation["fates"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["packet"].as_str().is_some_and(|p| p.contains("[SYN]")))
        .cloned()
        .unwrap_or_default();
    assert_eq!(syn["answered"], false, "{correlation}");
    assert_eq!(
        syn["lost_after"], "node-2/eth0",
        "arrives at node-2, never answered: {correlation}"
    );
}

#[test]
fn mtu_black_hole_large_segments_leave_the_sender_and_never_arrive() {
    let Some(lab) = Lab::up() else { return };
    lab.fault("mtu-blackhole");
    let out_dir = tempfile::tempdir().expect("tmp");
    let out = out_dir.path().to_str().expect("utf-8");
    let capture = capture_during(
        &lab,
        &[
            "--on",
            "cloudvm-1:eth0,node-2:eth0",
            "--filter",
            "tcp port 30080",
            "--duration",
            "4s",
        ],
        out,
        || {
            let transfer = lab.meshctl(&[
                "transfer",
                "--from",
                "cloudvm-1",
                "198.18.0.12:30080",
                "-t",
                "2s",
            ]);
            assert_eq!(
                transfer.status.code(),
                Some(1),
                "the transfer stalls: {}",
                text(&transfer)
            );
        },
    );
    let correlation = &capture["correlation"];
    let fates = correlation["fates"].as_array().cloned().unwrap_or_default();
    let large_lost = fates.iter().filter(|f| {
        let hops = f["hops"].as_array().cloned().unwrap_or_default();
        f["answered"] == false
            && hops.iter().any(|h| {
                h["observer"] == "cloudvm-1/eth0"
                    && h["wire_bytes"].as_u64().is_some_and(|b| b > 1454)
            })
            && hops.iter().all(|h| h["observer"] != "node-2/eth0")
    });
    assert!(
        large_lost.count() > 0,
        "no large segment lost between the observers: {correlation}"
    );
    // Small packets of the same connection (the handshake) got through.
    assert!(
        fates.iter().any(|f| f["answered"] == true
            && f["hops"]
                .as_array()
                .is_some_and(|h| h.iter().any(|h| h["observer"] == "node-2/eth0"))),
        "{correlation}"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}
