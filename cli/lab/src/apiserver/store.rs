//! The API server's object store: every object as the JSON the wire carries,
//! one cluster-wide `resourceVersion` counter, and a bounded history of
//! changes that watches replay from. A watch from a version older than the
//! history gets `410 Gone`, as from a real API server whose watch cache has
//! moved on; [`Store::compact`] forces that for tests.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::kinds::Kind;

/// Changes kept for watches to resume from; older versions get `410 Gone`.
const HISTORY: usize = 4096;
/// Changes a slow watcher may fall behind by before it is cut off.
const FANOUT: usize = 1024;

/// The live changes a watch receives after its replay.
pub type Changes = broadcast::Receiver<Arc<Event>>;

/// Where an object lives: its kind, namespace (empty for cluster-scoped
/// kinds) and name.
pub type Key = (Kind, String, String);

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Replaced.
    Modified,
    /// Deleted (the event carries the last state).
    Deleted,
}

impl EventType {
    /// As the watch stream spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, at one resource version.
#[derive(Debug)]
pub struct Event {
    /// The version this change produced.
    pub rv: u64,
    /// What changed.
    pub key: Key,
    /// How.
    pub kind: EventType,
    /// The object after the change (before it, for a deletion).
    pub object: Value,
}

/// Why a write was refused, as a Kubernetes `Status` would say it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No such object.
    #[error("{kind} \"{name}\" not found")]
    NotFound {
        /// The resource (plural).
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// Create of an existing name.
    #[error("{kind} \"{name}\" already exists")]
    AlreadyExists {
        /// The resource (plural).
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A replace carrying a stale `resourceVersion`.
    #[error(
        "Operation cannot be fulfilled on {kind} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict {
        /// The resource (plural).
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A body without `metadata.name`, or naming another object than the URL.
    #[error("{0}")]
    Invalid(String),
    /// A watch from a version the history no longer holds.
    #[error("too old resource version: {asked} ({oldest})")]
    Gone {
        /// The version asked for.
        asked: u64,
        /// The oldest version a watch can start from.
        oldest: u64,
    },
}

impl StoreError {
    /// The HTTP status a real API server answers with.
    pub fn code(&self) -> u16 {
        match self {
            StoreError::NotFound { .. } => 404,
            StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } => 409,
            StoreError::Invalid(_) => 422,
            StoreError::Gone { .. } => 410,
        }
    }

    /// The `Status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::NotFound { .. } => "NotFound",
            StoreError::AlreadyExists { .. } => "AlreadyExists",
            StoreError::Conflict { .. } => "Conflict",
            StoreError::Invalid(_) => "Invalid",
            StoreError::Gone { .. } => "Expired",
        }
    }
}

/// The objects, their versions and recent history.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Arc<Event>>,
}

#[derive(Debug, Default)]
struct Inner {
    rv: u64,
    /// The oldest version a watch may start from (history holds every
    /// change after it).
    oldest: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Event>>,
    uids: u64,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store at version 1.
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(FANOUT);
        Self {
            inner: Mutex::new(Inner {
                rv: 1,
                oldest: 1,
                ..Inner::default()
            }),
            changes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current resource version.
    pub fn version(&self) -> u64 {
        self.lock().rv
    }

    /// One object.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value, StoreError> {
        self.lock()
            .objects
            .get(&(kind, namespace.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                kind: kind.plural(),
                name: name.to_owned(),
            })
    }

    /// Every object of `kind` (in `namespace`, if given) whose labels match
    /// `selector`, and the version the list is consistent at.
    pub fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: &Selector,
    ) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|((k, ns, _), v)| {
                *k == kind && namespace.is_none_or(|n| n == ns) && selector.matches(v)
            })
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    /// Creates an object; refuses an existing name.
    pub fn create(&self, kind: Kind, namespace: &str, object: Value) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let key = key_of(kind, namespace, &object)?;
        if inner.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists {
                kind: kind.plural(),
                name: key.2,
            });
        }
        Ok(self.commit(&mut inner, key, object, EventType::Added))
    }

    /// Replaces an existing object. A body that carries a
    /// `metadata.resourceVersion` must carry the current one.
    pub fn replace(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        object: Value,
    ) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let key = key_of(kind, namespace, &object)?;
        if key.2 != name {
            return Err(StoreError::Invalid(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                key.2
            )));
        }
        let Some(current) = inner.objects.get(&key) else {
            return Err(StoreError::NotFound {
                kind: kind.plural(),
                name: name.to_owned(),
            });
        };
        let asked = object.pointer("/metadata/resourceVersion");
        if asked.is_some_and(|v| Some(v) != current.pointer("/metadata/resourceVersion")) {
            return Err(StoreError::Conflict {
                kind: kind.plural(),
                name: name.to_owned(),
            });
        }
        Ok(self.commit(&mut inner, key, object, EventType::Modified))
    }

    /// Deletes an object, returning its last state.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let key = (kind, namespace.to_owned(), name.to_owned());
        let Some(object) = inner.objects.remove(&key) else {
            return Err(StoreError::NotFound {
                kind: kind.plural(),
                name: name.to_owned(),
            });
        };
        Ok(self.record(&mut inner, key, object, EventType::Deleted))
    }

    /// Makes the store hold exactly `desired` among the objects in `owned`
    /// (the keys an earlier call set): objects whose content changed are
    /// replaced, new ones added, vanished ones deleted; objects created
    /// through the API are left alone. Returns the keys now owned.
    pub fn reconcile(&self, owned: &BTreeSet<Key>, desired: Vec<(Kind, Value)>) -> BTreeSet<Key> {
        let mut inner = self.lock();
        let mut now = BTreeSet::new();
        for (kind, object) in desired {
            let namespace = object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let Ok(key) = key_of(kind, &namespace, &object) else {
                continue;
            };
            now.insert(key.clone());
            match inner.objects.get(&key) {
                Some(current) if same_content(current, &object) => {}
                Some(_) => {
                    self.commit(&mut inner, key, object, EventType::Modified);
                }
                None => {
                    self.commit(&mut inner, key, object, EventType::Added);
                }
            }
        }
        for gone in owned.difference(&now) {
            if let Some(object) = inner.objects.remove(gone) {
                self.record(&mut inner, gone.clone(), object, EventType::Deleted);
            }
        }
        now
    }

    /// The changes to `kind` after version `since`, and a receiver for the
    /// ones to come; `410 Gone` when the history no longer reaches back.
    pub fn watch(&self, kind: Kind, since: u64) -> Result<(Vec<Arc<Event>>, Changes), StoreError> {
        let inner = self.lock();
        if since + 1 < inner.oldest {
            return Err(StoreError::Gone {
                asked: since,
                oldest: inner.oldest,
            });
        }
        let receiver = self.changes.subscribe();
        let replay = inner
            .history
            .iter()
            .filter(|e| e.rv > since && e.key.0 == kind)
            .cloned()
            .collect();
        Ok((replay, receiver))
    }

    /// Forgets the history, as a restarted API server's watch cache has:
    /// every watch from an older version gets `410 Gone`.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.oldest = inner.rv + 1;
    }

    /// Stamps version, uid and creation time (keeping an existing object's
    /// uid and creation time) and records the change.
    fn commit(&self, inner: &mut Inner, key: Key, mut object: Value, kind: EventType) -> Value {
        let previous = inner.objects.get(&key);
        let keep =
            |field: &str| previous.and_then(|p| p.pointer(&format!("/metadata/{field}")).cloned());
        let uid = keep("uid").unwrap_or_else(|| {
            inner.uids += 1;
            json!(format!("00000000-0000-4000-8000-{:012x}", inner.uids))
        });
        let created = keep("creationTimestamp")
            .unwrap_or_else(|| json!(rfc3339(std::time::SystemTime::now())));
        inner.rv += 1;
        if let Some(meta) = object
            .as_object_mut()
            .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
            .and_then(Value::as_object_mut)
        {
            meta.insert("resourceVersion".into(), json!(inner.rv.to_string()));
            meta.insert("uid".into(), uid);
            meta.insert("creationTimestamp".into(), created);
            if !key.1.is_empty() {
                meta.insert("namespace".into(), json!(key.1));
            }
        }
        inner.objects.insert(key.clone(), object.clone());
        self.publish(inner, key, object.clone(), kind);
        object
    }

    /// Records a deletion at a new version.
    fn record(&self, inner: &mut Inner, key: Key, mut object: Value, kind: EventType) -> Value {
        inner.rv += 1;
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(inner.rv.to_string()));
        }
        self.publish(inner, key, object.clone(), kind);
        object
    }

    fn publish(&self, inner: &mut Inner, key: Key, object: Value, kind: EventType) {
        let event = Arc::new(Event {
            rv: inner.rv,
            key,
            kind,
            object,
        });
        if inner.history.len() == HISTORY
            && let Some(dropped) = inner.history.pop_front()
        {
            inner.oldest = dropped.rv + 1;
        }
        inner.history.push_back(event.clone());
        // No receiver is not an error: nobody is watching.
        let _ = self.changes.send(event);
    }
}

/// `at` as Kubernetes writes times (RFC 3339, whole seconds, UTC).
pub fn rfc3339(at: std::time::SystemTime) -> String {
    let seconds = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    k8s_openapi::jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The key of `object` of `kind`, posted to `namespace`.
fn key_of(kind: Kind, namespace: &str, object: &Value) -> Result<Key, StoreError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            StoreError::Invalid("metadata.name: Required value: name is required".into())
        })?;
    let namespace = if kind.namespaced() { namespace } else { "" };
    Ok((kind, namespace.to_owned(), name.to_owned()))
}

/// Whether two objects differ only in what the store stamps.
fn same_content(current: &Value, desired: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in ["resourceVersion", "uid", "creationTimestamp"] {
                meta.remove(field);
            }
        }
        v
    };
    strip(current) == strip(desired)
}

/// A `labelSelector`: `key=value`, `key==value`, `key!=value`, `key` and
/// `!key` terms, all of which must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    terms: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl Selector {
    /// Parses a selector; set-based terms (`in`, `notin`) are refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if term.contains(" in ") || term.contains(" notin ") || term.contains('(') {
                return Err(format!(
                    "label selector '{term}': set-based selectors are not supported by the lab API server"
                ));
            }
            let parsed = if let Some((k, v)) = term.split_once("!=") {
                Term::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Term::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some(k) = term.strip_prefix('!') {
                Term::Absent(k.trim().to_owned())
            } else {
                Term::Exists(term.to_owned())
            };
            terms.push(parsed);
        }
        Ok(Self { terms })
    }

    /// Whether `object`'s labels satisfy every term.
    pub fn matches(&self, object: &Value) -> bool {
        let label = |k: &str| {
            object
                .pointer("/metadata/labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
        };
        self.terms.iter().all(|t| match t {
            Term::Equals(k, v) => label(k) == Some(v.as_str()),
            Term::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Term::Exists(k) => label(k).is_some(),
            Term::Absent(k) => label(k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, app: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"app": app}}, "spec": {}})
    }

    #[test]
    fn versions_grow_and_history_replays_only_later_changes() -> Result<(), StoreError> {
        let store = Store::new();
        store.create(Kind::Pod, "default", pod("a", "web"))?;
        let after_a = store.version();
        store.create(Kind::Pod, "default", pod("b", "web"))?;
        store.delete(Kind::Pod, "default", "a")?;
        let (replay, _) = store.watch(Kind::Pod, after_a)?;
        let seen: Vec<(&str, EventType)> =
            replay.iter().map(|e| (e.key.2.as_str(), e.kind)).collect();
        assert_eq!(
            seen,
            vec![("b", EventType::Added), ("a", EventType::Deleted)]
        );
        assert!(replay.windows(2).all(|w| w[0].rv < w[1].rv));
        Ok(())
    }

    #[test]
    fn compacted_history_answers_gone() -> Result<(), StoreError> {
        let store = Store::new();
        store.create(Kind::Pod, "default", pod("a", "web"))?;
        let old = store.version() - 1;
        store.compact();
        assert_eq!(
            store.watch(Kind::Pod, old).err().map(|e| e.code()),
            Some(410)
        );
        assert!(store.watch(Kind::Pod, store.version()).is_ok());
        Ok(())
    }

    #[test]
    fn a_stale_replace_conflicts_and_a_current_one_keeps_the_uid() -> Result<(), StoreError> {
        let store = Store::new();
        let created = store.create(Kind::Pod, "default", pod("a", "web"))?;
        let mut stale = created.clone();
        stale["metadata"]["resourceVersion"] = json!("1");
        assert_eq!(
            store
                .replace(Kind::Pod, "default", "a", stale)
                .err()
                .map(|e| e.code()),
            Some(409)
        );
        let replaced = store.replace(Kind::Pod, "default", "a", created.clone())?;
        assert_eq!(replaced["metadata"]["uid"], created["metadata"]["uid"]);
        assert_ne!(
            replaced["metadata"]["resourceVersion"],
            created["metadata"]["resourceVersion"]
        );
        Ok(())
    }

    #[test]
    fn reconcile_touches_only_what_changed_and_what_it_owns() -> Result<(), StoreError> {
        let store = Store::new();
        store.create(Kind::Pod, "default", pod("by-hand", "x"))?;
        let mut first = pod("a", "web");
        first["metadata"]["namespace"] = json!("default");
        let owned = store.reconcile(&BTreeSet::new(), vec![(Kind::Pod, first.clone())]);
        let v = store.version();
        let owned = store.reconcile(&owned, vec![(Kind::Pod, first)]);
        assert_eq!(store.version(), v, "an unchanged object is not rewritten");
        store.reconcile(&owned, Vec::new());
        let (left, _) = store.list(Kind::Pod, None, &Selector::default());
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["metadata"]["name"], "by-hand");
        Ok(())
    }

    #[test]
    fn selectors_match_labels() -> Result<(), String> {
        let web = pod("a", "web");
        assert!(Selector::parse("app=web")?.matches(&web));
        assert!(Selector::parse("app==web,app")?.matches(&web));
        assert!(!Selector::parse("app!=web")?.matches(&web));
        assert!(Selector::parse("!tier")?.matches(&web));
        assert!(Selector::parse("app in (web)").is_err());
        Ok(())
    }
}
