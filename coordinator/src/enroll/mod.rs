//! The Enrollment service: an external host trades a join token and a CSR
//! for a probe certificate; a node probe trades its projected ServiceAccount
//! token ([`node`]). The only calls served without a client certificate: the
//! token authenticates the caller, and the caller authenticated us by the CA
//! (pinned in the join token, or the cluster's CA file).

pub mod node;

use std::sync::Arc;

use probemesh_proto::identity::{Role, validate_probe_name};
use probemesh_proto::pb;
use probemesh_proto::token::JoinToken;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::state::Coordinator;
use crate::store::Issuance;

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

impl EnrollService {
    /// Signs `csr_pem` as probe `name` (only the CSR's key is used) and
    /// records the certificate before handing it out.
    async fn issue(
        &self,
        csr_pem: &str,
        name: String,
        by: Issuance,
    ) -> Result<pb::JoinResponse, Error> {
        let certificate_pem = self
            .state
            .ca
            .sign_csr(csr_pem, &name, Role::Probe, self.state.probe_validity())
            .map_err(|e| {
                Error::InvalidRequest(format!("the certificate request was refused: {e}"))
            })?;
        self.state.record_issued(&certificate_pem, by).await?;
        Ok(pb::JoinResponse {
            certificate_pem,
            ca_pem: self.state.ca.cert_pem().to_owned(),
            name,
        })
    }
}

/// The caller's address, for the log.
fn remote_of<T>(req: &Request<T>) -> Option<std::net::SocketAddr> {
    req.extensions()
        .get::<probemesh_proto::tls::PeerInfo>()
        .map(|p| p.remote_addr)
}

#[tonic::async_trait]
impl pb::enrollment_server::Enrollment for EnrollService {
    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let remote = remote_of(&req);
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
            .store
            .redeem_token(&token, self.state.clock.now_unix_ms())
            .await
            .inspect_err(
                |e| tracing::warn!(peer = ?remote, name = %token.name, reason = %e, "join refused"),
            )?;
        let issued = self.issue(&r.csr_pem, name, Issuance::Join).await?;
        tracing::info!(peer = ?remote, name = %issued.name, "external probe enrolled");
        Ok(Response::new(issued))
    }

    async fn enroll_node(
        &self,
        req: Request<pb::NodeEnrollRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let remote = remote_of(&req);
        let r = req.into_inner();
        let refuse = |reason: String| {
            tracing::warn!(peer = ?remote, node = %r.node_name, %reason, "node enrollment refused");
            Status::permission_denied(format!("node enrollment refused: {reason}"))
        };
        validate_probe_name(&r.node_name).map_err(|e| refuse(e.to_string()))?;
        let (Some(policy), Some(client)) = (
            self.state.node_enrollment.as_ref(),
            self.state.inventory.kube_client(),
        ) else {
            return Err(Status::failed_precondition(
                "this coordinator does not enroll nodes by ServiceAccount token: start it with --kubeconfig FILE or --in-cluster and --enroll-service-account NAMESPACE/NAME, or enroll with a join token",
            ));
        };
        match node::authorize(client, policy, &r.node_name, &r.service_account_token).await {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => return Err(refuse(refused.to_string())),
            Err(e) => {
                tracing::error!(peer = ?remote, node = %r.node_name, error = %e, "cannot review a node's token");
                return Err(Status::unavailable(format!(
                    "the coordinator cannot reach the Kubernetes API to review the token: {e}"
                )));
            }
        }
        let issued = self
            .issue(&r.csr_pem, r.node_name.clone(), Issuance::NodeEnrollment)
            .await?;
        tracing::info!(peer = ?remote, node = %issued.name, "node probe enrolled by ServiceAccount token");
        Ok(Response::new(issued))
    }
}
