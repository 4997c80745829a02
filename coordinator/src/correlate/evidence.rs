//! What the diagnosis cites from a correlation: the path a packet took,
//! where an unanswered one was last seen, and who sent tunnel traffic with
//! which outer addresses. Reads the types of [`super`]; matching packets is
//! [`super::matching`]'s job.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use probemesh_packet::decode::{self, TunnelKind};
use probemesh_proto::identity::ProbeName;

use super::{EncapsulationSource, Hop, Observation, PacketFate};

/// The observers a packet passed, each once (its first sighting there), in
/// common-clock order.
pub fn path_of(fate: &PacketFate) -> Vec<Hop> {
    let mut hops: Vec<Hop> = Vec::new();
    for s in &fate.sightings {
        if !hops
            .iter()
            .any(|h| h.probe == s.probe && h.interface == s.interface)
        {
            hops.push(Hop {
                probe: s.probe.clone(),
                interface: s.interface.clone(),
                at_ns: s.at_ns,
            });
        }
    }
    hops.sort_by_key(|h| h.at_ns);
    hops
}

/// Where an unanswered packet was last seen: the packet was lost after
/// this observer (or the answer was lost on its way back). `None` when it
/// was answered or never seen.
pub fn lost_after(fate: &PacketFate) -> Option<(&ProbeName, &str)> {
    if fate.answered() {
        return None;
    }
    fate.sightings
        .iter()
        .max_by_key(|s| s.at_ns)
        .map(|s| (&s.probe, s.interface.as_str()))
}

/// Per observer, the outer address pairs of its tunnel packets (outermost
/// tunnel), with counts: "VXLAN packets from node-3 leave with outer source
/// X". Ordered by observer as given, then by addresses.
pub fn encapsulation_sources(observations: &[Observation]) -> Vec<EncapsulationSource> {
    let mut out = Vec::new();
    for o in observations {
        let mut counts: BTreeMap<(Ipv4Addr, Ipv4Addr, TunnelKind), u64> = BTreeMap::new();
        for p in &o.packets {
            if let Ok(d) = decode::decode(o.link, &p.bytes)
                && let Some(t) = d.tunnels.first()
            {
                *counts
                    .entry((t.outer.src, t.outer.dst, t.kind))
                    .or_default() += 1;
            }
        }
        out.extend(
            counts.into_iter().map(
                |((outer_src, outer_dst, kind), packets)| EncapsulationSource {
                    probe: o.probe.clone(),
                    interface: o.interface.clone(),
                    kind,
                    outer_src,
                    outer_dst,
                    packets,
                },
            ),
        );
    }
    out
}
