//! `meshctl capture`: the distributed tcpdump. The coordinator arms a
//! capture on every requested probe interface at one instant; each probe
//! streams its pcapng file back in checksummed chunks, which land in
//! `OUT/RUN_ID/<name>` once the whole file is verified; then the files are
//! merged into `OUT/RUN_ID/merged.pcapng` on the coordinator's clock.
//!
//! One module per concern, I/O at the edges:
//! - `args`: the flags and the `--on` entries ([`CapturePoint`]), parsed and
//!   checked locally (the coordinator checks them again against the probes
//!   it knows), and the run request they become;
//! - `progress`: the stderr board while the capture runs;
//! - `artifacts`: chunks → `.part` file → verified final file, never a
//!   partial file under a final name;
//! - `merge`: a pure function from pcapng bytes to one pcapng stream on the
//!   common clock;
//! - `report` and `correlation`: what is printed and written as JSON, and
//!   the exit code;
//! - `files`: the run directory on disk, tying the above together for every
//!   command whose runs capture ([`CaptureFiles`]).

mod args;
mod artifacts;
mod correlation;
mod files;
mod merge;
mod progress;
mod report;

pub use args::{CaptureArgs, CapturePoint};
pub use files::CaptureFiles;
pub use report::{CaptureReport, InterfaceView, TimingView};

use crate::client::{Endpoint, Failure};
use crate::output::{OutputFormat, emit};

/// Runs `meshctl capture`: streams the run, saves and verifies each
/// observer's file, merges them, prints the report; returns the exit code.
pub async fn run(
    args: CaptureArgs,
    endpoint: &Endpoint,
    output: OutputFormat,
) -> Result<u8, Failure> {
    let mut files = CaptureFiles::new(&args.out)?;
    let (accepted, record) = super::stream_run(args.request(), endpoint, |progress| {
        if let Some(line) = files.progress(&progress) {
            eprintln!("{line}");
        }
    })
    .await?;
    let report = files.finish(&accepted, &record, &args.filter);
    emit(output, &report, || report.table_lines())?;
    Ok(report.exit_code())
}
