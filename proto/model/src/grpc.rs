//! The one place the model's check and verdict enums meet the wire enums:
//! `From` the model to `pb`, `TryFrom` `pb` to the model with a typed error
//! naming the field that is unset or unknown.
//!
//! Not the compatibility with records that carry strings (that is
//! `probemesh_proto::compat`, applied before these conversions).

use probemesh_proto::pb;

use crate::check::{CheckName, Direction, Status};
use crate::evidence::{Claim, Item, Source};
use crate::path::{Action, Leg, Resource, ResourceKind, Step};
use crate::verdict::{Cause, Class};

/// A wire enum field with no model value: unset (0) or a number this build
/// does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field}: no value for {value}")]
pub struct InvalidEnum {
    /// The field, e.g. `Check.status`.
    pub field: &'static str,
    /// The number on the wire.
    pub value: i32,
}

macro_rules! mapping {
    ($model:ty, $wire:ty, $field:literal, $($m:ident <=> $w:ident),+ $(,)?) => {
        impl From<$model> for $wire {
            fn from(v: $model) -> Self {
                match v {
                    $(<$model>::$m => <$wire>::$w,)+
                }
            }
        }

        impl TryFrom<$wire> for $model {
            type Error = InvalidEnum;

            fn try_from(v: $wire) -> Result<Self, InvalidEnum> {
                match v {
                    $(<$wire>::$w => Ok(<$model>::$m),)+
                    #[allow(unreachable_patterns)]
                    other => Err(InvalidEnum { field: $field, value: other.into() }),
                }
            }
        }
    };
}

mapping!(CheckName, pb::CheckName, "Check.name",
    Icmp <=> Icmp, IcmpLarge <=> IcmpLarge, TcpConnect <=> TcpConnect,
    TcpTransfer <=> TcpTransfer, Udp <=> Udp, Pmtu <=> Pmtu, Path <=> Path,
    Dns <=> Dns, Listener <=> Listener, NodeFacts <=> NodeFacts,
    NatRules <=> NatRules, Capture <=> Capture);

mapping!(Direction, pb::CheckDirection, "Check.direction",
    Forward <=> Forward, Reverse <=> Reverse, Local <=> Local);

mapping!(Status, pb::CheckStatus, "Check.status",
    Ok <=> Ok, Fail <=> Fail, Skipped <=> Skipped);

mapping!(Class, pb::VerdictClass, "Verdict.class",
    Ok <=> Ok, NetworkUnreachable <=> NetworkUnreachable,
    PortUnreachable <=> PortUnreachable, DnsFailure <=> DnsFailure,
    MtuBlackhole <=> MtuBlackhole, CniFailure <=> CniFailure,
    Degraded <=> Degraded, Inconclusive <=> Inconclusive);

mapping!(Cause, pb::VerdictCause, "Verdict.cause",
    Firewall <=> Firewall, Routing <=> Routing, Overload <=> Overload,
    Link <=> Link, Refused <=> Refused, LoopbackOnly <=> LoopbackOnly,
    Filtered <=> Filtered, PortExhaustion <=> PortExhaustion,
    BacklogOverflow <=> BacklogOverflow, PodDnsConfig <=> PodDnsConfig,
    DnsServiceDown <=> DnsServiceDown, DnsUnreachable <=> DnsUnreachable,
    KubeProxyRulesMissing <=> KubeProxyRulesMissing,
    PodCidrExhausted <=> PodCidrExhausted,
    OverlaySourceMismatch <=> OverlaySourceMismatch, Loss <=> Loss,
    Latency <=> Latency);

mapping!(Leg, pb::PathLeg, "PathStep.leg", Forward <=> Forward, Return <=> Return);

mapping!(Action, pb::PathAction, "PathStep.action",
    Sent <=> Sent, Forwarded <=> Forwarded, Nated <=> Nated,
    Encapsulated <=> Encapsulated, Delivered <=> Delivered,
    Answered <=> Answered, Rejected <=> Rejected, Dropped <=> Dropped);

mapping!(ResourceKind, pb::PathResourceKind, "PathResource.kind",
    Route <=> Route, Rule <=> Rule, Interface <=> Interface,
    NatChain <=> NatChain, Listener <=> Listener, Address <=> Address,
    Resolver <=> Resolver, PortRange <=> PortRange, Conntrack <=> Conntrack);

/// A verdict's class and cause from the wire: the class must be set, the
/// cause is `None` when unspecified and must belong to the class otherwise.
pub fn verdict_kind(v: &pb::Verdict) -> Result<(Class, Option<Cause>), InvalidEnum> {
    let class = Class::try_from(v.class())?;
    let cause = match v.cause() {
        pb::VerdictCause::Unspecified => None,
        c => Some(Cause::try_from(c)?),
    };
    match cause {
        Some(c) if c.class() != class => Err(InvalidEnum {
            field: "Verdict.cause",
            value: v.cause,
        }),
        _ => Ok((class, cause)),
    }
}

impl From<&Source> for pb::EvidenceSource {
    fn from(s: &Source) -> Self {
        use pb::evidence_source::Kind;
        let kind = match s {
            Source::Check { name, from, to } => Kind::Check(pb::CheckSource {
                name: pb::CheckName::from(*name).into(),
                from: from.clone(),
                to: to.clone(),
            }),
            Source::Capture {
                probe,
                interface,
                packet,
            } => Kind::Capture(pb::CaptureSource {
                probe: probe.clone(),
                interface: interface.clone(),
                packet: packet.unwrap_or(0),
            }),
            Source::Inventory {
                kind,
                namespace,
                name,
            } => Kind::Inventory(pb::InventorySource {
                kind: kind.clone(),
                namespace: namespace.clone(),
                name: name.clone(),
            }),
        };
        pb::EvidenceSource { kind: Some(kind) }
    }
}

/// An evidence item's typed source from the wire: `None` when the record
/// predates sources (only `artifact` is set).
pub fn evidence_source(e: &pb::Evidence) -> Result<Option<Source>, InvalidEnum> {
    match &e.source {
        Some(s) => source_of(s),
        None => Ok(None),
    }
}

/// A typed source from the wire; `None` when it names no kind.
fn source_of(s: &pb::EvidenceSource) -> Result<Option<Source>, InvalidEnum> {
    use pb::evidence_source::Kind;
    let Some(kind) = s.kind.as_ref() else {
        return Ok(None);
    };
    Ok(Some(match kind {
        Kind::Check(c) => Source::Check {
            name: CheckName::try_from(c.name()).map_err(|_| InvalidEnum {
                field: "CheckSource.name",
                value: c.name,
            })?,
            from: c.from.clone(),
            to: c.to.clone(),
        },
        Kind::Capture(c) => Source::Capture {
            probe: c.probe.clone(),
            interface: c.interface.clone(),
            packet: (c.packet > 0).then_some(c.packet),
        },
        Kind::Inventory(i) => Source::Inventory {
            kind: i.kind.clone(),
            namespace: i.namespace.clone(),
            name: i.name.clone(),
        },
    }))
}

impl From<&Item> for pb::Evidence {
    fn from(i: &Item) -> Self {
        pb::Evidence {
            probe: i.probe.clone(),
            observation: i.observation.clone(),
            artifact: i.artifact.clone(),
            source: Some(pb::EvidenceSource::from(&i.source)),
        }
    }
}

impl From<&Claim> for pb::Claim {
    fn from(c: &Claim) -> Self {
        pb::Claim {
            text: c.text.clone(),
            evidence: c
                .evidence
                .iter()
                .map(|&i| u32::try_from(i).unwrap_or(u32::MAX))
                .collect(),
        }
    }
}

impl From<&pb::Claim> for Claim {
    fn from(c: &pb::Claim) -> Self {
        Claim {
            text: c.text.clone(),
            evidence: c.evidence.iter().map(|&i| i as usize).collect(),
        }
    }
}

impl From<&Step> for pb::PathStep {
    fn from(s: &Step) -> Self {
        pb::PathStep {
            leg: pb::PathLeg::from(s.leg).into(),
            at: s.at.clone(),
            action: pb::PathAction::from(s.action).into(),
            detail: s.detail.clone(),
            resource: s.resource.as_ref().map(|r| pb::PathResource {
                kind: pb::PathResourceKind::from(r.kind).into(),
                name: r.name.clone(),
            }),
            source: s.source.as_ref().map(pb::EvidenceSource::from),
            evidence: s
                .evidence
                .iter()
                .map(|&i| u32::try_from(i).unwrap_or(u32::MAX))
                .collect(),
        }
    }
}

impl TryFrom<&pb::PathStep> for Step {
    type Error = InvalidEnum;

    fn try_from(s: &pb::PathStep) -> Result<Self, InvalidEnum> {
        Ok(Step {
            leg: Leg::try_from(s.leg())?,
            at: s.at.clone(),
            action: Action::try_from(s.action())?,
            detail: s.detail.clone(),
            resource: s
                .resource
                .as_ref()
                .map(|r| {
                    Ok::<_, InvalidEnum>(Resource {
                        kind: ResourceKind::try_from(r.kind())?,
                        name: r.name.clone(),
                    })
                })
                .transpose()?,
            source: match &s.source {
                Some(src) => source_of(src)?,
                None => None,
            },
            evidence: s.evidence.iter().map(|&i| i as usize).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_value_has_the_wire_name_of_its_string() {
        for c in Class::ALL {
            let w = pb::VerdictClass::from(c);
            assert_eq!(
                w.as_str_name(),
                format!("VERDICT_CLASS_{}", c.as_str().to_uppercase())
            );
            assert_eq!(Class::try_from(w), Ok(c));
        }
        for c in Cause::ALL {
            let w = pb::VerdictCause::from(c);
            assert_eq!(
                w.as_str_name(),
                format!("VERDICT_CAUSE_{}", c.as_str().to_uppercase())
            );
            assert_eq!(Cause::try_from(w), Ok(c));
        }
        for s in [Status::Ok, Status::Fail, Status::Skipped] {
            let w = pb::CheckStatus::from(s);
            assert_eq!(
                w.as_str_name(),
                format!("CHECK_STATUS_{}", s.as_str().to_uppercase())
            );
        }
        for d in [Direction::Forward, Direction::Reverse, Direction::Local] {
            let w = pb::CheckDirection::from(d);
            assert_eq!(
                w.as_str_name(),
                format!("CHECK_DIRECTION_{}", d.as_str().to_uppercase())
            );
        }
    }

    #[test]
    fn unset_enums_and_mismatched_causes_are_invalid() {
        assert_eq!(
            Status::try_from(pb::CheckStatus::Unspecified),
            Err(InvalidEnum {
                field: "Check.status",
                value: 0
            })
        );
        let v = pb::Verdict {
            class: pb::VerdictClass::DnsFailure.into(),
            cause: pb::VerdictCause::Loss.into(),
            ..Default::default()
        };
        assert!(verdict_kind(&v).is_err());
        let ok = pb::Verdict {
            class: pb::VerdictClass::MtuBlackhole.into(),
            ..Default::default()
        };
        assert_eq!(verdict_kind(&ok), Ok((Class::MtuBlackhole, None)));
    }

    #[test]
    fn evidence_sources_survive_the_wire() {
        for s in [
            Source::Check {
                name: CheckName::TcpConnect,
                from: "cloudvm-1".into(),
                to: "198.18.0.12:30080".into(),
            },
            Source::Capture {
                probe: "node-2".into(),
                interface: "eth0".into(),
                packet: Some(3),
            },
            Source::Capture {
                probe: "node-2".into(),
                interface: "eth0".into(),
                packet: None,
            },
            Source::Inventory {
                kind: "pod".into(),
                namespace: "kube-system".into(),
                name: "kube-proxy-node-3".into(),
            },
        ] {
            let e = pb::Evidence {
                source: Some(pb::EvidenceSource::from(&s)),
                ..Default::default()
            };
            assert_eq!(evidence_source(&e), Ok(Some(s)));
        }
        assert_eq!(evidence_source(&pb::Evidence::default()), Ok(None));
    }
}
