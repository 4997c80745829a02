//! The inventory from the Kubernetes API: one kube-runtime reflector per
//! kind (nodes, pods, Services, EndpointSlices), each a list then a watch
//! that resumes from the last version seen, relists on `410 Gone` and backs
//! off and reconnects when the server goes away. Every change rebuilds the
//! inventory (after the changes already queued are taken in), so targets and
//! verdicts see the cluster as it is within a moment of a change.

use std::fmt::Debug;
use std::hash::Hash;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, Stream, StreamExt as _};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Config};
use probemesh_model::inventory::Inventory;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::convert::{self, Objects};

/// Where the coordinator finds its cluster's API.
#[derive(Debug, Clone)]
pub enum ApiAccess {
    /// A kubeconfig file (its current context).
    Kubeconfig(std::path::PathBuf),
    /// The pod's ServiceAccount (`KUBERNETES_SERVICE_HOST` and the mounted token).
    InCluster,
}

/// Why the API could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Not running in a pod.
    #[error(
        "--in-cluster: {0} (run the coordinator in a pod with a ServiceAccount, or pass --kubeconfig FILE)"
    )]
    InCluster(String),
    /// The client could not be built.
    #[error("Kubernetes client: {0}")]
    Client(String),
}

/// A client for the cluster's API.
pub async fn client(access: &ApiAccess) -> Result<Client, ApiError> {
    let config = match access {
        ApiAccess::Kubeconfig(path) => from_kubeconfig(path).await?,
        ApiAccess::InCluster => {
            Config::incluster().map_err(|e| ApiError::InCluster(e.to_string()))?
        }
    };
    Client::try_from(config).map_err(|e| ApiError::Client(e.to_string()))
}

async fn from_kubeconfig(path: &Path) -> Result<Config, ApiError> {
    let failed = |reason: String| ApiError::Kubeconfig {
        path: path.to_owned(),
        reason,
    };
    let file = Kubeconfig::read_from(path).map_err(|e| failed(e.to_string()))?;
    Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|e| failed(e.to_string()))
}

/// The watched cluster: the latest inventory, and whether every watcher has
/// finished its first list.
#[derive(Debug, Clone)]
pub struct Watched {
    latest: watch::Receiver<Option<Arc<Inventory>>>,
}

impl Watched {
    /// The inventory as of the last change; `None` until the first lists
    /// are in.
    pub fn current(&self) -> Option<Arc<Inventory>> {
        self.latest.borrow().clone()
    }

    /// Waits until the first lists are in (or `timeout` passes); true when
    /// they are.
    pub async fn synced(&self, timeout: Duration) -> bool {
        let mut latest = self.latest.clone();
        tokio::time::timeout(timeout, latest.wait_for(Option::is_some))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Starts watching the cluster; the watchers run until the process ends.
pub fn watch(client: Client) -> Watched {
    let (tx, latest) = watch::channel(None);
    let (nodes, node_changes) = reflect(Api::<Node>::all(client.clone()));
    let (pods, pod_changes) = reflect(Api::<Pod>::all(client.clone()));
    let (services, service_changes) = reflect(Api::<Service>::all(client.clone()));
    let (slices, slice_changes) = reflect(Api::<EndpointSlice>::all(client));
    tokio::spawn(async move {
        let mut changes = futures::stream::select_all([
            node_changes,
            pod_changes,
            service_changes,
            slice_changes,
        ]);
        let mut synced = false;
        while changes.next().await.is_some() {
            // Take in whatever else is already queued before rebuilding.
            while let Some(Some(())) = changes.next().now_or_never() {}
            if !synced {
                synced = ready(&nodes) && ready(&pods) && ready(&services) && ready(&slices);
                if !synced {
                    continue;
                }
                tracing::info!("Kubernetes inventory: first lists in; watching");
            }
            let objects = Objects {
                nodes: nodes.state(),
                pods: pods.state(),
                services: services.state(),
                endpoint_slices: slices.state(),
            };
            let inventory = convert::inventory(&objects);
            tracing::debug!(
                nodes = inventory.nodes.len(),
                pods = inventory.pods.len(),
                services = inventory.services.len(),
                "inventory rebuilt"
            );
            if tx.send(Some(Arc::new(inventory))).is_err() {
                return;
            }
        }
    });
    Watched { latest }
}

/// A reflector for `api`: its store, and a stream that yields once per
/// change (errors are logged; the watcher retries with backoff).
fn reflect<K>(api: Api<K>) -> (Store<K>, std::pin::Pin<Box<dyn Stream<Item = ()> + Send>>)
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .filter_map(move |event| {
            let changed = match event {
                Ok(_) => Some(()),
                Err(error) => {
                    tracing::warn!(%kind, %error, "Kubernetes watch failed; retrying");
                    None
                }
            };
            std::future::ready(changed)
        })
        .boxed();
    (reader, stream)
}

/// Whether a store has had its first list.
fn ready<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    store.wait_until_ready().now_or_never().is_some()
}
