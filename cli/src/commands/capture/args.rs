//! `meshctl capture`'s arguments: the flags, the `--on` entries parsed and
//! checked locally (the coordinator checks them again against the probes it
//! knows), and the run request they become. No I/O here.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use probemesh_proto::pb;

/// Snap length when neither `--snaplen` nor `--payload` is given: enough
/// for Ethernet + IP + TCP headers with options, or a VXLAN outer header
/// plus the inner headers.
pub const DEFAULT_SNAPLEN: u32 = 128;
/// Snap length for `--payload` (whole packets), as tcpdump's default.
pub const PAYLOAD_SNAPLEN: u32 = 262_144;
/// Longest capture the coordinator accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// Longest Linux interface name (IFNAMSIZ without the NUL).
const MAX_IFNAME: usize = 15;

const AFTER_HELP: &str = "\
Capture is headers-only by default: each packet is cut to 128 bytes, enough for
the Ethernet, IP and TCP/UDP headers (and a VXLAN outer header with the inner
ones), because payloads can hold passwords and tokens. --payload asks for whole
packets; the coordinator refuses it unless your identity's role allows it.

Every observer arms at the same instant, chosen by the coordinator; each file
is pcapng with nanosecond timestamps on the probe's clock, one interface block
named PROBE/IFACE. merged.pcapng holds every observer's packets on the
coordinator's clock (each probe's timestamps minus its clock offset), so the
order of hops is causal within the reported clock error.

Files land in OUT/RUN_ID/ (directory 0700, files 0600) only once their size
and SHA-256 match what the probe announced; nothing partial is left behind.

Examples:
  meshctl capture --on cloudvm-1:eth0,node-1:eth0,node-2:flannel.1 \\
      --filter 'tcp port 30080' --duration 5s
  meshctl capture --on node-1 --on node-2:cni0 --filter icmp --duration 10s --out /tmp/caps
  meshctl capture --on node-1@pod:default/web-0:eth0 --duration 3s --max-packets 1000

Exit: 0 every observer captured, 1 an observer failed, 2 bad input,
3 inconclusive, 4 coordinator unreachable.";

/// `meshctl capture`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct CaptureArgs {
    /// Where to capture: PROBE[:IFACE] or PROBE@pod:NS/NAME[:IFACE] (no IFACE:
    /// the probe's primary interface). Comma-separated, repeatable.
    #[arg(long = "on", value_name = "PROBE[:IFACE]", value_delimiter = ',', required = true, value_parser = parse_capture_point)]
    pub on: Vec<CapturePoint>,
    /// tcpdump filter expression, compiled by the coordinator ("" = every packet).
    #[arg(long, value_name = "EXPR", default_value = "")]
    pub filter: String,
    /// How long to capture (e.g. 5s, 1m; at most 10m).
    #[arg(long, value_name = "DUR", value_parser = parse_capture_duration)]
    pub duration: Duration,
    /// Directory for the files; each run gets OUT/RUN_ID/.
    #[arg(long, value_name = "DIR", default_value = "./captures")]
    pub out: PathBuf,
    /// Bytes kept per packet [default: 128, headers only; 262144 with --payload].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(PAYLOAD_SNAPLEN)))]
    pub snaplen: Option<u32>,
    /// Keep whole packets, payload included (refused unless policy allows it).
    #[arg(long)]
    pub payload: bool,
    /// Stop each observer after this many packets [coordinator default: 10000000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_packets: Option<u64>,
    /// Stop each observer when its file reaches this many bytes [coordinator default: 2 GiB].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_bytes: Option<u64>,
}

impl CaptureArgs {
    /// The run request these arguments ask for.
    pub(super) fn request(&self) -> pb::RunRequest {
        let snaplen = self.snaplen.unwrap_or(if self.payload {
            PAYLOAD_SNAPLEN
        } else {
            DEFAULT_SNAPLEN
        });
        pb::RunRequest {
            from: String::new(),
            kind: Some(pb::run_request::Kind::Capture(pb::CaptureRequest {
                on: self.on.iter().map(ToString::to_string).collect(),
                filter: self.filter.clone(),
                duration_us: u64::try_from(self.duration.as_micros()).unwrap_or(u64::MAX),
                snaplen,
                payload: self.payload,
                max_packets: self.max_packets.unwrap_or(0),
                max_bytes: self.max_bytes.unwrap_or(0),
            })),
        }
    }
}

fn parse_capture_duration(s: &str) -> Result<Duration, String> {
    let d = crate::parse_duration_arg(s)?;
    if d.is_zero() {
        return Err("a capture needs a duration above zero".into());
    }
    if d > MAX_DURATION {
        return Err(format!(
            "{s} is longer than the {}-minute limit",
            MAX_DURATION.as_secs() / 60
        ));
    }
    Ok(d)
}

/// One `--on` entry: a probe, optionally a pod's network namespace on it,
/// optionally an interface. Shown (and sent) as
/// `PROBE[@pod:NS/NAME][:IFACE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturePoint {
    probe: String,
    pod: Option<(String, String)>,
    interface: Option<String>,
}

impl fmt::Display for CapturePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.probe)?;
        if let Some((namespace, name)) = &self.pod {
            write!(f, "@pod:{namespace}/{name}")?;
        }
        if let Some(interface) = &self.interface {
            write!(f, ":{interface}")?;
        }
        Ok(())
    }
}

fn parse_capture_point(s: &str) -> Result<CapturePoint, String> {
    let s = s.trim();
    let word = |what: &str, w: &str| -> Result<String, String> {
        if w.is_empty() {
            return Err(format!("{s:?}: the {what} is empty"));
        }
        if w.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | ':' | '@' | ','))
        {
            return Err(format!("{s:?}: {w:?} is not a valid {what}"));
        }
        Ok(w.to_owned())
    };
    let interface = |i: Option<&str>| -> Result<Option<String>, String> {
        let Some(i) = i else { return Ok(None) };
        let i = word("interface", i)?;
        if i.len() > MAX_IFNAME {
            return Err(format!(
                "{s:?}: interface {i:?} is longer than {MAX_IFNAME} bytes"
            ));
        }
        Ok(Some(i))
    };
    match s.split_once('@') {
        None => {
            let (probe, iface) = match s.split_once(':') {
                Some((p, i)) => (p, Some(i)),
                None => (s, None),
            };
            Ok(CapturePoint {
                probe: word("probe name", probe)?,
                pod: None,
                interface: interface(iface)?,
            })
        }
        Some((probe, rest)) => {
            let pod = rest
                .strip_prefix("pod:")
                .ok_or_else(|| format!("{s:?}: expected PROBE@pod:NAMESPACE/NAME[:IFACE]"))?;
            let (namespace, rest) = pod
                .split_once('/')
                .ok_or_else(|| format!("{s:?}: expected PROBE@pod:NAMESPACE/NAME[:IFACE]"))?;
            let (name, iface) = match rest.split_once(':') {
                Some((n, i)) => (n, Some(i)),
                None => (rest, None),
            };
            Ok(CapturePoint {
                probe: word("probe name", probe)?,
                pod: Some((word("namespace", namespace)?, word("pod name", name)?)),
                interface: interface(iface)?,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("node-1" => "node-1" ; "probe only")]
    #[test_case("node-1:eth0" => "node-1:eth0" ; "with interface")]
    #[test_case("node-2:flannel.1" => "node-2:flannel.1" ; "dotted interface")]
    #[test_case(" cloudvm-1:eth0 " => "cloudvm-1:eth0" ; "trimmed")]
    #[test_case("node-1@pod:default/web-0" => "node-1@pod:default/web-0" ; "pod")]
    #[test_case("node-1@pod:default/web-0:eth0" => "node-1@pod:default/web-0:eth0" ; "pod interface")]
    fn capture_points_parse(s: &str) -> String {
        parse_capture_point(s).expect("valid").to_string()
    }

    #[test_case("" ; "empty")]
    #[test_case(":eth0" ; "no probe")]
    #[test_case("node-1:" ; "empty interface")]
    #[test_case("node-1:eth0:1" ; "two colons")]
    #[test_case("node-1:averyveryverylongname" ; "interface too long")]
    #[test_case("node-1@default/web-0" ; "not a pod form")]
    #[test_case("node-1@pod:web-0" ; "no namespace")]
    #[test_case("node-1@pod:/web-0" ; "empty namespace")]
    #[test_case("node 1:eth0" ; "whitespace")]
    fn bad_capture_points_are_refused(s: &str) {
        assert!(parse_capture_point(s).is_err(), "{s:?} accepted");
    }

    #[test]
    fn on_takes_comma_lists_and_repeats_and_duration_is_bounded() {
        use clap::{Args, FromArgMatches};
        let command = CaptureArgs::augment_args(clap::Command::new("capture"));
        let matches = command
            .clone()
            .try_get_matches_from([
                "capture",
                "--on",
                "cloudvm-1:eth0,node-1:eth0",
                "--on",
                "node-2:flannel.1",
                "--filter",
                "tcp port 30080",
                "--duration",
                "5s",
            ])
            .expect("parses");
        let args = CaptureArgs::from_arg_matches(&matches).expect("args");
        let Some(pb::run_request::Kind::Capture(request)) = args.request().kind else {
            panic!("not a capture request");
        };
        assert_eq!(
            request.on,
            vec!["cloudvm-1:eth0", "node-1:eth0", "node-2:flannel.1"]
        );
        assert_eq!(request.duration_us, 5_000_000);
        assert_eq!(request.snaplen, DEFAULT_SNAPLEN);
        assert!(!request.payload);

        for bad in ["0s", "11m"] {
            let refused =
                command
                    .clone()
                    .try_get_matches_from(["capture", "--on", "n", "--duration", bad]);
            assert!(refused.is_err(), "--duration {bad} accepted");
        }
        let payload = command
            .clone()
            .try_get_matches_from(["capture", "--on", "n", "--duration", "1s", "--payload"])
            .expect("parses");
        let args = CaptureArgs::from_arg_matches(&payload).expect("args");
        let Some(pb::run_request::Kind::Capture(request)) = args.request().kind else {
            panic!("not a capture request");
        };
        assert_eq!(request.snaplen, PAYLOAD_SNAPLEN);
    }

    #[test]
    fn help_teaches_headers_only_and_shows_an_example() {
        use clap::Args;
        let help = CaptureArgs::augment_args(clap::Command::new("capture"))
            .render_long_help()
            .to_string();
        assert!(help.contains("headers-only by default"), "{help}");
        assert!(
            help.contains("--on cloudvm-1:eth0,node-1:eth0,node-2:flannel.1"),
            "{help}"
        );
    }
}
