//! A mesh matrix (`meshctl mesh`) as one heat-map page: the run's ids,
//! selectors, size and count, a legend, then one grid per target kind
//! (rows: source probes; columns: tested hosts), each cell coloured by how
//! it went and carrying the same text as meshctl's terminal grid. A failing
//! or lossy cell links to its pair's entry below the grids: from, to, kind,
//! what failed, and the `meshctl probe` that diagnoses it (linked to that
//! run when the caller has one). Every string from the record is escaped.
//!
//! DOM hooks (tests, and whoever scripts against the page): each cell has
//! `data-from`, `data-to`, `data-kind` and `data-status` (the JSON's status
//! name, or `n.a.`), each pair entry the same, with `id="pair-N"`.

use std::collections::HashMap;
use std::fmt::Write as _;

use probemesh_model::mesh::{
    GRID_KINDS, cell_status_name, cell_text, diagnose_command, grid_title, is_broken,
    large_blocked, target_kind_name,
};
use probemesh_proto::pb;

use crate::PairLink;
use crate::STYLE;
use crate::escape::{anchor, escape, url_path};
use crate::listing::format_unix_ms;
use crate::page::failed_note;

/// Rows and columns drawn per grid: twice the coordinator's bound (64), so
/// any matrix it ran renders whole, and a hostile record cannot make the
/// page quadratically large.
const MAX_AXIS: usize = 128;

/// How a cell looks: its CSS class (`look-…`) and what the legend says.
const LEGEND: [(&str, &str, &str); 6] = [
    (
        "ok",
        "0% 0.4ms ✓",
        "every echo or connect answered (✓: the large DF echo too)",
    ),
    ("loss", "33.3% 0.5ms", "some echoes or connects lost"),
    (
        "large",
        "0% 0.4ms ✗1472",
        "small echoes answered, the large DF echo (N bytes) lost",
    ),
    ("fail", "100% loss", "nothing answered"),
    ("skipped", "–", "not tested (why: below)"),
    (
        "na",
        "·",
        "does not apply (an external host has no pod network or NodePort)",
    ),
];

fn look(c: &pb::MeshCell) -> &'static str {
    match c.status() {
        pb::MeshCellStatus::Ok => "ok",
        pb::MeshCellStatus::Degraded => "loss",
        pb::MeshCellStatus::Fail if large_blocked(c) => "large",
        pb::MeshCellStatus::Fail => "fail",
        pb::MeshCellStatus::Skipped | pb::MeshCellStatus::Unspecified => "skipped",
    }
}

/// The heat-map page of a record whose `matrix` is set.
pub fn page(record: &pb::RunRecord, links: &[PairLink]) -> String {
    let none = pb::MeshMatrix::default();
    let m = record.matrix.as_ref().unwrap_or(&none);
    let request = match record.request.as_ref().and_then(|r| r.kind.as_ref()) {
        Some(pb::run_request::Kind::Mesh(r)) => r.clone(),
        _ => pb::MeshRequest::default(),
    };
    let selector = |s: &str| if s.is_empty() { "all" } else { s }.to_owned();
    let mut s = String::with_capacity(32 * 1024);
    let _ = write!(
        s,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>probemesh mesh {id}</title><style>{STYLE}</style></head><body><header><h1>probemesh mesh <code>{id}</code></h1><p class="meta">from <b>{from}</b> to <b>{to}</b> · started {started} · {ms} ms · by {by}{state}</p><p class="meta">{count} echoes (connects) per cell{size} · at most {max} tests at once, {per} per source probe</p>"#,
        id = escape(&record.run_id),
        from = escape(&selector(&request.from)),
        to = escape(&selector(&request.to)),
        started = format_unix_ms(record.started_unix_ms),
        ms = record.duration_ms,
        by = escape(&record.requester),
        state = failed_note(record),
        count = m.count,
        size = if m.size > 0 {
            format!(", one large DF echo of {} B to each host address", m.size)
        } else {
            String::new()
        },
        max = m.max_concurrent,
        per = m.max_per_probe,
    );
    summary(&mut s, &m.cells);
    s.push_str("</header>");
    legend(&mut s);
    let sources = &m.sources[..m.sources.len().min(MAX_AXIS)];
    let targets = &m.targets[..m.targets.len().min(MAX_AXIS)];
    if sources.len() < m.sources.len() || targets.len() < m.targets.len() {
        let _ = write!(
            s,
            r#"<p class="missing">{} rows × {} columns: the first {MAX_AXIS} of each are drawn.</p>"#,
            m.sources.len(),
            m.targets.len()
        );
    }
    // The first cell of each (kind, from, to) is the one drawn, as in the
    // terminal grid.
    let mut at: HashMap<(i32, &str, &str), usize> = HashMap::new();
    for (i, c) in m.cells.iter().enumerate() {
        at.entry((c.kind, c.from.as_str(), c.to.as_str()))
            .or_insert(i);
    }
    for kind in GRID_KINDS {
        if m.cells.iter().any(|c| c.kind() == kind) {
            grid(&mut s, m, kind, sources, targets, &at);
        }
    }
    pairs(&mut s, m, links);
    skipped(&mut s, &m.cells);
    let _ = write!(
        s,
        r#"<footer>run <code id="run-id">{}</code> · trace <code id="trace-id">{}</code></footer></body></html>"#,
        escape(&record.run_id),
        escape(&record.trace_id)
    );
    s
}

fn summary(s: &mut String, cells: &[pb::MeshCell]) {
    let n = |st: pb::MeshCellStatus| cells.iter().filter(|c| c.status() == st).count();
    let _ = write!(
        s,
        r#"<p class="summary" id="summary">{} cells: {} ok, {} degraded, {} failed, {} skipped</p>"#,
        cells.len(),
        n(pb::MeshCellStatus::Ok),
        n(pb::MeshCellStatus::Degraded),
        n(pb::MeshCellStatus::Fail),
        cells.len()
            - n(pb::MeshCellStatus::Ok)
            - n(pb::MeshCellStatus::Degraded)
            - n(pb::MeshCellStatus::Fail),
    );
}

fn legend(s: &mut String) {
    s.push_str(r#"<section id="legend"><ul class="legend">"#);
    for (class, sample, meaning) in LEGEND {
        let _ = write!(
            s,
            r#"<li><span class="swatch look-{class}">{sample}</span> {meaning}</li>"#
        );
    }
    s.push_str(
        "</ul><p class=\"caption\">Rows test columns: each direction of a pair is its own cell. A failing or lossy cell links to its pair below, with the <code>meshctl probe</code> that diagnoses it.</p></section>",
    );
}

fn grid(
    s: &mut String,
    m: &pb::MeshMatrix,
    kind: pb::MeshTargetKind,
    sources: &[String],
    targets: &[String],
    at: &HashMap<(i32, &str, &str), usize>,
) {
    let name = target_kind_name(kind);
    let _ = write!(
        s,
        r#"<section class="grid" id="{id}"><h2>{title}</h2><div class="scroll"><table class="matrix" data-kind="{name}"><thead><tr><th class="corner">from \ to</th>"#,
        id = anchor("grid", name),
        title = escape(&grid_title(kind, m.count, m.size)),
    );
    for t in targets {
        let _ = write!(s, r#"<th scope="col">{}</th>"#, escape(t));
    }
    s.push_str("</tr></thead><tbody>");
    for from in sources {
        let _ = write!(s, r#"<tr><th scope="row">{}</th>"#, escape(from));
        for to in targets {
            let hooks = format!(
                r#"data-from="{}" data-to="{}" data-kind="{name}""#,
                escape(from),
                escape(to)
            );
            let Some(&i) = at.get(&(i32::from(kind), from.as_str(), to.as_str())) else {
                let _ = write!(
                    s,
                    r#"<td class="cell look-na" {hooks} data-status="n.a.">·</td>"#
                );
                continue;
            };
            let c = &m.cells[i];
            let text = escape(&cell_text(c, m.size));
            let body = if is_broken(c.status()) {
                format!(
                    r##"<a href="#{}">{text}</a>"##,
                    anchor("pair", &i.to_string())
                )
            } else {
                text
            };
            let _ = write!(
                s,
                r#"<td class="cell look-{look}" {hooks} data-status="{status}" title="{title}">{body}</td>"#,
                look = look(c),
                status = cell_status_name(c.status()),
                title = escape(&cell_title(c)),
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table></div></section>");
}

/// A cell's tooltip: what was tested and, when not ok, why.
fn cell_title(c: &pb::MeshCell) -> String {
    let mut t = c.address.clone();
    if !c.address_reason.is_empty() {
        let _ = write!(t, " ({})", c.address_reason);
    }
    if !c.reason.is_empty() {
        let _ = write!(t, ": {}", c.reason);
    }
    t
}

/// The failing and lossy pairs, each with what failed and its command.
fn pairs(s: &mut String, m: &pb::MeshMatrix, links: &[PairLink]) {
    s.push_str(r#"<section id="pairs"><h2>Failing pairs</h2>"#);
    let broken: Vec<(usize, &pb::MeshCell)> = m
        .cells
        .iter()
        .enumerate()
        .filter(|(_, c)| is_broken(c.status()))
        .collect();
    if broken.is_empty() {
        s.push_str(r#"<p class="caption">None: every tested cell answered.</p></section>"#);
        return;
    }
    s.push_str(r#"<ol class="pairs">"#);
    for (i, c) in broken {
        let kind = target_kind_name(c.kind());
        let _ = write!(
            s,
            r#"<li id="{id}" class="pair look-{look}" data-from="{from}" data-to="{to}" data-kind="{kind}" data-status="{status}"><b>{from}</b> → <b>{to}</b> {kind} <code>{address}</code>{why}: <span class="reason">{reason}</span>"#,
            id = anchor("pair", &i.to_string()),
            look = look(c),
            from = escape(&c.from),
            to = escape(&c.to),
            status = cell_status_name(c.status()),
            address = escape(&c.address),
            why = if c.address_reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", escape(&c.address_reason))
            },
            // The coordinator's reason gives the counts; a record without
            // one still says what was lost.
            reason = if c.reason.is_empty() {
                counts(c, m.size)
            } else {
                escape(&c.reason)
            },
        );
        if let Some(cmd) = diagnose_command(c, m.size) {
            let _ = write!(s, r#"<br><code class="diagnose">{}</code>"#, escape(&cmd));
        }
        if let Some(l) = links
            .iter()
            .find(|l| l.from == c.from && !c.probe_target.is_empty() && l.to == c.probe_target)
        {
            let _ = write!(
                s,
                r#" <a class="run" href="{}">its probe run</a>"#,
                escape(&url_path(&l.href))
            );
        }
        s.push_str("</li>");
    }
    s.push_str("</ol></section>");
}

/// "3 sent, 0 answered; large DF echo of 1472 B: 0 of 1 through".
fn counts(c: &pb::MeshCell, size: u32) -> String {
    let mut t = format!("{} sent, {} answered", c.sent, c.received);
    if c.large_run {
        let _ = write!(
            t,
            "; large DF echo of {size} B: {} of {} through",
            c.large_received, c.large_sent
        );
    }
    t
}

/// Why cells were skipped, each reason once with how many.
fn skipped(s: &mut String, cells: &[pb::MeshCell]) {
    let mut reasons: Vec<(&str, usize)> = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for c in cells
        .iter()
        .filter(|c| c.status() == pb::MeshCellStatus::Skipped)
    {
        let at = *seen.entry(&c.reason).or_insert_with(|| {
            reasons.push((&c.reason, 0));
            reasons.len() - 1
        });
        reasons[at].1 += 1;
    }
    if reasons.is_empty() {
        return;
    }
    s.push_str(r#"<section id="skipped"><h2>Skipped</h2><ul>"#);
    for (r, n) in reasons {
        let _ = write!(s, "<li>{n} × {}</li>", escape(r));
    }
    s.push_str("</ul></section>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render_mesh;

    const HOSTILE: &str = r#"<script>x("'")</script>"#;

    fn cell(from: &str, to: &str, received: u32, status: pb::MeshCellStatus) -> pb::MeshCell {
        let mut c = pb::MeshCell {
            from: from.into(),
            to: to.into(),
            address: "198.18.0.12".into(),
            sent: 3,
            received,
            rtt_median_ms: 0.4,
            probe_target: format!("probe:{to}"),
            ..Default::default()
        };
        c.set_kind(pb::MeshTargetKind::Node);
        c.set_status(status);
        c
    }

    fn record(sources: &[&str], targets: &[&str], cells: Vec<pb::MeshCell>) -> pb::RunRecord {
        pb::RunRecord {
            run_id: "r1".into(),
            matrix: Some(pb::MeshMatrix {
                sources: sources.iter().map(|s| (*s).to_owned()).collect(),
                targets: targets.iter().map(|s| (*s).to_owned()).collect(),
                cells,
                size: 1472,
                count: 3,
                max_concurrent: 32,
                max_per_probe: 8,
            }),
            ..Default::default()
        }
    }

    /// The start tag of the element carrying `needle` (an attribute).
    fn tag_with<'a>(html: &'a str, needle: &str) -> &'a str {
        let at = html
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} in {html}"));
        let start = html[..at].rfind('<').expect("a start tag");
        let end = at + html[at..].find('>').expect("a closed tag");
        &html[start..=end]
    }

    #[test]
    fn hostile_names_stay_text() {
        let mut bad = cell(HOSTILE, HOSTILE, 0, pb::MeshCellStatus::Fail);
        bad.reason = HOSTILE.into();
        bad.address_reason = HOSTILE.into();
        bad.probe_target = format!("probe:{HOSTILE}");
        let mut r = record(&[HOSTILE], &[HOSTILE], vec![bad]);
        r.run_id = HOSTILE.into();
        r.requester = HOSTILE.into();
        r.failure = HOSTILE.into();
        let links = [PairLink {
            from: HOSTILE.into(),
            to: format!("probe:{HOSTILE}"),
            href: r#"javascript:alert(1)" onclick="x"#.into(),
        }];
        let html = render_mesh(&r, &links);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains(r#"x("'")"#), "{html}");
        assert!(html.contains("&lt;script&gt;x(&quot;&#39;&quot;)&lt;/script&gt;"));
        // The command is still there, escaped, and the link cannot leave
        // the site or add an attribute.
        assert!(html.contains(r#"<code class="diagnose">meshctl probe --from &lt;script&gt;"#));
        assert!(
            html.contains(r#"href="javascript%3Aalert%281%29%22%20onclick%3D%22x""#),
            "{html}"
        );
    }

    #[test]
    fn a_failing_cell_links_to_its_entry_and_the_entry_to_its_run() {
        let r = record(
            &["node-1", "node-2"],
            &["node-1", "node-2"],
            vec![
                cell("node-1", "node-1", 3, pb::MeshCellStatus::Ok),
                cell("node-1", "node-2", 0, pb::MeshCellStatus::Fail),
                cell("node-2", "node-1", 2, pb::MeshCellStatus::Degraded),
                cell("node-2", "node-2", 3, pb::MeshCellStatus::Ok),
            ],
        );
        let links = [PairLink {
            from: "node-1".into(),
            to: "probe:node-2".into(),
            href: "/runs/r7".into(),
        }];
        let html = render_mesh(&r, &links);
        let failing = tag_with(
            &html,
            r#"data-to="node-2" data-kind="node" data-status="fail""#,
        );
        assert!(failing.contains("look-fail") && failing.contains(r#"data-from="node-1""#));
        let after = &html[html.find(failing).expect("the cell") + failing.len()..];
        assert!(
            after.starts_with(r##"<a href="#pair-1">100% loss</a></td>"##),
            "{after}"
        );
        let entry = tag_with(&html, r#"id="pair-1""#);
        assert!(
            entry.starts_with("<li ") && entry.contains(r#"data-from="node-1" data-to="node-2""#)
        );
        assert!(html.contains(
            r#"<code class="diagnose">meshctl probe --from node-1 --to probe:node-2</code> <a class="run" href="/runs/r7">"#
        ));
        // The lossy cell links too, to its own entry, without a run.
        assert!(html.contains(r##"<a href="#pair-2">33.3% 0.4ms</a>"##));
        assert!(tag_with(&html, r#"id="pair-2""#).contains("look-loss"));
        assert_eq!(html.matches(r#"class="run""#).count(), 1);
        // Ok cells are plain text.
        assert_eq!(html.matches(r##"<a href="#pair-"##).count(), 2);
    }

    #[test]
    fn cells_that_do_not_apply_or_were_skipped_are_not_links() {
        let mut skipped = cell("node-1", "node-2", 0, pb::MeshCellStatus::Skipped);
        skipped.set_kind(pb::MeshTargetKind::PodNetwork);
        skipped.reason = "no pod on node-2".into();
        let r = record(
            &["node-1"],
            &["node-2", "cloudvm-1"],
            vec![
                cell("node-1", "node-2", 3, pb::MeshCellStatus::Ok),
                cell("node-1", "cloudvm-1", 3, pb::MeshCellStatus::Ok),
                skipped,
            ],
        );
        let html = render_mesh(&r, &[]);
        let na = tag_with(
            &html,
            r#"data-to="cloudvm-1" data-kind="pod-network" data-status="n.a.""#,
        );
        assert!(na.contains("look-na"));
        assert!(html[html.find(na).expect("n.a. cell") + na.len()..].starts_with("·</td>"));
        let skip = tag_with(&html, r#"data-kind="pod-network" data-status="skipped""#);
        assert!(html[html.find(skip).expect("skipped cell") + skip.len()..].starts_with("–</td>"));
        assert!(!html.contains("<a href=\"#pair-"));
        assert!(html.contains("<li>1 × no pod on node-2</li>"));
        assert!(html.contains("None: every tested cell answered."));
        // Self-contained: no script, nothing fetched.
        assert!(!html.contains("<script") && !html.contains("src="));
    }
}
