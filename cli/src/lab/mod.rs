//! `meshctl lab`: the command layer over the `meshctl-lab` crate (the
//! simulated cluster, its faults and lifecycle): arguments, the root check,
//! the lock, and printing the reports. [`fault`] injects catalogue and
//! composed faults; [`demo`] runs reference incident 2 in one command
//! through meshctl's own commands.

pub mod demo;
pub mod fault;

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::bail;

use meshctl_lab::lifecycle::{Lab, StatusReport, UpReport};
use meshctl_lab::rules::ProxyMode;
use meshctl_lab::state::LabLock;
use meshctl_lab::{conntrack, web};

use crate::output::{OutputFormat, print_json};

/// `meshctl lab ...`
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Build the lab (namespaces, overlay, kube-proxy rules, DNS, web app,
    /// coordinator, probes) and point meshctl at it. Needs root.
    Up(UpArgs),
    /// Stop every lab process and remove everything the lab made.
    Down,
    /// Namespaces, processes, interfaces and the active fault.
    Status,
    /// Bring the lab up, inject mtu-blackhole (reference incident 2) and show
    /// the symptom.
    Demo,
    /// Inject a fault: from the catalogue (`--list`), composed from parts
    /// (`compose`), or drawn by a seed (`random`).
    Fault(fault::FaultArgs),
    /// Undo the active fault.
    Clear,
    /// The lab's web app (runs inside mesh-pod-web-0).
    #[command(hide = true)]
    ServeWeb {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// Listen with this accept-queue backlog and never accept (the
        /// backlog-full fault).
        #[arg(long)]
        stalled_backlog: Option<i32>,
    },
    /// The lab's Kubernetes API server (runs on the host).
    #[command(hide = true)]
    ServeApi {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Directory with the cluster CA and the server's certificate.
        #[arg(long)]
        pki: std::path::PathBuf,
        /// The lab's inventory file, which the objects follow.
        #[arg(long)]
        cluster: std::path::PathBuf,
        /// Where to write the probe pods' projected tokens.
        #[arg(long)]
        tokens: std::path::PathBuf,
    },
    /// Open connections and hold them (the backlog-full and
    /// ports-exhausted faults).
    #[command(hide = true)]
    Hold {
        /// Where to connect.
        #[arg(long)]
        to: SocketAddr,
        /// How many connections.
        #[arg(long)]
        count: u16,
    },
    /// Fill this namespace's conntrack table (the conntrack-full fault).
    #[command(hide = true)]
    ConntrackFill,
    /// Flush this namespace's conntrack table.
    #[command(hide = true)]
    ConntrackFlush,
}

/// `meshctl lab up` options.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Send the coordinator's and probes' traces to this OpenTelemetry
    /// collector (e.g. http://198.18.255.1:4317 for one on the host).
    #[arg(long, env = "MESH_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// How the lab's kube-proxy writes the Service rules: `iptables`
    /// (KUBE-* chains in the nat table) or `nftables` (the `ip kube-proxy`
    /// table, GA since Kubernetes 1.33).
    #[arg(long, env = "MESH_PROXY_MODE", default_value = "iptables")]
    pub proxy_mode: ProxyMode,
}

/// Runs a lab command.
pub async fn run(cmd: LabCommand, output: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        LabCommand::ServeWeb {
            listen,
            stalled_backlog: None,
        } => {
            web::serve(listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::ServeWeb {
            listen,
            stalled_backlog: Some(backlog),
        } => {
            web::serve_stalled(listen, backlog).await?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::ServeApi {
            listen,
            pki,
            cluster,
            tokens,
        } => {
            meshctl_lab::apiserver::serve(listen, &pki, &cluster, &tokens).await?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Hold { to, count } => {
            web::hold(to, count).await?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::ConntrackFill => {
            let r = tokio::task::spawn_blocking(conntrack::fill).await??;
            println!(
                "conntrack table full: {} of {} entries ({} assured flows forged in {:.1} s)",
                r.count,
                r.max,
                r.flows,
                r.elapsed.as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::ConntrackFlush => {
            tokio::task::spawn_blocking(conntrack::flush).await??;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Fault(args) => fault::run(args, output).await,
        LabCommand::Up(args) => {
            let (lab, _lock) = open()?;
            let report = lab.up(args.otlp_endpoint, args.proxy_mode).await?;
            print_up(&report, output)?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Down => {
            let (lab, _lock) = open()?;
            let report = lab.down().await?;
            match output {
                OutputFormat::Json => print_json(&report)?,
                OutputFormat::Table if report.removed_anything() => println!(
                    "lab down: stopped {} processes, removed {} namespaces{}{}",
                    report.processes_stopped,
                    report.namespaces_removed.len(),
                    if report.host_link_removed {
                        ", the host link"
                    } else {
                        ""
                    },
                    if report.state_removed {
                        " and the state directory"
                    } else {
                        ""
                    },
                ),
                OutputFormat::Table => println!("lab is not up; nothing to remove"),
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Status => {
            require_root()?;
            let report = Lab::new()?.status().await?;
            print_status(&report, output)?;
            Ok(if report.state == "partial" {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        LabCommand::Demo => {
            let (lab, _lock) = open()?;
            demo::run(&lab, output).await
        }
        LabCommand::Clear => {
            let (lab, _lock) = open()?;
            let mut state = lab.require_up()?;
            let cleared = lab.clear(&mut state).await?;
            match output {
                OutputFormat::Json => print_json(&serde_json::json!({ "cleared": cleared }))?,
                OutputFormat::Table => match cleared {
                    Some(name) => println!("cleared {name}; the lab is back to its baseline"),
                    None => println!("no fault is active"),
                },
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("meshctl lab needs root (it creates network namespaces): run it with sudo");
    }
    Ok(())
}

/// The lab, with the lock that keeps other lab commands out while this one runs.
pub(crate) fn open() -> anyhow::Result<(Lab, LabLock)> {
    require_root()?;
    Ok((Lab::new()?, LabLock::acquire()?))
}

fn print_up(report: &UpReport, output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        return print_json(report);
    }
    if report.already_up {
        println!(
            "lab already up (fault: {}); `meshctl lab down` removes it",
            report.fault.as_deref().unwrap_or("none")
        );
        for w in &report.warnings {
            println!("warning: {w}");
        }
        return Ok(());
    }
    let phases: Vec<String> = report
        .phases_ms
        .iter()
        .map(|(name, at)| format!("{name} at {:.2} s", *at as f64 / 1000.0))
        .collect();
    println!(
        "lab up in {:.2} s ({}); kube-proxy in {} mode",
        report.bring_up_ms as f64 / 1000.0,
        phases.join(", "),
        report.proxy_mode
    );
    if !report.probes_connected.is_empty() {
        println!("probes connected: {}", report.probes_connected.join(", "));
    }
    for w in &report.warnings {
        println!("warning: {w}");
    }
    match &report.client_config {
        Some(path) => println!(
            "coordinator {}; meshctl is configured for it ({})",
            report.coordinator,
            path.display()
        ),
        None => println!("coordinator {}", report.coordinator),
    }
    println!(
        "next: meshctl probes | meshctl lab fault --list | meshctl lab demo | meshctl lab down"
    );
    Ok(())
}

fn print_status(report: &StatusReport, output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        return print_json(report);
    }
    println!(
        "lab: {}   fault: {}   kube-proxy: {}   coordinator: {}   state: {}",
        report.state,
        report.fault.as_deref().unwrap_or("none"),
        report.proxy_mode.map_or("-", ProxyMode::name),
        report.coordinator,
        report.state_dir.display()
    );
    if report.state == "down" {
        return Ok(());
    }
    if let Some(ms) = report.bring_up_ms {
        println!("last bring-up: {:.2} s", ms as f64 / 1000.0);
    }
    println!(
        "web view: {} (a link with a token: meshctl web-token)",
        report.web
    );
    if let Some(kubeconfig) = &report.kubeconfig {
        println!(
            "Kubernetes API: kubectl --kubeconfig {} get nodes,pods -A",
            kubeconfig.display()
        );
    }
    let missing: Vec<&str> = report
        .namespaces
        .iter()
        .filter(|n| !n.present)
        .map(|n| n.name)
        .collect();
    if !missing.is_empty() {
        println!("missing namespaces: {}", missing.join(", "));
    }
    println!(
        "\n{:<18} {:<12} {:>5}  ADDRESSES",
        "NAMESPACE", "INTERFACE", "MTU"
    );
    for i in &report.interfaces {
        println!(
            "{:<18} {:<12} {:>5}  {}",
            i.netns,
            i.interface,
            i.mtu,
            i.addresses.join(" ")
        );
    }
    println!(
        "\n{:<16} {:<18} {:>8}  ALIVE",
        "PROCESS", "NAMESPACE", "PID"
    );
    for p in &report.processes {
        println!(
            "{:<16} {:<18} {:>8}  {}",
            p.name,
            p.netns.as_deref().unwrap_or("host"),
            p.pid,
            if p.alive { "yes" } else { "NO" }
        );
    }
    Ok(())
}
