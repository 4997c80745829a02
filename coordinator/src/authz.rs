//! Who may call what. Identity comes only from the verified client
//! certificate (`PeerInfo`, set by the TLS acceptor); every handler calls
//! [`authorize`] first, which also refuses revoked certificates.

use std::net::SocketAddr;

use probemesh_proto::identity::{Identity, Role};
use probemesh_proto::tls::PeerInfo;

use crate::error::Error;
use crate::revocation::Revocations;

/// The access a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// ProbeLink: a probe certificate.
    Probe,
    /// Read-only Control calls: operator or viewer.
    Read,
    /// Control calls that act (runs, tokens): operator.
    Operate,
    /// Peer calls (relays, clock exchanges): another coordinator.
    Peer,
}

impl Access {
    fn allows(self, role: Role) -> bool {
        match self {
            Access::Probe => role == Role::Probe,
            Access::Read => role.can_read_control(),
            Access::Operate => role.can_start_runs(),
            Access::Peer => role == Role::Coordinator,
        }
    }

    fn needs(self) -> &'static str {
        match self {
            Access::Probe => "a probe certificate is required",
            Access::Read => "an operator or viewer certificate is required",
            Access::Operate => "an operator certificate is required",
            Access::Peer => "a coordinator certificate is required",
        }
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who the certificate says the caller is.
    pub identity: Identity,
    /// Where the connection came from.
    pub remote_addr: Option<SocketAddr>,
}

/// Checks the request's certificate against the revocation list and
/// `access` for the named `call`.
pub fn authorize<T>(
    req: &tonic::Request<T>,
    revocations: &Revocations,
    call: &'static str,
    access: Access,
) -> Result<Caller, Error> {
    let peer = req.extensions().get::<PeerInfo>();
    let remote_addr = peer.map(|p| p.remote_addr);
    let Some(identity) = peer.and_then(|p| p.identity.clone()) else {
        tracing::warn!(call, peer = ?remote_addr, "refused: no client certificate");
        return Err(Error::NoCertificate { call });
    };
    if let Some(revoked) = revocations.find(&identity) {
        tracing::warn!(call, identity = %identity.name, serial = %identity.serial, "refused: certificate revoked");
        return Err(Error::Revoked {
            name: identity.name,
            serial: identity.serial,
            by: revoked.by,
            at: humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(
                        u64::try_from(revoked.revoked_unix_ms).unwrap_or(0),
                    ),
            )
            .to_string(),
        });
    }
    if !access.allows(identity.role) {
        tracing::warn!(call, identity = %identity.name, role = identity.role.as_str(), "refused: role not allowed");
        return Err(Error::Forbidden {
            name: identity.name,
            role: identity.role.as_str(),
            call,
            needs: access.needs(),
        });
    }
    Ok(Caller {
        identity,
        remote_addr,
    })
}
