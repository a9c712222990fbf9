//! The `slicecache.io` API: the `SliceCache` custom resource, its defaults and
//! validation, the node agent's config file format, and the size and duration
//! types both use.

pub mod agent_config;
pub mod quantity;
pub mod units;
