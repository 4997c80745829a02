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
//! Map: [`escape`] (text, anchors, URL paths) ← `ladder` (layout, then
//! SVG) ← `page` (the sections) ← [`render`].

pub mod escape;
mod ladder;
pub mod listing;
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

#[cfg(test)]
mod tests;
