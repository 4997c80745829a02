//! Node probes enroll themselves: a probe of the DaemonSet presents its
//! projected ServiceAccount token; the coordinator asks the API server to
//! review it (TokenReview, for the probemesh audience), requires the probe
//! DaemonSet's ServiceAccount and a token bound to a pod, reads that pod and
//! its `spec.nodeName`, and names the certificate after exactly that node.
//! A stolen token therefore names only its own pod's node, and stops working
//! when it expires or the pod is deleted. (The scheme is SPIRE's `k8s_psat`
//! node attestor.)

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::state::NodeEnrollment;

/// Largest token accepted (projected tokens are about 1 KiB).
pub const MAX_TOKEN: usize = 8 << 10;

const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";

/// Why a node enrollment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The API server did not authenticate the token.
    #[error("the token was not accepted by the Kubernetes API: {0}")]
    NotAuthenticated(String),
    /// The token belongs to another ServiceAccount.
    #[error("the token is {got}'s, not the probe DaemonSet's ({want})")]
    WrongAccount {
        /// Whose it is.
        got: String,
        /// Whose it must be.
        want: String,
    },
    /// The token is not bound to a pod (a legacy Secret token).
    #[error("the token is not bound to a pod: mount a projected ServiceAccount token")]
    NotBound,
    /// The pod is on another node than the probe asks to be named.
    #[error("pod {pod} runs on node '{actual}', not '{asked}'")]
    OtherNode {
        /// The token's pod.
        pod: String,
        /// Where it runs.
        actual: String,
        /// The name asked for.
        asked: String,
    },
    /// The pod is gone, replaced or not scheduled.
    #[error("pod {0}")]
    Pod(String),
    /// The token is too large to be one.
    #[error("the token is larger than {MAX_TOKEN} bytes")]
    TooLarge,
}

/// Whether the API could be asked at all (as opposed to a refusal).
#[derive(Debug, thiserror::Error)]
#[error("Kubernetes API: {0}")]
pub struct ApiFailed(pub String);

/// Checks `token` for node `node`: `Ok(Ok(()))` when it may enroll under
/// that name, `Ok(Err(why))` when it may not, `Err` when the API could not
/// be asked.
pub async fn authorize(
    client: &Client,
    policy: &NodeEnrollment,
    node: &str,
    token: &str,
) -> Result<Result<(), Refused>, ApiFailed> {
    if token.len() > MAX_TOKEN {
        return Ok(Err(Refused::TooLarge));
    }
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(vec![policy.audience.clone()]),
        },
        ..TokenReview::default()
    };
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| ApiFailed(e.to_string()))?;
    let status = reviewed.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Ok(Err(Refused::NotAuthenticated(
            status
                .error
                .unwrap_or_else(|| "not authenticated".to_owned()),
        )));
    }
    if !status
        .audiences
        .as_ref()
        .is_some_and(|a| a.contains(&policy.audience))
    {
        return Ok(Err(Refused::NotAuthenticated(format!(
            "the token is not for the audience '{}'",
            policy.audience
        ))));
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    if username != policy.username() {
        return Ok(Err(Refused::WrongAccount {
            got: username,
            want: policy.username(),
        }));
    }
    let extra = user.extra.unwrap_or_default();
    let first = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
    let (Some(pod_name), Some(pod_uid)) = (first(EXTRA_POD_NAME), first(EXTRA_POD_UID)) else {
        return Ok(Err(Refused::NotBound));
    };
    let id = format!("{}/{pod_name}", policy.namespace);
    let pod = match Api::<Pod>::namespaced(client.clone(), &policy.namespace)
        .get_opt(&pod_name)
        .await
        .map_err(|e| ApiFailed(e.to_string()))?
    {
        Some(p) => p,
        None => return Ok(Err(Refused::Pod(format!("{id} no longer exists")))),
    };
    if pod.metadata.uid.as_deref() != Some(pod_uid.as_str()) {
        return Ok(Err(Refused::Pod(format!(
            "{id} was replaced since the token was issued"
        ))));
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(Err(Refused::Pod(format!("{id} is being deleted"))));
    }
    let actual = pod
        .spec
        .and_then(|s| s.node_name)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Refused::Pod(format!("{id} is not scheduled on any node")));
    let actual = match actual {
        Ok(n) => n,
        Err(refused) => return Ok(Err(refused)),
    };
    let claimed = first(EXTRA_NODE_NAME);
    if actual != node || claimed.as_deref().is_some_and(|c| c != actual) {
        return Ok(Err(Refused::OtherNode {
            pod: id,
            actual,
            asked: node.to_owned(),
        }));
    }
    Ok(Ok(()))
}
