//! Fuzz-style property tests of the model's parsers of user input: TARGET
//! specs and durations. Each runs for `MESH_FUZZ_SECONDS` (probemesh-budget);
//! properties: never a panic, errors are values that teach, what parses
//! prints back to the same value.

use probemesh_budget::run_for;
use probemesh_model::duration::parse_duration;
use probemesh_model::target::Target;
use proptest::prelude::*;

/// Strings shaped like TARGET specs: a known or near-miss prefix, names,
/// addresses, ports in and out of range, separators and whitespace.
fn target_like() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        Just(""),
        Just("probe:"),
        Just("nodeport:"),
        Just("svc:"),
        Just("pod:"),
        Just("dns:"),
        Just("http://"),
        Just("Probe:"),
    ];
    let part = prop_oneof![
        "[a-z0-9.-]{0,20}",
        "[a-zA-Z0-9./:_\\[\\]-]{0,20}",
        any::<std::net::IpAddr>().prop_map(|ip| ip.to_string()),
        any::<std::net::SocketAddr>().prop_map(|sa| sa.to_string()),
        "\\PC{0,6}",
    ];
    let port = prop_oneof![
        Just(String::new()),
        any::<u16>().prop_map(|p| format!(":{p}")),
        "(:[0-9]{0,7}|:-1|:)",
    ];
    let space = "[ \t\n]{0,2}";
    (
        space,
        prefix,
        part.clone(),
        proptest::option::of(part),
        port,
        "[ \t\n]{0,2}",
    )
        .prop_map(|(lead, prefix, a, b, port, trail)| {
            let b = b.map(|b| format!("/{b}")).unwrap_or_default();
            format!("{lead}{prefix}{a}{b}{port}{trail}")
        })
}

#[test]
fn targets_never_panic_and_print_back_to_themselves() {
    let spec = prop_oneof![3 => target_like(), 1 => any::<String>()];
    run_for("target specs", spec, |spec| match spec.parse::<Target>() {
        Ok(target) => {
            let printed = target.to_string();
            prop_assert!(
                !printed.chars().any(|c| c.is_whitespace() || c.is_control()),
                "{:?} printed as {:?}",
                spec,
                printed
            );
            prop_assert_eq!(printed.parse::<Target>(), Ok(target));
            Ok(())
        }
        Err(e) => {
            prop_assert!(e.to_string().len() > 10, "{e}");
            Ok(())
        }
    });
}

/// Strings shaped like durations: numbers (huge ones too) with real and
/// made-up units, several terms, signs and spaces.
fn duration_like() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        (0u64..10_000).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[0-9]{18,30}",
        "[0-9]{0,4}\\.[0-9]{0,4}",
    ];
    let unit = prop_oneof![
        "(ns|us|µs|ms|s|sec|m|min|h|hr|d|days|w|M|y|years)",
        "[a-zA-Z]{0,4}",
    ];
    let term = (number, "[ ]?", unit).prop_map(|(n, s, u)| format!("{n}{s}{u}"));
    ("[ -]{0,2}", proptest::collection::vec(term, 1..4), " ?")
        .prop_map(|(lead, terms, join)| format!("{lead}{}", terms.join(&join)))
}

#[test]
fn durations_never_panic_and_print_back_to_themselves() {
    let text = prop_oneof![3 => duration_like(), 1 => any::<String>()];
    run_for("durations", text, |text| match parse_duration(&text) {
        Ok(d) => {
            let printed = humantime::format_duration(d).to_string();
            prop_assert_eq!(
                parse_duration(&printed),
                Ok(d),
                "{:?} printed as {}",
                text,
                printed
            );
            Ok(())
        }
        Err(e) => {
            prop_assert!(e.to_string().contains("e.g. 500ms"), "{e}");
            Ok(())
        }
    });
}
