//! The page of a hand-built record: what comes from the network stays
//! text, every evidence item links to something that exists, and the
//! ladder carries the attributes the lab test reads.

use probemesh_proto::pb;

use super::*;

const HOSTILE: &str = r#"<script>alert(1)</script>"#;

fn hop(observer: &str, at: i64, flow: &str, outer: &str) -> pb::HopSummary {
    pb::HopSummary {
        observer: observer.into(),
        at_unix_ns: at,
        flow: flow.into(),
        outer: outer.into(),
        ..Default::default()
    }
}

fn check(name: pb::CheckName, status: pb::CheckStatus, to: &str) -> pb::Check {
    pb::Check {
        name: name.into(),
        status: status.into(),
        from: "cloudvm-1".into(),
        to: to.into(),
        ..Default::default()
    }
}

fn record() -> pb::RunRecord {
    let capture = |probe: &str, interface: &str| {
        Some(pb::EvidenceSource {
            kind: Some(pb::evidence_source::Kind::Capture(pb::CaptureSource {
                probe: probe.into(),
                interface: interface.into(),
                packet: 0,
            })),
        })
    };
    let lost = pb::PacketFateSummary {
        packet: "tcp 198.18.100.10:40000 > 198.18.0.12:30080 [ACK] seq 1 len 1448".into(),
        hops: vec![hop(
            "cloudvm-1/eth0",
            1_000_000,
            "tcp 198.18.100.10:40000 -> 198.18.0.12:30080",
            "",
        )],
        lost_after: "cloudvm-1/eth0".into(),
        icmp_errors: vec![pb::IcmpErrorSummary {
            observer: "cloudvm-1/eth0".into(),
            at_unix_ns: 1_050_000,
            from: "198.18.0.1".into(),
            icmp_type: 3,
            code: 4,
            next_hop_mtu: 1440,
        }],
        ..Default::default()
    };
    let reset = pb::PacketFateSummary {
        packet: format!("tcp {HOSTILE} [SYN]"),
        hops: vec![
            hop(
                "node-3/eth0",
                2_000_000,
                "tcp a -> b",
                "198.18.0.23 -> 198.18.0.12",
            ),
            hop(
                "node-2/eth0",
                2_030_000,
                "tcp a -> b",
                "198.18.0.23 -> 198.18.0.12",
            ),
        ],
        answered: true,
        answered_at: "node-2/eth0".into(),
        answer_kind: pb::AnswerKind::Reset.into(),
        answered_at_unix_ns: 2_060_000,
        ..Default::default()
    };
    pb::RunRecord {
        run_id: "r-1".into(),
        trace_id: "t-1".into(),
        request: Some(pb::RunRequest {
            from: "cloudvm-1".into(),
            kind: None,
        }),
        observers: ["cloudvm-1", "node-2", "node-3"]
            .map(|p| pb::ObserverResult {
                probe: p.into(),
                interfaces: vec!["eth0".into()],
                clock_error_ns: 4_000,
                ..Default::default()
            })
            .to_vec(),
        correlation: Some(pb::CorrelationSummary {
            fates: vec![lost, reset],
            fates_total: 2,
            ..Default::default()
        }),
        diagnosis: Some(pb::Diagnosis {
            target: Some(pb::ResolvedTarget {
                spec: "nodeport:30080".into(),
                endpoints: vec![pb::TargetEndpoint {
                    ip: "198.18.0.12".into(),
                    port: 30080,
                    role: "node".into(),
                    reason: HOSTILE.into(),
                    ..Default::default()
                }],
                name: String::new(),
            }),
            checks: vec![
                check(pb::CheckName::Icmp, pb::CheckStatus::Ok, "198.18.0.12"),
                check(pb::CheckName::Pmtu, pb::CheckStatus::Fail, "198.18.0.12"),
            ],
            verdict: Some(pb::Verdict {
                class: pb::VerdictClass::MtuBlackhole.into(),
                summary: "black hole".into(),
                fix: HOSTILE.into(),
                claims: vec![pb::Claim {
                    text: "large packets vanish".into(),
                    evidence: vec![0, 1],
                }],
                evidence: vec![
                    pb::Evidence {
                        probe: "cloudvm-1".into(),
                        observation: "path MTU 1440".into(),
                        source: Some(pb::EvidenceSource {
                            kind: Some(pb::evidence_source::Kind::Check(pb::CheckSource {
                                name: pb::CheckName::Pmtu.into(),
                                from: "cloudvm-1".into(),
                                to: "198.18.0.12".into(),
                            })),
                        }),
                        ..Default::default()
                    },
                    pb::Evidence {
                        probe: "cloudvm-1".into(),
                        observation: HOSTILE.into(),
                        source: capture("cloudvm-1", "eth0"),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

#[test]
fn what_comes_from_the_network_stays_text_and_nothing_is_fetched() {
    let html = render(&record(), &[]);
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    // Self-contained: the only URL is the SVG namespace.
    let urls: Vec<&str> = html
        .match_indices("http")
        .map(|(i, _)| &html[i..i + 30])
        .collect();
    assert!(
        urls.iter()
            .all(|u| u.starts_with("http://www.w3.org/2000/svg")),
        "{urls:?}"
    );
}

#[test]
fn every_evidence_item_links_to_an_anchor_of_the_page() {
    let html = render(&record(), &[]);
    assert!(
        html.contains(r##"<a class="src" href="#check-1">"##),
        "{html}"
    );
    assert!(html.contains(r#"<tr id="check-1" class="status-fail""#));
    let lane = escape::anchor("obs", "cloudvm-1/eth0");
    assert!(html.contains(&format!(r##"href="#{lane}""##)));
    assert!(html.contains(&format!(r#"id="{lane}""#)));
    assert!(html.contains(r##"href="#ev-0">[1]</a><a class="ref" href="#ev-1">[2]</a>"##));
}

#[test]
fn the_ladder_marks_the_loss_the_reset_the_error_and_the_outer_source() {
    let html = render(&record(), &[]);
    assert!(html.contains(r#"<g class="lost-mark" data-lost-at="cloudvm-1/eth0""#));
    assert!(html.contains(r#"data-answer="ANSWER_KIND_RESET" data-observer="node-2/eth0""#));
    assert!(html.contains(r#"data-icmp-from="198.18.0.1""#));
    assert!(html.contains("ICMP 3/4 from 198.18.0.1 mtu 1440"));
    assert_eq!(html.matches(r#"data-outer-src="198.18.0.23""#).count(), 2);
    assert_eq!(html.matches(r#"data-clock-error-ns="4000""#).count(), 3);
    // The source's lane comes first.
    let first_lane = html.find(r#"class="lane""#).unwrap();
    assert!(html[first_lane..].starts_with(r#"class="lane" id="obs-cloudvm-1_2feth0""#));
}

#[test]
fn capture_files_are_linked_by_relative_url() {
    let files = [FileLink {
        label: "node-2 #1.pcapng".into(),
        href: "captures/r-1/node-2 #1.pcapng".into(),
    }];
    let html = render(&record(), &files);
    assert!(html.contains(
        r#"<a class="file" href="captures/r-1/node-2%20%231.pcapng">node-2 #1.pcapng</a>"#
    ));
}

#[test]
fn a_run_without_a_diagnosis_or_captures_still_renders() {
    let html = render(&pb::RunRecord::default(), &[]);
    assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>"));
    assert!(html.contains("No packets followed"));
}
