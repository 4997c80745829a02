//! The catalogue's names, verdicts and actions, without root.
use super::*;
use crate::rules::ProxyMode;

#[test]
fn names_round_trip_and_unknown_names_list_the_catalogue() {
    for f in ALL {
        assert_eq!(f.name().parse::<Fault>(), Ok(f));
        assert_eq!(f.info().name, f.name());
    }
    let err = "mtu".parse::<Fault>().expect_err("unknown").to_string();
    assert!(err.contains("unknown fault 'mtu'"), "{err}");
    assert!(
        err.contains("mtu-blackhole") && err.contains("packet-loss"),
        "{err}"
    );
    assert_eq!(names().len(), 14);
}

#[test]
fn every_fault_has_a_design_verdict_and_a_probe() {
    for f in ALL {
        let i = f.info();
        assert!(
            i.expect.cause.is_none_or(|c| c.class() == i.expect.class) && i.expect.class.is_fault(),
            "{f}: {}/{:?}",
            i.expect.class,
            i.expect.cause
        );
        assert!(!i.probe.from.is_empty() && !i.probe.to.is_empty());
        assert!(i.observe.starts_with("ip netns exec mesh-"), "{f}");
    }
    let mtu = Fault::MtuBlackhole.info();
    assert_eq!(
        mtu.probe_command(),
        "meshctl probe --from cloudvm-1 --to nodeport:30080 --size 1472"
    );
    assert_eq!(
        Fault::KubeProxyMissing.info().expect.cause,
        Some(Cause::DnsUnreachable)
    );
    assert_eq!(
        Fault::DualIp.info().expect.cause,
        Some(Cause::OverlaySourceMismatch)
    );
}

#[test]
fn every_fault_can_be_applied_and_cleared() {
    for f in ALL {
        for mode in [ProxyMode::Iptables, ProxyMode::Nftables] {
            assert!(!f.apply(mode).expect("apply").is_empty(), "{f}");
            assert!(!f.clear(mode).expect("clear").is_empty(), "{f}");
        }
    }
}

#[test]
fn kube_proxy_missing_deletes_the_nftables_table_in_nftables_mode() {
    let kp = Fault::KubeProxyMissing
        .apply(ProxyMode::Nftables)
        .expect("apply");
    assert!(kp.contains(&Action::Nft {
        netns: "mesh-node-3",
        script: "add table ip kube-proxy\ndelete table ip kube-proxy\n".to_owned()
    }));
    assert!(
        !kp.iter().any(|a| matches!(a, Action::Iptables { .. })),
        "iptables is not kube-proxy's in nftables mode: {kp:?}"
    );
    let cleared = Fault::KubeProxyMissing
        .clear(ProxyMode::Nftables)
        .expect("clear");
    assert!(
        cleared
            .iter()
            .any(|a| matches!(a, Action::Nft { netns: "mesh-node-3", script }
        if script.contains("add rule ip kube-proxy services ")))
    );
    let filtered = Fault::PortFiltered
        .apply(ProxyMode::Nftables)
        .expect("apply");
    assert!(
        filtered
            .iter()
            .any(|a| matches!(a, Action::Iptables { ruleset, .. }
        if ruleset.contains("--dport 30080") && !ruleset.contains("KUBE-")))
    );
}

#[test]
fn reference_incidents_use_the_real_mechanisms() {
    let mtu = Fault::MtuBlackhole
        .apply(ProxyMode::Iptables)
        .expect("apply");
    assert!(mtu.contains(&Action::Ip {
        netns: "mesh-node-2",
        commands: vec!["link set eth0 mtu 1440".to_owned()]
    }));
    assert!(mtu.contains(&Action::Ip {
        netns: "mesh-fabric",
        commands: vec!["route replace 198.18.0.12/32 dev br-nodes mtu 1440".to_owned()]
    }));
    assert!(mtu.iter().any(
        |a| matches!(a, Action::Iptables { netns: "mesh-fabric", ruleset }
        if ruleset.contains("--icmp-type 3/4"))
    ));
    let dual = Fault::DualIp.apply(ProxyMode::Iptables).expect("apply");
    assert!(
        matches!(&dual[0], Action::Ip { netns: "mesh-node-3", commands }
        if commands.iter().any(|c| c == "link set flannel.1 type vxlan local 198.18.0.23"))
    );
    let kp = Fault::KubeProxyMissing
        .apply(ProxyMode::Iptables)
        .expect("apply");
    assert!(kp.contains(&Action::Inventory {
        kube_proxy_pending: true,
        client_dns_wrong: false
    }));
    assert!(kp.iter().any(|a| matches!(a, Action::Iptables { netns: "mesh-node-3", ruleset } if !ruleset.contains("KUBE-"))));
    let cleared = Fault::KubeProxyMissing
        .clear(ProxyMode::Iptables)
        .expect("clear");
    assert!(cleared.iter().any(|a| matches!(a, Action::Iptables { netns: "mesh-node-3", ruleset } if ruleset.contains("KUBE-SVC-"))));
}
