//! The kinds the lab's API server serves, with the names `k8s-openapi` gives
//! them (group, version, kind, plural), and the discovery documents that
//! describe them to clients such as `kubectl`.

use k8s_openapi::Resource;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde_json::{Value, json};

/// A kind stored and served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `v1` Namespace.
    Namespace,
    /// `v1` Node.
    Node,
    /// `v1` Pod.
    Pod,
    /// `v1` Service.
    Service,
    /// `v1` ServiceAccount.
    ServiceAccount,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// `scheduling.k8s.io/v1` PriorityClass.
    PriorityClass,
}

/// Names of one kind.
struct Names {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
}

const fn names<R: Resource>(namespaced: bool) -> Names {
    Names {
        group: R::GROUP,
        version: R::VERSION,
        kind: R::KIND,
        plural: R::URL_PATH_SEGMENT,
        namespaced,
    }
}

impl Kind {
    /// Every kind served.
    pub const ALL: [Kind; 7] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::Service,
        Kind::ServiceAccount,
        Kind::EndpointSlice,
        Kind::PriorityClass,
    ];

    const fn names(self) -> Names {
        match self {
            Kind::Namespace => names::<Namespace>(false),
            Kind::Node => names::<Node>(false),
            Kind::Pod => names::<Pod>(true),
            Kind::Service => names::<Service>(true),
            Kind::ServiceAccount => names::<ServiceAccount>(true),
            Kind::EndpointSlice => names::<EndpointSlice>(true),
            Kind::PriorityClass => names::<PriorityClass>(false),
        }
    }

    /// The API group (`""` for the core group).
    pub fn group(self) -> &'static str {
        self.names().group
    }

    /// The short names kubectl accepts (`svc`, `po`, ...), as the real
    /// server's discovery lists them.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Namespace => &["ns"],
            Kind::Node => &["no"],
            Kind::Pod => &["po"],
            Kind::Service => &["svc"],
            Kind::ServiceAccount => &["sa"],
            Kind::EndpointSlice => &[],
            Kind::PriorityClass => &["pc"],
        }
    }

    /// `kind`, e.g. `Pod`.
    pub fn kind(self) -> &'static str {
        self.names().kind
    }

    /// The URL segment, e.g. `pods`.
    pub fn plural(self) -> &'static str {
        self.names().plural
    }

    /// Whether objects live in a namespace.
    pub fn namespaced(self) -> bool {
        self.names().namespaced
    }

    /// `apiVersion`, e.g. `v1` or `discovery.k8s.io/v1`.
    pub fn api_version(self) -> String {
        let n = self.names();
        if n.group.is_empty() {
            n.version.to_owned()
        } else {
            format!("{}/{}", n.group, n.version)
        }
    }

    /// The kind served at `group`/`version`/`plural`.
    pub fn from_path(group: &str, version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| {
            let n = k.names();
            n.group == group && n.version == version && n.plural == plural
        })
    }

    /// Sets `kind` and `apiVersion` on an object.
    pub fn stamp(self, mut object: Value) -> Value {
        if let Some(o) = object.as_object_mut() {
            o.insert("kind".into(), json!(self.kind()));
            o.insert("apiVersion".into(), json!(self.api_version()));
        }
        object
    }
}

/// The TokenReview resource (create only, never stored).
pub const TOKEN_REVIEWS: (&str, &str, &str) = (
    TokenReview::GROUP,
    TokenReview::VERSION,
    TokenReview::URL_PATH_SEGMENT,
);

/// `GET /api`.
pub fn core_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    })
}

/// The named groups served, with their one version.
fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Kind::ALL
        .iter()
        .map(|k| (k.names().group, k.names().version))
        .chain([(TOKEN_REVIEWS.0, TOKEN_REVIEWS.1)])
        .filter(|(g, _)| !g.is_empty())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// `GET /apis`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /api/v1` or `GET /apis/GROUP/VERSION`, if served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources: Vec<Value> = Kind::ALL
        .iter()
        .filter(|k| k.names().group == group && k.names().version == version)
        .map(|k| {
            let n = k.names();
            json!({
                "name": n.plural,
                "singularName": n.kind.to_lowercase(),
                "namespaced": n.namespaced,
                "kind": n.kind,
                "shortNames": k.short_names(),
                "verbs": ["create", "delete", "get", "list", "update", "watch"],
            })
        })
        .collect();
    if group == TOKEN_REVIEWS.0 && version == TOKEN_REVIEWS.1 {
        resources.push(json!({
            "name": TOKEN_REVIEWS.2, "singularName": "tokenreview", "namespaced": false,
            "kind": "TokenReview", "verbs": ["create"],
        }));
    }
    if group.is_empty() && version == "v1" {
        resources.push(json!({
            "name": "serviceaccounts/token", "singularName": "", "namespaced": true,
            "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest",
            "verbs": ["create"],
        }));
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": group_version, "resources": resources,
    }))
}

/// Whether an `Accept` header asks for a server-side Table (as `kubectl
/// get` does for its columns).
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// `objects` of `kind` as a `meta.k8s.io/v1` Table: the columns `kubectl
/// get` prints for that kind (the ones the lab's objects carry).
pub fn table(kind: Kind, objects: &[Value], resource_version: u64) -> Value {
    let (columns, cells): (&[&str], Cells) = match kind {
        Kind::Pod => (&["Name", "Status", "IP", "Node"], |o| {
            let status = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["status"] == "False"))
                .and_then(|c| c["reason"].as_str())
                .map_or_else(
                    || {
                        o.pointer("/status/phase")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned()
                    },
                    str::to_owned,
                );
            vec![
                status,
                text_of(o, "/status/podIP"),
                text_of(o, "/spec/nodeName"),
            ]
        }),
        Kind::Node => (&["Name", "Status", "Internal-IP", "Pod-CIDR"], |o| {
            let ready = o.pointer("/status/conditions/0/status") == Some(&json!("True"));
            vec![
                if ready { "Ready" } else { "NotReady" }.to_owned(),
                text_of(o, "/status/addresses/0/address"),
                text_of(o, "/spec/podCIDR"),
            ]
        }),
        Kind::Service => (&["Name", "Type", "Cluster-IP", "Port(s)"], |o| {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| match p["nodePort"].as_i64() {
                    Some(n) => format!(
                        "{}:{n}/{}",
                        p["port"],
                        p["protocol"].as_str().unwrap_or("TCP")
                    ),
                    None => format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")),
                })
                .collect();
            vec![
                text_of(o, "/spec/type"),
                text_of(o, "/spec/clusterIP"),
                ports.join(","),
            ]
        }),
        _ => (&["Name"], |_| Vec::new()),
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = vec![text_of(o, "/metadata/name")];
            row.extend(cells(o));
            json!({"cells": row, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}})
        })
        .collect();
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| json!({"name": c, "type": "string", "format": if *c == "Name" { "name" } else { "" }, "description": "", "priority": 0}))
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": definitions, "rows": rows,
    })
}

/// The cells after the name, for one object.
type Cells = fn(&Value) -> Vec<String>;

fn text_of(o: &Value, pointer: &str) -> String {
    o.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_carry_kubectls_columns() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
        let pod = json!({"metadata": {"name": "kp"}, "spec": {},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}});
        let t = table(Kind::Pod, &[pod], 7);
        assert_eq!(t["rows"][0]["cells"][0], "kp");
        assert_eq!(t["rows"][0]["cells"][1], "Unschedulable");
        assert_eq!(t["columnDefinitions"].as_array().map(Vec::len), Some(4));
    }

    #[test]
    fn names_come_from_k8s_openapi() {
        assert_eq!(Kind::EndpointSlice.api_version(), "discovery.k8s.io/v1");
        assert_eq!(Kind::Pod.api_version(), "v1");
        assert_eq!(
            Kind::from_path("scheduling.k8s.io", "v1", "priorityclasses"),
            Some(Kind::PriorityClass)
        );
        assert!(!Kind::Node.namespaced());
    }

    #[test]
    fn discovery_lists_every_served_group() {
        let groups = group_list();
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "authentication.k8s.io",
                "discovery.k8s.io",
                "scheduling.k8s.io"
            ]
        );
        let core = resource_list("", "v1").expect("core");
        assert!(core["resources"].as_array().is_some_and(|r| r.len() >= 5));
        assert!(resource_list("apps", "v1").is_none());
    }
}
