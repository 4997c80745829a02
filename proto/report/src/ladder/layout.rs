//! Where everything of the ladder goes: one lane (a vertical line) per
//! observer, one row per followed packet in order of its first sighting on
//! the coordinator's clock, and inside a row each sighting, answer and ICMP
//! error placed by its delay since that first sighting, on one scale shared
//! by every row (so the clock error band has the same scale as the delays
//! it bounds). Pure geometry over the record; the markup is in `svg`.

use std::collections::BTreeMap;

use probemesh_proto::pb;

/// Left margin: the time axis.
pub const LEFT: f64 = 96.0;
/// Right margin: labels of the last lane's sightings.
const RIGHT: f64 = 220.0;
/// Horizontal distance between two lanes.
pub const LANE_W: f64 = 200.0;
/// Lane headings above the first row.
pub const HEAD: f64 = 64.0;
/// Least height of one packet's row.
const ROW_MIN_H: f64 = 56.0;
/// Room in a row above the first sighting.
const ROW_TOP: f64 = 22.0;
/// Room under a row's last event (for the "lost" mark under its label).
const ROW_BOTTOM: f64 = 34.0;
/// How far a delay may push an event down a row; longer ones are drawn
/// there, marked as cut.
pub const ROW_SPAN: f64 = 48.0;
/// Height of one label line.
const LINE: f64 = 11.0;
/// Rows drawn at most; the page says how many packets were left out.
pub const MAX_ROWS: usize = 24;
/// At most this many rows go to unanswered packets, so a run that lost
/// many still shows what did get through.
const MAX_LOST_ROWS: usize = 12;

/// The ladder of one run.
#[derive(Debug)]
pub struct Ladder<'a> {
    /// Observers (`PROBE/IFACE`), left to right: the source first, then the
    /// nodes' NICs and tunnels, pods last.
    pub lanes: Vec<String>,
    /// Packets drawn, top to bottom.
    pub rows: Vec<Row<'a>>,
    /// Pixels per nanosecond of delay inside a row.
    pub px_per_ns: f64,
    /// Per observer: its clock error bound, nanoseconds.
    pub clock_error_ns: BTreeMap<String, i64>,
    /// Packets followed in all (the record may hold fewer than that).
    pub total: u64,
}

/// One followed packet.
#[derive(Debug)]
pub struct Row<'a> {
    /// Its position in `correlation.fates` (the anchor `pkt-N`).
    pub index: usize,
    /// What the record says of it.
    pub fate: &'a pb::PacketFateSummary,
    /// Top of the row.
    pub top: f64,
    /// Its height.
    pub height: f64,
    /// Its first sighting, coordinator clock, Unix ns.
    pub first_ns: i64,
    /// Its sightings in time order, placed.
    pub hops: Vec<Placed<'a>>,
    /// Where its answer goes, when it was answered.
    pub answer_y: Option<f64>,
    /// Where each of its ICMP errors goes (as `fate.icmp_errors`).
    pub error_y: Vec<f64>,
}

/// A sighting placed in its row.
#[derive(Debug)]
pub struct Placed<'a> {
    /// The sighting.
    pub hop: &'a pb::HopSummary,
    /// Its observer, spelled as the lanes spell it.
    pub observer: String,
    /// Its y.
    pub y: f64,
    /// Whether its delay was longer than a row shows.
    pub cut: bool,
    /// The lines of its label: the flow where it changed (the first
    /// sighting's always), then the rewrite or tunnel; empty for none.
    pub label: Vec<String>,
}

impl Ladder<'_> {
    /// Width of the drawing, with room right of the last lane for its
    /// labels.
    pub fn width(&self) -> f64 {
        LEFT + LANE_W * self.lanes.len() as f64 + RIGHT
    }

    /// Height of the drawing.
    pub fn height(&self) -> f64 {
        self.rows.last().map_or(HEAD, |r| r.top + r.height) + 8.0
    }

    /// Lane index of an observer.
    pub fn lane(&self, observer: &str) -> Option<usize> {
        let observer = canonical(observer);
        self.lanes.iter().position(|l| *l == observer)
    }

    /// The x of a lane.
    pub fn x(&self, lane: usize) -> f64 {
        LEFT + LANE_W * (lane as f64 + 0.5)
    }

    /// The clock error bound of an observer, nanoseconds.
    pub fn error_ns(&self, observer: &str) -> i64 {
        let observer = canonical(observer);
        self.clock_error_ns
            .get(probe_of(&observer))
            .copied()
            .unwrap_or(0)
    }
}

/// An observer as the lanes spell it: a pod's probe as `NODE@pod:NS/NAME`
/// (the CLI's form), however the record spelled it.
pub fn canonical(observer: &str) -> String {
    match observer.split_once("/pod:") {
        Some((node, rest)) if !node.contains('@') => format!("{node}@pod:{rest}"),
        _ => observer.to_owned(),
    }
}

/// The probe of `PROBE/IFACE` (a pod observer's probe has a `/` of its own).
pub fn probe_of(observer: &str) -> &str {
    observer.rsplit_once('/').map_or(observer, |(p, _)| p)
}

/// Lays out `record`'s correlation; `None` when nothing was followed.
pub fn layout(record: &pb::RunRecord) -> Option<Ladder<'_>> {
    let correlation = record.correlation.as_ref()?;
    let picked = pick(&correlation.fates);
    if picked.is_empty() {
        return None;
    }
    let from = record.request.as_ref().map_or("", |r| r.from.as_str());
    let lanes = lanes(record, &picked, from);
    let run_error_ns = record
        .timing
        .as_ref()
        .map_or(0, |t| t.clock_error_us.saturating_mul(1000));
    let clock_error_ns = record
        .observers
        .iter()
        .map(|o| {
            let e = if o.clock_error_ns > 0 {
                o.clock_error_ns
            } else {
                run_error_ns
            };
            (o.probe.clone(), e)
        })
        .collect();
    let px_per_ns = scale(&picked);
    let mut top = HEAD;
    let rows = picked
        .into_iter()
        .map(|(index, fate, first_ns)| {
            let row = place(index, fate, first_ns, top, px_per_ns);
            top += row.height;
            row
        })
        .collect();
    Some(Ladder {
        lanes,
        px_per_ns,
        rows,
        clock_error_ns,
        total: correlation.fates_total,
    })
}

/// Something drawn at an instant of a row.
enum Event {
    Hop(usize),
    Answer,
    Error(usize),
}

/// Places a packet's events down its row: by their delay since its first
/// sighting (at most `ROW_SPAN`), and never closer to the event before than
/// that event's label needs, so labels do not overlap; time still only
/// flows down.
fn place(
    index: usize,
    fate: &pb::PacketFateSummary,
    first_ns: i64,
    top: f64,
    px_per_ns: f64,
) -> Row<'_> {
    let mut events: Vec<(i64, Event)> = fate
        .hops
        .iter()
        .enumerate()
        .map(|(i, h)| (h.at_unix_ns, Event::Hop(i)))
        .collect();
    let last_hop = fate
        .hops
        .iter()
        .map(|h| h.at_unix_ns)
        .max()
        .unwrap_or(first_ns);
    if fate.answered {
        // An older record has no answer time: just after the last sighting.
        let at = if fate.answered_at_unix_ns > 0 {
            fate.answered_at_unix_ns
        } else {
            last_hop
        };
        events.push((at, Event::Answer));
    }
    events.extend(
        fate.icmp_errors
            .iter()
            .enumerate()
            .map(|(i, e)| (e.at_unix_ns, Event::Error(i))),
    );
    events.sort_by_key(|(at, e)| (*at, u8::from(!matches!(e, Event::Hop(_)))));
    let mut hops = Vec::new();
    let mut answer_y = None;
    let mut error_y = vec![0.0; fate.icmp_errors.len()];
    let mut previous: Option<&pb::HopSummary> = None;
    // The lowest y the next event may take.
    let mut floor = ROW_TOP;
    let mut bottom = ROW_TOP;
    for (at, event) in events {
        let dy = at.saturating_sub(first_ns).max(0) as f64 * px_per_ns;
        let cut = dy > ROW_SPAN;
        match event {
            Event::Hop(i) => {
                let hop = &fate.hops[i];
                let label = label(previous, hop);
                let (above, below) = if label.is_empty() {
                    (4.0, 4.0)
                } else {
                    (LINE, LINE * (label.len() - 1) as f64 + 3.0)
                };
                let y = (ROW_TOP + dy.min(ROW_SPAN)).max(floor + above);
                floor = y + below;
                bottom = bottom.max(floor);
                hops.push(Placed {
                    hop,
                    observer: canonical(&hop.observer),
                    y: top + y,
                    cut,
                    label,
                });
                previous = Some(hop);
            }
            Event::Answer | Event::Error(_) => {
                // Its label sits under its arrow.
                let y = (ROW_TOP + dy.min(ROW_SPAN)).max(floor + 4.0);
                floor = y + LINE + 4.0;
                bottom = bottom.max(floor);
                match event {
                    Event::Error(i) => error_y[i] = top + y,
                    _ => answer_y = Some(top + y),
                }
            }
        }
    }
    Row {
        index,
        fate,
        top,
        height: (bottom + ROW_BOTTOM).max(ROW_MIN_H),
        first_ns,
        hops,
        answer_y,
        error_y,
    }
}

/// The label of a sighting after `previous`: its flow (5-tuple) wherever
/// NAT or a tunnel changed it, then what changed it.
fn label(previous: Option<&pb::HopSummary>, hop: &pb::HopSummary) -> Vec<String> {
    let changed = previous
        .is_none_or(|p| p.flow != hop.flow || p.outer != hop.outer || !hop.transforms.is_empty());
    if !changed || hop.flow.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![hop.flow.clone()];
    if !hop.transforms.is_empty() {
        lines.extend(hop.transforms.iter().cloned());
    } else if !hop.outer.is_empty() {
        lines.push(format!("outer {}", hop.outer));
    }
    lines
}

/// Which packets get a row: the unanswered first (what a diagnosis looks
/// for), then the answered ones that crossed the most observers; one of
/// each kind of journey (protocol, destination and observers) before any
/// repeat. In order of first sighting.
fn pick(fates: &[pb::PacketFateSummary]) -> Vec<(usize, &pb::PacketFateSummary, i64)> {
    let mut candidates: Vec<(usize, &pb::PacketFateSummary, i64)> = fates
        .iter()
        .enumerate()
        .filter_map(|(i, f)| Some((i, f, f.hops.iter().map(|h| h.at_unix_ns).min()?)))
        .collect();
    candidates.sort_by_key(|(i, f, _)| (f.answered, std::cmp::Reverse(f.hops.len()), *i));
    // A journey: the protocol, where the packet was going ("a > b:port"
    // names it after the `>`), and the observers that saw it.
    let journey = |f: &pb::PacketFateSummary| {
        let mut words = f.packet.split_whitespace();
        let protocol = words.next().unwrap_or_default().to_owned();
        let to = words.skip_while(|w| *w != ">").nth(1).unwrap_or_default();
        let observers: Vec<&str> = f.hops.iter().map(|h| h.observer.as_str()).collect();
        (protocol, to.to_owned(), observers.join(" "), f.answered)
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut chosen = Vec::new();
    let mut lost = 0;
    // First pass: a new journey each; second pass: fill up.
    for first_pass in [true, false] {
        for c in &candidates {
            if chosen.len() >= MAX_ROWS {
                break;
            }
            if chosen.iter().any(|(i, _, _)| *i == c.0) {
                continue;
            }
            if !c.1.answered && lost >= MAX_LOST_ROWS {
                continue;
            }
            if first_pass && !seen.insert(journey(c.1)) {
                continue;
            }
            lost += usize::from(!c.1.answered);
            chosen.push(*c);
        }
    }
    chosen.sort_by_key(|(i, _, first)| (*first, *i));
    chosen
}

/// Lanes: every observer of the run (each probe's interfaces in the order
/// the record lists them), then any other place a packet was seen; the
/// source's first and pods' last.
fn lanes(
    record: &pb::RunRecord,
    picked: &[(usize, &pb::PacketFateSummary, i64)],
    from: &str,
) -> Vec<String> {
    let mut lanes: Vec<String> = Vec::new();
    let mut add = |o: String| {
        let o = canonical(&o);
        if !o.is_empty() && !lanes.contains(&o) {
            lanes.push(o);
        }
    };
    for o in &record.observers {
        for i in &o.interfaces {
            add(format!("{}/{i}", o.probe));
        }
    }
    for (_, f, _) in picked {
        for h in &f.hops {
            add(h.observer.clone());
        }
        add(f.answered_at.clone());
        add(f.lost_after.clone());
        for e in &f.icmp_errors {
            add(e.observer.clone());
        }
    }
    let group = |o: &String| {
        let probe = probe_of(o);
        if probe == from {
            0
        } else if probe.contains("@pod:") {
            2
        } else {
            1
        }
    };
    lanes.sort_by_key(group);
    lanes
}

/// Pixels per nanosecond: the longest delay of nine rows in ten fills a
/// row (the rest are cut), and never less than 1 µs per row span, so a
/// handful of microseconds is not blown up into a false precision.
fn scale(picked: &[(usize, &pb::PacketFateSummary, i64)]) -> f64 {
    let mut spans: Vec<i64> = picked
        .iter()
        .map(|(_, f, first_ns)| {
            let last = f
                .hops
                .iter()
                .map(|h| h.at_unix_ns)
                .chain((f.answered_at_unix_ns > 0).then_some(f.answered_at_unix_ns))
                .chain(f.icmp_errors.iter().map(|e| e.at_unix_ns))
                .max()
                .unwrap_or(*first_ns);
            last.saturating_sub(*first_ns)
        })
        .collect();
    spans.sort_unstable();
    let reference = spans
        .get(spans.len().saturating_mul(9) / 10)
        .or(spans.last())
        .copied()
        .unwrap_or(0)
        .max(1000);
    ROW_SPAN / reference as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(observer: &str, at: i64) -> pb::HopSummary {
        pb::HopSummary {
            observer: observer.into(),
            at_unix_ns: at,
            ..Default::default()
        }
    }

    fn record(fates: Vec<pb::PacketFateSummary>) -> pb::RunRecord {
        pb::RunRecord {
            request: Some(pb::RunRequest {
                from: "cloudvm-1".into(),
                kind: None,
            }),
            observers: ["node-2@pod:default/web-0", "node-1", "cloudvm-1"]
                .map(|p| pb::ObserverResult {
                    probe: p.into(),
                    interfaces: vec!["eth0".into()],
                    clock_error_ns: 5_000,
                    ..Default::default()
                })
                .to_vec(),
            correlation: Some(pb::CorrelationSummary {
                fates_total: u64::try_from(fates.len()).unwrap(),
                fates,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_source_comes_first_pods_last_and_rows_follow_the_clock() {
        let late = pb::PacketFateSummary {
            packet: "tcp a > b".into(),
            hops: vec![
                hop("cloudvm-1/eth0", 2_000_000),
                hop("node-1/eth0", 2_040_000),
            ],
            answered: true,
            ..Default::default()
        };
        let early = pb::PacketFateSummary {
            packet: "icmp echo".into(),
            hops: vec![hop("cloudvm-1/eth0", 1_000_000)],
            lost_after: "cloudvm-1/eth0".into(),
            ..Default::default()
        };
        let r = record(vec![early, late]);
        let l = layout(&r).unwrap();
        assert_eq!(
            l.lanes,
            [
                "cloudvm-1/eth0",
                "node-1/eth0",
                "node-2@pod:default/web-0/eth0"
            ]
        );
        assert_eq!(l.rows.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1]);
        assert!(l.rows[0].top + l.rows[0].height <= l.rows[1].top);
        let hops = &l.rows[1].hops;
        assert!(hops[1].y > hops[0].y && !hops[0].cut && !hops[1].cut);
        // The correlation's spelling of a pod observer is the lanes' one.
        assert_eq!(l.lane("node-2/pod:default/web-0/eth0"), Some(2));
        assert_eq!(l.error_ns("node-2/pod:default/web-0/eth0"), 5_000);
    }

    #[test]
    fn labels_keep_apart_and_time_only_flows_down() {
        // Three sightings within a nanosecond, each with a two-line label.
        let tunnelled = |observer: &str, at| pb::HopSummary {
            flow: format!("tcp a -> b via {observer}"),
            transforms: vec!["VXLAN vni 1 x -> y".into()],
            ..hop(observer, at)
        };
        let fate = pb::PacketFateSummary {
            packet: "tcp a > b".into(),
            hops: vec![
                tunnelled("cloudvm-1/eth0", 1_000),
                tunnelled("node-1/eth0", 1_000),
                tunnelled("node-1/eth0", 1_001),
            ],
            answered: true,
            answered_at: "cloudvm-1/eth0".into(),
            answered_at_unix_ns: 1_002,
            ..Default::default()
        };
        let r = record(vec![fate]);
        let l = layout(&r).unwrap();
        let row = &l.rows[0];
        let ys: Vec<f64> = row.hops.iter().map(|h| h.y).collect();
        for pair in ys.windows(2) {
            assert!(pair[1] - pair[0] >= 2.0 * LINE, "{ys:?}");
        }
        assert!(row.answer_y.unwrap() > ys[2]);
        assert!(row.top + row.height > row.answer_y.unwrap());
    }

    #[test]
    fn a_run_without_followed_packets_has_no_ladder() {
        assert!(layout(&record(Vec::new())).is_none());
        assert!(layout(&pb::RunRecord::default()).is_none());
    }

    #[test]
    fn many_lost_packets_leave_room_for_answered_ones() {
        let lost = (0..40).map(|i| pb::PacketFateSummary {
            packet: format!("tcp seq {i}"),
            hops: vec![hop("cloudvm-1/eth0", i)],
            ..Default::default()
        });
        let answered = (0..40).map(|i| pb::PacketFateSummary {
            packet: format!("icmp {i}"),
            hops: vec![hop("cloudvm-1/eth0", 100 + i), hop("node-1/eth0", 200 + i)],
            answered: true,
            ..Default::default()
        });
        let r = record(lost.chain(answered).collect());
        let l = layout(&r).unwrap();
        assert_eq!(l.rows.len(), MAX_ROWS);
        let unanswered = l.rows.iter().filter(|r| !r.fate.answered).count();
        assert_eq!(unanswered, MAX_LOST_ROWS);
    }
}
