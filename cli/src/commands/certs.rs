//! `meshctl certs init|issue|revoke`: the CA and the certificates of the
//! mesh (init and issue work on the CA's directory; revoke asks the
//! coordinator).

use std::path::PathBuf;

use probemesh_proto::identity::{Role, validate_name};
use probemesh_proto::pb;
use probemesh_proto::pki::{self, CertAuthority, TlsDir};
use serde::Serialize;

use crate::client::{Endpoint, Failure};
use crate::output::{OutputFormat, print_json};

/// Certificate management.
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create a CA plus the coordinator's and an operator ("admin") certificate.
    ///
    /// Writes DIR/ca.pem ca-key.pem coordinator.pem coordinator-key.pem
    /// admin.pem admin-key.pem (ECDSA P-256). The coordinator certificate is
    /// valid for localhost, 127.0.0.1 and every --coordinator-san: name each
    /// address or DNS name probes and meshctl dial it by. Refuses to
    /// overwrite an existing CA.
    Init {
        /// Directory to create the files in.
        #[arg(long, env = "MESH_TLS_DIR")]
        dir: PathBuf,
        /// Extra DNS name or IP the coordinator is reached by (repeatable).
        #[arg(long = "coordinator-san", value_name = "NAME_OR_IP")]
        coordinator_sans: Vec<String>,
    },
    /// Issue a certificate signed by the CA in DIR.
    ///
    /// Roles: `probe` (a probe daemon: may only attach its stream),
    /// `operator` (may run tests and captures), `viewer` (may only read).
    /// Writes DIR/NAME.pem and DIR/NAME-key.pem.
    Issue {
        /// Directory holding ca.pem and ca-key.pem.
        #[arg(long, env = "MESH_TLS_DIR")]
        dir: PathBuf,
        /// Name the certificate is for (probe name or user name).
        #[arg(long)]
        name: String,
        /// What the holder may do.
        #[arg(long, value_parser = ["probe", "operator", "viewer"])]
        role: String,
        /// Replace an existing certificate of that name.
        #[arg(long)]
        force: bool,
        /// Days the certificate is valid (default: 7 for probes, which renew
        /// over their stream; 365 for operators and viewers).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        days: Option<u16>,
    },
    /// Revoke certificates: the coordinator refuses them from now on and
    /// drops a live stream of one at once.
    ///
    /// NAME revokes every certificate of that name issued up to now (issue a
    /// new one afterwards and it works; pending join tokens for the name are
    /// withdrawn and the name is free for a new one). SERIAL (32 hex digits,
    /// colons allowed, as `openssl x509 -serial` prints it) revokes that one
    /// certificate.
    Revoke {
        /// A certificate name, or a serial number.
        #[arg(value_name = "NAME|SERIAL")]
        target: String,
    },
}

/// Hex digits of the serials probemesh issues (16 bytes).
const SERIAL_HEX: usize = 32;

/// `target` as (name, serial): a serial when it is [`SERIAL_HEX`] hex digits
/// (colons ignored), else a certificate name.
fn revoke_target(target: &str) -> Result<(String, String), Failure> {
    let digits = target.trim().replace(':', "");
    if digits.len() == SERIAL_HEX && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok((String::new(), digits.to_ascii_lowercase()));
    }
    validate_name(target)
        .map_err(|e| Failure::usage(format!("{e}; or give a serial of {SERIAL_HEX} hex digits")))?;
    Ok((target.to_owned(), String::new()))
}

#[derive(Debug, Serialize)]
struct Revoked {
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    serial: String,
    revoked: String,
    dropped_streams: Vec<String>,
    tokens_withdrawn: u32,
}

async fn revoke(target: &str, endpoint: &Endpoint, output: OutputFormat) -> Result<(), Failure> {
    let (name, serial) = revoke_target(target)?;
    let mut control = endpoint.control().await?;
    let resp = control
        .revoke_certificate(pb::RevokeCertificateRequest { name, serial })
        .await?
        .into_inner();
    let out = Revoked {
        name: resp.name,
        serial: resp.serial,
        revoked: super::format_unix_ms(resp.revoked_unix_ms),
        dropped_streams: resp.dropped_streams,
        tokens_withdrawn: resp.tokens_withdrawn,
    };
    match output {
        OutputFormat::Json => print_json(&out).map_err(|e| Failure::usage(e.to_string())),
        OutputFormat::Table => {
            let what = if out.name.is_empty() {
                format!("the certificate with serial {}", out.serial)
            } else {
                format!("every certificate of '{}' issued up to now", out.name)
            };
            println!("revoked {what} at {}", out.revoked);
            if out.dropped_streams.is_empty() {
                println!("no live stream used it");
            } else {
                println!("dropped live stream of: {}", out.dropped_streams.join(", "));
            }
            if out.tokens_withdrawn > 0 {
                println!("withdrew {} pending join token(s)", out.tokens_withdrawn);
            }
            Ok(())
        }
    }
}

#[derive(Debug, Serialize)]
struct Written {
    dir: PathBuf,
    files: Vec<PathBuf>,
}

/// Runs a certs command.
pub async fn run(
    cmd: CertsCommand,
    endpoint: &Endpoint,
    output: OutputFormat,
) -> Result<(), Failure> {
    let written = match cmd {
        CertsCommand::Revoke { target } => return revoke(&target, endpoint, output).await,
        CertsCommand::Init {
            dir,
            coordinator_sans,
        } => {
            let report = pki::init(&TlsDir::new(dir.clone()), &coordinator_sans)
                .map_err(|e| Failure::usage(e.to_string()))?;
            Written {
                dir,
                files: report.files,
            }
        }
        CertsCommand::Issue {
            dir,
            name,
            role,
            force,
            days,
        } => {
            let role: Role =
                role.parse()
                    .map_err(|e: probemesh_proto::identity::IdentityError| {
                        Failure::usage(e.to_string())
                    })?;
            let tls = TlsDir::new(dir.clone());
            let ca = CertAuthority::load(&tls).map_err(|e| Failure::usage(e.to_string()))?;
            let files = ca
                .issue_to_dir(
                    &tls,
                    &name,
                    role,
                    force,
                    days.map(|d| time::Duration::days(i64::from(d))),
                )
                .map_err(|e| Failure::usage(e.to_string()))?;
            Written {
                dir,
                files: files.to_vec(),
            }
        }
    };
    match output {
        OutputFormat::Json => print_json(&written).map_err(|e| Failure::usage(e.to_string())),
        OutputFormat::Table => {
            for f in &written.files {
                println!("wrote {}", f.display());
            }
            Ok(())
        }
    }
}
