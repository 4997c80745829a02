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
