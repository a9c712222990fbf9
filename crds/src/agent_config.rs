//! The node agent's configuration file: the contract between the operator,
//! which renders it into a ConfigMap, and `slicecache-agent`, which reads it.
//!
//! Fields under [`Tunables`] hot-reload when the file changes; everything else
//! takes effect on restart. Unknown fields are rejected so that a typo is an
//! error with a line number, not a silently ignored setting.

use serde::{Deserialize, Serialize};

pub use crate::fleet_config::FleetConfig;
use crate::units::{ByteSize, HumanDuration};

/// Default client listener.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default admin listener (metrics, health, purge).
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9090";

/// The whole agent configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// Address the client listener binds.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Address the admin listener binds (metrics, health, purge).
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// Worker threads for the proxy; 0 means one per core.
    #[serde(default)]
    pub threads: usize,
    pub origin: OriginConfig,
    /// Values the tuner may change while the agent runs.
    #[serde(default)]
    pub tunables: Tunables,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    /// Limits on client connections: timeouts and caps.
    #[serde(default, skip_serializing_if = "ClientConfig::is_default")]
    pub client: ClientConfig,
    /// The fleet this agent is a member of; none when `peers` is empty.
    #[serde(default, skip_serializing_if = "FleetConfig::is_default")]
    pub fleet: FleetConfig,
}

/// Where misses go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OriginConfig {
    /// Origin base URL, `http://` or `https://`.
    pub url: String,
    /// Host header sent to the origin; defaults to the URL's authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_header: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Time allowed from sending a request to the first response byte.
    #[serde(default = "default_first_byte_timeout")]
    pub first_byte_timeout: HumanDuration,
    /// Time allowed between two reads of a response body.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Origin subrequests this agent runs at once, across all clients.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

/// Settings that hot-reload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tunables {
    /// Slice size: a power of two within [`MIN_SLICE_SIZE`]..=[`MAX_SLICE_SIZE`].
    #[serde(default = "default_slice_size")]
    pub slice_size: ByteSize,
    /// Origin subrequests in flight per client request (1-64).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Objects up to this size are fetched and cached whole.
    #[serde(default)]
    pub min_object_size: ByteSize,
    /// Retries for a failed slice fetch.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Freshness lifetime when the origin gives none (or is overridden).
    #[serde(default = "default_ttl")]
    pub default_ttl: HumanDuration,
    /// Whether origin `Cache-Control`/`Expires` win over `defaultTtl`.
    #[serde(default = "default_true")]
    pub honor_origin_cache_control: bool,
}

/// Cache tiers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheConfig {
    /// L1 memory cache size.
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    /// L2 block devices (or files used as devices).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceConfig>,
    /// Discover devices at start: whole disks whose name (e.g. `nvme0n1`)
    /// matches this regex. Mounted disks and disks carrying a filesystem or
    /// partition table are refused, each with a logged reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_filter: Option<String>,
    /// Discover every unused whole disk at start (same refusals as above).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_all_devices: bool,
    /// Format policy for discovered devices.
    #[serde(default)]
    pub discovered_format: FormatPolicy,
    /// Accept a memory tier larger than the host's memory (or larger than
    /// the agent's cgroup limit). Off by default: such a tier would push the
    /// node into swapping or the OOM killer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_memory: bool,
}

/// One L2 device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceConfig {
    /// Block device path or file path.
    pub path: String,
    /// Size to create a missing file with, and the most of the device to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<ByteSize>,
    #[serde(default)]
    pub format: FormatPolicy,
}

/// Whether the agent may write a superblock on a device that is not ours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum FormatPolicy {
    /// Format a device that is blank (all zeros where signatures live) or
    /// already carries the slicecache marker; refuse anything else.
    #[default]
    IfNotOwned,
    /// Never format: use only devices that already carry the marker.
    Never,
    /// Format the device whatever it holds: a foreign filesystem, partition
    /// table or data is erased. Only for devices named one by one (`devices`,
    /// a file); refused together with discovery (`deviceFilter`,
    /// `useAllDevices`), where it could erase a disk nobody named.
    Overwrite,
}

/// Admin listener settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminConfig {
    /// File holding the bearer token for purge requests (a mounted Secret).
    /// Without a token, purge is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_token_file: Option<String>,
}

/// How long clients may take and how many connections they may hold.
/// Every cut is counted in `slicecache_client_connections_closed_total`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConfig {
    /// Time a new connection has to send its whole first request header
    /// (slowloris protection).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: HumanDuration,
    /// Time an idle keep-alive connection is held open for the next request.
    #[serde(default = "default_keepalive_timeout")]
    pub keepalive_timeout: HumanDuration,
    /// Time allowed for one write to a client that has stopped reading.
    #[serde(default = "default_send_timeout")]
    pub send_timeout: HumanDuration,
    /// Lowest rate (bytes per second) a response may be read at before the
    /// connection is cut; 0 turns the rate check off (`sendTimeout` stays).
    #[serde(default = "default_min_send_rate")]
    pub min_send_rate: ByteSize,
    /// Client connections open at once; 0 means automatic: the descriptor
    /// limit less a reserve for the origin, the devices and the admin port.
    #[serde(default)]
    pub max_connections: u32,
    /// Connections one client address may hold; 0 means half of
    /// `maxConnections`.
    #[serde(default)]
    pub max_connections_per_ip: u32,
}

impl ClientConfig {
    /// Whether every field has its default (such a section is not rendered).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            header_timeout: default_header_timeout(),
            keepalive_timeout: default_keepalive_timeout(),
            send_timeout: default_send_timeout(),
            min_send_rate: default_min_send_rate(),
            max_connections: 0,
            max_connections_per_ip: 0,
        }
    }
}

impl Default for Tunables {
    fn default() -> Self {
        Self {
            slice_size: default_slice_size(),
            concurrency: default_concurrency(),
            min_object_size: ByteSize::default(),
            retries: default_retries(),
            default_ttl: default_ttl(),
            honor_origin_cache_control: true,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            memory: default_memory(),
            devices: Vec::new(),
            device_filter: None,
            use_all_devices: false,
            discovered_format: FormatPolicy::default(),
            force_memory: false,
        }
    }
}

impl OriginConfig {
    /// An origin at `url` with default timeouts and limits.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            host_header: None,
            connect_timeout: default_connect_timeout(),
            first_byte_timeout: default_first_byte_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

impl AgentConfig {
    /// A configuration with defaults everywhere but the origin.
    pub fn for_origin(url: impl Into<String>) -> Self {
        Self {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            threads: 0,
            origin: OriginConfig::new(url),
            tunables: Tunables::default(),
            cache: CacheConfig::default(),
            admin: AdminConfig::default(),
            client: ClientConfig::default(),
            fleet: FleetConfig::default(),
        }
    }
}

/// Smallest allowed slice size: the one statement of this bound, which the
/// validation, the tuner and the agent all use.
pub const MIN_SLICE_SIZE: u64 = 64 << 10;
/// Largest allowed slice size: the one statement of this bound, which the
/// validation, the tuner and the agent all use.
pub const MAX_SLICE_SIZE: u64 = 64 << 20;
/// Largest allowed per-request concurrency.
pub const MAX_CONCURRENCY: u32 = 64;

/// `size` moved inside `min..=max` (a `max` below `min` counts as `min`)
/// and rounded down to a power of two, never below `min`: how a slice size
/// that may lie outside bounds (a default, a value carried over from before
/// the bounds changed) is brought inside them.
pub fn clamp_slice_size(size: u64, min: u64, max: u64) -> u64 {
    let size = size.clamp(min, max.max(min));
    if size.is_power_of_two() {
        size
    } else {
        size.checked_ilog2().map_or(min, |log| (1u64 << log).max(min))
    }
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
fn default_admin_listen() -> String {
    DEFAULT_ADMIN_LISTEN.to_string()
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration::secs(2)
}
fn default_first_byte_timeout() -> HumanDuration {
    HumanDuration::secs(15)
}
fn default_idle_timeout() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_max_connections() -> u32 {
    256
}
fn default_slice_size() -> ByteSize {
    ByteSize::mib(1)
}
fn default_concurrency() -> u32 {
    4
}
fn default_retries() -> u32 {
    2
}
fn default_ttl() -> HumanDuration {
    HumanDuration::secs(3600)
}
fn default_true() -> bool {
    true
}
fn default_header_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}
fn default_keepalive_timeout() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_send_timeout() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_min_send_rate() -> ByteSize {
    ByteSize::kib(1)
}
fn default_memory() -> ByteSize {
    ByteSize::mib(256)
}
