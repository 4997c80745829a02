//! Reaching the coordinator: which URL and certificate to use (flags, then
//! `MESH_*` variables, then the config file), and how failures map to the
//! contract's exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use probemesh_proto::pb::control_client::ControlClient;
use probemesh_proto::pki::TlsDir;
use tonic::transport::Channel;

use meshctl_lab::client_config::ClientConfigFile;

/// Exit codes of the contract (DESIGN §3).
pub mod exit {
    /// Healthy / success.
    pub const OK: u8 = 0;
    /// A fault was found.
    pub const FAULT: u8 = 1;
    /// Bad usage or bad input.
    pub const USAGE: u8 = 2;
    /// Inconclusive (e.g. a probe not connected).
    pub const INCONCLUSIVE: u8 = 3;
    /// Cannot reach or authenticate to the coordinator.
    pub const UNREACHABLE: u8 = 4;
}

/// An error that carries its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// Exit code to leave with.
    pub code: u8,
    /// What to tell the user (already says what to do).
    pub message: String,
}

impl Failure {
    /// Bad usage or input: exit 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: exit::USAGE,
            message: message.into(),
        }
    }

    /// Coordinator unreachable or refused us: exit 4.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self {
            code: exit::UNREACHABLE,
            message: message.into(),
        }
    }

    /// Maps a coordinator answer to the contract's exit code.
    ///
    /// A broken call (`Unavailable`/`Unknown`/`Cancelled`) is a refused
    /// client certificate only when the TLS layer says so (an alert, a
    /// certificate or handshake error; the reason is then in the
    /// coordinator's log, so the message says where to look); otherwise the
    /// coordinator went away or restarted mid-call (a reset, a refused or
    /// closed connection), and the hint says that instead.
    pub fn from_status(status: &tonic::Status) -> Self {
        use tonic::Code;
        let about_probe = status.message().starts_with("probe ");
        // The coordinator's policy refused the request as asked: bad input.
        let policy = status.message().starts_with("policy rule ");
        let (code, what) = match status.code() {
            Code::PermissionDenied | Code::ResourceExhausted if policy => {
                (exit::USAGE, "refused by the coordinator's ")
            }
            Code::InvalidArgument | Code::NotFound | Code::AlreadyExists | Code::OutOfRange => {
                (exit::USAGE, "")
            }
            Code::Unauthenticated => (exit::UNREACHABLE, "coordinator refused the connection: "),
            Code::PermissionDenied => (exit::UNREACHABLE, "coordinator refused the call: "),
            Code::Unavailable if about_probe => (exit::INCONCLUSIVE, ""),
            Code::Unavailable | Code::Unknown | Code::Cancelled => {
                let text = status.message().to_ascii_lowercase();
                let hint = if ["alert", "certificate", "handshake", "tls"]
                    .iter()
                    .any(|w| text.contains(w))
                {
                    "if it logs `tls handshake refused`, it does not trust this certificate: check --tls-dir and --identity"
                } else {
                    "the connection broke or was refused: the coordinator is down or restarting; check that it runs and retry"
                };
                return Self {
                    code: exit::UNREACHABLE,
                    message: format!(
                        "cannot reach the coordinator: {} ({hint})",
                        status.message()
                    ),
                };
            }
            _ => (exit::INCONCLUSIVE, ""),
        };
        Self {
            code,
            message: format!("{what}{}", status.message()),
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(&status)
    }
}

/// How to reach the coordinator, as given on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoint {
    /// Coordinator URL [default: from `meshctl lab up` / config file, else https://127.0.0.1:7443]
    #[arg(long, env = "MESH_COORDINATOR", global = true)]
    pub coordinator: Option<String>,
    /// Directory holding ca.pem and IDENTITY.pem / IDENTITY-key.pem [default: from config file]
    #[arg(long, env = "MESH_TLS_DIR", global = true)]
    pub tls_dir: Option<PathBuf>,
    /// Certificate name to present [default: admin]
    #[arg(long, env = "MESH_IDENTITY", global = true)]
    pub identity: Option<String>,
    /// Namespace of pod: and svc: names given without one, as kubectl's -n
    /// [default: the current kubeconfig context's namespace]
    #[arg(short = 'n', long, env = "MESH_NAMESPACE", global = true)]
    pub namespace: Option<String>,
}

impl Endpoint {
    /// Adds the namespace (`-n`, else the kubeconfig context's) to pod and
    /// Service names of `request` given without one.
    pub fn qualify(&self, request: &mut probemesh_proto::pb::RunRequest) {
        if !crate::namespace::needed(request) {
            return;
        }
        if let Some(ns) = self.namespace.clone().or_else(crate::namespace::current) {
            crate::namespace::apply(request, &ns);
        }
    }

    /// The coordinator URL, TLS directory and identity in force: the
    /// flags, else the config file `meshctl lab up` writes, else defaults.
    fn resolve(&self) -> Result<(String, PathBuf, String), Failure> {
        let file = match ClientConfigFile::default_path() {
            Some(p) => ClientConfigFile::load(&p).map_err(|e| Failure::usage(format!("{e:#}")))?,
            None => ClientConfigFile::default(),
        };
        let url = self
            .coordinator
            .clone()
            .or(file.coordinator)
            .unwrap_or_else(|| "https://127.0.0.1:7443".to_owned());
        let tls_dir = self.tls_dir.clone().or(file.tls_dir).ok_or_else(|| {
            Failure::usage(
                "no TLS directory: pass --tls-dir DIR (or MESH_TLS_DIR), or run `meshctl lab up` \
                 which configures meshctl for the lab",
            )
        })?;
        let identity = self
            .identity
            .clone()
            .or(file.identity)
            .unwrap_or_else(|| "admin".to_owned());
        probemesh_proto::tls::coordinator_host(&url)
            .map_err(|e| Failure::usage(format!("--coordinator: {e}")))?;
        Ok((url, tls_dir, identity))
    }

    /// The coordinator's host, as the URL in force names it.
    pub fn coordinator_host(&self) -> Result<String, Failure> {
        let (url, _, _) = self.resolve()?;
        probemesh_proto::tls::coordinator_host(&url)
            .map(|(host, _)| host)
            .map_err(|e| Failure::usage(format!("--coordinator: {e}")))
    }

    /// Connects to the Control service.
    pub async fn control(&self) -> Result<ControlClient<Channel>, Failure> {
        let (url, tls_dir, identity) = self.resolve()?;
        let tls = probemesh_proto::tls::client_config(&TlsDir::new(tls_dir), &identity)
            .map_err(|e| Failure::usage(e.to_string()))?;
        let channel = probemesh_proto::tls::connect(&url, tls)
            .await
            .map_err(|e| {
                Failure::unreachable(format!("cannot reach the coordinator at {url}: {e}"))
            })?;
        Ok(ControlClient::new(channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_call_blames_tls_only_when_tls_says_so() {
        let refused = Failure::from_status(&tonic::Status::unavailable(
            "error trying to connect: tcp connect error: Connection refused (os error 111)",
        ));
        assert_eq!(refused.code, exit::UNREACHABLE);
        assert!(!refused.message.contains("tls"), "{}", refused.message);
        assert!(
            refused.message.contains("down or restarting"),
            "{}",
            refused.message
        );
        let reset = Failure::from_status(&tonic::Status::unknown(
            "transport error: connection reset by peer",
        ));
        assert!(
            reset.message.contains("down or restarting"),
            "{}",
            reset.message
        );
        let alert = Failure::from_status(&tonic::Status::unknown(
            "transport error: received fatal alert: UnknownCA",
        ));
        assert!(
            alert.message.contains("tls handshake refused"),
            "{}",
            alert.message
        );
    }

    #[test]
    fn a_policy_refusal_is_bad_input_other_refusals_are_not() {
        let policy = |code| {
            Failure::from_status(&tonic::Status::new(
                code,
                "policy rule limits.rate: 'admin' started more than 600 runs in a burst",
            ))
        };
        assert_eq!(policy(tonic::Code::PermissionDenied).code, exit::USAGE);
        assert_eq!(policy(tonic::Code::ResourceExhausted).code, exit::USAGE);
        let role = Failure::from_status(&tonic::Status::permission_denied(
            "identity 'v' (role viewer) may not call Control.StartRun",
        ));
        assert_eq!(role.code, exit::UNREACHABLE);
    }
}
