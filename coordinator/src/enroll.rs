//! The Enrollment service: an external host trades a join token and a CSR
//! for a probe certificate. The only call served without a client
//! certificate; the token's one-time secret authenticates the caller, and
//! the caller authenticated us by the CA pin in the token.

use std::sync::Arc;

use probemesh_proto::identity::Role;
use probemesh_proto::pb;
use probemesh_proto::pki::Validity;
use probemesh_proto::token::JoinToken;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::state::Coordinator;

/// Enrollment over the shared state.
#[derive(Debug, Clone)]
pub struct EnrollService {
    state: Arc<Coordinator>,
}

impl EnrollService {
    /// The service.
    pub fn new(state: Arc<Coordinator>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::enrollment_server::Enrollment for EnrollService {
    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let remote = req
            .extensions()
            .get::<probemesh_proto::tls::PeerInfo>()
            .map(|p| p.remote_addr);
        let r = req.into_inner();
        let token: JoinToken =
            r.token
                .trim()
                .parse()
                .map_err(|e: probemesh_proto::token::TokenError| {
                    tracing::warn!(peer = ?remote, reason = %e, "join refused");
                    Error::JoinRefused(e.to_string())
                })?;
        let name = self
            .state
            .tokens
            .redeem(&token, self.state.clock.now_unix_ms())
            .inspect_err(
                |e| tracing::warn!(peer = ?remote, name = %token.name, reason = %e, "join refused"),
            )?;
        let certificate_pem = self
            .state
            .ca
            .sign_csr(
                &r.csr_pem,
                &name,
                Role::Probe,
                Validity::leaf(time::OffsetDateTime::now_utc()),
            )
            .map_err(|e| {
                Error::InvalidRequest(format!("the certificate request was refused: {e}"))
            })?;
        tracing::info!(peer = ?remote, name = %name, "external probe enrolled");
        Ok(Response::new(pb::JoinResponse {
            certificate_pem,
            ca_pem: self.state.ca.cert_pem().to_owned(),
            name,
        }))
    }
}
