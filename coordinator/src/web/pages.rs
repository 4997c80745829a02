//! The web view's pages: the runs (with where each running one is), one
//! run's report, the latest mesh matrix, and the refusals. Plain HTML with
//! the report's style sheet; no script. A page that shows a running run
//! reloads itself every [`REFRESH_S`] seconds (`<meta http-equiv=refresh>`)
//! until nothing on it runs.

use std::collections::HashMap;
use std::fmt::Write as _;

use probemesh_proto::pb;
use probemesh_report::escape::escape;
use probemesh_report::listing::{RunLine, format_unix_ms};

use crate::runs::live::LiveRun;

/// Seconds between reloads of a page that shows a running run.
pub const REFRESH_S: u32 = 2;

/// A whole page: `title`, the navigation, `body`; reloading itself when
/// `refresh`.
pub fn layout(title: &str, body: &str, refresh: bool) -> String {
    let refresh = if refresh {
        format!(r#"<meta http-equiv="refresh" content="{REFRESH_S}">"#)
    } else {
        String::new()
    };
    format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">{refresh}<title>{title} · probemesh</title><style>{style}</style></head><body><nav class="meta"><a href="/">runs</a> · <a href="/mesh">mesh</a></nav>{body}<footer>probemesh web view · read-only</footer></body></html>"#,
        title = escape(title),
        style = probemesh_report::STYLE,
    )
}

/// The runs, newest first: `records` as the store lists them, `live` what
/// this coordinator knows of those in flight, `viewer` who is reading.
pub fn runs(records: &[pb::RunRecord], live: &HashMap<String, LiveRun>, viewer: &str) -> String {
    let mut body = format!(
        r#"<header><h1>probemesh runs</h1><p class="meta">newest {n} · read as <b>{viewer}</b></p></header>"#,
        n = records.len(),
        viewer = escape(viewer),
    );
    if records.is_empty() {
        body.push_str(
            "<p>No run yet. Start one with <code>meshctl probe</code>, <code>meshctl mesh</code> or a tool (<code>meshctl ping</code> ...).</p>",
        );
        return layout("runs", &body, false);
    }
    body.push_str(r#"<table id="runs"><tr><th>run</th><th>state</th><th>started</th><th>by</th><th>test</th><th>from</th><th>target</th><th>result</th><th>ms</th></tr>"#);
    let mut running = false;
    for record in records {
        let line = RunLine::from(record);
        let state = match (line.state, live.get(&line.run_id)) {
            ("running", Some(run)) => {
                running = true;
                format!("running · {}", progress(run))
            }
            ("running", None) => {
                running = true;
                "running (on another coordinator)".to_owned()
            }
            (state, _) => state.to_owned(),
        };
        let status = match line.state {
            "failed" | "interrupted" => "status-fail",
            "running" => "status-skipped",
            _ => "status-ok",
        };
        let _ = write!(
            body,
            r#"<tr class="{status}" data-run="{id}" data-state="{raw_state}"><td><a href="/runs/{id}"><code>{id}</code></a></td><td class="status">{state}</td><td>{started}</td><td>{by}</td><td>{kind}</td><td>{from}</td><td>{target}</td><td>{result}</td><td class="num">{ms}</td></tr>"#,
            id = escape(&line.run_id),
            raw_state = line.state,
            state = escape(&state),
            started = format_unix_ms(line.started_unix_ms),
            by = escape(&line.requester),
            kind = line.kind,
            from = escape(&line.from),
            target = escape(&line.target),
            result = escape(line.failure.as_deref().unwrap_or(&line.result)),
            ms = line.duration_ms,
        );
    }
    body.push_str("</table>");
    layout("runs", &body, running)
}

/// A run still in flight: what it is and where it is.
pub fn running(record: &pb::RunRecord, live: Option<&LiveRun>) -> String {
    let line = RunLine::from(record);
    let body = format!(
        r#"<header><h1>probemesh run <code>{id}</code></h1><p class="meta">{kind} from <b>{from}</b> to <b>{target}</b> · started {started} · by {by}</p></header><p id="progress" class="verdict class-inconclusive"><span class="badge">running</span> {where_}</p><p class="caption">This page reloads every {REFRESH_S} s until the run ends; then it shows the run's report.</p>"#,
        id = escape(&line.run_id),
        kind = line.kind,
        from = escape(&line.from),
        target = escape(&line.target),
        started = format_unix_ms(line.started_unix_ms),
        by = escape(&line.requester),
        where_ = escape(&live.map_or_else(
            || "on another coordinator (its progress is known there)".to_owned(),
            progress
        )),
    );
    layout(&format!("run {}", line.run_id), &body, true)
}

/// Where a run in flight is: its last step, else the progress streamed.
fn progress(run: &LiveRun) -> String {
    match &run.step {
        Some(step) if step.total > 0 => format!(
            "{} {}/{}{}",
            step.phase,
            step.done,
            step.total,
            detail(&step.detail)
        ),
        Some(step) => format!("{}{}", step.phase, detail(&step.detail)),
        None => format!("{} progress updates", run.progress),
    }
}

fn detail(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

/// A page saying why a request is refused or found nothing.
pub fn message(title: &str, text: &str) -> String {
    let body = format!(
        r#"<header><h1>{title}</h1></header><p id="message">{text}</p>"#,
        title = escape(title),
        text = escape(text),
    );
    layout(title, &body, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, state: pb::RunState, requester: &str) -> pb::RunRecord {
        let mut r = pb::RunRecord {
            run_id: id.into(),
            requester: requester.into(),
            started_unix_ms: 1_700_000_000_000,
            request: Some(pb::RunRequest {
                from: "cloudvm-1".into(),
                kind: Some(pb::run_request::Kind::Ping(pb::PingTask {
                    target: "198.18.1.2".into(),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        r.set_state(state);
        r
    }

    #[test]
    fn a_running_run_shows_its_step_and_the_page_reloads() {
        let live = HashMap::from([(
            "r1".to_owned(),
            LiveRun {
                step: Some(pb::RunStep {
                    phase: "checks".into(),
                    done: 2,
                    total: 5,
                    detail: String::new(),
                }),
                progress: 7,
            },
        )]);
        let page = runs(
            &[
                record("r1", pb::RunState::Running, "admin"),
                record("r0", pb::RunState::Done, "admin"),
            ],
            &live,
            "alice",
        );
        assert!(page.contains("running · checks 2/5"), "{page}");
        assert!(page.contains(r#"http-equiv="refresh""#));
        assert!(page.contains(r#"<a href="/runs/r0">"#));
    }

    #[test]
    fn a_page_with_nothing_running_does_not_reload() {
        let page = runs(
            &[record("r0", pb::RunState::Done, "admin")],
            &HashMap::new(),
            "alice",
        );
        assert!(!page.contains("refresh"));
    }

    #[test]
    fn names_from_the_network_are_escaped() {
        let page = runs(
            &[record("r0", pb::RunState::Done, "<script>x</script>")],
            &HashMap::new(),
            "<b>",
        );
        assert!(!page.contains("<script>x"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("read as <b>&lt;b&gt;</b>"));
    }
}
