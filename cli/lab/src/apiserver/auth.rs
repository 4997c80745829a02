//! Who may call the lab's API server and what they may do: callers are named
//! by their client certificate (CN = user, O = groups, as the real API
//! server reads them), a fixed RBAC policy mirrors
//! `deploy/kubernetes`'s ClusterRole, and ServiceAccount tokens are minted
//! (TokenRequest) and checked (TokenReview) the way the real server does,
//! bound to a pod and its node.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rand::RngCore as _;
use serde_json::{Value, json};

/// The group whose members may do anything (as `system:masters`).
pub const MASTERS: &str = "system:masters";
/// The user the coordinator's kubeconfig names.
pub const COORDINATOR_USER: &str = "probemesh-coordinator";
/// The audience a review assumes when it names none (the API server's own).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc";
/// Shortest lifetime a TokenRequest may ask for, as on a real API server.
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(600);
/// Largest token accepted in a review.
const MAX_TOKEN: usize = 8 << 10;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No client certificate.
    Anonymous,
    /// A certificate from the cluster CA.
    User {
        /// Its CN.
        name: String,
        /// Its O entries.
        groups: Vec<String>,
    },
}

impl Caller {
    /// The user name, as `Status` messages quote it.
    pub fn name(&self) -> &str {
        match self {
            Caller::Anonymous => "system:anonymous",
            Caller::User { name, .. } => name,
        }
    }
}

/// One request, as RBAC sees it.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `delete`.
    pub verb: &'a str,
    /// API group (`""` for core).
    pub group: &'a str,
    /// Resource, with a subresource as `serviceaccounts/token`.
    pub resource: &'a str,
}

/// What the coordinator may read (and the one thing it may create), as in
/// `deploy/kubernetes/base`'s ClusterRole `probemesh-inventory`.
const COORDINATOR_RULES: &[(&str, &[&str], &[&str])] = &[
    (
        "",
        &["nodes", "pods", "services", "namespaces"],
        &["get", "list", "watch"],
    ),
    (
        "discovery.k8s.io",
        &["endpointslices"],
        &["get", "list", "watch"],
    ),
    (
        "scheduling.k8s.io",
        &["priorityclasses"],
        &["get", "list", "watch"],
    ),
    ("authentication.k8s.io", &["tokenreviews"], &["create"]),
];

/// Whether `caller` may do `access`.
pub fn allowed(caller: &Caller, access: Access<'_>) -> bool {
    match caller {
        Caller::Anonymous => false,
        Caller::User { groups, .. } if groups.iter().any(|g| g == MASTERS) => true,
        Caller::User { name, .. } if name == COORDINATOR_USER => {
            COORDINATOR_RULES.iter().any(|(group, resources, verbs)| {
                *group == access.group
                    && resources.contains(&access.resource)
                    && verbs.contains(&access.verb)
            })
        }
        Caller::User { .. } => false,
    }
}

/// The message of a `403 Forbidden`, worded as the real server words it.
pub fn forbidden_message(caller: &Caller, access: Access<'_>, namespace: Option<&str>) -> String {
    let scope = match namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_owned(),
    };
    format!(
        "{} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
        access.resource,
        caller.name(),
        access.verb,
        access.resource,
        access.group
    )
}

/// What a ServiceAccount token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount's name.
    pub service_account: String,
    /// The ServiceAccount's uid.
    pub service_account_uid: String,
    /// Who the token is for.
    pub audiences: Vec<String>,
    /// When it stops being valid.
    pub expires: SystemTime,
    /// The pod it is bound to: name and uid.
    pub pod: Option<(String, String)>,
    /// That pod's node: name and uid.
    pub node: Option<(String, String)>,
}

/// The tokens this server has minted.
#[derive(Debug, Default)]
pub struct Tokens {
    issued: Mutex<HashMap<String, TokenClaims>>,
}

impl Tokens {
    /// Mints a token for `claims` (any lifetime: tests mint expired ones).
    pub fn mint(&self, claims: TokenClaims) -> String {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!("lab-sa.{}", hex::encode(secret));
        self.issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.clone(), claims);
        token
    }

    /// The claims of a token this server minted, if it did.
    pub fn claims(&self, token: &str) -> Option<TokenClaims> {
        if token.len() > MAX_TOKEN {
            return None;
        }
        self.issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }
}

/// A TokenReview's `status` for `claims` (or an unknown token), reviewed
/// for `audiences` at `now`; `pod_uid_now` is the current uid of the bound
/// pod (`None` when it no longer exists).
pub fn review_status(
    claims: Option<&TokenClaims>,
    audiences: &[String],
    now: SystemTime,
    pod_uid_now: Option<&str>,
) -> Value {
    let refuse = |why: String| json!({"authenticated": false, "error": format!("[invalid bearer token, {why}]")});
    let Some(c) = claims else {
        return refuse("token not issued by this server".into());
    };
    if now >= c.expires {
        return refuse("square/go-jose/jwt: validation failed, token is expired (exp)".into());
    }
    let wanted: Vec<String> = if audiences.is_empty() {
        vec![API_AUDIENCE.to_owned()]
    } else {
        audiences.to_vec()
    };
    let matched: Vec<&String> = wanted.iter().filter(|a| c.audiences.contains(a)).collect();
    if matched.is_empty() {
        return refuse(format!(
            "token audiences {:?} is invalid for the target audiences {:?}",
            c.audiences, wanted
        ));
    }
    if let Some((pod, uid)) = &c.pod
        && pod_uid_now != Some(uid.as_str())
    {
        return refuse(format!(
            "pod \"{pod}\" (uid {uid}) the token is bound to no longer exists"
        ));
    }
    let mut extra = serde_json::Map::new();
    let mut put = |k: &str, v: &str| {
        extra.insert(format!("authentication.kubernetes.io/{k}"), json!([v]));
    };
    if let Some((pod, uid)) = &c.pod {
        put("pod-name", pod);
        put("pod-uid", uid);
    }
    if let Some((node, uid)) = &c.node {
        put("node-name", node);
        put("node-uid", uid);
    }
    json!({
        "authenticated": true,
        "user": {
            "username": format!("system:serviceaccount:{}:{}", c.namespace, c.service_account),
            "uid": c.service_account_uid,
            "groups": [
                "system:serviceaccounts",
                format!("system:serviceaccounts:{}", c.namespace),
                "system:authenticated",
            ],
            "extra": extra,
        },
        "audiences": matched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires_in: i64) -> TokenClaims {
        let now = SystemTime::now();
        TokenClaims {
            namespace: "probemesh".into(),
            service_account: "mesh-probe".into(),
            service_account_uid: "sa-uid".into(),
            audiences: vec!["probemesh".into()],
            expires: if expires_in >= 0 {
                now + Duration::from_secs(expires_in.unsigned_abs())
            } else {
                now - Duration::from_secs(expires_in.unsigned_abs())
            },
            pod: Some(("mesh-probe-x".into(), "pod-uid".into())),
            node: Some(("node-1".into(), "node-uid".into())),
        }
    }

    #[test]
    fn the_coordinator_reads_and_reviews_but_writes_nothing() {
        let coordinator = Caller::User {
            name: COORDINATOR_USER.into(),
            groups: vec![],
        };
        let read = Access {
            verb: "watch",
            group: "",
            resource: "pods",
        };
        let write = Access {
            verb: "update",
            group: "",
            resource: "pods",
        };
        let review = Access {
            verb: "create",
            group: "authentication.k8s.io",
            resource: "tokenreviews",
        };
        assert!(allowed(&coordinator, read));
        assert!(allowed(&coordinator, review));
        assert!(!allowed(&coordinator, write));
        assert!(!allowed(&Caller::Anonymous, read));
        let stranger = Caller::User {
            name: "mallory".into(),
            groups: vec![],
        };
        assert!(!allowed(&stranger, read));
        assert!(forbidden_message(&stranger, read, None).contains("User \"mallory\" cannot watch"));
    }

    #[test]
    fn a_review_checks_expiry_audience_and_the_bound_pod() {
        let now = SystemTime::now();
        let aud = vec!["probemesh".to_owned()];
        let good = claims(3600);
        let ok = review_status(Some(&good), &aud, now, Some("pod-uid"));
        assert_eq!(ok["authenticated"], true);
        assert_eq!(
            ok["user"]["extra"]["authentication.kubernetes.io/node-name"][0],
            "node-1"
        );
        let expired = review_status(Some(&claims(-1)), &aud, now, Some("pod-uid"));
        assert_eq!(expired["authenticated"], false);
        let other = review_status(Some(&good), &["vault".to_owned()], now, Some("pod-uid"));
        assert_eq!(other["authenticated"], false);
        let gone = review_status(Some(&good), &aud, now, None);
        assert_eq!(gone["authenticated"], false);
        assert_eq!(review_status(None, &aud, now, None)["authenticated"], false);
    }
}
