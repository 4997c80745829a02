//! The progress board: what stderr shows while a capture runs (armed
//! interfaces, then per-observer counters at most every 500 ms). Pure:
//! it takes events and an instant and returns the line to print.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use probemesh_proto::pb::task_progress::Event;

/// Shortest gap between two progress lines on stderr.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// What stderr shows while the capture runs: per observer, its armed
/// interfaces and its latest counters.
#[derive(Debug, Default)]
pub(super) struct ProgressBoard {
    observers: BTreeMap<String, ObserverProgress>,
    last_line: Option<Instant>,
}

#[derive(Debug, Default)]
struct ObserverProgress {
    interfaces: Vec<String>,
    packets: u64,
    drops: u64,
}

impl ProgressBoard {
    /// Records the event; returns a line to print when one is due
    /// (armed announcements at once, counters at most every 500 ms).
    pub(super) fn update(&mut self, probe: &str, event: &Event, now: Instant) -> Option<String> {
        match event {
            Event::CaptureArmed(armed) => {
                let names: Vec<String> = armed
                    .interfaces
                    .iter()
                    .map(|i| short_interface(probe, &i.interface).to_owned())
                    .collect();
                let line = format!("{probe}: armed {}", names.join(", "));
                self.observers
                    .entry(probe.to_owned())
                    .or_default()
                    .interfaces = names;
                Some(line)
            }
            Event::CaptureProgress(p) => {
                let o = self.observers.entry(probe.to_owned()).or_default();
                o.packets = p.packets;
                o.drops = p.drops;
                let due = self
                    .last_line
                    .is_none_or(|last| now.saturating_duration_since(last) >= PROGRESS_EVERY);
                due.then(|| {
                    self.last_line = Some(now);
                    self.line()
                })
            }
            _ => None,
        }
    }

    /// `node-1/eth0 1234 pkts 0 drops · node-2/flannel.1 17 pkts 0 drops`
    fn line(&self) -> String {
        self.observers
            .iter()
            .map(|(probe, o)| {
                let label = if o.interfaces.is_empty() {
                    probe.clone()
                } else {
                    format!("{probe}/{}", o.interfaces.join("+"))
                };
                format!("{label} {} pkts {} drops", o.packets, o.drops)
            })
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

/// `eth0` from `node-1/eth0` (probes name interfaces either way).
pub(super) fn short_interface<'a>(probe: &str, interface: &'a str) -> &'a str {
    // An observer in a pod is `PROBE@pod:NS/NAME`; its probe names the
    // interfaces `PROBE/IFACE` all the same.
    let probe = probe.split_once("@pod:").map_or(probe, |(p, _)| p);
    interface
        .strip_prefix(probe)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(interface)
}

#[cfg(test)]
mod tests {
    use super::*;
    use probemesh_proto::pb;

    #[test]
    fn progress_lines_name_observers_and_wait_half_a_second() {
        let start = Instant::now();
        let mut board = ProgressBoard::default();
        let armed = Event::CaptureArmed(pb::CaptureArmed {
            interfaces: vec![pb::ArmedInterface {
                interface: "node-1/eth0".into(),
                armed_unix_ns: 1,
            }],
            ring_open_us: 4_000,
            ready_margin_us: Some(46_000),
        });
        assert_eq!(
            board.update("node-1", &armed, start).as_deref(),
            Some("node-1: armed eth0")
        );
        let progress = |packets| {
            Event::CaptureProgress(pb::CaptureProgress {
                packets,
                bytes: 0,
                drops: 2,
            })
        };
        assert_eq!(
            board.update("node-1", &progress(1234), start).as_deref(),
            Some("node-1/eth0 1234 pkts 2 drops")
        );
        let soon = start + Duration::from_millis(100);
        assert_eq!(board.update("node-2", &progress(7), soon), None);
        let later = start + Duration::from_millis(600);
        assert_eq!(
            board.update("node-1", &progress(1300), later).as_deref(),
            Some("node-1/eth0 1300 pkts 2 drops · node-2 7 pkts 2 drops")
        );
    }
}
