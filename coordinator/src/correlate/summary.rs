//! The correlation as it travels in a run record: fates and tunnel sources
//! turned into `pb::CorrelationSummary` (the one place this conversion
//! happens), unanswered packets first, bounded in size.

use probemesh_proto::pb;

use super::{
    AnswerKind, Correlation, EncapsulationSource, IcmpErrorSighting, PacketFate, PacketKey,
    Transform, lost_after,
};
use probemesh_packet::decode::TunnelKind;

/// Fates kept in a record.
pub const MAX_FATES: usize = 200;

/// Summarises `correlation` and the observers' tunnel sources.
pub fn summarize(
    correlation: &Correlation,
    encapsulation: &[EncapsulationSource],
) -> pb::CorrelationSummary {
    let mut fates: Vec<&PacketFate> = correlation.fates.iter().collect();
    // Unanswered first (what a diagnosis looks for), then in time order.
    fates.sort_by_key(|f| {
        (
            f.answered(),
            f.sightings.first().map_or(i64::MAX, |s| s.at_ns),
        )
    });
    pb::CorrelationSummary {
        fates_total: u64::try_from(fates.len()).unwrap_or(u64::MAX),
        fates: fates.into_iter().take(MAX_FATES).map(fate).collect(),
        encapsulation: encapsulation.iter().map(tunnel_source).collect(),
        undecoded_packets: correlation.undecoded.iter().map(|u| u.packets).sum(),
        skipped: String::new(),
    }
}

fn fate(f: &PacketFate) -> pb::PacketFateSummary {
    pb::PacketFateSummary {
        packet: describe(&f.key),
        hops: f
            .sightings
            .iter()
            .map(|s| pb::HopSummary {
                observer: format!("{}/{}", s.probe, s.interface),
                at_unix_ns: s.at_ns,
                one_way_ns: s.one_way_from_first_ns,
                flow: s.inner.to_string(),
                outer: s
                    .outer
                    .map(|(src, dst)| format!("{src} -> {dst}"))
                    .unwrap_or_default(),
                transforms: s.transformed.iter().map(transform).collect(),
                wire_bytes: s.orig_len,
            })
            .collect(),
        answered: f.answered(),
        answered_at: f
            .answer
            .as_ref()
            .map(|a| format!("{}/{}", a.probe, a.interface))
            .unwrap_or_default(),
        retransmissions: f.retransmissions,
        lost_after: if f.answered() {
            String::new()
        } else {
            lost_after(f)
                .map(|(p, i)| format!("{p}/{i}"))
                .unwrap_or_default()
        },
        answer_kind: f
            .answer
            .as_ref()
            .map_or(pb::AnswerKind::Unspecified, |a| answer_kind(a.kind))
            .into(),
        answered_at_unix_ns: f.answer.as_ref().map_or(0, |a| a.at_ns),
        icmp_errors: f.icmp_errors.iter().map(icmp_error).collect(),
    }
}

fn answer_kind(kind: AnswerKind) -> pb::AnswerKind {
    match kind {
        AnswerKind::EchoReply => pb::AnswerKind::EchoReply,
        AnswerKind::Ack => pb::AnswerKind::Ack,
        AnswerKind::Reset => pb::AnswerKind::Reset,
        AnswerKind::UdpReply => pb::AnswerKind::UdpReply,
    }
}

fn icmp_error(e: &IcmpErrorSighting) -> pb::IcmpErrorSummary {
    pb::IcmpErrorSummary {
        observer: format!("{}/{}", e.probe, e.interface),
        at_unix_ns: e.at_ns,
        from: e.from.to_string(),
        icmp_type: u32::from(e.icmp_type),
        code: u32::from(e.code),
        next_hop_mtu: e.next_hop_mtu.map_or(0, |m| u32::from(m.0)),
    }
}

fn describe(key: &PacketKey) -> String {
    match key {
        PacketKey::IcmpEcho { id, seq } => format!("icmp echo id {} seq {}", id.0, seq.0),
        PacketKey::Tcp {
            connection,
            seq,
            payload_len,
            flags,
        } => format!(
            "tcp {} > {} [{flags}] seq {} len {payload_len}",
            connection.client, connection.server, seq.0
        ),
        PacketKey::Udp {
            src_port,
            dst_port,
            ip_id,
            length,
        } => {
            format!(
                "udp port {src_port} > {dst_port} ip id {} len {length}",
                ip_id.0
            )
        }
    }
}

fn transform(t: &Transform) -> String {
    match t {
        Transform::Dnat { from, to } => format!("DNAT {from} -> {to}"),
        Transform::Snat { from, to } => format!("SNAT {from} -> {to}"),
        Transform::Encapsulated {
            kind,
            outer_src,
            outer_dst,
        } => {
            format!("{} {outer_src} -> {outer_dst}", kind_name(kind))
        }
    }
}

fn kind_name(kind: &TunnelKind) -> String {
    match kind {
        TunnelKind::Vxlan { vni } => format!("VXLAN vni {}", vni.0),
        TunnelKind::Ipip => "IPIP".to_owned(),
    }
}

fn tunnel_source(e: &EncapsulationSource) -> pb::EncapsulationSummary {
    pb::EncapsulationSummary {
        observer: format!("{}/{}", e.probe, e.interface),
        kind: e.kind.short_name().to_owned(),
        outer_src: e.outer_src.to_string(),
        outer_dst: e.outer_dst.to_string(),
        packets: e.packets,
    }
}
