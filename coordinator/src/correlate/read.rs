//! Reading one observer's capture file into [`Observation`]s on the
//! coordinator's clock. The pcapng walking itself is
//! `probemesh_packet::pcapng`'s; this adds the probe's name, its clock
//! correction and the link kinds the decoder reads. No file system: the
//! caller hands over the bytes.

use probemesh_model::timeline;
use probemesh_packet::frame::LinkKind;
use probemesh_packet::pcapng;
use probemesh_proto::identity::ProbeName;

use super::{CapturedPacket, CorrelateError, Observation, Result};

/// Reads one observer's pcapng file: one [`Observation`] per interface
/// block, its timestamps (in the block's `if_tsresol`/`if_tsoffset` units)
/// put on the coordinator's clock with the probe's offset and error bound
/// (nanoseconds) by [`timeline::to_coordinator_ns`]. Interface names
/// `PROBE/IFACE` are shortened to `IFACE`; unnamed interfaces are `ifN`.
pub fn from_pcapng(
    probe: &ProbeName,
    offset_ns: i64,
    error_ns: i64,
    bytes: &[u8],
) -> Result<Vec<Observation>> {
    let failed = |error| match error {
        pcapng::ReadError::Parse(source) => CorrelateError::Pcapng {
            probe: probe.clone(),
            source,
        },
        pcapng::ReadError::UnknownInterface { interface } => CorrelateError::UnknownInterface {
            probe: probe.clone(),
            interface,
        },
    };
    let mut observations: Vec<Observation> = Vec::new();
    for record in pcapng::Reader::new(bytes).map_err(failed)? {
        match record.map_err(failed)? {
            pcapng::Record::Interface(i) => {
                let interface = i.name().map_or_else(
                    || format!("if{}", i.id_in_section),
                    |n| short_interface(probe, n).to_owned(),
                );
                let link = LinkKind::from_datalink(i.link()).ok_or_else(|| {
                    CorrelateError::UnsupportedLinkType {
                        probe: probe.clone(),
                        interface: interface.clone(),
                        link: u32::from(i.link()),
                    }
                })?;
                observations.push(Observation {
                    probe: probe.clone(),
                    interface,
                    link,
                    packets: Vec::new(),
                });
            }
            pcapng::Record::Packet(p) => {
                let probe_ns = i64::try_from(p.timestamp_ns).unwrap_or(i64::MAX);
                if let Some(observation) = observations.get_mut(p.interface) {
                    observation.packets.push(CapturedPacket {
                        at_ns: timeline::to_coordinator_ns(probe_ns, offset_ns, error_ns),
                        orig_len: p.original_len(),
                        bytes: p.block.data.into_owned(),
                    });
                }
            }
        }
    }
    Ok(observations)
}

/// `eth0` from `node-1/eth0`.
fn short_interface<'a>(probe: &ProbeName, interface: &'a str) -> &'a str {
    interface
        .strip_prefix(probe.as_str())
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(interface)
}
