//! The ladder as inline SVG: lanes, then per packet its sightings (a dot
//! inside its clock error band), arrows between them labelled with the
//! flow wherever NAT or a tunnel changed it, the answer or ICMP error drawn
//! from the observer that saw it leave, and a marked stop where a lost
//! packet was last seen. Every element a reader (or a test) may look for
//! carries `data-` attributes: `data-observer`, `data-flow`,
//! `data-outer-src`, `data-lost-at`, `data-answer`.

use std::fmt::Write as _;

use probemesh_proto::pb;

use super::layout::{HEAD, LANE_W, Ladder, Placed, Row, canonical};
use crate::escape::escape;

/// Half the width of a clock error band.
const BAND_HALF_W: f64 = 9.0;
/// Length of the stub that ends a lost packet.
const LOST_STUB: f64 = 44.0;

/// The `<svg>` element of `ladder`.
pub fn svg(ladder: &Ladder<'_>) -> String {
    let (w, h) = (ladder.width(), ladder.height());
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="ladder" xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" role="img" aria-label="ladder diagram">"#
    );
    s.push_str(DEFS);
    lanes(&mut s, ladder);
    for row in &ladder.rows {
        fate(&mut s, ladder, row);
    }
    s.push_str("</svg>");
    s
}

/// Arrow heads: a packet, an answer, an error.
const DEFS: &str = r#"<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" class="head"/></marker><marker id="head-answer" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" class="head-answer"/></marker><marker id="head-error" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" class="head-error"/></marker></defs>"#;

fn lanes(s: &mut String, ladder: &Ladder<'_>) {
    let bottom = ladder.height() - 4.0;
    for (i, observer) in ladder.lanes.iter().enumerate() {
        let x = ladder.x(i);
        let (probe, iface) = observer.rsplit_once('/').unwrap_or((observer, ""));
        let _ = write!(
            s,
            r#"<g class="lane" id="{id}" data-observer="{o}"><title>{o}</title><text class="lane-probe" x="{x:.1}" y="22">{p}</text><text class="lane-iface" x="{x:.1}" y="38">{i}</text><line class="lane-line" x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{bottom:.1}"/></g>"#,
            id = super::lane_anchor(observer),
            o = escape(observer),
            p = escape(probe),
            i = escape(iface),
            top = HEAD - 16.0,
        );
    }
}

fn fate(s: &mut String, ladder: &Ladder<'_>, row: &Row<'_>) {
    let f = row.fate;
    let packet = escape(&f.packet);
    let state = if f.answered { "answered" } else { "unanswered" };
    let _ = write!(
        s,
        r#"<g class="fate {state}" id="pkt-{n}" data-packet="{packet}" data-answered="{a}"><title>{packet}</title><text class="time" x="6" y="{y:.1}">+{ms:.3} ms</text><line class="row-rule" x1="0" y1="{top:.1}" x2="{w:.0}" y2="{top:.1}"/>"#,
        n = row.index,
        a = f.answered,
        ms = ms_since(ladder, row.first_ns),
        y = row.top + 26.0,
        top = row.top + 2.0,
        w = ladder.width(),
    );
    let mut previous: Option<(f64, f64)> = None;
    for placed in &row.hops {
        let Some(lane) = ladder.lane(&placed.observer) else {
            continue;
        };
        let (x, y) = (ladder.x(lane), placed.y);
        if let Some((px, py)) = previous
            && (px - x).abs() > f64::EPSILON
        {
            let _ = write!(
                s,
                r#"<line class="arrow" x1="{px:.1}" y1="{py:.1}" x2="{x:.1}" y2="{y:.1}" marker-end="url(#head)"/>"#
            );
        }
        label(s, x + 9.0, y - 2.0, &placed.label);
        sighting(s, ladder, row, placed, x);
        previous = Some((x, y));
    }
    if let Some((x, y)) = previous {
        ends(s, ladder, row, x, y);
    }
    s.push_str("</g>");
}

/// One sighting: the clock error band around its instant, and the dot.
fn sighting(s: &mut String, ladder: &Ladder<'_>, row: &Row<'_>, placed: &Placed<'_>, x: f64) {
    let hop = placed.hop;
    let y = placed.y;
    let error_ns = ladder.error_ns(&placed.observer);
    // The band is ± the bound on the same scale as the delays: a 5 µs
    // bound next to 50 µs hops is a tenth of their distance.
    let band = (error_ns as f64 * ladder.px_per_ns).max(0.5);
    let (src, dst) = hop.outer.split_once(" -> ").unwrap_or(("", ""));
    let _ = write!(
        s,
        r#"<g class="hop{cut}" data-observer="{o}" data-packet="{p}" data-flow="{flow}" data-outer-src="{src}" data-outer-dst="{dst}" data-at-ns="{at}"><title>{o} at +{ms:.3} ms{later}: {flow}{outer}{tr} ({bytes} bytes on the wire; clock error ±{err} µs)</title><rect class="clock-band" data-clock-error-ns="{error_ns}" x="{bx:.1}" y="{by:.2}" width="{bw:.1}" height="{bh:.2}"/><circle class="dot" cx="{x:.1}" cy="{y:.1}" r="3.5"/></g>"#,
        cut = if placed.cut { " cut" } else { "" },
        o = escape(&placed.observer),
        p = escape(&row.fate.packet),
        flow = escape(&hop.flow),
        src = escape(src),
        dst = escape(dst),
        at = hop.at_unix_ns,
        ms = ms_since(ladder, hop.at_unix_ns),
        later = if hop.one_way_ns > 0 {
            format!(
                ", {:.1} µs after the first sighting",
                hop.one_way_ns as f64 / 1e3
            )
        } else {
            String::new()
        },
        outer = if hop.outer.is_empty() {
            String::new()
        } else {
            format!(" outer {}", escape(&hop.outer))
        },
        tr = if hop.transforms.is_empty() {
            String::new()
        } else {
            format!("; {}", escape(&hop.transforms.join("; ")))
        },
        bytes = hop.wire_bytes,
        err = error_ns / 1000,
        bx = x - BAND_HALF_W,
        by = y - band,
        bw = 2.0 * BAND_HALF_W,
        bh = 2.0 * band,
    );
}

/// A sighting's label: the flow, then (smaller, in another colour) what
/// rewrote or encapsulated it.
fn label(s: &mut String, x: f64, y: f64, lines: &[String]) {
    for (i, line) in lines.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text class="label{outer}" x="{x:.1}" y="{y:.1}">{t}</text>"#,
            outer = if i > 0 { " label-outer" } else { "" },
            y = y + 11.0 * i as f64,
            t = escape(line),
        );
    }
}

/// How the packet's story ends: the answer and ICMP errors, drawn from the
/// observer that saw them towards the packet's first observer, and for a
/// packet never answered, a stop where it was last seen.
fn ends(s: &mut String, ladder: &Ladder<'_>, row: &Row<'_>, last_x: f64, last_y: f64) {
    let f = row.fate;
    let first_x = f
        .hops
        .iter()
        .min_by_key(|h| h.at_unix_ns)
        .and_then(|h| ladder.lane(&h.observer))
        .map_or(last_x, |l| ladder.x(l));
    if f.answered
        && let Some(lane) = ladder.lane(&f.answered_at)
    {
        let kind = f.answer_kind();
        let (what, class) = match kind {
            pb::AnswerKind::Reset => ("RST", "answer reset"),
            pb::AnswerKind::Ack => ("ACK", "answer"),
            pb::AnswerKind::EchoReply => ("echo reply", "answer"),
            pb::AnswerKind::UdpReply => ("UDP reply", "answer"),
            pb::AnswerKind::Unspecified => ("answer", "answer"),
        };
        let y = row.answer_y.unwrap_or(last_y + 10.0);
        back_arrow(
            s,
            ladder.x(lane),
            first_x,
            y,
            (class, "head-answer"),
            &format!("{what} seen at {}", f.answered_at),
            &[
                ("data-answer", kind.as_str_name()),
                ("data-observer", &f.answered_at),
            ],
        );
    }
    for (e, &y) in f.icmp_errors.iter().zip(&row.error_y) {
        let Some(lane) = ladder.lane(&e.observer) else {
            continue;
        };
        let mtu = if e.next_hop_mtu > 0 {
            format!(" mtu {}", e.next_hop_mtu)
        } else {
            String::new()
        };
        back_arrow(
            s,
            ladder.x(lane),
            first_x,
            y,
            ("icmp-error", "head-error"),
            &format!("ICMP {}/{} from {}{mtu}", e.icmp_type, e.code, e.from),
            &[
                ("data-icmp-from", &e.from),
                ("data-observer", &canonical(&e.observer)),
            ],
        );
    }
    if !f.answered && !f.lost_after.is_empty() {
        let Some(lane) = ladder.lane(&f.lost_after) else {
            return;
        };
        let x = ladder.x(lane);
        // Onwards: the way it was going, else towards the next lane.
        let towards_left = if (last_x - first_x).abs() > f64::EPSILON {
            last_x < first_x
        } else {
            lane + 1 == ladder.lanes.len() && lane > 0
        };
        // Going right, the stop sits under the sighting's label.
        let label_lines = row.hops.last().map_or(0, |h| h.label.len());
        let stop_y = if towards_left {
            last_y
        } else {
            last_y + 11.0 * label_lines as f64
        };
        let end = if towards_left {
            x - LOST_STUB
        } else {
            x + LOST_STUB
        };
        let _ = write!(
            s,
            r#"<g class="lost-mark" data-lost-at="{o}" data-packet="{p}" data-flow="{flow}"><title>lost: last seen at {o}, never seen further and never answered</title><line class="lost-stub" x1="{x:.1}" y1="{y:.1}" x2="{end:.1}" y2="{stop:.1}"/><path class="lost-x" d="M{a:.1},{b:.1}l10,10m0,-10l-10,10"/><text class="lost-text" x="{end:.1}" y="{ty:.1}" text-anchor="middle">lost</text></g>"#,
            o = escape(&canonical(&f.lost_after)),
            p = escape(&f.packet),
            flow = escape(f.hops.first().map_or("", |h| h.flow.as_str())),
            y = last_y,
            stop = stop_y,
            a = end - 5.0,
            b = stop_y - 5.0,
            ty = stop_y + 17.0,
        );
    }
}

/// A dashed arrow back from `from_x` towards `to_x` at height `y` (a short
/// one when both are the same lane), labelled.
fn back_arrow(
    s: &mut String,
    from_x: f64,
    to_x: f64,
    y: f64,
    (class, head): (&str, &str),
    text: &str,
    data: &[(&str, &str)],
) {
    let to_x = if (from_x - to_x).abs() < f64::EPSILON {
        from_x - LANE_W / 3.0
    } else {
        to_x
    };
    let mut attrs = String::new();
    for (k, v) in data {
        let _ = write!(attrs, r#" {k}="{}""#, escape(v));
    }
    let _ = write!(
        s,
        r#"<g class="{class}"{attrs}><title>{t}</title><line class="back" x1="{from_x:.1}" y1="{y:.1}" x2="{to_x:.1}" y2="{y:.1}" marker-end="url(#{head})"/><text class="label label-back" x="{mx:.1}" y="{ly:.1}" text-anchor="middle">{t}</text></g>"#,
        t = escape(text),
        mx = (from_x + to_x) / 2.0,
        ly = y + 12.0,
    );
}

/// Milliseconds from the ladder's first sighting to `at_ns`.
fn ms_since(ladder: &Ladder<'_>, at_ns: i64) -> f64 {
    let origin = ladder.rows.first().map_or(at_ns, |r| r.first_ns);
    at_ns.saturating_sub(origin) as f64 / 1e6
}
