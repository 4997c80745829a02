//! Runs one task in the calling thread's network namespace: the wire task
//! becomes a spec (the `convert` module), the engine runs with its events
//! forwarded to the link as `pb::TaskProgress`, and its report becomes the
//! `pb::TaskResult`. The one place where engines and the wire meet; it
//! knows nothing of namespaces (the `netns` module calls it inside one).

use std::net::SocketAddr;

use probemesh_proto::pb;
use probemesh_proto::pb::task_result::Outcome;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::context::{Progress, TaskContext};
use super::convert::WireProgress;
use super::error::Result;
use super::ping::PingEvent;
use super::resolve::{Family, next_echo_id, resolve, resolve_ipv4};
use super::spec::TaskSpec;
use super::tcping::TcpingAttempt;
use super::types::{PingSpec, TcpingSpec};
use super::udp_echo::EchoEvent;
use super::{capture, convert, dns, facts, listener, ping, pmtu, responder, tcping, trace};
use super::{transfer, udp_echo};
use crate::platform::IcmpSocketOptions;
use crate::platform::linux::PolledIcmpSocket;

/// The body of `run_task`, in the calling thread's network namespace.
pub(super) async fn run_here(
    context: TaskContext,
    task: pb::Task,
    progress: mpsc::Sender<pb::TaskProgress>,
    cancel: CancellationToken,
) -> pb::TaskResult {
    let task_id = task.task_id.clone();
    let outcome = match TaskSpec::try_from(task) {
        Err(invalid) => {
            tracing::info!(%task_id, error = %invalid, "task rejected");
            Outcome::Error((&invalid).into())
        }
        Ok(spec) => {
            let wire = WireProgress {
                task_id: task_id.clone(),
                link: progress,
                cancel: cancel.clone(),
            };
            match execute(&spec, &context, &wire, &cancel).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    tracing::info!(%task_id, %error, "task failed");
                    Outcome::Error((&error).into())
                }
            }
        }
    };
    pb::TaskResult {
        task_id,
        outcome: Some(outcome),
    }
}

async fn execute(
    spec: &TaskSpec,
    context: &TaskContext,
    wire: &WireProgress,
    cancel: &CancellationToken,
) -> Result<Outcome> {
    match spec {
        TaskSpec::Ping(spec) => {
            let run = |p| ping_task(spec, p, cancel);
            wire.run_delivered(spec.delivery, run).await
        }
        TaskSpec::Tcping(spec) => wire.run(|p| tcping_task(spec, p, cancel)).await,
        TaskSpec::TcpTransfer(spec) => transfer_task(spec, cancel).await,
        TaskSpec::UdpEcho(spec) => wire.run(|p| udp_echo_task(spec, p, cancel)).await,
        TaskSpec::Dns(spec) => dns_task(spec, cancel).await,
        TaskSpec::Listener(spec) => {
            let listeners = listener::run(spec)?;
            Ok(Outcome::Listener(convert::listener_result(&listeners)))
        }
        TaskSpec::NodeFacts(spec) => {
            let facts = facts::run(spec, &context.stop, cancel).await?;
            Ok(Outcome::NodeFacts(convert::node_facts(&facts)))
        }
        TaskSpec::Responder(spec) => {
            let run = |p| async move { responder::run(spec, &p, cancel).await };
            let summary = wire.run(run).await?;
            Ok(Outcome::Responder(convert::responder_summary(&summary)))
        }
        TaskSpec::Pmtu(spec) => {
            let run = |p| async move { pmtu::task(spec, &p, cancel).await };
            let report = wire.run(run).await?;
            Ok(Outcome::Pmtu(convert::pmtu_result(spec, &report)))
        }
        TaskSpec::Trace(spec) => {
            let run = |p| async move { trace::task(spec, &p, cancel).await };
            let report = wire.run(run).await?;
            Ok(Outcome::Trace(convert::trace_result(spec, &report)))
        }
        TaskSpec::Capture(spec) => {
            let run = |p| async move { capture::task(spec, context, &p, cancel).await };
            let (outcome, streamed) = wire.run(run).await?;
            Ok(Outcome::Capture(convert::capture_result(
                spec, &outcome, &streamed,
            )))
        }
    }
}

async fn ping_task(
    spec: &PingSpec,
    events: Option<mpsc::Sender<Vec<PingEvent>>>,
    cancel: &CancellationToken,
) -> Result<Outcome> {
    let total = u32::from(spec.count.get());
    let address = resolve_ipv4(&spec.target, total, cancel).await?;
    let options = IcmpSocketOptions {
        echo_id: next_echo_id(),
        ttl: spec.ttl,
        dont_fragment: spec.dont_fragment,
    };
    let socket = PolledIcmpSocket::open(&options)?;
    let summary = ping::run(spec, address, socket, options.echo_id, events, cancel).await?;
    Ok(Outcome::Ping(convert::ping_summary(spec, &summary)))
}

async fn tcping_task(
    spec: &TcpingSpec,
    progress: Progress<TcpingAttempt>,
    cancel: &CancellationToken,
) -> Result<Outcome> {
    let total = u32::from(spec.count.get());
    let ip = resolve(&spec.host, Family::Any, total, cancel).await?;
    let summary = tcping::run(spec, SocketAddr::new(ip, spec.port), &progress, cancel).await?;
    Ok(Outcome::Tcping(convert::tcping_summary(spec, &summary)))
}

async fn transfer_task(
    spec: &transfer::TcpTransferSpec,
    cancel: &CancellationToken,
) -> Result<Outcome> {
    let ip = resolve(&spec.host, Family::Any, 1, cancel).await?;
    let report = transfer::run(spec, SocketAddr::new(ip, spec.port), cancel).await?;
    Ok(Outcome::TcpTransfer(convert::tcp_transfer_result(&report)))
}

async fn udp_echo_task(
    spec: &udp_echo::UdpEchoSpec,
    progress: Progress<EchoEvent>,
    cancel: &CancellationToken,
) -> Result<Outcome> {
    let total = u32::from(spec.count.get());
    let ip = resolve(&spec.host, Family::Ipv4, total, cancel).await?;
    let summary = udp_echo::run(spec, SocketAddr::new(ip, spec.port), &progress, cancel).await?;
    Ok(Outcome::UdpEcho(convert::udp_echo_summary(spec, &summary)))
}

/// Resolves with the resolv.conf of the namespace this thread is in (see
/// [`dns::resolv_conf_candidates`]) unless the spec names one.
async fn dns_task(spec: &dns::DnsSpec, cancel: &CancellationToken) -> Result<Outcome> {
    let mut spec = spec.clone();
    if spec.resolv_conf_paths.is_empty() {
        spec.resolv_conf_paths = dns::resolv_conf_candidates();
    }
    let report = dns::run(&spec, cancel).await?;
    Ok(Outcome::Dns(convert::dns_result(&report)))
}
