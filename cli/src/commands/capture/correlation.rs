//! The coordinator's correlation as `meshctl capture` prints it and writes
//! it in JSON: every test packet followed across the observers. A view of
//! the wire summary; it computes nothing.

use probemesh_proto::pb;
use serde::Serialize;

use crate::commands::ns_to_us;

/// The correlation, as printed and in JSON.
#[derive(Debug, Serialize)]
pub(super) struct CorrelationView {
    fates_total: u64,
    fates: Vec<FateView>,
    encapsulation: Vec<EncapsulationView>,
    undecoded_packets: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    skipped: String,
}

#[derive(Debug, Serialize)]
struct FateView {
    packet: String,
    answered: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    answered_at: String,
    retransmissions: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    lost_after: String,
    hops: Vec<HopView>,
}

#[derive(Debug, Serialize)]
struct HopView {
    observer: String,
    at_unix_ns: i64,
    one_way_us: f64,
    flow: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    outer: String,
    transforms: Vec<String>,
    wire_bytes: u32,
}

#[derive(Debug, Serialize)]
struct EncapsulationView {
    observer: String,
    kind: String,
    outer_src: String,
    outer_dst: String,
    packets: u64,
}

impl From<&pb::CorrelationSummary> for CorrelationView {
    fn from(c: &pb::CorrelationSummary) -> Self {
        Self {
            fates_total: c.fates_total,
            fates: c
                .fates
                .iter()
                .map(|f| FateView {
                    packet: f.packet.clone(),
                    answered: f.answered,
                    answered_at: f.answered_at.clone(),
                    retransmissions: f.retransmissions,
                    lost_after: f.lost_after.clone(),
                    hops: f
                        .hops
                        .iter()
                        .map(|h| HopView {
                            observer: h.observer.clone(),
                            at_unix_ns: h.at_unix_ns,
                            one_way_us: ns_to_us(h.one_way_ns),
                            flow: h.flow.clone(),
                            outer: h.outer.clone(),
                            transforms: h.transforms.clone(),
                            wire_bytes: h.wire_bytes,
                        })
                        .collect(),
                })
                .collect(),
            encapsulation: c
                .encapsulation
                .iter()
                .map(|e| EncapsulationView {
                    observer: e.observer.clone(),
                    kind: e.kind.clone(),
                    outer_src: e.outer_src.clone(),
                    outer_dst: e.outer_dst.clone(),
                    packets: e.packets,
                })
                .collect(),
            undecoded_packets: c.undecoded_packets,
            skipped: c.skipped.clone(),
        }
    }
}

/// Fates printed in table mode (all are in the JSON).
const FATES_SHOWN: usize = 10;

impl CorrelationView {
    pub(super) fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "packets followed across observers: {} ({} shown, unanswered first)",
            self.fates_total,
            self.fates.len().min(FATES_SHOWN)
        )];
        for f in self.fates.iter().take(FATES_SHOWN) {
            let fate = if f.answered {
                format!("answered at {}", f.answered_at)
            } else {
                format!("NOT answered, last seen at {}", f.lost_after)
            };
            let retrans = if f.retransmissions > 0 {
                format!(", {} retransmissions", f.retransmissions)
            } else {
                String::new()
            };
            lines.push(format!("  {}: {fate}{retrans}", f.packet));
            for h in &f.hops {
                let changes = if h.transforms.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", h.transforms.join("; "))
                };
                lines.push(format!(
                    "    +{:>9.1} us  {:<22} {}{changes}",
                    h.one_way_us, h.observer, h.flow
                ));
            }
        }
        for e in &self.encapsulation {
            lines.push(format!(
                "  {} {} from {} to {} ({} packets)",
                e.observer, e.kind, e.outer_src, e.outer_dst, e.packets
            ));
        }
        if !self.skipped.is_empty() {
            lines.push(format!("  {}", self.skipped));
        }
        lines
    }
}
