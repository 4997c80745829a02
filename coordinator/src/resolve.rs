//! Turns a TARGET spec into what a probe task can aim at: an address or a
//! hostname the probe resolves itself.

use std::net::IpAddr;

use probemesh_proto::pb;
use probemesh_proto::target::{Port, Target};

use crate::error::Error;
use crate::registry::Registry;

/// Where a tool task is aimed, as the probe will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aim {
    /// An IP literal or a hostname resolved on the probe.
    pub host: String,
    /// The port, when the spec gave or implied one.
    pub port: Option<Port>,
    /// Why this address was chosen, for the user.
    pub reason: String,
}

/// Resolves `spec` for a tool task using the registry.
pub fn aim(spec: &str, registry: &Registry) -> Result<Aim, Error> {
    let target: Target = spec
        .parse()
        .map_err(|e: probemesh_proto::target::InvalidTarget| {
            Error::InvalidRequest(e.to_string())
        })?;
    match target {
        Target::Ip { addr, port } => Ok(Aim {
            host: addr.to_string(),
            port,
            reason: "literal address".into(),
        }),
        Target::Host { name, port } => Ok(Aim {
            host: name,
            port,
            reason: "hostname, resolved on the probe".into(),
        }),
        Target::Probe { name, port } => {
            let hello = registry
                .hello(&name)
                .ok_or_else(|| Error::UnknownProbe(name.clone()))?;
            let addr = primary_address(&hello.interfaces).ok_or_else(|| {
                Error::InvalidRequest(format!("probe '{name}' reported no usable IPv4 address"))
            })?;
            Ok(Aim {
                host: addr.to_string(),
                port,
                reason: format!("address of probe {name}"),
            })
        }
        Target::Dns { .. } => Err(Error::InvalidRequest(format!(
            "'{spec}' is a resolution check; use `meshctl dig` for names, or give a host or address"
        ))),
        Target::NodePort { .. } | Target::Service { .. } | Target::Pod { .. } => {
            Err(Error::InvalidRequest(format!(
                "'{spec}' needs the cluster inventory, and this coordinator has none: start it with --inventory FILE"
            )))
        }
    }
}

/// The first global IPv4 address of an up, non-loopback interface.
pub fn primary_address(interfaces: &[pb::Interface]) -> Option<IpAddr> {
    interfaces
        .iter()
        .filter(|i| i.up && i.name != "lo")
        .flat_map(|i| i.addresses.iter())
        .filter_map(|cidr| cidr.split('/').next()?.parse::<IpAddr>().ok())
        .find(|ip| matches!(ip, IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_link_local()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, up: bool, addrs: &[&str]) -> pb::Interface {
        pb::Interface {
            name: name.into(),
            mtu: 1500,
            addresses: addrs.iter().map(|a| (*a).to_owned()).collect(),
            up,
        }
    }

    #[test]
    fn primary_address_skips_loopback_down_and_link_local() {
        let ifs = [
            iface("lo", true, &["127.0.0.1/8"]),
            iface("eth1", false, &["198.18.9.9/24"]),
            iface(
                "eth0",
                true,
                &["169.254.1.1/16", "fe80::1/64", "198.18.0.11/24"],
            ),
        ];
        assert_eq!(primary_address(&ifs), "198.18.0.11".parse().ok());
        assert_eq!(primary_address(&ifs[..2]), None);
    }

    #[test]
    fn literal_and_host_targets_pass_through() {
        let reg = Registry::default();
        let a = aim("198.18.0.12:30080", &reg).unwrap();
        assert_eq!(
            (a.host.as_str(), a.port.map(Port::get)),
            ("198.18.0.12", Some(30080))
        );
        let h = aim("web.default.svc.cluster.local", &reg).unwrap();
        assert_eq!(h.host, "web.default.svc.cluster.local");
    }

    #[test]
    fn unknown_probe_and_bad_specs_are_clear() {
        let reg = Registry::default();
        let err = aim("probe:node-9", &reg).unwrap_err().to_string();
        assert!(err.contains("no probe named 'node-9'"), "{err}");
        let err = aim("svc:web", &reg).unwrap_err().to_string();
        assert!(err.contains("NAMESPACE/NAME"), "{err}");
        let err = aim("svc:default/web", &reg).unwrap_err().to_string();
        assert!(err.contains("--inventory"), "{err}");
    }
}
