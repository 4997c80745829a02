//! How meshctl prints reports: a human table (default) or one JSON document.

use serde::Serialize;

/// `-o table|json`, accepted by every command that prints a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable, shaped like the classic tool's output.
    #[default]
    Table,
    /// One JSON document on stdout; progress and logs go to stderr.
    Json,
}

/// Prints a report: one JSON document with `-o json`, else its lines as the
/// classic tool would print them.
pub fn emit<T: Serialize>(
    output: OutputFormat,
    report: &T,
    lines: impl FnOnce() -> Vec<String>,
) -> Result<(), crate::client::Failure> {
    match output {
        OutputFormat::Json => {
            print_json(report).map_err(|e| crate::client::Failure::usage(e.to_string()))
        }
        OutputFormat::Table => {
            for line in lines() {
                println!("{line}");
            }
            Ok(())
        }
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The last lines of a run's report: its saved files (with how to read
/// the overlay in them) and its ids.
pub fn run_footer(artifacts: &[String], run_id: &str, trace_id: &str) -> Vec<String> {
    let mut lines = Vec::new();
    if !artifacts.is_empty() {
        lines.push(
            "artifacts (flannel's VXLAN is on UDP 8472, not 4789: tshark -d udp.port==8472,vxlan -r FILE; in Wireshark, Decode As… VXLAN):"
                .into(),
        );
        lines.extend(artifacts.iter().map(|a| format!("  {a}")));
    }
    lines.push(format!("run {run_id} · trace {trace_id}"));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_footer_lists_the_files_says_how_to_read_vxlan_and_ends_with_the_ids() {
        let lines = run_footer(&["c/node-2.pcapng".into()], "r1", "t1");
        assert!(lines[0].contains("-d udp.port==8472,vxlan"), "{lines:?}");
        assert_eq!(lines[1..], ["  c/node-2.pcapng", "run r1 · trace t1"]);
        assert_eq!(run_footer(&[], "r1", "t1"), ["run r1 · trace t1"]);
    }
}
