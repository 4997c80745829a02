//! `meshctl join-token create`: a one-time token for an external host.

use std::time::Duration;

use probemesh_proto::identity::validate_probe_name;
use probemesh_proto::pb;
use probemesh_proto::token::MAX_TOKEN_TTL;
use serde::Serialize;

use crate::client::{Endpoint, Failure};
use crate::output::{OutputFormat, print_json};

/// Join tokens.
#[derive(Debug, clap::Subcommand)]
pub enum JoinTokenCommand {
    /// Create a token for one external host; prints it on stdout.
    ///
    /// On the host: `mesh-probe join --coordinator URL --token TOKEN --tls-dir DIR`.
    /// The token is one-time, expires after --ttl, carries the CA
    /// fingerprint the host pins, and yields a certificate for exactly NAME.
    Create {
        /// Probe name the host will have (not ca, admin or coordinator, and
        /// not a name a probe already holds).
        #[arg(long, value_parser = probe_name)]
        name: String,
        /// How long the token stays valid (e.g. 30m, 1h; from 1s to 7 days).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
    },
}

/// clap value parser for `--ttl`: a duration from 1s to
/// [`MAX_TOKEN_TTL`], whole seconds.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    crate::parse_ttl_arg(s, "a token", MAX_TOKEN_TTL, "30m, 1h")
}

/// A name a probe may take, checked before the coordinator is asked.
fn probe_name(s: &str) -> Result<String, String> {
    validate_probe_name(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Serialize)]
struct Token {
    name: String,
    token: String,
    expires: String,
}

/// Runs a join-token command.
pub async fn run(
    cmd: JoinTokenCommand,
    endpoint: &Endpoint,
    output: OutputFormat,
) -> Result<(), Failure> {
    let JoinTokenCommand::Create { name, ttl } = cmd;
    let mut control = endpoint.control().await?;
    let resp = control
        .create_join_token(pb::CreateJoinTokenRequest {
            name: name.clone(),
            ttl_seconds: ttl.as_secs(),
        })
        .await?
        .into_inner();
    let out = Token {
        name,
        token: resp.token,
        expires: super::format_unix_ms(resp.expires_unix_ms),
    };
    match output {
        OutputFormat::Json => print_json(&out).map_err(|e| Failure::usage(e.to_string())),
        OutputFormat::Table => {
            println!("{}", out.token);
            eprintln!(
                "token for '{}' expires {}; on the host run:\n  mesh-probe join --coordinator URL --token <token> --tls-dir DIR",
                out.name, out.expires
            );
            Ok(())
        }
    }
}
