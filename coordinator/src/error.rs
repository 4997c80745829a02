//! The coordinator's error type, and its one conversion to `tonic::Status`.

use std::path::PathBuf;

/// Everything that can go wrong in the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No client certificate on a call that needs one.
    #[error(
        "a client certificate is required for {call}: pass --tls-dir/--identity (create one with `meshctl certs issue`)"
    )]
    NoCertificate { call: &'static str },
    /// The certificate's role may not make this call.
    #[error("identity '{name}' (role {role}) may not call {call}: {needs}")]
    Forbidden {
        name: String,
        role: &'static str,
        call: &'static str,
        needs: &'static str,
    },
    /// The caller's certificate is on the revocation list.
    #[error(
        "the certificate of '{name}' (serial {serial}) was revoked by {by} at {at}; ask an operator for a new one"
    )]
    Revoked {
        name: String,
        serial: String,
        by: String,
        at: String,
    },
    /// The request is malformed or names things that do not exist.
    #[error("{0}")]
    InvalidRequest(String),
    /// The named probe is not registered.
    #[error("no probe named '{0}' is registered (see `meshctl probes`)")]
    UnknownProbe(String),
    /// The named probe is registered but not connected.
    #[error("probe '{0}' is not connected (see `meshctl probes`)")]
    ProbeOffline(String),
    /// The policy does not allow the request.
    #[error("policy rule {rule}: {detail}")]
    PolicyDenied { rule: &'static str, detail: String },
    /// The request would pass one of the policy's limits right now.
    #[error("policy rule {rule}: {detail}")]
    PolicyExhausted { rule: &'static str, detail: String },
    /// The coordinator is shutting down and takes no new runs.
    #[error(
        "coordinator shutting down: it takes no new runs; retry once it is back (or against another coordinator)"
    )]
    ShuttingDown,
    /// A probe went away while running a task.
    #[error("probe '{0}' disconnected while running the task")]
    ProbeLost(String),
    /// The coordinator will not take on this work now (a bounded pool is
    /// full or over its time budget). Retryable.
    #[error("{0}")]
    Overloaded(String),
    /// A run or token id that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A name already taken (by a probe or a pending join token).
    #[error("{0}")]
    NameTaken(String),
    /// A join token was refused.
    #[error("join refused: {0}")]
    JoinRefused(String),
    /// A probe's stream was refused at attach.
    #[error("attach refused: {0}")]
    AttachRefused(#[from] crate::registry::AttachRefused),
    /// Persistent state could not be read or written.
    #[error("{op} {}: {source}", path.display())]
    Store {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The run store cannot be written (disk full, read-only, permissions):
    /// the run is refused or ends with this error rather than reported
    /// without its record.
    #[error(
        "cannot {what}: {}: {source}; free space there, fix its permissions, or point --store at another directory",
        path.display()
    )]
    StoreUnwritable {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// etcd (the shared state, `--etcd`) did not answer or refused a call
    /// within its time bound: nothing that needed it was done.
    #[error(
        "cannot {op} etcd at {endpoints}: {source}; check that etcd is up and reachable from this coordinator (etcdctl --endpoints {endpoints} endpoint health)"
    )]
    Etcd {
        op: &'static str,
        endpoints: String,
        source: etcd_client::Error,
    },
    /// This coordinator's membership lease in etcd ended (not renewed in
    /// time): the names it held may be taken by the others.
    #[error("the membership lease of coordinator '{id}' ended: {why}")]
    LeaseLost { id: String, why: &'static str },
    /// This coordinator lost its place in the shared state (its etcd lease)
    /// and takes no runs until it is back.
    #[error(
        "this coordinator is out of the mesh: {0}; it takes no runs until it reaches etcd again: start the run on another coordinator"
    )]
    OutOfMesh(String),
    /// TLS or certificate material could not be loaded or used.
    #[error(transparent)]
    Tls(#[from] probemesh_proto::tls::Error),
    /// Certificate authority operations (signing a CSR).
    #[error(transparent)]
    Pki(#[from] probemesh_proto::pki::Error),
    /// The inventory file is missing or invalid.
    #[error(transparent)]
    Inventory(#[from] probemesh_model::inventory::LoadError),
    /// The Kubernetes API could not be used.
    #[error("{0}")]
    KubernetesApi(#[from] crate::inventory::kube::ApiError),
    /// The listener could not be set up.
    #[error("{op} {addr}: {source}")]
    Listen {
        op: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The gRPC server's task panicked or was cancelled.
    #[error("gRPC server task: {0}")]
    ServerTask(String),
}

/// Result alias for the coordinator.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let msg = err.to_string();
        match err {
            Error::NoCertificate { .. } => tonic::Status::unauthenticated(msg),
            Error::Forbidden { .. } | Error::Revoked { .. } => {
                tonic::Status::permission_denied(msg)
            }
            Error::InvalidRequest(_) => tonic::Status::invalid_argument(msg),
            Error::PolicyDenied { .. } => tonic::Status::permission_denied(msg),
            Error::PolicyExhausted { .. } => tonic::Status::resource_exhausted(msg),
            Error::UnknownProbe(_) | Error::NotFound(_) => tonic::Status::not_found(msg),
            Error::ProbeOffline(_)
            | Error::ProbeLost(_)
            | Error::ShuttingDown
            | Error::LeaseLost { .. } => tonic::Status::unavailable(msg),
            Error::Overloaded(_) => tonic::Status::resource_exhausted(msg),
            Error::JoinRefused(_) => tonic::Status::permission_denied(msg),
            Error::NameTaken(_) => tonic::Status::already_exists(msg),
            Error::AttachRefused(_) => tonic::Status::already_exists(msg),
            // meshctl exits 3 (inconclusive): the run has no recorded outcome.
            Error::StoreUnwritable { .. } | Error::Etcd { .. } | Error::OutOfMesh(_) => {
                tonic::Status::failed_precondition(msg)
            }
            Error::Store { .. }
            | Error::Tls(_)
            | Error::Pki(_)
            | Error::Inventory(_)
            | Error::KubernetesApi(_)
            | Error::Listen { .. }
            | Error::Serve(_)
            | Error::ServerTask(_) => tonic::Status::internal(msg),
        }
    }
}
