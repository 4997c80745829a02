//! Plans for the lab's paths: which checks, in which direction, skipped
//! with which reason; bad options refused; follow-ups only when called for.

use probemesh_model::check::Status;

use super::*;
use crate::diagnose::model::Check;
use crate::diagnose::testing::lab_inventory;

fn lab_plan(from: &str, to: &str, size: u32) -> DiagnosisPlan {
    let reg = crate::registry::attached(&["node-1", "node-2", "node-3", "cloudvm-1"]);
    plan(
        from,
        &pb::DiagnosisRequest {
            to: to.into(),
            size,
            ..Default::default()
        },
        &reg,
        Some(&lab_inventory()),
        PayloadPolicy::default(),
        7443,
    )
    .unwrap()
}

fn names(p: &DiagnosisPlan) -> Vec<(String, String, String, bool)> {
    p.checks
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.from.clone(),
                c.to.clone(),
                c.request.is_some(),
            )
        })
        .collect()
}

#[tokio::test]
async fn nodeport_from_outside_tests_every_node_both_ways_and_skips_pods() {
    let p = lab_plan("cloudvm-1", "nodeport:30080", 1472);
    let checks = names(&p);
    for node in ["198.18.0.11", "198.18.0.12", "198.18.0.13"] {
        for name in ["icmp", "icmp_large"] {
            assert!(
                checks.contains(&(name.into(), "cloudvm-1".into(), node.into(), true)),
                "{name} {node}: {checks:?}"
            );
        }
        assert!(checks.contains(&(
            "tcp_connect".into(),
            "cloudvm-1".into(),
            format!("{node}:30080"),
            true
        )));
    }
    // Back from every node to cloudvm-1 (198.18.0.14 in the test registry).
    for node in ["node-1", "node-2", "node-3"] {
        assert!(checks.contains(&("icmp".into(), node.into(), "198.18.0.14".into(), true)));
    }
    // The backend pod is not routable from outside: skipped, with why.
    let pod = p
        .checks
        .iter()
        .find(|c| c.to.starts_with("198.19.2.10"))
        .unwrap();
    assert!(pod.request.is_none() && pod.note.contains("inside the cluster"));
    // What listens there is asked inside the pod all the same: it tells a
    // refused port from a reset made on the way.
    assert!(
        checks.contains(&(
            "listener".into(),
            "node-2@pod:default/web-0".into(),
            ":8080".into(),
            true
        )),
        "{checks:?}"
    );
    let capture = p.capture.unwrap();
    let probes: Vec<&str> = capture.observers.iter().map(|o| o.probe.as_str()).collect();
    assert_eq!(
        probes,
        ["cloudvm-1", "node-1", "node-2", "node-2", "node-3"]
    );
    let pods: Vec<&str> = capture
        .observers
        .iter()
        .filter_map(|o| o.pod.as_deref())
        .collect();
    assert_eq!(pods, ["default/web-0"], "the backend pod's own capture");
    assert!(capture.template.filter_expr.contains("not port 7443"));
    assert!(capture.template.filter_expr.contains("host 198.18.0.12"));
}

#[tokio::test]
async fn service_from_a_node_pings_backends_and_checks_listeners_and_nat() {
    let p = lab_plan("node-3", "svc:default/web:80", 0);
    let by_name = |n: CheckName| p.checks.iter().filter(move |c| c.name == n);
    let icmp: Vec<_> = by_name(CheckName::Icmp).collect();
    assert!(
        icmp.iter()
            .any(|c| c.to == "198.18.200.80" && c.request.is_none())
    );
    assert!(
        icmp.iter()
            .any(|c| c.to == "198.19.2.10" && c.request.is_some())
    );
    assert!(
        icmp.iter()
            .any(|c| c.to == "198.18.0.12" && c.note.contains("node to node")),
        "{icmp:?}"
    );
    assert!(by_name(CheckName::IcmpLarge).next().is_none());
    let listener = by_name(CheckName::Listener).next().unwrap();
    assert_eq!(listener.from, "node-2@pod:default/web-0");
    let facts: Vec<_> = by_name(CheckName::NodeFacts)
        .map(|c| c.from.as_str())
        .collect();
    assert_eq!(facts, ["node-3", "node-2"]);
    let Some(Kind::NodeFacts(f)) = by_name(CheckName::NodeFacts)
        .next()
        .and_then(|c| c.request.as_ref()?.kind.clone())
    else {
        panic!("node facts request")
    };
    assert_eq!((f.match_ip.as_str(), f.match_port), ("198.18.200.80", 80));
    // The kernel's routes to the target and back to the source, and the
    // drop counters while the echoes run.
    for ip in ["198.18.200.80", "198.19.2.10", "198.18.0.13"] {
        assert!(f.route_lookups.iter().any(|l| l == ip), "{ip}: {f:?}");
    }
    // The counters are watched until the last echo is due to leave: the
    // forward echoes to the pod wait for its first reply back (paced),
    // then send 20 at 20 ms.
    let last_send = crate::diagnose::timing::pace_wait(Duration::ZERO) + ICMP_INTERVAL * 19;
    assert_eq!(
        Duration::from_micros(f.counter_window_us),
        last_send + COUNTER_SLACK
    );
}

#[test]
fn the_counter_window_covers_every_send_after_its_pace_and_the_slowest_clock() {
    let mut reg = crate::registry::attached(&["node-1", "node-2"]);
    let check = |from: &str, kind: Kind| {
        PlannedCheck::run(
            CheckName::Icmp,
            from,
            "198.18.0.12",
            Direction::Forward,
            kind,
        )
    };
    let ping = |count| {
        Kind::Ping(pb::PingTask {
            count,
            interval_us: 20_000,
            ..Default::default()
        })
    };
    let connects = Kind::Tcping(pb::TcpingTask {
        count: 3,
        interval_us: 100_000,
        ..Default::default()
    });
    let unpaced = [check("node-1", ping(20)), check("node-1", connects.clone())];
    assert_eq!(
        wave::counter_window(&unpaced, &reg),
        Duration::from_millis(380) + COUNTER_SLACK
    );
    // A paced check may wait out its pace before its first send; a
    // skipped one sends nothing.
    let paced = [
        check("node-1", ping(20)),
        check("node-2", connects).paced_by(&crate::diagnose::target::Endpoint {
            host: "198.18.0.12".into(),
            port: None,
            role: crate::diagnose::target::Role::Node,
            node: Some("node-2".into()),
            probe: Some("node-2".into()),
            reason: String::new(),
        }),
        PlannedCheck::skip(CheckName::Icmp, "node-1", "198.18.0.13", "no"),
    ];
    let pace = crate::diagnose::timing::pace_wait(Duration::ZERO);
    assert_eq!(
        wave::counter_window(&paced, &reg),
        pace + Duration::from_millis(200) + COUNTER_SLACK
    );
    // A probe behind a slow link: its clock round trip stretches both.
    let conn = reg.local_link("node-2").expect("attached").conn;
    let exchange = crate::clock::Exchange {
        path: crate::clock::ClockPath::Udp,
        t1_ns: 0,
        t2_ns: 25_000_000,
        t3_ns: 25_000_000,
        t4_ns: 50_000_000,
    };
    reg.observe_clock("node-2", conn, exchange)
        .expect("a sample");
    let slow = Duration::from_millis(50);
    assert_eq!(
        wave::counter_window(&paced, &reg),
        crate::diagnose::timing::pace_wait(slow)
            + Duration::from_millis(200)
            + COUNTER_SLACK
            + slow * 2
    );
}

#[tokio::test]
async fn names_from_a_pod_ask_cluster_dns_and_the_upstream() {
    let p = lab_plan(
        "node-3@pod:default/client-3",
        "dns:web.default.svc.cluster.local",
        0,
    );
    let dns: Vec<_> = p
        .checks
        .iter()
        .filter(|c| c.name == CheckName::Dns)
        .collect();
    assert_eq!(dns.len(), 2);
    assert_eq!(dns[0].from, "node-3@pod:default/client-3");
    let Some(Kind::Dns(d)) = dns[0].request.as_ref().and_then(|r| r.kind.clone()) else {
        panic!("dns request")
    };
    assert_eq!(d.servers, ["198.18.200.10", "198.19.1.53"]);
    assert!(d.compare);
    assert_eq!(dns[1].from, "node-3");
    assert_eq!(
        p.source.address.map(|a| a.to_string()).as_deref(),
        Some("198.19.3.10")
    );
    let on = &p.capture.unwrap().observers;
    assert!(
        on.iter().any(|o| o.netns.is_some()),
        "the pod's eth0 is observed"
    );
}

#[tokio::test]
async fn bad_options_are_refused() {
    let reg = crate::registry::attached(&["node-1"]);
    for (req, says) in [
        (
            pb::DiagnosisRequest {
                to: "198.18.0.12".into(),
                size: 70_000,
                ..Default::default()
            },
            "--size",
        ),
        (
            pb::DiagnosisRequest {
                to: "198.18.0.12".into(),
                timeout_us: 1,
                ..Default::default()
            },
            "--timeout",
        ),
        (pb::DiagnosisRequest::default(), "--to"),
    ] {
        let err = plan("node-1", &req, &reg, None, PayloadPolicy::default(), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{err}");
    }
    let err = plan(
        "node-9",
        &pb::DiagnosisRequest {
            to: "198.18.0.12".into(),
            ..Default::default()
        },
        &reg,
        None,
        PayloadPolicy::default(),
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("node-9"), "{err}");
}

fn check(name: CheckName, to: &str, status: &str) -> Check {
    let status: Status = match status {
        "ok" => Status::Ok,
        "fail" => Status::Fail,
        _ => Status::Skipped,
    };
    Check {
        name,
        from: "cloudvm-1".into(),
        to: to.into(),
        size: 0,
        direction: Direction::Forward,
        status,
        sent: 5,
        received: if status == Status::Ok { 5 } else { 0 },
        rtt_ms: None,
        detail: String::new(),
        observation: None,
        result: None,
    }
}

#[tokio::test]
async fn follow_ups_trace_failures_and_search_the_mtu_only_when_small_passes() {
    let p = lab_plan("cloudvm-1", "nodeport:node-2:30080", 1472);
    assert!(follow_ups(&p, &[check(CheckName::Icmp, "198.18.0.12", "ok")], &[]).is_empty());
    let mtu = follow_ups(
        &p,
        &[
            check(CheckName::Icmp, "198.18.0.12", "ok"),
            check(CheckName::IcmpLarge, "198.18.0.12", "fail"),
        ],
        &[],
    );
    assert_eq!(
        mtu.iter().map(|c| c.name).collect::<Vec<_>>(),
        [CheckName::Pmtu]
    );
    let down = follow_ups(&p, &[check(CheckName::Icmp, "198.18.0.12", "fail")], &[]);
    assert_eq!(
        down.iter().map(|c| c.name).collect::<Vec<_>>(),
        [CheckName::Path]
    );
}

#[tokio::test]
async fn follow_ups_are_asked_once_however_the_wave_ends() {
    let p = lab_plan("cloudvm-1", "nodeport:node-2:30080", 1472);
    let small = check(CheckName::Icmp, "198.18.0.12", "ok");
    let large = check(CheckName::IcmpLarge, "198.18.0.12", "fail");
    // The large echoes end first: nothing yet (small ones may still fail).
    assert!(follow_ups(&p, std::slice::from_ref(&large), &[]).is_empty());
    let pmtu = follow_ups(&p, &[large.clone(), small.clone()], &[]);
    assert_eq!(pmtu.len(), 1);
    // Asked again with more results, the started search is not repeated.
    assert!(follow_ups(&p, &[large, small], &pmtu).is_empty());
}

#[tokio::test]
async fn the_port_checks_wait_on_the_echoes_to_their_host_or_a_virtual_ones_backends() {
    // The echoes back from node-2 measure it first: even the forward ones
    // wait on them; nothing waits on an echo that is itself waiting.
    let hosts =
        |c: &PlannedCheck| -> Vec<String> { c.paced_by.iter().map(|p| p.host.clone()).collect() };
    let paced = |p: &DiagnosisPlan| -> Vec<(CheckName, Vec<String>)> {
        p.checks
            .iter()
            .filter(|c| c.request.is_some() && c.direction == Direction::Forward)
            .map(|c| (c.name, hosts(c)))
            .collect()
    };
    let node = lab_plan("cloudvm-1", "nodeport:node-2:30080", 1472);
    let host = vec!["198.18.0.12".to_owned()];
    assert_eq!(
        paced(&node),
        [
            (CheckName::Icmp, host.clone()),
            (CheckName::IcmpLarge, host.clone()),
            (CheckName::TcpConnect, host.clone()),
            (CheckName::TcpTransfer, host),
        ]
    );
    let node2 = |c: &&PlannedCheck| c.from == "node-2" && c.name == CheckName::Icmp;
    let back = node
        .checks
        .iter()
        .find(node2)
        .expect("echoes back from node-2");
    assert_eq!(
        (back.measures.as_deref(), hosts(back)),
        (Some("198.18.0.12"), vec![])
    );
    // The far end's probe stands in with its clock when nothing answers.
    let forward = node.checks.iter().find(|c| c.name == CheckName::TcpConnect);
    assert_eq!(
        forward.map(|c| c.paced_by[0].probe.as_deref()),
        Some(Some("node-2"))
    );
    // The ClusterIP's port checks wait on the echoes to its backend.
    let svc = lab_plan("node-3", "svc:default/web:80", 0);
    let virtual_ip: Vec<_> = svc
        .checks
        .iter()
        .filter(|c| c.request.is_some() && c.direction == Direction::Forward)
        .filter(|c| c.to.starts_with("198.18.200.80"))
        .map(|c| (c.name, hosts(c)))
        .collect();
    let backend = vec!["198.19.2.10".to_owned()];
    assert_eq!(
        virtual_ip,
        [
            (CheckName::TcpConnect, backend.clone()),
            (CheckName::TcpTransfer, backend)
        ]
    );
}
