use std::net::SocketAddr;
use std::time::Duration;

use probemesh_proto::identity::{CertFingerprint, Identity, Role};
use probemesh_proto::pb;
use tokio::time::Instant;

use super::audit::AuditLog;
use super::*;
use crate::error::Error;
use crate::registry::attached;

fn operator(name: &str) -> Identity {
    Identity {
        name: name.into(),
        role: Role::Operator,
        fingerprint: CertFingerprint::from_bytes([9; 32]),
        serial: "09".into(),
        not_before_unix: 0,
        not_after_unix: 0,
    }
}

fn policy(rules: Rules) -> Policy {
    let own = OwnPorts {
        listen: "127.0.0.1:7443".parse::<SocketAddr>().unwrap(),
        metrics: Some("0.0.0.0:9100".parse().unwrap()),
        web: Some("0.0.0.0:7444".parse().unwrap()),
    };
    Policy::new(rules, own, AuditLog::default())
}

fn ping(target: &str, interval_us: u64) -> pb::RunRequest {
    pb::RunRequest {
        from: "node-1".into(),
        kind: Some(pb::run_request::Kind::Ping(pb::PingTask {
            target: target.into(),
            interval_us,
            ..Default::default()
        })),
    }
}

fn tcping(host: &str, port: u32) -> pb::RunRequest {
    pb::RunRequest {
        from: "node-1".into(),
        kind: Some(pb::run_request::Kind::Tcping(pb::TcpingTask {
            host: host.into(),
            port,
            ..Default::default()
        })),
    }
}

fn rule_of(result: Result<Ticket, Error>) -> &'static str {
    match result {
        Err(Error::PolicyDenied { rule, .. } | Error::PolicyExhausted { rule, .. }) => rule,
        other => panic!("expected a policy refusal, got {other:?}"),
    }
}

#[test]
fn targets_are_the_probes_and_the_allowed_ranges_never_the_coordinators_ports() {
    let reg = attached(&["node-1", "node-2"]);
    let p = policy(Rules::default());
    let me = operator("admin");
    let now = Instant::now();
    let admit = |r: &pb::RunRequest| p.admit(&me, r, &reg, None, now);
    assert!(admit(&ping("127.0.0.1", 0)).is_ok(), "a probe's loopback");
    assert!(admit(&ping("198.18.0.12", 0)).is_ok(), "node-2's eth0");
    assert!(admit(&tcping("127.0.0.1", 8080)).is_ok());
    assert_eq!(
        rule_of(admit(&tcping("127.0.0.1", 7443))),
        "targets.deny-coordinator-ports"
    );
    assert_eq!(
        rule_of(admit(&tcping("198.18.0.12", 9100))),
        "targets.deny-coordinator-ports"
    );
    assert_eq!(rule_of(admit(&ping("10.9.9.9", 0))), "targets.default-deny");
    assert_eq!(rule_of(admit(&ping("example.com", 0))), "targets.hostnames");
    assert!(admit(&ping("web.default.svc.cluster.local", 0)).is_ok());

    let mut rules = Rules::default();
    rules.targets.allow.push(AllowRule {
        cidr: "10.9.0.0/16".into(),
        ports: vec![443],
    });
    let p = policy(rules);
    // A rule with ports allows those ports only, so no ICMP.
    assert_eq!(
        rule_of(p.admit(&me, &ping("10.9.9.9", 0), &reg, None, now)),
        "targets.default-deny"
    );
    assert!(
        p.admit(&me, &tcping("10.9.9.9", 443), &reg, None, now)
            .is_ok()
    );
    assert_eq!(
        rule_of(p.admit(&me, &tcping("10.9.9.9", 22), &reg, None, now)),
        "targets.default-deny"
    );
}

#[test]
fn intervals_below_the_minimum_are_refused_and_zero_means_the_default() {
    let reg = attached(&["node-1"]);
    let p = policy(Rules::default());
    let me = operator("admin");
    let now = Instant::now();
    assert_eq!(
        rule_of(p.admit(&me, &ping("127.0.0.1", 1), &reg, None, now)),
        "limits.min-interval"
    );
    assert!(
        p.admit(&me, &ping("127.0.0.1", 10_000), &reg, None, now)
            .is_ok()
    );
    assert!(p.admit(&me, &ping("127.0.0.1", 0), &reg, None, now).is_ok());
}

#[test]
fn runs_at_once_are_capped_per_probe_and_per_identity_until_tickets_drop() {
    let reg = attached(&["node-1"]);
    let mut rules = Rules::default();
    rules.limits.max_runs_per_probe = 2;
    rules.limits.max_runs_per_identity = 3;
    let p = policy(rules);
    let now = Instant::now();
    let a = p
        .admit(&operator("a"), &ping("127.0.0.1", 0), &reg, None, now)
        .unwrap();
    let _b = p
        .admit(&operator("a"), &ping("127.0.0.1", 0), &reg, None, now)
        .unwrap();
    assert_eq!(
        rule_of(p.admit(&operator("c"), &ping("127.0.0.1", 0), &reg, None, now)),
        "limits.max-runs-per-probe"
    );
    drop(a);
    assert!(
        p.admit(&operator("c"), &ping("127.0.0.1", 0), &reg, None, now)
            .is_ok()
    );
}

#[test]
fn the_rate_bucket_allows_its_burst_then_refills() {
    let reg = attached(&["node-1"]);
    let mut rules = Rules::default();
    rules.limits.rate_burst = 5;
    rules.limits.rate_per_second = 2.0;
    let p = policy(rules);
    let me = operator("admin");
    let start = Instant::now();
    for _ in 0..5 {
        drop(
            p.admit(&me, &ping("127.0.0.1", 0), &reg, None, start)
                .unwrap(),
        );
    }
    assert_eq!(
        rule_of(p.admit(&me, &ping("127.0.0.1", 0), &reg, None, start)),
        "limits.rate"
    );
    let later = start + Duration::from_millis(600);
    assert!(
        p.admit(&me, &ping("127.0.0.1", 0), &reg, None, later)
            .is_ok()
    );
    assert!(
        p.admit(&operator("other"), &ping("127.0.0.1", 0), &reg, None, start)
            .is_ok()
    );
}

#[test]
fn the_default_rate_allows_a_burst_of_500_runs() {
    let reg = attached(&["node-1"]);
    let p = policy(Rules::default());
    let me = operator("admin");
    let now = Instant::now();
    for i in 0..500 {
        let ticket = p.admit(&me, &ping("127.0.0.1", 0), &reg, None, now);
        assert!(ticket.is_ok(), "run {i}: {ticket:?}");
    }
}

#[test]
fn capture_bytes_are_reserved_per_observer() {
    let reg = attached(&["node-1", "node-2"]);
    let mut rules = Rules::default();
    rules.limits.capture_bytes_per_probe = 100;
    let p = policy(rules);
    let capture = |max_bytes| pb::RunRequest {
        from: String::new(),
        kind: Some(pb::run_request::Kind::Capture(pb::CaptureRequest {
            on: vec!["node-1:eth0".into(), "node-2".into()],
            max_bytes,
            ..Default::default()
        })),
    };
    let now = Instant::now();
    let me = operator("admin");
    let first = p.admit(&me, &capture(60), &reg, None, now).unwrap();
    assert_eq!(
        rule_of(p.admit(&me, &capture(60), &reg, None, now)),
        "limits.capture-bytes-per-probe"
    );
    drop(first);
    assert!(p.admit(&me, &capture(60), &reg, None, now).is_ok());
}

#[test]
fn a_policy_file_with_an_unknown_field_or_a_bad_cidr_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(&path, "{\n  \"limits\": {\"min_interval\": 5}\n}\n").unwrap();
    let e = Rules::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("unknown field `min_interval`") && e.contains("line 2"),
        "{e}"
    );
    std::fs::write(
        &path,
        r#"{"targets": {"allow": [{"cidr": "10.0.0.0/33"}]}}"#,
    )
    .unwrap();
    let e = Rules::load(&path).unwrap_err().to_string();
    assert!(e.contains("targets.allow[0].cidr"), "{e}");
    std::fs::write(&path, include_str!("../../../deploy/policy.example.json")).unwrap();
    assert!(Rules::load(&path).is_ok());
}
