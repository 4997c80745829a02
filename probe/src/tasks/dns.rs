//! DNS resolution as `dig` does it, against the namespace's own
//! `resolv.conf` servers and/or explicit servers, one answer per server
//! (rcode, records, latency), plus a comparison conclusion ("cluster DNS
//! times out while upstream answers").
//!
//! Sans-IO parts: [`ResolvConf::parse`], [`query_names`], [`encode_query`],
//! [`decode_response`] and [`conclusion`]. The I/O is [`run`]: one UDP query
//! per server and candidate name (TCP when the answer is truncated), built
//! and parsed with `hickory-proto`; no resolver library and no shelling out,
//! so what we report is exactly what each server said.
//!
//! Which `resolv.conf`: `ip netns exec NS` bind-mounts
//! `/etc/netns/NS/resolv.conf` over `/etc/resolv.conf`, but a probe thread
//! that `setns()`'d into a namespace sees the host's mounts; the caller
//! therefore passes the candidate paths ([`DnsSpec::resolv_conf_paths`]) and
//! the first that exists wins.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{Error, Result};

/// Per-query timeout when the task says 0.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest per-query timeout a task may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);
/// Most servers one task asks (resolv.conf's plus explicit ones).
pub const MAX_SERVERS: usize = 8;
/// Most search domains taken from resolv.conf (glibc's historical limit).
pub const MAX_SEARCH: usize = 6;
/// `ndots` when resolv.conf does not set it (glibc's default).
pub const DEFAULT_NDOTS: u8 = 1;
/// Largest UDP answer we accept, bytes.
const MAX_UDP_ANSWER: usize = 4096;
/// Largest TCP answer we accept, bytes (the length prefix's maximum).
const MAX_TCP_ANSWER: usize = 65_535;

/// A validated DNS task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSpec {
    /// The name as given; a trailing dot makes it absolute.
    pub name: String,
    /// Explicit servers (`dig @server`).
    pub servers: Vec<SocketAddr>,
    /// Ask the resolv.conf servers as well as the explicit ones and conclude
    /// which fails.
    pub compare: bool,
    /// Per query, 1 ms..=[`MAX_TIMEOUT`].
    pub timeout: Duration,
    /// Record type asked (`dig -t`).
    pub record_type: RecordType,
    /// Where the namespace's resolv.conf may be, most specific first.
    pub resolv_conf_paths: Vec<PathBuf>,
}

impl DnsSpec {
    /// Whether the namespace's resolv.conf servers are asked.
    pub fn asks_resolv_conf(&self) -> bool {
        self.servers.is_empty() || self.compare
    }
}

/// What a resolv.conf says, as far as this task cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, port 53, at most [`MAX_SERVERS`].
    pub nameservers: Vec<SocketAddr>,
    /// `search` (or `domain`) list, the last line wins, as in glibc.
    pub search: Vec<String>,
    /// `options ndots:N` (0..=15, glibc's cap).
    pub ndots: u8,
}

impl Default for ResolvConf {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            search: Vec::new(),
            ndots: DEFAULT_NDOTS,
        }
    }
}

impl ResolvConf {
    /// Parses resolv.conf text; unknown or malformed lines are ignored, as
    /// glibc ignores them.
    pub fn parse(text: &str) -> Self {
        let mut conf = Self::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    let ip = words
                        .next()
                        .and_then(|w| w.split('%').next())
                        .and_then(|w| w.parse::<IpAddr>().ok());
                    if let Some(ip) = ip
                        && conf.nameservers.len() < MAX_SERVERS
                    {
                        conf.nameservers.push(SocketAddr::new(ip, 53));
                    }
                }
                Some("search" | "domain") => {
                    conf.search = words
                        .filter(|w| !w.is_empty())
                        .take(MAX_SEARCH)
                        .map(|w| w.trim_end_matches('.').to_owned())
                        .collect();
                }
                Some("options") => {
                    for option in words {
                        if let Some(n) = option.strip_prefix("ndots:")
                            && let Ok(n) = n.parse::<u8>()
                        {
                            conf.ndots = n.min(15);
                        }
                    }
                }
                _ => {}
            }
        }
        conf
    }
}

/// Where a server came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSource {
    /// A `nameserver` line of the namespace's resolv.conf ("cluster DNS" in a pod).
    ResolvConf,
    /// Given explicitly in the task.
    Explicit,
}

impl ServerSource {
    /// `resolv.conf` / `explicit`, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerSource::ResolvConf => "resolv.conf",
            ServerSource::Explicit => "explicit",
        }
    }
}

/// How one server answered (the last query asked of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    /// NOERROR (possibly with no records: NODATA).
    NoError,
    /// NXDOMAIN: the name does not exist.
    NxDomain,
    /// SERVFAIL: the server could not resolve (e.g. its upstream is down).
    ServFail,
    /// REFUSED: the server will not answer us.
    Refused,
    /// No answer within the timeout.
    Timeout,
    /// Any other failure: socket error, ICMP unreachable, malformed or
    /// unexpected answer, another rcode.
    Error,
}

impl Rcode {
    /// The name dig prints (TIMEOUT and ERROR are ours).
    pub fn as_str(self) -> &'static str {
        match self {
            Rcode::NoError => "NOERROR",
            Rcode::NxDomain => "NXDOMAIN",
            Rcode::ServFail => "SERVFAIL",
            Rcode::Refused => "REFUSED",
            Rcode::Timeout => "TIMEOUT",
            Rcode::Error => "ERROR",
        }
    }

    /// The server replied with a DNS answer (a name that does not exist is
    /// still an answer: the server works).
    pub fn answered(self) -> bool {
        matches!(self, Rcode::NoError | Rcode::NxDomain)
    }
}

impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAnswer {
    /// The server asked.
    pub server: SocketAddr,
    /// Where it came from.
    pub source: ServerSource,
    /// Outcome of the last query asked of it.
    pub rcode: Rcode,
    /// Answer-section records as dig prints them (`NAME TTL IN TYPE DATA`).
    pub answers: Vec<String>,
    /// Time spent on this server, all candidate names together.
    pub latency: Duration,
    /// The names asked and anything unusual (truncation, socket errors).
    pub detail: String,
}

/// The task's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsReport {
    /// The name as given.
    pub name: String,
    /// One per server asked, resolv.conf's first.
    pub answers: Vec<ServerAnswer>,
    /// The namespace's resolv.conf (empty when not read).
    pub resolv_conf: ResolvConf,
    /// The comparison's conclusion (also set for a single server).
    pub conclusion: String,
}

/// The absolute names to ask, in order: the name alone when it ends with a
/// dot or has at least `ndots` dots (no search-list expansion); otherwise
/// each search domain appended, then the name alone. Empty when the name is
/// not a valid DNS name.
pub fn query_names(name: &str, conf: &ResolvConf) -> Vec<Name> {
    let absolute = |s: &str| {
        Name::from_ascii(s).ok().map(|mut n| {
            n.set_fqdn(true);
            n
        })
    };
    if name.ends_with('.') || name.matches('.').count() >= usize::from(conf.ndots) {
        return absolute(name.trim_end_matches('.')).into_iter().collect();
    }
    conf.search
        .iter()
        .map(|domain| format!("{name}.{domain}"))
        .chain(std::iter::once(name.to_owned()))
        .filter_map(|n| absolute(&n))
        .collect()
}

/// A recursive query for `name`/`record_type` with message id `id`.
pub fn encode_query(id: u16, name: &Name, record_type: RecordType) -> Result<Vec<u8>, String> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name.clone(), record_type));
    message.to_vec().map_err(|e| e.to_string())
}

/// A decoded answer to one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The answer's rcode (ours: [`Rcode::Error`] for rcodes we do not name).
    pub rcode: Rcode,
    /// Answer-section records as dig prints them.
    pub records: Vec<String>,
    /// TC bit: the answer did not fit in UDP; ask again over TCP.
    pub truncated: bool,
}

/// Decodes `bytes` as the answer to the query with id `id`; `None` when the
/// bytes are not a DNS response to it (keep waiting).
pub fn decode_response(id: u16, bytes: &[u8]) -> Option<Decoded> {
    let message = Message::from_vec(bytes).ok()?;
    if message.metadata.id != id || message.metadata.message_type != MessageType::Response {
        return None;
    }
    let rcode = match message.metadata.response_code {
        ResponseCode::NoError => Rcode::NoError,
        ResponseCode::NXDomain => Rcode::NxDomain,
        ResponseCode::ServFail => Rcode::ServFail,
        ResponseCode::Refused => Rcode::Refused,
        _ => Rcode::Error,
    };
    Some(Decoded {
        rcode,
        records: message.answers.iter().map(ToString::to_string).collect(),
        truncated: message.metadata.truncation,
    })
}

/// One line saying which servers work: "all servers answer", "all servers
/// fail (...)", or, when resolv.conf's servers fail and explicit ones
/// answer, "cluster DNS 198.18.200.10 timed out while 198.18.0.1 answered:
/// the pod cannot reach cluster DNS".
pub fn conclusion(answers: &[ServerAnswer]) -> String {
    if answers.is_empty() {
        return "no server was asked".to_owned();
    }
    let (ok, failed): (Vec<&ServerAnswer>, Vec<&ServerAnswer>) =
        answers.iter().partition(|a| a.rcode.answered());
    if failed.is_empty() {
        return if answers.len() == 1 {
            format!("{} answers", label(answers[0].server))
        } else {
            "all servers answer".to_owned()
        };
    }
    let failures = failed
        .iter()
        .map(|a| format!("{} {}", label(a.server), failure_verb(a)))
        .collect::<Vec<_>>()
        .join(", ");
    if ok.is_empty() {
        return if answers.len() == 1 {
            failures
        } else {
            format!("all servers fail: {failures}")
        };
    }
    let answered = ok
        .iter()
        .map(|a| label(a.server))
        .collect::<Vec<_>>()
        .join(", ");
    let cluster_failed = failed.iter().all(|a| a.source == ServerSource::ResolvConf);
    let explicit_ok = ok.iter().all(|a| a.source == ServerSource::Explicit);
    if cluster_failed && explicit_ok {
        let unreachable = failed
            .iter()
            .all(|a| matches!(a.rcode, Rcode::Timeout | Rcode::Error));
        let reading = if unreachable {
            "the pod cannot reach cluster DNS"
        } else {
            "cluster DNS is reachable but cannot resolve the name"
        };
        format!("cluster DNS {failures} while {answered} answered: {reading}")
    } else {
        format!("{failures} while {answered} answered")
    }
}

fn failure_verb(answer: &ServerAnswer) -> String {
    match answer.rcode {
        Rcode::Timeout => "timed out".to_owned(),
        Rcode::ServFail => "returned SERVFAIL".to_owned(),
        Rcode::Refused => "refused the query".to_owned(),
        _ if answer.detail.is_empty() => "failed".to_owned(),
        _ => format!("failed ({})", answer.detail),
    }
}

/// The server as people write it: the IP alone on port 53.
fn label(server: SocketAddr) -> String {
    if server.port() == 53 {
        server.ip().to_string()
    } else {
        server.to_string()
    }
}

/// Where named network namespaces are pinned (`ip netns add`).
pub const NETNS_RUN_DIR: &str = "/run/netns";
/// Most entries of [`NETNS_RUN_DIR`] examined.
const MAX_NAMED_NETNS: usize = 4096;

/// The resolv.conf paths of the calling thread's network namespace, most
/// specific first: `/etc/netns/NAME/resolv.conf` when the thread is in the
/// named namespace `NAME` (found by comparing the thread's namespace inode
/// with those pinned under [`NETNS_RUN_DIR`]; `ip netns exec` would
/// bind-mount that file, `setns()` does not), then `/etc/resolv.conf`.
pub fn resolv_conf_candidates() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(name) = current_netns_name() {
        paths.push(Path::new("/etc/netns").join(name).join("resolv.conf"));
    }
    paths.push(PathBuf::from("/etc/resolv.conf"));
    paths
}

fn current_netns_name() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/thread-self/ns/net").ok()?;
    std::fs::read_dir(NETNS_RUN_DIR)
        .ok()?
        .take(MAX_NAMED_NETNS)
        .filter_map(|e| e.ok())
        .find(|e| {
            std::fs::metadata(e.path()).is_ok_and(|m| m.dev() == own.dev() && m.ino() == own.ino())
        })
        .and_then(|e| e.file_name().into_string().ok())
}

/// Reads the first existing resolv.conf of `paths`; `None` when none exists
/// or none is readable (glibc then asks 127.0.0.1).
pub fn read_resolv_conf(paths: &[PathBuf]) -> Option<(PathBuf, ResolvConf)> {
    paths.iter().find_map(|p: &PathBuf| {
        let text = std::fs::read_to_string(Path::new(p)).ok()?;
        Some((p.clone(), ResolvConf::parse(&text)))
    })
}

/// Runs the task: asks every server concurrently, each server trying the
/// candidate names in order until one gets a positive answer (NXDOMAIN,
/// NODATA, SERVFAIL and REFUSED move on, as glibc does; a timeout or a
/// socket error stops that server). The answer reported is the last one.
/// Takes at most about (names × timeout), with at most 7 names;
/// cancellable.
pub async fn run(spec: &DnsSpec, cancel: &CancellationToken) -> Result<DnsReport> {
    let (conf, conf_note) = if spec.asks_resolv_conf() {
        match read_resolv_conf(&spec.resolv_conf_paths) {
            Some((path, conf)) if conf.nameservers.is_empty() => (
                conf,
                Some(format!(
                    "{} has no nameserver line; glibc asks 127.0.0.1",
                    path.display()
                )),
            ),
            Some((_, conf)) => (conf, None),
            None => (
                ResolvConf::default(),
                Some("no readable resolv.conf; glibc asks 127.0.0.1".to_owned()),
            ),
        }
    } else {
        (ResolvConf::default(), None)
    };
    let mut servers: Vec<(SocketAddr, ServerSource)> = Vec::new();
    if spec.asks_resolv_conf() {
        let from_conf = if conf.nameservers.is_empty() {
            vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53)]
        } else {
            conf.nameservers.clone()
        };
        servers.extend(from_conf.into_iter().map(|s| (s, ServerSource::ResolvConf)));
    }
    for &server in &spec.servers {
        if !servers.iter().any(|(s, _)| *s == server) {
            servers.push((server, ServerSource::Explicit));
        }
    }
    servers.truncate(MAX_SERVERS);
    let names = query_names(&spec.name, &conf);
    let asks = servers
        .iter()
        .map(|&(server, source)| ask_server(server, source, &names, spec));
    let total = u32::try_from(servers.len()).unwrap_or(u32::MAX);
    let mut answers = tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(Error::Cancelled { done: 0, total }),
        answers = futures::future::join_all(asks) => answers,
    };
    if let Some(note) = conf_note {
        for answer in answers
            .iter_mut()
            .filter(|a| a.source == ServerSource::ResolvConf)
        {
            answer.detail = join_detail(&note, &answer.detail);
        }
    }
    Ok(DnsReport {
        name: spec.name.clone(),
        conclusion: conclusion(&answers),
        answers,
        resolv_conf: conf,
    })
}

fn join_detail(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}; {b}"),
    }
}

async fn ask_server(
    server: SocketAddr,
    source: ServerSource,
    names: &[Name],
    spec: &DnsSpec,
) -> ServerAnswer {
    let start = Instant::now();
    let mut answer = ServerAnswer {
        server,
        source,
        rcode: Rcode::Error,
        answers: Vec::new(),
        latency: Duration::ZERO,
        detail: String::new(),
    };
    if names.is_empty() {
        answer.detail = format!("{:?} is not a valid DNS name", spec.name);
        return answer;
    }
    let mut asked = Vec::new();
    for name in names {
        let outcome = query(server, name, spec.record_type, spec.timeout).await;
        match outcome {
            Ok(decoded) => {
                answer.rcode = decoded.rcode;
                answer.answers = decoded.records;
                let nodata = answer.rcode == Rcode::NoError && answer.answers.is_empty();
                let shown = if nodata {
                    "NODATA"
                } else {
                    answer.rcode.as_str()
                };
                asked.push(format!("{} ({shown})", name.to_ascii()));
                // Like glibc's res_search: any answer but a positive one
                // moves on to the next candidate name.
                if answer.rcode == Rcode::NoError && !nodata {
                    break;
                }
            }
            Err(QueryFailure::Timeout) => {
                asked.push(format!("{} (TIMEOUT)", name.to_ascii()));
                answer.rcode = Rcode::Timeout;
                answer.answers.clear();
                answer.detail = format!("no answer within {:?}", spec.timeout);
                break;
            }
            Err(QueryFailure::Other(detail)) => {
                asked.push(format!("{} (ERROR)", name.to_ascii()));
                answer.rcode = Rcode::Error;
                answer.answers.clear();
                answer.detail = detail;
                break;
            }
        }
    }
    answer.latency = start.elapsed();
    answer.detail = join_detail(&format!("asked {}", asked.join(", ")), &answer.detail);
    answer
}

/// Why a query got no DNS answer.
#[derive(Debug)]
enum QueryFailure {
    Timeout,
    Other(String),
}

async fn query(
    server: SocketAddr,
    name: &Name,
    record_type: RecordType,
    timeout: Duration,
) -> Result<Decoded, QueryFailure> {
    let id: u16 = rand::random();
    let bytes = encode_query(id, name, record_type).map_err(QueryFailure::Other)?;
    let udp = tokio::time::timeout(timeout, udp_exchange(server, id, &bytes)).await;
    let decoded = match udp {
        Err(_) => return Err(QueryFailure::Timeout),
        Ok(result) => result?,
    };
    if !decoded.truncated {
        return Ok(decoded);
    }
    match tokio::time::timeout(timeout, tcp_exchange(server, id, &bytes)).await {
        Err(_) => Err(QueryFailure::Timeout),
        Ok(result) => result,
    }
}

fn unspecified(server: SocketAddr) -> SocketAddr {
    match server {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

async fn udp_exchange(server: SocketAddr, id: u16, query: &[u8]) -> Result<Decoded, QueryFailure> {
    let io = |op: &str, e: std::io::Error| QueryFailure::Other(format!("{op} {server}: {e}"));
    let socket = UdpSocket::bind(unspecified(server))
        .await
        .map_err(|e| io("bind for", e))?;
    socket.connect(server).await.map_err(|e| io("connect", e))?;
    socket.send(query).await.map_err(|e| io("send to", e))?;
    let mut buf = vec![0u8; MAX_UDP_ANSWER];
    loop {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| io("recv from", e))?;
        if let Some(decoded) = buf.get(..n).and_then(|b| decode_response(id, b)) {
            return Ok(decoded);
        }
    }
}

async fn tcp_exchange(server: SocketAddr, id: u16, query: &[u8]) -> Result<Decoded, QueryFailure> {
    let io = |op: &str, e: std::io::Error| QueryFailure::Other(format!("TCP {op} {server}: {e}"));
    let mut stream = TcpStream::connect(server)
        .await
        .map_err(|e| io("connect", e))?;
    let len = u16::try_from(query.len())
        .map_err(|_| QueryFailure::Other("query too long for TCP".to_owned()))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream
        .write_all(&framed)
        .await
        .map_err(|e| io("send to", e))?;
    let mut prefix = [0u8; 2];
    stream
        .read_exact(&mut prefix)
        .await
        .map_err(|e| io("recv from", e))?;
    let len = usize::from(u16::from_be_bytes(prefix)).min(MAX_TCP_ANSWER);
    let mut buf = vec![0u8; len];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| io("recv from", e))?;
    decode_response(id, &buf)
        .ok_or_else(|| QueryFailure::Other(format!("TCP answer from {server} is not a response")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POD_RESOLV_CONF: &str = "\
# Kubernetes-managed
search default.svc.cluster.local svc.cluster.local cluster.local
nameserver 198.18.200.10
options ndots:5 timeout:1
";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_a_pod_resolv_conf() {
        let conf = ResolvConf::parse(POD_RESOLV_CONF);
        assert_eq!(conf.nameservers, vec![addr("198.18.200.10:53")]);
        assert_eq!(
            conf.search,
            [
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(conf.ndots, 5);
    }

    #[test]
    fn odd_resolv_conf_lines_are_ignored() {
        let conf = ResolvConf::parse(
            "nameserver bogus\nnameserver fe80::1%eth0\nnameserver ::1 # comment\ndomain lab.\noptions ndots:99 rotate\n",
        );
        assert_eq!(
            conf.nameservers,
            vec![addr("[fe80::1]:53"), addr("[::1]:53")]
        );
        assert_eq!(conf.search, ["lab"]);
        assert_eq!(conf.ndots, 15);
        assert_eq!(ResolvConf::parse(""), ResolvConf::default());
    }

    #[test]
    fn short_names_expand_with_the_search_list() {
        let conf = ResolvConf::parse(POD_RESOLV_CONF);
        let names: Vec<String> = query_names("web", &conf)
            .iter()
            .map(Name::to_ascii)
            .collect();
        assert_eq!(
            names,
            [
                "web.default.svc.cluster.local.",
                "web.svc.cluster.local.",
                "web.cluster.local.",
                "web."
            ]
        );
    }

    #[test]
    fn absolute_or_dotted_names_do_not_expand() {
        let conf = ResolvConf::parse(POD_RESOLV_CONF);
        let one = |n: &str| {
            query_names(n, &conf)
                .iter()
                .map(Name::to_ascii)
                .collect::<Vec<_>>()
        };
        assert_eq!(one("example.com."), ["example.com."]);
        assert_eq!(one("a.b.c.d.e.f"), ["a.b.c.d.e.f."]);
        let ndots1 = ResolvConf::default();
        assert_eq!(
            query_names("example.com", &ndots1)
                .iter()
                .map(Name::to_ascii)
                .collect::<Vec<_>>(),
            ["example.com."]
        );
    }

    #[test]
    fn queries_round_trip_through_hickory() {
        let name = Name::from_ascii("web.default.svc.cluster.local.").unwrap();
        let bytes = encode_query(0x1234, &name, RecordType::A).unwrap();
        assert_eq!(&bytes[..2], &[0x12, 0x34]);
        assert_eq!(
            decode_response(0x1234, &bytes),
            None,
            "a query is not a response"
        );
        let mut reply = Message::from_vec(&bytes).unwrap();
        reply.metadata.message_type = MessageType::Response;
        reply.metadata.response_code = ResponseCode::NXDomain;
        let reply = reply.to_vec().unwrap();
        assert_eq!(
            decode_response(0x1234, &reply),
            Some(Decoded {
                rcode: Rcode::NxDomain,
                records: Vec::new(),
                truncated: false
            })
        );
        assert_eq!(decode_response(0x4321, &reply), None, "another id");
    }

    fn answer(server: &str, source: ServerSource, rcode: Rcode) -> ServerAnswer {
        ServerAnswer {
            server: addr(server),
            source,
            rcode,
            answers: Vec::new(),
            latency: Duration::ZERO,
            detail: String::new(),
        }
    }

    #[test]
    fn conclusions_name_the_failing_server() {
        use ServerSource::{Explicit, ResolvConf as Conf};
        let cluster_down = [
            answer("198.18.200.10:53", Conf, Rcode::Timeout),
            answer("198.18.0.1:53", Explicit, Rcode::NoError),
        ];
        assert_eq!(
            conclusion(&cluster_down),
            "cluster DNS 198.18.200.10 timed out while 198.18.0.1 answered: the pod cannot reach cluster DNS"
        );
        let servfail = [
            answer("198.18.200.10:53", Conf, Rcode::ServFail),
            answer("198.18.0.1:5353", Explicit, Rcode::NxDomain),
        ];
        assert_eq!(
            conclusion(&servfail),
            "cluster DNS 198.18.200.10 returned SERVFAIL while 198.18.0.1:5353 answered: cluster DNS is reachable but cannot resolve the name"
        );
        let all_ok = [
            answer("198.18.200.10:53", Conf, Rcode::NoError),
            answer("198.18.0.1:53", Explicit, Rcode::NxDomain),
        ];
        assert_eq!(conclusion(&all_ok), "all servers answer");
        let all_bad = [
            answer("198.18.200.10:53", Conf, Rcode::Timeout),
            answer("198.18.0.1:53", Explicit, Rcode::Refused),
        ];
        assert_eq!(
            conclusion(&all_bad),
            "all servers fail: 198.18.200.10 timed out, 198.18.0.1 refused the query"
        );
        let upstream_bad = [
            answer("198.18.200.10:53", Conf, Rcode::NoError),
            answer("198.18.0.1:53", Explicit, Rcode::Timeout),
        ];
        assert_eq!(
            conclusion(&upstream_bad),
            "198.18.0.1 timed out while 198.18.200.10 answered"
        );
        assert_eq!(conclusion(&[]), "no server was asked");
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in ".{0,400}", bytes in proptest::collection::vec(any::<u8>(), 0..600), id in any::<u16>()) {
            let conf = ResolvConf::parse(&text);
            let _ = query_names(&text, &conf);
            let _ = decode_response(id, &bytes);
        }
    }
}
