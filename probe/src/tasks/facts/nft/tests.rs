//! The nft parse and walk against `nft -j` output recorded in the lab
//! (`fixtures/record-nft.sh`), and against random and cut JSON.

use super::*;
use proptest::prelude::*;

const KUBE_PROXY: &str = include_str!("../fixtures/nft_kube_proxy.json");
const WRONG_PORT: &str = include_str!("../fixtures/nft_kube_proxy_wrong_port.json");
/// node-2's address, where the recorded table accepts NodePorts.
const NODE_2: &str = "198.18.0.12";

fn table() -> Table {
    parse(KUBE_PROXY).expect("the recorded table parses")
}

fn m(ip: &str, port: u16, local: &[&str]) -> NatMatch {
    NatMatch {
        ip: Some(ip.parse().expect("ip")),
        port: (port != 0).then_some(port),
        local_addrs: local.iter().map(|a| a.parse().expect("local")).collect(),
    }
}

fn paths(t: &Table, ip: &str, port: u16, local: &[&str]) -> Vec<String> {
    walk(t, &m(ip, port, local))
        .iter()
        .map(NatPath::render)
        .collect()
}

#[test]
fn parses_the_recorded_table() {
    let t = table();
    assert_eq!(t.label(), "ip kube-proxy");
    assert_eq!(
        t.chains.get("nat-prerouting"),
        Some(&Some(Hook {
            kind: "nat".into(),
            hook: "prerouting".into(),
            priority: -100
        }))
    );
    assert_eq!(t.chains.get(SERVICES_CHAIN), Some(&None));
    let service_ips = &t.sets["service-ips"];
    assert_eq!(service_ips.elems.len(), 3);
    assert!(service_ips.elems.contains(&(
        Expr::Concat(vec![
            Expr::Str("198.18.200.80".into()),
            Expr::Str("tcp".into()),
            Expr::Num(80)
        ]),
        Some(Verdict::Goto(
            "service-SUSTUHLJ-default/web/tcp/http".into()
        ))
    )));
    assert_eq!(
        t.sets["nodeport-ips"].elems,
        [(Expr::Str(NODE_2.into()), None)]
    );
    let dnat = t
        .rules
        .iter()
        .find(|r| r.stmts.iter().any(|s| matches!(s, Stmt::Dnat(..))))
        .expect("a dnat rule");
    assert_eq!(
        render(dnat),
        "meta l4proto tcp dnat to 198.19.2.10:8080",
        "{dnat:?}"
    );
    // The mark arithmetic is not read: kept, not failed.
    assert!(
        t.rules
            .iter()
            .flat_map(|r| &r.stmts)
            .any(|s| matches!(s, Stmt::Unrecognized(k) if k == "mangle"))
    );
}

#[test]
fn a_cluster_ip_goes_through_service_ips_to_its_endpoint() {
    assert_eq!(
        paths(&table(), "198.18.200.80", 80, &[]),
        [
            "services -> @service-ips -> service-SUSTUHLJ-default/web/tcp/http -> endpoint-SI5GBOEJ-default/web/tcp/http__198.19.2.10/8080 -> DNAT 198.19.2.10:8080"
        ]
    );
    let dns = walk(&table(), &m("198.18.200.10", 53, &[]));
    assert_eq!(dns.len(), 2, "udp and tcp: {dns:?}");
    assert!(
        dns.iter()
            .all(|p| p.end == NatEnd::Dnat("198.19.1.53:53".into())
                && p.backend == Backend::Nftables
                && p.table == "ip kube-proxy")
    );
    // From outside the cluster network the Service chain marks it.
    assert!(dns.iter().all(|p| p.masquerade));
}

#[test]
fn a_node_port_goes_through_service_nodeports_and_the_external_chain() {
    let t = table();
    let walked = walk(&t, &m(NODE_2, 30080, &[NODE_2]));
    assert_eq!(
        walked.iter().map(NatPath::render).collect::<Vec<_>>(),
        [
            "services -> @service-nodeports -> external-SUSTUHLJ-default/web/tcp/http -> service-SUSTUHLJ-default/web/tcp/http -> endpoint-SI5GBOEJ-default/web/tcp/http__198.19.2.10/8080 -> DNAT 198.19.2.10:8080"
        ]
    );
    assert!(walked[0].masquerade);
    // Another node's address is no NodePort address here.
    assert!(paths(&t, "198.18.0.11", 30080, &[NODE_2]).is_empty());
}

#[test]
fn a_wrong_port_of_a_cluster_ip_is_rejected() {
    assert_eq!(
        paths(&table(), "198.18.200.80", 81, &[]),
        ["cluster-ips-check -> REJECT"]
    );
    assert!(paths(&table(), "198.18.201.1", 80, &[]).is_empty());
}

#[test]
fn a_stale_dnat_is_walked_to_where_it_goes() {
    let t = parse(WRONG_PORT).expect("parses");
    let walked = paths(&t, "198.18.200.80", 80, &[]);
    assert_eq!(walked.len(), 1);
    assert!(
        walked[0].ends_with("-> DNAT 198.19.2.10:8081"),
        "{walked:?}"
    );
}

/// The recorded table with web's ClusterIP element moved to
/// `no-endpoint-services`, as kube-proxy writes a Service without endpoints.
fn without_endpoints() -> Table {
    let mut t = table();
    let key = Expr::Concat(vec![
        Expr::Str("198.18.200.80".into()),
        Expr::Str("tcp".into()),
        Expr::Num(80),
    ]);
    t.sets
        .get_mut("service-ips")
        .expect("map")
        .elems
        .retain(|(k, _)| *k != key);
    t.sets
        .get_mut("no-endpoint-services")
        .expect("map")
        .elems
        .push((key, Some(Verdict::Goto("reject-chain".into()))));
    t
}

#[test]
fn a_service_without_endpoints_rejects_in_the_filter_checks() {
    assert_eq!(
        paths(&without_endpoints(), "198.18.200.80", 80, &[]),
        [
            "service-endpoints-check -> @no-endpoint-services -> reject-chain -> REJECT",
            "cluster-ips-check -> REJECT"
        ]
    );
}

#[test]
fn no_table_no_paths() {
    let empty = parse(r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}]}"#).expect("parses");
    assert!(walk(&empty, &m("198.18.200.80", 80, &[])).is_empty());
    assert!(parse("Error: No such file or directory").is_err());
    assert!(parse("{}").is_err());
}

#[test]
fn unknown_kinds_are_kept_and_walked_past() {
    let doc = r#"{"nftables": [
        {"table": {"family": "ip", "name": "kube-proxy"}},
        {"chain": {"name": "services"}},
        {"chain": {"name": "service-X-ns/a/tcp/p"}},
        {"rule": {"chain": "services", "expr": [
            {"secmark": "x"}, {"match": {"op": "==", "left": {"osf": {"key": "name"}}, "right": "Linux"}},
            {"goto": {"target": "service-X-ns/a/tcp/p"}}]}},
        {"rule": {"chain": "service-X-ns/a/tcp/p", "expr": [{"dnat": {"addr": "10.0.0.1", "port": 80}}]}},
        {"flowtable": {"name": "f"}}
    ]}"#;
    let t = parse(doc).expect("parses");
    assert_eq!(
        t.rules[0].stmts[..2],
        [
            Stmt::Unrecognized("secmark".into()),
            Stmt::Match(
                Expr::Unrecognized("osf".into()),
                Op::Eq,
                Expr::Str("Linux".into())
            )
        ]
    );
    // The unjudged match may hold: the way goes on, and is not the only one.
    assert_eq!(
        paths(&t, "198.18.200.80", 80, &[]),
        ["services -> service-X-ns/a/tcp/p -> DNAT 10.0.0.1:80"]
    );
}

#[test]
fn cycles_and_depth_are_bounded() {
    let doc = r#"{"nftables": [
        {"chain": {"name": "services"}}, {"chain": {"name": "a"}},
        {"rule": {"chain": "services", "expr": [{"jump": {"target": "a"}}]}},
        {"rule": {"chain": "a", "expr": [{"jump": {"target": "services"}}, {"jump": {"target": "a"}}]}}
    ]}"#;
    let t = parse(doc).expect("parses");
    assert!(walk(&t, &m("198.18.200.80", 80, &[])).is_empty());
}

proptest! {
    #[test]
    fn any_text_parses_or_fails_cleanly(text in ".{0,400}") {
        if let Ok(t) = parse(&text) {
            let _ = walk(&t, &m("198.18.200.80", 80, &[]));
        }
    }

    #[test]
    fn cut_recordings_parse_or_fail_cleanly(cut in 0..KUBE_PROXY.len()) {
        let text = KUBE_PROXY.get(..cut).unwrap_or_default();
        if let Ok(t) = parse(text) {
            let _ = walk(&t, &m(NODE_2, 30080, &[NODE_2]));
        }
    }

    #[test]
    fn mangled_recordings_walk_without_panic(
        at in 0..KUBE_PROXY.len(),
        with in prop::sample::select(vec!["", "{", "}", "[", "]", "\"", "0", "-1", "null", "{\"x\":1}", "\"@service-ips\""]),
    ) {
        let mut text = KUBE_PROXY.to_owned();
        if text.is_char_boundary(at) {
            text.insert_str(at, with);
        }
        if let Ok(t) = parse(&text) {
            for (ip, port) in [("198.18.200.80", 80), (NODE_2, 30080), ("198.18.200.10", 53)] {
                let _ = walk(&t, &m(ip, port, &[NODE_2]));
            }
        }
    }

    #[test]
    fn random_structures_walk_without_panic(doc in json_doc()) {
        if let Ok(t) = parse(&doc) {
            let _ = walk(&t, &m("198.18.200.80", 80, &["198.18.200.80"]));
            let _ = t.rules.iter().map(render).count();
        }
    }
}

/// Random nft-shaped documents: known and unknown kinds, nested.
fn json_doc() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::json!("services")),
        Just(serde_json::json!("@service-ips")),
        Just(serde_json::json!("198.18.200.80")),
        Just(serde_json::json!(80)),
        Just(serde_json::json!(null)),
        Just(serde_json::json!({"payload": {"protocol": "ip", "field": "daddr"}})),
        Just(serde_json::json!({"meta": {"key": "l4proto"}})),
        Just(serde_json::json!({"goto": {"target": "services"}})),
        Just(serde_json::json!({"numgen": {"mode": "random", "mod": 2}})),
    ];
    let value = leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            (
                prop::sample::select(vec![
                    "concat", "set", "vmap", "match", "jump", "dnat", "prefix", "range", "elem",
                    "x"
                ]),
                inner
            )
                .prop_map(|(k, v)| serde_json::json!({ k: v })),
        ]
    });
    prop::collection::vec(
        (
            prop::sample::select(vec!["chain", "rule", "set", "map", "table", "other"]),
            prop::collection::vec(value, 0..4),
        ),
        0..8,
    )
    .prop_map(|objects| {
        let items: Vec<serde_json::Value> = objects
            .into_iter()
            .map(|(kind, exprs)| {
                serde_json::json!({ kind: {
                    "family": "ip", "table": "kube-proxy", "name": "services",
                    "chain": "services", "expr": exprs.clone(), "elem": exprs
                }})
            })
            .collect();
        serde_json::json!({ "nftables": items }).to_string()
    })
}
