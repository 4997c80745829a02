//! The host's interfaces as the probe announces them in its Hello: name,
//! MTU, up/down and every address (two IPv4 addresses on one NIC is
//! evidence, see reference incident 1). Plain data: the wire form is built
//! by the task conversion (`tasks::convert`).

use std::collections::BTreeMap;
use std::net::IpAddr;

/// One network interface of the probe's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// Its name, e.g. `eth0`.
    pub name: String,
    /// Its MTU in bytes; 0 when it could not be read.
    pub mtu: u32,
    /// Every address, as `IP/PREFIX`.
    pub addresses: Vec<String>,
    /// Whether it is administratively up (`IFF_UP`).
    pub up: bool,
}

/// Lists interfaces of the probe's current network namespace.
pub fn list() -> Vec<Interface> {
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    let addrs = match nix::ifaddrs::getifaddrs() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list interface addresses");
            return Vec::new();
        }
    };
    for ifa in addrs {
        let entry = by_name
            .entry(ifa.interface_name.clone())
            .or_insert_with(|| Interface {
                name: ifa.interface_name.clone(),
                mtu: read_mtu(&ifa.interface_name).unwrap_or(0),
                addresses: Vec::new(),
                up: ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP),
            });
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let cidr = match (
            addr.as_sockaddr_in(),
            mask.as_sockaddr_in(),
            addr.as_sockaddr_in6(),
            mask.as_sockaddr_in6(),
        ) {
            (Some(a), Some(m), _, _) => Some((IpAddr::V4(a.ip()), u32::from(m.ip()).count_ones())),
            (_, _, Some(a), Some(m)) => Some((IpAddr::V6(a.ip()), u128::from(m.ip()).count_ones())),
            _ => None,
        };
        if let Some((ip, prefix)) = cidr {
            entry.addresses.push(format!("{ip}/{prefix}"));
        }
    }
    by_name.into_values().collect()
}

fn read_mtu(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_is_listed_with_its_address_and_mtu() {
        let ifs = super::list();
        let lo = ifs
            .iter()
            .find(|i| i.name == "lo")
            .expect("lo exists in every namespace");
        assert!(lo.addresses.iter().any(|a| a == "127.0.0.1/8"), "{lo:?}");
        assert!(lo.mtu > 0);
    }
}
