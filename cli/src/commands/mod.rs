//! One module per meshctl command family.

pub mod capture;
pub mod certs;
pub mod inspect;
pub mod join_token;
pub mod path;
pub mod probe;
pub mod probes;
pub mod runs;
pub mod tools;
pub mod transfer;

use std::time::{Duration, UNIX_EPOCH};

use probemesh_proto::pb;
use probemesh_proto::pb::run_request::Kind;

use crate::client::{Endpoint, Failure};

/// Unix milliseconds as an RFC 3339 UTC timestamp (seconds precision).
pub fn format_unix_ms(ms: i64) -> String {
    u64::try_from(ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map(|ms| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        })
        .unwrap_or_else(|| "-".to_owned())
}

/// Nanoseconds as milliseconds with three decimals, as ping prints RTTs.
pub fn ns_to_ms(ns: i64) -> f64 {
    // i64 nanoseconds fit f64 exactly up to ~104 days: fine for RTTs.
    #[allow(clippy::cast_precision_loss)]
    let ms = ns as f64 / 1e6;
    (ms * 1000.0).round() / 1000.0
}

/// Nanoseconds as microseconds with three decimals, as clock offsets print.
pub fn ns_to_us(ns: i64) -> f64 {
    // Offsets are far below 2^53 ns.
    #[allow(clippy::cast_precision_loss)]
    let us = ns as f64 / 1e3;
    (us * 1000.0).round() / 1000.0
}

/// The test a run request names, and what it is aimed at, for listings.
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
        None => ("unknown", String::new()),
    }
}

/// Starts a run and follows it to the end, handing each progress event to
/// `on_progress` as it arrives. Returns the acceptance (run and trace ids)
/// and the final record. Every command that runs a test goes through here.
pub async fn stream_run(
    request: pb::RunRequest,
    endpoint: &Endpoint,
    on_progress: impl FnMut(pb::TaskProgress),
) -> Result<(pb::RunAccepted, pb::RunRecord), Failure> {
    stream_run_with_steps(request, endpoint, on_progress, |_| {}).await
}

/// [`stream_run`] for runs with several phases: `on_step` sees where the
/// run is (clock, capture, checks n/m, diagnose).
pub async fn stream_run_with_steps(
    request: pb::RunRequest,
    endpoint: &Endpoint,
    mut on_progress: impl FnMut(pb::TaskProgress),
    mut on_step: impl FnMut(pb::RunStep),
) -> Result<(pb::RunAccepted, pb::RunRecord), Failure> {
    let mut control = endpoint.control().await?;
    let mut stream = control.start_run(request.clone()).await?.into_inner();
    let mut accepted = pb::RunAccepted::default();
    let mut record = None;
    while let Some(event) = stream.message().await? {
        match event.event {
            Some(pb::run_event::Event::Accepted(a)) => accepted = a,
            Some(pb::run_event::Event::Progress(p)) => on_progress(p),
            Some(pb::run_event::Event::Step(s)) => on_step(s),
            Some(pb::run_event::Event::Finished(r)) => record = Some(r),
            None => {}
        }
    }
    let record = record.unwrap_or_else(|| pb::RunRecord {
        request: Some(request),
        ..Default::default()
    });
    Ok((accepted, record))
}
