//! The connection to etcd, when state is shared (`--etcd`): settings, the
//! connect with its time bounds and TLS, a bounded retry of calls etcd
//! could not answer, and the one layout of keys every coordinator uses.
//!
//! Every call to etcd is bounded in time: a request that gets no answer
//! within [`EtcdSettings::timeout`] fails, and [`retry`] tries an
//! `Unavailable` one a few times more (with a 3-member cluster whose leader
//! was just killed, the client keeps sending part of its requests to the
//! dead member for a while) before the caller gets the error.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::error::{Error, Result};

/// The key prefix every coordinator of one mesh shares by default.
pub const DEFAULT_PREFIX: &str = "/probemesh/";
/// How long one etcd request may take before it fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts of a call etcd answered `Unavailable` (the first included).
const ATTEMPTS: u32 = 4;
/// Pause between attempts, doubled each time.
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// Where etcd is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Client URLs of the members (`http://` or `https://`).
    pub endpoints: Vec<String>,
    /// Client certificate and CA for `https://` endpoints (mTLS).
    pub tls: Option<EtcdTls>,
    /// The prefix of every key this mesh writes; several meshes may share
    /// one etcd under different prefixes.
    pub prefix: String,
    /// How long one request may take.
    pub timeout: Duration,
}

/// The files of an mTLS connection to etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA that signed the etcd members' certificates (PEM).
    pub ca: PathBuf,
    /// This coordinator's client certificate for etcd (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
}

impl EtcdSettings {
    /// Settings for `endpoints` with the default prefix and timeout, no TLS.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            tls: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The key layout under this prefix.
    pub fn keys(&self) -> Keys {
        Keys::new(&self.prefix)
    }

    /// The endpoints, comma-separated, for messages.
    pub fn endpoint_list(&self) -> String {
        self.endpoints.join(",")
    }
}

/// The client URLs of `--etcd URL[,URL...]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(pub Vec<String>);

/// Parses `--etcd URL[,URL...]`: each an `http://` or `https://` URL with
/// a host and port.
pub fn parse_endpoints(s: &str) -> std::result::Result<Endpoints, String> {
    let endpoints: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    if endpoints.is_empty() {
        return Err(
            "no etcd endpoint given: pass --etcd http://HOST:2379[,http://HOST2:2379...]".into(),
        );
    }
    for endpoint in &endpoints {
        let rest = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"))
            .ok_or_else(|| {
                format!("etcd endpoint '{endpoint}' must start with http:// or https://")
            })?;
        let port = rest.rsplit_once(':').map(|(_, p)| p.trim_end_matches('/'));
        if !port.is_some_and(|p| p.parse::<u16>().is_ok_and(|p| p != 0)) {
            return Err(format!(
                "etcd endpoint '{endpoint}' has no port: write it as http://HOST:PORT (etcd's default client port is 2379)"
            ));
        }
    }
    Ok(Endpoints(endpoints))
}

/// Parses `--etcd-prefix`: it must start and end with `/`.
pub fn parse_prefix(s: &str) -> std::result::Result<String, String> {
    if s.len() >= 2 && s.starts_with('/') && s.ends_with('/') && !s.contains(char::is_control) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "etcd prefix '{s}' must start and end with '/' (e.g. /probemesh/)"
        ))
    }
}

/// Connects to etcd. The connection itself is made lazily by the client;
/// this reads the TLS files and checks that a member answers within the
/// timeout, so a wrong address fails at start with its name.
pub async fn connect(settings: &EtcdSettings) -> Result<Client> {
    let mut options = ConnectOptions::new()
        .with_timeout(settings.timeout)
        .with_connect_timeout(settings.timeout)
        .with_keep_alive(Duration::from_secs(5), settings.timeout)
        .with_keep_alive_while_idle(true);
    if let Some(tls) = &settings.tls {
        options = options.with_tls(tls_options(tls)?);
    }
    let client = Client::connect(&settings.endpoints, Some(options))
        .await
        .map_err(|source| Error::Etcd {
            op: "connect to",
            endpoints: settings.endpoint_list(),
            source,
        })?;
    retry(|| {
        let mut client = client.clone();
        async move { client.status().await }
    })
    .await
    .map_err(|source| Error::Etcd {
        op: "reach",
        endpoints: settings.endpoint_list(),
        source,
    })?;
    Ok(client)
}

fn tls_options(tls: &EtcdTls) -> Result<TlsOptions> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| Error::Store {
            op: "read etcd TLS file",
            path: path.clone(),
            source,
        })
    };
    Ok(TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read(&tls.ca)?))
        .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?)))
}

/// Runs `call` until it succeeds, fails with anything but `Unavailable`,
/// or has been tried [`ATTEMPTS`] times, pausing 100, 200, 400 ms between
/// attempts. Each attempt is bounded by the client's timeout. The client's
/// methods take `&mut self` and it clones cheaply: clone it into each
/// attempt (`retry(|| { let mut c = client.clone(); async move { c.get(..).await } })`).
pub async fn retry<T, F, Fut>(mut call: F) -> std::result::Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let mut pause = FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if attempt < ATTEMPTS && is_unavailable(&e) => {
                tracing::debug!(error = %e, attempt, "etcd unavailable; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// Whether etcd could not be reached or had no leader (worth a retry),
/// as opposed to refusing the request.
pub fn is_unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// One run of coordinator `id` (started at `started_unix_ms`), as the runs
/// it records name their writer: a coordinator restarted under the same id
/// is another incarnation, so the runs its previous one left `running`
/// read `interrupted`.
pub fn incarnation(id: &str, started_unix_ms: i64) -> String {
    format!("{id}@{started_unix_ms}")
}

/// The keys of one mesh, under its prefix. Every coordinator derives every
/// key here, so a layout change is made in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The layout under `prefix` (which ends with `/`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}/{id}", self.prefix)
    }

    fn kind_prefix(&self, kind: &str) -> String {
        format!("{}{kind}/", self.prefix)
    }

    /// A live coordinator, under its lease.
    pub fn coordinator(&self, id: &str) -> String {
        self.key("coordinators", id)
    }

    /// Every live coordinator.
    pub fn coordinator_prefix(&self) -> String {
        self.kind_prefix("coordinators")
    }

    /// The stream of probe `name` and the coordinator holding it, under that
    /// coordinator's lease.
    pub fn probe(&self, name: &str) -> String {
        self.key("probes", name)
    }

    /// Every attached probe.
    pub fn probe_prefix(&self) -> String {
        self.kind_prefix("probes")
    }

    /// One run's record.
    pub fn run(&self, id: &str) -> String {
        self.key("runs", id)
    }

    /// Every run record.
    pub fn run_prefix(&self) -> String {
        self.kind_prefix("runs")
    }

    /// Run `id`'s entry in the listing, which sorts newest first (by
    /// `started_unix_ms`, then id); its value is the coordinator that wrote
    /// the run's record last.
    pub fn run_order(&self, started_unix_ms: i64, id: &str) -> String {
        let newest_first = u64::MAX - u64::try_from(started_unix_ms).unwrap_or(0);
        self.key("run-order", &format!("{newest_first:020}/{id}"))
    }

    /// The run listing.
    pub fn run_order_prefix(&self) -> String {
        self.kind_prefix("run-order")
    }

    /// The pending join token of probe `name` (its id).
    pub fn token_name(&self, name: &str) -> String {
        self.key("token-names", name)
    }

    /// One join token, by its id.
    pub fn token(&self, id: &str) -> String {
        self.key("tokens", id)
    }

    /// Every join token.
    pub fn token_prefix(&self) -> String {
        self.kind_prefix("tokens")
    }

    /// One revocation (a name or a serial).
    pub fn revocation(&self, key: &str) -> String {
        self.key("revocations", key)
    }

    /// Every revocation.
    pub fn revocation_prefix(&self) -> String {
        self.kind_prefix("revocations")
    }

    /// One certificate the coordinators signed, by serial.
    pub fn certificate(&self, serial: &str) -> String {
        self.key("certificates", serial)
    }

    /// Every certificate the coordinators signed.
    pub fn certificate_prefix(&self) -> String {
        self.kind_prefix("certificates")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_need_a_scheme_and_a_port() {
        assert_eq!(
            parse_endpoints("http://127.0.0.1:2379, https://etcd-1:2379")
                .unwrap()
                .0,
            vec!["http://127.0.0.1:2379", "https://etcd-1:2379"]
        );
        for bad in [
            "",
            ",",
            "127.0.0.1:2379",
            "http://etcd",
            "http://etcd:0",
            "ftp://e:1",
        ] {
            let err = parse_endpoints(bad).unwrap_err();
            assert!(err.contains("etcd"), "{bad}: {err}");
        }
    }

    #[test]
    fn prefix_is_slash_delimited() {
        assert_eq!(parse_prefix("/probemesh/").unwrap(), "/probemesh/");
        assert!(parse_prefix("probemesh").is_err());
        assert!(parse_prefix("/").is_err());
        assert!(parse_prefix("/a\n/").is_err());
    }

    #[test]
    fn keys_live_under_the_prefix_by_kind() {
        let keys = Keys::new("/m/");
        assert_eq!(keys.run("r1"), "/m/runs/r1");
        assert!(keys.run("r1").starts_with(&keys.run_prefix()));
        assert!(keys.probe("node-1").starts_with(&keys.probe_prefix()));
        assert!(!keys.probe("x").starts_with(&keys.coordinator_prefix()));
        assert_eq!(keys.revocation("name:a"), "/m/revocations/name:a");
        // The listing sorts newest first, and apart from the runs.
        assert!(keys.run_order(2_000, "b") < keys.run_order(1_000, "a"));
        assert!(keys.run_order(1_000, "a") < keys.run_order(1_000, "b"));
        assert!(!keys.run_order(1, "a").starts_with(&keys.run_prefix()));
    }
}
