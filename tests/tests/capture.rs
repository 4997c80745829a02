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

    let capture = std::thread::scope(|s| {
        let capture = s.spawn(|| {
            lab.json(
                &[
                    "capture",
                    "--on",
                    "cloudvm-1:eth0,node-1:eth0,node-2:flannel.1",
                    "--filter",
                    "tcp port 30080 or tcp port 8080",
                    "--duration",
                    "4s",
                    "--out",
                    out,
                ],
                0,
            )
        });
        // Connect once every observer is surely armed (the window opens
        // ~0.3 s after the request), well inside the 4 s window.
        std::thread::sleep(std::time::Duration::from_millis(1_200));
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
        capture.join().expect("capture thread")
    });

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
    let limited: Value = lab.json(
        &[
            "capture",
            "--on",
            "node-1:lo",
            "--duration",
            "5s",
            "--max-packets",
            "3",
            "--out",
            out,
        ],
        0,
    );
    let _ = limited;
    // Nothing claims to be complete when it is not.
    let partial: Vec<_> = walk(out_dir.path())
        .into_iter()
        .filter(|p| p.ends_with(".part"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
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
