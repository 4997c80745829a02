//! `meshctl certs init|issue`: the CA and the certificates of the mesh.

use std::path::PathBuf;

use probemesh_proto::identity::Role;
use probemesh_proto::pki::{self, CertAuthority, TlsDir};
use serde::Serialize;

use crate::client::Failure;
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
    },
}

#[derive(Debug, Serialize)]
struct Written {
    dir: PathBuf,
    files: Vec<PathBuf>,
}

/// Runs a certs command.
pub fn run(cmd: CertsCommand, output: OutputFormat) -> Result<(), Failure> {
    let written = match cmd {
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
        } => {
            let role: Role =
                role.parse()
                    .map_err(|e: probemesh_proto::identity::IdentityError| {
                        Failure::usage(e.to_string())
                    })?;
            let tls = TlsDir::new(dir.clone());
            let ca = CertAuthority::load(&tls).map_err(|e| Failure::usage(e.to_string()))?;
            let files = ca
                .issue_to_dir(&tls, &name, role, force)
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
