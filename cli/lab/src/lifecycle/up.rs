//! `lab up`: the network, the certificates, the processes and the client
//! configuration, in that order, timed by phase; any failure rolls back
//! through `down`. It does not decide what the lab looks like (`topology`,
//! `rules`) nor how processes are run (`processes`).

use std::path::PathBuf;
use std::process::Child;
use std::time::Instant;

use anyhow::Context as _;
use futures::future::{BoxFuture, FutureExt as _, try_join_all};
use probemesh_proto::pki::{self, TlsDir};
use serde::Serialize;

use super::processes::{Listen, Proc, check_children};
use super::{Lab, ms};
use crate::apiserver::auth;
use crate::apiserver::pki::KubePki;
use crate::client_config::{self, ClientConfigFile};
use crate::rules::nftables::kube_proxy_script;
use crate::rules::{FabricRules, NodeRules, ProxyMode, fabric_ruleset, node_ruleset};
use crate::state::{LabState, StateDir};
use crate::system;
use crate::topology::{self, CLOUDVM, CLOUDVM_NETNS, FABRIC, NODES, PODS, WEB_PORT};

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
    /// How kube-proxy writes the Service rules.
    pub proxy_mode: ProxyMode,
}

impl Lab {
    /// `lab up`: builds the lab unless it is already up, its kube-proxy
    /// writing the Service rules in `proxy_mode`; a failure rolls back.
    pub async fn up(
        &self,
        otlp_endpoint: Option<String>,
        proxy_mode: ProxyMode,
    ) -> anyhow::Result<UpReport> {
        self.preflight(proxy_mode)?;
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
            if proxy_mode != state.proxy_mode {
                warnings.push(format!(
                    "the running lab's kube-proxy is in {} mode; `meshctl lab down` first to change it",
                    state.proxy_mode
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
                proxy_mode: state.proxy_mode,
            });
        }
        if self.anything_present() {
            eprintln!("lab: found parts of an earlier lab; removing them first");
            self.down().await?;
        }
        match self.build(otlp_endpoint, proxy_mode).await {
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

    async fn build(
        &self,
        otlp_endpoint: Option<String>,
        proxy_mode: ProxyMode,
    ) -> anyhow::Result<UpReport> {
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
            proxy_mode,
            ..LabState::default()
        };
        self.dir.save(&state)?;

        let certs = tokio::task::spawn_blocking({
            let dir = self.dir.clone();
            move || make_certs(&dir)
        });
        self.network(proxy_mode).await?;
        mark("network");
        self.write_files()?;
        certs.await.context("certificate task")??;
        mark("certificates");

        let mut children: Vec<(String, Child)> = Vec::new();
        for p in [
            Proc::UpstreamDns,
            Proc::ClusterDns,
            Proc::Web { loopback: false },
            Proc::ApiServer,
        ]
        .into_iter()
        .chain(PODS.iter().map(Proc::Pause))
        {
            children.push((p.key(), self.start(&mut state, p)?));
        }
        self.wait_listening(
            &state,
            &mut children,
            "apiserver",
            Listen::Tcp(topology::KUBE_API_PORT),
        )
        .await?;
        self.wait_tokens().await?;
        children.push((
            Proc::Coordinator.key(),
            self.start(&mut state, Proc::Coordinator)?,
        ));
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

        let client_config = client_config::point_at_lab(&self.dir)?;
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
            proxy_mode,
        })
    }

    /// Creates namespaces, links, addresses, routes, VXLAN, sysctls,
    /// iptables rules and, in nftables mode, kube-proxy's nftables table:
    /// one `ip -batch` on the host, then every namespace in parallel.
    async fn network(&self, mode: ProxyMode) -> anyhow::Result<()> {
        let inventory = topology::inventory(false)?;
        let node_rules: Vec<(String, Option<String>)> = NODES
            .iter()
            .map(|n| {
                (
                    node_ruleset(*n, &inventory, NodeRules::BASELINE, mode),
                    (mode == ProxyMode::Nftables).then(|| kube_proxy_script(*n, &inventory, true)),
                )
            })
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
        for (node, (rules, nft)) in NODES.into_iter().zip(node_rules) {
            jobs.push(
                async move {
                    let ns = node.netns();
                    system::sysctl(ns, &topology::sysctls(ns)).await?;
                    system::ip_batch(Some(ns), &topology::node_batch(node)).await?;
                    system::bridge_batch(ns, &topology::node_fdb_batch(node)).await?;
                    system::iptables_restore(ns, &rules).await?;
                    match nft {
                        Some(script) => system::nft_script(ns, &script).await,
                        None => Ok(()),
                    }
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

    /// The per-namespace `resolv.conf` files, the inventory and the
    /// coordinator's policy.
    fn write_files(&self) -> anyhow::Result<()> {
        for ns in topology::resolv_conf_namespaces() {
            system::write_resolv_conf(ns, &topology::resolv_conf(ns))?;
        }
        let policy = self.dir.policy();
        std::fs::write(&policy, LAB_POLICY)
            .with_context(|| format!("writing {}", policy.display()))?;
        self.write_inventory(false, false)
    }

    /// Writes the inventory atomically (the coordinator may be reading it).
    pub(super) fn write_inventory(
        &self,
        kube_proxy_pending: bool,
        client_dns_wrong: bool,
    ) -> anyhow::Result<()> {
        let path = self.dir.inventory();
        let tmp = path.with_extension("json.tmp");
        let mut inventory = topology::inventory(kube_proxy_pending)?;
        if client_dns_wrong {
            topology::misconfigure_client_dns(&mut inventory);
        }
        let json = serde_json::to_vec_pretty(&inventory)?;
        std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }
}

/// The lab coordinator's policy (`mesh-coordinator --policy`): the
/// defaults, plus the whole lab range 198.18.0.0/15 (the fabric's DNS,
/// addresses outside the inventory) and hostnames under `lab.test` and
/// the cluster domain alike (any name: the lab's resolvers answer only
/// for the lab).
const LAB_POLICY: &str = r#"{
  "targets": {
    "allow": [{ "cidr": "198.18.0.0/15" }],
    "hostnames": "any"
  }
}
"#;

/// The CA, coordinator and admin certificates, and each node probe's own
/// TLS directory (CA certificate, its certificate and key). cloudvm-1 gets
/// an empty directory: it enrolls with a join token.
fn make_certs(dir: &StateDir) -> anyhow::Result<()> {
    let tls = TlsDir::new(dir.tls());
    pki::init(&tls, &[topology::HOST_IP.to_string()]).context("creating the lab CA")?;
    // Node probes enroll with their pods' ServiceAccount tokens; the cloud
    // VM joins with a join token: each starts with an empty directory.
    for name in NODES.iter().map(|n| n.name()).chain([CLOUDVM.to_owned()]) {
        let probe_dir = dir.probe_tls(&name);
        std::fs::create_dir_all(&probe_dir)
            .with_context(|| format!("creating {}", probe_dir.display()))?;
    }
    let kube = KubePki::create(&dir.kube(), &[topology::HOST_IP.into()])
        .context("creating the lab cluster's CA")?;
    let server = format!("https://{}", topology::kube_api_addr());
    kube.write_kubeconfig(
        &dir.admin_kubeconfig(),
        &server,
        "lab-admin",
        &[auth::MASTERS],
    )?;
    kube.write_kubeconfig(
        &dir.coordinator_kubeconfig(),
        &server,
        auth::COORDINATOR_USER,
        &[],
    )
}
