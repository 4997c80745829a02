//! The lab's lifecycle: `up` (network, certificates, processes, client
//! configuration; rolled back on failure), `down` (from any half-state),
//! `status`, and executing fault actions.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::future::{BoxFuture, FutureExt as _, try_join_all};
use probemesh_proto::identity::Role;
use probemesh_proto::pki::{self, TlsDir};
use serde::Serialize;

use super::faults::{Action, Daemon, Fault};
use super::rules::{FabricRules, NodeRules, fabric_ruleset, node_ruleset};
use super::state::{LabState, ProcessRecord, StateDir};
use super::system::{self, Spawn};
use super::topology::{
    self, CLOUDVM, CLOUDVM_NETNS, DNS_POD, FABRIC, HOST_VETH, LabNode, NODES, PODS, WEB_POD,
    WEB_PORT,
};
use crate::config::ClientConfigFile;

/// `written_by` of the client configuration the lab writes.
const WRITTEN_BY: &str = "lab";
/// How long `up` waits for the probes to register.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a process gets to start listening.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// SIGTERM → SIGKILL grace.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The lab on this machine: its state directory and the binaries it runs.
#[derive(Debug, Clone)]
pub struct Lab {
    dir: StateDir,
    meshctl: PathBuf,
    bin_dir: PathBuf,
}

/// A long-lived process of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proc<'a> {
    UpstreamDns,
    ClusterDns,
    Web { loopback: bool },
    Coordinator,
    Probe(LabNode),
    CloudProbe { token: &'a str },
}

impl Proc<'_> {
    /// The key in `state.json` and the log's name.
    fn key(self) -> String {
        match self {
            Proc::UpstreamDns => "upstream-dns".to_owned(),
            Proc::ClusterDns => "cluster-dns".to_owned(),
            Proc::Web { .. } => "web".to_owned(),
            Proc::Coordinator => "coordinator".to_owned(),
            Proc::Probe(n) => format!("probe-{}", n.name()),
            Proc::CloudProbe { .. } => format!("probe-{CLOUDVM}"),
        }
    }
}

/// What `up` did.
#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    /// The lab was already up and healthy; nothing was changed.
    pub already_up: bool,
    /// Wall time of the bring-up, milliseconds.
    pub bring_up_ms: u64,
    /// When each phase ended, milliseconds since the start.
    pub phases_ms: Vec<(String, u64)>,
    /// Probes the coordinator listed as connected at the end.
    pub probes_connected: Vec<String>,
    /// Things that did not stop the bring-up but deserve a look.
    pub warnings: Vec<String>,
    /// The coordinator URL.
    pub coordinator: String,
    /// The client configuration written, if any.
    pub client_config: Option<PathBuf>,
    /// The active fault (when already up).
    pub fault: Option<String>,
}

/// What `down` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownReport {
    /// Processes that were running and were stopped.
    pub processes_stopped: usize,
    /// Namespaces deleted.
    pub namespaces_removed: Vec<String>,
    /// The host veth was deleted.
    pub host_link_removed: bool,
    /// The state directory was removed.
    pub state_removed: bool,
    /// The client configuration written by `up` was removed.
    pub client_config_removed: bool,
}

impl DownReport {
    /// Whether anything was there to remove.
    pub fn removed_anything(&self) -> bool {
        self.processes_stopped > 0
            || !self.namespaces_removed.is_empty()
            || self.host_link_removed
            || self.state_removed
            || self.client_config_removed
    }
}

/// `lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// `up`, `down` or `partial`.
    pub state: &'static str,
    /// The active fault.
    pub fault: Option<String>,
    /// The coordinator URL.
    pub coordinator: String,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Duration of the last bring-up, milliseconds.
    pub bring_up_ms: Option<u64>,
    /// Every lab namespace and whether it exists.
    pub namespaces: Vec<NamespaceStatus>,
    /// Every recorded process.
    pub processes: Vec<ProcessStatus>,
    /// Interfaces with their MTU and addresses, read from the namespaces.
    pub interfaces: Vec<InterfaceStatus>,
}

/// A namespace in `lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct NamespaceStatus {
    /// Name.
    pub name: &'static str,
    /// Exists.
    pub present: bool,
}

/// A process in `lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStatus {
    /// Role.
    pub name: String,
    /// Namespace (`None`: host).
    pub netns: Option<String>,
    /// PID.
    pub pid: i32,
    /// Still running.
    pub alive: bool,
}

/// An interface in `lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct InterfaceStatus {
    /// Namespace (`host` for the host's lab link).
    pub netns: String,
    /// Interface name.
    pub interface: String,
    /// MTU.
    pub mtu: u32,
    /// IPv4 addresses with prefix.
    pub addresses: Vec<String>,
}

impl Lab {
    /// The lab of this machine, run with the binaries next to this meshctl.
    pub fn new() -> anyhow::Result<Self> {
        let meshctl = std::env::current_exe().context("locating the meshctl binary")?;
        let bin_dir = meshctl
            .parent()
            .context("the meshctl binary has no parent directory")?
            .to_owned();
        Ok(Self {
            dir: StateDir::default(),
            meshctl,
            bin_dir,
        })
    }

    /// The global flags that point a meshctl at the lab coordinator as admin.
    pub fn client_flags(&self) -> Vec<String> {
        vec![
            "--coordinator".to_owned(),
            topology::coordinator_url(),
            "--tls-dir".to_owned(),
            self.dir.tls().display().to_string(),
            "--identity".to_owned(),
            pki::ADMIN_NAME.to_owned(),
        ]
    }

    /// Refuses to run without root, the system tools or the probemesh binaries.
    fn preflight(&self) -> anyhow::Result<()> {
        let missing: Vec<String> = system::REQUIRED_TOOLS
            .iter()
            .filter(|(tool, _)| system::which(tool).is_none())
            .map(|(tool, package)| format!("{tool} (package {package})"))
            .collect();
        if !missing.is_empty() {
            bail!(
                "the lab needs {}; install them (e.g. `apt-get install iproute2 iptables procps dnsmasq-base`)",
                missing.join(", ")
            );
        }
        for bin in ["mesh-coordinator", "mesh-probe"] {
            let path = self.bin_dir.join(bin);
            if !path.is_file() {
                bail!(
                    "{} is missing: build every binary (`cargo build --workspace --bins`) so that it sits next to meshctl",
                    path.display()
                );
            }
        }
        Ok(())
    }

    /// Whether the recorded lab is complete and every part of it is present.
    fn healthy(&self, state: &LabState) -> bool {
        state.complete
            && topology::namespaces()
                .iter()
                .all(|ns| system::netns_exists(ns))
            && system::host_link_exists(HOST_VETH)
            && state.processes.values().all(system::alive)
    }

    /// Whether any trace of a lab exists.
    fn anything_present(&self) -> bool {
        self.dir.root().exists()
            || system::host_link_exists(HOST_VETH)
            || topology::namespaces()
                .iter()
                .any(|ns| system::netns_exists(ns))
    }

    /// `lab up`: builds the lab unless it is already up; a failure rolls back.
    pub async fn up(&self, otlp_endpoint: Option<String>) -> anyhow::Result<UpReport> {
        self.preflight()?;
        if let Ok(Some(state)) = self.dir.load()
            && self.healthy(&state)
        {
            let mut warnings = Vec::new();
            if otlp_endpoint.is_some() && otlp_endpoint != state.otlp_endpoint {
                warnings.push(format!(
                    "the running lab exports traces to {}; `meshctl lab down` first to change it",
                    state.otlp_endpoint.as_deref().unwrap_or("nowhere")
                ));
            }
            return Ok(UpReport {
                already_up: true,
                bring_up_ms: state.bring_up_ms.unwrap_or_default(),
                phases_ms: Vec::new(),
                probes_connected: Vec::new(),
                warnings,
                coordinator: topology::coordinator_url(),
                client_config: ClientConfigFile::default_path(),
                fault: state.fault,
            });
        }
        if self.anything_present() {
            eprintln!("lab: found parts of an earlier lab; removing them first");
            self.down().await?;
        }
        match self.build(otlp_endpoint).await {
            Ok(report) => Ok(report),
            Err(e) => {
                eprintln!("lab: bring-up failed, rolling back: {e:#}");
                if let Err(rollback) = self.down().await {
                    eprintln!("lab: rollback incomplete: {rollback:#}");
                }
                Err(e)
            }
        }
    }

    async fn build(&self, otlp_endpoint: Option<String>) -> anyhow::Result<UpReport> {
        let started = Instant::now();
        let mut phases = Vec::new();
        let mut mark = |name: &str| phases.push((name.to_owned(), ms(started.elapsed())));
        for d in [
            self.dir.root().to_owned(),
            self.dir.logs(),
            self.dir.run_dir(),
        ] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mut state = LabState {
            otlp_endpoint,
            ..LabState::default()
        };
        self.dir.save(&state)?;

        let certs = tokio::task::spawn_blocking({
            let dir = self.dir.clone();
            move || make_certs(&dir)
        });
        self.network().await?;
        mark("network");
        self.write_files()?;
        certs.await.context("certificate task")??;
        mark("certificates");

        let mut children: Vec<(String, Child)> = Vec::new();
        for p in [
            Proc::UpstreamDns,
            Proc::ClusterDns,
            Proc::Web { loopback: false },
            Proc::Coordinator,
        ] {
            children.push((p.key(), self.start(&mut state, p)?));
        }
        self.wait_listening(
            &state,
            &mut children,
            "coordinator",
            Listen::Tcp(topology::COORDINATOR_PORT),
        )
        .await?;
        for n in NODES {
            children.push((
                Proc::Probe(n).key(),
                self.start(&mut state, Proc::Probe(n))?,
            ));
        }
        let token = self.join_token().await?;
        let cloud = Proc::CloudProbe { token: &token };
        children.push((cloud.key(), self.start(&mut state, cloud)?));
        self.wait_listening(&state, &mut children, "web", Listen::Tcp(WEB_PORT))
            .await?;
        self.wait_listening(&state, &mut children, "cluster-dns", Listen::Udp(53))
            .await?;
        self.wait_listening(&state, &mut children, "upstream-dns", Listen::Udp(53))
            .await?;
        mark("processes");

        let client_config = write_client_config(&self.dir)?;
        let mut warnings = Vec::new();
        let probes_connected = match self.wait_registered(&mut children).await {
            Ok(connected) => connected,
            Err(e) => {
                warnings.push(format!("{e:#}"));
                Vec::new()
            }
        };
        check_children(&mut children, &self.dir)?;
        mark("probes registered");

        let bring_up_ms = ms(started.elapsed());
        state.complete = true;
        state.bring_up_ms = Some(bring_up_ms);
        self.dir.save(&state)?;
        Ok(UpReport {
            already_up: false,
            bring_up_ms,
            phases_ms: phases,
            probes_connected,
            warnings,
            coordinator: topology::coordinator_url(),
            client_config,
            fault: None,
        })
    }

    /// Creates namespaces, links, addresses, routes, VXLAN, sysctls and
    /// iptables rules: one `ip -batch` on the host, then every namespace in
    /// parallel.
    async fn network(&self) -> anyhow::Result<()> {
        let inventory = topology::inventory(false)?;
        let node_rules: Vec<String> = NODES
            .iter()
            .map(|n| node_ruleset(*n, &inventory, NodeRules::BASELINE))
            .collect();
        system::ip_batch(None, &topology::host_batch()).await?;
        let mut jobs: Vec<BoxFuture<'_, anyhow::Result<()>>> = Vec::new();
        jobs.push(
            async {
                system::sysctl(FABRIC, &topology::sysctls(FABRIC)).await?;
                system::ip_batch(Some(FABRIC), &topology::fabric_batch()).await?;
                system::iptables_restore(FABRIC, &fabric_ruleset(FabricRules::BASELINE)).await
            }
            .boxed(),
        );
        for (node, rules) in NODES.into_iter().zip(node_rules) {
            jobs.push(
                async move {
                    let ns = node.netns();
                    system::sysctl(ns, &topology::sysctls(ns)).await?;
                    system::ip_batch(Some(ns), &topology::node_batch(node)).await?;
                    system::bridge_batch(ns, &topology::node_fdb_batch(node)).await?;
                    system::iptables_restore(ns, &rules).await
                }
                .boxed(),
            );
        }
        for pod in PODS {
            jobs.push(
                async move {
                    system::sysctl(pod.netns, &topology::sysctls(pod.netns)).await?;
                    system::ip_batch(Some(pod.netns), &topology::pod_batch(&pod)).await
                }
                .boxed(),
            );
        }
        jobs.push(
            async {
                system::sysctl(CLOUDVM_NETNS, &topology::sysctls(CLOUDVM_NETNS)).await?;
                system::ip_batch(Some(CLOUDVM_NETNS), &topology::cloudvm_batch()).await
            }
            .boxed(),
        );
        try_join_all(jobs).await?;
        system::ip_batch(None, &[topology::host_route()]).await
    }

    /// The per-namespace `resolv.conf` files and the inventory.
    fn write_files(&self) -> anyhow::Result<()> {
        for ns in topology::resolv_conf_namespaces() {
            write_resolv_conf(ns, &topology::resolv_conf(ns))?;
        }
        self.write_inventory(false)
    }

    /// Writes the inventory atomically (the coordinator may be reading it).
    fn write_inventory(&self, kube_proxy_pending: bool) -> anyhow::Result<()> {
        let path = self.dir.inventory();
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(&topology::inventory(kube_proxy_pending)?)?;
        std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

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
            Proc::Coordinator => {
                spawn.program = self.bin_dir.join("mesh-coordinator");
                spawn.args = strings(&[
                    "--listen",
                    &topology::coordinator_addr().to_string(),
                    "--tls-dir",
                    &self.dir.tls().display().to_string(),
                    "--inventory",
                    &self.dir.inventory().display().to_string(),
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

    /// Starts a process and records it in the state file at once.
    fn start(&self, state: &mut LabState, p: Proc<'_>) -> anyhow::Result<Child> {
        let spec = self.spawn_spec(p, state.otlp_endpoint.as_deref());
        let (child, record) = spec.start()?;
        state.processes.insert(p.key(), record);
        self.dir.save(state)?;
        Ok(child)
    }

    /// Waits until the recorded process `key` listens on `what` (read from
    /// /proc/PID/net, i.e. inside its own namespace).
    async fn wait_listening(
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

    /// Runs a meshctl subcommand against the lab coordinator; returns
    /// (exit code, stdout, stderr).
    pub async fn meshctl_output(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let out = tokio::process::Command::new(&self.meshctl)
            .args(self.client_flags())
            .args(args)
            .env_remove("MESH_OUTPUT")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("running meshctl {}", args.join(" ")))?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// `meshctl join-token create --name cloudvm-1`.
    async fn join_token(&self) -> anyhow::Result<String> {
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
    async fn wait_registered(
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

    /// `lab down`: stops every lab process and removes everything the lab
    /// made, whatever state it is in. Harmless when nothing is there.
    pub async fn down(&self) -> anyhow::Result<DownReport> {
        let mut report = DownReport::default();
        let state = match self.dir.load() {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                eprintln!("lab: {e:#}; cleaning up without it");
                LabState::default()
            }
        };
        let recorded: Vec<ProcessRecord> = state.processes.values().cloned().collect();
        report.processes_stopped += system::stop(&recorded, STOP_GRACE).await;
        let mut leftovers = Vec::new();
        for ns in topology::namespaces() {
            if system::netns_exists(ns) {
                leftovers.extend(system::leftover_processes(ns).await);
            }
        }
        report.processes_stopped += system::stop(&leftovers, STOP_GRACE).await;

        if system::host_link_exists(HOST_VETH) {
            if let Err(e) = system::run("ip", &["link", "del", HOST_VETH], None).await
                && system::host_link_exists(HOST_VETH)
            {
                return Err(e);
            }
            report.host_link_removed = true;
        }
        let present: Vec<&str> = topology::namespaces()
            .into_iter()
            .filter(|ns| system::netns_exists(ns))
            .collect();
        if !present.is_empty() {
            let script: Vec<String> = present.iter().map(|ns| format!("netns del {ns}")).collect();
            let result = system::run(
                "ip",
                &["-force", "-batch", "-"],
                Some(&(script.join("\n") + "\n")),
            )
            .await;
            let still: Vec<&str> = present
                .iter()
                .copied()
                .filter(|ns| system::netns_exists(ns))
                .collect();
            if !still.is_empty() {
                return Err(result
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("namespaces remain")))
                .with_context(|| format!("deleting namespaces {}", still.join(", ")));
            }
            report.namespaces_removed = present.iter().map(|s| (*s).to_owned()).collect();
        }
        for ns in topology::resolv_conf_namespaces() {
            let d = netns_etc(ns);
            if d.exists() {
                std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
            }
        }
        let _ = std::fs::remove_dir(NETNS_ETC);
        report.client_config_removed = remove_client_config()?;
        if self.dir.root().exists() {
            std::fs::remove_dir_all(self.dir.root())
                .with_context(|| format!("removing {}", self.dir.root().display()))?;
            report.state_removed = true;
        }
        Ok(report)
    }

    /// `lab status`.
    pub async fn status(&self) -> anyhow::Result<StatusReport> {
        let state = self.dir.load()?;
        let namespaces: Vec<NamespaceStatus> = topology::namespaces()
            .into_iter()
            .map(|name| NamespaceStatus {
                name,
                present: system::netns_exists(name),
            })
            .collect();
        let processes: Vec<ProcessStatus> = state
            .iter()
            .flat_map(|s| s.processes.iter())
            .map(|(name, rec)| ProcessStatus {
                name: name.clone(),
                netns: rec.netns.clone(),
                pid: rec.pid,
                alive: system::alive(rec),
            })
            .collect();
        let mut interfaces = Vec::new();
        if system::host_link_exists(HOST_VETH) {
            interfaces.extend(read_interfaces(None).await);
        }
        for ns in namespaces.iter().filter(|n| n.present) {
            interfaces.extend(read_interfaces(Some(ns.name)).await);
        }
        let any = namespaces.iter().any(|n| n.present) || state.is_some();
        let healthy = state.as_ref().is_some_and(|s| self.healthy(s));
        Ok(StatusReport {
            state: if healthy {
                "up"
            } else if any {
                "partial"
            } else {
                "down"
            },
            fault: state.as_ref().and_then(|s| s.fault.clone()),
            coordinator: topology::coordinator_url(),
            state_dir: self.dir.root().to_owned(),
            bring_up_ms: state.as_ref().and_then(|s| s.bring_up_ms),
            namespaces,
            processes,
            interfaces,
        })
    }

    /// Loads the state of a complete lab, or explains how to get one.
    pub fn require_up(&self) -> anyhow::Result<LabState> {
        match self.dir.load()? {
            Some(state) if state.complete => Ok(state),
            _ => bail!("the lab is not up: run `meshctl lab up` first"),
        }
    }

    /// Injects `fault` into a lab that has none active, and records it. If
    /// an action fails, the fault's undo runs before the error is returned.
    pub async fn inject(&self, state: &mut LabState, fault: Fault) -> anyhow::Result<()> {
        let applied = async {
            for action in fault.apply()? {
                self.execute(state, &action).await?;
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = applied {
            for action in fault.clear().unwrap_or_default() {
                let _ = self.execute(state, &action).await;
            }
            return Err(e.context(format!("injecting {fault}")));
        }
        state.fault = Some(fault.name().to_owned());
        self.dir.save(state)
    }

    /// Undoes the active fault, if any; returns its name.
    pub async fn clear(&self, state: &mut LabState) -> anyhow::Result<Option<String>> {
        let Some(name) = state.fault.clone() else {
            return Ok(None);
        };
        let fault: Fault = name.parse()?;
        for action in fault.clear()? {
            self.execute(state, &action)
                .await
                .with_context(|| format!("clearing {fault}"))?;
        }
        state.fault = None;
        self.dir.save(state)?;
        Ok(Some(name))
    }

    async fn execute(&self, state: &mut LabState, action: &Action) -> anyhow::Result<()> {
        match action {
            Action::Ip { netns, commands } => system::ip_batch(Some(netns), commands).await,
            Action::Iptables { netns, ruleset } => system::iptables_restore(netns, ruleset).await,
            Action::Sysctl { netns, key, value } => system::sysctl(netns, &[(key, value)]).await,
            Action::Stop(daemon) => {
                let key = daemon_proc(*daemon).key();
                if let Some(rec) = state.processes.remove(&key) {
                    system::stop(&[rec], STOP_GRACE).await;
                }
                self.dir.save(state)
            }
            Action::Start(daemon) => {
                let p = daemon_proc(*daemon);
                if state.processes.get(&p.key()).is_some_and(system::alive) {
                    return Ok(());
                }
                let child = self.start(state, p)?;
                let listen = match daemon {
                    Daemon::Web { .. } => Listen::Tcp(WEB_PORT),
                    Daemon::ClusterDns => Listen::Udp(53),
                };
                self.wait_listening(state, &mut [(p.key(), child)], &p.key(), listen)
                    .await
            }
            Action::ResolvConf { netns, contents } => write_resolv_conf(netns, contents),
            Action::Inventory { kube_proxy_pending } => self.write_inventory(*kube_proxy_pending),
            Action::ConntrackFill { netns } => {
                let out = self.in_netns(netns, "conntrack-fill").await?;
                eprint!("{out}");
                Ok(())
            }
            Action::ConntrackFlush { netns } => {
                self.in_netns(netns, "conntrack-flush").await.map(drop)
            }
        }
    }

    /// Runs a hidden `meshctl lab` helper inside a namespace.
    async fn in_netns(&self, netns: &str, helper: &str) -> anyhow::Result<String> {
        let meshctl = self.meshctl.display().to_string();
        system::run(
            "ip",
            &["netns", "exec", netns, &meshctl, "lab", helper],
            None,
        )
        .await
    }
}

fn daemon_proc(d: Daemon) -> Proc<'static> {
    match d {
        Daemon::Web { loopback } => Proc::Web { loopback },
        Daemon::ClusterDns => Proc::ClusterDns,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A listening socket to wait for.
#[derive(Debug, Clone, Copy)]
enum Listen {
    Tcp(u16),
    Udp(u16),
}

/// Whether process `pid` has a socket bound to `what` in its namespace.
fn listening(pid: i32, what: Listen) -> bool {
    let (file, port) = match what {
        Listen::Tcp(p) => ("tcp", p),
        Listen::Udp(p) => ("udp", p),
    };
    let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
        return false;
    };
    let wanted = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let bound = cols.get(1).is_some_and(|local| local.ends_with(&wanted));
        // TCP: state 0A is LISTEN; UDP: 07 is an unconnected (bound) socket.
        let state_ok = match what {
            Listen::Tcp(_) => cols.get(3) == Some(&"0A"),
            Listen::Udp(_) => cols.get(3) == Some(&"07"),
        };
        bound && state_ok
    })
}

/// Fails if a process started by this run has exited, quoting its log.
fn check_children(children: &mut [(String, Child)], dir: &StateDir) -> anyhow::Result<()> {
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

/// The CA, coordinator and admin certificates, and each node probe's own
/// TLS directory (CA certificate, its certificate and key). cloudvm-1 gets
/// an empty directory: it enrolls with a join token.
fn make_certs(dir: &StateDir) -> anyhow::Result<()> {
    let tls = TlsDir::new(dir.tls());
    pki::init(&tls, &[topology::HOST_IP.to_string()]).context("creating the lab CA")?;
    let ca = pki::CertAuthority::load(&tls).context("loading the lab CA")?;
    for node in NODES {
        let name = node.name();
        let probe_dir = dir.probe_tls(&name);
        std::fs::create_dir_all(&probe_dir)
            .with_context(|| format!("creating {}", probe_dir.display()))?;
        let probe_tls = TlsDir::new(&probe_dir);
        ca.issue_to_dir(&probe_tls, &name, Role::Probe, false)
            .with_context(|| format!("issuing the certificate of {name}"))?;
        std::fs::copy(tls.ca_cert(), probe_tls.ca_cert()).context("copying ca.pem")?;
    }
    let cloud = dir.probe_tls(CLOUDVM);
    std::fs::create_dir_all(&cloud).with_context(|| format!("creating {}", cloud.display()))
}

const NETNS_ETC: &str = "/etc/netns";

fn netns_etc(netns: &str) -> PathBuf {
    PathBuf::from(NETNS_ETC).join(netns)
}

/// Writes `/etc/netns/NETNS/resolv.conf` in place (`ip netns exec`
/// bind-mounts it over /etc/resolv.conf).
fn write_resolv_conf(netns: &str, contents: &str) -> anyhow::Result<()> {
    let d = netns_etc(netns);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    let path = d.join("resolv.conf");
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
}

fn config_backup(path: &std::path::Path) -> PathBuf {
    path.with_extension("json.before-lab")
}

/// Points plain `meshctl` at the lab. A configuration the user wrote is kept
/// aside and put back by `lab down`.
fn write_client_config(dir: &StateDir) -> anyhow::Result<Option<PathBuf>> {
    let Some(path) = ClientConfigFile::default_path() else {
        return Ok(None);
    };
    if path.exists() {
        let ours = ClientConfigFile::load(&path)
            .map(|c| c.written_by.as_deref() == Some(WRITTEN_BY))
            .unwrap_or(false);
        if !ours {
            std::fs::rename(&path, config_backup(&path))
                .with_context(|| format!("keeping {} aside", path.display()))?;
        }
    }
    ClientConfigFile {
        coordinator: Some(topology::coordinator_url()),
        tls_dir: Some(dir.tls()),
        identity: Some(pki::ADMIN_NAME.to_owned()),
        written_by: Some(WRITTEN_BY.to_owned()),
    }
    .save(&path)?;
    Ok(Some(path))
}

/// Removes the client configuration if the lab wrote it, and restores the
/// one it kept aside. Returns whether the lab's file was removed.
fn remove_client_config() -> anyhow::Result<bool> {
    let Some(path) = ClientConfigFile::default_path() else {
        return Ok(false);
    };
    let ours = path.exists()
        && ClientConfigFile::load(&path).is_ok_and(|c| c.written_by.as_deref() == Some(WRITTEN_BY));
    if ours {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let backup = config_backup(&path);
    if backup.exists() && !path.exists() {
        std::fs::rename(&backup, &path).with_context(|| format!("restoring {}", path.display()))?;
    }
    Ok(ours)
}

/// The interfaces (but `lo`) of a namespace, or the host's lab link.
async fn read_interfaces(netns: Option<&str>) -> Vec<InterfaceStatus> {
    let out = match netns {
        Some(ns) => system::run("ip", &["-j", "-n", ns, "addr", "show"], None).await,
        None => system::run("ip", &["-j", "addr", "show", "dev", HOST_VETH], None).await,
    };
    let Ok(value) = out.map(|o| serde_json::from_str::<serde_json::Value>(&o).unwrap_or_default())
    else {
        return Vec::new();
    };
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l.get("ifname").and_then(|n| n.as_str()) != Some("lo"))
        .map(|l| InterfaceStatus {
            netns: netns.unwrap_or("host").to_owned(),
            interface: l
                .get("ifname")
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_owned(),
            mtu: l
                .get("mtu")
                .and_then(serde_json::Value::as_u64)
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or_default(),
            addresses: l
                .get("addr_info")
                .and_then(|a| a.as_array())
                .into_iter()
                .flatten()
                .filter(|a| a.get("family").and_then(|f| f.as_str()) == Some("inet"))
                .filter_map(|a| {
                    Some(format!(
                        "{}/{}",
                        a.get("local")?.as_str()?,
                        a.get("prefixlen")?.as_u64()?
                    ))
                })
                .collect(),
        })
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
