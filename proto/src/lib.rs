//! probemesh's wire: the gRPC protocol (`pb`), and what every side of it shares.
/// Generated gRPC types and services (package `probemesh.v1`).
#[allow(clippy::large_enum_variant, missing_docs)]
pub mod pb {
    tonic::include_proto!("probemesh.v1");
}
pub mod bpf;
pub mod clock_udp;
pub mod duration;
pub mod identity;
pub mod inventory;
pub mod pki;
pub mod target;
pub mod telemetry;
pub mod timeline;
pub mod tls;
pub mod token;
pub mod verdict;
