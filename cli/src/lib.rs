//! meshctl: the probemesh command line. Talks to the coordinator's `Control`
//! service, manages certificates, and runs the lab. It never depends on the
//! coordinator crate; the two share only `probemesh-proto`.

pub mod client;
pub mod commands;
pub mod completion;
pub mod invocation;
pub mod lab;
pub mod namespace;
pub mod output;

/// clap value parser for every duration flag (`500ms`, `2s`, `1m`).
pub fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    probemesh_model::duration::parse_duration(s).map_err(|e| e.to_string())
}

/// A token's `--ttl`: from 1s to `max`, in whole seconds; the refusal
/// names the range and `examples`.
pub fn parse_ttl_arg(
    s: &str,
    what: &str,
    max: std::time::Duration,
    examples: &str,
) -> Result<std::time::Duration, String> {
    let ttl = parse_duration_arg(s)?;
    if ttl < std::time::Duration::from_secs(1) || ttl > max {
        return Err(format!(
            "{what} lives from 1s to {} (e.g. {examples})",
            humantime::format_duration(max)
        ));
    }
    Ok(std::time::Duration::from_secs(ttl.as_secs()))
}

/// clap value parser for intervals and timeouts, which must be more than
/// zero (a zero interval is not "as fast as possible": it is refused).
pub fn parse_positive_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration_arg(s)?;
    if d.is_zero() {
        return Err("must be more than 0 (e.g. 200ms, 1s)".to_owned());
    }
    Ok(d)
}
