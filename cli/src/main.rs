//! `meshctl`: see the crate docs of `meshctl`.

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use meshctl::client::{Endpoint, Failure, exit};
use meshctl::commands::{
    capture, certs, dig, inspect, join_token, mesh, path, probe, probes, runs, tools, transfer,
    web_token,
};
use meshctl::completion;
use meshctl::invocation::Invocation;
use meshctl::lab;
use meshctl::output::OutputFormat;

/// probemesh: diagnose Kubernetes network faults from both ends of a path at once.
///
/// meshctl talks to the coordinator over mTLS. After `meshctl lab up` it is
/// configured for the lab; otherwise pass --coordinator and --tls-dir (or set
/// MESH_COORDINATOR / MESH_TLS_DIR).
///
/// Exit codes: 0 healthy, 1 a fault was found, 2 bad usage or input,
/// 3 inconclusive, 4 cannot reach or authenticate to the coordinator.
///
/// Installed as `kubectl-mesh` (a link to meshctl on PATH) it is the kubectl
/// plugin `kubectl mesh`.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Output format for reports.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = OutputFormat::Table, env = "MESH_OUTPUT")]
    output: OutputFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the mesh's CA and certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Tokens for external hosts to join the mesh.
    #[command(subcommand, name = "join-token")]
    JoinToken(join_token::JoinTokenCommand),
    /// A short-lived token to read the coordinators' web view in a browser.
    ///
    /// Prints the token and, when the coordinator serves the view (--web),
    /// the link that opens it. The token only reads.
    #[command(name = "web-token")]
    WebToken(web_token::WebTokenArgs),
    /// Registered probes: name, role, address, connected, last seen, clock offset.
    Probes,
    /// Diagnose a path from both ends at once: checks, captures, a verdict.
    ///
    /// Plans every check an engineer would run (icmp, tcp, dns, large
    /// packets, node facts, NAT rules; path and MTU when something fails),
    /// in both directions, with synchronized captures on every node
    /// involved; prints the checks, the verdict with its evidence and fix,
    /// and the pcapng files.
    /// Example: meshctl probe --from cloudvm-1 --to nodeport:30080 --size 1472
    Probe(probe::ProbeArgs),
    /// The whole mesh as an N×N matrix: every probe to every node, on demand.
    ///
    /// Every selected probe tests every selected host's address (with a
    /// large DF packet), its pod network and its NodePort; prints one grid
    /// per kind, and the failing pairs with the `meshctl probe` for each.
    /// Example: meshctl mesh --from role=node --to all
    Mesh(mesh::MeshArgs),
    /// ICMP echo from a probe, printed like ping.
    ///
    /// Example: meshctl ping --from cloudvm-1 198.18.0.12 -s 1472 -M do -c 3
    Ping(tools::PingArgs),
    /// Repeated TCP connects from a probe, printed like paping.
    ///
    /// Example: meshctl tcping --from cloudvm-1 198.18.0.11:30080 -c 4
    Tcping(tools::TcpingArgs),
    /// Trace the path to a target from a probe, printed like `mtr -r -n`.
    ///
    /// ICMP by default, --udp or --tcp; the report ends with the field's
    /// reading rules (loss at one hop only is rate limiting; loss that runs
    /// to the last hop is real).
    /// Example: meshctl mtr --from node-3 svc:default/web --tcp -c 10
    Mtr(path::MtrArgs),
    /// Find the path MTU to a target from a probe, printed like tracepath.
    ///
    /// A DF binary search up to the egress interface's MTU; reports a black
    /// hole when large packets vanish and no "frag needed" comes back.
    /// Example: meshctl pmtu --from cloudvm-1 198.18.0.12
    Pmtu(path::PmtuArgs),
    /// Push bytes over TCP from a probe and watch them get acknowledged (TCP_INFO).
    ///
    /// Shows "handshake fine, big segments stall" (MTU black holes). Aimed at
    /// probe:NAME without a port, it uses that probe's responder.
    /// Example: meshctl transfer --from cloudvm-1 probe:node-2 --bytes 64KiB
    Transfer(transfer::TransferArgs),
    /// UDP echo from a probe to another probe's responder, printed like ping.
    ///
    /// Example: meshctl udping --from node-1 probe:node-2 -s 1472 -M do
    Udping(transfer::UdpingArgs),
    /// Resolve a name on a probe (or in a pod's namespace), as dig.
    ///
    /// With --server and --compare, asks the namespace's resolv.conf servers
    /// and the given ones, and says which fails.
    /// Example: meshctl dig --from node-3@pod:default/client-3 upstream.lab.test --server 198.18.0.1 --compare
    Dig(dig::DigArgs),
    /// Node facts and listeners of a probe (or a pod's namespace).
    ///
    /// Interfaces with every address, routes, tunnels, the Service NAT chain
    /// for --ip/--port, conntrack use, drop counters, listeners.
    /// Example: meshctl inspect node-3 --ip 198.18.200.80 --port 80
    Inspect(inspect::InspectArgs),
    /// Capture on several probes at once, on one clock: the distributed tcpdump.
    ///
    /// Every observer arms its capture for the same instant on the
    /// coordinator's clock; files stream back checksummed into
    /// --out/RUN_ID/, plus merged.pcapng with every hop on one timeline.
    /// Headers only (128 bytes) unless --payload is asked and allowed.
    /// Example: meshctl capture --on cloudvm-1:eth0,node-1:eth0,node-2:flannel.1 --filter 'tcp port 30080' --duration 5s
    Capture(capture::CaptureArgs),
    /// Run history, each run with its state: running, done, failed (and
    /// why) or interrupted (the coordinator stopped mid-run); `meshctl runs
    /// RUN_ID` shows one run in full.
    Runs(runs::RunsArgs),
    /// A simulated cluster in network namespaces, with a fault catalogue.
    ///
    /// `lab up` builds it (root), `lab fault NAME` injects a fault the real
    /// way, `lab clear` undoes it, `lab demo` shows reference incident 2,
    /// `lab down` removes everything.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Print a shell completion script: bash, zsh, fish, powershell or elvish.
    ///
    /// bash: meshctl completion bash > /etc/bash_completion.d/meshctl;
    /// zsh: meshctl completion zsh > "${fpath[1]}/_meshctl";
    /// fish: meshctl completion fish > ~/.config/fish/completions/meshctl.fish.
    ///
    /// For `kubectl mesh` no script is needed: link meshctl on PATH as
    /// kubectl-mesh and as kubectl_complete-mesh, and kubectl (1.26 or later)
    /// completes the plugin through the second link.
    Completion(completion::CompletionArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let invocation = Invocation::from_argv0(std::env::args_os().next().as_deref());
    if invocation == Invocation::KubectlCompletion {
        let words: Vec<String> = std::env::args_os()
            .skip(1)
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        print!("{}", completion::complete(Cli::command(), &words));
        return ExitCode::SUCCESS;
    }
    let cli = match Cli::from_arg_matches(&command(invocation).get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    leave_quietly_on_broken_pipe();
    init_logging();
    let endpoint = &cli.endpoint;
    let output = cli.output;
    let result: Result<u8, Failure> = match cli.command {
        Command::Certs(cmd) => certs::run(cmd, endpoint, output).await.map(|()| exit::OK),
        Command::JoinToken(cmd) => join_token::run(cmd, endpoint, output)
            .await
            .map(|()| exit::OK),
        Command::WebToken(args) => web_token::run(args, endpoint, output)
            .await
            .map(|()| exit::OK),
        Command::Probes => probes::run(endpoint, output).await.map(|()| exit::OK),
        Command::Probe(args) => probe::run(args, endpoint, output).await,
        Command::Mesh(args) => mesh::run(args, endpoint, output).await,
        Command::Ping(args) => tools::ping(args, endpoint, output).await,
        Command::Tcping(args) => tools::tcping(args, endpoint, output).await,
        Command::Mtr(args) => path::mtr(args, endpoint, output).await,
        Command::Pmtu(args) => path::pmtu(args, endpoint, output).await,
        Command::Transfer(args) => transfer::run(args, endpoint, output).await,
        Command::Udping(args) => transfer::udping(args, endpoint, output).await,
        Command::Dig(args) => dig::dig(args, endpoint, output).await,
        Command::Inspect(args) => inspect::inspect(args, endpoint, output).await,
        Command::Capture(args) => capture::run(args, endpoint, output).await,
        Command::Runs(args) => runs::run(args, endpoint, output).await.map(|()| exit::OK),
        Command::Lab(cmd) => return lab_exit(lab::run(cmd, output).await),
        Command::Completion(args) => {
            completion::write_script(
                args.shell,
                &mut command(invocation),
                invocation.script_name(),
                &mut std::io::stdout(),
            );
            Ok(exit::OK)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("meshctl: {}", failure.message);
            failure.exit_code()
        }
    }
}

/// meshctl's command tree, named in help and usage as it was invoked
/// (`meshctl`, or `kubectl mesh` as the kubectl plugin).
fn command(invocation: Invocation) -> clap::Command {
    Cli::command().bin_name(invocation.usage_name())
}

fn lab_exit(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("meshctl lab: {e:#}");
        match e.downcast_ref::<Failure>() {
            Some(f) => f.exit_code(),
            None => ExitCode::from(exit::INCONCLUSIVE),
        }
    })
}

/// `meshctl ... | head` closes stdout early: leave with the status a shell
/// gives a process killed by SIGPIPE (141), as the classic tools do, instead
/// of panicking in `println!`. (Restoring SIGPIPE's default action would need
/// `unsafe`, which this crate does not allow.)
fn leave_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// meshctl logs only warnings unless RUST_LOG asks for more: its stdout is
/// the report.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
