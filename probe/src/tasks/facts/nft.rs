//! kube-proxy's nftables mode as `nft -j list table ip kube-proxy` prints
//! it, and the Service walk through it: `services` → `@service-ips` (or
//! `@service-nodeports` for a local address) → `service-…` (or
//! `external-…` → `service-…`) → `numgen random mod N vmap` → `endpoint-…`
//! → `dnat to IP:PORT`; when nothing rewrites the address, the filter side:
//! `service-endpoints-check` / `nodeport-endpoints-check` through the
//! `no-endpoint-*` maps, and `cluster-ips-check`, whose verdicts reject or
//! drop. Sans-IO: JSON in, table and paths out.
//!
//! The parse is bounded and total: the document goes through serde_json
//! into typed structs holding only what the walk reads; statements and
//! expressions of kinds it does not know are kept as
//! [`Stmt::Unrecognized`] / [`Expr::Unrecognized`] (a match on one may
//! hold, so the walk goes on past it), never an error. A document that is
//! not nft's JSON at all is a [`ParseError`].
//!
//! Like the iptables walk, every branch a packet can take is a path (each
//! `numgen` element), source matches are not judged (the client is not
//! known), nor is the protocol (a port may be TCP or UDP): such matches
//! may hold. A jump to `mark-for-masquerade` marks the path instead of
//! being walked.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use probemesh_model::inventory::Cidr;
use serde::Deserialize;
use serde_json::Value;

use super::iptables::NatMatch;
use super::nat::{Backend, NatEnd, NatPath};

mod render;

pub use render::render;

/// kube-proxy's table name.
pub const TABLE: &str = "kube-proxy";
/// Where kube-proxy's Service dispatch starts (its nat chains jump here).
pub const SERVICES_CHAIN: &str = "services";
/// kube-proxy's filter-side chains for traffic nothing rewrote, walked
/// when the dispatch found no DNAT.
const CHECK_CHAINS: [&str; 3] = [
    "service-endpoints-check",
    "nodeport-endpoints-check",
    "cluster-ips-check",
];
/// The chain that marks a packet for masquerading.
const MASQ_MARK_CHAIN: &str = "mark-for-masquerade";
/// Most rules, set elements and chains kept from one document.
pub const MAX_OBJECTS: usize = 50_000;
/// Most paths returned by one walk.
pub const MAX_PATHS: usize = 256;
/// Most rules examined by one walk.
pub const MAX_STEPS: usize = 200_000;
/// Deepest chain nesting followed.
const MAX_DEPTH: usize = 16;
/// Deepest expression nesting read; deeper is unrecognized.
const MAX_EXPR_DEPTH: usize = 12;

/// The document is not `nft -j` output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not nft JSON: {0}")]
pub struct ParseError(String);

/// A match's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`, and `in` (a set or flags).
    Eq,
    /// `!=`.
    Ne,
    /// Anything else (`<`, `>=`, ...): not judged.
    Other,
}

/// An expression, as far as the walk needs one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A string literal (`198.18.200.80`, `tcp`, `new`).
    Str(String),
    /// A number.
    Num(u64),
    /// A named set or map: `@nodeport-ips`.
    SetRef(String),
    /// `ADDR/LEN`.
    Prefix(String, u8),
    /// `LOW-HIGH`.
    Range(Box<Expr>, Box<Expr>),
    /// `PROTOCOL FIELD`: `ip daddr`, `th dport`.
    Payload(String, String),
    /// `meta KEY`.
    Meta(String),
    /// `ct KEY`.
    Ct(String),
    /// `fib FLAGS RESULT`: `fib daddr type`.
    Fib(Vec<String>, String),
    /// `numgen random mod N`.
    Numgen(u64),
    /// `a . b . c`.
    Concat(Vec<Expr>),
    /// An anonymous set `{ a, b }`.
    Set(Vec<Expr>),
    /// An anonymous verdict map `{ 0 : goto x, 1 : goto y }`.
    VerdictMap(Vec<(Expr, Verdict)>),
    /// A kind the walk does not read (its JSON key).
    Unrecognized(String),
}

/// A verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `jump CHAIN`.
    Jump(String),
    /// `goto CHAIN`.
    Goto(String),
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
    /// `return`.
    Return,
    /// `continue`.
    Continue,
}

/// A statement, as far as the walk needs one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    /// `LEFT OP RIGHT`.
    Match(Expr, Op, Expr),
    /// A verdict.
    Verdict(Verdict),
    /// `KEY vmap @MAP` or `KEY vmap { … }`.
    Vmap(Expr, Expr),
    /// `dnat to ADDR[:PORT]`.
    Dnat(Option<String>, Option<u64>),
    /// `redirect [to :PORT]`.
    Redirect(Option<u64>),
    /// `reject`.
    Reject,
    /// `counter packets N bytes M`.
    Counter(u64),
    /// `masquerade`.
    Masquerade,
    /// A kind the walk does not read (its JSON key).
    Unrecognized(String),
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its chain.
    pub chain: String,
    /// Kernel handle.
    pub handle: u64,
    /// Statements, in order.
    pub stmts: Vec<Stmt>,
}

/// A named set or map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetDef {
    /// Elements: keys, and for a verdict map their verdicts.
    pub elems: Vec<(Expr, Option<Verdict>)>,
}

/// A chain's hook, when it is a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// `filter`, `nat`, `route`.
    pub kind: String,
    /// `prerouting`, `input`, ...
    pub hook: String,
    /// Priority.
    pub priority: i64,
}

/// One table of `nft -j list table FAMILY NAME`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// `ip`, `ip6`, `inet`.
    pub family: String,
    /// Table name.
    pub name: String,
    /// Chains by name (a base chain with its hook).
    pub chains: BTreeMap<String, Option<Hook>>,
    /// Rules in list order.
    pub rules: Vec<Rule>,
    /// Named sets and maps.
    pub sets: HashMap<String, SetDef>,
}

impl Table {
    /// `ip kube-proxy`.
    pub fn label(&self) -> String {
        format!("{} {}", self.family, self.name)
    }
}

/// The objects of nft's JSON; every other kind (`metainfo`, `flowtable`,
/// ...) leaves all fields empty.
#[derive(Deserialize)]
struct Document {
    nftables: Vec<Object>,
}

#[derive(Deserialize)]
struct Object {
    table: Option<RawTable>,
    chain: Option<RawChain>,
    rule: Option<RawRule>,
    set: Option<RawSet>,
    map: Option<RawSet>,
}

#[derive(Deserialize)]
struct RawTable {
    family: String,
    name: String,
}

#[derive(Deserialize)]
struct RawChain {
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    hook: Option<String>,
    prio: Option<i64>,
}

#[derive(Deserialize)]
struct RawRule {
    chain: String,
    #[serde(default)]
    handle: u64,
    #[serde(default)]
    expr: Vec<Value>,
}

#[derive(Deserialize)]
struct RawSet {
    name: String,
    #[serde(default)]
    elem: Vec<Value>,
}

/// Parses the output of `nft -j list table …` (the first table in it; at
/// most [`MAX_OBJECTS`] rules, chains and elements).
pub fn parse(json: &str) -> Result<Table, ParseError> {
    let doc: Document = serde_json::from_str(json).map_err(|e| ParseError(e.to_string()))?;
    let mut table = Table::default();
    let mut kept = 0usize;
    for object in doc.nftables {
        if kept >= MAX_OBJECTS {
            break;
        }
        if let Some(t) = object.table
            && table.name.is_empty()
        {
            table.family = t.family;
            table.name = t.name;
        }
        if let Some(c) = object.chain {
            kept += 1;
            let hook = match (c.kind, c.hook) {
                (Some(kind), Some(hook)) => Some(Hook {
                    kind,
                    hook,
                    priority: c.prio.unwrap_or_default(),
                }),
                _ => None,
            };
            table.chains.insert(c.name, hook);
        }
        if let Some(r) = object.rule {
            kept += 1;
            table.rules.push(Rule {
                chain: r.chain,
                handle: r.handle,
                stmts: r.expr.iter().map(stmt).collect(),
            });
        }
        for s in [object.set, object.map].into_iter().flatten() {
            let room = MAX_OBJECTS.saturating_sub(kept);
            let elems: Vec<(Expr, Option<Verdict>)> =
                s.elem.iter().take(room).map(element).collect();
            kept += elems.len() + 1;
            table.sets.insert(s.name, SetDef { elems });
        }
    }
    Ok(table)
}

/// The one key of a `{"kind": value}` object.
fn tagged(v: &Value) -> Option<(&str, &Value)> {
    let map = v.as_object()?;
    let mut it = map.iter();
    let (k, inner) = it.next()?;
    it.next().is_none().then_some((k.as_str(), inner))
}

fn kind_of(v: &Value) -> String {
    match v {
        Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
        Value::Array(_) => "list".to_owned(),
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "bool".to_owned(),
        Value::Number(_) => "number".to_owned(),
        Value::String(_) => "string".to_owned(),
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)?.as_str().map(str::to_owned)
}

fn stmt(v: &Value) -> Stmt {
    let Some((kind, inner)) = tagged(v) else {
        return Stmt::Unrecognized(kind_of(v));
    };
    let parsed = match kind {
        "match" => inner.get("op").and_then(Value::as_str).and_then(|op| {
            let op = match op {
                "==" | "in" => Op::Eq,
                "!=" => Op::Ne,
                _ => Op::Other,
            };
            Some(Stmt::Match(
                expr(inner.get("left")?, 0),
                op,
                expr(inner.get("right")?, 0),
            ))
        }),
        "vmap" => Some(Stmt::Vmap(
            inner
                .get("key")
                .map_or(Expr::Unrecognized(String::new()), |k| expr(k, 0)),
            inner
                .get("data")
                .map_or(Expr::Unrecognized(String::new()), |d| expr(d, 0)),
        )),
        "dnat" => Some(Stmt::Dnat(
            text(inner, "addr"),
            inner.get("port").and_then(Value::as_u64),
        )),
        "redirect" => Some(Stmt::Redirect(inner.get("port").and_then(Value::as_u64))),
        "reject" => Some(Stmt::Reject),
        "masquerade" => Some(Stmt::Masquerade),
        "counter" => Some(Stmt::Counter(
            inner.get("packets").and_then(Value::as_u64).unwrap_or(0),
        )),
        _ => verdict(v).map(Stmt::Verdict),
    };
    parsed.unwrap_or_else(|| Stmt::Unrecognized(kind.to_owned()))
}

fn verdict(v: &Value) -> Option<Verdict> {
    let (kind, inner) = tagged(v)?;
    Some(match kind {
        "jump" => Verdict::Jump(text(inner, "target")?),
        "goto" => Verdict::Goto(text(inner, "target")?),
        "accept" => Verdict::Accept,
        "drop" => Verdict::Drop,
        "return" => Verdict::Return,
        "continue" => Verdict::Continue,
        _ => return None,
    })
}

/// A set or map element: `key` or `[key, verdict]`; `{"elem": {"val": …}}`
/// wraps a key that carries a comment or timeout.
fn element(v: &Value) -> (Expr, Option<Verdict>) {
    let unwrap = |k: &Value| match k.get("elem").and_then(|e| e.get("val")) {
        Some(val) => expr(val, 0),
        None => expr(k, 0),
    };
    match v.as_array().map(Vec::as_slice) {
        Some([key, data]) => (unwrap(key), verdict(data)),
        _ => (unwrap(v), None),
    }
}

fn expr(v: &Value, depth: usize) -> Expr {
    if depth > MAX_EXPR_DEPTH {
        return Expr::Unrecognized("too deep".to_owned());
    }
    match v {
        Value::String(s) => match s.strip_prefix('@') {
            Some(name) => Expr::SetRef(name.to_owned()),
            None => Expr::Str(s.clone()),
        },
        Value::Number(n) => n
            .as_u64()
            .map_or_else(|| Expr::Unrecognized("number".to_owned()), Expr::Num),
        _ => tagged_expr(v, depth).unwrap_or_else(|| Expr::Unrecognized(kind_of(v))),
    }
}

fn tagged_expr(v: &Value, depth: usize) -> Option<Expr> {
    let (kind, inner) = tagged(v)?;
    let list = |items: &Value| -> Vec<Expr> {
        items
            .as_array()
            .map(|a| a.iter().map(|e| expr(e, depth + 1)).collect())
            .unwrap_or_default()
    };
    Some(match kind {
        "payload" => Expr::Payload(text(inner, "protocol")?, text(inner, "field")?),
        "meta" => Expr::Meta(text(inner, "key")?),
        "ct" => Expr::Ct(text(inner, "key")?),
        "fib" => Expr::Fib(
            match inner.get("flags")? {
                Value::String(f) => vec![f.clone()],
                Value::Array(fs) => fs
                    .iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect(),
                _ => return None,
            },
            text(inner, "result")?,
        ),
        "numgen" => Expr::Numgen(inner.get("mod")?.as_u64()?),
        "prefix" => Expr::Prefix(
            text(inner, "addr")?,
            u8::try_from(inner.get("len")?.as_u64()?).ok()?,
        ),
        "range" => match inner.as_array().map(Vec::as_slice) {
            Some([lo, hi]) => {
                Expr::Range(Box::new(expr(lo, depth + 1)), Box::new(expr(hi, depth + 1)))
            }
            _ => return None,
        },
        "concat" => Expr::Concat(list(inner)),
        "set" => match inner.as_array() {
            Some(items)
                if items
                    .iter()
                    .all(|i| i.as_array().is_some_and(|p| p.len() == 2)) =>
            {
                Expr::VerdictMap(
                    items
                        .iter()
                        .filter_map(|i| match element(i) {
                            (key, Some(verdict)) => Some((key, verdict)),
                            _ => None,
                        })
                        .collect(),
                )
            }
            Some(_) => Expr::Set(list(inner)),
            None => Expr::Set(vec![expr(inner, depth + 1)]),
        },
        "elem" => expr(inner.get("val")?, depth + 1),
        _ => return None,
    })
}

/// Whether a match holds for the packet: `Some(true/false)` when known,
/// `None` when the walk cannot tell (source, protocol, marks, state).
fn judge(table: &Table, m: &NatMatch, left: &Expr, op: Op, right: &Expr) -> Option<bool> {
    let holds = match (left, right) {
        (Expr::Payload(proto, field), r)
            if field == "daddr" && (proto == "ip" || proto == "ip6") =>
        {
            contains(table, r, &Key::Addr(m.ip?))?
        }
        (Expr::Payload(proto, field), r) if field == "dport" && proto != "ip" => {
            contains(table, r, &Key::Port(m.port?))?
        }
        (Expr::Fib(flags, result), Expr::Str(kind))
            if result == "type" && flags.iter().any(|f| f == "daddr") =>
        {
            let ip = m.ip?;
            (kind == "local") == m.local_addrs.contains(&ip)
        }
        _ => return None,
    };
    match op {
        Op::Eq => Some(holds),
        Op::Ne => Some(!holds),
        Op::Other => None,
    }
}

/// One part of a packet's key.
#[derive(Debug, Clone, Copy)]
enum Key {
    Addr(IpAddr),
    Port(u16),
    /// Not known (protocol, source): anything matches.
    Any,
}

/// Whether the literal, prefix, range or set `e` holds `key`; `None` when
/// it cannot tell.
fn contains(table: &Table, e: &Expr, key: &Key) -> Option<bool> {
    match (e, key) {
        (_, Key::Any) => Some(true),
        (Expr::SetRef(name), _) => {
            let set = table.sets.get(name)?;
            Some(
                set.elems
                    .iter()
                    .any(|(k, _)| contains(table, k, key) == Some(true)),
            )
        }
        (Expr::Set(items), _) => Some(items.iter().any(|k| contains(table, k, key) == Some(true))),
        (Expr::Str(s), Key::Addr(ip)) => Some(s.parse::<IpAddr>().ok()? == *ip),
        (Expr::Prefix(addr, len), Key::Addr(ip)) => {
            let cidr = Cidr::new(addr.parse().ok()?, *len).ok()?;
            Some(cidr.contains(*ip))
        }
        (Expr::Num(n), Key::Port(p)) => Some(*n == u64::from(*p)),
        (Expr::Str(s), Key::Port(p)) => Some(s.parse::<u16>().ok()? == *p),
        (Expr::Range(lo, hi), Key::Port(p)) => match (lo.as_ref(), hi.as_ref()) {
            (Expr::Num(lo), Expr::Num(hi)) => Some((*lo..=*hi).contains(&u64::from(*p))),
            _ => None,
        },
        _ => None,
    }
}

/// The packet's key for a vmap's key expression, part by part.
fn packet_key(m: &NatMatch, e: &Expr) -> Option<Vec<Key>> {
    let one = |e: &Expr| -> Option<Key> {
        Some(match e {
            Expr::Payload(p, f) if f == "daddr" && (p == "ip" || p == "ip6") => Key::Addr(m.ip?),
            Expr::Payload(p, f) if f == "dport" && p != "ip" => Key::Port(m.port?),
            Expr::Meta(k) if k == "l4proto" => Key::Any,
            _ => return None,
        })
    };
    match e {
        Expr::Concat(parts) => parts.iter().map(one).collect(),
        other => one(other).map(|k| vec![k]),
    }
}

/// Whether an element key (a literal or a concatenation) matches `key`.
fn element_matches(table: &Table, elem: &Expr, key: &[Key]) -> bool {
    let parts: Vec<&Expr> = match elem {
        Expr::Concat(parts) => parts.iter().collect(),
        other => vec![other],
    };
    parts.len() == key.len()
        && parts
            .iter()
            .zip(key)
            .all(|(p, k)| contains(table, p, k) == Some(true))
}

/// Every path through kube-proxy's table for a packet matching `m`: the
/// dispatch from [`SERVICES_CHAIN`]; when no way there rewrites the
/// address, the filter-side checks ([`CHECK_CHAINS`]) too. Empty when the
/// table has no `services` chain or nothing matches. At most [`MAX_PATHS`]
/// after at most [`MAX_STEPS`] rules.
pub fn walk(table: &Table, m: &NatMatch) -> Vec<NatPath> {
    let mut by_chain: HashMap<&str, Vec<&Rule>> = HashMap::new();
    for rule in &table.rules {
        by_chain.entry(rule.chain.as_str()).or_default().push(rule);
    }
    let mut w = Walker {
        table,
        by_chain,
        m,
        stack: Vec::new(),
        paths: Vec::new(),
        steps: 0,
        marks: 0,
    };
    if table.chains.contains_key(SERVICES_CHAIN) {
        w.enter(SERVICES_CHAIN);
    }
    let rewritten = w
        .paths
        .iter()
        .any(|p| matches!(p.end, NatEnd::Dnat(_) | NatEnd::Redirect(_)));
    if !rewritten {
        for chain in CHECK_CHAINS {
            if table.chains.contains_key(chain) {
                w.enter(chain);
            }
        }
    }
    w.paths
}

/// Whether the walk goes on in a chain after a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// The next statement, or the next rule.
    Next,
    /// The packet leaves the chain (a terminal verdict, a goto, a return).
    Leave,
}

struct Walker<'a> {
    table: &'a Table,
    by_chain: HashMap<&'a str, Vec<&'a Rule>>,
    m: &'a NatMatch,
    /// Chains entered and maps looked up, outermost first.
    stack: Vec<String>,
    paths: Vec<NatPath>,
    steps: usize,
    /// Rules on the way so far that jumped to [`MASQ_MARK_CHAIN`].
    marks: usize,
}

impl Walker<'_> {
    fn exhausted(&self) -> bool {
        self.paths.len() >= MAX_PATHS || self.steps >= MAX_STEPS
    }

    fn end(&mut self, end: NatEnd) {
        if !self.exhausted() {
            self.paths.push(NatPath {
                backend: Backend::Nftables,
                table: self.table.label(),
                chains: self.stack.clone(),
                end,
                masquerade: self.marks > 0,
            });
        }
    }

    /// Walks `chain` from its first rule; its paths are recorded.
    fn enter(&mut self, chain: &str) {
        if self.stack.len() >= MAX_DEPTH || self.stack.iter().any(|c| c == chain) {
            return;
        }
        self.stack.push(chain.to_owned());
        let before = self.paths.len();
        let marks = self.marks;
        let rules = self.by_chain.get(chain).cloned().unwrap_or_default();
        for rule in rules {
            if self.exhausted() {
                break;
            }
            self.steps += 1;
            if self.rule(rule) == Flow::Leave {
                break;
            }
        }
        // A Service or endpoint chain (kube-proxy's only names with a '/')
        // with no way on is a dead end.
        if self.paths.len() == before && chain.contains('/') {
            self.end(NatEnd::NoDnat);
        }
        self.marks = marks;
        self.stack.pop();
    }

    /// One rule: its matches, then its actions. A rule whose matches the
    /// walk could not all judge may not apply, so it never ends the chain.
    fn rule(&mut self, rule: &Rule) -> Flow {
        let mut certain = true;
        for s in &rule.stmts {
            let flow = match s {
                Stmt::Match(left, op, right) => match judge(self.table, self.m, left, *op, right) {
                    Some(false) => return Flow::Next,
                    Some(true) => Flow::Next,
                    None => {
                        certain = false;
                        Flow::Next
                    }
                },
                Stmt::Verdict(v) => self.verdict(v),
                Stmt::Vmap(key, data) => self.vmap(key, data),
                Stmt::Dnat(addr, port) => {
                    let to = match (addr, port) {
                        (Some(a), Some(p)) => format!("{a}:{p}"),
                        (Some(a), None) => a.clone(),
                        (None, Some(p)) => format!(":{p}"),
                        (None, None) => String::new(),
                    };
                    self.end(NatEnd::Dnat(to));
                    Flow::Leave
                }
                Stmt::Redirect(port) => {
                    self.end(NatEnd::Redirect(
                        port.map(|p| format!(":{p}")).unwrap_or_default(),
                    ));
                    Flow::Leave
                }
                Stmt::Reject => {
                    self.end(NatEnd::Reject);
                    Flow::Leave
                }
                Stmt::Counter(_) | Stmt::Masquerade | Stmt::Unrecognized(_) => Flow::Next,
            };
            if flow == Flow::Leave {
                return if certain { Flow::Leave } else { Flow::Next };
            }
        }
        Flow::Next
    }

    fn verdict(&mut self, v: &Verdict) -> Flow {
        match v {
            Verdict::Jump(target) if target == MASQ_MARK_CHAIN => {
                self.marks += 1;
                Flow::Next
            }
            Verdict::Jump(target) => {
                self.enter(target);
                Flow::Next
            }
            Verdict::Goto(target) => {
                self.enter(target);
                Flow::Leave
            }
            Verdict::Drop => {
                self.end(NatEnd::Drop);
                Flow::Leave
            }
            Verdict::Accept | Verdict::Return => Flow::Leave,
            Verdict::Continue => Flow::Next,
        }
    }

    /// `KEY vmap @MAP` / `{ … }`: every element the packet's key can match
    /// gives its verdict (each `numgen` branch is one way); no element, no
    /// verdict.
    fn vmap(&mut self, key: &Expr, data: &Expr) -> Flow {
        let branches: Vec<(Option<String>, Verdict)> = match (key, data) {
            (Expr::Numgen(_), Expr::VerdictMap(elems)) => {
                elems.iter().map(|(_, v)| (None, v.clone())).collect()
            }
            (key, Expr::SetRef(name)) => {
                let Some(pk) = packet_key(self.m, key) else {
                    return Flow::Next;
                };
                self.table
                    .sets
                    .get(name)
                    .map(|set| {
                        set.elems
                            .iter()
                            .filter(|(k, _)| element_matches(self.table, k, &pk))
                            .filter_map(|(_, v)| Some((Some(format!("@{name}")), v.clone()?)))
                            .collect()
                    })
                    .unwrap_or_default()
            }
            (key, Expr::VerdictMap(elems)) => {
                let Some(pk) = packet_key(self.m, key) else {
                    return Flow::Next;
                };
                elems
                    .iter()
                    .filter(|(k, _)| element_matches(self.table, k, &pk))
                    .map(|(_, v)| (None, v.clone()))
                    .collect()
            }
            _ => return Flow::Next,
        };
        if branches.is_empty() {
            return Flow::Next;
        }
        let mut flow = Flow::Next;
        for (label, verdict) in branches {
            if let Some(label) = &label {
                self.stack.push(label.clone());
            }
            if self.verdict(&verdict) == Flow::Leave {
                flow = Flow::Leave;
            }
            if label.is_some() {
                self.stack.pop();
            }
        }
        flow
    }
}

#[cfg(test)]
mod tests;
