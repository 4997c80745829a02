//! The names a mesh matrix's cells go by in JSON, progress and logs
//! (`meshctl mesh -o json`, docs/mesh.md): one spelling for the coordinator
//! and meshctl.

use probemesh_proto::pb;

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
