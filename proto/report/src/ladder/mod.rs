//! The ladder (sequence) diagram of a run: observers side by side, time
//! flowing down on the coordinator's clock, each followed packet drawn
//! across the observers that saw it. [`layout`] places things, [`svg`]
//! writes them; neither reads anything but the record.

mod layout;
mod svg;

use probemesh_proto::pb;

/// The diagram with its caption, or `None` when the run followed no
/// packet (no captures, or correlation skipped).
pub fn section(record: &pb::RunRecord) -> Option<Diagram> {
    let ladder = layout::layout(record)?;
    Some(Diagram {
        shown: ladder.rows.len(),
        total: ladder.total,
        us_per_row: layout::ROW_SPAN / ladder.px_per_ns / 1e3,
        svg: svg::svg(&ladder),
    })
}

/// A rendered ladder.
#[derive(Debug)]
pub struct Diagram {
    /// Packets drawn.
    pub shown: usize,
    /// Packets followed in all.
    pub total: u64,
    /// The delay a row's height stands for, microseconds.
    pub us_per_row: f64,
    /// The `<svg>` element.
    pub svg: String,
}

/// The lane anchor of an observer (`PROBE/IFACE`), as the ladder names it.
pub fn lane_anchor(observer: &str) -> String {
    crate::escape::anchor("obs", &layout::canonical(observer))
}
