//! The slicecache operator: reconciles `SliceCache` resources into fleets of
//! node agents (see [`controller`]), elects a leader on a Lease
//! ([`leader`]), reports on itself ([`metrics`]) and prints its manifests
//! offline ([`render`], [`rbac`]) and tunes slice size and concurrency from
//! the agents' Prometheus metrics ([`tuner`]).

#![forbid(unsafe_code)]

pub mod controller;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod render;
pub mod tuner;
