//! kubectl's habit for names without a namespace: `pod:web-0` and
//! `svc:web` (also after `PROBE@`) mean the namespace given with
//! `-n/--namespace`, else the current kubeconfig context's namespace
//! (`default` when the context names none), as `kubectl get pod web-0`
//! would. Without either, the spec is sent as written and the coordinator
//! asks for NAMESPACE/NAME.

use probemesh_proto::pb;
use probemesh_proto::pb::run_request::Kind;

/// The namespace of the current kubeconfig context ($KUBECONFIG or
/// ~/.kube/config), if there is a kubeconfig with a current context.
pub fn current() -> Option<String> {
    let config = kube::config::Kubeconfig::read().ok()?;
    let name = config.current_context.as_deref()?;
    let context = config.contexts.iter().find(|c| c.name == name)?;
    Some(
        context
            .context
            .as_ref()
            .and_then(|c| c.namespace.clone())
            .unwrap_or_else(|| "default".to_owned()),
    )
}

/// `spec` with `namespace` added to a namespace-less `pod:` or `svc:`
/// name; `None` when it needs none.
pub fn qualify(spec: &str, namespace: &str) -> Option<String> {
    let (probe, target) = match spec.split_once('@') {
        Some((probe, rest)) => (Some(probe), rest),
        None => (None, spec),
    };
    let (kind, rest) = target
        .strip_prefix("pod:")
        .map(|r| ("pod:", r))
        .or_else(|| target.strip_prefix("svc:").map(|r| ("svc:", r)))?;
    if rest.contains('/') || rest.is_empty() {
        return None;
    }
    let qualified = format!("{kind}{namespace}/{rest}");
    Some(match probe {
        Some(p) => format!("{p}@{qualified}"),
        None => qualified,
    })
}

/// Whether any spec of `request` lacks a namespace.
pub fn needed(request: &pb::RunRequest) -> bool {
    specs(&mut request.clone())
        .into_iter()
        .any(|s| qualify(s, "x").is_some())
}

/// Adds `namespace` to every namespace-less pod or Service name in
/// `request`: the source and the target, whatever the task.
pub fn apply(request: &mut pb::RunRequest, namespace: &str) {
    for spec in specs(request) {
        if let Some(q) = qualify(spec, namespace) {
            *spec = q;
        }
    }
}

fn specs(request: &mut pb::RunRequest) -> Vec<&mut String> {
    let mut out = vec![&mut request.from];
    match request.kind.as_mut() {
        Some(Kind::Probe(p)) => out.push(&mut p.to),
        Some(Kind::Ping(p)) => out.push(&mut p.target),
        Some(Kind::Pmtu(p)) => out.push(&mut p.target),
        Some(Kind::Trace(p)) => out.push(&mut p.target),
        Some(Kind::Tcping(p)) => out.push(&mut p.host),
        Some(Kind::TcpTransfer(p)) => out.push(&mut p.host),
        Some(Kind::UdpEcho(p)) => out.push(&mut p.host),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_without_a_namespace_get_one() {
        assert_eq!(
            qualify("pod:web-0", "shop").as_deref(),
            Some("pod:shop/web-0")
        );
        assert_eq!(
            qualify("svc:web:80", "shop").as_deref(),
            Some("svc:shop/web:80")
        );
        assert_eq!(
            qualify("node-3@pod:client-3", "shop").as_deref(),
            Some("node-3@pod:shop/client-3")
        );
        assert_eq!(qualify("pod:default/web-0", "shop"), None);
        assert_eq!(qualify("node-3", "shop"), None);
        assert_eq!(qualify("nodeport:30080", "shop"), None);
        assert_eq!(qualify("pod:", "shop"), None);
    }

    #[test]
    fn a_request_is_qualified_in_its_source_and_target() {
        let mut request = pb::RunRequest {
            from: "node-3@pod:client-3".into(),
            kind: Some(Kind::Probe(pb::DiagnosisRequest {
                to: "svc:web:80".into(),
                ..Default::default()
            })),
        };
        assert!(needed(&request));
        apply(&mut request, "shop");
        assert_eq!(request.from, "node-3@pod:shop/client-3");
        assert!(matches!(&request.kind, Some(Kind::Probe(p)) if p.to == "svc:shop/web:80"));
        assert!(!needed(&request));
    }
}
