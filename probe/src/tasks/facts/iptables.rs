//! The NAT table as `iptables-save -t nat` prints it, and the kube-proxy
//! Service chain walk: KUBE-SERVICES → KUBE-SVC-… → KUBE-SEP-… → DNAT (and
//! KUBE-SERVICES → KUBE-NODEPORTS → KUBE-EXT-… → … for node ports).
//! Sans-IO: text in, rules and paths out.
//!
//! The walk follows every rule that can match a packet to `match_ip:port`
//! (all `--probability` branches, as each is a possible path); it ignores
//! source matches (we do not know the client) and jumps to `KUBE-MARK-*`
//! chains, which only mark packets for masquerading. Paths end at a DNAT
//! (or REDIRECT) target; a Service or endpoint chain with no way on is
//! reported as a dead end ("no DNAT"), which is how a Service without
//! endpoints looks.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use probemesh_model::inventory::Cidr;

use super::nat::{Backend, NatEnd, NatPath};

/// Most rules kept from one table.
pub const MAX_RULES: usize = 50_000;
/// Most paths returned by one walk.
pub const MAX_PATHS: usize = 256;
/// Deepest chain nesting followed.
const MAX_DEPTH: usize = 16;
/// Where kube-proxy's Service dispatch starts.
pub const SERVICES_CHAIN: &str = "KUBE-SERVICES";
/// The chain that marks a packet for masquerading.
const MASQ_MARK_CHAIN: &str = "KUBE-MARK-MASQ";

/// A `-d` argument: `IP/LEN` or a bare `IP` (a host prefix).
fn parse_destination(text: &str) -> Option<Cidr> {
    text.parse::<Cidr>().ok().or_else(|| {
        let addr: IpAddr = text.parse().ok()?;
        Cidr::new(addr, if addr.is_ipv4() { 32 } else { 128 }).ok()
    })
}

/// A `--dport` match: one port or an inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub low: u16,
    /// Last port.
    pub high: u16,
}

impl PortRange {
    fn parse(text: &str) -> Option<Self> {
        match text.split_once(':') {
            Some((l, h)) => Some(Self {
                low: l.parse().ok()?,
                high: h.parse().ok()?,
            }),
            None => {
                let p = text.parse().ok()?;
                Some(Self { low: p, high: p })
            }
        }
    }

    fn contains(self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

/// One `-A CHAIN …` line of `iptables-save`, with the matches the walk needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Table (`nat`).
    pub table: String,
    /// Chain the rule is appended to.
    pub chain: String,
    /// The rule as `iptables -S` prints it (`-A CHAIN …`).
    pub text: String,
    /// `-j`/`-g` target (a chain, DNAT, MASQUERADE, RETURN, …); empty when none.
    pub target: String,
    /// `--to-destination` of a DNAT rule.
    pub to_destination: String,
    /// `-d` match and whether it is negated (`! -d`).
    pub destination: Option<(Cidr, bool)>,
    /// `-p` protocol, unless negated.
    pub protocol: Option<String>,
    /// `--dport`/`--dports` ports (any of them), and whether negated.
    pub dports: Option<(Vec<PortRange>, bool)>,
    /// `-m addrtype --dst-type LOCAL` (not negated).
    pub dst_local: bool,
}

/// A parsed table: its rules in order and the chains it declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatTable {
    /// Rules in the order iptables evaluates them within each chain.
    pub rules: Vec<Rule>,
    /// Chains declared (`:CHAIN POLICY [p:b]`).
    pub chains: BTreeSet<String>,
}

/// Splits an iptables-save line into words, honouring double quotes and
/// backslash escapes as iptables-save writes them around comments.
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Parses `iptables-save` output (any table; only `-A` lines become rules,
/// at most [`MAX_RULES`]).
pub fn parse(text: &str) -> NatTable {
    let mut table = NatTable::default();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('*') {
            name.clone_into(&mut current);
        } else if let Some(decl) = line.strip_prefix(':') {
            if let Some(chain) = decl.split_whitespace().next() {
                table.chains.insert(chain.to_owned());
            }
        } else if line.starts_with("-A ")
            && table.rules.len() < MAX_RULES
            && let Some(rule) = parse_rule(&current, line)
        {
            table.rules.push(rule);
        }
    }
    table
}

pub(super) fn parse_rule(table: &str, line: &str) -> Option<Rule> {
    let words = split_words(line);
    let chain = words.get(1)?.clone();
    let mut rule = Rule {
        table: table.to_owned(),
        chain,
        text: line.to_owned(),
        target: String::new(),
        to_destination: String::new(),
        destination: None,
        protocol: None,
        dports: None,
        dst_local: false,
    };
    let mut negate = false;
    let mut i = 2;
    while let Some(word) = words.get(i) {
        let value = words.get(i + 1).map(String::as_str);
        let mut consumed = 1;
        match (word.as_str(), value) {
            ("!", _) => {
                negate = true;
                i += 1;
                continue;
            }
            ("-d" | "--destination", Some(v)) => {
                rule.destination = parse_destination(v).map(|c| (c, negate));
                consumed = 2;
            }
            ("-p" | "--protocol", Some(v)) => {
                if !negate {
                    rule.protocol = Some(v.to_owned());
                }
                consumed = 2;
            }
            ("--dport" | "--dports" | "--destination-port", Some(v)) => {
                let ranges: Option<Vec<PortRange>> = v.split(',').map(PortRange::parse).collect();
                rule.dports = ranges.map(|r| (r, negate));
                consumed = 2;
            }
            ("--dst-type", Some(v)) => {
                rule.dst_local = v == "LOCAL" && !negate;
                consumed = 2;
            }
            ("-j" | "--jump" | "-g" | "--goto", Some(v)) => {
                rule.target = v.to_owned();
                consumed = 2;
            }
            ("--to-destination", Some(v)) => {
                rule.to_destination = v.to_owned();
                consumed = 2;
            }
            _ => {}
        }
        negate = false;
        i += consumed;
    }
    Some(rule)
}

/// What the walk looks for. `None` fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatMatch {
    /// Destination IP of the packet (a ClusterIP or a node IP).
    pub ip: Option<IpAddr>,
    /// Destination port.
    pub port: Option<u16>,
    /// This host's addresses, for `--dst-type LOCAL` (node ports).
    pub local_addrs: Vec<IpAddr>,
}

impl NatMatch {
    fn matches(&self, rule: &Rule) -> bool {
        if let (Some((cidr, negated)), Some(ip)) = (rule.destination, self.ip)
            && cidr.contains(ip) == negated
        {
            return false;
        }
        if let (Some((ranges, negated)), Some(port)) = (&rule.dports, self.port)
            && ranges.iter().any(|r| r.contains(port)) == *negated
        {
            return false;
        }
        if rule.dst_local
            && let Some(ip) = self.ip
            && !self.local_addrs.contains(&ip)
        {
            return false;
        }
        true
    }
}

/// One way a packet can go (chains from [`SERVICES_CHAIN`] on, and how it
/// ends), with the rules it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkedPath {
    /// The way, in the backends' shared shape.
    pub path: NatPath,
    /// Indices into [`NatTable::rules`] of the rules taken, in order.
    pub rules: Vec<usize>,
}

/// Every path from [`SERVICES_CHAIN`] that a packet matching `m` can take
/// to a DNAT (at most [`MAX_PATHS`], after examining at most
/// [`MAX_STEPS`] rules). Empty when the chain is absent or no Service rule
/// matches, which is what missing kube-proxy rules look like.
pub fn walk(table: &NatTable, m: &NatMatch) -> Vec<WalkedPath> {
    let mut by_chain: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, rule) in table.rules.iter().enumerate() {
        by_chain.entry(rule.chain.as_str()).or_default().push(i);
    }
    let mut walker = Walker {
        table,
        by_chain,
        m,
        stack: vec![SERVICES_CHAIN.to_owned()],
        taken: Vec::new(),
        paths: Vec::new(),
        steps: 0,
        marks: 0,
    };
    walker.descend();
    walker.paths
}

/// Most rules examined by one walk (bounds pathological chain graphs).
pub const MAX_STEPS: usize = 200_000;

fn is_dead_end_reportable(chain: &str) -> bool {
    [
        "KUBE-SVC-",
        "KUBE-SVL-",
        "KUBE-EXT-",
        "KUBE-SEP-",
        "KUBE-FW-",
    ]
    .iter()
    .any(|p| chain.starts_with(p))
}

/// Depth-first walk state.
struct Walker<'a> {
    table: &'a NatTable,
    by_chain: HashMap<&'a str, Vec<usize>>,
    m: &'a NatMatch,
    /// Chains entered, outermost first.
    stack: Vec<String>,
    /// Rules taken to get here.
    taken: Vec<usize>,
    paths: Vec<WalkedPath>,
    steps: usize,
    /// Rules on the way so far that jumped to KUBE-MARK-MASQ.
    marks: usize,
}

impl Walker<'_> {
    fn exhausted(&self) -> bool {
        self.paths.len() >= MAX_PATHS || self.steps >= MAX_STEPS
    }

    fn path(&self, end: NatEnd, rules: Vec<usize>) -> WalkedPath {
        WalkedPath {
            path: NatPath {
                backend: Backend::Iptables,
                table: "nat".to_owned(),
                chains: self.stack.clone(),
                end,
                masquerade: self.marks > 0,
            },
            rules,
        }
    }

    fn descend(&mut self) {
        let Some(chain) = self.stack.last().cloned() else {
            return;
        };
        let before = self.paths.len();
        let marks = self.marks;
        let rules = self
            .by_chain
            .get(chain.as_str())
            .cloned()
            .unwrap_or_default();
        for i in rules {
            if self.exhausted() {
                return;
            }
            self.steps += 1;
            let rule = &self.table.rules[i];
            if !self.m.matches(rule) {
                continue;
            }
            let target = rule.target.as_str();
            if target == "DNAT" || target == "REDIRECT" {
                let mut rules = self.taken.clone();
                rules.push(i);
                let end = if target == "DNAT" {
                    NatEnd::Dnat(rule.to_destination.clone())
                } else {
                    NatEnd::Redirect(rule.to_destination.clone())
                };
                self.paths.push(self.path(end, rules));
            } else if target == MASQ_MARK_CHAIN {
                self.marks += 1;
            } else if self.table.chains.contains(target)
                && !target.starts_with("KUBE-MARK-")
                && !self.stack.iter().any(|c| c == target)
                && self.stack.len() < MAX_DEPTH
            {
                self.stack.push(target.to_owned());
                self.taken.push(i);
                self.descend();
                self.taken.pop();
                self.stack.pop();
            }
        }
        if self.paths.len() == before && is_dead_end_reportable(&chain) && !self.exhausted() {
            self.paths
                .push(self.path(NatEnd::NoDnat, self.taken.clone()));
        }
        self.marks = marks;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KUBE_PROXY: &str = include_str!("fixtures/iptables_save_nat.txt");

    fn paths(ip: &str, port: u16, local: &[&str]) -> Vec<String> {
        let table = parse(KUBE_PROXY);
        let m = NatMatch {
            ip: Some(ip.parse().unwrap()),
            port: (port != 0).then_some(port),
            local_addrs: local.iter().map(|a| a.parse().unwrap()).collect(),
        };
        walk(&table, &m).iter().map(|p| p.path.render()).collect()
    }

    #[test]
    fn parses_kube_proxy_rules() {
        let table = parse(KUBE_PROXY);
        assert_eq!(table.rules.len(), 30);
        assert!(table.chains.contains("KUBE-SVC-6BXRYFXQ7QYPUHFL"));
        let dnat = table
            .rules
            .iter()
            .find(|r| r.chain == "KUBE-SEP-UKSFD7AGPMPPLUHC" && r.target == "DNAT")
            .unwrap();
        assert_eq!(dnat.to_destination, "198.19.2.10:8080");
        assert_eq!(dnat.table, "nat");
        assert!(
            dnat.text
                .starts_with("-A KUBE-SEP-UKSFD7AGPMPPLUHC -p tcp -m comment")
        );
        let masq = table
            .rules
            .iter()
            .find(|r| r.chain == "KUBE-SVC-6BXRYFXQ7QYPUHFL")
            .unwrap();
        assert_eq!(masq.target, "KUBE-MARK-MASQ");
        assert_eq!(masq.protocol.as_deref(), Some("tcp"));
        assert_eq!(
            masq.dports,
            Some((vec![PortRange { low: 80, high: 80 }], false))
        );
    }

    #[test]
    fn cluster_ip_walks_to_every_endpoint() {
        assert_eq!(
            paths("198.18.200.80", 80, &[]),
            [
                "KUBE-SERVICES -> KUBE-SVC-6BXRYFXQ7QYPUHFL -> KUBE-SEP-UKSFD7AGPMPPLUHC -> DNAT 198.19.2.10:8080",
                "KUBE-SERVICES -> KUBE-SVC-6BXRYFXQ7QYPUHFL -> KUBE-SEP-XN4MJ4WUYB2V5NVU -> DNAT 198.19.3.11:8080",
            ]
        );
        assert!(paths("198.18.200.80", 81, &[]).is_empty(), "wrong port");
        assert_eq!(paths("198.18.200.10", 53, &[]).len(), 2, "udp and tcp");
    }

    #[test]
    fn node_ports_go_through_kube_nodeports() {
        assert_eq!(
            paths("198.18.0.12", 30080, &["198.18.0.12"]),
            [
                "KUBE-SERVICES -> KUBE-NODEPORTS -> KUBE-EXT-6BXRYFXQ7QYPUHFL -> KUBE-SVC-6BXRYFXQ7QYPUHFL -> KUBE-SEP-UKSFD7AGPMPPLUHC -> DNAT 198.19.2.10:8080",
                "KUBE-SERVICES -> KUBE-NODEPORTS -> KUBE-EXT-6BXRYFXQ7QYPUHFL -> KUBE-SVC-6BXRYFXQ7QYPUHFL -> KUBE-SEP-XN4MJ4WUYB2V5NVU -> DNAT 198.19.3.11:8080",
            ]
        );
        assert!(
            paths("198.18.0.12", 30080, &[]).is_empty(),
            "not a local address"
        );
    }

    #[test]
    fn a_service_without_endpoints_is_a_dead_end() {
        assert_eq!(
            paths("198.18.200.99", 80, &[]),
            ["KUBE-SERVICES -> KUBE-SVC-NOEPS3LXJ2WFW4AQ -> no DNAT"]
        );
    }

    #[test]
    fn missing_rules_give_no_path() {
        let empty = parse("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n");
        assert!(walk(&empty, &NatMatch::default()).is_empty());
    }

    #[test]
    fn taken_rules_are_recorded() {
        let table = parse(KUBE_PROXY);
        let m = NatMatch {
            ip: Some("198.18.200.80".parse().unwrap()),
            port: Some(80),
            local_addrs: Vec::new(),
        };
        let first = &walk(&table, &m)[0];
        let chains: Vec<&str> = first
            .rules
            .iter()
            .map(|&i| table.rules[i].chain.as_str())
            .collect();
        assert_eq!(
            chains,
            [
                "KUBE-SERVICES",
                "KUBE-SVC-6BXRYFXQ7QYPUHFL",
                "KUBE-SEP-UKSFD7AGPMPPLUHC"
            ]
        );
    }

    #[test]
    fn words_and_negations() {
        assert_eq!(
            split_words(r#"-A X -m comment --comment "a \"b\" c" -j Y"#),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "Y"
            ]
        );
        let rule = parse_rule("nat", "-A X ! -d 10.0.0.0/8 ! --dport 1:1024 -j Y").unwrap();
        assert_eq!(
            rule.destination,
            Some((parse_destination("10.0.0.0/8").unwrap(), true))
        );
        let m = NatMatch {
            ip: Some("10.1.1.1".parse().unwrap()),
            ..NatMatch::default()
        };
        assert!(!m.matches(&rule));
        assert!(parse_destination("10.0.0.0/33").is_none());
        assert!(
            parse_destination("::/0")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert_eq!(
            parse_destination("198.18.200.80"),
            parse_destination("198.18.200.80/32")
        );
    }

    proptest! {
        #[test]
        fn parser_and_walk_never_panic(text in "((-A|\\*|:|!| |-d|-j|--dport|KUBE-SERVICES|KUBE-SVC-A|DNAT|[0-9./:]|\")*\n){0,12}") {
            let table = parse(&text);
            let _ = walk(&table, &NatMatch { ip: Some("10.0.0.1".parse().unwrap()), port: Some(80), local_addrs: Vec::new() });
            let _ = walk(&table, &NatMatch::default());
        }

        #[test]
        fn any_text_parses(text in ".{0,300}") {
            let _ = parse(&text);
            let _ = split_words(&text);
        }
    }
}
