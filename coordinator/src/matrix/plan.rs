//! Plans a `meshctl mesh` matrix: which probes are rows, which hosts are
//! columns, and what each cell tests. Pure over the registry's probe list
//! and the inventory; it dispatches nothing (the sibling `run` executes).
//!
//! Every list is bounded before it costs work: a selector names at most
//! [`MAX_SELECTOR_NAMES`] names, a matrix has at most [`MAX_SOURCES`] rows
//! and [`MAX_TARGETS`] columns, and a request over a bound is refused with
//! the bound named.

use std::net::IpAddr;

use probemesh_model::inventory::{Inventory, Node, Pod};
use probemesh_proto::pb;

use crate::error::Error;
use crate::resolve;

/// Most rows (source probes) of one matrix.
pub const MAX_SOURCES: usize = 64;
/// Most columns (target hosts) of one matrix.
pub const MAX_TARGETS: usize = 64;
/// Most names one selector lists.
pub const MAX_SELECTOR_NAMES: usize = 128;
/// Longest name in a selector (a Kubernetes node name is a DNS subdomain).
pub const MAX_NAME_BYTES: usize = 253;
/// Echoes (connects) per cell when the request says 0.
pub const DEFAULT_COUNT: u32 = 3;
/// Most echoes (connects) per cell.
pub const MAX_COUNT: u32 = 20;
/// Largest ICMP payload, as `ping -s`.
pub const MAX_SIZE: u32 = 65_507;

/// Which probes or hosts a `--from` / `--to` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every one.
    All,
    /// Those named (a probe's name or its node's name).
    Names(Vec<String>),
    /// Those of one role.
    Role(pb::ProbeRole),
}

impl Selector {
    /// Parses `all` (or empty), `role=node|external`, or `NAME[,NAME...]`;
    /// `flag` names the option in messages.
    pub fn parse(spec: &str, flag: &str) -> Result<Self, Error> {
        let spec = spec.trim();
        if spec.is_empty() || spec == "all" {
            return Ok(Self::All);
        }
        if let Some(role) = spec.strip_prefix("role=") {
            return match role {
                "node" => Ok(Self::Role(pb::ProbeRole::Node)),
                "external" => Ok(Self::Role(pb::ProbeRole::External)),
                _ => Err(Error::InvalidRequest(format!(
                    "{flag} role={}: the role is node or external",
                    crate::bounds::elide(role)
                ))),
            };
        }
        let names: Vec<String> = spec.split(',').map(|n| n.trim().to_owned()).collect();
        if names.len() > MAX_SELECTOR_NAMES {
            return Err(Error::InvalidRequest(format!(
                "{flag} lists {} names, at most {MAX_SELECTOR_NAMES}",
                names.len()
            )));
        }
        for name in &names {
            if name.is_empty() || name.len() > MAX_NAME_BYTES {
                return Err(Error::InvalidRequest(format!(
                    "{flag}: name {} must be 1 to {MAX_NAME_BYTES} bytes (SELECTOR is all, \
                     role=node|external, or NAME[,NAME...])",
                    crate::bounds::elide(name)
                )));
            }
        }
        Ok(Self::Names(names))
    }

    fn matches(&self, names: &[&str], role: pb::ProbeRole) -> bool {
        match self {
            Self::All => true,
            Self::Role(r) => *r == role,
            Self::Names(wanted) => wanted.iter().any(|w| names.contains(&w.as_str())),
        }
    }

    /// Refuses names that select nothing among `known`.
    fn check_known<'a>(
        &self,
        flag: &str,
        known: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<(), Error> {
        if let Self::Names(wanted) = self
            && let Some(unknown) = wanted
                .iter()
                .find(|w| !known.clone().any(|k| k == w.as_str()))
        {
            return Err(Error::InvalidRequest(format!(
                "{flag}: no probe or node named {} (see `meshctl probes`)",
                crate::bounds::elide(unknown)
            )));
        }
        Ok(())
    }
}

/// One column: a node, or an external probe's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHost {
    /// The column's name: the node's name, or the external probe's.
    pub name: String,
    /// The probe on it, if any.
    pub probe: Option<String>,
    /// The host's address: the node's InternalIP, the probe's address.
    pub address: Option<IpAddr>,
    /// A pod on the node's pod network, if it is a node with one.
    pub pod: Option<PodTarget>,
    /// Whether it is a cluster node (pod network and NodePort apply).
    pub node: bool,
}

/// A pod the pod-network column pings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTarget {
    /// NAMESPACE/NAME.
    pub name: String,
    /// Its address.
    pub ip: IpAddr,
}

/// One source row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceProbe {
    /// The probe's name.
    pub name: String,
    /// Whether it runs on a cluster node (only those reach pod networks).
    pub node: bool,
    /// Whether its stream is up.
    pub connected: bool,
}

/// One cell: what to test from a source to a target host.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedCell {
    /// Row and column names.
    pub from: String,
    pub to: String,
    /// What the cell tests.
    pub kind: pb::MeshTargetKind,
    /// The TARGET `meshctl probe` takes to diagnose this cell.
    pub probe_target: String,
    /// The address tested, and why it was chosen.
    pub address: String,
    pub address_reason: String,
    /// The work, or why there is none.
    pub test: CellTest,
    /// The probe at the far end, if any (its clock round trip paces the wait).
    pub far_probe: Option<String>,
}

/// What a cell runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellTest {
    /// ICMP echoes to `ip`; a large DF echo too when `large` (payload bytes).
    Ping { ip: IpAddr, large: Option<u32> },
    /// TCP connects to `ip:port`.
    Connect { ip: IpAddr, port: u16 },
    /// Not tested, because of the reason.
    Skip(String),
}

/// A planned matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixPlan {
    /// Rows.
    pub sources: Vec<SourceProbe>,
    /// Columns.
    pub targets: Vec<TargetHost>,
    /// Row-major: for each source, each target, each kind.
    pub cells: Vec<PlannedCell>,
    /// Echoes (connects) per cell.
    pub count: u32,
    /// The large echo's payload, 0 for none.
    pub size: u32,
}

/// Plans `req` over the probes the registry lists and the inventory.
pub fn plan(
    req: &pb::MeshRequest,
    probes: &[pb::ProbeInfo],
    inventory: Option<&Inventory>,
) -> Result<MatrixPlan, Error> {
    let from = Selector::parse(&req.from, "--from")?;
    let to = Selector::parse(&req.to, "--to")?;
    if req.size > MAX_SIZE {
        return Err(Error::InvalidRequest(format!(
            "--size {}: an ICMP payload is at most {MAX_SIZE} bytes",
            req.size
        )));
    }
    let count = match req.count {
        0 => DEFAULT_COUNT,
        n if n <= MAX_COUNT => n,
        n => {
            return Err(Error::InvalidRequest(format!(
                "--count {n}: at most {MAX_COUNT} echoes per cell"
            )));
        }
    };
    let node_of = |probe: &str| inventory.and_then(|i| i.node_of_probe(probe));
    let mut known: Vec<&str> = probes.iter().map(|p| p.name.as_str()).collect();
    known.extend(
        inventory
            .iter()
            .flat_map(|i| i.nodes.iter().map(|n| n.name.as_str())),
    );
    from.check_known("--from", known.iter().copied())?;
    to.check_known("--to", known.iter().copied())?;

    let sources: Vec<SourceProbe> = probes
        .iter()
        .filter(|p| {
            let node = node_of(&p.name);
            let names = [Some(p.name.as_str()), node.map(|n| n.name.as_str())];
            let names: Vec<&str> = names.into_iter().flatten().collect();
            from.matches(&names, p.role())
        })
        .map(|p| SourceProbe {
            name: p.name.clone(),
            node: p.role() == pb::ProbeRole::Node || node_of(&p.name).is_some(),
            connected: p.connected,
        })
        .collect();
    axis_bounded(
        "--from",
        "probes",
        "no probe",
        sources.len(),
        MAX_SOURCES,
        "rows",
    )?;
    let targets = target_hosts(&to, probes, inventory);
    axis_bounded(
        "--to",
        "hosts",
        "no node or probe",
        targets.len(),
        MAX_TARGETS,
        "columns",
    )?;
    let nodeport = inventory.and_then(first_nodeport);
    let size = req.size;
    let mut cells = Vec::new();
    for source in &sources {
        for target in &targets {
            cells.extend(cells_for(source, target, nodeport.as_ref(), size));
        }
    }
    Ok(MatrixPlan {
        sources,
        targets,
        cells,
        count,
        size,
    })
}

/// The columns: every inventory node, then every probe the inventory does
/// not place on a node (external hosts), those the selector picks.
fn target_hosts(
    to: &Selector,
    probes: &[pb::ProbeInfo],
    inventory: Option<&Inventory>,
) -> Vec<TargetHost> {
    let mut hosts = Vec::new();
    let nodes = inventory.map(|i| i.nodes.as_slice()).unwrap_or_default();
    for node in nodes {
        let names: Vec<&str> = [Some(node.name.as_str()), node.probe.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        if to.matches(&names, pb::ProbeRole::Node) {
            hosts.push(TargetHost {
                name: node.name.clone(),
                probe: node.probe.clone(),
                address: Some(node.internal_ip),
                pod: inventory.and_then(|i| pod_on(i, node)),
                node: true,
            });
        }
    }
    for probe in probes {
        let on_node = nodes
            .iter()
            .any(|n| n.probe.as_deref() == Some(probe.name.as_str()));
        if on_node || !to.matches(&[probe.name.as_str()], probe.role()) {
            continue;
        }
        hosts.push(TargetHost {
            name: probe.name.clone(),
            probe: Some(probe.name.clone()),
            address: resolve::probe_address(&probe.name, &probe.interfaces, inventory),
            pod: None,
            node: probe.role() == pb::ProbeRole::Node,
        });
    }
    hosts
}

/// The pod the pod-network column pings on `node`: the first (by namespace
/// and name) whose address lies in the node's pod CIDR. A real pod rather
/// than the CIDR's gateway: the bridge's address is a node address, answered
/// by the node's own stack (its host firewall decides, as for the InternalIP
/// column), while a pod's answer crosses what pod traffic crosses — the
/// overlay, the node's forwarding and the bridge to the pod. Host-network
/// pods (their IP is the node's) are left out for the same reason.
fn pod_on(inventory: &Inventory, node: &Node) -> Option<PodTarget> {
    let cidr = node.pod_cidr?;
    let mut pods: Vec<&Pod> = inventory
        .pods
        .iter()
        .filter(|p| p.node == node.name && cidr.contains(p.ip))
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    pods.first().map(|p| PodTarget {
        name: format!("{}/{}", p.namespace, p.name),
        ip: p.ip,
    })
}

/// The first NodePort of the first Service (inventory order) that has one.
fn first_nodeport(inventory: &Inventory) -> Option<(String, u16)> {
    inventory.services.iter().find_map(|s| {
        s.ports
            .iter()
            .find_map(|p| p.node_port)
            .map(|port| (format!("{}/{}", s.namespace, s.name), port))
    })
}

/// The cells from `source` to `target`: its address, and on a node its pod
/// network and NodePort.
fn cells_for(
    source: &SourceProbe,
    target: &TargetHost,
    nodeport: Option<&(String, u16)>,
    size: u32,
) -> Vec<PlannedCell> {
    let cell = |kind, probe_target: String, address: String, reason: String, test| PlannedCell {
        from: source.name.clone(),
        to: target.name.clone(),
        kind,
        probe_target,
        address,
        address_reason: reason,
        test,
        far_probe: target.probe.clone(),
    };
    let offline = (!source.connected).then(|| format!("probe {} is not connected", source.name));
    let skip_or = |test: CellTest| match &offline {
        Some(why) => CellTest::Skip(why.clone()),
        None => test,
    };
    let mut cells = Vec::with_capacity(3);
    let host_target = match &target.probe {
        Some(p) => format!("probe:{p}"),
        None => target.address.map(|a| a.to_string()).unwrap_or_default(),
    };
    cells.push(match target.address {
        Some(ip) => cell(
            pb::MeshTargetKind::Node,
            host_target,
            ip.to_string(),
            if target.node {
                format!("InternalIP of node {}", target.name)
            } else {
                format!("address of probe {}", target.name)
            },
            skip_or(CellTest::Ping {
                ip,
                large: (size > 0).then_some(size),
            }),
        ),
        None => cell(
            pb::MeshTargetKind::Node,
            host_target,
            String::new(),
            String::new(),
            CellTest::Skip(format!(
                "probe {} reported no usable IPv4 address",
                target.name
            )),
        ),
    });
    if !target.node {
        return cells;
    }
    cells.push(match &target.pod {
        Some(pod) if source.node => cell(
            pb::MeshTargetKind::PodNetwork,
            format!("pod:{}", pod.name),
            pod.ip.to_string(),
            format!("pod {} on {}", pod.name, target.name),
            skip_or(CellTest::Ping {
                ip: pod.ip,
                large: None,
            }),
        ),
        Some(pod) => cell(
            pb::MeshTargetKind::PodNetwork,
            format!("pod:{}", pod.name),
            pod.ip.to_string(),
            format!("pod {} on {}", pod.name, target.name),
            CellTest::Skip(format!(
                "{} is outside the cluster: pod networks are routed between nodes only",
                source.name
            )),
        ),
        None => cell(
            pb::MeshTargetKind::PodNetwork,
            String::new(),
            String::new(),
            String::new(),
            CellTest::Skip(format!(
                "the inventory lists no pod on {}'s pod network",
                target.name
            )),
        ),
    });
    cells.push(match (nodeport, target.address) {
        (Some((service, port)), Some(ip)) => cell(
            pb::MeshTargetKind::Nodeport,
            format!("nodeport:{}:{port}", target.name),
            format!("{ip}:{port}"),
            format!("NodePort {port} of Service {service}"),
            skip_or(CellTest::Connect { ip, port: *port }),
        ),
        _ => cell(
            pb::MeshTargetKind::Nodeport,
            String::new(),
            String::new(),
            String::new(),
            CellTest::Skip("the inventory lists no NodePort Service".into()),
        ),
    });
    cells
}

/// A selector's rows or columns: at least one, at most `max`.
fn axis_bounded(
    flag: &str,
    things: &str,
    none: &str,
    n: usize,
    max: usize,
    axis: &str,
) -> Result<(), Error> {
    if n > max {
        return Err(Error::InvalidRequest(format!(
            "{flag} selects {n} {things}, at most {max} {axis} per matrix: narrow it \
             (NAME,NAME... or role=node|external)"
        )));
    }
    if n == 0 {
        return Err(Error::InvalidRequest(format!(
            "{flag} selects {none} (see `meshctl probes`)"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
