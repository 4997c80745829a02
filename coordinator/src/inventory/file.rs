//! The inventory file (`--inventory FILE`), for clusters without API
//! access: loaded at start and re-read whenever the file changes, so every
//! run sees the current cluster.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use probemesh_model::inventory::{Inventory, LoadError};

/// An inventory file and its last good copy.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    cached: Mutex<Option<(SystemTime, Arc<Inventory>)>>,
}

impl FileSource {
    /// Opens the file, loading it now to fail fast on a bad file.
    pub fn open(path: PathBuf) -> Result<Self, LoadError> {
        let source = Self {
            path,
            cached: Mutex::new(None),
        };
        source.load()?;
        Ok(source)
    }

    /// The file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The current inventory, re-read if the file changed. A file that became
    /// unreadable keeps the last good copy (and says so in the log).
    pub fn current(&self) -> Option<Arc<Inventory>> {
        match self.load() {
            Ok(inv) => Some(inv),
            Err(e) => {
                tracing::warn!(error = %e, "inventory unreadable; using the last good copy");
                self.lock().as_ref().map(|(_, inv)| inv.clone())
            }
        }
    }

    fn load(&self) -> Result<Arc<Inventory>, LoadError> {
        let path = &self.path;
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
            return Ok(inv.clone());
        }
        let inv = Arc::new(Inventory::load(path)?);
        *cached = Some((modified, inv.clone()));
        Ok(inv)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(SystemTime, Arc<Inventory>)>> {
        self.cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
