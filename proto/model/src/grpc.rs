//! The one place the model's check and verdict enums meet the wire enums:
//! `From` the model to `pb`, `TryFrom` `pb` to the model with a typed error
//! naming the field that is unset or unknown.
//!
//! Not the compatibility with records that carry strings (that is
//! `probemesh_proto::compat`, applied before these conversions).

use probemesh_proto::pb;

use crate::check::{CheckName, Direction, Status};
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
}
