//! `meshctl probes`: the registry.

use probemesh_proto::pb;
use serde::Serialize;

use crate::client::{Endpoint, Failure};
use crate::output::{OutputFormat, print_json};

/// One probe as meshctl prints it (`-o json` field names are the contract's).
#[derive(Debug, Serialize)]
pub struct ProbeView {
    name: String,
    role: &'static str,
    labels: std::collections::BTreeMap<String, String>,
    addr: String,
    connected: bool,
    last_seen: String,
    clock_offset_us: i64,
    clock_error_us: i64,
    /// How the best clock sample travelled: "udp", "stream" (the fallback),
    /// "relay" (through the coordinator holding the probe) or "" before the
    /// first.
    clock_path: String,
    /// Several coordinators: the id of the one holding the probe's stream
    /// ("" with one coordinator).
    coordinator: String,
    version: String,
    interfaces: Vec<InterfaceView>,
}

#[derive(Debug, Serialize)]
struct InterfaceView {
    name: String,
    mtu: u32,
    up: bool,
    addresses: Vec<String>,
}

impl From<pb::ProbeInfo> for ProbeView {
    fn from(p: pb::ProbeInfo) -> Self {
        Self {
            role: match p.role() {
                pb::ProbeRole::Node => "node",
                pb::ProbeRole::External => "external",
                pb::ProbeRole::Unspecified => "unknown",
            },
            name: p.name,
            labels: p.labels.into_iter().collect(),
            addr: p.remote_addr,
            connected: p.connected,
            last_seen: super::format_unix_ms(p.last_seen_unix_ms),
            clock_offset_us: p.clock_offset_us,
            clock_error_us: p.clock_error_us,
            clock_path: p.clock_path,
            coordinator: p.coordinator,
            version: p.version,
            interfaces: p
                .interfaces
                .into_iter()
                .map(|i| InterfaceView {
                    name: i.name,
                    mtu: i.mtu,
                    up: i.up,
                    addresses: i.addresses,
                })
                .collect(),
        }
    }
}

/// Lists registered probes.
pub async fn run(endpoint: &Endpoint, output: OutputFormat) -> Result<(), Failure> {
    let mut control = endpoint.control().await?;
    let mut probes: Vec<ProbeView> = Vec::new();
    let mut page_token = String::new();
    for _ in 0..super::MAX_PAGES {
        let page = control
            .list_probes(pb::ListProbesRequest {
                page_size: 0,
                page_token,
            })
            .await?
            .into_inner();
        probes.extend(page.probes.into_iter().map(ProbeView::from));
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    match output {
        OutputFormat::Json => print_json(&probes).map_err(|e| Failure::usage(e.to_string())),
        OutputFormat::Table => {
            // With several coordinators, which one holds each stream.
            let held = probes.iter().any(|p| !p.coordinator.is_empty());
            let holder = |name: &str| {
                if held {
                    format!("{name:<12}  ")
                } else {
                    String::new()
                }
            };
            println!(
                "{:<14} {:<9} {:<22} {:<10} {:<21} {:>16}  {:<6}  {}LABELS",
                "NAME",
                "ROLE",
                "ADDR",
                "CONNECTED",
                "LAST_SEEN",
                "CLOCK_OFFSET_US",
                "CLOCK",
                holder("COORDINATOR")
            );
            for p in &probes {
                let labels: Vec<String> =
                    p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "{:<14} {:<9} {:<22} {:<10} {:<21} {:>9} ±{:<6}  {:<6}  {}{}",
                    p.name,
                    p.role,
                    p.addr,
                    if p.connected { "yes" } else { "no" },
                    p.last_seen,
                    p.clock_offset_us,
                    p.clock_error_us,
                    if p.clock_path.is_empty() {
                        "-"
                    } else {
                        &p.clock_path
                    },
                    holder(&p.coordinator),
                    labels.join(",")
                );
            }
            if probes.is_empty() {
                eprintln!("no probes registered yet");
            }
            Ok(())
        }
    }
}
