//! What a capture is asked to do, and the hard limits the probe enforces on
//! it whatever the coordinator sends: ten minutes, ten million packets,
//! 2 GiB, snap length 64..=262 144 bytes, and payloads (a snap length above
//! [`HEADERS_ONLY_SNAPLEN`]) only when the caller says they are allowed.

use std::collections::HashSet;
use std::time::Duration;

use probemesh_packet::bpf::{self, CompiledFilter, FilterError};

/// Snap length that keeps headers only (Ethernet + IPv4/IPv6 + TCP with
/// options, or the start of an encapsulated packet), bytes. The default.
pub const HEADERS_ONLY_SNAPLEN: u32 = 128;
/// Smallest snap length accepted, bytes.
pub const MIN_SNAPLEN: u32 = 64;
/// Largest snap length accepted, bytes (the kernel's and tcpdump's maximum).
pub const MAX_SNAPLEN: u32 = 262_144;
/// Longest capture.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// Most packets one capture writes.
pub const MAX_PACKETS: u64 = 10_000_000;
/// Largest capture file, bytes (2 GiB).
pub const MAX_BYTES: u64 = 2 << 30;
/// Most interfaces one capture covers.
pub const MAX_INTERFACES: usize = 16;
/// Longest an arming instant may lie ahead.
pub const MAX_ARM_AHEAD: Duration = Duration::from_secs(60);

/// When a capture ends by itself (whichever comes first). The default is
/// the hard maximum of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureLimits {
    /// How long the rings stay live, from the instant they were armed.
    pub duration: Duration,
    /// Packets written, over all interfaces.
    pub max_packets: u64,
    /// Size of the capture file, bytes.
    pub max_bytes: u64,
}

impl Default for CaptureLimits {
    fn default() -> Self {
        Self {
            duration: MAX_DURATION,
            max_packets: MAX_PACKETS,
            max_bytes: MAX_BYTES,
        }
    }
}

/// One capture, on interfaces of one network namespace (the namespace of
/// the thread that runs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSpec {
    /// Interface names as the namespace knows them (`eth0`, `flannel.1`).
    pub interfaces: Vec<String>,
    /// The filter, compiled by the coordinator or CLI
    /// ([`probemesh_packet::bpf::compile_filter`]).
    pub filter: CompiledFilter,
    /// Bytes kept of each packet.
    pub snaplen: u32,
    /// Whether the caller may have payloads (a snap length above
    /// [`HEADERS_ONLY_SNAPLEN`]); the coordinator decides by role.
    pub payload_allowed: bool,
    /// When the capture ends.
    pub limits: CaptureLimits,
}

impl CaptureSpec {
    /// A headers-only capture of `interfaces` with `filter` and default limits.
    pub fn headers_only(interfaces: Vec<String>, filter: CompiledFilter) -> Self {
        Self {
            interfaces,
            filter,
            snaplen: HEADERS_ONLY_SNAPLEN,
            payload_allowed: false,
            limits: CaptureLimits::default(),
        }
    }

    /// Checks the spec against the hard limits.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.interfaces.is_empty() {
            return Err(SpecError::NoInterfaces);
        }
        if self.interfaces.len() > MAX_INTERFACES {
            return Err(SpecError::TooManyInterfaces(self.interfaces.len()));
        }
        let mut seen = HashSet::new();
        for name in &self.interfaces {
            // IFNAMSIZ is 16 with the NUL; '/' and whitespace never occur.
            let valid = !name.is_empty()
                && name.len() < 16
                && !name.contains(['/', '\0'])
                && !name.chars().any(char::is_whitespace);
            if !valid {
                return Err(SpecError::InterfaceName(name.clone()));
            }
            if !seen.insert(name.as_str()) {
                return Err(SpecError::DuplicateInterface(name.clone()));
            }
        }
        if !(MIN_SNAPLEN..=MAX_SNAPLEN).contains(&self.snaplen) {
            return Err(SpecError::Snaplen(self.snaplen));
        }
        if self.snaplen > HEADERS_ONLY_SNAPLEN && !self.payload_allowed {
            return Err(SpecError::PayloadNotAllowed(self.snaplen));
        }
        let limits = &self.limits;
        if limits.duration.is_zero() || limits.duration > MAX_DURATION {
            return Err(SpecError::Duration(limits.duration));
        }
        if !(1..=MAX_PACKETS).contains(&limits.max_packets) {
            return Err(SpecError::Packets(limits.max_packets));
        }
        if !(1..=MAX_BYTES).contains(&limits.max_bytes) {
            return Err(SpecError::Bytes(limits.max_bytes));
        }
        bpf::validate(&self.filter.expr, &self.filter.ethernet)?;
        if !self.filter.raw_ip.is_empty() {
            bpf::validate(&self.filter.expr, &self.filter.raw_ip)?;
        }
        Ok(())
    }
}

/// Why a capture spec was refused. All are the caller's mistakes: not
/// retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No interface named.
    #[error("no interface to capture on")]
    NoInterfaces,
    /// More than [`MAX_INTERFACES`].
    #[error("{0} interfaces in one capture; at most {MAX_INTERFACES}")]
    TooManyInterfaces(usize),
    /// Not something the kernel accepts as an interface name.
    #[error("'{0}' is not an interface name")]
    InterfaceName(String),
    /// The same interface twice.
    #[error("interface {0} is named twice")]
    DuplicateInterface(String),
    /// Snap length out of range.
    #[error("snap length {0} bytes is outside {MIN_SNAPLEN}..={MAX_SNAPLEN}")]
    Snaplen(u32),
    /// Payload asked for without the right to it.
    #[error(
        "snap length {0} bytes would capture payloads, which this caller may not (headers only: {HEADERS_ONLY_SNAPLEN} bytes)"
    )]
    PayloadNotAllowed(u32),
    /// Duration zero or above [`MAX_DURATION`].
    #[error("capture duration {0:?} is outside (0, 10 min]")]
    Duration(Duration),
    /// Packet limit zero or above [`MAX_PACKETS`].
    #[error("packet limit {0} is outside 1..={MAX_PACKETS}")]
    Packets(u64),
    /// Byte limit zero or above [`MAX_BYTES`].
    #[error("byte limit {0} is outside 1..={MAX_BYTES} (2 GiB)")]
    Bytes(u64),
    /// The arming instant lies more than [`MAX_ARM_AHEAD`] ahead.
    #[error("arming instant is {0:?} ahead; at most {MAX_ARM_AHEAD:?}")]
    ArmTooFar(Duration),
    /// The filter program cannot be attached.
    #[error(transparent)]
    Filter(#[from] FilterError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use probemesh_packet::bpf::BpfInsn;
    use test_case::test_case;

    fn spec() -> CaptureSpec {
        let accept = vec![BpfInsn {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 128,
        }];
        CaptureSpec::headers_only(
            vec!["eth0".into(), "flannel.1".into()],
            CompiledFilter {
                expr: String::new(),
                ethernet: accept.clone(),
                raw_ip: accept,
            },
        )
    }

    #[test]
    fn the_default_spec_is_headers_only_and_valid() {
        let spec = spec();
        assert_eq!(spec.snaplen, 128);
        assert!(!spec.payload_allowed);
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test_case(|s| s.interfaces.clear() => Err(SpecError::NoInterfaces) ; "no interface")]
    #[test_case(|s| s.interfaces.push("eth0".into()) => Err(SpecError::DuplicateInterface("eth0".into())) ; "duplicate")]
    #[test_case(|s| s.interfaces[0] = "a/b".into() => Err(SpecError::InterfaceName("a/b".into())) ; "slash")]
    #[test_case(|s| s.interfaces[0] = "x".repeat(16) => Err(SpecError::InterfaceName("x".repeat(16))) ; "too long")]
    #[test_case(|s| s.interfaces = (0..17).map(|i| format!("e{i}")).collect() => Err(SpecError::TooManyInterfaces(17)) ; "too many")]
    #[test_case(|s| s.snaplen = 63 => Err(SpecError::Snaplen(63)) ; "snaplen too small")]
    #[test_case(|s| s.snaplen = 262_145 => Err(SpecError::Snaplen(262_145)) ; "snaplen too large")]
    #[test_case(|s| s.snaplen = 1514 => Err(SpecError::PayloadNotAllowed(1514)) ; "payload refused")]
    #[test_case(|s| { s.snaplen = 262_144; s.payload_allowed = true } => Ok(()) ; "payload allowed")]
    #[test_case(|s| s.snaplen = 64 => Ok(()) ; "smallest snaplen")]
    #[test_case(|s| s.limits.duration = Duration::ZERO => Err(SpecError::Duration(Duration::ZERO)) ; "zero duration")]
    #[test_case(|s| s.limits.duration = Duration::from_secs(601) => Err(SpecError::Duration(Duration::from_secs(601))) ; "long duration")]
    #[test_case(|s| s.limits.max_packets = 10_000_001 => Err(SpecError::Packets(10_000_001)) ; "too many packets")]
    #[test_case(|s| s.limits.max_packets = 0 => Err(SpecError::Packets(0)) ; "zero packets")]
    #[test_case(|s| s.limits.max_bytes = (2 << 30) + 1 => Err(SpecError::Bytes((2 << 30) + 1)) ; "too many bytes")]
    #[test_case(|s| s.filter.raw_ip.clear() => Ok(()) ; "no raw-ip program")]
    fn spec_validation(change: fn(&mut CaptureSpec)) -> Result<(), SpecError> {
        let mut spec = spec();
        change(&mut spec);
        spec.validate()
    }

    #[test]
    fn a_broken_program_is_refused_with_its_expression() {
        let mut spec = spec();
        spec.filter.expr = "icmp".into();
        spec.filter.ethernet = vec![BpfInsn {
            code: 0x15,
            jt: 5,
            jf: 0,
            k: 1,
        }];
        let err = spec.validate().expect_err("jump past the end");
        assert!(err.to_string().contains("filter 'icmp'"), "{err}");
    }
}
