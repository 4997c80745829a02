//! Plans a capture run, purely: parses the `--on` observers
//! (`PROBE[:IFACE]`, `PROBE@pod:NS/NAME[:IFACE]`), bounds the filter's size,
//! applies the payload policy and bounds the window.
//!
//! It compiles nothing (libpcap is slow on large filters:
//! [`super::compile::programs`] fills in the programs off the async threads)
//! and dispatches nothing: the capture's `run` module executes the plan.

use std::collections::BTreeMap;
use std::time::Duration;

use probemesh_model::inventory::Inventory;
use probemesh_packet::bpf;
use probemesh_proto::pb;

use crate::error::Error;
use crate::registry::Registry;
use crate::resolve;
use crate::state::PayloadPolicy;

/// Headers only: enough for Ethernet + IPv4/IPv6 + TCP with options, VXLAN
/// outer and inner headers included.
pub const HEADERS_ONLY_SNAPLEN: u32 = 128;
/// Longest capture window.
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// One probe's share of a capture.
#[derive(Debug, Clone, PartialEq)]
pub struct Observer {
    /// The probe that captures.
    pub probe: String,
    /// The pod namespace it captures in, if any.
    pub netns: Option<pb::NetnsRef>,
    /// That pod, `NS/NAME`.
    pub pod: Option<String>,
    /// Interfaces, in the order asked.
    pub interfaces: Vec<String>,
}

impl Observer {
    /// The observer as progress and reports name it: its probe, or
    /// `PROBE@pod:NS/NAME` when it captures in a pod (so two observers on
    /// one probe stay apart).
    pub fn label(&self) -> String {
        match &self.pod {
            Some(pod) => format!("{}@pod:{pod}", self.probe),
            None => self.probe.clone(),
        }
    }

    /// The name its capture file travels under when it captures in a pod
    /// (`PROBE@pod-NS-NAME.pcapng`: the probe names every file of its own
    /// `PROBE.pcapng`, and a file name holds no `/`); `None` on the host.
    pub fn pod_artifact_name(&self) -> Option<String> {
        self.pod
            .as_ref()
            .map(|pod| format!("{}@pod-{}.pcapng", self.probe, pod.replace('/', "-")))
    }
}

/// A planned capture.
#[derive(Debug, Clone)]
pub struct CapturePlan {
    /// Who captures where.
    pub observers: Vec<Observer>,
    /// The task every observer gets, less interfaces, instant and clock
    /// note, and less its BPF programs until [`super::compile::programs`].
    pub template: pb::CaptureTask,
    /// The capture window.
    pub window: Duration,
}

/// Plans `req`: parses `PROBE[:IFACE]` / `PROBE@pod:NS/NAME[:IFACE]`
/// observers, bounds the filter, applies the payload policy.
pub fn plan(
    req: &pb::CaptureRequest,
    policy: PayloadPolicy,
    registry: &Registry,
    inventory: Option<&Inventory>,
) -> Result<CapturePlan, Error> {
    if req.on.is_empty() {
        return Err(Error::InvalidRequest(
            "capture needs --on PROBE[:IFACE],... (e.g. --on cloudvm-1:eth0,node-1:eth0)".into(),
        ));
    }
    let window = Duration::from_micros(req.duration_us);
    if window.is_zero() || window > MAX_DURATION {
        return Err(Error::InvalidRequest(format!(
            "capture --duration must be between 1ms and {}",
            humantime::format_duration(MAX_DURATION)
        )));
    }
    let snaplen = if req.snaplen == 0 {
        HEADERS_ONLY_SNAPLEN
    } else {
        req.snaplen
    };
    let wants_payload = req.payload || snaplen > HEADERS_ONLY_SNAPLEN;
    if wants_payload && !policy.allowed {
        return Err(Error::InvalidRequest(format!(
            "full-payload captures are refused by this coordinator's policy (payloads can hold passwords): \
             captures keep {HEADERS_ONLY_SNAPLEN} bytes of headers; an administrator can allow payloads \
             with mesh-coordinator --allow-payload-capture"
        )));
    }
    let snaplen = if req.payload && req.snaplen == 0 {
        262_144
    } else {
        snaplen
    };
    bpf::check_size(&req.filter)
        .map_err(|e| Error::InvalidRequest(format!("{e}; {}", e.hint())))?;

    let mut observers: BTreeMap<(String, Option<String>), Observer> = BTreeMap::new();
    for entry in req
        .on
        .iter()
        .flat_map(|e| e.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let (source_spec, interface) = split_observer(entry);
        let source = resolve::source(source_spec, inventory)?;
        let hello = registry
            .hello(&source.probe)
            .ok_or_else(|| Error::UnknownProbe(source.probe.clone()))?;
        let interface = match interface {
            Some(i) => i.to_owned(),
            None if source.netns.is_some() => "eth0".to_owned(),
            None => resolve::primary_interface(&source.probe, &hello.interfaces, inventory)
                .ok_or_else(|| {
                    Error::InvalidRequest(format!(
                        "probe '{}' reported no primary interface: name one, {entry}:IFACE",
                        source.probe
                    ))
                })?,
        };
        let key = (
            source.probe.clone(),
            source.netns.as_ref().map(|n| n.label.clone()),
        );
        let observer = observers.entry(key).or_insert_with(|| Observer {
            probe: source.probe.clone(),
            netns: source.netns.clone(),
            pod: source_spec
                .split_once("@pod:")
                .map(|(_, pod)| pod.to_owned()),
            interfaces: Vec::new(),
        });
        if !observer.interfaces.contains(&interface) {
            observer.interfaces.push(interface);
        }
    }
    let template = pb::CaptureTask {
        filter_expr: req.filter.clone(),
        snaplen,
        payload_allowed: wants_payload,
        max_packets: req.max_packets,
        max_bytes: req.max_bytes,
        duration_us: req.duration_us,
        ..Default::default()
    };
    Ok(CapturePlan {
        observers: observers.into_values().collect(),
        template,
        window,
    })
}

/// Splits `PROBE[:IFACE]` or `PROBE@pod:NS/NAME[:IFACE]`.
fn split_observer(entry: &str) -> (&str, Option<&str>) {
    let tail_start = entry.find("@pod:").map_or(0, |i| i + "@pod:".len());
    match entry[tail_start..].rfind(':') {
        Some(i) => {
            let at = tail_start + i;
            (
                &entry[..at],
                Some(&entry[at + 1..]).filter(|s| !s.is_empty()),
            )
        }
        None => (entry, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observer_in_a_pod_is_named_apart_from_its_probe() {
        let host = Observer {
            probe: "node-2".into(),
            netns: None,
            pod: None,
            interfaces: vec!["eth0".into()],
        };
        let pod = Observer {
            pod: Some("default/web-0".into()),
            ..host.clone()
        };
        assert_eq!(
            (host.label(), host.pod_artifact_name()),
            ("node-2".to_owned(), None)
        );
        assert_eq!(
            (pod.label(), pod.pod_artifact_name()),
            (
                "node-2@pod:default/web-0".to_owned(),
                Some("node-2@pod-default-web-0.pcapng".to_owned())
            )
        );
    }
    use test_case::test_case;

    #[test_case("node-1", "node-1", None)]
    #[test_case("node-1:eth0", "node-1", Some("eth0"))]
    #[test_case("node-2:flannel.1", "node-2", Some("flannel.1"))]
    #[test_case("node-2@pod:default/web-0", "node-2@pod:default/web-0", None)]
    #[test_case(
        "node-2@pod:default/web-0:eth0",
        "node-2@pod:default/web-0",
        Some("eth0")
    )]
    #[test_case("node-1:", "node-1", None)]
    fn observers_split_into_source_and_interface(entry: &str, source: &str, iface: Option<&str>) {
        assert_eq!(split_observer(entry), (source, iface));
    }

    fn request(on: &[&str]) -> pb::CaptureRequest {
        pb::CaptureRequest {
            on: on.iter().map(|s| (*s).to_owned()).collect(),
            filter: "tcp port 30080".into(),
            duration_us: 2_000_000,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn headers_only_by_default_and_interfaces_grouped_per_probe() {
        let mut plan = plan(
            &request(&["node-1", "node-1:eth0,node-1:lo"]),
            PayloadPolicy::default(),
            &crate::registry::attached(&["node-1"]),
            None,
        )
        .unwrap();
        assert_eq!(plan.observers.len(), 1);
        assert_eq!(plan.observers[0].interfaces, ["eth0", "lo"]);
        assert_eq!(plan.template.snaplen, HEADERS_ONLY_SNAPLEN);
        assert!(!plan.template.payload_allowed);
        assert!(plan.template.filter_ethernet.is_empty());
        super::super::compile::programs(&mut plan.template)
            .await
            .unwrap();
        assert!(!plan.template.filter_ethernet.is_empty());
        assert!(!plan.template.filter_raw_ip.is_empty());
    }

    #[tokio::test]
    async fn payloads_need_the_policy() {
        let mut req = request(&["node-1"]);
        req.payload = true;
        let err = plan(
            &req,
            PayloadPolicy::default(),
            &crate::registry::attached(&["node-1"]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--allow-payload-capture"), "{err}");
        req.payload = false;
        req.snaplen = 1500;
        assert!(
            plan(
                &req,
                PayloadPolicy::default(),
                &crate::registry::attached(&["node-1"]),
                None
            )
            .is_err()
        );
        let granted = plan(
            &req,
            PayloadPolicy { allowed: true },
            &crate::registry::attached(&["node-1"]),
            None,
        )
        .unwrap();
        assert_eq!(
            (granted.template.snaplen, granted.template.payload_allowed),
            (1500, true)
        );
    }

    #[tokio::test]
    async fn bad_filters_durations_and_observers_are_refused_clearly() {
        let reg = crate::registry::attached(&["node-1"]);
        let mut req = request(&["node-1"]);
        req.filter = "tcp prot 80".into();
        let mut planned = plan(&req, PayloadPolicy::default(), &reg, None).unwrap();
        let err = super::super::compile::programs(&mut planned.template)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("tcp prot 80"), "{err}");
        req.filter = vec!["icmp"; 70].join(" or ");
        let err = plan(&req, PayloadPolicy::default(), &reg, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("filter refused before compiling"), "{err}");
        let mut req = request(&["node-1"]);
        req.duration_us = 0;
        assert!(
            plan(&req, PayloadPolicy::default(), &reg, None)
                .unwrap_err()
                .to_string()
                .contains("--duration")
        );
        assert!(plan(&request(&[]), PayloadPolicy::default(), &reg, None).is_err());
        let err = plan(
            &request(&["node-9:eth0"]),
            PayloadPolicy::default(),
            &reg,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("node-9"), "{err}");
    }
}
