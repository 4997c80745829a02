//! Durations as the command line spells them: `500ms`, `2s`, `1m`, `1h30m`.

use std::time::Duration;

/// A duration string that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration '{input}': {reason} (write a number with a unit, e.g. 500ms, 2s, 1m)")]
pub struct InvalidDuration {
    /// What the user typed.
    pub input: String,
    /// Why it was refused.
    pub reason: String,
}

/// Parses a human duration. Every duration flag and variable goes through here.
pub fn parse_duration(input: &str) -> Result<Duration, InvalidDuration> {
    let trimmed = input.trim();
    let refuse = |reason: &str| InvalidDuration {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    if trimmed.is_empty() {
        return Err(refuse("it is empty"));
    }
    if trimmed.starts_with('-') {
        return Err(refuse("durations cannot be negative"));
    }
    humantime::parse_duration(trimmed).map_err(|e| refuse(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("500ms", Duration::from_millis(500))]
    #[test_case("2s", Duration::from_secs(2))]
    #[test_case("1m", Duration::from_secs(60))]
    #[test_case("1h30m", Duration::from_secs(5400))]
    #[test_case(" 250us ", Duration::from_micros(250))]
    #[test_case("0s", Duration::ZERO)]
    fn accepts(input: &str, expected: Duration) {
        assert_eq!(parse_duration(input), Ok(expected));
    }

    #[test_case("" ; "empty")]
    #[test_case("5" ; "no unit")]
    #[test_case("-2s" ; "negative")]
    #[test_case("2 parsecs" ; "unknown unit")]
    #[test_case("ms" ; "no number")]
    #[test_case("1.5.2s" ; "garbage")]
    fn refuses_with_a_teaching_message(input: &str) {
        let err = parse_duration(input)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("e.g. 500ms, 2s, 1m"), "{err}");
        assert!(err.contains(&format!("'{input}'")), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,24}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn millis_round_trip(ms in 0u64..10_000_000) {
            proptest::prop_assert_eq!(parse_duration(&format!("{ms}ms")), Ok(Duration::from_millis(ms)));
        }
    }
}
