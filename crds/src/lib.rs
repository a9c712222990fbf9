//! The `slicecache.io` API: the `SliceCache` custom resource, its defaults and
//! validation, the node agent's config file format, and the size and duration
//! types both use.
//!
//! The operator reads a [`SliceCache`], turns its spec into a
//! [`ValidatedSliceCache`] (or a [`ValidationErrors`] list for status and
//! Events), renders [`ValidatedSliceCache::agent_config`] into the agents'
//! ConfigMap, and reports [`SliceCacheStatus`].

#![forbid(unsafe_code)]

pub mod agent_config;
pub mod crd;
pub mod fleet_config;
pub mod fleet_members;
#[cfg(feature = "logging")]
pub mod logging;
pub mod quantity;
pub mod spec;
pub mod status;
pub mod units;
pub mod validate;

pub use spec::{SliceCache, SliceCacheSpec};
pub use status::SliceCacheStatus;
pub use validate::{ValidatedSliceCache, ValidationError, ValidationErrors};
