//! `scale`: the scale benchmark's client. Attaches N simulated probes
//! ([`probemesh_tests::sim`]) to running coordinators, from holder
//! processes of at most 8,000 probes each (itself, re-run with
//! `--hold-from`: a sandbox's open-file limit may stop one process at
//! 20,000 sockets), then prints what the
//! coordinators cost per probe (memory, idle CPU), how long the probes took
//! to attach, and how long one capture fanned out to many probes takes.
//!
//! It starts nothing but the simulated probes: `tests/bench/scale.sh`
//! builds the release binaries, makes a CA, starts the coordinator and
//! runs this with its address and PID.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use probemesh_tests::sim;

/// Attach N simulated probes to running coordinators and measure them.
#[derive(Debug, Parser)]
struct Args {
    /// Coordinator URLs (`https://127.0.0.1:PORT`), comma-separated; probe
    /// i attaches to the (i mod count)-th, the fan-out runs on the first.
    #[arg(long, value_delimiter = ',', required = true)]
    coordinator: Vec<String>,
    /// The coordinators' PIDs, comma-separated, for their memory and CPU
    /// (/proc/PID/status VmRSS, /proc/PID/stat utime+stime); summed.
    #[arg(long, value_delimiter = ',', required = true)]
    pid: Vec<u32>,
    /// The mesh's TLS directory: ca.pem and ca-key.pem sign the probes'
    /// certificates (written there), admin.pem starts the fan-out runs.
    #[arg(long)]
    tls_dir: PathBuf,
    /// Simulated probes.
    #[arg(long, default_value_t = 1000)]
    probes: usize,
    /// Observers of each fan-out run (at most --probes).
    #[arg(long, default_value_t = 1000)]
    fanout: usize,
    /// Fan-out runs, for p50/p99.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Idle window over which CPU is measured, seconds (20 or more for
    /// the figures; less only for a smoke test).
    #[arg(long, default_value_t = 20)]
    idle: u64,
    /// New connections a second while attaching (0 = all at once).
    #[arg(long, default_value_t = 0)]
    connect_rate: u32,
    /// Internal: hold probes `sim{N+1}` .. `sim{N+probes}` for the parent
    /// (print `attached`, answer `check` with `lost K`, exit at EOF).
    #[arg(long, hide = true)]
    hold_from: Option<usize>,
}

/// Probes one holder process attaches: each holds a TCP and a UDP socket,
/// and a sandbox's open-file hard limit may be as low as 20,000.
const PER_HOLDER: usize = 8_000;

/// Goals of issue 15, printed next to the figures.
const GOAL_RSS_PER_PROBE_KIB: f64 = 1024.0 * 1024.0 / 10_000.0;
const GOAL_IDLE_CORE_PER_1000: f64 = 0.2 / 10.0;
const GOAL_FANOUT_P99: Duration = Duration::from_secs(1);
/// Time after the last attach before memory is read: the attach bursts
/// of clock exchanges are over.
const SETTLE: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.probes > 0, "--probes must be at least 1");
    anyhow::ensure!(
        args.pid.len() == args.coordinator.len(),
        "give one --pid per --coordinator"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.hold_from {
        Some(first) => {
            raise_nofile(args.probes)?;
            runtime.block_on(hold(args, first))
        }
        None => runtime.block_on(bench(args)),
    }
}

/// A holder: attaches its probes, says so, and keeps them until the parent
/// closes its stdin (answering `check` with how many lost their link).
async fn hold(args: Args, first: usize) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt as _;
    let names = sim::names("sim", first + args.probes).split_off(first);
    let mut probes =
        sim::spawn_all(&names, &args.coordinator, &args.tls_dir, args.connect_rate).await?;
    let limit = Duration::from_secs(60) + Duration::from_millis(20 * args.probes as u64);
    let missing = sim::wait_attached(&mut probes, limit).await;
    if let Some((name, state)) = missing.first() {
        anyhow::bail!(
            "{} of {} probes did not attach within {limit:?}; {name}: {state:?}",
            missing.len(),
            names.len()
        );
    }
    println!("attached");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line == "check" {
            let lost = probes
                .iter()
                .filter(|p| p.state() != sim::LinkState::Attached)
                .count();
            println!("lost {lost}");
        }
    }
    Ok(())
}

/// A holder process ([`hold`]) and its pipes.
struct Holder {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Holder {
    /// Starts a holder for `count` probes after the first `first`, and
    /// waits until it has attached them all.
    async fn start(args: &Args, first: usize, count: usize) -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt as _;
        let join = |v: &[String]| v.join(",");
        let pids: Vec<String> = args.pid.iter().map(u32::to_string).collect();
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args([
                "--coordinator",
                &join(&args.coordinator),
                "--pid",
                &join(&pids),
            ])
            .arg("--tls-dir")
            .arg(&args.tls_dir)
            .args(["--probes", &count.to_string()])
            .args(["--connect-rate", &args.connect_rate.to_string()])
            .args(["--hold-from", &first.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start a holder process")?;
        let stdin = child.stdin.take().context("holder stdin")?;
        let stdout = child.stdout.take().context("holder stdout")?;
        let mut holder = Self {
            child,
            stdin,
            lines: tokio::io::BufReader::new(stdout).lines(),
        };
        let said = holder.lines.next_line().await?;
        anyhow::ensure!(
            said.as_deref() == Some("attached"),
            "the holder of sim{}..sim{} failed (see its error above)",
            first + 1,
            first + count
        );
        Ok(holder)
    }

    /// How many of its probes lost their link.
    async fn lost(&mut self) -> anyhow::Result<usize> {
        use tokio::io::AsyncWriteExt as _;
        self.stdin.write_all(b"check\n").await?;
        let said = self.lines.next_line().await?.unwrap_or_default();
        said.strip_prefix("lost ")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("a holder answered {said:?}"))
    }

    /// Its CPU (utime+stime), clock ticks.
    fn ticks(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("holder exited")?;
        stat_ticks(&format!("/proc/{pid}/stat"))
    }
}

/// Each probe holds a TCP and a UDP socket here.
fn raise_nofile(probes: usize) -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = u64::try_from(probes)?
        .saturating_mul(2)
        .saturating_add(1024);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < want {
        anyhow::ensure!(
            hard >= want,
            "{probes} probes need {want} open files, the hard limit is {hard}: raise it (ulimit -Hn) as root"
        );
        setrlimit(Resource::RLIMIT_NOFILE, want, hard)?;
    }
    Ok(())
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let names = sim::names("sim", args.probes);
    let started = Instant::now();
    sim::issue_certificates(&args.tls_dir, &names)?;
    println!(
        "issued {} probe certificates in {:.1} s",
        names.len(),
        started.elapsed().as_secs_f64()
    );

    let rss_before = rss_kib(&args.pid)?;
    let started = Instant::now();
    let mut holders = Vec::new();
    for first in (0..args.probes).step_by(PER_HOLDER) {
        let count = PER_HOLDER.min(args.probes - first);
        holders.push(Holder::start(&args, first, count).await?);
    }
    let attach = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let rss_after = rss_kib(&args.pid)?;
    let per_probe = (rss_after as f64 - rss_before as f64) / args.probes as f64;

    let window = Duration::from_secs(args.idle);
    let holder_ticks =
        |holders: &[Holder]| -> anyhow::Result<u64> { holders.iter().map(Holder::ticks).sum() };
    let (c0, s0) = (cpu_ticks(&args.pid)?, holder_ticks(&holders)?);
    tokio::time::sleep(window).await;
    let (c1, s1) = (cpu_ticks(&args.pid)?, holder_ticks(&holders)?);
    let cores = ticks_to_cores(c1 - c0, window);
    let per_1000 = cores * 1000.0 / args.probes as f64;
    let sim_cores = ticks_to_cores(s1 - s0, window);
    let mut lost = 0;
    for holder in &mut holders {
        lost += holder.lost().await?;
    }
    anyhow::ensure!(lost == 0, "{lost} probes lost their link while idle");

    let fanout = args.fanout.min(args.probes);
    let tls = probemesh_proto::tls::client_config(
        &probemesh_proto::pki::TlsDir::new(&args.tls_dir),
        "admin",
    )?;
    let channel = probemesh_proto::tls::connect(&args.coordinator[0], tls).await?;
    let mut times = Vec::with_capacity(args.runs);
    for run in 0..args.runs {
        let t = Instant::now();
        let record = sim::fan_out_on(channel.clone(), &names[..fanout]).await?;
        let took = t.elapsed();
        let answered = sim::captured(&record);
        anyhow::ensure!(
            answered == fanout,
            "run {} ({}): {answered} of {fanout} observers answered",
            run + 1,
            record.run_id
        );
        times.push(took);
    }
    times.sort();

    println!(
        "{} simulated probes on {} coordinator(s), {} core(s) on this machine:",
        args.probes,
        args.coordinator.len(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "  attach             {:>8.2} s for all {} probes",
        attach.as_secs_f64(),
        args.probes
    );
    println!(
        "  memory             {:>8.1} KiB per probe (VmRSS {} -> {} KiB)   goal < {:.1} KiB (1 GiB / 10,000)",
        per_probe, rss_before, rss_after, GOAL_RSS_PER_PROBE_KIB
    );
    println!(
        "  idle CPU           {:>8.4} core per 1,000 probes ({:.4} core for {} over {} s; the simulator used {:.3})   goal < {:.3}",
        per_1000, cores, args.probes, args.idle, sim_cores, GOAL_IDLE_CORE_PER_1000
    );
    println!(
        "  fan-out to {fanout:<5}   p50 {:.3} s  p99 {:.3} s  max {:.3} s over {} runs   goal p99 < {:.1} s",
        percentile(&times, 50).as_secs_f64(),
        percentile(&times, 99).as_secs_f64(),
        times.last().map_or(0.0, Duration::as_secs_f64),
        times.len(),
        GOAL_FANOUT_P99.as_secs_f64()
    );
    drop(holders);
    Ok(())
}

/// The `p`-th percentile of sorted `times` (nearest rank).
fn percentile(times: &[Duration], p: usize) -> Duration {
    if times.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * times.len()).div_ceil(100).clamp(1, times.len());
    times[rank - 1]
}

/// Summed VmRSS of `pids`, KiB.
fn rss_kib(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter().map(|&pid| status_field(pid, "VmRSS:")).sum()
}

fn status_field(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in {path}"))
}

/// Summed utime+stime of `pids`, clock ticks.
fn cpu_ticks(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter()
        .map(|&pid| stat_ticks(&format!("/proc/{pid}/stat")))
        .sum()
}

/// utime + stime (fields 14 and 15) of a /proc stat file.
fn stat_ticks(path: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    // The command name (field 2) may hold spaces: count from its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path} is not a stat file"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{path}: field {} missing", i + 3))
    };
    // After ')', field 3 (state) is index 0: utime (14) is 11, stime (15) 12.
    Ok(field(11)? + field(12)?)
}

fn ticks_to_cores(ticks: u64, window: Duration) -> f64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    ticks as f64 / hz / window.as_secs_f64()
}
