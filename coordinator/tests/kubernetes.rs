//! The coordinator against a Kubernetes API server: the lab's, which speaks
//! the real wire format with real objects (no API server can run here).
//! The inventory follows changes within a second, survives a server restart
//! and a `410 Gone`; the coordinator's identity may read but not write; and
//! node enrollment accepts exactly a probe pod's own node.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use mesh_coordinator::enroll::node::{self, Refused};
use mesh_coordinator::inventory::InventorySource;
use mesh_coordinator::inventory::kube::{ApiAccess, client};
use mesh_coordinator::state::NodeEnrollment;
use meshctl_lab::apiserver::auth::{self, TokenClaims};
use meshctl_lab::apiserver::kinds::Kind;
use meshctl_lab::apiserver::pki::KubePki;
use meshctl_lab::apiserver::{ApiServer, ClusterFile, Running, objects};
use meshctl_lab::topology;
use probemesh_model::inventory::Inventory;
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How long a change may take to reach the inventory.
const WITHIN: Duration = Duration::from_secs(1);

struct Cluster {
    server: ApiServer,
    running: Option<Running>,
    pki: KubePki,
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
}

impl Cluster {
    /// The lab's cluster on a loopback API server.
    async fn start() -> Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let pki = KubePki::create(dir.path(), &["127.0.0.1".parse()?])?;
        let server = ApiServer::new(&pki)?.with_bookmarks_every(Duration::from_millis(200));
        let file = dir.path().join("inventory.json");
        std::fs::write(&file, serde_json::to_vec(&topology::inventory(false)?)?)?;
        ClusterFile::new(file).sync(&server.store);
        let running = server.start("127.0.0.1:0".parse()?).await?;
        Ok(Self {
            server,
            running: Some(running),
            pki,
            dir: dir.path().to_owned(),
            _dir: dir,
        })
    }

    fn addr(&self) -> SocketAddr {
        self.running
            .as_ref()
            .map_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)), Running::addr)
    }

    /// A kubeconfig file for `user` in `groups`.
    fn kubeconfig(
        &self,
        user: &str,
        groups: &[&str],
    ) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
        let path = self.dir.join(format!("{user}.kubeconfig"));
        self.pki
            .write_kubeconfig(&path, &format!("https://{}", self.addr()), user, groups)?;
        Ok(path)
    }

    async fn client(
        &self,
        user: &str,
        groups: &[&str],
    ) -> Result<kube::Client, Box<dyn std::error::Error>> {
        Ok(client(&ApiAccess::Kubeconfig(self.kubeconfig(user, groups)?)).await?)
    }

    fn get(&self, kind: Kind, ns: &str, name: &str) -> Result<Value, Box<dyn std::error::Error>> {
        Ok(self.server.store.get(kind, ns, name)?)
    }

    fn replace(&self, kind: Kind, ns: &str, object: Value) -> TestResult {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.server.store.replace(kind, ns, &name, object)?;
        Ok(())
    }
}

/// Waits until `check` holds for the inventory, returning how long it took.
async fn until(
    source: &InventorySource,
    limit: Duration,
    check: impl Fn(&Inventory) -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if source.current().is_some_and(|inv| check(&inv)) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

async fn watched(cluster: &Cluster) -> Result<InventorySource, Box<dyn std::error::Error>> {
    let source = InventorySource::kubernetes(cluster.client(auth::COORDINATOR_USER, &[]).await?);
    assert!(
        source.synced(Duration::from_secs(10)).await,
        "the first lists never came in"
    );
    Ok(source)
}

#[tokio::test]
async fn the_inventory_comes_from_the_api_and_follows_it_within_a_second() -> TestResult {
    let cluster = Cluster::start().await?;
    let source = watched(&cluster).await?;
    let inv = source.current().ok_or("no inventory")?;
    assert_eq!(inv.nodes.len(), 3);
    let web = inv.service("default", "web").ok_or("no web Service")?;
    assert_eq!(web.cluster_ip.to_string(), "198.18.200.80");
    assert_eq!(web.ports[0].node_port, Some(30080));
    assert_eq!(web.ready_endpoints().count(), 1);
    assert_eq!(
        inv.pod("default", "web-0")
            .map(|p| p.ip.to_string())
            .as_deref(),
        Some("198.19.2.10")
    );
    assert!(
        inv.pods.iter().all(|p| p.netns.is_none()),
        "the API names no network namespace"
    );

    // A pod added, then deleted.
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default"},
        "spec": {"nodeName": "node-3", "containers": [{"name": "app", "image": "lab/app"}]},
        "status": {"phase": "Running", "podIP": "198.19.3.20"},
    });
    cluster.server.store.create(Kind::Pod, "default", pod)?;
    let took = until(&source, WITHIN, |i| i.pod("default", "web-1").is_some()).await;
    assert!(
        took.is_some(),
        "a new pod did not reach the inventory within {WITHIN:?}"
    );
    cluster.server.store.delete(Kind::Pod, "default", "web-1")?;
    let took = until(&source, WITHIN, |i| i.pod("default", "web-1").is_none()).await;
    assert!(took.is_some(), "a deleted pod stayed in the inventory");

    // A node address added.
    let mut node = cluster.get(Kind::Node, "", "node-1")?;
    node["status"]["addresses"]
        .as_array_mut()
        .ok_or("no addresses")?
        .push(json!({"type": "ExternalIP", "address": "198.18.100.99"}));
    cluster.replace(Kind::Node, "", node)?;
    let took = until(&source, WITHIN, |i| {
        i.node("node-1").is_some_and(|n| {
            n.addresses
                .iter()
                .any(|a| a.address.to_string() == "198.18.100.99")
        })
    })
    .await;
    assert!(
        took.is_some(),
        "a node's new address did not reach the inventory"
    );

    // kube-proxy on node-3 turned Pending by the scheduler.
    let name = topology::kube_proxy_pod_name(topology::NODE_3);
    let mut kp = cluster.get(Kind::Pod, "kube-system", &name)?;
    kp["spec"]["nodeName"] = Value::Null;
    kp["status"] = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
        "reason": "Unschedulable", "message": "0/3 nodes are available: 1 Insufficient memory."}]});
    cluster.replace(Kind::Pod, "kube-system", kp)?;
    let took = until(&source, WITHIN, |i| {
        i.node("node-3")
            .and_then(|n| n.kube_proxy.as_ref())
            .is_some_and(|kp| kp.is_down() && kp.reason.as_deref() == Some("Unschedulable"))
    })
    .await
    .ok_or("a Pending kube-proxy did not reach the inventory")?;
    let said = source
        .current()
        .and_then(|i| {
            i.node("node-3")
                .and_then(|n| n.kube_proxy.as_ref())
                .map(|kp| kp.describe("node-3"))
        })
        .unwrap_or_default();
    assert!(
        said.contains("Insufficient memory") && said.contains("no priorityClassName"),
        "{said}"
    );
    eprintln!("kube-proxy Pending reached the inventory in {took:?}");
    Ok(())
}

#[tokio::test]
async fn the_watch_survives_a_server_restart_and_a_410_gone() -> TestResult {
    let mut cluster = Cluster::start().await?;
    let source = watched(&cluster).await?;
    let addr = cluster.addr();
    if let Some(running) = cluster.running.take() {
        running.stop().await;
    }
    // A change while the server is away, and a history that no longer
    // reaches back to the watchers' version: resuming gets 410 Gone.
    let pod = json!({
        "metadata": {"name": "while-away", "namespace": "default"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app"}]},
        "status": {"phase": "Running", "podIP": "198.19.1.77"},
    });
    cluster.server.store.create(Kind::Pod, "default", pod)?;
    cluster.server.store.compact();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.running = Some(cluster.server.start(addr).await?);
    let took = until(&source, Duration::from_secs(20), |i| {
        i.pod("default", "while-away").is_some()
    })
    .await
    .ok_or("the inventory never relisted after the restart")?;
    eprintln!("relisted {took:?} after the restart");
    // And it keeps watching afterwards.
    cluster
        .server
        .store
        .delete(Kind::Pod, "default", "while-away")?;
    let took = until(&source, Duration::from_secs(5), |i| {
        i.pod("default", "while-away").is_none()
    })
    .await;
    assert!(took.is_some(), "the watch did not resume after the relist");
    Ok(())
}

#[tokio::test]
async fn the_coordinators_identity_reads_but_cannot_write_and_a_stranger_cannot_read() -> TestResult
{
    let cluster = Cluster::start().await?;
    let coordinator = cluster.client(auth::COORDINATOR_USER, &[]).await?;
    let pods: Api<Pod> = Api::namespaced(coordinator, "default");
    assert!(pods.get("web-0").await.is_ok());
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "intruder"}, "spec": {"containers": []}}),
    )?;
    match pods.create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => {
            return Err(format!("a write by the coordinator was not refused: {other:?}").into());
        }
    }
    let stranger: Api<Pod> = Api::namespaced(cluster.client("mallory", &[]).await?, "default");
    match stranger.get("web-0").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403);
            assert!(status.message.contains("mallory"), "{}", status.message);
        }
        other => return Err(format!("a stranger read a pod: {other:?}").into()),
    }
    Ok(())
}

fn policy() -> NodeEnrollment {
    NodeEnrollment {
        namespace: objects::PROBEMESH_NAMESPACE.to_owned(),
        service_account: objects::PROBE_SERVICE_ACCOUNT.to_owned(),
        audience: "probemesh".to_owned(),
    }
}

/// A token for the pod `namespace/pod`'s ServiceAccount, bound to it.
fn token(
    cluster: &Cluster,
    namespace: &str,
    pod: &str,
    audience: &str,
    expires: SystemTime,
) -> Result<String, Box<dyn std::error::Error>> {
    let p = cluster.get(Kind::Pod, namespace, pod)?;
    let text = |v: &Value, k: &str| {
        v.pointer(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let node = text(&p, "/spec/nodeName");
    Ok(cluster.server.tokens.mint(TokenClaims {
        namespace: namespace.to_owned(),
        service_account: Some(text(&p, "/spec/serviceAccountName"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_owned()),
        service_account_uid: "sa".to_owned(),
        audiences: vec![audience.to_owned()],
        expires,
        pod: Some((pod.to_owned(), text(&p, "/metadata/uid"))),
        node: Some((
            node.clone(),
            text(&cluster.get(Kind::Node, "", &node)?, "/metadata/uid"),
        )),
    }))
}

#[tokio::test]
async fn a_probe_pods_token_enrolls_exactly_its_own_node() -> TestResult {
    let cluster = Cluster::start().await?;
    let client = cluster.client(auth::COORDINATOR_USER, &[]).await?;
    let hour = SystemTime::now() + Duration::from_secs(3600);
    let ns = objects::PROBEMESH_NAMESPACE;
    let node1 = token(&cluster, ns, "mesh-probe-node-1", "probemesh", hour)?;
    let check = |node: &'static str, t: String| {
        let client = client.clone();
        async move { node::authorize(&client, &policy(), node, &t).await }
    };
    assert_eq!(check("node-1", node1.clone()).await?, Ok(()));
    // Another node's name with node-1's token.
    assert!(
        matches!(check("node-2", node1).await?, Err(Refused::OtherNode { ref actual, .. }) if actual == "node-1")
    );
    // Expired, or for another audience.
    let expired = token(
        &cluster,
        ns,
        "mesh-probe-node-1",
        "probemesh",
        SystemTime::now() - Duration::from_secs(1),
    )?;
    assert!(
        matches!(check("node-1", expired).await?, Err(Refused::NotAuthenticated(ref why)) if why.contains("expired"))
    );
    let vault = token(&cluster, ns, "mesh-probe-node-1", "vault", hour)?;
    assert!(matches!(
        check("node-1", vault).await?,
        Err(Refused::NotAuthenticated(_))
    ));
    // A workload pod's token on node-2: not the probe DaemonSet's account.
    let workload = token(&cluster, "default", "web-0", "probemesh", hour)?;
    assert!(matches!(
        check("node-2", workload).await?,
        Err(Refused::WrongAccount { .. })
    ));
    // A token whose pod has moved off that node (deleted and recreated on node-3).
    let moved = token(&cluster, ns, "mesh-probe-node-2", "probemesh", hour)?;
    let mut pod = cluster.get(Kind::Pod, ns, "mesh-probe-node-2")?;
    cluster
        .server
        .store
        .delete(Kind::Pod, ns, "mesh-probe-node-2")?;
    pod["spec"]["nodeName"] = json!("node-3");
    if let Some(meta) = pod["metadata"].as_object_mut() {
        meta.remove("uid");
        meta.remove("resourceVersion");
    }
    cluster.server.store.create(Kind::Pod, ns, pod)?;
    assert!(matches!(
        check("node-2", moved).await?,
        Err(Refused::NotAuthenticated(_))
    ));
    // Garbage, and an oversized token.
    assert!(matches!(
        check("node-1", "not-a-token".to_owned()).await?,
        Err(Refused::NotAuthenticated(_))
    ));
    assert_eq!(
        check("node-1", "x".repeat(node::MAX_TOKEN + 1)).await?,
        Err(Refused::TooLarge)
    );
    Ok(())
}

#[test]
fn the_lab_kubeconfig_is_what_kubectl_reads() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pki = KubePki::create(dir.path(), &["127.0.0.1".parse()?])?;
    let path = dir.path().join("k.kubeconfig");
    pki.write_kubeconfig(
        &path,
        "https://127.0.0.1:6443",
        "lab-admin",
        &[auth::MASTERS],
    )?;
    let parsed = kube::config::Kubeconfig::read_from(Path::new(&path))?;
    assert_eq!(parsed.current_context.as_deref(), Some("lab-admin@lab"));
    assert_eq!(
        parsed.auth_infos.first().map(|u| u.name.as_str()),
        Some("lab-admin")
    );
    Ok(())
}
