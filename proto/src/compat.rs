//! Reading run records written before check and verdict fields became
//! enums. Such records carry the contract's strings ("ok", "forward",
//! "mtu_blackhole") in the deprecated `legacy_*` fields; [`upgrade`] fills
//! each unset enum from its string, once, where a stored record is loaded.
//! It is the only code that reads the legacy fields.
//!
//! Not a general migration framework, and it writes nothing back: a record
//! is upgraded every time it is read.

#![allow(deprecated)]

use crate::pb;

/// Fills the enums of a record's diagnosis from the legacy strings where
/// the enums are unset; a string that names no value leaves the enum unset.
pub fn upgrade(record: &mut pb::RunRecord) {
    let Some(diagnosis) = record.diagnosis.as_mut() else {
        return;
    };
    for check in &mut diagnosis.checks {
        upgrade_check(check);
    }
    if let Some(verdict) = diagnosis.verdict.as_mut() {
        upgrade_verdict(verdict);
    }
}

/// Fills a check's enums from its legacy strings where they are unset.
pub fn upgrade_check(c: &mut pb::Check) {
    if c.name == 0 {
        c.name = value("CHECK_NAME_", &c.legacy_name, pb::CheckName::from_str_name);
    }
    if c.status == 0 {
        c.status = value(
            "CHECK_STATUS_",
            &c.legacy_status,
            pb::CheckStatus::from_str_name,
        );
    }
    if c.direction == 0 {
        c.direction = value(
            "CHECK_DIRECTION_",
            &c.legacy_direction,
            pb::CheckDirection::from_str_name,
        );
    }
}

/// Fills a verdict's enums from its legacy strings where they are unset.
pub fn upgrade_verdict(v: &mut pb::Verdict) {
    if v.class == 0 {
        v.class = value(
            "VERDICT_CLASS_",
            &v.legacy_class,
            pb::VerdictClass::from_str_name,
        );
    }
    if v.cause == 0 {
        v.cause = value(
            "VERDICT_CAUSE_",
            &v.legacy_cause,
            pb::VerdictCause::from_str_name,
        );
    }
}

/// The enum value whose protobuf name is `prefix` + `legacy` in upper case
/// (0, unspecified, when there is none).
fn value<E: Into<i32>>(prefix: &str, legacy: &str, parse: fn(&str) -> Option<E>) -> i32 {
    if legacy.is_empty() {
        return 0;
    }
    parse(&format!("{prefix}{}", legacy.to_ascii_uppercase())).map_or(0, Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(status: &str, direction: &str, class: &str, cause: &str) -> pb::RunRecord {
        pb::RunRecord {
            diagnosis: Some(pb::Diagnosis {
                checks: vec![pb::Check {
                    legacy_name: "icmp_large".into(),
                    legacy_status: status.into(),
                    legacy_direction: direction.into(),
                    ..Default::default()
                }],
                verdict: Some(pb::Verdict {
                    legacy_class: class.into(),
                    legacy_cause: cause.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn records_written_with_strings_read_as_enums() {
        let mut r = legacy("fail", "reverse", "dns_failure", "dns_unreachable");
        upgrade(&mut r);
        let d = r.diagnosis.unwrap();
        let (c, v) = (&d.checks[0], d.verdict.unwrap());
        assert_eq!(c.name(), pb::CheckName::IcmpLarge);
        assert_eq!(c.status(), pb::CheckStatus::Fail);
        assert_eq!(c.direction(), pb::CheckDirection::Reverse);
        assert_eq!(v.class(), pb::VerdictClass::DnsFailure);
        assert_eq!(v.cause(), pb::VerdictCause::DnsUnreachable);
    }

    #[test]
    fn enums_already_set_win_and_unknown_strings_stay_unset() {
        let mut r = legacy("ok", "sideways", "mtu_blackhole", "");
        r.diagnosis
            .as_mut()
            .unwrap()
            .verdict
            .as_mut()
            .unwrap()
            .class = pb::VerdictClass::Degraded.into();
        upgrade(&mut r);
        let d = r.diagnosis.unwrap();
        assert_eq!(d.checks[0].direction(), pb::CheckDirection::Unspecified);
        assert_eq!(d.checks[0].status(), pb::CheckStatus::Ok);
        let v = d.verdict.unwrap();
        assert_eq!(v.class(), pb::VerdictClass::Degraded);
        assert_eq!(v.cause(), pb::VerdictCause::Unspecified);
    }
}
