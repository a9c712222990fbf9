//! Test support for every crate of the workspace, in one place.
//!
//! - [`process`]: child processes killed when their guard drops, the
//!   binaries cargo built (checked to be newer than their sources), `which`.
//! - [`net`]: free loopback ports.
//! - [`wait`]: polling a condition until a deadline.
//! - [`origin`]: a real TCP origin that records what it saw and injects
//!   failures (latency, 429s, ignored ranges, rate limits).
//! - [`client`]: a keep-alive HTTP/1.1 client that checks bodies by length.
//! - [`scripted`]: an HTTP server whose answers a closure scripts (a stand-in
//!   for Prometheus's query API, or a server that never answers).
//! - [`prometheus`]: a real Prometheus server scraping given targets.
//! - [`loop_device`]: loop devices over sparse files (root only).
//! - [`metrics`]: reading samples out of Prometheus text.
//! - [`mock_apiserver`] (feature `mock-apiserver`): decoding the calls a
//!   `kube::Client` makes to a `tower-test` mock.
//! - the `delay-proxy` binary (`src/bin/delay-proxy.rs`): a TCP proxy that
//!   delays each direction, for an origin a round trip away in
//!   `bench/run.sh` on a kernel without netem.
//!
//! Nothing here is a mock of slicecache's own parts: tests run the real
//! binaries against these real servers.

pub mod client;
pub mod loop_device;
pub mod metrics;
#[cfg(feature = "mock-apiserver")]
pub mod mock_apiserver;
pub mod net;
pub mod origin;
pub mod process;
pub mod prometheus;
pub mod scripted;
pub mod wait;
