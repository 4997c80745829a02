//! Path MTU discovery, as `tracepath` does it but searched: DF ICMP echoes of
//! chosen whole-packet sizes between 68 bytes and the egress interface MTU.
//! A frag-needed is honoured when it comes (the search jumps to the MTU it
//! carries and records who sent it); when packets above some size vanish and
//! nobody says why, the result is a black hole: the largest size that got
//! through against the interface MTU.
//!
//! Map: [`search`] is the sans-IO bisection state machine; [`route`] finds
//! the egress interface in the kernel's routing table; its wire form is
//! converted by the task conversion (`convert`); [`run`] drives the search over an [`IcmpSocket`]
//! set to `IP_PMTUDISC_PROBE` (DF set, the kernel's path-MTU cache ignored,
//! so an earlier frag-needed does not hide the path).
//!
//! A size's attempts leave together, [`ATTEMPT_GAP`] apart, and share one
//! wait: a lost size (the costly answer, a black hole's) costs one timeout,
//! not one per attempt, and a single lost probe still does not decide it.
//!
//! Bounds: at most [`search::max_sizes`] sizes × `attempts` (≤ 10) probes,
//! each size waiting `timeout` (≤ 5 s) after its last attempt.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::context::Progress;
use super::error::{Error, RecvErrors, Result};
use super::resolve::{next_echo_id, resolve_ipv4};
use crate::platform::linux::{RawIcmpSocket, interface_mtu, read_route_table, route_mtu};
use crate::platform::{IcmpSocket, IcmpSocketOptions, SendFailure};
use crate::types::{EchoId, Mtu, PayloadSize, Seq};
use probemesh_packet::icmp::{
    CODE_FRAG_NEEDED, EchoResponse, TYPE_DEST_UNREACHABLE, build_echo_request, classify_echo,
};
use search::{Action, Answer, Attempts, Conclusion, MAX_MTU, PmtuSearch, Step};

pub mod route;
pub mod search;

/// IPv4 header (no options) plus ICMP echo header, bytes: a probe of whole
/// size N carries N − 28 payload bytes.
const HEADERS: u32 = 28;
/// Receive buffer: the largest IPv4 datagram.
const RECV_BUF_BYTES: usize = 65_536;
/// Gap between the attempts at one size: apart enough that a short burst
/// of loss does not take them all, close enough to share one wait.
const ATTEMPT_GAP: Duration = Duration::from_millis(2);

/// A validated path-MTU task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmtuSpec {
    /// IPv4 address or hostname, as given; resolved on the probe.
    pub target: String,
    /// Upper bound of the search (68..=65535); `None`: the egress
    /// interface's MTU. The search never goes above the interface MTU.
    pub max_mtu: Option<Mtu>,
    /// Wait per probe, 1 ms..=5 s.
    pub timeout: Duration,
    /// Probes per size before it counts as lost.
    pub attempts: Attempts,
}

/// The interface a probe leaves by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    /// Its name; empty when the routing table did not say (the MTU is then
    /// the route's).
    pub interface: String,
    /// Its MTU, bytes.
    pub mtu: Mtu,
}

/// The end result of a path-MTU task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmtuReport {
    /// The address searched.
    pub address: Ipv4Addr,
    /// Where the probes left.
    pub egress: Egress,
    /// How the search ended.
    pub conclusion: Conclusion,
    /// The last frag-needed received: its sender and MTU.
    pub frag_needed: Option<(Ipv4Addr, Option<Mtu>)>,
    /// Every decided size, in order.
    pub steps: Vec<Step>,
    /// From the first probe to the end (tokio clock).
    pub elapsed: Duration,
}

/// Runs a path-MTU task in the calling thread's network namespace: resolves
/// the target (IPv4 only), finds the egress interface and its MTU, opens a
/// raw ICMP socket (requires `CAP_NET_RAW`) and searches.
pub(crate) async fn task(
    spec: &PmtuSpec,
    progress: &Progress<Step>,
    cancel: &CancellationToken,
) -> Result<PmtuReport> {
    let total = u32::from(spec.attempts.get());
    let address = resolve_ipv4(&spec.target, total, cancel).await?;
    let egress = egress(address)?;
    let id = next_echo_id();
    let socket = RawIcmpSocket::open(&IcmpSocketOptions {
        echo_id: id,
        ttl: None,
        dont_fragment: true,
    })?;
    socket.probe_past_path_mtu_cache()?;
    run(spec, address, egress, &socket, id, progress, cancel).await
}

/// The egress interface towards `to` and its MTU, in the calling thread's
/// namespace; the route's MTU when the main table does not name one.
fn egress(to: Ipv4Addr) -> Result<Egress> {
    let table = read_route_table()?;
    if let Some(interface) = route::egress_interface(&table, to)
        && let Ok(mtu) = interface_mtu(&interface)
    {
        return Ok(Egress { interface, mtu });
    }
    let mtu = route_mtu(to).map_err(|source| Error::Socket {
        op: "getsockopt(IP_MTU) on a UDP socket connected to the target",
        source,
    })?;
    Ok(Egress {
        interface: String::new(),
        mtu,
    })
}

/// Searches the path MTU to `address` over `socket` (DF set, echoes carrying
/// `id`), reporting each decided size to `progress`. The ceiling is the
/// interface MTU, lowered to `spec.max_mtu`. Returns [`Error::Cancelled`]
/// when `cancel` fires, [`Error::Send`] when the stack refuses a probe for
/// a reason other than its size.
pub async fn run<S: IcmpSocket>(
    spec: &PmtuSpec,
    address: Ipv4Addr,
    egress: Egress,
    socket: &S,
    id: EchoId,
    progress: &Progress<Step>,
    cancel: &CancellationToken,
) -> Result<PmtuReport> {
    let start = Instant::now();
    let ceiling = spec
        .max_mtu
        .map_or(egress.mtu, |m| m.min(egress.mtu))
        .min(MAX_MTU);
    let mut search = PmtuSearch::new(ceiling, spec.attempts);
    let mut buf = vec![0u8; RECV_BUF_BYTES];
    let mut seq = 0u16;
    let conclusion = loop {
        let size = match search.action() {
            Action::Finish(conclusion) => break conclusion,
            Action::Send(size) => size,
        };
        let attempts = Attempt {
            first: Seq(seq.wrapping_add(1)),
            count: spec.attempts.get(),
        };
        seq = seq.wrapping_add(u16::from(attempts.count));
        let probes = Probes {
            sent: u32::from(seq),
            total: search::max_sizes(ceiling) * u32::from(spec.attempts.get()),
        };
        let answer = probe(
            socket,
            address,
            id,
            attempts,
            size,
            spec.timeout,
            &mut buf,
            cancel,
        )
        .await
        .map_err(|e| e.into_error(probes))?;
        // Silence is every attempt's answer; anything else decides the size.
        let answers = match answer {
            Answer::Silence => attempts.count,
            _ => 1,
        };
        for _ in 0..answers {
            if let Some(step) = search.step(answer) {
                progress.send(step, cancel).await;
                break;
            }
        }
    };
    Ok(PmtuReport {
        address,
        egress,
        conclusion,
        frag_needed: search.frag_needed(),
        steps: search.steps().to_vec(),
        elapsed: start.elapsed(),
    })
}

/// The attempts at one size: `count` echoes numbered from `first`.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    first: Seq,
    count: u8,
}

impl Attempt {
    /// The sequence numbers, in order (wrapping past 65535).
    fn seqs(self) -> impl Iterator<Item = Seq> {
        (0..u16::from(self.count)).map(move |i| Seq(self.first.0.wrapping_add(i)))
    }

    /// Whether `seq` is one of them.
    fn has(self, seq: Seq) -> bool {
        seq.0.wrapping_sub(self.first.0) < u16::from(self.count)
    }
}

/// How many probes went out, of the most the search could send: the
/// numbers of a cancelled task's error.
#[derive(Debug, Clone, Copy)]
struct Probes {
    sent: u32,
    total: u32,
}

/// Why one probe did not produce an [`Answer`].
#[derive(Debug)]
enum ProbeError {
    Cancelled,
    Failed(Error),
}

impl ProbeError {
    fn into_error(self, probes: Probes) -> Error {
        match self {
            ProbeError::Cancelled => Error::Cancelled {
                done: probes.sent,
                total: probes.total,
            },
            ProbeError::Failed(e) => e,
        }
    }
}

/// Sends the attempts' DF echoes of whole size `size`, [`ATTEMPT_GAP`]
/// apart, and waits up to `timeout` after the last for what becomes of any.
#[allow(clippy::too_many_arguments)]
async fn probe<S: IcmpSocket>(
    socket: &S,
    address: Ipv4Addr,
    id: EchoId,
    attempts: Attempt,
    size: Mtu,
    timeout: Duration,
    buf: &mut [u8],
    cancel: &CancellationToken,
) -> Result<Answer, ProbeError> {
    // Sizes stay within 68..=65535, so the payload fits; a size that did not
    // could not be sent either.
    let Some(payload) = u16::try_from(size.0.saturating_sub(HEADERS))
        .ok()
        .and_then(PayloadSize::new)
    else {
        return Ok(Answer::LocalTooBig { mtu: None });
    };
    for (i, seq) in attempts.seqs().enumerate() {
        if i > 0 {
            tokio::time::sleep(ATTEMPT_GAP).await;
        }
        let packet = build_echo_request(id, seq, payload.get());
        match socket.send_to(&packet, address).await {
            Ok(_) => {}
            Err(SendFailure::MessageTooLong { mtu }) => return Ok(Answer::LocalTooBig { mtu }),
            Err(SendFailure::Io(source)) => {
                return Err(ProbeError::Failed(Error::Send {
                    addr: address.into(),
                    source,
                }));
            }
        }
    }
    let deadline = Instant::now() + timeout;
    let mut recv_errors = RecvErrors::default();
    loop {
        let received = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(ProbeError::Cancelled),
            () = tokio::time::sleep_until(deadline) => return Ok(Answer::Silence),
            received = socket.recv(buf) => received,
        };
        match received {
            Ok(received) => {
                recv_errors.reset();
                let datagram = buf.get(..received.len).unwrap_or(buf);
                // An error about one attempt is its silence; another
                // attempt may still get through.
                if let Some(answer) = answer_to(classify_echo(datagram, id), attempts)
                    && answer != Answer::Silence
                {
                    return Ok(answer);
                }
            }
            Err(source) => {
                let source = recv_errors
                    .note(address.into(), source)
                    .map_err(ProbeError::Failed)?;
                tracing::debug!(%address, error = %source, "recvmsg on the ICMP socket failed");
            }
        }
    }
}

/// What a received datagram says about one of the `attempts`: its echo
/// reply, a frag-needed quoting it, or another ICMP error about it (which
/// counts as silence: the size did not get through, and nobody said it was
/// the size).
fn answer_to(response: Option<EchoResponse>, attempts: Attempt) -> Option<Answer> {
    match response? {
        EchoResponse::EchoReply { seq, .. } if attempts.has(seq) => Some(Answer::Reply),
        EchoResponse::Error {
            seq, from, error, ..
        } if attempts.has(seq) => Some(
            if error.icmp_type == TYPE_DEST_UNREACHABLE && error.code == CODE_FRAG_NEEDED {
                Answer::FragNeeded {
                    from,
                    mtu: error.mtu.map(|m| Mtu(u32::from(m.0))),
                }
            } else {
                Answer::Silence
            },
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempts_at_one_size_are_numbered_on_past_65535() {
        let a = Attempt {
            first: Seq(65_535),
            count: 3,
        };
        assert_eq!(a.seqs().collect::<Vec<_>>(), [Seq(65_535), Seq(0), Seq(1)]);
        assert!(a.has(Seq(65_535)) && a.has(Seq(1)));
        assert!(!a.has(Seq(2)) && !a.has(Seq(65_534)));
    }
}
