//! TARGET specs, exactly as DESIGN §3 spells them:
//! `IP`, `IP:PORT`, `HOSTNAME[:PORT]`, `probe:NAME[:PORT]`, `nodeport:PORT`,
//! `nodeport:NODE:PORT`, `svc:NAMESPACE/NAME[:PORT]`, `pod:NAMESPACE/NAME[:PORT]`,
//! `dns:NAME`.
//!
//! Parsing is pure: what a spec resolves to (which node, which pod IP) is the
//! coordinator's business, through its inventory.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::str::FromStr;

/// A TCP/UDP port; port 0 is never a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port(NonZeroU16);

impl Port {
    /// The port number.
    pub fn get(self) -> u16 {
        self.0.get()
    }
}

impl TryFrom<u16> for Port {
    type Error = InvalidTarget;
    fn try_from(value: u16) -> Result<Self, Self::Error> {
        NonZeroU16::new(value)
            .map(Port)
            .ok_or_else(|| InvalidTarget::Port("0".into()))
    }
}

impl FromStr for Port {
    type Err = InvalidTarget;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<NonZeroU16>()
            .map(Port)
            .map_err(|_| InvalidTarget::Port(s.to_owned()))
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Something a test can be aimed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A literal address, optionally with a port.
    Ip { addr: IpAddr, port: Option<Port> },
    /// A hostname, resolved where the test runs.
    Host { name: String, port: Option<Port> },
    /// Another registered probe (its address comes from the registry).
    Probe { name: String, port: Option<Port> },
    /// A NodePort, on every node (`node: None`) or on one node.
    NodePort { node: Option<String>, port: Port },
    /// A Service by namespace and name (its ClusterIP and endpoints).
    Service {
        namespace: String,
        name: String,
        port: Option<Port>,
    },
    /// A pod by namespace and name (its IP and node).
    Pod {
        namespace: String,
        name: String,
        port: Option<Port>,
    },
    /// Name resolution only.
    Dns { name: String },
}

/// Why a TARGET spec was refused. Every message ends by listing the forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTarget {
    #[error("the target is empty; {FORMS}")]
    Empty,
    #[error("'{0}' is not a port: ports are 1..=65535")]
    Port(String),
    #[error("'{0}' is not a valid hostname (letters, digits, '-' and '.', labels of 1..=63 chars)")]
    Hostname(String),
    #[error(
        "'{0}' is not a valid Kubernetes name (lowercase letters, digits, '-' and '.', at most 253 chars)"
    )]
    Name(String),
    #[error("'{0}' needs NAMESPACE/NAME, e.g. svc:default/web or pod:default/web-0")]
    NamespacedName(String),
    #[error("'{spec}' needs a port: {hint}")]
    MissingPort { spec: String, hint: &'static str },
    #[error("'{0}' is not a target; {FORMS}")]
    Unrecognised(String),
    /// Tabs, newlines and other control characters would be stored and
    /// printed raw; refused before anything else is read.
    #[error(
        "the target contains the control character {0:?}: targets are one line of printable text"
    )]
    Control(char),
    #[error("the target is {0} bytes long, at most {MAX_TARGET_BYTES}; {FORMS}")]
    TooLong(usize),
}

/// Longest TARGET spec (a 253-byte name with its prefix and port fits).
pub const MAX_TARGET_BYTES: usize = 512;

const FORMS: &str = "targets are IP, IP:PORT, HOSTNAME[:PORT], probe:NAME[:PORT], \
nodeport:PORT, nodeport:NODE:PORT, svc:NAMESPACE/NAME[:PORT], pod:NAMESPACE/NAME[:PORT] or dns:NAME";

impl Target {
    /// The port the spec names, if any.
    pub fn port(&self) -> Option<Port> {
        match self {
            Target::Ip { port, .. }
            | Target::Host { port, .. }
            | Target::Probe { port, .. }
            | Target::Service { port, .. }
            | Target::Pod { port, .. } => *port,
            Target::NodePort { port, .. } => Some(*port),
            Target::Dns { .. } => None,
        }
    }
}

impl FromStr for Target {
    type Err = InvalidTarget;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.len() > MAX_TARGET_BYTES {
            return Err(InvalidTarget::TooLong(input.len()));
        }
        if let Some(c) = input.chars().find(|c| c.is_control()) {
            return Err(InvalidTarget::Control(c));
        }
        let s = input.trim();
        if s.is_empty() {
            return Err(InvalidTarget::Empty);
        }
        if let Some(rest) = s.strip_prefix("probe:") {
            let (name, port) = split_port(rest)?;
            return Ok(Target::Probe {
                name: k8s_name(name)?,
                port,
            });
        }
        if let Some(rest) = s.strip_prefix("nodeport:") {
            return parse_nodeport(rest);
        }
        if let Some(rest) = s.strip_prefix("svc:") {
            let (namespace, name, port) = namespaced(rest)?;
            return Ok(Target::Service {
                namespace,
                name,
                port,
            });
        }
        if let Some(rest) = s.strip_prefix("pod:") {
            let (namespace, name, port) = namespaced(rest)?;
            return Ok(Target::Pod {
                namespace,
                name,
                port,
            });
        }
        if let Some(rest) = s.strip_prefix("dns:") {
            return Ok(Target::Dns {
                name: hostname(rest)?,
            });
        }
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(Target::Ip { addr, port: None });
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Target::Ip {
                addr: sa.ip(),
                port: Some(Port::try_from(sa.port())?),
            });
        }
        if s.contains("://") || s.contains('/') {
            return Err(InvalidTarget::Unrecognised(s.to_owned()));
        }
        let (name, port) = split_port(s)?;
        if name.parse::<IpAddr>().is_ok() {
            // e.g. "198.18.0.1:" — an address with an empty or bad port.
            return Err(InvalidTarget::Port(
                s.rsplit(':').next().unwrap_or_default().to_owned(),
            ));
        }
        Ok(Target::Host {
            name: hostname(name)?,
            port,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = |p: &Option<Port>| p.map(|p| format!(":{p}")).unwrap_or_default();
        match self {
            Target::Ip {
                addr,
                port: Some(p),
            } => write!(f, "{}", SocketAddr::new(*addr, p.get())),
            Target::Ip { addr, port: None } => write!(f, "{addr}"),
            Target::Host { name, port: p } => write!(f, "{name}{}", port(p)),
            Target::Probe { name, port: p } => write!(f, "probe:{name}{}", port(p)),
            Target::NodePort {
                node: Some(n),
                port,
            } => write!(f, "nodeport:{n}:{port}"),
            Target::NodePort { node: None, port } => write!(f, "nodeport:{port}"),
            Target::Service {
                namespace,
                name,
                port: p,
            } => {
                write!(f, "svc:{namespace}/{name}{}", port(p))
            }
            Target::Pod {
                namespace,
                name,
                port: p,
            } => write!(f, "pod:{namespace}/{name}{}", port(p)),
            Target::Dns { name } => write!(f, "dns:{name}"),
        }
    }
}

fn parse_nodeport(rest: &str) -> Result<Target, InvalidTarget> {
    let hint = "nodeport:PORT or nodeport:NODE:PORT";
    match rest.split_once(':') {
        None if rest.is_empty() => Err(InvalidTarget::MissingPort {
            spec: "nodeport:".into(),
            hint,
        }),
        None => Ok(Target::NodePort {
            node: None,
            port: rest.parse()?,
        }),
        Some((node, "")) => Err(InvalidTarget::MissingPort {
            spec: format!("nodeport:{node}:"),
            hint,
        }),
        Some((node, port)) => Ok(Target::NodePort {
            node: Some(k8s_name(node)?),
            port: port.parse()?,
        }),
    }
}

/// Splits `NAME[:PORT]`; `NAME:` (empty port) is an error.
fn split_port(s: &str) -> Result<(&str, Option<Port>), InvalidTarget> {
    match s.rsplit_once(':') {
        Some((name, port)) => Ok((name, Some(port.parse()?))),
        None => Ok((s, None)),
    }
}

fn namespaced(rest: &str) -> Result<(String, String, Option<Port>), InvalidTarget> {
    let (path, port) = split_port(rest)?;
    let (namespace, name) = path
        .split_once('/')
        .ok_or_else(|| InvalidTarget::NamespacedName(rest.to_owned()))?;
    if namespace.is_empty() || name.is_empty() || name.contains('/') {
        return Err(InvalidTarget::NamespacedName(rest.to_owned()));
    }
    Ok((k8s_name(namespace)?, k8s_name(name)?, port))
}

/// Kubernetes object names (RFC 1123 subdomain).
fn k8s_name(s: &str) -> Result<String, InvalidTarget> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    ok.then(|| s.to_owned())
        .ok_or_else(|| InvalidTarget::Name(s.to_owned()))
}

/// DNS hostnames (RFC 1123, a trailing dot allowed; `_` allowed for SRV-style labels).
fn hostname(s: &str) -> Result<String, InvalidTarget> {
    let body = s.strip_suffix('.').unwrap_or(s);
    let ok = !body.is_empty()
        && body.len() <= 253
        && body.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    ok.then(|| s.to_owned())
        .ok_or_else(|| InvalidTarget::Hostname(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use test_case::test_case;

    fn port(p: u16) -> Option<Port> {
        Port::try_from(p).ok()
    }

    #[test_case("198.18.0.11", Target::Ip { addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11)), port: None })]
    #[test_case("198.18.0.11:30080", Target::Ip { addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11)), port: port(30080) })]
    #[test_case("::1", Target::Ip { addr: "::1".parse().unwrap(), port: None })]
    #[test_case("[::1]:80", Target::Ip { addr: "::1".parse().unwrap(), port: port(80) })]
    #[test_case("web.default.svc.cluster.local", Target::Host { name: "web.default.svc.cluster.local".into(), port: None })]
    #[test_case("example.test:443", Target::Host { name: "example.test".into(), port: port(443) })]
    #[test_case("probe:node-2", Target::Probe { name: "node-2".into(), port: None })]
    #[test_case("probe:node-2:8080", Target::Probe { name: "node-2".into(), port: port(8080) })]
    #[test_case("nodeport:30080", Target::NodePort { node: None, port: Port::try_from(30080).unwrap() })]
    #[test_case("nodeport:node-1:30080", Target::NodePort { node: Some("node-1".into()), port: Port::try_from(30080).unwrap() })]
    #[test_case("svc:default/web", Target::Service { namespace: "default".into(), name: "web".into(), port: None })]
    #[test_case("svc:kube-system/kube-dns:53", Target::Service { namespace: "kube-system".into(), name: "kube-dns".into(), port: port(53) })]
    #[test_case("pod:default/web-0", Target::Pod { namespace: "default".into(), name: "web-0".into(), port: None })]
    #[test_case("pod:default/web-0:8080", Target::Pod { namespace: "default".into(), name: "web-0".into(), port: port(8080) })]
    #[test_case("dns:web.default.svc.cluster.local", Target::Dns { name: "web.default.svc.cluster.local".into() })]
    fn parses_every_contract_form(input: &str, expected: Target) {
        assert_eq!(input.parse::<Target>(), Ok(expected.clone()));
        // Display gives back a spec that parses to the same target.
        assert_eq!(expected.to_string().parse::<Target>(), Ok(expected));
    }

    #[test_case("", "empty")]
    #[test_case("198.18.0.11:0", "not a port")]
    #[test_case("198.18.0.11:70000", "not a port")]
    #[test_case("198.18.0.11:", "not a port")]
    #[test_case("host:http", "not a port")]
    #[test_case("nodeport:", "needs a port")]
    #[test_case("nodeport:node-1:", "needs a port")]
    #[test_case("nodeport:abc", "not a port")]
    #[test_case("svc:web", "needs NAMESPACE/NAME")]
    #[test_case("svc:default/", "needs NAMESPACE/NAME")]
    #[test_case("pod:a/b/c", "needs NAMESPACE/NAME")]
    #[test_case("pod:Default/Web", "not a valid Kubernetes name")]
    #[test_case("probe:Node_1", "not a valid Kubernetes name")]
    #[test_case("dns:", "not a valid hostname")]
    #[test_case("dns:bad..name", "not a valid hostname")]
    #[test_case("https://198.18.0.11", "not a target")]
    #[test_case("-leading.example", "not a valid hostname")]
    #[test_case("198.18.0.11\n", "control character '\\n'")]
    #[test_case("\t198.18.0.11", "control character '\\t'")]
    #[test_case("svc:default/web\r:80", "control character '\\r'")]
    #[test_case("dns:a\u{1b}[31m", "control character '\\u{1b}'")]
    fn refuses_bad_specs_clearly(input: &str, needle: &str) {
        let err = input
            .parse::<Target>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(needle), "{input:?} gave {err:?}");
    }

    #[test]
    fn an_overlong_spec_is_refused_by_length_without_echoing_it() {
        let err = "a"
            .repeat(100_000)
            .parse::<Target>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("100000 bytes long, at most 512"),
            "{}",
            &err[..80]
        );
        assert!(err.len() < 400);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_display_round_trips(s in "[a-z0-9:/._\\[\\]-]{0,40}") {
            if let Ok(t) = s.parse::<Target>() {
                proptest::prop_assert_eq!(t.to_string().parse::<Target>(), Ok(t));
            }
        }
    }
}
