//! The page around the ladder: the verdict with its summary, fix and
//! evidence (each item linked to its check, or to the observer whose
//! capture it cites), the path, the checks table, the endpoints and why
//! each was chosen, the observers with their files, the timing and the
//! run's ids. Every string from the record goes through `escape`.

use std::fmt::Write as _;

use probemesh_model::check::{CheckName, Direction, Status};
use probemesh_model::evidence::Source;
use probemesh_model::grpc::evidence_source;
use probemesh_model::path::Step;
use probemesh_model::verdict::{Cause, Class};
use probemesh_proto::pb;

use crate::escape::{anchor, escape, url_path};
use crate::ladder;
use crate::listing::format_unix_ms;
use crate::{FileLink, STYLE};

/// The whole page of an upgraded record.
pub fn page(record: &pb::RunRecord, files: &[FileLink]) -> String {
    let diagnosis = record.diagnosis.as_ref();
    let verdict = diagnosis.and_then(|d| d.verdict.as_ref());
    let class = verdict
        .and_then(|v| Class::try_from(v.class()).ok())
        .map(Class::as_str);
    let request = record.request.clone().unwrap_or_default();
    let target = diagnosis
        .and_then(|d| d.target.as_ref())
        .map(|t| t.spec.clone())
        .unwrap_or_default();
    let mut s = String::with_capacity(64 * 1024);
    let _ = write!(
        s,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>probemesh run {id}{class}</title><style>{STYLE}</style></head><body><span id="ladder-only"></span><header><h1>probemesh run <code>{id}</code></h1><p class="meta">from <b>{from}</b>{to} · started {started} · {ms} ms · by {by}{state}</p></header>"#,
        id = escape(&record.run_id),
        class = class.map(|c| format!(" — {c}")).unwrap_or_default(),
        from = escape(&request.from),
        to = if target.is_empty() {
            String::new()
        } else {
            format!(" to <b>{}</b>", escape(&target))
        },
        started = format_unix_ms(record.started_unix_ms),
        ms = record.duration_ms,
        by = escape(&record.requester),
        state = failed_note(record),
    );
    let checks = diagnosis.map_or(&[][..], |d| d.checks.as_slice());
    if let Some(v) = verdict {
        verdict_section(&mut s, v, checks);
    }
    ladder_section(&mut s, record);
    if !checks.is_empty() {
        checks_section(&mut s, checks);
    }
    if let Some(t) = diagnosis.and_then(|d| d.target.as_ref()) {
        endpoints_section(&mut s, t);
    }
    observers_section(&mut s, record, files);
    timing_section(&mut s, record);
    let _ = write!(
        s,
        r#"<footer>run <code id="run-id">{}</code> · trace <code id="trace-id">{}</code></footer></body></html>"#,
        escape(&record.run_id),
        escape(&record.trace_id)
    );
    s
}

/// ` · failed: WHY` for a failed run, else nothing: the header's note.
pub(crate) fn failed_note(record: &pb::RunRecord) -> String {
    if record.failure.is_empty() {
        String::new()
    } else {
        format!(
            r#" · <span class="status-fail">failed: {}</span>"#,
            escape(&record.failure)
        )
    }
}

fn verdict_section(s: &mut String, v: &pb::Verdict, checks: &[pb::Check]) {
    let class = Class::try_from(v.class()).map_or("", Class::as_str);
    let cause = Cause::try_from(v.cause()).map_or("", Cause::as_str);
    let _ = write!(
        s,
        r#"<section id="verdict" class="verdict class-{class}" data-class="{class}" data-cause="{cause}"><h2>Verdict <span class="badge">{class}{slash}{cause}</span></h2><p class="sub">confidence {conf:.2} · rule <code>{rule}</code></p><p class="summary">"#,
        slash = if cause.is_empty() { "" } else { "/" },
        conf = v.confidence,
        rule = escape(&v.rule),
    );
    if v.claims.is_empty() {
        s.push_str(&escape(&v.summary));
    }
    for (i, c) in v.claims.iter().enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        s.push_str(&escape(&c.text));
        for e in &c.evidence {
            let _ = write!(s, r##"<a class="ref" href="#ev-{e}">[{}]</a>"##, e + 1);
        }
    }
    s.push_str("</p>");
    if !v.fix.is_empty() {
        let _ = write!(s, r#"<p class="fix"><b>Fix:</b> {}</p>"#, escape(&v.fix));
    }
    for m in &v.missing {
        let _ = write!(s, r#"<p class="missing">missing: {}</p>"#, escape(m));
    }
    s.push_str("</section>");
    if !v.evidence.is_empty() {
        s.push_str(r#"<section id="evidence"><h2>Evidence</h2><ol>"#);
        for (i, e) in v.evidence.iter().enumerate() {
            evidence_item(s, i, e, checks);
        }
        s.push_str("</ol></section>");
    }
    let steps: Vec<Step> = v
        .path
        .iter()
        .filter_map(|p| Step::try_from(p).ok())
        .collect();
    if !steps.is_empty() {
        s.push_str(r#"<section id="path"><h2>Path</h2><ol class="path">"#);
        for step in &steps {
            let _ = write!(
                s,
                r#"<li class="step action-{}">{}</li>"#,
                step.action.as_str(),
                escape(&step.to_string())
            );
        }
        s.push_str("</ol></section>");
    }
}

/// One evidence item, linked to where it comes from.
fn evidence_item(s: &mut String, i: usize, e: &pb::Evidence, checks: &[pb::Check]) {
    let source = evidence_source(e).ok().flatten();
    let (kind, data, href) = match &source {
        Some(Source::Check { name, from, to }) => {
            let n = checks.iter().position(|c| {
                CheckName::try_from(c.name()).ok() == Some(*name) && &c.from == from && &c.to == to
            });
            let href = n.map(|n| format!("#{}", anchor("check", &n.to_string())));
            ("check", String::new(), href)
        }
        Some(Source::Capture {
            probe, interface, ..
        }) => {
            let observer = format!("{probe}/{interface}");
            let data = format!(r#" data-capture="{}""#, escape(&observer));
            (
                "capture",
                data,
                Some(format!("#{}", ladder::lane_anchor(&observer))),
            )
        }
        Some(Source::Inventory { .. }) => ("inventory", String::new(), None),
        None => ("", String::new(), None),
    };
    let label = source
        .as_ref()
        .map_or_else(|| e.artifact.clone(), ToString::to_string);
    let link = match href {
        Some(h) if !label.is_empty() => {
            format!(r#"<a class="src" href="{h}">{}</a>"#, escape(&label))
        }
        _ if !label.is_empty() => format!(r#"<span class="src">{}</span>"#, escape(&label)),
        _ => String::new(),
    };
    let _ = write!(
        s,
        r#"<li id="ev-{i}" data-source-kind="{kind}"{data}><span class="probe">[{p}]</span> <span class="observation">{o}</span> {link}</li>"#,
        p = escape(&e.probe),
        o = escape(&e.observation),
    );
}

fn ladder_section(s: &mut String, record: &pb::RunRecord) {
    s.push_str(r#"<section id="ladder"><h2>Ladder</h2>"#);
    let skipped = record
        .correlation
        .as_ref()
        .map_or("", |c| c.skipped.as_str());
    match ladder::section(record) {
        Some(d) => {
            let _ = write!(
                s,
                r##"<p class="caption">One line per observer; time flows down on the coordinator's clock. Each row is one followed packet ({shown} of {total}, the unanswered first), placed at its first sighting; inside a row its sightings go down with their delay since then, up to {us:.1} µs (a longer delay is drawn there, as a hollow dot), and further apart where their labels need the room. The shaded band around each sighting is that observer's clock error bound on the same scale. Labels give the flow (5-tuple) wherever NAT or a tunnel changed it. Dashed arrows: answers (red: RST) and ICMP errors, from the observer that saw them. ✕: a packet lost after the observer where it was last seen. <a href="#ladder-only">The diagram alone</a>.</p><div class="scroll">{svg}</div>"##,
                shown = d.shown,
                total = d.total,
                us = d.us_per_row,
                svg = d.svg,
            );
        }
        None if !skipped.is_empty() => {
            let _ = write!(
                s,
                r#"<p class="caption">No packets followed: {}</p>"#,
                escape(skipped)
            );
        }
        None => {
            s.push_str(r#"<p class="caption">No packets followed in this run (no captures).</p>"#)
        }
    }
    s.push_str("</section>");
}

fn checks_section(s: &mut String, checks: &[pb::Check]) {
    s.push_str(r#"<section id="checks"><h2>Checks</h2><table><thead><tr><th>check</th><th>from</th><th>to</th><th>status</th><th>recv/sent</th><th>rtt ms (min/avg/max)</th><th>detail</th></tr></thead><tbody>"#);
    for (i, c) in checks.iter().enumerate() {
        let name = CheckName::try_from(c.name()).map_or("", CheckName::as_str);
        let status = Status::try_from(c.status()).map_or("", Status::as_str);
        let reverse = matches!(Direction::try_from(c.direction()), Ok(Direction::Reverse));
        let counts = if c.sent > 0 {
            format!("{}/{}", c.received, c.sent)
        } else {
            "-".into()
        };
        let rtt = if c.rtt_avg_ms > 0.0 {
            format!(
                "{:.3} / {:.3} / {:.3}",
                c.rtt_min_ms, c.rtt_avg_ms, c.rtt_max_ms
            )
        } else {
            "-".into()
        };
        let _ = write!(
            s,
            r#"<tr id="{id}" class="status-{status}" data-check="{name}" data-status="{status}"><td>{name}{size}</td><td>{arrow}{from}</td><td>{to}</td><td class="status">{status}</td><td class="num">{counts}</td><td class="num">{rtt}</td><td>{detail}</td></tr>"#,
            id = anchor("check", &i.to_string()),
            size = if c.size > 0 {
                format!(" <small>{} B</small>", c.size)
            } else {
                String::new()
            },
            arrow = if reverse { "⇠ " } else { "" },
            from = escape(&c.from),
            to = escape(&c.to),
            detail = escape(&c.detail),
        );
    }
    s.push_str("</tbody></table></section>");
}

fn endpoints_section(s: &mut String, t: &pb::ResolvedTarget) {
    let _ = write!(
        s,
        r#"<section id="endpoints"><h2>Endpoints of <code>{}</code>{}</h2><table><thead><tr><th>address</th><th>role</th><th>node</th><th>probe</th><th>why it was chosen</th></tr></thead><tbody>"#,
        escape(&t.spec),
        if t.name.is_empty() {
            String::new()
        } else {
            format!(" ({})", escape(&t.name))
        }
    );
    for e in &t.endpoints {
        let addr = if e.port > 0 {
            format!("{}:{}", e.ip, e.port)
        } else {
            e.ip.clone()
        };
        let _ = write!(
            s,
            r#"<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            escape(&addr),
            escape(&e.role),
            escape(&e.node),
            escape(&e.probe),
            escape(&e.reason)
        );
    }
    s.push_str("</tbody></table></section>");
}

fn observers_section(s: &mut String, record: &pb::RunRecord, files: &[FileLink]) {
    if record.observers.is_empty() && files.is_empty() {
        return;
    }
    s.push_str(r#"<section id="observers"><h2>Observers and files</h2><ul>"#);
    for o in &record.observers {
        let _ = write!(
            s,
            r#"<li data-probe="{p}"><b>{p}</b> on {i} · clock offset {off:.1} µs ± {err:.1} µs</li>"#,
            p = escape(&o.probe),
            i = escape(&o.interfaces.join(", ")),
            off = o.clock_offset_ns as f64 / 1e3,
            err = o.clock_error_ns as f64 / 1e3,
        );
    }
    s.push_str("</ul>");
    if !files.is_empty() {
        s.push_str(r#"<p>Capture files (flannel's VXLAN is on UDP 8472: <code>tshark -d udp.port==8472,vxlan -r FILE</code>):</p><ul class="files">"#);
        for f in files {
            let _ = write!(
                s,
                r#"<li><a class="file" href="{}">{}</a></li>"#,
                escape(&url_path(&f.href)),
                escape(&f.label)
            );
        }
        s.push_str("</ul>");
    }
    s.push_str("</section>");
}

fn timing_section(s: &mut String, record: &pb::RunRecord) {
    let Some(t) = &record.timing else {
        return;
    };
    let rows = [
        ("duration", format!("{} ms", t.duration_ms)),
        ("clock error bound", format!("± {} µs", t.clock_error_us)),
        ("capture skew", format!("{} µs", t.capture_skew_us)),
        ("clock wait", format!("{} ms", t.clock_wait_ms)),
        ("arming lead", format!("{} ms", t.arming_lead_ms)),
        (
            "latest arming after the instant",
            format!("{} µs", t.arm_late_us),
        ),
        ("collect", format!("{} ms", t.collect_ms)),
    ];
    s.push_str(r#"<section id="timing"><h2>Timing</h2><dl>"#);
    for (k, v) in rows {
        let _ = write!(s, "<dt>{k}</dt><dd>{v}</dd>");
    }
    s.push_str("</dl></section>");
}
