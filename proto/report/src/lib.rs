//! probemesh-report: a run as one self-contained HTML page, to attach to a
//! ticket. The verdict with its summary, fix and evidence (each item
//! linked to its check or to the observer of its packet), a ladder diagram
//! of every followed packet across the observers on the coordinator's
//! clock, the checks, the endpoints and why each was chosen, the timing,
//! the run and trace ids, and links to the capture files.
//!
//! A pure function from a `pb::RunRecord` to a `String`: inline CSS and
//! SVG, no script, no external asset; no I/O (`meshctl probe|runs --html`
//! writes the file, the coordinator's web view serves the same page).
//! Everything from the record is escaped: it comes from the network.
//!
//! A mesh matrix (`meshctl mesh`) is a heat map instead: [`render_mesh`].
//!
//! Map: [`escape`] (text, anchors, URL paths) ← `ladder` (layout, then
//! SVG) ← `page` (the sections) ← [`render`]; `matrix` ← [`render_mesh`].

pub mod escape;
mod ladder;
pub mod listing;
mod matrix;
mod page;

use probemesh_proto::{compat, pb};

/// The pages' style sheet, inlined in each (pages built elsewhere, such as
/// the coordinator's web view, use it too).
pub const STYLE: &str = include_str!("style.css");

/// A capture file to link from the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLink {
    /// What the reader sees: the file's name.
    pub label: String,
    /// A path relative to the page (or absolute); percent-encoded here.
    pub href: String,
}

/// The HTML page of `record`, linking `files`.
pub fn render(record: &pb::RunRecord, files: &[FileLink]) -> String {
    let mut upgraded = record.clone();
    compat::upgrade(&mut upgraded);
    page::page(&upgraded, files)
}

/// A `meshctl probe` run of one matrix pair, to link from its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairLink {
    /// The source probe (the cell's row).
    pub from: String,
    /// The probe's target as `meshctl probe --to` spells it (the cell's
    /// `probe_target`: `probe:NAME`, `pod:NS/NAME`, `nodeport:NODE:PORT`).
    pub to: String,
    /// Where the run's page is (the web view's `/runs/ID`): a path, relative
    /// to the page or absolute; percent-encoded here, so it never leaves
    /// the site it is served from.
    pub href: String,
}

/// The heat-map page of a mesh run (`record.matrix`), linking each failing
/// pair's entry to its run in `probe_runs` when one is named there.
pub fn render_mesh(record: &pb::RunRecord, probe_runs: &[PairLink]) -> String {
    matrix::page(record, probe_runs)
}

#[cfg(test)]
mod tests;
