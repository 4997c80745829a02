//! What a kube-proxy NAT walk finds, whichever backend wrote the rules:
//! the chains a packet to a Service address can take and how each way ends
//! (a DNAT to a backend, a dead end, a reject or drop). The `iptables` and
//! `nft` modules each walk their own layout and return these, so the
//! coordinator's rules read one shape. Sans-IO.

use std::fmt;

/// Where kube-proxy's rules were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// `iptables-save -t nat`: KUBE-SERVICES and the KUBE-* chains.
    Iptables,
    /// `nft -j list table ip|ip6 kube-proxy`.
    Nftables,
}

impl Backend {
    /// `iptables`, `nftables`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
        }
    }
}

/// How one way through the rules ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatEnd {
    /// Rewritten to this `IP:PORT` (or bare IP when the rule names no port).
    Dnat(String),
    /// Redirected to a local port (`:PORT`, or empty).
    Redirect(String),
    /// A Service or endpoint chain with no way on.
    NoDnat,
    /// Rejected: a Service without endpoints, a bad port of a ClusterIP.
    Reject,
    /// Dropped.
    Drop,
}

impl fmt::Display for NatEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatEnd::Dnat(to) => write!(f, "DNAT {to}"),
            NatEnd::Redirect(to) if to.is_empty() => f.write_str("REDIRECT"),
            NatEnd::Redirect(to) => write!(f, "REDIRECT {to}"),
            NatEnd::NoDnat => f.write_str("no DNAT"),
            NatEnd::Reject => f.write_str("REJECT"),
            NatEnd::Drop => f.write_str("DROP"),
        }
    }
}

/// One way a packet can go through kube-proxy's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatPath {
    /// Which rules.
    pub backend: Backend,
    /// `nat` (iptables) or `ip kube-proxy` (nftables).
    pub table: String,
    /// Chains in the order taken; for nftables also the `@map` lookups.
    pub chains: Vec<String>,
    /// How it ends.
    pub end: NatEnd,
    /// A rule on the way marks the packet for masquerading.
    pub masquerade: bool,
}

impl NatPath {
    /// `KUBE-SERVICES -> KUBE-SVC-X -> KUBE-SEP-Y -> DNAT 198.19.2.10:8080`,
    /// `services -> @service-ips -> service-… -> endpoint-… -> DNAT …`.
    pub fn render(&self) -> String {
        let mut hops = self.chains.clone();
        hops.push(self.end.to_string());
        hops.join(" -> ")
    }
}

/// A kube-proxy rule as node facts list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRule {
    /// `nat`, or `ip kube-proxy`.
    pub table: String,
    /// Its chain.
    pub chain: String,
    /// As `iptables -S` or `nft list` prints it.
    pub text: String,
    /// Jump target or verdict (`KUBE-SVC-…`, `DNAT`, `goto service-…`).
    pub target: String,
    /// The DNAT destination, when the rule rewrites one.
    pub to_destination: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_as_hops() {
        let p = NatPath {
            backend: Backend::Nftables,
            table: "ip kube-proxy".into(),
            chains: vec!["services".into(), "@service-ips".into()],
            end: NatEnd::Dnat("198.19.2.10:8080".into()),
            masquerade: false,
        };
        assert_eq!(
            p.render(),
            "services -> @service-ips -> DNAT 198.19.2.10:8080"
        );
        assert_eq!(NatEnd::Redirect(String::new()).to_string(), "REDIRECT");
        assert_eq!(NatEnd::NoDnat.to_string(), "no DNAT");
    }
}
