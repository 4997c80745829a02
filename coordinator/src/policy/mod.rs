//! The policy (`--policy FILE`, JSON): what operators may aim runs at and how
//! hard, checked by [`Policy::admit`] before a run does any work, and the
//! audit log ([`audit`]) of every Control call.
//!
//! Without a file the defaults hold ([`Rules::default`]): runs may aim at the
//! inventory's nodes, pods and Services and at the registered probes'
//! interface addresses; hostnames only under the cluster domain; never at
//! the coordinator's own ports; anything else needs a `targets.allow` entry.
//! Every refusal names its rule (`policy rule NAME: ...`) and the way out.
//! docs/operations.md ("Policy") documents every field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

pub mod admit;
pub mod audit;

pub use admit::{Policy, Ticket};

/// The policy file, as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// Run kinds each role may start (`ping`, `tcping`, `tcp_transfer`,
    /// `udp_echo`, `pmtu`, `trace`, `dns`, `listener`, `node_facts`,
    /// `capture`, `probe`, `mesh`; `*` = all). Default: operators, all.
    pub roles: BTreeMap<String, Vec<String>>,
    /// Where runs may be aimed.
    pub targets: TargetRules,
    /// How hard.
    pub limits: Limits,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            roles: BTreeMap::from([("operator".to_owned(), vec!["*".to_owned()])]),
            targets: TargetRules::default(),
            limits: Limits::default(),
        }
    }
}

/// Where runs may be aimed beyond the cluster's and the probes' addresses.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TargetRules {
    /// Address ranges runs may also aim at.
    pub allow: Vec<AllowRule>,
    /// Which hostnames (resolved on the probe, so never checked by address)
    /// may be targets.
    pub hostnames: Hostnames,
    /// The cluster domain `hostnames: "cluster-domain"` allows names under.
    pub cluster_domain: String,
}

impl Default for TargetRules {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            hostnames: Hostnames::ClusterDomain,
            cluster_domain: "cluster.local".to_owned(),
        }
    }
}

/// One allowed address range.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// `198.18.0.0/15`, `10.0.0.7/32`, `fd00::/8`.
    pub cidr: String,
    /// Allowed ports; empty = every port and ICMP (which has none).
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// Which hostnames may be targets.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Hostnames {
    /// Any name.
    Any,
    /// Names under `cluster_domain` (e.g. `web.default.svc.cluster.local`).
    ClusterDomain,
    /// None: targets must be addresses or cluster objects.
    None,
}

/// How hard runs may push.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Shortest interval between a run's packets or attempts (ping,
    /// tcping, udp-echo, mtr), milliseconds.
    pub min_interval_ms: u64,
    /// Runs at once on one probe (a capture counts on each observer).
    pub max_runs_per_probe: u32,
    /// Runs at once by one identity.
    pub max_runs_per_identity: u32,
    /// Runs one identity may start in a burst (token bucket size).
    pub rate_burst: u32,
    /// Runs per second one identity may start once its burst is spent.
    pub rate_per_second: f64,
    /// Capture bytes reserved at once on one probe, across concurrent
    /// captures; a capture reserves its `max_bytes` (0 = the probe's 2 GiB
    /// default) on each observer.
    pub capture_bytes_per_probe: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_interval_ms: 10,
            max_runs_per_probe: 8,
            max_runs_per_identity: 32,
            rate_burst: 600,
            rate_per_second: 10.0,
            capture_bytes_per_probe: 4 << 30,
        }
    }
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPolicy {
    /// It could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// It is not valid policy JSON (serde names the line, column and field).
    #[error("policy file {path}: {source} (see docs/operations.md, \"Policy\")")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    /// A field holds a value that makes no sense.
    #[error("policy file {path}: {field}: {reason}")]
    Field {
        path: String,
        field: String,
        reason: String,
    },
}

impl Rules {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, InvalidPolicy> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| InvalidPolicy::Read {
            path: shown.clone(),
            source,
        })?;
        let rules: Rules = serde_json::from_str(&text).map_err(|source| InvalidPolicy::Parse {
            path: shown.clone(),
            source,
        })?;
        rules
            .validate()
            .map_err(|(field, reason)| InvalidPolicy::Field {
                path: shown,
                field,
                reason,
            })?;
        Ok(rules)
    }

    /// Checks every value; `Err((field, reason))` names the first bad one.
    fn validate(&self) -> Result<(), (String, String)> {
        for (i, rule) in self.targets.allow.iter().enumerate() {
            rule.cidr.parse::<ipnet::IpNet>().map_err(|_| {
                (
                    format!("targets.allow[{i}].cidr"),
                    format!("'{}' is not a CIDR (e.g. 198.18.0.0/15)", rule.cidr),
                )
            })?;
            if rule.ports.contains(&0) {
                return Err((
                    format!("targets.allow[{i}].ports"),
                    "port 0 is no port".into(),
                ));
            }
        }
        for (role, kinds) in &self.roles {
            for kind in kinds {
                if kind != "*" && !admit::RUN_KINDS.contains(&kind.as_str()) {
                    return Err((
                        format!("roles.{role}"),
                        format!(
                            "'{kind}' is no run kind (one of {}, or *)",
                            admit::RUN_KINDS.join(", ")
                        ),
                    ));
                }
            }
        }
        let l = &self.limits;
        let positive = [
            ("limits.max_runs_per_probe", u64::from(l.max_runs_per_probe)),
            (
                "limits.max_runs_per_identity",
                u64::from(l.max_runs_per_identity),
            ),
            ("limits.rate_burst", u64::from(l.rate_burst)),
            ("limits.capture_bytes_per_probe", l.capture_bytes_per_probe),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err((field.into(), "must be at least 1".into()));
            }
        }
        if !(l.rate_per_second.is_finite() && l.rate_per_second > 0.0) {
            return Err((
                "limits.rate_per_second".into(),
                "must be a number above 0".into(),
            ));
        }
        Ok(())
    }
}

/// The coordinator's own endpoints: never targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnPorts {
    /// gRPC over TCP and the clock exchange over UDP.
    pub listen: SocketAddr,
    /// `--metrics`.
    pub metrics: Option<SocketAddr>,
    /// `--web`.
    pub web: Option<SocketAddr>,
}

#[cfg(test)]
mod tests;
