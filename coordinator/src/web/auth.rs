//! Who may read the web view: a client certificate of a reading role
//! (operator or viewer), or a viewer token from `meshctl web-token`, sent as
//! `Authorization: Bearer TOKEN` or as the cookie `/login` sets. Revoking a
//! certificate withdraws it and every token issued for it. Nothing here
//! ever grants more than reading.

use axum::http::{HeaderMap, StatusCode, header};
use probemesh_proto::identity::Identity;
use probemesh_proto::tls::PeerInfo;
use probemesh_proto::viewer_token::{MAX_VIEWER_TOKEN_LEN, ViewerClaims, ViewerTokenError};

use crate::revocation::Revocation;
use crate::state::Coordinator;

/// The cookie `/login` sets to carry a viewer token.
pub const COOKIE: &str = "probemesh_viewer";

/// Who is reading, and by what right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The certificate name (the token's certificate for a token).
    pub name: String,
    /// `certificate` or `token`.
    pub via: &'static str,
    /// When the token stops being accepted, Unix seconds (tokens only).
    pub expires_unix: Option<i64>,
}

/// Why a request may not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Neither a certificate nor a token.
    #[error(
        "this web view needs a viewer identity: a client certificate with the operator or viewer \
         role, or a token from `meshctl web-token` (open the link it prints, or send \
         `Authorization: Bearer TOKEN`)"
    )]
    NoIdentity,
    /// A certificate whose role may not read (a probe's, a coordinator's).
    #[error(
        "certificate '{name}' has role {role}, which may not read the web view; use an operator \
         or viewer certificate, or a token from `meshctl web-token`"
    )]
    Role {
        /// The certificate name.
        name: String,
        /// Its role.
        role: &'static str,
    },
    /// The certificate, or the one the token was issued for, is revoked.
    #[error("certificate '{name}' was revoked by {by}: neither it nor its tokens may read")]
    Revoked {
        /// The certificate name.
        name: String,
        /// Who revoked it.
        by: String,
    },
    /// The token is not acceptable.
    #[error("{0}")]
    Token(ViewerTokenError),
}

impl Refusal {
    /// The HTTP status it is answered with: 403 when the caller is known
    /// and may not read, 401 when who it is has not been shown.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Role { .. } | Refusal::Revoked { .. } => StatusCode::FORBIDDEN,
            Refusal::NoIdentity | Refusal::Token(_) => StatusCode::UNAUTHORIZED,
        }
    }
}

/// Decides whether the request from `peer` with `headers` may read.
/// A certificate of a reading role decides by itself; otherwise a token
/// must.
pub fn authorize(
    state: &Coordinator,
    peer: Option<&PeerInfo>,
    headers: &HeaderMap,
) -> Result<Viewer, Refusal> {
    let identity = peer.and_then(|p| p.identity.as_ref());
    if let Some(id) = identity.filter(|id| id.role.can_read_control()) {
        return certificate(state, id);
    }
    match token(headers) {
        Some(token) => viewer_token(state, token),
        None => Err(match identity {
            Some(id) => Refusal::Role {
                name: id.name.clone(),
                role: id.role.as_str(),
            },
            None => Refusal::NoIdentity,
        }),
    }
}

/// Checks a presented token as `/login` and every request do: issued by
/// this mesh, unexpired, its certificate not revoked.
pub fn viewer_token(state: &Coordinator, token: &str) -> Result<Viewer, Refusal> {
    let now_unix = state.clock.now_unix_ms().div_euclid(1_000);
    let claims = state
        .viewer_key
        .verify(token, now_unix)
        .map_err(Refusal::Token)?;
    let ViewerClaims {
        name,
        serial,
        cert_not_before_unix,
        expires_unix,
    } = claims;
    if let Some(revoked) = state
        .revocations
        .find_cert(&name, &serial, cert_not_before_unix)
    {
        return Err(revoked_refusal(name, revoked));
    }
    Ok(Viewer {
        name,
        via: "token",
        expires_unix: Some(expires_unix),
    })
}

fn certificate(state: &Coordinator, id: &Identity) -> Result<Viewer, Refusal> {
    match state.revocations.find(id) {
        Some(revoked) => Err(revoked_refusal(id.name.clone(), revoked)),
        None => Ok(Viewer {
            name: id.name.clone(),
            via: "certificate",
            expires_unix: None,
        }),
    }
}

fn revoked_refusal(name: String, revoked: Revocation) -> Refusal {
    Refusal::Revoked {
        name,
        by: revoked.by,
    }
}

/// The token of a request: `Authorization: Bearer TOKEN`, else the
/// [`COOKIE`]. Anything longer than a token can be is ignored unread.
fn token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let cookie = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value)
    };
    bearer
        .or_else(cookie)
        .filter(|t| !t.is_empty() && t.len() <= MAX_VIEWER_TOKEN_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name, value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn the_token_comes_from_the_bearer_header_before_the_cookie() {
        let both = headers(&[
            (header::AUTHORIZATION, "Bearer pmv1.aaa"),
            (header::COOKIE, "probemesh_viewer=pmv1.bbb"),
        ]);
        assert_eq!(token(&both), Some("pmv1.aaa"));
        let cookie = headers(&[(header::COOKIE, "other=1; probemesh_viewer=pmv1.bbb; x=2")]);
        assert_eq!(token(&cookie), Some("pmv1.bbb"));
        assert_eq!(token(&headers(&[(header::COOKIE, "other=1")])), None);
        assert_eq!(token(&HeaderMap::new()), None);
    }

    #[test]
    fn an_oversized_or_empty_token_is_not_read() {
        let long = format!("Bearer pmv1.{}", "a".repeat(MAX_VIEWER_TOKEN_LEN));
        assert_eq!(token(&headers(&[(header::AUTHORIZATION, &long)])), None);
        assert_eq!(token(&headers(&[(header::AUTHORIZATION, "Bearer ")])), None);
    }

    #[test]
    fn refusals_are_401_until_the_caller_is_known_then_403() {
        assert_eq!(Refusal::NoIdentity.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            Refusal::Token(ViewerTokenError::Forged).status(),
            StatusCode::UNAUTHORIZED
        );
        let role = Refusal::Role {
            name: "node-1".into(),
            role: "probe",
        };
        assert_eq!(role.status(), StatusCode::FORBIDDEN);
    }
}
