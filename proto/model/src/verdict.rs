//! The verdict classes of DESIGN §1 and the causes each tells apart: stable
//! API strings (`meshctl probe -o json`, the lab's fault catalogue, metric
//! labels).

/// Every class with its causes, in DESIGN §1's order.
pub const CLASSES: &[(&str, &[&str])] = &[
    ("ok", &[]),
    (
        "network_unreachable",
        &["firewall", "routing", "overload", "link"],
    ),
    (
        "port_unreachable",
        &[
            "refused",
            "loopback_only",
            "filtered",
            "port_exhaustion",
            "backlog_overflow",
        ],
    ),
    (
        "dns_failure",
        &["pod_dns_config", "dns_service_down", "dns_unreachable"],
    ),
    ("mtu_blackhole", &[]),
    (
        "cni_failure",
        &[
            "kube_proxy_rules_missing",
            "pod_cidr_exhausted",
            "overlay_source_mismatch",
        ],
    ),
    ("degraded", &["loss", "latency"]),
    ("inconclusive", &[]),
];

/// Whether `class` is a DESIGN §1 class and `cause` one of its causes
/// (`""` where the class has none).
pub fn is_known(class: &str, cause: &str) -> bool {
    CLASSES
        .iter()
        .any(|(c, causes)| *c == class && (cause.is_empty() || causes.contains(&cause)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_causes_are_checked_together() {
        assert!(is_known("mtu_blackhole", ""));
        assert!(is_known("dns_failure", "dns_unreachable"));
        assert!(!is_known("dns_failure", "loss"));
        assert!(!is_known("timeout", ""));
    }
}
