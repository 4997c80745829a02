//! The lab's Kubernetes API server (`meshctl lab serve-api`): no real API
//! server runs on these machines, so the lab serves its cluster itself, over
//! HTTPS, in the real wire format, so that the coordinator's Kubernetes
//! client (kube-rs) and `kubectl` talk to it as to a cluster.
//!
//! What it does as the real one does: list with `metadata.resourceVersion`;
//! watch as a stream of `{"type","object"}` lines resuming from a version,
//! with `BOOKMARK` events and `410 Gone` (an `ERROR` event carrying a
//! `Status`) for a version its history no longer holds; client certificates
//! naming user and groups; RBAC refusals (401/403 `Status`); TokenRequest
//! and TokenReview for ServiceAccount tokens bound to a pod. What it does
//! not: PATCH, field selectors, set-based label selectors, admission,
//! persistence across restarts (the lab re-derives its objects).
//!
//! Layers: `kinds` ← `store` ← `auth` ← `objects` ← `pki` ← `routes` ← this
//! module (the TLS listener and the lab process).

pub mod auth;
pub mod kinds;
pub mod objects;
pub mod pki;
mod routes;
pub mod store;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use probemesh_model::inventory::Inventory;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use self::auth::{Caller, Tokens};
use self::pki::KubePki;
use self::store::{Key, Store};

/// How often a watch that asked for bookmarks gets one (a real server sends
/// them about once a minute; the lab is impatient).
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(2);
/// How often the lab process looks for a rewritten cluster file.
const CLUSTER_POLL: Duration = Duration::from_millis(100);
/// The audience of the probes' projected tokens (as in deploy/kubernetes).
pub const PROBE_AUDIENCE: &str = "probemesh";
/// Lifetime of a projected token (the DaemonSet asks for an hour).
const PROJECTED_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Arc<Store>,
    tokens: Arc<Tokens>,
    address: String,
    bookmark_every: Duration,
    stop: watch::Receiver<bool>,
}

/// An API server's state, which outlives any one listener (so a test can
/// stop and restart the server and see clients reconnect).
#[derive(Debug)]
pub struct ApiServer {
    /// The objects.
    pub store: Arc<Store>,
    /// The ServiceAccount tokens minted.
    pub tokens: Arc<Tokens>,
    tls: Arc<rustls::ServerConfig>,
    bookmark_every: Duration,
}

/// A listening server; [`Running::stop`] closes it and every open watch.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://IP:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops listening and ends every connection and watch.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.abort();
        let _ = self.task.await;
    }
}

impl ApiServer {
    /// A server with an empty store, serving with `pki`'s certificate and
    /// trusting client certificates from its CA.
    pub fn new(pki: &KubePki) -> anyhow::Result<Self> {
        let ca = CertificateDer::from_pem_file(pki.ca_cert()).context("reading the cluster CA")?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).context("trusting the cluster CA")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .context("client certificate verifier")?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.server_cert())
            .context("reading the API server certificate")?
            .collect::<Result<_, _>>()
            .context("reading the API server certificate")?;
        let key =
            PrivateKeyDer::from_pem_file(pki.server_key()).context("reading the API server key")?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .context("API server certificate")?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            store: Arc::new(Store::new()),
            tokens: Arc::new(Tokens::default()),
            tls: Arc::new(tls),
            bookmark_every: BOOKMARK_EVERY,
        })
    }

    /// Sends bookmarks every `every` instead of [`BOOKMARK_EVERY`].
    pub fn with_bookmarks_every(mut self, every: Duration) -> Self {
        self.bookmark_every = every;
        self
    }

    /// Listens on `listen` (port 0 picks one) and serves until stopped.
    pub async fn start(&self, listen: SocketAddr) -> anyhow::Result<Running> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr().context("bound address")?;
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            store: self.store.clone(),
            tokens: self.tokens.clone(),
            address: addr.to_string(),
            bookmark_every: self.bookmark_every,
            stop: stopped,
        });
        let acceptor = TlsAcceptor::from(self.tls.clone());
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                connections.spawn(async move {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let caller = caller_of(tls.get_ref().1.peer_certificates());
                    let service = service_fn(move |req| {
                        let shared = shared.clone();
                        let caller = caller.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                routes::handle(shared, caller, req).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Running { addr, stop, task })
    }
}

/// The caller a verified client certificate names (CN = user, O = groups).
fn caller_of(certs: Option<&[CertificateDer<'_>]>) -> Caller {
    let Some(leaf) = certs.and_then(|c| c.first()) else {
        return Caller::Anonymous;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return Caller::Anonymous;
    };
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    if name.is_empty() {
        Caller::Anonymous
    } else {
        Caller::User { name, groups }
    }
}

/// The lab's inventory file as the source of the cluster's objects: each
/// [`ClusterFile::sync`] makes the store hold what the file now describes.
#[derive(Debug)]
pub struct ClusterFile {
    path: PathBuf,
    owned: BTreeSet<Key>,
    last: Option<SystemTime>,
}

impl ClusterFile {
    /// The file at `path` (not read yet).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            owned: BTreeSet::new(),
            last: None,
        }
    }

    /// Applies the file to `store` if it changed since the last sync. A file
    /// that cannot be read keeps the objects as they were (and says so).
    pub fn sync(&mut self, store: &Store) {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified.is_none() || modified == self.last {
            return;
        }
        match Inventory::load(&self.path) {
            Ok(inventory) => {
                self.owned = store.reconcile(&self.owned, objects::cluster(&inventory));
                self.last = modified;
            }
            Err(e) => eprintln!("serve-api: {e}; keeping the objects as they were"),
        }
    }

    /// Syncs every [`CLUSTER_POLL`] until the task is dropped.
    pub async fn follow(mut self, store: Arc<Store>) {
        loop {
            self.sync(&store);
            tokio::time::sleep(CLUSTER_POLL).await;
        }
    }
}

/// Plays the kubelet's part for the probe DaemonSet's pods: requests a token
/// for each (its ServiceAccount, `audience`, bound to the pod and so to its
/// node) and writes it to `dir/NODE.token`, as a projected volume would.
pub fn project_probe_tokens(
    server: &ApiServer,
    dir: &Path,
    audience: &str,
) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let selector = store::Selector::parse(&format!("{}=mesh-probe", objects::NAME_LABEL))
        .map_err(anyhow::Error::msg)?;
    let (pods, _) = server.store.list(
        kinds::Kind::Pod,
        Some(objects::PROBEMESH_NAMESPACE),
        &selector,
    );
    let text = |v: &serde_json::Value, p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let mut written = 0;
    for pod in pods {
        let node = text(&pod, "/spec/nodeName");
        let account = text(&pod, "/spec/serviceAccountName");
        if node.is_empty() || account.is_empty() {
            continue;
        }
        let uid_of = |kind, ns: &str, name: &str| {
            server
                .store
                .get(kind, ns, name)
                .map(|o| text(&o, "/metadata/uid"))
                .unwrap_or_default()
        };
        let claims = auth::TokenClaims {
            namespace: objects::PROBEMESH_NAMESPACE.to_owned(),
            service_account_uid: uid_of(
                kinds::Kind::ServiceAccount,
                objects::PROBEMESH_NAMESPACE,
                &account,
            ),
            service_account: account,
            audiences: vec![audience.to_owned()],
            expires: SystemTime::now() + PROJECTED_TOKEN_LIFETIME,
            pod: Some((text(&pod, "/metadata/name"), text(&pod, "/metadata/uid"))),
            node: Some((node.clone(), uid_of(kinds::Kind::Node, "", &node))),
        };
        let token = server.tokens.mint(claims);
        probemesh_proto::pki::write_atomic(
            &dir.join(format!("{node}.token")),
            token.as_bytes(),
            true,
        )
        .with_context(|| format!("writing the token of {node}"))?;
        written += 1;
    }
    Ok(written)
}

/// `meshctl lab serve-api`: serves the cluster described by `cluster` (the
/// lab's inventory file) with the certificates in `pki_dir`, writes the
/// probe pods' projected tokens to `tokens`, and runs until stopped.
pub async fn serve(
    listen: SocketAddr,
    pki_dir: &Path,
    cluster: &Path,
    tokens: &Path,
) -> anyhow::Result<()> {
    let server = ApiServer::new(&KubePki::at(pki_dir))?;
    let mut file = ClusterFile::new(cluster.to_owned());
    file.sync(&server.store);
    let running = server.start(listen).await?;
    let projected = project_probe_tokens(&server, tokens, PROBE_AUDIENCE)?;
    eprintln!(
        "serve-api: listening on {}; {projected} probe token(s) in {}",
        running.url(),
        tokens.display()
    );
    file.follow(server.store.clone()).await;
    Ok(())
}
