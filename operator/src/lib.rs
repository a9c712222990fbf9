//! The slicecache operator: reconciles `SliceCache` resources into fleets of
//! node agents (see [`controller`]), elects a leader on a Lease
//! ([`leader`]), reports on itself ([`metrics`]) and prints its manifests
//! offline ([`render`], [`rbac`]).

#![forbid(unsafe_code)]

pub mod controller;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod render;
