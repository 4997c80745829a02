//! The lab's I/O edge: running `ip`, `bridge`, `sysctl` and `iptables-restore`
//! (in a namespace when asked), starting long-lived processes detached from
//! meshctl, and stopping them by PID. Requires root (`CAP_SYS_ADMIN` for
//! namespaces, `CAP_NET_ADMIN` for links, rules and sysctls, `CAP_KILL`).

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt as _;

use crate::state::ProcessRecord;

/// Programs the lab runs; `lab up` refuses to start without them.
pub const REQUIRED_TOOLS: [(&str, &str); 5] = [
    ("ip", "iproute2"),
    ("bridge", "iproute2"),
    ("iptables-restore", "iptables"),
    ("sysctl", "procps"),
    ("dnsmasq", "dnsmasq-base"),
];

/// Where `program` is on `PATH` (plus the sbin directories root normally has).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Runs `program args` (with `input` on stdin) and returns its stdout; a
/// failure names the command and carries its stderr.
pub async fn run(program: &str, args: &[&str], input: Option<&str>) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!("{program} {}", args.join(" "));
    let mut child = cmd.spawn().with_context(|| format!("starting `{shown}`"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .with_context(|| format!("writing to `{shown}`"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .with_context(|| format!("waiting for `{shown}`"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("`{shown}` failed ({}): {}", out.status, stderr.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip [-n NETNS] -batch -` with one command per line.
pub async fn ip_batch(netns: Option<&str>, commands: &[String]) -> anyhow::Result<()> {
    let script = commands.join("\n") + "\n";
    match netns {
        Some(ns) => run("ip", &["-n", ns, "-batch", "-"], Some(&script)).await,
        None => run("ip", &["-batch", "-"], Some(&script)).await,
    }
    .with_context(|| format!("configuring {}:\n{script}", netns.unwrap_or("the host")))?;
    Ok(())
}

/// `bridge -n NETNS -batch -` with one command per line.
pub async fn bridge_batch(netns: &str, commands: &[String]) -> anyhow::Result<()> {
    let script = commands.join("\n") + "\n";
    run("bridge", &["-n", netns, "-batch", "-"], Some(&script)).await?;
    Ok(())
}

/// Replaces the whole iptables ruleset of NETNS (atomically per table).
pub async fn iptables_restore(netns: &str, ruleset: &str) -> anyhow::Result<()> {
    run(
        "ip",
        &["netns", "exec", netns, "iptables-restore", "-w"],
        Some(ruleset),
    )
    .await
    .with_context(|| format!("loading the iptables ruleset of {netns}"))?;
    Ok(())
}

/// `nft -f -` of a script in NETNS: one transaction, all or nothing.
pub async fn nft_script(netns: &str, script: &str) -> anyhow::Result<()> {
    run(
        "ip",
        &["netns", "exec", netns, "nft", "-f", "-"],
        Some(script),
    )
    .await
    .with_context(|| format!("loading the nftables script of {netns}"))?;
    Ok(())
}

/// `iptables -w -I|-D CHAIN ARGS...` in NETNS's filter table.
pub async fn iptables_rule(
    netns: &str,
    insert: bool,
    chain: &str,
    args: &[String],
) -> anyhow::Result<()> {
    let mut all = vec![
        "netns",
        "exec",
        netns,
        "iptables",
        "-w",
        if insert { "-I" } else { "-D" },
        chain,
    ];
    all.extend(args.iter().map(String::as_str));
    run("ip", &all, None)
        .await
        .with_context(|| format!("changing a rule of {chain} in {netns}"))?;
    Ok(())
}

/// Sets sysctls inside NETNS.
pub async fn sysctl(netns: &str, settings: &[(&str, &str)]) -> anyhow::Result<()> {
    if settings.is_empty() {
        return Ok(());
    }
    let pairs: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args = vec!["netns", "exec", netns, "sysctl", "-q", "-w"];
    args.extend(pairs.iter().map(String::as_str));
    run("ip", &args, None).await?;
    Ok(())
}

/// How long [`settle_carrier`] waits.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Waits until DEVICE in NETNS reports `carrier` (read through `ip netns
/// exec`, as `/sys` is per namespace), polling every 50 ms for at most
/// [`SETTLE_TIMEOUT`]; an error names what never settled.
pub async fn settle_carrier(netns: &str, device: &str, carrier: bool) -> anyhow::Result<()> {
    let path = format!("/sys/class/net/{device}/carrier");
    let want = if carrier { "1" } else { "0" };
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        // Reading `carrier` of a device that is down fails (EINVAL): no carrier.
        let now = run("ip", &["netns", "exec", netns, "cat", &path], None)
            .await
            .map_or_else(|_| "0".to_owned(), |out| out.trim().to_owned());
        if now == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "{device} in {netns} still has carrier {now} after {SETTLE_TIMEOUT:?} (wanted {want})"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Whether the named network namespace exists (`/run/netns/NAME`).
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Whether the host namespace has a link called `name`.
pub fn host_link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// A long-lived lab process to start.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// Role name (`coordinator`, `web`, ...), also its log's name.
    pub name: String,
    /// Namespace to run in (`None`: the host).
    pub netns: Option<String>,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// File receiving stdout and stderr.
    pub log: PathBuf,
}

impl Spawn {
    /// The command line, for the record.
    pub fn command_line(&self) -> String {
        let mut parts = vec![self.program.display().to_string()];
        parts.extend(self.args.iter().cloned());
        parts.join(" ")
    }

    /// Starts the process detached from meshctl: its own process group,
    /// stdin from /dev/null, output to its log, no inherited `MESH_*`
    /// settings. Returns the child (to notice an early exit) and its record.
    pub fn start(&self) -> anyhow::Result<(std::process::Child, ProcessRecord)> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.program);
                c
            }
            None => std::process::Command::new(&self.program),
        };
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MESH_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}: {}", self.name, self.command_line()))?;
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        let start_ticks =
            start_ticks(pid).with_context(|| format!("{} exited at once", self.name))?;
        Ok((
            child,
            ProcessRecord {
                pid,
                start_ticks,
                netns: self.netns.clone(),
                command: self.command_line(),
            },
        ))
    }
}

/// The last `lines` lines of a log, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// (start time in clock ticks, state letter) of a process, from /proc/PID/stat.
fn stat(pid: i32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 overall is the 20th after the command name.
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// Start time of a running process.
pub fn start_ticks(pid: i32) -> Option<u64> {
    stat(pid).map(|(start, _)| start)
}

/// Whether the recorded process still runs (same PID *and* start time; a
/// zombie counts as gone).
pub fn alive(rec: &ProcessRecord) -> bool {
    matches!(stat(rec.pid), Some((start, state)) if start == rec.start_ticks && state != 'Z')
}

/// Stops the recorded processes: SIGTERM, then SIGKILL to whatever still
/// runs after `grace`. Only PIDs whose start time matches the record are
/// signalled. Returns how many were running.
pub async fn stop(records: &[ProcessRecord], grace: Duration) -> usize {
    let running: Vec<&ProcessRecord> = records.iter().filter(|r| alive(r)).collect();
    for r in &running {
        let _ = kill(Pid::from_raw(r.pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while running.iter().any(|r| alive(r)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stubborn: Vec<&&ProcessRecord> = running.iter().filter(|r| alive(r)).collect();
    for r in &stubborn {
        let _ = kill(Pid::from_raw(r.pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while stubborn.iter().any(|r| alive(r)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.len()
}

/// Programs the lab starts; a process inside a lab namespace running one of
/// them is the lab's even if its record was lost (a crash during `up`).
const LAB_PROGRAMS: [&str; 4] = ["dnsmasq", "meshctl", "mesh-probe", "mesh-coordinator"];

/// Lab processes still running inside NETNS, as records ready for [`stop`].
pub async fn leftover_processes(netns: &str) -> Vec<ProcessRecord> {
    let Ok(out) = run("ip", &["netns", "pids", netns], None).await else {
        return Vec::new();
    };
    out.split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).ok() != Some(std::process::id()))
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
                .is_some_and(|name| {
                    let name = name.trim_end_matches(" (deleted)");
                    LAB_PROGRAMS.contains(&name)
                })
        })
        .filter_map(|pid| {
            Some(ProcessRecord {
                pid,
                start_ticks: start_ticks(pid)?,
                netns: Some(netns.to_owned()),
                command: String::new(),
            })
        })
        .collect()
}

/// Where `ip netns exec` finds per-namespace files.
const NETNS_ETC: &str = "/etc/netns";

/// `/etc/netns/NETNS`.
fn netns_etc(netns: &str) -> PathBuf {
    PathBuf::from(NETNS_ETC).join(netns)
}

/// Writes `/etc/netns/NETNS/resolv.conf` in place (`ip netns exec`
/// bind-mounts it over /etc/resolv.conf).
pub fn write_resolv_conf(netns: &str, contents: &str) -> anyhow::Result<()> {
    let d = netns_etc(netns);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    let path = d.join("resolv.conf");
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
}

/// Removes the `resolv.conf` files of `namespaces` (and `/etc/netns` when
/// nothing else is left in it).
pub fn remove_resolv_confs(namespaces: &[&str]) -> anyhow::Result<()> {
    for ns in namespaces {
        let d = netns_etc(ns);
        if d.exists() {
            std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    let _ = std::fs::remove_dir(NETNS_ETC);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = i32::try_from(std::process::id()).expect("pid");
        let start = start_ticks(pid).expect("own stat");
        let me = ProcessRecord {
            pid,
            start_ticks: start,
            netns: None,
            command: String::new(),
        };
        assert!(alive(&me));
        assert!(!alive(&ProcessRecord {
            start_ticks: start + 1,
            ..me.clone()
        }));
        assert!(!alive(&ProcessRecord {
            pid: i32::MAX,
            ..me
        }));
    }

    #[tokio::test]
    async fn run_reports_the_command_and_its_stderr() {
        let out = run("sh", &["-c", "cat; echo done"], Some("in\n"))
            .await
            .expect("sh runs");
        assert_eq!(out, "in\ndone\n");
        let err = run("sh", &["-c", "echo boom >&2; exit 3"], None)
            .await
            .expect_err("fails")
            .to_string();
        assert!(
            err.contains("`sh -c echo boom >&2; exit 3` failed") && err.contains("boom"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn stop_ends_a_process_it_started() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let spawn = Spawn {
            name: "sleeper".into(),
            netns: None,
            program: "sleep".into(),
            args: vec!["30".into()],
            env: vec![],
            log: dir.path().join("sleeper.log"),
        };
        let (mut child, rec) = spawn.start()?;
        assert!(alive(&rec));
        assert_eq!(
            stop(std::slice::from_ref(&rec), Duration::from_secs(2)).await,
            1
        );
        let _ = child.wait();
        assert!(!alive(&rec));
        assert_eq!(stop(&[rec], Duration::from_secs(1)).await, 0);
        Ok(())
    }
}
