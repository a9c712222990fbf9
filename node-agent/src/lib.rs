//! The slicecache node agent: a Pingora-based slicing HTTP cache.
//!
//! A request flows `server` → `range`/`slicer` (which aligned slices serve
//! it) → `cache` (L1 memory, L2 disk) → `fill` (coalesced origin subrequests
//! through `origin`). `admin` serves metrics, health and purge on its own
//! port; `config` loads and hot-reloads the YAML configuration.

pub mod admin;
pub mod cache;
pub mod client_limits;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod fill;
pub mod fleet;
pub mod log_throttle;
pub mod metrics;
pub mod object;
pub mod origin;
pub mod range;
pub mod request_check;
pub mod request_target;
pub mod response;
pub mod run;
pub mod sendfile;
pub mod server;
pub mod slicer;
pub mod store;
pub mod window;
