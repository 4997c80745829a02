//! Real mTLS on loopback: a tonic server behind `TlsIncoming` and clients built with
//! `client_config` / `pinned_client_config`. The server-side refusal reasons are read from the
//! `tls handshake refused` log events (the client only sees a broken connection).
#![allow(clippy::unwrap_used)] // test harness helpers panic on setup failure

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use probemesh_proto::identity::Role;
use probemesh_proto::pb::enrollment_client::EnrollmentClient;
use probemesh_proto::pb::enrollment_server::{Enrollment, EnrollmentServer};
use probemesh_proto::pb::{JoinRequest, JoinResponse};
use probemesh_proto::pki::{self, CaPin, CertAuthority, TlsDir, Validity};
use probemesh_proto::tls::{self, PeerInfo, TlsIncoming};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Echoes what the TLS layer said about the caller: name, role and remote address.
struct WhoAmI;

#[tonic::async_trait]
impl Enrollment for WhoAmI {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let peer = req
            .extensions()
            .get::<PeerInfo>()
            .cloned()
            .ok_or_else(|| Status::internal("no PeerInfo on the request"))?;
        let (name, role) = peer
            .identity
            .map(|id| (id.name, id.role.to_string()))
            .unwrap_or_default();
        Ok(Response::new(JoinResponse {
            name,
            certificate_pem: role,
            ca_pem: peer.remote_addr.to_string(),
        }))
    }

    async fn enroll_node(
        &self,
        _: Request<probemesh_proto::pb::NodeEnrollRequest>,
    ) -> Result<Response<JoinResponse>, Status> {
        Err(Status::unimplemented("not under test"))
    }
}

/// Sends the `reason` of every `tls handshake refused` event to a channel.
struct Refusals(mpsc::UnboundedSender<String>);

#[derive(Default)]
struct Fields {
    message: String,
    reason: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "reason" => self.reason = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Refusals {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message == "tls handshake refused" {
            let _ = self.0.send(fields.reason);
        }
    }
}

struct Harness {
    _tmp: tempfile::TempDir,
    dir: TlsDir,
    url: String,
    pin: CaPin,
    refused: Arc<AtomicU64>,
    reasons: mpsc::UnboundedReceiver<String>,
    _log: tracing::subscriber::DefaultGuard,
}

impl Harness {
    /// A CA in a temp dir and a server on 127.0.0.1:0. Tests run on the current-thread
    /// runtime, so the thread-local log capture sees the server's handshake tasks.
    async fn start() -> Harness {
        let (tx, reasons) = mpsc::unbounded_channel();
        let log =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(Refusals(tx)));
        let tmp = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(tmp.path());
        let report = pki::init(&dir, &[]).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let incoming = TlsIncoming::new(listener, tls::server_config(&dir).unwrap());
        let url = format!("https://{}", incoming.local_addr().unwrap());
        let refused = incoming.refused_handshakes();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(EnrollmentServer::new(WhoAmI))
                .serve_with_incoming(incoming),
        );
        Harness {
            _tmp: tmp,
            dir,
            url,
            pin: report.ca_pin,
            refused,
            reasons,
            _log: log,
        }
    }

    async fn call(&self, config: Arc<rustls::ClientConfig>) -> Result<JoinResponse, String> {
        let channel = tls::connect(&self.url, config)
            .await
            .map_err(|e| e.to_string())?;
        EnrollmentClient::new(channel)
            .join(JoinRequest::default())
            .await
            .map(Response::into_inner)
            .map_err(|s| s.to_string())
    }

    async fn next_refusal(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(10), self.reasons.recv())
            .await
            .expect("the server logs a refusal")
            .expect("log channel open")
    }

    fn write_identity(&self, name: &str, issued: &pki::IssuedCert) {
        std::fs::write(self.dir.cert(name), &issued.cert_pem).unwrap();
        std::fs::write(self.dir.key(name), &issued.key_pem).unwrap();
    }
}

#[tokio::test]
async fn operator_certificate_is_seen_by_the_handler() {
    let h = Harness::start().await;
    let reply = h
        .call(tls::client_config(&h.dir, "admin").unwrap())
        .await
        .unwrap();
    assert_eq!(reply.name, "admin");
    assert_eq!(reply.certificate_pem, Role::Operator.as_str());
    assert!(reply.ca_pem.starts_with("127.0.0.1:"), "{}", reply.ca_pem);
    assert_eq!(h.refused.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn probe_certificate_issued_to_the_dir_works() {
    let h = Harness::start().await;
    let ca = CertAuthority::load(&h.dir).unwrap();
    ca.issue_to_dir(&h.dir, "node-1", Role::Probe, false, None)
        .unwrap();
    let reply = h
        .call(tls::client_config(&h.dir, "node-1").unwrap())
        .await
        .unwrap();
    assert_eq!(
        (reply.name.as_str(), reply.certificate_pem.as_str()),
        ("node-1", "probe")
    );
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused_as_unknown_issuer() {
    let mut h = Harness::start().await;
    let other = tempfile::tempdir().unwrap();
    let other_dir = TlsDir::new(other.path());
    pki::init(&other_dir, &[]).unwrap();
    let stranger = CertAuthority::load(&other_dir)
        .unwrap()
        .issue(
            "admin",
            Role::Operator,
            Validity::leaf(time::OffsetDateTime::now_utc()),
        )
        .unwrap();
    h.write_identity("stranger", &stranger);

    let result = h
        .call(tls::client_config(&h.dir, "stranger").unwrap())
        .await;
    assert!(result.is_err(), "{result:?}");
    let reason = h.next_refusal().await;
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    assert_eq!(h.refused.load(Ordering::Relaxed), 1);

    let again = h.call(tls::client_config(&h.dir, "admin").unwrap()).await;
    assert!(
        again.is_ok(),
        "a refusal does not end the stream: {again:?}"
    );
}

#[tokio::test]
async fn expired_certificate_is_refused_as_expired() {
    let mut h = Harness::start().await;
    let now = time::OffsetDateTime::now_utc();
    let expired = CertAuthority::load(&h.dir)
        .unwrap()
        .issue(
            "node-2",
            Role::Probe,
            Validity {
                not_before: now - time::Duration::days(30),
                not_after: now - time::Duration::days(1),
            },
        )
        .unwrap();
    h.write_identity("node-2", &expired);

    let result = h.call(tls::client_config(&h.dir, "node-2").unwrap()).await;
    assert!(result.is_err(), "{result:?}");
    let reason = h.next_refusal().await;
    assert!(reason.contains("Expired"), "{reason}");
    assert_eq!(h.refused.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn no_client_certificate_gets_through_without_identity() {
    let h = Harness::start().await;
    let reply = h.call(tls::pinned_client_config(&h.pin)).await.unwrap();
    assert_eq!(reply.name, "", "no identity");
    assert_eq!(reply.certificate_pem, "");
    assert_eq!(h.refused.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn wrong_pin_is_refused_by_the_client() {
    let h = Harness::start().await;
    let wrong = CaPin::of_der(b"some other CA");
    let err = h.call(tls::pinned_client_config(&wrong)).await.unwrap_err();
    assert!(
        err.contains("CA fingerprint does not match the token's pin"),
        "{err}"
    );
}

#[tokio::test]
async fn pinned_config_still_checks_the_server_name() {
    let h = Harness::start().await;
    let url = h.url.replace("127.0.0.1", "localhost");
    let channel = tls::connect(&url, tls::pinned_client_config(&h.pin)).await;
    assert!(
        channel.is_ok(),
        "localhost is a coordinator SAN: {channel:?}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = TlsDir::new(tmp.path());
    pki::init(&dir, &[]).unwrap();
    let err = tls::connect(&url, tls::client_config(&dir, "admin").unwrap())
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn connect_refuses_bad_urls_before_dialing() {
    let h = Harness::start().await;
    let config = tls::client_config(&h.dir, "admin").unwrap();
    let err = tls::connect("http://127.0.0.1:1", config.clone())
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("https://HOST:PORT"), "{err}");
    let err = tls::connect("https://127.0.0.1:1", config)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn a_silent_client_does_not_stall_the_others() {
    let h = Harness::start().await;
    let addr = h.url.trim_start_matches("https://").to_owned();
    let _silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let reply = h.call(tls::client_config(&h.dir, "admin").unwrap()).await;
    assert_eq!(reply.unwrap().name, "admin");
}

#[tokio::test]
async fn garbage_instead_of_a_client_hello_is_refused_and_counted() {
    use tokio::io::AsyncWriteExt;
    let mut h = Harness::start().await;
    let addr = h.url.trim_start_matches("https://").to_owned();
    let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let reason = h.next_refusal().await;
    assert!(!reason.is_empty());
    assert_eq!(h.refused.load(Ordering::Relaxed), 1);
}
