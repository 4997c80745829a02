//! How a mesh matrix reads, for every renderer of it: the names its cells
//! go by in JSON, progress and logs (`meshctl mesh -o json`, docs/mesh.md),
//! a cell's text in the grid, each grid's title, and the `meshctl probe`
//! that diagnoses a failing cell. One spelling for the coordinator,
//! meshctl's terminal grid and the HTML heat map.

use probemesh_proto::pb;

/// The grids, in the order they are shown: one per target kind.
pub const GRID_KINDS: [pb::MeshTargetKind; 3] = [
    pb::MeshTargetKind::Node,
    pb::MeshTargetKind::PodNetwork,
    pb::MeshTargetKind::Nodeport,
];

/// A cell's target kind: `node`, `pod-network`, `nodeport`.
pub fn target_kind_name(kind: pb::MeshTargetKind) -> &'static str {
    match kind {
        pb::MeshTargetKind::Node => "node",
        pb::MeshTargetKind::PodNetwork => "pod-network",
        pb::MeshTargetKind::Nodeport => "nodeport",
        pb::MeshTargetKind::Unspecified => "unspecified",
    }
}

/// A cell's status: `ok`, `degraded`, `fail`, `skipped`.
pub fn cell_status_name(status: pb::MeshCellStatus) -> &'static str {
    match status {
        pb::MeshCellStatus::Ok => "ok",
        pb::MeshCellStatus::Degraded => "degraded",
        pb::MeshCellStatus::Fail => "fail",
        pb::MeshCellStatus::Skipped => "skipped",
        pb::MeshCellStatus::Unspecified => "unspecified",
    }
}

/// A failing or lossy cell: one worth a `meshctl probe`.
pub fn is_broken(status: pb::MeshCellStatus) -> bool {
    matches!(
        status,
        pb::MeshCellStatus::Fail | pb::MeshCellStatus::Degraded
    )
}

/// Small echoes came back but a large one did not: the path loses only
/// large packets (an MTU black hole's signature).
pub fn large_blocked(c: &pb::MeshCell) -> bool {
    c.received > 0 && c.large_run && c.large_received < c.large_sent
}

/// Percentage of `sent` not answered, to one decimal.
pub fn loss_pct(sent: u32, received: u32) -> f64 {
    if sent == 0 {
        return 0.0;
    }
    let lost = f64::from(sent.saturating_sub(received));
    (lost * 1000.0 / f64::from(sent)).round() / 10.0
}

/// The grid's text for a cell of a matrix whose large echo is `size`
/// bytes: `0% 0.4ms ✓`, `0% 0.4ms ✗1472`, `33.3% 0.5ms`, `100% loss`,
/// `–` (skipped).
pub fn cell_text(c: &pb::MeshCell, size: u32) -> String {
    if c.status() == pb::MeshCellStatus::Skipped {
        return "–".to_owned();
    }
    if c.received == 0 {
        return "100% loss".to_owned();
    }
    let large = match (c.large_run, c.large_received) {
        (false, _) => String::new(),
        (true, r) if r > 0 && r == c.large_sent => " ✓".to_owned(),
        (true, _) => format!(" ✗{size}"),
    };
    format!(
        "{}% {}ms{large}",
        loss_pct(c.sent, c.received),
        c.rtt_median_ms
    )
}

/// The `meshctl probe` that diagnoses a broken cell: what the command
/// line says and `meshctl mesh --diagnose` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnose {
    /// The source probe.
    pub from: String,
    /// The target as `meshctl probe --to` spells it.
    pub to: String,
    /// The large-packet size, when it matters (only large packets vanish).
    pub size: Option<u32>,
}

/// The diagnosis of a failing or lossy cell of a matrix whose large echo
/// is `size` bytes; `None` for other cells and for a cell the coordinator
/// named no target for.
pub fn diagnose(c: &pb::MeshCell, size: u32) -> Option<Diagnose> {
    if !is_broken(c.status()) || c.probe_target.is_empty() {
        return None;
    }
    Some(Diagnose {
        from: c.from.clone(),
        to: c.probe_target.clone(),
        // The size matters to the diagnosis when only large packets vanish.
        size: large_blocked(c).then_some(size),
    })
}

/// [`diagnose`] as the command line to run.
pub fn diagnose_command(c: &pb::MeshCell, size: u32) -> Option<String> {
    let d = diagnose(c, size)?;
    let size = d.size.map_or_else(String::new, |s| format!(" --size {s}"));
    Some(format!(
        "meshctl probe --from {} --to {}{size}",
        d.from, d.to
    ))
}

/// The title of the grid of `kind`, for a matrix of `count` echoes and a
/// large echo of `size` bytes.
pub fn grid_title(kind: pb::MeshTargetKind, count: u32, size: u32) -> String {
    match kind {
        pb::MeshTargetKind::Node if size > 0 => {
            format!("host address: ICMP, {count} echoes, one large DF echo of {size} B")
        }
        pb::MeshTargetKind::Node => format!("host address: ICMP, {count} echoes"),
        pb::MeshTargetKind::PodNetwork => {
            format!("pod network: ICMP to a pod on the node, {count} echoes")
        }
        pb::MeshTargetKind::Nodeport => format!("NodePort: TCP connects, {count}"),
        pb::MeshTargetKind::Unspecified => "unspecified".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(received: u32, large_received: u32, status: pb::MeshCellStatus) -> pb::MeshCell {
        let mut c = pb::MeshCell {
            from: "cloudvm-1".into(),
            to: "node-2".into(),
            sent: 3,
            received,
            rtt_median_ms: 0.412,
            large_run: true,
            large_sent: 1,
            large_received,
            probe_target: "probe:node-2".into(),
            ..Default::default()
        };
        c.set_status(status);
        c
    }

    #[test]
    fn a_cell_reads_as_the_grid_shows_it() {
        use pb::MeshCellStatus::{Degraded, Fail, Ok, Skipped};
        assert_eq!(cell_text(&cell(3, 1, Ok), 1472), "0% 0.412ms ✓");
        assert_eq!(cell_text(&cell(3, 0, Fail), 1472), "0% 0.412ms ✗1472");
        assert_eq!(cell_text(&cell(2, 1, Degraded), 1472), "33.3% 0.412ms ✓");
        assert_eq!(cell_text(&cell(0, 0, Fail), 1472), "100% loss");
        assert_eq!(cell_text(&cell(0, 0, Skipped), 1472), "–");
    }

    #[test]
    fn only_broken_cells_get_a_command_and_only_a_large_loss_its_size() {
        use pb::MeshCellStatus::{Fail, Ok};
        assert_eq!(
            diagnose_command(&cell(3, 0, Fail), 1472).as_deref(),
            Some("meshctl probe --from cloudvm-1 --to probe:node-2 --size 1472")
        );
        assert_eq!(
            diagnose_command(&cell(0, 0, Fail), 1472).as_deref(),
            Some("meshctl probe --from cloudvm-1 --to probe:node-2")
        );
        assert_eq!(diagnose_command(&cell(3, 1, Ok), 1472), None);
        let mut untargeted = cell(0, 0, Fail);
        untargeted.probe_target.clear();
        assert_eq!(diagnose_command(&untargeted, 1472), None);
    }
}
