//! Degraded paths (`degraded`): the path works but loses packets.

use probemesh_model::check::CheckName;
use probemesh_model::evidence::{Claim, Item};
use probemesh_model::path::{Action, Resource, ResourceKind};

use super::{Evidence, Finding, cite};
use crate::diagnose::model::Check;
use crate::diagnose::path::Blocking;

pub(super) fn loss(e: &Evidence<'_>) -> Option<Finding> {
    // An ICMP error is an answer, not loss: a path whose echoes all come
    // back as errors is refused somewhere, which another rule (or
    // `inconclusive`) must say.
    let refused = e
        .ran(CheckName::Icmp)
        .any(|c| c.received == 0 && c.ping().is_some_and(|p| p.errors > 0));
    if refused {
        return None;
    }
    let lossy: Vec<&Check> = e
        .ran(CheckName::Icmp)
        .filter(|c| c.received > 0 && c.received < c.sent)
        .collect();
    // A trace that never reached the destination shows a dead path, not
    // a lossy one.
    let path = e
        .ran(CheckName::Path)
        .find(|c| c.trace().is_some_and(|t| t.loss_from_hop > 0 && t.reached));
    if lossy.is_empty() && path.is_none() {
        return None;
    }
    // "The path works" needs its own evidence: replies from a host the
    // target leads to, or a trace that reached it.
    let works = e
        .hosts()
        .find_map(|ep| e.aimed(CheckName::Icmp, &ep.host).find(|c| c.received > 0))
        .or(path)?;
    let mut evidence: Vec<Item> = lossy.iter().map(|c| cite(c, &c.detail)).collect();
    let mut losing: Vec<usize> = (0..evidence.len()).collect();
    let working = match evidence
        .iter()
        .position(|i| i.source == cite(works, "").source)
    {
        Some(i) => i,
        None => {
            evidence.push(cite(works, &format!("replies come back: {}", works.detail)));
            evidence.len() - 1
        }
    };
    let mut claims = Vec::new();
    let mut starts = None;
    let mut blocking = None;
    if let Some(c) = path
        && let Some(t) = c.trace()
    {
        let hop = t
            .hops
            .iter()
            .find(|h| h.ttl == t.loss_from_hop)
            .map_or("?", |h| h.host.as_str());
        losing.push(evidence.len());
        blocking = Some(Blocking::new(
            hop,
            Action::Dropped,
            Resource::new(
                ResourceKind::Interface,
                format!("hop {} ({hop}): loss starts here", t.loss_from_hop),
            ),
            &[evidence.len()],
        ));
        starts = Some(Claim::new(
            format!("loss starts at hop {} ({hop})", t.loss_from_hop),
            &[evidence.len()],
        ));
        evidence.push(cite(
            c,
            &format!(
                "loss starts at hop {} ({hop}) and continues to the end: {}",
                t.loss_from_hop,
                t.reading.join("; ")
            ),
        ));
    }
    let worst = lossy
        .iter()
        .map(|c| (c.sent - c.received, c.sent))
        .max_by(|a, b| {
            (f64::from(a.0) / f64::from(a.1.max(1)))
                .total_cmp(&(f64::from(b.0) / f64::from(b.1.max(1))))
        });
    let rate = worst.map_or(String::new(), |(l, s)| format!(" ({l} of {s} lost)",));
    claims.push(Claim::new(
        format!("the path {} → {} works", e.source.spec, e.target.spec),
        &[working],
    ));
    claims.push(Claim::new(format!("it loses packets{rate}"), &losing));
    claims.extend(starts);
    Some(Finding {
        claims,
        fix: "look where loss starts (the path check): that hop's interface drops and queues (ip -s link, tc -s qdisc, ethtool -S), its load, and any policer or rule dropping at random".into(),
        evidence,
        confidence: if path.is_some() { 0.85 } else { 0.7 },
        blocking,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::fixtures::*;

    #[tokio::test]
    async fn partial_loss_is_degraded_and_names_the_hop() {
        let trace = run(
            CheckName::Path,
            "cloudvm-1",
            "198.18.0.12",
            Direction::Forward,
            Outcome::Trace(pb::TraceResult {
                hops: vec![
                    pb::TraceHop {
                        ttl: 1,
                        host: "198.18.100.1".into(),
                        ..Default::default()
                    },
                    pb::TraceHop {
                        ttl: 2,
                        host: "198.18.0.12".into(),
                        loss_pct: 20.0,
                        ..Default::default()
                    },
                ],
                reached: true,
                loss_from_hop: 2,
                reading: vec!["loss continues to the last hop from hop 2: real loss".into()],
                ..Default::default()
            }),
        );
        let v = Case::new("cloudvm-1", "probe:node-2")
            .with(icmp("cloudvm-1", "198.18.0.12", 20, 16))
            .with(reverse("node-2", "198.18.0.14", 20, 17))
            .with(trace)
            .verdict();
        assert_eq!(class(&v), ("degraded", "loss"), "{v:?}");
        assert!(v.summary.contains("hop 2 (198.18.0.12)"), "{}", v.summary);
    }

    #[tokio::test]
    async fn echoes_answered_by_icmp_errors_are_not_loss() {
        // 0 of 20 replies, 6 ICMP errors back: the path is refused, not
        // lossy, whatever else the trace shows.
        let v = Case::new("cloudvm-1", "probe:node-2")
            .with(icmp_sized(
                CheckName::Icmp,
                "cloudvm-1",
                "198.18.0.12",
                20,
                0,
                6,
            ))
            .with(reverse("node-2", "198.18.0.14", 20, 17))
            .verdict();
        assert_ne!(class(&v).0, "degraded", "{v:?}");
        assert!(!v.summary.contains("works"), "{}", v.summary);
    }
}
