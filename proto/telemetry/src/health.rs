//! Readiness: the named conditions a daemon must meet before it is worth
//! sending work to, read by `/readyz` (served by the `http` module).
//!
//! A daemon makes one [`Readiness`], registers a [`Condition`] per thing it
//! waits for (the coordinator: its gRPC listener serving; the probe: its
//! stream to the coordinator) and flips each as its state changes. It is
//! ready when every registered condition holds. It is not liveness: a
//! process that answers HTTP at all is alive (`/healthz`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Each condition by name: `None` while it holds, else why it does not.
type Conditions = BTreeMap<&'static str, Option<String>>;

/// A cloneable handle on a daemon's readiness conditions; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    conditions: Arc<Mutex<Conditions>>,
}

impl Readiness {
    /// Registers condition `name`, not holding yet because of `pending` (a
    /// short phrase: "not attached to the coordinator yet"). Registering a
    /// name again resets it to not holding.
    pub fn condition(&self, name: &'static str, pending: impl Into<String>) -> Condition {
        lock(&self.conditions).insert(name, Some(one_line(pending.into())));
        Condition {
            name,
            conditions: self.conditions.clone(),
        }
    }

    /// `Ok` when every registered condition holds (also when none is
    /// registered); otherwise one line naming each failing condition and
    /// why, in name order: `"coordinator: not attached yet"`.
    pub fn check(&self) -> Result<(), String> {
        let failing: Vec<String> = lock(&self.conditions)
            .iter()
            .filter_map(|(name, why)| why.as_ref().map(|why| format!("{name}: {why}")))
            .collect();
        if failing.is_empty() {
            Ok(())
        } else {
            Err(failing.join("; "))
        }
    }
}

/// One named readiness condition; the component it describes sets it.
#[derive(Debug, Clone)]
pub struct Condition {
    name: &'static str,
    conditions: Arc<Mutex<Conditions>>,
}

impl Condition {
    /// The condition holds.
    pub fn holds(&self) {
        lock(&self.conditions).insert(self.name, None);
    }

    /// The condition does not hold, because of `reason` (kept to one line).
    pub fn fails(&self, reason: impl Into<String>) {
        lock(&self.conditions).insert(self.name, Some(one_line(reason.into())));
    }
}

/// The map, even if a thread panicked holding it: entries are replaced
/// whole, so it is never half-written.
fn lock(conditions: &Mutex<Conditions>) -> MutexGuard<'_, Conditions> {
    conditions.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `reason` with line breaks turned into spaces, so `/readyz` answers one line.
fn one_line(reason: String) -> String {
    if reason.contains(['\n', '\r']) {
        reason.replace(['\n', '\r'], " ")
    } else {
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_condition_holds() {
        let readiness = Readiness::default();
        assert_eq!(readiness.check(), Ok(()), "nothing to wait for");

        let grpc = readiness.condition("grpc", "not serving yet");
        let inventory = readiness.condition("inventory", "not synced yet");
        assert_eq!(
            readiness.check(),
            Err("grpc: not serving yet; inventory: not synced yet".to_owned())
        );
        grpc.holds();
        assert_eq!(
            readiness.check(),
            Err("inventory: not synced yet".to_owned())
        );
        inventory.holds();
        assert_eq!(readiness.check(), Ok(()));

        grpc.clone().fails("shutting down\nnow");
        assert_eq!(readiness.check(), Err("grpc: shutting down now".to_owned()));
    }
}
