//! The lab's long-lived processes: how each is started (program, namespace,
//! arguments), recorded in the state file, awaited until it listens, and
//! how `up` waits for the probes to register. Stopping is `system::stop`.

use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::{Lab, strings};
use crate::apiserver::PROBE_AUDIENCE;
use crate::apiserver::objects::{PROBE_SERVICE_ACCOUNT, PROBEMESH_NAMESPACE};
use crate::faults::{Daemon, Holder, STALLED_BACKLOG};
use crate::state::{LabState, StateDir};
use crate::system::{self, Spawn};
use crate::topology::{
    self, BrokenDns, CLOUDVM, CLOUDVM_NETNS, DNS_POD, FABRIC, LabNode, LabPod, NODES, WEB_POD,
    WEB_PORT,
};

/// How `up` waits for the probes to register.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a process gets to start listening.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// A long-lived process of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proc<'a> {
    UpstreamDns,
    ClusterDns,
    BrokenClusterDns(BrokenDns),
    Web { loopback: bool },
    StalledWeb,
    Holder(Holder),
    ApiServer,
    Pause(&'a LabPod),
    Coordinator,
    Probe(LabNode),
    CloudProbe { token: &'a str },
}

impl Proc<'_> {
    /// The key in `state.json` and the log's name.
    pub(super) fn key(self) -> String {
        match self {
            Proc::UpstreamDns => "upstream-dns".to_owned(),
            Proc::ClusterDns => "cluster-dns".to_owned(),
            Proc::BrokenClusterDns(answer) => {
                format!("cluster-dns-{}", answer.rcode().to_lowercase())
            }
            Proc::Web { .. } => "web".to_owned(),
            Proc::StalledWeb => "web-stalled".to_owned(),
            Proc::Holder(Holder::QueueFiller) => "queue-filler".to_owned(),
            Proc::Holder(Holder::PortHolder) => "port-holder".to_owned(),
            Proc::ApiServer => "apiserver".to_owned(),
            Proc::Pause(pod) => format!("pause-{}", pod.name),
            Proc::Coordinator => "coordinator".to_owned(),
            Proc::Probe(n) => format!("probe-{}", n.name()),
            Proc::CloudProbe { .. } => format!("probe-{CLOUDVM}"),
        }
    }
}

impl Lab {
    /// How to start lab process `p` (with `--otlp-endpoint` for the
    /// coordinator and probes when the lab has one).
    fn spawn_spec(&self, p: Proc<'_>, otlp: Option<&str>) -> Spawn {
        let url = topology::coordinator_url();
        let key = p.key();
        let pid_file = self.dir.pid_file(&key).display().to_string();
        let otlp_args: Vec<String> = otlp
            .map(|endpoint| strings(&["--otlp-endpoint", endpoint]))
            .unwrap_or_default();
        let mut spawn = Spawn {
            log: self.dir.log(&key),
            name: key,
            netns: None,
            program: self.bin_dir.join("mesh-probe"),
            args: Vec::new(),
            env: Vec::new(),
        };
        match p {
            Proc::UpstreamDns => {
                spawn.netns = Some(FABRIC.to_owned());
                spawn.program = "dnsmasq".into();
                spawn.args = topology::upstream_dns_args(&pid_file);
            }
            Proc::ClusterDns => {
                spawn.netns = Some(DNS_POD.netns.to_owned());
                spawn.program = "dnsmasq".into();
                spawn.args = topology::cluster_dns_args(&pid_file);
            }
            Proc::BrokenClusterDns(answer) => {
                spawn.netns = Some(DNS_POD.netns.to_owned());
                spawn.program = "dnsmasq".into();
                spawn.args = topology::broken_cluster_dns_args(&pid_file, answer);
            }
            Proc::Web { loopback } => {
                let host = if loopback { "127.0.0.1" } else { "0.0.0.0" };
                spawn.netns = Some(WEB_POD.netns.to_owned());
                spawn.program = self.meshctl.clone();
                spawn.args = strings(&[
                    "lab",
                    "serve-web",
                    "--listen",
                    &format!("{host}:{WEB_PORT}"),
                ]);
            }
            Proc::StalledWeb => {
                spawn.netns = Some(WEB_POD.netns.to_owned());
                spawn.program = self.meshctl.clone();
                spawn.args = strings(&[
                    "lab",
                    "serve-web",
                    "--listen",
                    &format!("0.0.0.0:{WEB_PORT}"),
                    "--stalled-backlog",
                    &STALLED_BACKLOG.to_string(),
                ]);
            }
            Proc::Holder(h) => {
                spawn.netns = Some(h.netns().to_owned());
                spawn.program = self.meshctl.clone();
                spawn.args = strings(&[
                    "lab",
                    "hold",
                    "--to",
                    &format!("{}:{WEB_PORT}", WEB_POD.ip),
                    "--count",
                    &h.count().to_string(),
                ]);
            }
            Proc::ApiServer => {
                spawn.program = self.meshctl.clone();
                spawn.args = strings(&[
                    "lab",
                    "serve-api",
                    "--listen",
                    &topology::kube_api_addr().to_string(),
                    "--pki",
                    &self.dir.kube().display().to_string(),
                    "--cluster",
                    &self.dir.inventory().display().to_string(),
                    "--tokens",
                    &self.dir.kube_tokens().display().to_string(),
                ]);
            }
            Proc::Pause(pod) => {
                // The pod's pause container: it holds the pod's network
                // namespace, where the probe finds it by the pod's address.
                spawn.netns = Some(pod.netns.to_owned());
                spawn.program = "sleep".into();
                spawn.args = strings(&["infinity"]);
            }
            Proc::Coordinator => {
                spawn.program = self.bin_dir.join("mesh-coordinator");
                spawn.args = strings(&[
                    "--listen",
                    &topology::coordinator_addr().to_string(),
                    "--tls-dir",
                    &self.dir.tls().display().to_string(),
                    "--kubeconfig",
                    &self.dir.coordinator_kubeconfig().display().to_string(),
                    "--enroll-service-account",
                    &format!("{PROBEMESH_NAMESPACE}/{PROBE_SERVICE_ACCOUNT}"),
                    "--enroll-audience",
                    PROBE_AUDIENCE,
                    "--policy",
                    &self.dir.policy().display().to_string(),
                    "--web",
                    &topology::web_view_addr().to_string(),
                ]);
                spawn.args.extend(otlp_args);
            }
            Proc::Probe(n) => {
                spawn.netns = Some(n.netns().to_owned());
                spawn.args = strings(&[
                    "--name",
                    &n.name(),
                    "--coordinator",
                    &url,
                    "--tls-dir",
                    &self.dir.probe_tls(&n.name()).display().to_string(),
                    "--role",
                    "node",
                    "--labels",
                    &format!("cluster=lab,node={}", n.name()),
                    "--kube-token-file",
                    &self
                        .dir
                        .kube_tokens()
                        .join(format!("{}.token", n.name()))
                        .display()
                        .to_string(),
                    "--ca-file",
                    &self.dir.tls().join("ca.pem").display().to_string(),
                ]);
                spawn.args.extend(otlp_args);
            }
            Proc::CloudProbe { token } => {
                spawn.netns = Some(CLOUDVM_NETNS.to_owned());
                spawn.args = strings(&[
                    "join",
                    "--coordinator",
                    &url,
                    "--tls-dir",
                    &self.dir.probe_tls(CLOUDVM).display().to_string(),
                    "--labels",
                    "cluster=lab,site=cloud",
                ]);
                spawn.args.extend(otlp_args);
                spawn.env = vec![("MESH_JOIN_TOKEN".to_owned(), token.to_owned())];
            }
        }
        spawn
    }

    /// Waits until the API server has written every node probe's projected
    /// token (it plays the kubelet's part).
    pub(super) async fn wait_tokens(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let paths: Vec<_> = NODES
            .iter()
            .map(|n| self.dir.kube_tokens().join(format!("{}.token", n.name())))
            .collect();
        while !paths.iter().all(|p| p.exists()) {
            if started.elapsed() > LISTEN_TIMEOUT {
                bail!(
                    "the lab API server wrote no probe tokens to {} within {:?} (see {})",
                    self.dir.kube_tokens().display(),
                    LISTEN_TIMEOUT,
                    self.dir.log("apiserver").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Starts a process and records it in the state file at once.
    pub(super) fn start(&self, state: &mut LabState, p: Proc<'_>) -> anyhow::Result<Child> {
        let spec = self.spawn_spec(p, state.otlp_endpoint.as_deref());
        let (child, record) = spec.start()?;
        state.processes.insert(p.key(), record);
        self.dir.save(state)?;
        Ok(child)
    }

    /// Waits until the recorded process `key` listens on `what` (read from
    /// /proc/PID/net, i.e. inside its own namespace).
    pub(super) async fn wait_listening(
        &self,
        state: &LabState,
        children: &mut [(String, Child)],
        key: &str,
        what: Listen,
    ) -> anyhow::Result<()> {
        let rec = state.processes.get(key).context("process not recorded")?;
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            if listening(rec.pid, what) {
                return Ok(());
            }
            check_children(children, &self.dir)?;
            if Instant::now() > deadline {
                bail!(
                    "{key} (pid {}) is not listening on {what:?} after {LISTEN_TIMEOUT:?}; its log:\n{}",
                    rec.pid,
                    system::log_tail(&self.dir.log(key), 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `meshctl join-token create --name cloudvm-1`.
    pub(super) async fn join_token(&self) -> anyhow::Result<String> {
        let (code, out, err) = self
            .meshctl_output(&["join-token", "create", "--name", CLOUDVM, "--ttl", "1h"])
            .await?;
        let token = out
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or_default();
        if code != 0 || token.is_empty() {
            bail!(
                "`meshctl join-token create --name {CLOUDVM}` failed (exit {code}): {}",
                err.trim()
            );
        }
        Ok(token.to_owned())
    }

    /// Polls `meshctl probes -o json` until the four lab probes are connected.
    pub(super) async fn wait_registered(
        &self,
        children: &mut [(String, Child)],
    ) -> anyhow::Result<Vec<String>> {
        let mut expected: Vec<String> = NODES.iter().map(|n| n.name()).collect();
        expected.push(CLOUDVM.to_owned());
        let deadline = Instant::now() + REGISTRATION_TIMEOUT;
        loop {
            check_children(children, &self.dir)?;
            let (code, out, err) = self.meshctl_output(&["probes", "-o", "json"]).await?;
            let connected = if code == 0 {
                connected_probes(&out)
            } else {
                Vec::new()
            };
            if expected.iter().all(|e| connected.contains(e)) {
                return Ok(connected);
            }
            let last = if code == 0 {
                format!("connected: {connected:?}")
            } else {
                err.trim().to_owned()
            };
            if Instant::now() > deadline {
                bail!(
                    "not every probe registered within {REGISTRATION_TIMEOUT:?} ({last}); see {}",
                    self.dir.logs().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The process behind a fault's daemon.
pub(super) fn daemon_proc(d: Daemon) -> Proc<'static> {
    match d {
        Daemon::Web { loopback } => Proc::Web { loopback },
        Daemon::ClusterDns => Proc::ClusterDns,
        Daemon::BrokenClusterDns(answer) => Proc::BrokenClusterDns(answer),
        Daemon::StalledWeb => Proc::StalledWeb,
        Daemon::Holder(h) => Proc::Holder(h),
    }
}

/// A socket state to wait for: listening, bound, or connected.
#[derive(Debug, Clone, Copy)]
pub(super) enum Listen {
    /// A TCP socket in LISTEN state on this port.
    Tcp(u16),
    /// A bound UDP socket on this port.
    Udp(u16),
    /// This many established TCP connections to this remote port.
    Connected(u16, usize),
}

/// Whether process `pid` has a socket bound to `what` in its namespace.
fn listening(pid: i32, what: Listen) -> bool {
    let (file, port) = match what {
        Listen::Tcp(p) | Listen::Connected(p, _) => ("tcp", p),
        Listen::Udp(p) => ("udp", p),
    };
    let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
        return false;
    };
    let wanted = format!(":{port:04X}");
    // Local address is column 1, remote column 2, state column 3.
    let matching = |column: usize, state: &str| {
        table
            .lines()
            .skip(1)
            .filter(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                cols.get(column).is_some_and(|a| a.ends_with(&wanted))
                    && cols.get(3) == Some(&state)
            })
            .count()
    };
    // TCP: 0A is LISTEN, 01 ESTABLISHED; UDP: 07 is an unconnected (bound) socket.
    match what {
        Listen::Tcp(_) => matching(1, "0A") > 0,
        Listen::Udp(_) => matching(1, "07") > 0,
        Listen::Connected(_, count) => matching(2, "01") >= count,
    }
}

/// Fails if a process started by this run has exited, quoting its log.
pub(super) fn check_children(
    children: &mut [(String, Child)],
    dir: &StateDir,
) -> anyhow::Result<()> {
    for (name, child) in children.iter_mut() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{name} exited ({status}) right after starting; its log ({}):\n{}",
                dir.log(name).display(),
                system::log_tail(&dir.log(name), 20)
            );
        }
    }
    Ok(())
}

/// Names of the probes listed as connected in `meshctl probes -o json`.
fn connected_probes(json: &str) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let list = value
        .as_array()
        .or_else(|| value.get("probes").and_then(|p| p.as_array()))
        .cloned()
        .unwrap_or_default();
    list.iter()
        .filter(|p| p.get("connected").and_then(serde_json::Value::as_bool) == Some(true))
        .filter_map(|p| p.get("name").and_then(|n| n.as_str()).map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_probes_reads_a_list_or_an_object() {
        let list = r#"[{"name":"node-1","connected":true},{"name":"node-2","connected":false},{"name":"cloudvm-1","connected":true}]"#;
        assert_eq!(connected_probes(list), ["node-1", "cloudvm-1"]);
        let obj = r#"{"probes":[{"name":"node-3","connected":true}]}"#;
        assert_eq!(connected_probes(obj), ["node-3"]);
        assert!(connected_probes("not json").is_empty());
    }

    #[test]
    fn listening_reads_proc_net() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let pid = i32::try_from(std::process::id()).expect("pid");
        assert!(listening(pid, Listen::Tcp(port)));
        drop(listener);
        assert!(!listening(pid, Listen::Tcp(port)));
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        assert!(listening(
            pid,
            Listen::Udp(udp.local_addr().expect("addr").port())
        ));
    }

    #[test]
    fn process_keys_are_stable() {
        assert_eq!(Proc::Web { loopback: true }.key(), "web");
        assert_eq!(Proc::Probe(topology::NODE_2).key(), "probe-node-2");
        assert_eq!(Proc::CloudProbe { token: "t" }.key(), "probe-cloudvm-1");
    }
}
