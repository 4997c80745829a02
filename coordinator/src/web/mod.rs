//! The read-only web view (`--web ADDR:PORT`, off by default): the runs
//! with the live progress of those in flight, each run's report (the page
//! `meshctl runs RUN_ID --html` writes), and the latest mesh matrix.
//!
//! HTTPS with the coordinator's certificate; every page needs a viewer
//! identity ([`auth`]): a client certificate of a reading role, or a viewer
//! token. `GET /login?token=TOKEN` (the link `meshctl web-token` prints)
//! turns a token into a cookie for the token's life and redirects to `/`.
//! There is no write action: every route is a `GET`, the pages have no
//! form and no script, and the Content-Security-Policy forbids both.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections at once (more are
//! closed at once), TLS handshakes as the gRPC port bounds them, request
//! heads within [`HEAD_TIMEOUT`] and [`MAX_HEAD`] bytes, each connection
//! at most [`CONNECTION_LIFETIME`]; pages list at most [`RUNS_SHOWN`] runs.
//! Every read is audited (`Web.Read`, allow or deny).

pub mod auth;
pub mod pages;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use probemesh_proto::pb;
use probemesh_proto::tls::{PeerInfo, TlsIncoming};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls::ServerConfig;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::error::{Error, Result};
use crate::policy::audit::AuditLine;
use crate::state::Coordinator;
use auth::{COOKIE, Refusal, Viewer};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a request head may take to arrive.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head read.
pub const MAX_HEAD: usize = 64 << 10;
/// How long one connection may stay open.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// Runs on the runs page, and searched for the latest matrix.
pub const RUNS_SHOWN: usize = 50;
/// The longest run id looked up (ids are 16 hex digits).
const MAX_RUN_ID: usize = 64;

/// The web view's listening socket, bound before the state is built (so
/// a bad address stops the coordinator at start, and its port is known).
#[derive(Debug)]
pub struct WebListener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl WebListener {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr) -> Result<Self> {
        let listen_err = |op, source| Error::Listen { op, addr, source };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| listen_err("serve the web view on", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| listen_err("read address of", e))?;
        Ok(Self { listener, addr })
    }

    /// The address bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the view over TLS with `tls` (the coordinator's certificate,
    /// client certificates asked for but optional) until stopped.
    pub fn serve(self, tls: &ServerConfig, state: Arc<Coordinator>) -> WebServer {
        let mut tls = tls.clone();
        // Browsers speak HTTP/1.1 here; the gRPC port keeps h2.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let incoming = TlsIncoming::new(self.listener, Arc::new(tls));
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept(incoming, router(state), stop.clone()));
        tracing::info!(addr = %self.addr, "web view served on https://{}/", self.addr);
        WebServer {
            addr: self.addr,
            stop,
            task,
        }
    }
}

/// The web view being served.
#[derive(Debug)]
pub struct WebServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl WebServer {
    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes every connection.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn accept(mut incoming: TlsIncoming, app: axum::Router, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let conn = tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            conn = incoming.next() => conn,
        };
        let Some(Ok(conn)) = conn else { break };
        let peer = conn.peer().clone();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(peer = %peer.remote_addr, max = MAX_CONNECTIONS, "web view: too many connections, closing a new one");
            continue;
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req| {
            req.extensions_mut().insert(peer.clone());
            app.clone().oneshot(req)
        });
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .max_buf_size(MAX_HEAD)
            .serve_connection(TokioIo::new(conn), service);
        connections.spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, served).await;
        });
    }
    connections.shutdown().await;
}

fn router(state: Arc<Coordinator>) -> axum::Router {
    axum::Router::new()
        .route("/", axum::routing::get(runs_page))
        .route("/runs/{id}", axum::routing::get(run_page))
        .route("/mesh", axum::routing::get(mesh_page))
        .route("/login", axum::routing::get(login))
        .fallback(not_found)
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(state)
}

/// What every answer carries: no script, no form, no frame, no caching,
/// no referrer (a `/login` URL holds a token).
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The reader of a request, or why not; audited and logged either way.
fn gate(state: &Coordinator, parts: &Parts) -> std::result::Result<Viewer, Refusal> {
    let peer = parts.extensions.get::<PeerInfo>();
    let outcome = auth::authorize(state, peer, &parts.headers);
    let identity = peer.and_then(|p| p.identity.as_ref());
    state.policy.audit.record(&AuditLine {
        time_unix_ms: state.clock.now_unix_ms(),
        identity: match &outcome {
            Ok(viewer) => &viewer.name,
            Err(_) => identity.map_or("", |i| i.name.as_str()),
        },
        role: outcome
            .as_ref()
            .map_or_else(|_| identity.map_or("", |i| i.role.as_str()), |_| "viewer"),
        call: "Web.Read",
        target: parts.uri.path(),
        decision: if outcome.is_ok() { "allow" } else { "deny" },
        rule: match &outcome {
            Ok(_) => "",
            Err(Refusal::NoIdentity) => "authz.certificate",
            Err(Refusal::Role { .. }) => "authz.role",
            Err(Refusal::Revoked { .. }) => "authz.revoked",
            Err(Refusal::Token(_)) => "authz.token",
        },
    });
    if let Err(refusal) = &outcome {
        tracing::info!(path = parts.uri.path(), peer = ?peer.map(|p| p.remote_addr), reason = %refusal, "web view refused");
    }
    outcome
}

fn refused(refusal: &Refusal) -> Response {
    let mut response = (
        refusal.status(),
        Html(pages::message("not allowed", &refusal.to_string())),
    )
        .into_response();
    if refusal.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="probemesh""#),
        );
    }
    response
}

fn store_failed(e: &Error) -> Response {
    tracing::warn!(error = %e, "web view: the store cannot be read");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(pages::message(
            "store unavailable",
            &format!("the run store cannot be read now: {e}"),
        )),
    )
        .into_response()
}

async fn runs_page(State(state): State<Arc<Coordinator>>, parts: Parts) -> Response {
    let viewer = match gate(&state, &parts) {
        Ok(v) => v,
        Err(refusal) => return refused(&refusal),
    };
    match state.store.runs_page("", RUNS_SHOWN).await {
        Ok(page) => Html(pages::runs(
            &page.items,
            &state.live.snapshot(),
            &viewer.name,
        ))
        .into_response(),
        Err(e) => store_failed(&e),
    }
}

async fn run_page(
    State(state): State<Arc<Coordinator>>,
    Path(id): Path<String>,
    parts: Parts,
) -> Response {
    if let Err(refusal) = gate(&state, &parts) {
        return refused(&refusal);
    }
    let well_formed = id.len() <= MAX_RUN_ID && id.bytes().all(|b| b.is_ascii_hexdigit());
    let record = if well_formed {
        match state.store.run(&id).await {
            Ok(record) => record,
            Err(e) => return store_failed(&e),
        }
    } else {
        None
    };
    let Some(record) = record else {
        return not_here(&format!("no run '{id}' here: see the list of runs"));
    };
    if record.state() == pb::RunState::Running {
        let live = state.live.snapshot();
        return Html(pages::running(&record, live.get(&record.run_id))).into_response();
    }
    if record.matrix.is_some() {
        return match state.store.runs_page("", RUNS_SHOWN).await {
            Ok(page) => Html(probemesh_report::render_mesh(
                &record,
                &pair_links(&page.items),
            ))
            .into_response(),
            Err(e) => store_failed(&e),
        };
    }
    Html(probemesh_report::render(&record, &[])).into_response()
}

/// `GET /mesh`: the newest finished mesh matrix among the last
/// [`RUNS_SHOWN`] runs, its failing pairs linked to the newest `meshctl
/// probe` run of each among them.
async fn mesh_page(State(state): State<Arc<Coordinator>>, parts: Parts) -> Response {
    if let Err(refusal) = gate(&state, &parts) {
        return refused(&refusal);
    }
    let page = match state.store.runs_page("", RUNS_SHOWN).await {
        Ok(page) => page,
        Err(e) => return store_failed(&e),
    };
    let latest = page
        .items
        .iter()
        .find(|r| r.matrix.is_some() && r.state() != pb::RunState::Running);
    match latest {
        Some(record) => Html(probemesh_report::render_mesh(
            record,
            &pair_links(&page.items),
        ))
        .into_response(),
        None => not_here(&format!(
            "no mesh matrix among the last {RUNS_SHOWN} runs: run `meshctl mesh`, then reload"
        )),
    }
}

/// The newest `meshctl probe` run of each (from, to) pair in `records`
/// (newest first), as links to their pages.
fn pair_links(records: &[pb::RunRecord]) -> Vec<probemesh_report::PairLink> {
    let mut links: Vec<probemesh_report::PairLink> = Vec::new();
    for record in records {
        let Some(request) = &record.request else {
            continue;
        };
        let Some(pb::run_request::Kind::Probe(probe)) = &request.kind else {
            continue;
        };
        if links
            .iter()
            .any(|l| l.from == request.from && l.to == probe.to)
        {
            continue;
        }
        links.push(probemesh_report::PairLink {
            from: request.from.clone(),
            to: probe.to.clone(),
            href: format!("/runs/{}", record.run_id),
        });
    }
    links
}

/// `GET /login?token=TOKEN`: a good token becomes a cookie for its life
/// and the reader goes to the runs; a bad one is refused as any request.
async fn login(State(state): State<Arc<Coordinator>>, parts: Parts) -> Response {
    let token = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let checked = match &token {
        Some(token) => auth::viewer_token(&state, token),
        None => Err(Refusal::NoIdentity),
    };
    let viewer = match checked {
        Ok(viewer) => viewer,
        Err(refusal) => {
            tracing::info!(peer = ?parts.extensions.get::<PeerInfo>().map(|p| p.remote_addr), reason = %refusal, "web view login refused");
            return refused(&refusal);
        }
    };
    let token = token.unwrap_or_default();
    let now_unix = state.clock.now_unix_ms().div_euclid(1_000);
    let max_age = viewer.expires_unix.map_or(0, |e| e - now_unix);
    tracing::info!(viewer = %viewer.name, "web view login");
    let cookie =
        format!("{COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict");
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn not_found(State(state): State<Arc<Coordinator>>, parts: Parts) -> Response {
    if let Err(refusal) = gate(&state, &parts) {
        return refused(&refusal);
    }
    not_here(
        "nothing here: the web view has the runs (/), each run (/runs/ID) and the mesh (/mesh)",
    )
}

fn not_here(text: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(pages::message("not found", text)),
    )
        .into_response()
}
