//! The probe's capture engine: the distributed tcpdump's probe side.
//!
//! A capture opens one `AF_PACKET` ring per interface with the coordinator's
//! BPF program attached in the kernel ([`crate::platform::af_packet`]), arms the
//! rings for a common instant (binding them to their interfaces just before
//! it and keeping the packets stamped from it on) and reports
//! the `CLOCK_REALTIME` instant each went live, copies packets into a pcapng
//! file ([`pcapng`]) until its duration, a limit, a stop or a cancel, and
//! reports per-interface kernel counters. It plans nothing and converts no
//! clock: the coordinator turns the instants it reports into its own time.
//!
//! Threads: [`run_capture`] blocks; run it on a dedicated thread (never a
//! tokio worker), or use [`spawn_capture`], which starts one. Sockets and
//! interface names belong to the network namespace of the thread that
//! calls either function, so to capture in a pod, call it from a thread
//! that has entered the pod's namespace (e.g. inside
//! [`crate::platform::netns::run_in`]); the spawned thread inherits it.
//!
//! Ending: `duration`, `max_packets`, `max_bytes` and [`CaptureControl::stop`]
//! end a capture normally and keep the file; [`CaptureControl::cancel`], an
//! interface that goes away and any error delete it. A file appears under
//! its final name only when complete.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use probemesh_packet::bpf;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::platform::Timestamp;
use crate::platform::af_packet::{
    self, KernelStats, PacketRing, RingConfig, interface_index, interface_names, link_layer,
    realtime_now,
};

mod arming;
pub mod block;
mod error;
pub mod pcapng;
pub mod spec;

pub use arming::{ArmSignal, Arming, Told};
pub use error::CaptureError;
pub use pcapng::Artifact;
pub use spec::{CaptureLimits, CaptureSpec, SpecError};

use block::parse_block;
use pcapng::{InterfaceInfo, InterfaceTotals, PcapngFile, SectionInfo};

/// Longest single wait in the capture loop, so stop and cancel are seen
/// within this: a diagnosis stops its captures once its checks are done
/// and waits for the files, so the stop's delay is on its critical path
/// (a hundred wake-ups a second cost the capture thread nothing measurable).
const MAX_WAIT: Duration = Duration::from_millis(10);
/// After the end is decided, how long to keep reading so that packets
/// already in a not-yet-retired block reach the file (block timeout + margin).
const FINAL_DRAIN: Duration = Duration::from_millis(25);
/// When arming at an instant, the rings are bound this long before it and
/// only packets stamped from the instant on are kept: a wake-up or a bind
/// (it takes the kernel's RTNL lock, which other work can hold for
/// milliseconds) up to this late still starts the capture at the instant
/// exactly. Short enough that the ring (100 ms at the expected rate) does
/// not fill with packets from before it.
const BIND_AHEAD: Duration = Duration::from_millis(20);
/// After a socket error, how often and how many times to look whether its
/// interface was deleted (rather than taken down).
const GONE_CHECK_EVERY: Duration = Duration::from_millis(10);
/// Looks of [`GONE_CHECK_EVERY`] before calling it "went down" (200 ms).
const GONE_CHECKS: u32 = 20;
/// Shortest interval between progress events.
const MIN_PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Everything a capture needs besides its controls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRequest {
    /// What to capture.
    pub spec: CaptureSpec,
    /// When to arm the rings.
    pub arming: Arming,
    /// This probe's name: interfaces appear as `PROBE/IFACE` in the file.
    pub probe: String,
    /// The run the capture belongs to, written in the file's comment.
    pub run: String,
    /// The probe's clock against the coordinator's, as the caller states it
    /// (written in the file's comment; empty when unknown); with
    /// [`Arming::WhenTold`], the one told with the instant is written.
    pub clock: String,
    /// The final path of the pcapng file; its directory must exist.
    pub output: PathBuf,
    /// How often [`CaptureEvent::Progress`] is reported (at least every
    /// 100 ms).
    pub progress_every: Duration,
}

/// How the caller steers a running capture: arms it, ends it early.
#[derive(Debug, Clone, Default)]
pub struct CaptureControl {
    /// End now and keep what was captured ([`StopReason::Stopped`]).
    pub stop: CancellationToken,
    /// Abandon: delete the file and return [`CaptureError::Cancelled`].
    pub cancel: CancellationToken,
    /// The instant, for a capture that waits to be told it
    /// ([`Arming::WhenTold`]).
    pub arm: ArmSignal,
}

/// What a running capture reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureEvent {
    /// Set up and waiting for its instant ([`Arming::WhenTold`] only),
    /// before [`CaptureEvent::Armed`].
    Ready {
        /// How long getting ready took (interfaces resolved, rings opened
        /// and mapped, filters attached).
        ready_in: Duration,
    },
    /// Every ring is live, once per capture.
    Armed {
        /// Each interface's instant, in the order of the spec.
        interfaces: Vec<ArmedInterface>,
        /// How long getting ready to arm took (interfaces resolved, rings
        /// opened and mapped, filters attached, file created): what the
        /// coordinator leaves before the next arming instant.
        ready_in: Duration,
        /// How long before the arming instant it was ready, nanoseconds;
        /// negative: ready only after it (the set-up, or an instant told
        /// late, not the wake-up, made it late). `None` when it armed at
        /// once.
        ready_margin_ns: Option<i64>,
    },
    /// Running totals, every `progress_every`.
    Progress(CaptureProgress),
}

/// The instant one interface's ring went live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmedInterface {
    /// Interface name in its namespace.
    pub interface: String,
    /// `CLOCK_REALTIME` from which its packets are kept: the arming
    /// instant, or right after the bind when that came later (or when
    /// arming at once).
    pub armed_at: Timestamp,
}

/// Running totals over all interfaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureProgress {
    /// Packets written.
    pub packets: u64,
    /// Bytes in the file.
    pub bytes: u64,
    /// Packets the kernel dropped because a ring was full.
    pub drops: u64,
}

/// Why a capture ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Its duration ran out.
    Duration,
    /// It wrote `max_packets` packets.
    PacketLimit(u64),
    /// The next packet would have made the file larger than `max_bytes`.
    ByteLimit(u64),
    /// The caller stopped it ([`CaptureControl::stop`]).
    Stopped,
}

/// One interface's share of a finished capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceReport {
    /// Interface name in its namespace.
    pub interface: String,
    /// When its ring went live (`CLOCK_REALTIME`).
    pub armed_at: Timestamp,
    /// Packets written to the file from it.
    pub packets: u64,
    /// The kernel's counters for its socket.
    pub kernel: KernelStats,
}

/// A finished capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureOutcome {
    /// The file.
    pub artifact: Artifact,
    /// Why it ended.
    pub stop: StopReason,
    /// Per interface, in the order of the spec.
    pub interfaces: Vec<InterfaceReport>,
    /// When it ended (`CLOCK_REALTIME`).
    pub ended_at: Timestamp,
}

impl CaptureOutcome {
    /// Packets written over all interfaces.
    pub fn packets(&self) -> u64 {
        self.interfaces.iter().map(|i| i.packets).sum()
    }

    /// Kernel drops over all interfaces.
    pub fn drops(&self) -> u64 {
        self.interfaces.iter().map(|i| i.kernel.drops).sum()
    }
}

/// A capture running on its own thread; see [`spawn_capture`].
#[derive(Debug)]
pub struct CaptureHandle {
    events: mpsc::UnboundedReceiver<CaptureEvent>,
    done: oneshot::Receiver<Result<CaptureOutcome, CaptureError>>,
}

impl CaptureHandle {
    /// The next event; `None` once the capture has ended.
    pub async fn next_event(&mut self) -> Option<CaptureEvent> {
        self.events.recv().await
    }

    /// Waits for the end of the capture.
    pub async fn outcome(self) -> Result<CaptureOutcome, CaptureError> {
        self.done.await.unwrap_or(Err(CaptureError::Lost))
    }
}

/// Starts [`run_capture`] on a new thread, which inherits the calling
/// thread's network namespace. Events arrive on the handle until the end.
pub fn spawn_capture(
    request: CaptureRequest,
    control: CaptureControl,
) -> Result<CaptureHandle, CaptureError> {
    let (events_tx, events) = mpsc::unbounded_channel();
    let (done_tx, done) = oneshot::channel();
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            let result = run_capture(&request, &control, &mut |event| {
                // A caller that stopped listening still gets the outcome.
                let _ = events_tx.send(event);
            });
            drop(events_tx);
            let _ = done_tx.send(result);
        })
        .map_err(CaptureError::Thread)?;
    Ok(CaptureHandle { events, done })
}

/// One interface being captured.
#[derive(Debug)]
struct Tap {
    name: String,
    ifindex: u32,
    link: bpf::LinkLayer,
    armed_at: Timestamp,
    written: u64,
}

/// Where the capture loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Copying packets until an end is decided.
    Running,
    /// The end is decided: keep reading packets stamped up to `cutoff`
    /// until `until`, then finish with `reason`.
    Draining {
        /// Why the capture ends.
        reason: StopReason,
        /// Packets stamped later are not written.
        cutoff: Timestamp,
        /// When to stop reading.
        until: Instant,
    },
}

/// Runs one capture on the calling thread, in its network namespace, and
/// blocks until it ends; `on_event` hears [`CaptureEvent`]s. Requires
/// `CAP_NET_RAW`. Lowers the calling thread's timer slack when arming at
/// an instant, and runs it real-time (`CAP_SYS_NICE`, else as it is) from
/// the set-up to the binds.
pub fn run_capture(
    request: &CaptureRequest,
    control: &CaptureControl,
    on_event: &mut dyn FnMut(CaptureEvent),
) -> Result<CaptureOutcome, CaptureError> {
    let spec = &request.spec;
    spec.validate()?;
    if let Arming::At(at) = request.arming {
        check_ahead(at)?;
    }
    // Real-time from the set-up through the wait and the binds when arming
    // at an instant, so none of them waits for a busy core (setting a ring
    // up sleeps for an RCU grace period, and its wake-up comes at once);
    // ordinary again before the first packet is copied.
    let realtime = (request.arming != Arming::Now).then(|| {
        af_packet::RealtimeGuard::raise()
            .inspect_err(|error| {
                tracing::debug!(%error, "cannot arm as a real-time thread; a busy core may delay arming");
            })
            .ok()
    }).flatten();
    let opening = Instant::now();
    let (mut rings, mut taps) = open_rings(spec)?;
    let interfaces: Vec<InterfaceInfo> = taps
        .iter()
        .map(|tap| InterfaceInfo {
            name: format!("{}/{}", request.probe, tap.name),
            link: tap.link,
            snaplen: spec.snaplen,
        })
        .collect();
    let (arm_at, clock, told_in) = match request.arming {
        Arming::Now => (None, request.clock.clone(), None),
        Arming::At(at) => (Some(at), request.clock.clone(), None),
        Arming::WhenTold => {
            let ready_in = opening.elapsed();
            on_event(CaptureEvent::Ready { ready_in });
            let told = control.arm.wait(control)?;
            check_ahead(told.at)?;
            (Some(told.at), told.clock, Some(ready_in))
        }
    };
    let section = SectionInfo {
        probe: request.probe.clone(),
        run: request.run.clone(),
        clock,
        filter: spec.filter.expr.clone(),
        snaplen: spec.snaplen,
    };
    let output_error = |source| CaptureError::Output {
        path: request.output.clone(),
        source,
    };
    let mut file =
        PcapngFile::create(&request.output, &section, &interfaces).map_err(output_error)?;
    let ready_in = told_in.unwrap_or_else(|| opening.elapsed());

    let ready_margin_ns = match arm_at {
        Some(at) => {
            let margin = at.as_nanos().saturating_sub(now()?.as_nanos());
            if margin < 0 {
                tracing::warn!(
                    late_us = margin.saturating_neg() / 1_000,
                    ready_ms = ready_in.as_millis(),
                    "capture ready after its arming instant: it arms late, and the run's capture skew shows it"
                );
            }
            let ahead = i64::try_from(BIND_AHEAD.as_nanos()).unwrap_or(i64::MAX);
            wait_until(
                Timestamp::from_nanos(at.as_nanos().saturating_sub(ahead)),
                control,
            )?;
            Some(margin)
        }
        None => None,
    };
    for (ring, tap) in rings.iter_mut().zip(&mut taps) {
        tap.armed_at = ring
            .bind(tap.ifindex)
            .map_err(|source| CaptureError::Open {
                interface: tap.name.clone(),
                op: "binding the ring to the interface",
                source,
            })?;
    }
    if let Some(at) = arm_at {
        wait_until(at, control)?;
        // Live from the instant: packets stamped before it are skipped
        // (a ring bound only after it is live from its bind).
        for tap in &mut taps {
            tap.armed_at = tap.armed_at.max(at);
        }
    }
    drop(realtime);
    let started = Instant::now();
    on_event(CaptureEvent::Armed {
        interfaces: taps
            .iter()
            .map(|t| ArmedInterface {
                interface: t.name.clone(),
                armed_at: t.armed_at,
            })
            .collect(),
        ready_in,
        ready_margin_ns,
    });

    let limits = spec.limits;
    let deadline = started + limits.duration;
    let progress_every = request.progress_every.max(MIN_PROGRESS_EVERY);
    let mut next_progress = started + progress_every;
    let mut phase = Phase::Running;
    let reason = loop {
        let written: u64 = taps.iter().map(|t| t.written).sum();
        if control.cancel.is_cancelled() {
            return Err(CaptureError::Cancelled { packets: written });
        }
        let clock = Instant::now();
        match phase {
            Phase::Running if control.stop.is_cancelled() || clock >= deadline => {
                phase = Phase::Draining {
                    reason: if clock >= deadline {
                        StopReason::Duration
                    } else {
                        StopReason::Stopped
                    },
                    cutoff: now()?,
                    until: clock + FINAL_DRAIN,
                };
            }
            Phase::Draining { reason, until, .. } if clock >= until => break reason,
            _ => {}
        }
        let cutoff = match phase {
            Phase::Running => None,
            Phase::Draining { cutoff, .. } => Some(cutoff),
        };
        if let Some(limit) = copy_ready(
            &mut rings,
            &mut taps,
            &mut file,
            &limits,
            (arm_at, cutoff),
            &request.output,
        )? {
            break limit;
        }
        if clock >= next_progress {
            next_progress = clock + progress_every;
            on_event(CaptureEvent::Progress(progress(&mut rings, &taps, &file)?));
        }
        let horizon = match phase {
            Phase::Running => deadline.min(next_progress),
            Phase::Draining { until, .. } => until,
        };
        let wait = horizon
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), MAX_WAIT);
        let readiness = PacketRing::poll(&rings, wait)
            .map_err(|source| CaptureError::System { op: "poll", source })?;
        for ((ring, tap), ready) in rings.iter().zip(&taps).zip(readiness) {
            if ready.error {
                check_interface(ring, tap, taps.iter().map(|t| t.written).sum())?;
            }
        }
    };

    let ended_at = now()?;
    let mut totals = Vec::with_capacity(taps.len());
    for (ring, tap) in rings.iter_mut().zip(&taps) {
        let kernel = ring.stats().map_err(|source| CaptureError::System {
            op: "reading PACKET_STATISTICS",
            source,
        })?;
        totals.push(InterfaceTotals {
            start: tap.armed_at,
            end: ended_at,
            kernel,
            written: tap.written,
        });
    }
    close_in_background(rings);
    let artifact = file.finish(&totals).map_err(output_error)?;
    Ok(CaptureOutcome {
        artifact,
        stop: reason,
        interfaces: taps
            .into_iter()
            .zip(totals)
            .map(|(tap, t)| InterfaceReport {
                interface: tap.name,
                armed_at: tap.armed_at,
                packets: tap.written,
                kernel: t.kernel,
            })
            .collect(),
        ended_at,
    })
}

/// Resolves every interface and opens its (unbound) ring with the program
/// for its link layer, lowered to the snap length.
fn open_rings(spec: &CaptureSpec) -> Result<(Vec<PacketRing>, Vec<Tap>), CaptureError> {
    let ring_config = RingConfig::sized_for(spec.snaplen, spec.interfaces.len());
    let open = |name: &String| open_ring(spec, name, ring_config);
    // A ring's set-up sleeps for an RCU grace period (`synchronize_net`):
    // side by side the rings share their waits instead of adding them up
    // (threads inherit this thread's network namespace).
    let opened: Vec<Result<(PacketRing, Tap), CaptureError>> = if spec.interfaces.len() > 1 {
        std::thread::scope(|scope| {
            let pending: Vec<_> = spec
                .interfaces
                .iter()
                .map(|name| {
                    std::thread::Builder::new()
                        .name("capture-open".into())
                        .spawn_scoped(scope, move || open(name))
                        .map_err(|_| name)
                })
                .collect();
            pending
                .into_iter()
                .map(|p| match p {
                    Ok(handle) => handle.join().unwrap_or(Err(CaptureError::Lost)),
                    Err(name) => open(name),
                })
                .collect()
        })
    } else {
        spec.interfaces.iter().map(open).collect()
    };
    let mut rings = Vec::new();
    let mut taps = Vec::new();
    for result in opened {
        let (ring, tap) = result?;
        rings.push(ring);
        taps.push(tap);
    }
    Ok((rings, taps))
}

/// Resolves interface `name` and opens its (unbound) ring.
fn open_ring(
    spec: &CaptureSpec,
    name: &str,
    ring_config: RingConfig,
) -> Result<(PacketRing, Tap), CaptureError> {
    let ifindex = interface_index(name).ok_or_else(|| CaptureError::UnknownInterface {
        interface: name.to_owned(),
        available: interface_names().unwrap_or_default(),
    })?;
    let open_error = |op, source| CaptureError::Open {
        interface: name.to_owned(),
        op,
        source,
    };
    let link = link_layer(name)
        .map_err(|e| open_error("reading its link type", e))?
        .map_err(|arphrd| CaptureError::UnsupportedLink {
            interface: name.to_owned(),
            arphrd,
        })?;
    let mut program = spec.filter.program(link).to_vec();
    if program.is_empty() {
        return Err(CaptureError::MissingProgram {
            interface: name.to_owned(),
        });
    }
    bpf::clamp_snaplen(&mut program, spec.snaplen);
    let ring =
        PacketRing::open(&program, ring_config).map_err(|e| open_error("opening the ring", e))?;
    let tap = Tap {
        name: name.to_owned(),
        ifindex,
        link,
        armed_at: Timestamp::from_nanos(0),
        written: 0,
    };
    Ok((ring, tap))
}

/// Closes `rings` on a thread of their own: closing a packet socket with a
/// ring waits for two RCU grace periods (tens of milliseconds on a loaded
/// machine), which the file and the caller waiting for it need not wait
/// for. If no thread can be started, the refused closure drops them here.
fn close_in_background(rings: Vec<PacketRing>) {
    let spawned = std::thread::Builder::new()
        .name("capture-close".into())
        .spawn(move || drop(rings));
    if let Err(error) = spawned {
        tracing::debug!(%error, "closed the capture rings inline");
    }
}

/// Copies every block the kernel has handed over into the file, within
/// the limits; returns the limit reached, if any. Packets stamped before
/// `from` or after `cutoff` are skipped.
fn copy_ready(
    rings: &mut [PacketRing],
    taps: &mut [Tap],
    file: &mut PcapngFile,
    limits: &CaptureLimits,
    (from, cutoff): (Option<Timestamp>, Option<Timestamp>),
    output: &std::path::Path,
) -> Result<Option<StopReason>, CaptureError> {
    let mut written: u64 = taps.iter().map(|t| t.written).sum();
    for (id, (ring, tap)) in (0u32..).zip(rings.iter_mut().zip(taps.iter_mut())) {
        while let Some(block) = ring.next_block() {
            let packets = match parse_block(block.bytes()) {
                Ok(packets) => packets,
                Err(error) => {
                    tracing::warn!(interface = %tap.name, %error, "skipping a malformed ring block");
                    continue;
                }
            };
            for packet in packets {
                let packet = match packet {
                    Ok(packet) => packet,
                    Err(error) => {
                        tracing::warn!(interface = %tap.name, %error, "skipping the rest of a malformed ring block");
                        break;
                    }
                };
                if from.is_some_and(|f| packet.timestamp < f)
                    || cutoff.is_some_and(|c| packet.timestamp > c)
                {
                    continue;
                }
                if file.bytes_written() + PcapngFile::packet_size(packet.data.len())
                    > limits.max_bytes
                {
                    return Ok(Some(StopReason::ByteLimit(limits.max_bytes)));
                }
                file.write_packet(id, &packet)
                    .map_err(|source| CaptureError::Output {
                        path: output.to_path_buf(),
                        source,
                    })?;
                tap.written += 1;
                written += 1;
                if written >= limits.max_packets {
                    return Ok(Some(StopReason::PacketLimit(limits.max_packets)));
                }
            }
        }
    }
    Ok(None)
}

/// Totals for a progress event.
fn progress(
    rings: &mut [PacketRing],
    taps: &[Tap],
    file: &PcapngFile,
) -> Result<CaptureProgress, CaptureError> {
    let mut drops = 0;
    for ring in rings {
        drops += ring
            .stats()
            .map_err(|source| CaptureError::System {
                op: "reading PACKET_STATISTICS",
                source,
            })?
            .drops;
    }
    Ok(CaptureProgress {
        packets: taps.iter().map(|t| t.written).sum(),
        bytes: file.bytes_written(),
        drops,
    })
}

/// Turns a socket error into [`CaptureError::InterfaceGone`], telling a
/// deleted interface from one that went down.
fn check_interface(ring: &PacketRing, tap: &Tap, packets: u64) -> Result<(), CaptureError> {
    let error = ring.take_error().map_err(|source| CaptureError::System {
        op: "reading SO_ERROR",
        source,
    })?;
    let Some(source) = error else {
        return Ok(());
    };
    // A deletion first takes the link down (the error we saw), then
    // unregisters it: give the name a moment to disappear.
    let deleted = (0..GONE_CHECKS).any(|_| {
        let gone = interface_index(&tap.name) != Some(tap.ifindex);
        if !gone {
            std::thread::sleep(GONE_CHECK_EVERY);
        }
        gone
    });
    Err(CaptureError::InterfaceGone {
        interface: tap.name.clone(),
        what: if deleted { "was deleted" } else { "went down" },
        source,
        packets,
    })
}

/// Sleeps (absolute `CLOCK_REALTIME` sleeps, 1 ns timer slack) until
/// `CLOCK_REALTIME` reaches `wake`; returns early with
/// [`CaptureError::Cancelled`] on a cancel.
fn wait_until(wake: Timestamp, control: &CaptureControl) -> Result<(), CaptureError> {
    if let Err(error) = af_packet::set_timer_slack(1) {
        tracing::debug!(%error, "cannot lower the timer slack; arming may land late");
    }
    loop {
        if control.cancel.is_cancelled() {
            return Err(CaptureError::Cancelled { packets: 0 });
        }
        let now = now()?;
        if now >= wake {
            break;
        }
        let step = i64::try_from(MAX_WAIT.as_nanos()).unwrap_or(i64::MAX);
        let until = Timestamp::from_nanos(wake.as_nanos().min(now.as_nanos().saturating_add(step)));
        af_packet::sleep_until(until).map_err(|source| CaptureError::System {
            op: "clock_nanosleep",
            source,
        })?;
    }
    Ok(())
}

/// Refuses an arming instant more than [`spec::MAX_ARM_AHEAD`] ahead.
fn check_ahead(at: Timestamp) -> Result<(), CaptureError> {
    let ahead = at.saturating_duration_since(now()?);
    if ahead > spec::MAX_ARM_AHEAD {
        return Err(SpecError::ArmTooFar(ahead).into());
    }
    Ok(())
}

fn now() -> Result<Timestamp, CaptureError> {
    realtime_now().map_err(|source| CaptureError::System {
        op: "reading CLOCK_REALTIME",
        source,
    })
}
