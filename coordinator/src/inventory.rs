//! The cluster inventory as the coordinator holds it: loaded from
//! `--inventory FILE` and re-read whenever the file changes (the lab rewrites
//! it when a fault changes kube-proxy's state), so every run sees the
//! current cluster.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use probemesh_model::inventory::{Inventory, LoadError};

/// Where the inventory comes from.
#[derive(Debug)]
pub struct InventorySource {
    path: Option<PathBuf>,
    cached: Mutex<Option<(SystemTime, Arc<Inventory>)>>,
}

impl InventorySource {
    /// No inventory: Kubernetes-shaped targets are refused with a hint.
    pub fn none() -> Self {
        Self {
            path: None,
            cached: Mutex::new(None),
        }
    }

    /// An inventory file, loaded now to fail fast on a bad file.
    pub fn file(path: PathBuf) -> Result<Self, LoadError> {
        let source = Self {
            path: Some(path),
            cached: Mutex::new(None),
        };
        source.load()?;
        Ok(source)
    }

    /// The current inventory, re-read if the file changed. A file that became
    /// unreadable keeps the last good copy (and says so in the log).
    pub fn current(&self) -> Option<Arc<Inventory>> {
        match self.load() {
            Ok(inv) => inv,
            Err(e) => {
                tracing::warn!(error = %e, "inventory unreadable; using the last good copy");
                self.lock().as_ref().map(|(_, inv)| inv.clone())
            }
        }
    }

    fn load(&self) -> Result<Option<Arc<Inventory>>, LoadError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|source| LoadError::Read {
                path: path.clone(),
                source,
            })?;
        let mut cached = self.lock();
        if let Some((at, inv)) = cached.as_ref()
            && *at == modified
        {
            return Ok(Some(inv.clone()));
        }
        let inv = Arc::new(Inventory::load(path)?);
        *cached = Some((modified, inv.clone()));
        Ok(Some(inv))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(SystemTime, Arc<Inventory>)>> {
        self.cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
