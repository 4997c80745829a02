//! `meshctl lab demo`: reference incident 2 in one command. Brings the lab up
//! if needed, injects `mtu-blackhole`, shows the symptom the way an SRE
//! would (the mesh's own remote tools, run from `cloudvm-1`), then lets
//! `meshctl probe` diagnose it: checks, captures, verdict.

use std::process::ExitCode;

use serde::Serialize;

use crate::output::{OutputFormat, print_json};
use meshctl_lab::faults::Fault;
use meshctl_lab::lifecycle::Lab;
use meshctl_lab::topology::{CLOUDVM, NODE_2, NODE_PORT, NODES};

/// One demonstration step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The command, as a user would type it.
    pub command: String,
    /// What the step checks.
    pub what: String,
    /// meshctl's exit code.
    pub exit_code: i32,
    /// The exit code the incident predicts (1: a fault was found).
    pub expected_exit_code: i32,
    /// What it printed.
    pub output: String,
    /// Whether it should succeed (exit 0) in the faulty lab.
    pub expected_success: bool,
    /// What the result means.
    pub meaning: String,
}

/// The whole demo.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Bring-up time, when the demo brought the lab up.
    pub bring_up_ms: Option<u64>,
    /// The fault injected.
    pub fault: &'static str,
    /// The steps.
    pub steps: Vec<Step>,
    /// Every step behaved as the incident predicts.
    pub reproduced: bool,
    /// What to run next.
    pub next: String,
}

struct Plan {
    what: String,
    args: Vec<String>,
    expected_exit: i32,
    /// A line the output must hold for the step to count as reproduced.
    must_print: Option<&'static str>,
    if_ok: &'static str,
    if_failed: &'static str,
}

/// Where the diagnosis step keeps its capture files (under the current
/// directory: `lab down` does not remove them).
const CAPTURES: &str = "./captures";

fn plan() -> Vec<Plan> {
    let node_2 = NODE_2.ip().to_string();
    let ping = |size: &str| -> Vec<String> {
        [
            "ping", "--from", CLOUDVM, &node_2, "-s", size, "-M", "do", "-c", "3", "-i", "200ms",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let node_1_port = format!("{}:{NODE_PORT}", NODES[0].ip());
    let to_args = |args: &[&str]| args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let probe = Fault::MtuBlackhole.info().probe;
    let size = probe.size.to_string();
    vec![
        Plan {
            what: format!("small ICMP echo (56 bytes, Don't Fragment) from {CLOUDVM} to node-2"),
            args: ping("56"),
            expected_exit: 0,
            must_print: None,
            if_ok: "small packets cross the path: routing and firewalls are fine",
            if_failed: "even small packets are lost: this is not an MTU problem",
        },
        Plan {
            what: format!(
                "full-size ICMP echo (1472 + 28 = 1500 bytes, Don't Fragment) from {CLOUDVM} to node-2"
            ),
            args: ping("1472"),
            expected_exit: 1,
            must_print: None,
            if_ok: "1500-byte packets pass: the path MTU is intact",
            if_failed: "1500-byte packets vanish and no 'Frag needed' error comes back: a path-MTU black hole between cloudvm-1 (MTU 1500) and node-2",
        },
        Plan {
            what: format!("TCP handshake from {CLOUDVM} to NodePort {node_1_port}"),
            args: to_args(&["tcping", "--from", CLOUDVM, &node_1_port, "-c", "3"]),
            expected_exit: 0,
            must_print: None,
            if_ok: "the handshake (small segments) works, so the service looks up; full-size data segments to web-0 on node-2 are what get lost, the reference incident's 'connects, then hangs'",
            if_failed: "the handshake fails too: something besides the MTU is wrong",
        },
        Plan {
            what: format!(
                "the diagnosis: every check from both ends, captures on every node, a verdict ({} → {})",
                probe.from, probe.to
            ),
            args: to_args(&[
                "probe", "--from", probe.from, "--to", probe.to, "--size", &size, "--out", CAPTURES,
            ]),
            expected_exit: 1,
            must_print: Some("VERDICT  mtu_blackhole"),
            if_ok: "no fault found: the black hole did not show",
            if_failed: "meshctl probe names the MTU black hole from evidence alone: the path MTU, where it shrinks, the lost segments in the captures, and the fix",
        },
    ]
}

/// Runs the demo.
pub async fn run(lab: &Lab, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let up = lab.up(None, lab.proxy_mode()).await?;
    let bring_up_ms = (!up.already_up).then_some(up.bring_up_ms);
    if output == OutputFormat::Table {
        match bring_up_ms {
            Some(ms) => println!("lab up in {:.2} s", ms as f64 / 1000.0),
            None => println!("lab already up"),
        }
    }
    let mut state = lab.require_up()?;
    let fault = Fault::MtuBlackhole;
    if state.fault.as_deref() != Some(fault.name()) {
        lab.clear(&mut state).await?;
        lab.inject(&mut state, fault).await?;
    }
    let info = fault.info();
    if output == OutputFormat::Table {
        println!("\ninjected {}: {}\n", info.name, info.mechanism);
    }
    let mut steps = Vec::new();
    let mut predicted = Vec::new();
    for p in plan() {
        let args: Vec<&str> = p.args.iter().map(String::as_str).collect();
        let (exit_code, out, err) = lab.meshctl_output(&args).await?;
        let ok = exit_code == 0;
        let as_predicted =
            exit_code == p.expected_exit && p.must_print.is_none_or(|line| out.contains(line));
        let step = Step {
            command: format!("meshctl {}", p.args.join(" ")),
            what: p.what,
            exit_code,
            expected_exit_code: p.expected_exit,
            // Progress (stderr) comes first, as it did on the screen.
            output: format!("{err}{out}"),
            expected_success: p.expected_exit == 0,
            meaning: (if ok { p.if_ok } else { p.if_failed }).to_owned(),
        };
        predicted.push(as_predicted);
        if output == OutputFormat::Table {
            println!("# {}", step.what);
            println!("$ {}", step.command);
            for line in step.output.lines() {
                println!("  {line}");
            }
            println!("=> {}\n", step.meaning);
        }
        steps.push(step);
    }
    let reproduced = predicted.iter().all(|p| *p);
    let report = DemoReport {
        bring_up_ms,
        fault: info.name,
        reproduced,
        next: format!(
            "open the captures in Wireshark ({CAPTURES}/RUN_ID/merged.pcapng); `meshctl runs` lists the run; \
             `meshctl lab clear` undoes the fault and the same `{}` then says ok; \
             `meshctl lab fault --list` has the other faults, each with the probe command that diagnoses it",
            info.probe_command()
        ),
        steps,
    };
    match output {
        OutputFormat::Json => print_json(&report)?,
        OutputFormat::Table => {
            if reproduced {
                println!(
                    "Reference incident 2 reproduced and diagnosed: small packets and TCP handshakes work, full-size packets are silently lost, and meshctl probe says mtu_blackhole."
                );
            } else {
                println!(
                    "The symptom did not show as expected; see the outputs above and `meshctl lab status`."
                );
            }
            println!("next: {}", report.next);
        }
    }
    Ok(if reproduced {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
