//! The probe's task engine: runs the tests the coordinator hands down the
//! probe link (ICMP ping as `ping`, TCP connects as `paping`), reports each
//! probe as it happens, and returns a summary. It decides nothing about what
//! the results mean; that is the coordinator's job.
//!
//! Map: [`convert`] is the protobuf conversion (validation into [`types`], results
//! back to `pb`); [`stats`] is sans-IO, and ICMP bytes are built and read by
//! `probemesh_packet::icmp`; [`ping`] (a
//! sans-IO session plus its driver) and [`tcping`] are the engines; the raw
//! socket sits behind [`crate::platform::IcmpSocket`]. [`transfer`] (TCP
//! push watched through `TCP_INFO`), [`udp_echo`] and [`responder`] (the far
//! end they test against) form the transfer family; [`netns`] runs any task
//! inside another network namespace on a thread of its own. [`capture`]
//! runs the capture engine ([`crate::capture`]) and streams its file back.
//!
//! Cancellation: when the token fires, a task stops at once and returns a
//! `TaskError` of kind `KIND_CANCELLED` saying how many probes had gone out;
//! the progress events already sent are the partial record.

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use probemesh_proto::pb;
use probemesh_proto::pb::task_result::Outcome;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::platform::IcmpSocketOptions;
use crate::platform::linux::RawIcmpSocket;
use crate::types::EchoId;
use convert::Progress;
use types::{PingSpec, TaskSpec, TcpingSpec};

pub mod capture;
pub mod convert;
pub mod dns;
pub mod error;
pub mod facts;
pub mod listener;
pub mod netns;
pub mod ping;
pub mod pmtu;
pub mod responder;
pub mod stats;
pub mod tcping;
pub mod trace;
pub mod transfer;
pub mod types;
pub mod udp_echo;

pub use error::{Error, Result};

/// How long a hostname may take to resolve on the probe.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a task may know about the probe that runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskContext {
    /// The probe's name (`--name`); empty when unknown. Captures name their
    /// interfaces `PROBE/IFACE` and their file `PROBE.pcapng` after it.
    pub probe_name: String,
    /// Fired by the coordinator's `StopTask`: a capture ends early but
    /// normally and still streams its file; other tasks ignore it.
    pub stop: CancellationToken,
}

/// Task kinds this probe runs, as announced in its `Hello`.
pub fn capabilities() -> Vec<String> {
    let mut kinds = vec!["ping".to_owned(), "tcping".to_owned()];
    kinds.extend(["tcp_transfer", "udp_echo", "responder"].map(str::to_owned));
    kinds.extend(["dns", "listener", "node_facts"].map(str::to_owned));
    kinds.extend(["pmtu", "trace", "capture"].map(str::to_owned));
    kinds
}

/// Runs one task to the end: validates it (bad input gives a
/// `KIND_INVALID_INPUT` error naming the field and its allowed range),
/// resolves the target on this host, sends one `TaskProgress` per echo or
/// connect attempt as it is known, and returns the summary, or a `TaskError`
/// (`KIND_PROBE_FAILURE` when this host cannot do the work, e.g. no
/// `CAP_NET_RAW` for ping; `KIND_CANCELLED` when `cancel` fires). Never
/// panics on any input; runs at most about `count × interval + timeout`
/// (each at most 10 000 × 60 s + 60 s) plus [`RESOLVE_TIMEOUT`]; a capture
/// runs its duration (≤ 10 min) after its arming instant (≤ 60 s ahead),
/// then streams its file.
///
/// When `task.netns` names another network namespace the whole task runs
/// on a dedicated thread inside it (see [`netns`]; a missing namespace is
/// `KIND_INVALID_INPUT`); the rest of the probe never sees the namespace.
pub async fn run_task(
    task: pb::Task,
    progress: mpsc::Sender<pb::TaskProgress>,
    cancel: CancellationToken,
) -> pb::TaskResult {
    run_task_with(TaskContext::default(), task, progress, cancel).await
}

/// [`run_task`] for a probe that knows more about itself (its name).
pub async fn run_task_with(
    context: TaskContext,
    mut task: pb::Task,
    progress: mpsc::Sender<pb::TaskProgress>,
    cancel: CancellationToken,
) -> pb::TaskResult {
    match task.netns.take() {
        Some(ns) => netns::run_in_netns(ns, context, task, progress, cancel).await,
        None => run_here(context, task, progress, cancel).await,
    }
}

/// The body of [`run_task`], in the calling thread's network namespace.
async fn run_here(
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
            let progress = Progress::new(task_id.clone(), progress);
            match execute(&spec, &context, &progress, &cancel).await {
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
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Outcome> {
    match spec {
        TaskSpec::Ping(spec) => ping_task(spec, progress, cancel).await,
        TaskSpec::Tcping(spec) => tcping_task(spec, progress, cancel).await,
        TaskSpec::TcpTransfer(spec) => transfer_task(spec, cancel).await,
        TaskSpec::UdpEcho(spec) => udp_echo_task(spec, progress, cancel).await,
        TaskSpec::Dns(spec) => dns_task(spec, cancel).await,
        TaskSpec::Listener(spec) => {
            let listeners = listener::run(spec)?;
            Ok(Outcome::Listener(convert::listener_result(&listeners)))
        }
        TaskSpec::NodeFacts(spec) => {
            let facts = facts::run(spec, cancel).await?;
            Ok(Outcome::NodeFacts(convert::node_facts(&facts)))
        }
        TaskSpec::Responder(spec) => {
            let summary = responder::run(spec, progress, cancel).await?;
            Ok(Outcome::Responder(convert::responder_summary(&summary)))
        }
        TaskSpec::Pmtu(spec) => pmtu::task(spec, progress, cancel).await,
        TaskSpec::Trace(spec) => trace::task(spec, progress, cancel).await,
        TaskSpec::Capture(spec) => capture::task(spec, context, progress, cancel).await,
    }
}

async fn ping_task(
    spec: &PingSpec,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Outcome> {
    let total = u32::from(spec.count.get());
    let address = match resolve(&spec.target, Family::Ipv4, total, cancel).await? {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => {
            return Err(Error::NoAddress {
                host: spec.target.clone(),
                family: "IPv4",
            });
        }
    };
    let options = IcmpSocketOptions {
        echo_id: next_echo_id(),
        ttl: spec.ttl,
        dont_fragment: spec.dont_fragment,
    };
    let socket = RawIcmpSocket::open(&options)?;
    let summary = ping::run(spec, address, &socket, options.echo_id, progress, cancel).await?;
    Ok(Outcome::Ping(convert::ping_summary(spec, &summary)))
}

async fn tcping_task(
    spec: &TcpingSpec,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Outcome> {
    let total = u32::from(spec.count.get());
    let ip = resolve(&spec.host, Family::Any, total, cancel).await?;
    let summary = tcping::run(spec, SocketAddr::new(ip, spec.port), progress, cancel).await?;
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
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Outcome> {
    let total = u32::from(spec.count.get());
    let ip = resolve(&spec.host, Family::Ipv4, total, cancel).await?;
    let summary = udp_echo::run(spec, SocketAddr::new(ip, spec.port), progress, cancel).await?;
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

/// Which addresses a task can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Ipv4,
    Any,
}

/// Resolves `host` (an IP literal or a name) on this host, within
/// [`RESOLVE_TIMEOUT`]; the first address of the wanted family wins.
async fn resolve(
    host: &str,
    family: Family,
    total: u32,
    cancel: &CancellationToken,
) -> Result<IpAddr> {
    if let Some(ip) = convert::parse_ip(host) {
        return Ok(ip);
    }
    let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 0)));
    let answer = tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(Error::Cancelled { done: 0, total }),
        answer = lookup => answer,
    };
    let addresses = match answer {
        Err(_elapsed) => {
            return Err(Error::ResolveTimeout {
                host: host.to_owned(),
                timeout: RESOLVE_TIMEOUT,
            });
        }
        Ok(Err(source)) => {
            return Err(Error::Resolve {
                host: host.to_owned(),
                source,
            });
        }
        Ok(Ok(addresses)) => addresses,
    };
    let wanted = |ip: &IpAddr| family == Family::Any || ip.is_ipv4();
    addresses
        .map(|a| a.ip())
        .find(wanted)
        .ok_or_else(|| Error::NoAddress {
            host: host.to_owned(),
            family: match family {
                Family::Ipv4 => "IPv4",
                Family::Any => "IP",
            },
        })
}

/// A fresh echo identifier: a random per-process base plus a counter, so
/// concurrent tasks of this probe never share one (each has its own raw
/// socket and filters on its identifier).
fn next_echo_id() -> EchoId {
    static BASE: LazyLock<u16> = LazyLock::new(rand::random);
    static NEXT: AtomicU16 = AtomicU16::new(0);
    EchoId(BASE.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)))
}

#[cfg(test)]
mod tests;
