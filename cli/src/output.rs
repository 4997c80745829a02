//! How meshctl prints reports: a human table (default) or one JSON document,
//! and with `--html FILE` also one self-contained HTML page of a run.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use probemesh_proto::pb;
use probemesh_report::FileLink;
use serde::Serialize;

use crate::client::Failure;

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
) -> Result<(), Failure> {
    match output {
        OutputFormat::Json => print_json(report).map_err(|e| Failure::usage(e.to_string())),
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

/// `--html FILE`: the page is written under a temporary name in FILE's
/// directory and renamed over FILE once complete, so FILE is never half
/// written. Opened before the run starts, so a bad path fails at once
/// (exit 2) rather than after the run; dropped unwritten, nothing is left.
#[derive(Debug)]
pub struct HtmlFile {
    path: PathBuf,
    dir: PathBuf,
    temp: tempfile::NamedTempFile,
}

impl HtmlFile {
    /// Checks that `path` can be written: its directory exists and it is
    /// not a directory itself.
    pub fn create(path: &Path) -> Result<Self, Failure> {
        let bad = |why: String| Failure::usage(format!("--html {}: {why}", path.display()));
        let absolute = std::path::absolute(path).map_err(|e| bad(e.to_string()))?;
        if absolute.is_dir() {
            return Err(bad("is a directory".into()));
        }
        let dir = absolute
            .parent()
            .ok_or_else(|| bad("names no file".into()))?
            .to_path_buf();
        let temp = tempfile::Builder::new()
            .prefix(".meshctl-html-")
            .suffix(".part")
            .tempfile_in(&dir)
            .map_err(|e| bad(format!("cannot write in {}: {e}", dir.display())))?;
        Ok(Self {
            path: absolute,
            dir,
            temp,
        })
    }

    /// Renders `record` and writes the page, linking `artifacts` (capture
    /// files, as the report lists them) relative to the page. A mesh run
    /// (`meshctl mesh`, or `meshctl runs` of one) is its heat map.
    pub fn write_record(self, record: &pb::RunRecord, artifacts: &[String]) -> Result<(), Failure> {
        if record.matrix.is_some() {
            return self.write_mesh(record, &[]);
        }
        let files: Vec<FileLink> = artifacts
            .iter()
            .map(|a| {
                let file = Path::new(a);
                let href = std::path::absolute(file)
                    .map(|abs| relative(&self.dir, &abs))
                    .unwrap_or_else(|_| file.to_path_buf());
                FileLink {
                    label: file
                        .file_name()
                        .map_or_else(|| a.clone(), |n| n.to_string_lossy().into_owned()),
                    href: href.to_string_lossy().into_owned(),
                }
            })
            .collect();
        self.write(&probemesh_report::render(record, &files))
    }

    /// Writes the heat map of the mesh run `record`, each pair in
    /// `probe_runs` linked to its run's report.
    pub fn write_mesh(
        self,
        record: &pb::RunRecord,
        probe_runs: &[probemesh_report::PairLink],
    ) -> Result<(), Failure> {
        self.write(&probemesh_report::render_mesh(record, probe_runs))
    }

    fn write(mut self, html: &str) -> Result<(), Failure> {
        let failed = |e: std::io::Error| {
            Failure::usage(format!("cannot write {}: {e}", self.path.display()))
        };
        // A page is meant to be attached and shared: readable by all, as a
        // file a shell writes (the temporary file starts private).
        self.temp
            .write_all(html.as_bytes())
            .and_then(|()| {
                self.temp
                    .as_file()
                    .set_permissions(std::fs::Permissions::from_mode(0o644))
            })
            .and_then(|()| self.temp.as_file().sync_all())
            .map_err(failed)?;
        self.temp.persist(&self.path).map_err(|e| {
            Failure::usage(format!("cannot write {}: {}", self.path.display(), e.error))
        })?;
        Ok(())
    }
}

/// `to` as a path from the directory `from` (both absolute): `..` for
/// each of `from`'s components past their common prefix.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component<'_>> = from.components().collect();
    let to: Vec<Component<'_>> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_links_are_relative_to_the_page() {
        assert_eq!(
            relative(Path::new("/w/out"), Path::new("/w/out/caps/r1/a.pcapng")),
            Path::new("caps/r1/a.pcapng")
        );
        assert_eq!(
            relative(Path::new("/w/reports"), Path::new("/w/caps/r1/a.pcapng")),
            Path::new("../caps/r1/a.pcapng")
        );
    }

    #[test]
    fn the_page_appears_whole_or_not_at_all_and_a_bad_path_is_exit_2() {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("run.html");
        let html = HtmlFile::create(&page).unwrap();
        assert!(
            !page.exists(),
            "nothing at FILE before the page is complete"
        );
        html.write_record(&pb::RunRecord::default(), &[]).unwrap();
        let text = std::fs::read_to_string(&page).unwrap();
        assert!(text.starts_with("<!DOCTYPE html>") && text.ends_with("</html>"));
        let mode = std::fs::metadata(&page).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "a page to attach is readable by all");
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(
            !text.contains("data-kind="),
            "a probe run is not a heat map"
        );
        let mesh = dir.path().join("mesh.html");
        let record = pb::RunRecord {
            matrix: Some(pb::MeshMatrix::default()),
            ..Default::default()
        };
        HtmlFile::create(&mesh)
            .unwrap()
            .write_record(&record, &[])
            .unwrap();
        assert!(
            std::fs::read_to_string(&mesh)
                .unwrap()
                .contains(r#"id="legend""#)
        );
        std::fs::remove_file(&mesh).unwrap();
        assert_eq!(leftovers, 1, "no temporary file left beside it");
        drop(HtmlFile::create(&dir.path().join("unused.html")).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        for bad in [
            dir.path().to_path_buf(),
            dir.path().join("no/such/dir.html"),
        ] {
            let e = HtmlFile::create(&bad).unwrap_err();
            assert_eq!(e.code, crate::client::exit::USAGE, "{bad:?}");
            assert!(e.message.contains("--html"), "{}", e.message);
        }
    }

    #[test]
    fn the_footer_lists_the_files_says_how_to_read_vxlan_and_ends_with_the_ids() {
        let lines = run_footer(&["c/node-2.pcapng".into()], "r1", "t1");
        assert!(lines[0].contains("-d udp.port==8472,vxlan"), "{lines:?}");
        assert_eq!(lines[1..], ["  c/node-2.pcapng", "run r1 · trace t1"]);
        assert_eq!(run_footer(&[], "r1", "t1"), ["run r1 · trace t1"]);
    }
}
