//! probemesh-proto: the wire, and only the wire.
//!
//! The gRPC protocol (`pb`, generated from `proto/probemesh/v1/probemesh.proto`),
//! the UDP clock datagrams ([`clock_udp`]), and who may speak it: TLS
//! configuration ([`tls`]), the certificate authority ([`pki`]), identities
//! carried in certificates ([`identity`]), join tokens ([`token`]) and the
//! web view's viewer tokens ([`viewer_token`]);
//! reading records stored before the check/verdict enums ([`compat`]).
//! Domain types live in `probemesh-model`, packet bytes in `probemesh-packet`,
//! logs/traces/metrics set-up in `probemesh-telemetry`.

/// Generated gRPC types and services (package `probemesh.v1`).
#[allow(clippy::large_enum_variant, missing_docs)]
pub mod pb {
    tonic::include_proto!("probemesh.v1");
}
pub mod clock_udp;
pub mod compat;

/// The `Hello` capability of a probe that can set a capture up and then
/// wait for the coordinator's `ArmCapture` (`CaptureTask.arm_when_told`).
pub const CAPTURE_ARM_WHEN_TOLD: &str = "capture_arm_when_told";
pub mod identity;
pub mod pki;
pub mod tls;
pub mod token;
pub mod viewer_token;
