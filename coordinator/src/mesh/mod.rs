//! Several coordinators, all active: membership and probe ownership in etcd
//! ([`membership`]), the relay that carries a run's tasks to the coordinator
//! holding the probe ([`relay`]), and the clock chain through it ([`clock`]).
//! The Peer service answers the other side.
//!
//! Without `--etcd` none of this runs: one coordinator, its own registry.

pub mod clock;
pub mod membership;
pub mod relay;
