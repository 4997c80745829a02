//! Rules as a table: every rule names a DESIGN class and what it needs;
//! all checks passing is `ok`, nothing from the source is `inconclusive`.

use super::fixtures::*;
use super::*;

#[test]
fn every_rule_names_a_design_class_and_what_it_needs() {
    for r in RULES {
        assert!(
            r.cause.is_none_or(|c| c.class() == r.class),
            "{}: {}/{:?}",
            r.name,
            r.class,
            r.cause
        );
        assert!(
            r.name.parse::<Class>().is_err(),
            "{} reads as a class",
            r.name
        );
        assert!(!r.needs.is_empty(), "{}", r.name);
    }
}

#[tokio::test]
async fn a_healthy_path_is_ok() {
    let v = Case::new("cloudvm-1", "nodeport:node-2:30080")
        .with(icmp("cloudvm-1", "198.18.0.12", 20, 20))
        .with(tcp("cloudvm-1", "198.18.0.12:30080", 3, 0, 0))
        .with(transfer("cloudvm-1", "198.18.0.12:30080", true, true))
        .with(reverse("node-2", "198.18.0.14", 20, 20))
        .verdict();
    assert_eq!(class(&v), ("ok", ""), "{v:?}");
    assert!(v.summary.contains("every check passed"));
}

#[tokio::test]
async fn nothing_from_the_source_is_inconclusive() {
    let mut c = Case::new("cloudvm-1", "probe:node-2");
    c.checks.push(summarize(
        &PlannedCheck::example(
            CheckName::Icmp,
            "cloudvm-1",
            "198.18.0.12",
            Direction::Forward,
        ),
        Some(crate::execute::task_error(
            pb::task_error::Kind::ProbeFailure,
            "probe 'cloudvm-1' is not connected".into(),
        )),
    ));
    let v = c.verdict();
    assert_eq!(v.class.as_str(), "inconclusive");
    assert!(v.missing.iter().any(|m| m.contains("cloudvm-1")), "{v:?}");
}

#[tokio::test]
async fn a_healthy_path_is_traced_through_its_rewrites() {
    use crate::diagnose::packets::{Change, Rewrite};
    use std::net::SocketAddrV4;

    let pod = observer("node-2", "pod:default/web-0/eth0");
    let mut c = Case::new("cloudvm-1", "nodeport:node-2:30080")
        .with(icmp("cloudvm-1", "198.18.0.12", 20, 20))
        .with(tcp("cloudvm-1", "198.18.0.12:30080", 3, 0, 0));
    c.packets = Some(Packets {
        fates: vec![Fate {
            answer: Some(Answer {
                reset: false,
                at: observer("cloudvm-1", "eth0"),
            }),
            lost_after: None,
            rewrites: vec![Rewrite {
                at: pod.clone(),
                change: Change::Dnat {
                    to: SocketAddrV4::new(Ipv4Addr::new(198, 19, 2, 10), 8080),
                },
            }],
            ..fate(
                Ipv4Addr::new(198, 18, 100, 10),
                Ipv4Addr::new(198, 18, 0, 12),
                30080,
                vec![
                    observer("cloudvm-1", "eth0"),
                    observer("node-2", "eth0"),
                    pod.clone(),
                ],
            )
        }],
        ..Default::default()
    });
    let v = c.verdict();
    assert_eq!(class(&v), ("ok", ""), "{v:#?}");
    assert_eq!(
        steps(&v),
        [
            (Leg::Forward, "cloudvm-1/eth0", Action::Sent),
            (Leg::Forward, "node-2/eth0", Action::Forwarded),
            (Leg::Forward, "node-2/pod:default/web-0/eth0", Action::Nated),
            (
                Leg::Forward,
                "node-2/pod:default/web-0/eth0",
                Action::Delivered
            ),
            (Leg::Return, "cloudvm-1/eth0", Action::Answered),
        ],
        "{:#?}",
        v.path
    );
    assert!(
        v.path[0]
            .detail
            .contains("tcp 198.18.100.10 > 198.18.0.12:30080 [S]")
    );
    assert_eq!(
        v.path[2].detail,
        "destination rewritten to 198.19.2.10:8080"
    );
    assert!(v.path.iter().all(|s| s.resource.is_none()));
}

#[tokio::test]
async fn the_path_follows_the_simplest_failing_check_to_its_destinations_own_observers() {
    // The transfer to node-1 fails too (its backend sits behind node-2),
    // but the large echo to node-2 is the simpler witness; node-2 is a
    // host, so web-0's own capture is not where the echo was due.
    let mut c = Case::new("cloudvm-1", "nodeport:30080")
        .with(icmp("cloudvm-1", "198.18.0.11", 20, 20))
        .with(transfer("cloudvm-1", "198.18.0.11:30080", true, false))
        .with(icmp_sized(
            CheckName::IcmpLarge,
            "cloudvm-1",
            "198.18.0.12",
            5,
            0,
            0,
        ));
    c.packets = Some(Packets {
        fates: vec![
            Fate {
                wire_bytes: 7056,
                ..fate(
                    Ipv4Addr::new(198, 18, 100, 10),
                    Ipv4Addr::new(198, 18, 0, 11),
                    30080,
                    vec![observer("cloudvm-1", "eth0")],
                )
            },
            Fate {
                wire_bytes: 1514,
                ..fate(
                    Ipv4Addr::new(198, 18, 100, 10),
                    Ipv4Addr::new(198, 18, 0, 12),
                    0,
                    vec![observer("cloudvm-1", "eth0")],
                )
            },
        ],
        captured: vec![
            observer("cloudvm-1", "eth0"),
            observer("node-2", "eth0"),
            observer("node-2", "pod:default/web-0/eth0"),
        ],
        ..Default::default()
    });
    let v = c.verdict();
    assert_eq!(
        steps(&v),
        [
            (Leg::Forward, "cloudvm-1/eth0", Action::Sent),
            (
                Leg::Forward,
                "between cloudvm-1/eth0 and node-2/eth0",
                Action::Dropped
            ),
        ],
        "{:#?}",
        v.path
    );
    assert!(v.path[0].detail.starts_with("icmp echo"), "{:#?}", v.path);
}
