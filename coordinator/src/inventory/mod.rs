//! The cluster inventory as the coordinator holds it, from one of three
//! sources: the Kubernetes API (`--kubeconfig FILE` or `--in-cluster`,
//! watched: [`kube`]), an inventory file (`--inventory FILE`, re-read when
//! it changes: [`file`]), or none. All give the same [`Inventory`] type, so
//! targets and rules do not know where it came from.

pub mod convert;
pub mod file;
pub mod kube;

use std::path::PathBuf;
use std::sync::Arc;

use probemesh_model::inventory::{Inventory, LoadError};

use self::file::FileSource;
use self::kube::Watched;

/// Where the inventory comes from.
#[derive(Debug)]
pub struct InventorySource {
    source: Source,
}

enum Source {
    None,
    File(FileSource),
    Kubernetes {
        client: ::kube::Client,
        watched: Watched,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::None => f.write_str("None"),
            Source::File(file) => f.debug_tuple("File").field(file).finish(),
            Source::Kubernetes { watched, .. } => {
                f.debug_tuple("Kubernetes").field(watched).finish()
            }
        }
    }
}

impl InventorySource {
    /// No inventory: Kubernetes-shaped targets are refused with a hint.
    pub fn none() -> Self {
        Self {
            source: Source::None,
        }
    }

    /// An inventory file, loaded now to fail fast on a bad file.
    pub fn file(path: PathBuf) -> Result<Self, LoadError> {
        Ok(Self {
            source: Source::File(FileSource::open(path)?),
        })
    }

    /// The Kubernetes API behind `client`, watched from now on.
    pub fn kubernetes(client: ::kube::Client) -> Self {
        let watched = kube::watch(client.clone());
        Self {
            source: Source::Kubernetes { client, watched },
        }
    }

    /// The current inventory (`None` without a source, or before the API's
    /// first lists are in).
    pub fn current(&self) -> Option<Arc<Inventory>> {
        match &self.source {
            Source::None => None,
            Source::File(f) => f.current(),
            Source::Kubernetes { watched, .. } => watched.current(),
        }
    }

    /// The API client, when the inventory comes from Kubernetes (node
    /// enrollment reviews tokens and looks up pods with it).
    pub fn kube_client(&self) -> Option<&::kube::Client> {
        match &self.source {
            Source::Kubernetes { client, .. } => Some(client),
            _ => None,
        }
    }

    /// Waits for the API's first lists (at most `timeout`); true at once
    /// for the other sources.
    pub async fn synced(&self, timeout: std::time::Duration) -> bool {
        match &self.source {
            Source::Kubernetes { watched, .. } => watched.synced(timeout).await,
            _ => true,
        }
    }

    /// Where the inventory comes from, for logs.
    pub fn describe(&self) -> String {
        match &self.source {
            Source::None => "none".to_owned(),
            Source::File(f) => format!("file {}", f.path().display()),
            Source::Kubernetes { .. } => "the Kubernetes API".to_owned(),
        }
    }
}
