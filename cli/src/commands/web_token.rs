//! `meshctl web-token`: a short-lived token to read the coordinators' web
//! view (`mesh-coordinator --web`) from a browser without a client
//! certificate.

use std::time::Duration;

use probemesh_proto::pb;
use probemesh_proto::viewer_token::MAX_VIEWER_TTL;
use serde::Serialize;

use crate::client::{Endpoint, Failure};
use crate::output::{OutputFormat, print_json};

const AFTER_HELP: &str = "\
The token reads as your certificate's identity and only reads, whatever
your role. It expires after --ttl (never after your certificate), and
`meshctl certs revoke NAME` withdraws it with the certificate. Any
coordinator of the mesh accepts it.

Use it:
  open the printed link once in a browser: it sets a cookie for the
  token's life and shows the runs (the page is served with the
  coordinator's certificate: trust the mesh's ca.pem, or accept it);
  or send it: curl --cacert ca.pem -H \"Authorization: Bearer $TOKEN\" https://HOST:PORT/

Examples:
  meshctl web-token
  meshctl web-token --ttl 1h -o json | jq -r .url";

/// `meshctl web-token`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct WebTokenArgs {
    /// How long the token reads (e.g. 15m, 2h; from 1s to 12h).
    #[arg(long, default_value = "15m", value_parser = parse_ttl)]
    pub ttl: Duration,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    crate::parse_ttl_arg(s, "a viewer token", MAX_VIEWER_TTL, "15m, 2h")
}

/// What `-o json` prints.
#[derive(Debug, Serialize)]
struct WebToken {
    token: String,
    identity: String,
    expires: String,
    /// The link that opens the web view with the token; absent when this
    /// coordinator serves none.
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

/// Asks the coordinator for a viewer token and prints it.
pub async fn run(
    args: WebTokenArgs,
    endpoint: &Endpoint,
    output: OutputFormat,
) -> Result<(), Failure> {
    let mut control = endpoint.control().await?;
    let resp = control
        .issue_viewer_token(pb::IssueViewerTokenRequest {
            ttl_seconds: args.ttl.as_secs(),
        })
        .await?
        .into_inner();
    let url = if resp.web_port == 0 {
        None
    } else {
        let host = endpoint.coordinator_host()?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Some(format!(
            "https://{host}:{}/login?token={}",
            resp.web_port, resp.token
        ))
    };
    let out = WebToken {
        token: resp.token,
        identity: resp.identity,
        expires: super::format_unix_ms(resp.expires_unix_ms),
        url,
    };
    match output {
        OutputFormat::Json => print_json(&out).map_err(|e| Failure::usage(e.to_string())),
        OutputFormat::Table => {
            println!("{}", out.token);
            match &out.url {
                Some(url) => eprintln!(
                    "viewer token for '{}', expires {}; open once in a browser:\n  {url}",
                    out.identity, out.expires
                ),
                None => eprintln!(
                    "viewer token for '{}', expires {}; this coordinator serves no web view \
                     (start it with --web ADDR:PORT), another of the mesh may",
                    out.identity, out.expires
                ),
            }
            Ok(())
        }
    }
}
