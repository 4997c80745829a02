//! `meshctl lab fault`: the catalogue (`NAME`, `--list`), composed faults
//! (`compose SPEC[,SPEC...]`, `compose --list`) and the seeded random draw
//! (`random --seed N`), with `--dry-run`. Specs are checked before the lab
//! is touched: a bad one exits 2 with the reason and changes nothing.

use std::process::ExitCode;

use meshctl_lab::compose::{Composed, ComposedInfo, LabFault};
use meshctl_lab::faults;
use meshctl_lab::lifecycle::Lab;
use meshctl_lab::rules::ProxyMode;

use crate::output::{OutputFormat, print_json};

const FAULT_HELP: &str = "\
Examples:
  meshctl lab fault --list                       # the catalogue: 12 faults of the field
  meshctl lab fault mtu-blackhole                # reference incident 2, made the real way
  meshctl lab fault compose drop/icmp@node-2:input
  meshctl lab fault random --seed 7 --dry-run -o json
  meshctl lab clear                              # undo the active fault

One fault at a time: injecting one clears the active fault first.";

const COMPOSE_HELP: &str = "\
A part is MECHANISM[/PROTOCOL]@PLACE; several parts, comma-separated, make one fault when they
agree on the verdict and change different namespaces.

Mechanisms:
  drop, reject-{net,host,port,proto}-unreachable, reject-{net,host,admin}-prohibited,
  reject-tcp-reset                  an iptables rule; /icmp (echoes, the default) or /tcp (the web service)
  route-blackhole|unreachable|prohibit|removed
                                    a node's route to a pod CIDR, or cloudvm-1's route to node-2
  mtu-shrink-frag-filtered          node's eth0 at MTU 1440, frag-needed dropped (a black hole)
  mtu-shrink-frag-allowed           the same with frag-needed let through (PMTUD works: expect ok)
  loss                              20 % random loss on the fabric, one direction
  listener-stopped, listener-loopback
  dns-drop                          DNS to the cluster DNS dropped on client-3's way
  nat-missing, dnat-wrong-port, dnat-missing-pod
                                    one node's kube-proxy NAT rules gone or stale
  conntrack-full, second-address    a node's conntrack table full; a second NIC address for VXLAN
  link-down                         web-0's veth on node-2 set down
Places:
  fabric:to-node-N, fabric:from-node-N   the fabric router, one direction
  node-N                                 a node: routing table, links, NAT rules, conntrack
  node-N:input|output|forward            one netfilter hook of a node
  pod:web-0|dns-0|client-3               a pod's namespace
  cloudvm-1                              the external host
Combinations that make no sense or would cut a probe's own control link are refused with the
reason; `--list` prints every accepted part with its expected verdict (docs/lab-faults.md has
the ground-truth table).

Examples:
  meshctl lab fault compose reject-host-prohibited/tcp@fabric:to-node-1
  meshctl lab fault compose route-blackhole@node-3 --dry-run
  meshctl lab fault compose drop/icmp@node-1:input,drop/icmp@node-2:input
  meshctl lab fault compose --list -o json";

/// `meshctl lab fault` options.
#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = FAULT_HELP
)]
pub struct FaultArgs {
    /// Build a fault from parts, or draw one at random.
    #[command(subcommand)]
    pub action: Option<FaultAction>,
    /// The fault to inject: a catalogue name or a composed spec (with `@`);
    /// an active fault is cleared first.
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,
    /// Describe every catalogue fault: symptom, mechanism, probe run,
    /// expected verdict.
    #[arg(long, conflicts_with = "name")]
    pub list: bool,
}

/// `lab fault compose|random`.
#[derive(Debug, clap::Subcommand)]
pub enum FaultAction {
    /// Inject a fault built from parts: MECHANISM[/PROTOCOL]@PLACE[,...].
    ///
    /// Prints the same entry as `lab fault --list` (name, symptom,
    /// mechanism, observe, probe, expect), its expected verdict derived
    /// from mechanism and place by one table.
    #[command(after_help = COMPOSE_HELP)]
    Compose(ComposeArgs),
    /// Inject one part drawn from the composed space by a seed (the same
    /// seed, the same fault).
    ///
    /// Example: meshctl lab fault random --seed 42 --dry-run -o json
    Random(RandomArgs),
}

/// `lab fault compose` options.
#[derive(Debug, clap::Args)]
pub struct ComposeArgs {
    /// The parts, comma-separated (e.g. drop/icmp@node-2:input).
    #[arg(value_name = "SPEC[,SPEC...]", required_unless_present = "list")]
    pub spec: Option<String>,
    /// Print every accepted part with its expected verdict (no root needed).
    #[arg(long, conflicts_with_all = ["spec", "dry_run"])]
    pub list: bool,
    /// Print what would be injected and how it is undone; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `lab fault random` options.
#[derive(Debug, clap::Args)]
pub struct RandomArgs {
    /// The seed.
    #[arg(long, env = "MESH_LAB_SEED")]
    pub seed: u64,
    /// Print what would be injected and how it is undone; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `lab fault ...`.
pub async fn run(args: FaultArgs, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let (fault, dry_run, flat) = match (args.action, args.name) {
        (Some(FaultAction::Compose(ComposeArgs { list: true, .. })), _) => {
            print_space(output)?;
            return Ok(ExitCode::SUCCESS);
        }
        (Some(FaultAction::Compose(c)), _) => {
            match c.spec.unwrap_or_default().parse::<Composed>() {
                Ok(f) => (LabFault::Composed(f), c.dry_run, true),
                Err(e) => return usage("lab fault compose", &e),
            }
        }
        (Some(FaultAction::Random(r)), _) => (
            LabFault::Composed(Composed::random(r.seed)),
            r.dry_run,
            true,
        ),
        (None, _) if args.list => {
            print_catalogue(output)?;
            return Ok(ExitCode::SUCCESS);
        }
        (None, name) => match name.unwrap_or_default().parse::<LabFault>() {
            Ok(f) => {
                let flat = matches!(f, LabFault::Composed(_));
                (f, false, flat)
            }
            Err(e) => return usage("lab fault", &e),
        },
    };
    if dry_run {
        print_dry_run(&fault, Lab::new()?.proxy_mode(), output)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (lab, _lock) = super::open()?;
    inject(&lab, fault, output, flat).await
}

fn usage(what: &str, e: &dyn std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("meshctl {what}: {e}");
    Ok(ExitCode::from(2))
}

/// `lab fault NAME|compose|random`: an active fault is cleared first (one
/// fault at a time, so every symptom has one cause). `flat`: print the
/// entry itself with `-o json` (composed faults), else the catalogue's
/// `{fault, already_active, cleared_first, info}`.
async fn inject(
    lab: &Lab,
    fault: LabFault,
    output: OutputFormat,
    flat: bool,
) -> anyhow::Result<ExitCode> {
    let mut state = lab.require_up()?;
    let info = fault.info();
    let already = state.fault.as_deref() == Some(info.name.as_str());
    let cleared = if already {
        None
    } else {
        lab.clear(&mut state).await?
    };
    if !already {
        lab.inject(&mut state, fault).await?;
    }
    match output {
        OutputFormat::Json if flat => print_json(&info)?,
        OutputFormat::Json => print_json(&serde_json::json!({
            "fault": info.name,
            "already_active": already,
            "cleared_first": cleared,
            "info": info,
        }))?,
        OutputFormat::Table => {
            match (&cleared, already) {
                (_, true) => println!("fault {} is already active", info.name),
                (Some(prev), _) => println!(
                    "cleared {prev} first (one fault at a time); injected {}",
                    info.name
                ),
                (None, _) => println!("injected {}", info.name),
            }
            print_entry(&info);
            println!("  undo:         meshctl lab clear");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_entry(info: &ComposedInfo) {
    println!("  what changed: {}", info.mechanism);
    println!("  symptom:      {}", info.symptom);
    println!("  see it:       {}", info.observe);
    println!(
        "  diagnose:     {}  (expected verdict: {})",
        info.probe_command(),
        info.expected()
    );
}

/// `--dry-run`: the entry, and in text the commands that would inject and
/// undo it in a lab whose kube-proxy runs in `mode` (the running lab's).
fn print_dry_run(fault: &LabFault, mode: ProxyMode, output: OutputFormat) -> anyhow::Result<()> {
    let info = fault.info();
    if output == OutputFormat::Json {
        return print_json(&info);
    }
    println!("would inject {} (dry run: nothing changed)", info.name);
    print_entry(&info);
    println!("  inject:");
    for c in fault.apply(mode)?.iter().flat_map(|a| a.commands()) {
        println!("    {c}");
    }
    println!("  undo (meshctl lab clear):");
    for c in fault.clear(mode)?.iter().flat_map(|a| a.commands()) {
        println!("    {c}");
    }
    Ok(())
}

/// `compose --list`: every accepted part.
fn print_space(output: OutputFormat) -> anyhow::Result<()> {
    let all: Vec<ComposedInfo> = Composed::space()
        .into_iter()
        .filter_map(|p| Composed::new(vec![p]).ok())
        .map(|c| c.info())
        .collect();
    match output {
        OutputFormat::Json => print_json(&all),
        OutputFormat::Table => {
            let width = all.iter().map(|i| i.name.len()).max().unwrap_or(0);
            for i in &all {
                println!(
                    "{:<width$}  {:<40}  {}",
                    i.name,
                    i.expected(),
                    i.probe_command()
                );
            }
            println!("{} parts; docs/lab-faults.md explains the table", all.len());
            Ok(())
        }
    }
}

fn print_catalogue(output: OutputFormat) -> anyhow::Result<()> {
    let all: Vec<_> = faults::ALL.iter().map(|f| f.info()).collect();
    match output {
        OutputFormat::Json => print_json(&all),
        OutputFormat::Table => {
            for i in &all {
                println!("{}", i.name);
                println!("  symptom:   {}", i.symptom);
                println!("  mechanism: {}", i.mechanism);
                println!(
                    "  probe:     {}  => {}{}",
                    i.probe_command(),
                    i.expect.class,
                    i.expect.cause.map(|c| format!("/{c}")).unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        lab: crate::lab::LabCommand,
    }

    fn fault(args: &[&str]) -> FaultArgs {
        let full = [&["meshctl", "fault"], args].concat();
        match Cli::try_parse_from(full).map(|c| c.lab) {
            Ok(crate::lab::LabCommand::Fault(f)) => f,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn catalogue_names_compose_and_random_parse() {
        assert_eq!(
            fault(&["mtu-blackhole"]).name.as_deref(),
            Some("mtu-blackhole")
        );
        assert!(fault(&["--list"]).list);
        match fault(&["compose", "drop/icmp@node-2:input", "--dry-run"]).action {
            Some(FaultAction::Compose(c)) => {
                assert_eq!(c.spec.as_deref(), Some("drop/icmp@node-2:input"));
                assert!(c.dry_run);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            fault(&["compose", "--list"]).action,
            Some(FaultAction::Compose(ComposeArgs { list: true, .. }))
        ));
        assert!(matches!(
            fault(&["random", "--seed", "7"]).action,
            Some(FaultAction::Random(RandomArgs {
                seed: 7,
                dry_run: false
            }))
        ));
        assert!(Cli::try_parse_from(["meshctl", "fault", "random"]).is_err());
        assert!(Cli::try_parse_from(["meshctl", "fault"]).is_err());
    }

    #[tokio::test]
    async fn bad_specs_exit_2_before_touching_the_lab() {
        for args in [
            &["compose", "drop@nowhere"][..],
            &["compose", "shake@node-2"],
            &["compose", "loss@node-2:input"],
            &["no-such-fault"],
        ] {
            let code = run(fault(args), OutputFormat::Table).await.expect("runs");
            assert_eq!(code, ExitCode::from(2), "{args:?}");
        }
    }

    #[tokio::test]
    async fn dry_runs_and_lists_need_no_lab() {
        for args in [
            &["compose", "route-blackhole@node-3", "--dry-run"][..],
            &["random", "--seed", "3", "--dry-run"],
            &["compose", "--list"],
        ] {
            for output in [OutputFormat::Table, OutputFormat::Json] {
                let code = run(fault(args), output).await.expect("runs");
                assert_eq!(code, ExitCode::SUCCESS, "{args:?}");
            }
        }
    }
}
