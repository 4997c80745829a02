//! The lab's cluster through its Kubernetes API, end to end: `kubectl`
//! reads it, the coordinator's inventory follows it (a pod created or
//! deleted through the API is a `meshctl` target, or no longer one, within a
//! second), and node probes enroll with their pods' ServiceAccount tokens —
//! exactly under their own node's name.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use probemesh_tests::bin;
use probemesh_tests::lab::{Lab, STATE_DIR, kubectl, text};
use serde_json::{Value, json};

/// How soon a change through the API must show in targets.
const WITHIN: Duration = Duration::from_secs(1);

#[test]
fn kubectl_reads_the_lab_and_node_probes_enrolled_by_their_tokens() {
    let Some(lab) = Lab::up() else { return };
    let status = lab.status();
    assert_eq!(
        status["kubeconfig"],
        format!("{STATE_DIR}/kube/admin.kubeconfig"),
        "{status:#}"
    );
    let out = kubectl(&["get", "nodes", "-o", "json"], None);
    assert!(out.status.success(), "kubectl get nodes:\n{}", text(&out));
    let nodes: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let names: Vec<&str> = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["node-1", "node-2", "node-3"]);

    let log = std::fs::read_to_string(Path::new(STATE_DIR).join("logs/coordinator.log"))
        .expect("coordinator log");
    for node in names {
        assert!(
            log.lines().any(
                |l| l.contains("node probe enrolled by ServiceAccount token")
                    && l.contains(&format!("node={node}"))
            ),
            "{node} did not enroll by token:\n{log}"
        );
    }

    // kubectl's habit: a pod named without a namespace is in the current
    // context's namespace (the lab's context names none: `default`), or -n's.
    let out = lab
        .command(&["ping", "--from", "node-3", "pod:web-0", "-c", "1"])
        .env(
            "KUBECONFIG",
            Path::new(STATE_DIR).join("kube/admin.kubeconfig"),
        )
        .output()
        .expect("run meshctl");
    assert!(out.status.success(), "{}", text(&out));
    let out = lab.meshctl(&[
        "-n",
        "kube-system",
        "ping",
        "--from",
        "node-3",
        "pod:dns-0",
        "-c",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // node-1's token asking for node-2's name is refused, and says why.
    let tls = tempfile::tempdir().expect("tempdir");
    let out = Command::new("ip")
        .args(["netns", "exec", "mesh-node-2"])
        .arg(bin("mesh-probe"))
        .args([
            "--name",
            "node-2",
            "--coordinator",
            "https://198.18.255.1:7443",
        ])
        .arg("--tls-dir")
        .arg(tls.path())
        .arg("--kube-token-file")
        .arg(Path::new(STATE_DIR).join("kube/tokens/node-1.token"))
        .arg("--ca-file")
        .arg(Path::new(STATE_DIR).join("tls/ca.pem"))
        .output()
        .expect("run mesh-probe");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("runs on node 'node-1', not 'node-2'"),
        "{}",
        text(&out)
    );
    assert!(
        !tls.path().join("node-2.pem").exists(),
        "a refused enrollment wrote a certificate"
    );
}

/// Runs `meshctl ping --from node-3 TARGET -c 1` until `accepted` says its
/// exit code is the one wanted; returns how long after `since` the first
/// such attempt started.
fn first_attempt(
    lab: &Lab,
    target: &str,
    since: Instant,
    accepted: impl Fn(i32) -> bool,
) -> Duration {
    let limit = Duration::from_secs(10);
    loop {
        let started = since.elapsed();
        let out = lab.meshctl(&["ping", "--from", "node-3", target, "-c", "1", "-i", "200ms"]);
        let code = out.status.code().unwrap_or(-1);
        if accepted(code) {
            return started;
        }
        assert!(
            since.elapsed() < limit,
            "{target}: still exit {code} after {limit:?}:\n{}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_pod_created_or_deleted_through_the_api_is_a_target_or_not_within_a_second() {
    let Some(lab) = Lab::up() else { return };
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "extra-0", "namespace": "default"},
        "spec": {"nodeName": "node-3", "containers": [{"name": "app", "image": "lab/app"}]},
        "status": {"phase": "Running", "podIP": "198.19.3.99"},
    })
    .to_string();
    let unknown = lab.meshctl(&["ping", "--from", "node-3", "pod:default/extra-0", "-c", "1"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));

    let out = kubectl(&["create", "--validate=false", "-f", "-"], Some(&pod));
    let created = Instant::now();
    assert!(out.status.success(), "kubectl create:\n{}", text(&out));
    let took = first_attempt(&lab, "pod:default/extra-0", created, |code| code != 2);
    eprintln!("a created pod was a target {took:?} after kubectl create");
    assert!(
        took < WITHIN,
        "a created pod took {took:?} to become a target"
    );

    let out = kubectl(&["delete", "pod", "-n", "default", "extra-0"], None);
    let deleted = Instant::now();
    assert!(out.status.success(), "kubectl delete:\n{}", text(&out));
    let took = first_attempt(&lab, "pod:default/extra-0", deleted, |code| code == 2);
    eprintln!("a deleted pod stopped being a target {took:?} after kubectl delete");
    assert!(
        took < WITHIN,
        "a deleted pod took {took:?} to stop being a target"
    );
}

/// `mesh-coordinator` with Kubernetes flags it cannot use exits 2 and says
/// what to do, before serving anything.
#[test]
fn the_coordinator_refuses_kubernetes_flags_it_cannot_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    let init = Command::new(bin("meshctl"))
        .args(["certs", "init", "--dir", d])
        .output()
        .expect("certs init");
    assert!(init.status.success(), "{}", text(&init));
    let coordinator = |extra: &[&str]| {
        Command::new(bin("mesh-coordinator"))
            .args(["--listen", "127.0.0.1:0", "--tls-dir", d])
            .args(extra)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .output()
            .expect("run mesh-coordinator")
    };
    let missing = dir.path().join("no.kubeconfig");
    let cases: [(Vec<&str>, &str); 4] = [
        (vec!["--in-cluster"], "--kubeconfig FILE"),
        (
            vec!["--kubeconfig", missing.to_str().expect("utf-8")],
            "no.kubeconfig",
        ),
        (
            vec!["--enroll-service-account", "probemesh/mesh-probe"],
            "needs the Kubernetes API",
        ),
        (
            vec!["--enroll-service-account", "mesh-probe", "--in-cluster"],
            "NAMESPACE/NAME",
        ),
    ];
    for (args, says) in cases {
        let out = coordinator(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains(says),
            "{args:?} should say {says:?}: {}",
            text(&out)
        );
    }
}
