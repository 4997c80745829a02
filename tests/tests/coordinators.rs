//! Several coordinators, all active, on a real 3-member etcd: three
//! coordinators on loopback, real probes each given all three addresses.
//! A coordinator killed with SIGKILL loses its probes to the others within
//! 5 s; afterwards a run started on any coordinator, including one that
//! does not hold the run's probe, works through the relay; and a capture
//! across two probes held by different coordinators arms both observers
//! for one instant with a clock bound covering both hops. Nothing the killed
//! coordinator stored (a run, a join token) is lost.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use probemesh_proto::pb;
use probemesh_proto::pki::TlsDir;
use probemesh_proto::tls::{client_config, connect};
use probemesh_tests::etcd::EtcdCluster;
use probemesh_tests::{
    Daemon, assert_exit, bin, command, free_port, run, runtime, stdout, wait_for,
};
use serde_json::Value;

const PROBES: [&str; 4] = ["p-1", "p-2", "p-3", "p-4"];
/// The bound the issue sets on re-attaching a dead coordinator's probes.
const REATTACH_WITHIN: Duration = Duration::from_secs(5);

/// Three coordinators sharing one etcd and one CA, and the probes.
struct Trio {
    dir: tempfile::TempDir,
    urls: Vec<String>,
    coordinators: Vec<Option<Daemon>>,
    probes: Vec<Daemon>,
}

impl Trio {
    fn start(etcd: &EtcdCluster) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().to_str().expect("utf-8 temp path").to_owned();
        assert_exit(
            &run("meshctl", &["certs", "init", "--dir", &d]),
            0,
            "certs init",
        );
        let mut urls = Vec::new();
        let mut coordinators = Vec::new();
        for i in 0..3 {
            let listen = format!("127.0.0.1:{}", free_port());
            let mut cmd = Command::new(bin("mesh-coordinator"));
            cmd.args([
                "--listen",
                &listen,
                "--tls-dir",
                &d,
                "--heartbeat",
                "300ms",
                "--etcd",
                &etcd.endpoint_list(),
                "--id",
                &format!("c{i}"),
            ]);
            let daemon = Daemon::spawn(&format!("mesh-coordinator c{i}"), cmd);
            daemon.wait_for_log("coordinator serving", Duration::from_secs(20));
            urls.push(format!("https://{listen}"));
            coordinators.push(Some(daemon));
        }
        let all = urls.join(",");
        let mut probes = Vec::new();
        for name in PROBES {
            assert_exit(
                &run(
                    "meshctl",
                    &[
                        "certs", "issue", "--dir", &d, "--name", name, "--role", "probe",
                    ],
                ),
                0,
                "certs issue",
            );
            let mut cmd = Command::new(bin("mesh-probe"));
            cmd.args(["--name", name, "--coordinator", &all, "--tls-dir", &d]);
            probes.push(Daemon::spawn(&format!("mesh-probe {name}"), cmd));
        }
        Self {
            dir,
            urls,
            coordinators,
            probes,
        }
    }

    /// `meshctl ping -c 100` from `probe`, started on coordinator `on`,
    /// returned once its first reply is printed (the task runs on the
    /// probe). meshctl ends by itself after 100 pings, so the wait is bounded.
    fn long_ping(&self, on: usize, probe: &str) -> std::process::Child {
        let dir = self.dir.path().to_str().expect("utf-8 temp path");
        let args = [
            "--coordinator",
            &self.urls[on],
            "--tls-dir",
            dir,
            "--identity",
            "admin",
            "ping",
            "--from",
            probe,
            "127.0.0.1",
            "-c",
            "100",
            "-i",
            "200ms",
        ];
        let mut child = command("meshctl", &args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn meshctl ping");
        let out = child.stdout.take().expect("piped");
        let mut replies = std::io::BufReader::new(out);
        let mut line = String::new();
        while !line.contains("icmp_seq") {
            line.clear();
            let read = std::io::BufRead::read_line(&mut replies, &mut line).expect("read meshctl");
            assert!(read > 0, "meshctl ping ended before its first reply");
        }
        child.stdout = Some(replies.into_inner());
        child
    }

    fn meshctl(&self, on: usize, args: &[&str]) -> std::process::Output {
        let dir = self.dir.path().to_str().expect("utf-8 temp path");
        let mut full = vec![
            "--coordinator",
            &self.urls[on],
            "--tls-dir",
            dir,
            "--identity",
            "admin",
        ];
        full.extend_from_slice(args);
        command("meshctl", &full).output().expect("run meshctl")
    }

    /// Which coordinator holds each connected probe, as coordinator `on`
    /// lists them.
    fn holders(&self, on: usize) -> BTreeMap<String, String> {
        probemesh_tests::holders(&self.meshctl(on, &["probes", "-o", "json"]))
    }

    /// Makes each of `live` hold at least one probe, as coordinator `on`
    /// sees it: a probe of a coordinator holding them all is restarted with
    /// only the empty one's address.
    fn spread_over(&mut self, on: usize, live: &[&str]) {
        let holders = self.wait_all_held(on, live, Duration::from_secs(5));
        for empty in live.iter().filter(|c| !holders.values().any(|h| h == *c)) {
            let (moved, _) = holders.iter().next().expect("probes are held");
            let i = PROBES.iter().position(|p| p == moved).expect("one of ours");
            let index: usize = empty[1..].parse().expect("c<N>");
            let dir = self.dir.path().to_str().expect("utf-8 temp path");
            self.probes[i].kill();
            let mut cmd = Command::new(bin("mesh-probe"));
            cmd.args(["--name", moved, "--coordinator", &self.urls[index]])
                .args(["--tls-dir", dir]);
            self.probes[i] = Daemon::spawn(&format!("mesh-probe {moved}"), cmd);
            wait_for(
                &format!("{moved} held by {empty}"),
                Duration::from_secs(10),
                || (self.holders(on).get(moved.as_str()) == Some(&empty.to_string())).then_some(()),
            );
        }
    }

    /// Waits until coordinator `on` lists every probe held by one of `live`.
    fn wait_all_held(&self, on: usize, live: &[&str], limit: Duration) -> BTreeMap<String, String> {
        wait_for(
            &format!("every probe held by one of {live:?}, as c{on} sees it"),
            limit,
            || {
                let holders = self.holders(on);
                (holders.len() == PROBES.len()
                    && holders.values().all(|h| live.contains(&h.as_str())))
                .then_some(holders)
            },
        )
    }
}

#[test]
fn a_killed_coordinator_loses_its_probes_to_the_others_and_runs_go_on_through_any() {
    let etcd = EtcdCluster::start(3);
    let mut trio = Trio::start(&etcd);
    let all = ["c0", "c1", "c2"];
    let before = trio.wait_all_held(0, &all, Duration::from_secs(20));
    for on in 1..3 {
        assert_eq!(
            trio.wait_all_held(on, &all, Duration::from_secs(10)),
            before,
            "every coordinator lists the same holders"
        );
    }
    eprintln!("holders before the kill: {before:?}");
    peers_answer_only_coordinators(&trio, &before);
    a_second_stream_on_another_coordinator_is_refused(&trio, &before);

    // Kill the coordinator holding the most probes.
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for holder in before.values() {
        *counts.entry(holder.as_str()).or_default() += 1;
    }
    let (victim, held) = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(h, n)| (h.to_string(), *n))
        .expect("some coordinator holds probes");
    let victim_index: usize = victim[1..].parse().expect("c<N>");
    // A run relayed to the victim from another coordinator, going when it dies.
    let relaying = (0..3).find(|i| *i != victim_index).expect("another");
    let doomed = before
        .iter()
        .find(|(_, h)| **h == victim)
        .map(|(p, _)| p.clone())
        .expect("a probe of the victim");
    // What the victim stored before it dies: a finished run and a join token.
    let kept_run = trio.meshctl(
        victim_index,
        &[
            "ping",
            "--from",
            &doomed,
            "127.0.0.1",
            "-c",
            "1",
            "-o",
            "json",
        ],
    );
    assert_exit(&kept_run, 0, &format!("a ping on {victim}"));
    let kept_run: Value = serde_json::from_slice(&kept_run.stdout).expect("ping JSON");
    let kept_run = kept_run["run_id"].as_str().expect("run_id").to_owned();
    let token = trio.meshctl(
        victim_index,
        &["join-token", "create", "--name", "cloudvm-9", "--ttl", "1h"],
    );
    assert_exit(&token, 0, &format!("join-token create on {victim}"));
    let token = stdout(&token).trim().to_owned();
    let in_flight = trio.long_ping(relaying, &doomed);
    let killed = Instant::now();
    trio.coordinators[victim_index]
        .take()
        .expect("running")
        .kill();
    let live: Vec<&str> = all.iter().copied().filter(|c| *c != victim).collect();
    let survivor = (0..3).find(|i| *i != victim_index).expect("a survivor");
    let after = trio.wait_all_held(survivor, &live, Duration::from_secs(15));
    let took = killed.elapsed();
    eprintln!(
        "coordinator {victim} (holding {held} probes) killed with SIGKILL: every probe attached elsewhere in {took:?}; holders now {after:?}"
    );
    assert!(
        took < REATTACH_WITHIN,
        "re-attach took {took:?}, over {REATTACH_WITHIN:?}"
    );
    let lost = in_flight.wait_with_output().expect("meshctl ping ends");
    let said = format!("{}{}", stdout(&lost), String::from_utf8_lossy(&lost.stderr));
    eprintln!(
        "the run relayed to {victim} from c{relaying} ended: exit {:?}",
        lost.status.code()
    );
    assert_ne!(lost.status.code(), Some(0), "{said}");
    assert!(
        said.contains(&format!(
            "probe '{doomed}' disconnected while running the task"
        )),
        "{said}"
    );

    // Nothing the victim stored is lost: its run reads done on a survivor,
    // and its token enrolls a host there (once).
    let runs = trio.meshctl(survivor, &["runs", "--limit", "1000", "-o", "json"]);
    assert_exit(&runs, 0, "meshctl runs on a survivor");
    let runs: Vec<Value> = serde_json::from_slice(&runs.stdout).expect("runs JSON");
    let state = runs
        .iter()
        .find(|r| r["run_id"] == kept_run.as_str())
        .map(|r| r["state"].clone());
    assert_eq!(
        state,
        Some(Value::from("done")),
        "run {kept_run} after the kill"
    );
    let enrolled = tempfile::tempdir().expect("temp dir");
    let join = |dir: &std::path::Path| {
        run(
            "mesh-probe",
            &[
                "join",
                "--enroll-only",
                "--coordinator",
                &trio.urls[survivor],
                "--token",
                &token,
                "--tls-dir",
                dir.to_str().expect("utf-8 temp path"),
            ],
        )
    };
    assert_exit(
        &join(enrolled.path()),
        0,
        "the victim's token redeemed on a survivor",
    );
    let again = tempfile::tempdir().expect("temp dir");
    assert_exit(&join(again.path()), 2, "the same token a second time");
    eprintln!(
        "after the kill: run {kept_run} reads done and the token enrolled cloudvm-9 on c{survivor}"
    );

    // Probes pick their next coordinator at random: when every one of them
    // went to one survivor, move one to the other, so that each survivor
    // holds a probe for the relay checks below.
    trio.spread_over(survivor, &live);

    // A run on every survivor, on a probe it holds and on one it does not.
    for on in (0..3).filter(|i| *i != victim_index) {
        let me = format!("c{on}");
        let holders = trio.wait_all_held(on, &live, Duration::from_secs(5));
        let mine = holders.iter().find(|(_, h)| **h == me).map(|(p, _)| p);
        let other = holders.iter().find(|(_, h)| **h != me).map(|(p, _)| p);
        for probe in mine.into_iter().chain(other) {
            let out = trio.meshctl(
                on,
                &[
                    "ping",
                    "--from",
                    probe,
                    "127.0.0.1",
                    "-c",
                    "2",
                    "-i",
                    "200ms",
                    "-o",
                    "json",
                ],
            );
            assert_exit(&out, 0, &format!("ping from {probe} started on {me}"));
            let report: Value = serde_json::from_slice(&out.stdout).expect("ping JSON");
            eprintln!(
                "ping from {probe} (held by {}) started on {me}: {}",
                holders[probe], report["summary"]
            );
            assert!(report.to_string().contains("\"received\":2"), "{report}");
        }
    }

    // The requester leaving a relayed run cancels the task on the probe.
    let on = (0..3).find(|i| *i != victim_index).expect("a survivor");
    let me = format!("c{on}");
    let holders = trio.wait_all_held(on, &live, Duration::from_secs(5));
    let (remote, _) = holders
        .iter()
        .find(|(_, h)| **h != me)
        .expect("a probe held by the other survivor");
    let mut long_ping = trio.long_ping(on, remote);
    let probe = PROBES
        .iter()
        .position(|p| p == remote)
        .expect("one of ours");
    let _ = long_ping.kill();
    let _ = long_ping.wait();
    let left = Instant::now();
    trio.probes[probe].wait_for_log("task cancelled by the coordinator", Duration::from_secs(10));
    eprintln!(
        "requester of a ping from {remote} on {me} left: cancelled on the probe (held by {}) after {:?}",
        holders[remote],
        left.elapsed()
    );

    // A capture across two probes held by different coordinators.
    let holders = trio.wait_all_held(survivor, &live, Duration::from_secs(5));
    let mut by_holder: BTreeMap<&str, &str> = BTreeMap::new();
    for (probe, holder) in &holders {
        by_holder.entry(holder.as_str()).or_insert(probe.as_str());
    }
    assert_eq!(
        by_holder.len(),
        2,
        "both survivors hold a probe: {holders:?}"
    );
    let on = by_holder
        .values()
        .map(|p| format!("{p}:lo"))
        .collect::<Vec<_>>()
        .join(",");
    let out_dir = tempfile::tempdir().expect("tmp");
    let out = trio.meshctl(
        survivor,
        &[
            "capture",
            "--on",
            &on,
            "--filter",
            "icmp",
            "--duration",
            "1s",
            "--out",
            out_dir.path().to_str().expect("utf-8"),
            "-o",
            "json",
        ],
    );
    assert_exit(&out, 0, "capture across coordinators");
    let capture: Value = serde_json::from_slice(&out.stdout).expect("capture JSON");
    let observers = capture["observers"].as_array().cloned().unwrap_or_default();
    assert_eq!(observers.len(), 2, "{capture}");
    for o in &observers {
        let armed = o["interfaces"][0]["armed_unix_ns"].as_i64().unwrap_or(0);
        assert!(armed > 0, "observer not armed: {o}");
        assert!(
            o["clock_error_us"].as_f64().is_some_and(|e| e > 0.0),
            "no clock bound: {o}"
        );
    }
    let timing = &capture["timing"];
    eprintln!(
        "capture on {on} started on c{survivor}: timing {timing}, observers {}",
        serde_json::to_string(&observers).unwrap_or_default()
    );
    assert!(
        timing["clock_error_us"].as_i64().is_some_and(|e| e > 0),
        "{timing}"
    );
    // The survivor that started it measured the other's probe through its
    // holder: a relayed clock.
    let listed = trio.meshctl(survivor, &["probes", "-o", "json"]);
    let listed: Vec<Value> = serde_json::from_slice(&listed.stdout).expect("probes JSON");
    let me = format!("c{survivor}");
    let relayed = listed
        .iter()
        .find(|p| by_holder.values().any(|n| p["name"] == *n) && p["coordinator"] != me.as_str())
        .expect("a probe held by the other survivor");
    assert_eq!(relayed["clock_path"], "relay", "{relayed}");

    // A coordinator stopped with SIGTERM revokes its lease: its probes move
    // to the last one sooner than the lease would lapse.
    let stopped = live
        .iter()
        .map(|c| c[1..].parse::<usize>().expect("c<N>"))
        .find(|i| *i != survivor)
        .expect("the other survivor");
    let term = Instant::now();
    let mut daemon = trio.coordinators[stopped].take().expect("running");
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(10));
    let last = format!("c{survivor}");
    trio.wait_all_held(survivor, &[last.as_str()], Duration::from_secs(10));
    let moved = term.elapsed();
    eprintln!("coordinator c{stopped} stopped with SIGTERM: every probe on {last} in {moved:?}");
    assert!(
        moved < Duration::from_secs(3),
        "a graceful stop frees the names at once, not after the lease: {moved:?}"
    );
    drop(trio.probes.drain(..));
}

/// `Peer.Clock` answers a coordinator certificate (with its estimate of the
/// probes it holds) and refuses an operator's or a probe's.
fn peers_answer_only_coordinators(trio: &Trio, holders: &BTreeMap<String, String>) {
    let (probe, holder) = holders.iter().next().expect("a probe");
    let on: usize = holder[1..].parse().expect("c<N>");
    let dir = TlsDir::new(trio.dir.path());
    runtime().block_on(async {
        for (identity, allowed) in [
            ("coordinator", true),
            ("admin", false),
            (probe.as_str(), false),
        ] {
            let tls = client_config(&dir, identity).expect("client tls");
            let channel = connect(&trio.urls[on], tls).await.expect("connects");
            let request = pb::PeerClockRequest {
                t1_ns: 1,
                probes: vec![probe.clone(), "nobody".into()],
                ..Default::default()
            };
            let reply = pb::peer_client::PeerClient::new(channel)
                .clock(request)
                .await;
            match (allowed, reply) {
                (true, Ok(reply)) => {
                    let reply = reply.into_inner();
                    assert_eq!(reply.t1_ns, 1);
                    let names: Vec<&str> = reply.probes.iter().map(|c| c.probe.as_str()).collect();
                    assert_eq!(
                        names,
                        [probe.as_str()],
                        "only the probe {holder} holds: {reply:?}"
                    );
                }
                (false, Err(status)) => {
                    assert_eq!(
                        status.code(),
                        tonic::Code::PermissionDenied,
                        "{identity}: {status:?}"
                    );
                    assert!(
                        status.message().contains("coordinator certificate"),
                        "{status:?}"
                    );
                }
                (_, other) => panic!("{identity} on Peer.Clock: {other:?}"),
            }
        }
    });
}

/// A second stream for a probe whose stream another live coordinator holds
/// is refused, naming the holder, once the claim wait is over.
fn a_second_stream_on_another_coordinator_is_refused(
    trio: &Trio,
    holders: &BTreeMap<String, String>,
) {
    let (probe, holder) = holders.iter().next().expect("a probe");
    let holder_index: usize = holder[1..].parse().expect("c<N>");
    let other = (0..3)
        .find(|i| *i != holder_index)
        .expect("another coordinator");
    let dir = TlsDir::new(trio.dir.path());
    let started = Instant::now();
    let status = runtime().block_on(async {
        let tls = client_config(&dir, probe).expect("probe tls");
        let channel = connect(&trio.urls[other], tls).await.expect("connects");
        let hello = pb::ProbeMessage {
            msg: Some(pb::probe_message::Msg::Hello(pb::Hello {
                name: probe.clone(),
                ..Default::default()
            })),
        };
        pb::probe_link_client::ProbeLinkClient::new(channel)
            .attach(tokio_stream::iter([hello]))
            .await
            .expect_err("a second live stream is refused")
    });
    eprintln!(
        "second stream for {probe} on c{other} refused after {:?}: {}",
        started.elapsed(),
        status.message()
    );
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("live stream on coordinator '{holder}'")),
        "{status:?}"
    );
}
