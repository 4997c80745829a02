//! meshctl-lab: a simulated Kubernetes cluster in Linux network namespaces
//! on this machine (DESIGN §4), with the real coordinator and probes running
//! inside it, and the field's fault catalogue. `meshctl lab` is its command
//! (a thin clap layer in `meshctl`); coordinator tests use its
//! [`topology::inventory`] instead of hand-copied JSON.
//!
//! - [`topology`]: the fixed names and addresses, rendered as `ip`/`bridge`
//!   batches, DNS arguments and the inventory (pure);
//! - [`rules`]: kube-proxy, flannel and firewall iptables rulesets, and
//!   kube-proxy's nftables table in `--proxy-mode nftables` (pure);
//! - [`faults`]: the catalogue and each fault's inject/undo actions (pure);
//! - [`compose`]: composed faults, `MECHANISM[/PROTOCOL]@PLACE`, their
//!   ground-truth table and actions (pure);
//! - [`lifecycle`], [`system`], [`state`]: bring-up, teardown, status,
//!   fault execution and the I/O they need (root);
//! - [`client_config`]: meshctl's client configuration file, which `up`
//!   points at the lab and `down` restores;
//! - [`web`], [`conntrack`]: helpers the lab runs inside its namespaces;
//! - [`apiserver`]: the lab's Kubernetes API server (`meshctl lab serve-api`).
//!
//! Modules import one way: `topology` ← `rules` ← `faults` ← `compose` ← `state` ←
//! `system` ← `client_config` ← `lifecycle` (`web` and `conntrack` import
//! none).
//!
//! It is not a Kubernetes: no kubelet, no scheduler. [`apiserver`] serves the
//! cluster the inventory file describes over the Kubernetes API's wire
//! format, and plays the kubelet's part for the probe pods' projected tokens;
//! the coordinator watches it as it would a real cluster. It prints nothing
//! but progress notes on stderr: reports are returned.

pub mod apiserver;
pub mod client_config;
pub mod compose;
pub mod conntrack;
pub mod faults;
pub mod lifecycle;
pub mod rules;
pub mod state;
pub mod system;
pub mod topology;
pub mod web;
