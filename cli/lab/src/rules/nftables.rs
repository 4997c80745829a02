//! kube-proxy's nftables mode (`--proxy-mode nftables`): the `ip kube-proxy`
//! table rendered as the `nft -f` transaction kube-proxy itself sends
//! (pkg/proxy/nftables: `add table`, `add chain`, `add rule`, `add element`
//! lines), with its names: the `services` dispatch chain and its
//! `service-ips` / `service-nodeports` verdict maps, a
//! `service-HASH-NS/NAME/PROTO/PORT` chain per Service port that picks an
//! endpoint with `numgen random mod N vmap`, `external-…` chains for
//! NodePorts, `endpoint-HASH-…__IP/PORT` chains that `dnat to` the backend,
//! `mark-for-masquerade` / `masquerading`, and the `no-endpoint-services` /
//! `no-endpoint-nodeports` maps whose verdicts reject or drop.
//!
//! The lab's kube-proxy uses the node's registered address for NodePorts
//! (`--nodeport-addresses primary`, the `nodeport-ips` set) and knows no
//! ServiceCIDR, so `cluster-ips-check` rejects bad ports of known ClusterIPs
//! but drops no unallocated range. Pure: text out.

use probemesh_model::inventory::{Inventory, Service, ServicePort};

use super::{MASQ_MARK_BIT, chain_hash, proto_name};
use crate::topology::{CLUSTER_CIDR, LabNode};

/// kube-proxy's table name (in family `ip`).
pub const TABLE: &str = "kube-proxy";

/// `HASH-name`: the first 8 base32 characters of sha256(name), then the
/// name (`hashAndTruncate`; the lab's names never need truncating).
fn hashed(name: &str) -> String {
    let hash = chain_hash(name);
    format!("{}-{name}", &hash[..8])
}

/// The chains of one Service port.
struct PortChains {
    /// `NS/NAME:PORT`, as kube-proxy's element comments spell it.
    id: String,
    service: String,
    external: String,
    /// (chain, `ip:port`) per endpoint.
    endpoints: Vec<(String, String)>,
}

fn port_chains(service: &Service, port: &ServicePort) -> PortChains {
    let proto = proto_name(port.protocol);
    let base = format!(
        "{}/{}/{proto}/{}",
        service.namespace, service.name, port.name
    );
    let endpoints = service
        .endpoints
        .iter()
        .map(|e| {
            let chain = format!(
                "endpoint-{}",
                hashed(&format!("{base}__{}/{}", e.ip, port.target_port))
            );
            (chain, format!("{}:{}", e.ip, port.target_port))
        })
        .collect();
    PortChains {
        id: format!("{}/{}:{}", service.namespace, service.name, port.name),
        service: format!("service-{}", hashed(&base)),
        external: format!("external-{}", hashed(&base)),
        endpoints,
    }
}

/// The `nft -f` input that replaces `node`'s kube-proxy table with one for
/// every Service of `inventory` (`present`), or removes it (kube-proxy
/// never ran there). One transaction: `add` then `delete` the table, so it
/// holds whether or not the table existed, then build it anew.
pub fn kube_proxy_script(node: LabNode, inventory: &Inventory, present: bool) -> String {
    let t = format!("ip {TABLE}");
    let mut out = vec![format!("add table {t}"), format!("delete table {t}")];
    if present {
        out.extend(table(&t, node, inventory));
    }
    out.push(String::new());
    out.join("\n")
}

fn table(t: &str, node: LabNode, inventory: &Inventory) -> Vec<String> {
    let mark = format!("{MASQ_MARK_BIT:#06x}");
    let addr3 = "ipv4_addr . inet_proto . inet_service : verdict";
    let mut out = vec![
        format!("add table {t} {{ comment \"rules for kube-proxy\" ; }}"),
        format!("add set {t} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"),
        format!(
            "add set {t} nodeport-ips {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}"
        ),
        format!(
            "add map {t} firewall-ips {{ type {addr3} ; comment \"destinations that are subject to LoadBalancerSourceRanges\" ; }}"
        ),
        format!(
            "add map {t} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to service nodeports with no endpoints\" ; }}"
        ),
        format!(
            "add map {t} no-endpoint-services {{ type {addr3} ; comment \"vmap to drop or reject packets to services with no endpoints\" ; }}"
        ),
        format!(
            "add map {t} service-ips {{ type {addr3} ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}"
        ),
        format!(
            "add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }}"
        ),
    ];
    for (chain, base) in [
        (
            "filter-prerouting-pre-dnat",
            Some(("filter", "prerouting", -110)),
        ),
        ("filter-output-pre-dnat", Some(("filter", "output", -110))),
        ("filter-forward", Some(("filter", "forward", 0))),
        ("filter-input", Some(("filter", "input", 0))),
        ("filter-output", Some(("filter", "output", 0))),
        ("nat-output", Some(("nat", "output", -100))),
        ("nat-postrouting", Some(("nat", "postrouting", 100))),
        ("nat-prerouting", Some(("nat", "prerouting", -100))),
        ("cluster-ips-check", None),
        ("firewall-check", None),
        ("mark-for-masquerade", None),
        ("masquerading", None),
        ("nodeport-endpoints-check", None),
        ("services", None),
        ("service-endpoints-check", None),
    ] {
        out.push(match base {
            Some((kind, hook, priority)) => {
                format!("add chain {t} {chain} {{ type {kind} hook {hook} priority {priority} ; }}")
            }
            None => format!("add chain {t} {chain}"),
        });
    }
    out.push(format!(
        "add chain {t} reject-chain {{ comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }}"
    ));
    for rule in [
        "cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"".to_owned(),
        "filter-prerouting-pre-dnat ct state new jump firewall-check".to_owned(),
        "filter-forward ct state new jump service-endpoints-check".to_owned(),
        "filter-forward ct state new jump cluster-ips-check".to_owned(),
        "filter-input ct state new jump nodeport-endpoints-check".to_owned(),
        "filter-input ct state new jump service-endpoints-check".to_owned(),
        "filter-output ct state new jump service-endpoints-check".to_owned(),
        "filter-output-pre-dnat ct state new jump firewall-check".to_owned(),
        "filter-output ct state new jump cluster-ips-check".to_owned(),
        "firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips".to_owned(),
        format!("mark-for-masquerade mark set mark or {mark}"),
        format!("masquerading mark and {mark} == 0 return"),
        format!("masquerading mark set mark xor {mark}"),
        "masquerading masquerade fully-random".to_owned(),
        "nat-output jump services".to_owned(),
        "nat-postrouting jump masquerading".to_owned(),
        "nat-prerouting jump services".to_owned(),
        "nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports".to_owned(),
        "reject-chain reject".to_owned(),
        "services ip daddr . meta l4proto . th dport vmap @service-ips".to_owned(),
        "services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports".to_owned(),
        "service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services".to_owned(),
    ] {
        out.push(format!("add rule {t} {rule}"));
    }
    out.push(format!("add element {t} nodeport-ips {{ {} }}", node.ip()));
    for service in &inventory.services {
        for port in &service.ports {
            out.extend(service_port(t, service, port));
        }
    }
    out
}

/// One Service port's chains, rules and map elements.
fn service_port(t: &str, service: &Service, port: &ServicePort) -> Vec<String> {
    let pc = port_chains(service, port);
    let proto = proto_name(port.protocol);
    let cip = service.cluster_ip;
    let mut out = vec![format!("add element {t} cluster-ips {{ {cip} }}")];
    if pc.endpoints.is_empty() {
        out.push(format!(
            "add element {t} no-endpoint-services {{ {cip} . {proto} . {} comment \"{}\" : goto reject-chain }}",
            port.port, pc.id
        ));
        if let Some(node_port) = port.node_port {
            out.push(format!(
                "add element {t} no-endpoint-nodeports {{ {proto} . {node_port} comment \"{}\" : goto reject-chain }}",
                pc.id
            ));
        }
        return out;
    }
    let svc = &pc.service;
    // Chains first: a rule may only name a chain that exists.
    for (chain, _) in &pc.endpoints {
        out.push(format!("add chain {t} {chain}"));
    }
    out.push(format!("add chain {t} {svc}"));
    out.push(format!(
        "add rule {t} {svc} ip daddr {cip} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade"
    ));
    let branches: Vec<String> = pc
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, (chain, _))| format!("{i} : goto {chain}"))
        .collect();
    out.push(format!(
        "add rule {t} {svc} numgen random mod {} vmap {{ {} }}",
        pc.endpoints.len(),
        branches.join(" , ")
    ));
    if port.node_port.is_some() {
        let ext = &pc.external;
        out.push(format!("add chain {t} {ext}"));
        out.push(format!("add rule {t} {ext} jump mark-for-masquerade"));
        out.push(format!("add rule {t} {ext} goto {svc}"));
    }
    for (chain, endpoint) in &pc.endpoints {
        let ip = endpoint.split(':').next().unwrap_or_default();
        out.push(format!(
            "add rule {t} {chain} ip saddr {ip} jump mark-for-masquerade"
        ));
        out.push(format!(
            "add rule {t} {chain} meta l4proto {proto} dnat to {endpoint}"
        ));
    }
    out.push(format!(
        "add element {t} service-ips {{ {cip} . {proto} . {} : goto {svc} }}",
        port.port
    ));
    if let Some(node_port) = port.node_port {
        out.push(format!(
            "add element {t} service-nodeports {{ {proto} . {node_port} : goto {} }}",
            pc.external
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{NODE_2, inventory};

    #[test]
    fn names_follow_kube_proxy() {
        // kube-proxy's own test vectors (pkg/proxy/nftables/proxier_test.go).
        assert_eq!(hashed("ns1/svc1/tcp/p80"), "ULMVA6XW-ns1/svc1/tcp/p80");
        assert_eq!(
            hashed("ns1/svc1/tcp/p80__10.180.0.1/80"),
            "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
        );
    }

    #[test]
    fn the_table_dispatches_every_service() {
        let inv = inventory(false).expect("inventory");
        let s = kube_proxy_script(NODE_2, &inv, true);
        let web = hashed("default/web/tcp/http");
        for needle in [
            "add table ip kube-proxy\ndelete table ip kube-proxy\n",
            "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips",
            "add rule ip kube-proxy nat-prerouting jump services",
            "add element ip kube-proxy nodeport-ips { 198.18.0.12 }",
            &format!(
                "add element ip kube-proxy service-ips {{ 198.18.200.80 . tcp . 80 : goto service-{web} }}"
            ),
            &format!(
                "add element ip kube-proxy service-nodeports {{ tcp . 30080 : goto external-{web} }}"
            ),
            &format!("add rule ip kube-proxy external-{web} goto service-{web}"),
            "meta l4proto tcp dnat to 198.19.2.10:8080",
            "numgen random mod 1 vmap { 0 : goto endpoint-",
            "198.18.200.10 . udp . 53 : goto service-",
            "198.18.200.10 . tcp . 53 : goto service-",
            "add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000",
            "add rule ip kube-proxy masquerading masquerade fully-random",
        ] {
            assert!(s.contains(needle), "missing {needle}\n{s}");
        }
        assert_eq!(
            kube_proxy_script(NODE_2, &inv, false),
            "add table ip kube-proxy\ndelete table ip kube-proxy\n"
        );
    }

    #[test]
    fn a_service_without_endpoints_rejects() {
        let mut inv = inventory(false).expect("inventory");
        for s in &mut inv.services {
            s.endpoints.clear();
        }
        let s = kube_proxy_script(NODE_2, &inv, true);
        assert!(s.contains(
            "no-endpoint-services { 198.18.200.80 . tcp . 80 comment \"default/web:http\" : goto reject-chain }"
        ));
        assert!(s.contains("no-endpoint-nodeports { tcp . 30080"));
        assert!(!s.contains("dnat to"));
    }
}
