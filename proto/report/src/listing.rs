//! One line per run, as run listings show it: `meshctl runs` and the
//! coordinator's web view print the same kind, target, state and result.

use std::time::{Duration, UNIX_EPOCH};

use probemesh_model::mesh::cell_status_name;
use probemesh_model::verdict::{Cause, Class};
use probemesh_proto::pb::run_request::Kind;
use probemesh_proto::pb::task_result::Outcome;
use probemesh_proto::{compat, pb};

/// A run as one line of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLine {
    /// The run's id.
    pub run_id: String,
    /// Where it is in its life ([`state_name`]).
    pub state: &'static str,
    /// Why it failed, only for failed runs.
    pub failure: Option<String>,
    /// When it started, Unix milliseconds.
    pub started_unix_ms: i64,
    /// Who started it.
    pub requester: String,
    /// The probe it ran from (empty for runs on several).
    pub from: String,
    /// The test, as the meshctl command names it ([`kind_and_target`]).
    pub kind: &'static str,
    /// What it was aimed at.
    pub target: String,
    /// Its result in a few words: the verdict, the counts, the error.
    pub result: String,
    /// How long it took.
    pub duration_ms: i64,
}

impl From<&pb::RunRecord> for RunLine {
    fn from(r: &pb::RunRecord) -> Self {
        let request = r.request.clone().unwrap_or_default();
        let (kind, target) = kind_and_target(&request);
        Self {
            run_id: r.run_id.clone(),
            state: state_name(r.state()),
            failure: (r.state() == pb::RunState::Failed).then(|| r.failure.clone()),
            started_unix_ms: r.started_unix_ms,
            requester: r.requester.clone(),
            from: request.from,
            kind,
            target,
            result: result(r),
            duration_ms: r.duration_ms,
        }
    }
}

/// Where a run is in its life: `running`, `done`, `interrupted` (the
/// coordinator restarted mid-run) or `failed`. Records from before run
/// states were written when the run ended: `done`.
pub fn state_name(state: pb::RunState) -> &'static str {
    match state {
        pb::RunState::Running => "running",
        pb::RunState::Done | pb::RunState::Unspecified => "done",
        pb::RunState::Interrupted => "interrupted",
        pb::RunState::Failed => "failed",
    }
}

/// The test a run request names, as the meshctl command does, and what it
/// is aimed at.
pub fn kind_and_target(request: &pb::RunRequest) -> (&'static str, String) {
    let with_port = |host: &str, port: u32| {
        if port == 0 {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        }
    };
    match &request.kind {
        Some(Kind::Ping(p)) => ("ping", p.target.clone()),
        Some(Kind::Tcping(t)) => ("tcping", with_port(&t.host, t.port)),
        Some(Kind::TcpTransfer(t)) => ("transfer", with_port(&t.host, t.port)),
        Some(Kind::UdpEcho(u)) => ("udping", with_port(&u.host, u.port)),
        Some(Kind::Pmtu(p)) => ("pmtu", p.target.clone()),
        Some(Kind::Trace(t)) => ("mtr", t.target.clone()),
        Some(Kind::Dns(d)) => ("dig", d.name.clone()),
        Some(Kind::Listener(_)) => ("listeners", String::new()),
        Some(Kind::NodeFacts(_)) => ("inspect", String::new()),
        Some(Kind::Capture(c)) => ("capture", c.on.join(",")),
        Some(Kind::Probe(p)) => ("probe", p.to.clone()),
        Some(Kind::Mesh(m)) => ("mesh", format!("{} -> {}", or_all(&m.from), or_all(&m.to))),
        None => ("unknown", String::new()),
    }
}

/// A mesh selector as listings show it: empty is `all`.
fn or_all(selector: &str) -> &str {
    if selector.is_empty() { "all" } else { selector }
}

/// Unix milliseconds as RFC 3339 to the second, `-` for none.
pub fn format_unix_ms(ms: i64) -> String {
    u64::try_from(ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map(|ms| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        })
        .unwrap_or_else(|| "-".to_owned())
}

/// A run's result in a few words.
fn result(r: &pb::RunRecord) -> String {
    if let Some(verdict) = r.diagnosis.as_ref().and_then(|d| d.verdict.as_ref()) {
        let mut v = verdict.clone();
        compat::upgrade_verdict(&mut v);
        let class = Class::try_from(v.class()).map_or("", Class::as_str);
        return match Cause::try_from(v.cause()) {
            Ok(cause) => format!("{class}/{cause}"),
            Err(_) => class.to_owned(),
        };
    }
    if r.state() == pb::RunState::Running {
        return "…".to_owned();
    }
    if let Some(matrix) = &r.matrix {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for cell in &matrix.cells {
            let status = cell_status_name(cell.status());
            match counts.iter_mut().find(|(s, _)| *s == status) {
                Some((_, n)) => *n += 1,
                None => counts.push((status, 1)),
            }
        }
        counts.sort_unstable();
        let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        return format!("{} cells: {}", matrix.cells.len(), counts.join(", "));
    }
    match r.result.as_ref().and_then(|res| res.outcome.as_ref()) {
        Some(Outcome::Ping(s)) => format!("{}/{} replies", s.received, s.transmitted),
        Some(Outcome::Tcping(s)) => format!("{}/{} connected", s.connected, s.attempted),
        Some(Outcome::Error(e)) => format!("error: {}", e.message),
        Some(Outcome::TcpTransfer(t)) => format!(
            "{} of {} bytes acked, {}",
            t.bytes_acked, t.bytes_sent, t.outcome
        ),
        Some(Outcome::UdpEcho(u)) => format!("{}/{} echoes", u.received, u.transmitted),
        Some(Outcome::Pmtu(p)) => format!(
            "pmtu {}{}",
            p.path_mtu,
            if p.blackhole { " (black hole)" } else { "" }
        ),
        Some(Outcome::Trace(t)) => format!(
            "{} hops{}",
            t.hops.len(),
            if t.reached {
                ""
            } else {
                ", target not reached"
            }
        ),
        Some(Outcome::Dns(d)) => d.conclusion.clone(),
        Some(Outcome::Listener(l)) => format!("{} listeners", l.listeners.len()),
        Some(Outcome::NodeFacts(f)) => format!("{} interfaces", f.interfaces.len()),
        Some(Outcome::Capture(c)) => {
            let packets: u64 = c.interfaces.iter().map(|i| i.packets_written).sum();
            format!("{packets} packets, stopped by {}", c.stop().as_str_name())
        }
        Some(Outcome::Responder(_)) | None if !r.observers.is_empty() => {
            format!("{} observers", r.observers.len())
        }
        Some(Outcome::Responder(_)) | None => "no result".into(),
    }
}
