//! Agent configuration: the YAML file (the operator's ConfigMap), command-line
//! overrides, validation, and hot reload of the tunables.
//!
//! Only [`Tunables`] reload at run time: slice size, concurrency, retries and
//! TTLs change for new requests while connections and caches stay as they
//! are. A file that fails to parse or validate is logged and ignored; the
//! running configuration stays in force.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use slicecache_api::agent_config::{
    AgentConfig, FormatPolicy, Tunables, MAX_CONCURRENCY, MAX_SLICE_SIZE, MIN_SLICE_SIZE,
};
use slicecache_api::fleet_config::MAX_GRANULE;
use slicecache_api::units::ByteSize;
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::object::FreshnessPolicy;

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

/// Command-line values that override the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub origin: Option<String>,
    pub device: Option<String>,
    pub device_size: Option<ByteSize>,
    pub memory_cache: Option<ByteSize>,
    pub force_memory: bool,
    pub slice_size: Option<ByteSize>,
    pub concurrency: Option<u32>,
    pub node_name: Option<String>,
    pub peer_listen: Option<String>,
    /// Static fleet members; replaces the file's list when given.
    pub peers: Option<BTreeMap<String, String>>,
    pub peer_token_file: Option<String>,
    pub peers_service: Option<String>,
    pub fleet_granule: Option<ByteSize>,
    pub fleet_replicas: Option<u8>,
    pub fleet_hot_key_rate: Option<u32>,
    pub fleet_load_bound: Option<f64>,
}

impl Overrides {
    pub fn apply(&self, cfg: &mut AgentConfig) {
        if let Some(v) = &self.listen {
            cfg.listen = v.clone();
        }
        if let Some(v) = &self.admin_listen {
            cfg.admin_listen = v.clone();
        }
        if let Some(v) = &self.origin {
            cfg.origin.url = v.clone();
        }
        if let Some(path) = &self.device {
            cfg.cache.devices = vec![slicecache_api::agent_config::DeviceConfig {
                path: path.clone(),
                size: self.device_size,
                format: Default::default(),
            }];
        }
        if let Some(v) = self.memory_cache {
            cfg.cache.memory = v;
        }
        cfg.cache.force_memory |= self.force_memory;
        let fleet = &mut cfg.fleet;
        if let Some(v) = &self.node_name {
            fleet.node_name = Some(v.clone());
        }
        if let Some(v) = &self.peer_listen {
            fleet.peer_listen = v.clone();
        }
        if let Some(v) = &self.peers {
            fleet.peers = v.clone();
        }
        if let Some(v) = &self.peers_service {
            fleet.peers_service = Some(v.clone());
        }
        if let Some(v) = &self.peer_token_file {
            fleet.peer_token_file = Some(v.clone());
        }
        if let Some(v) = self.fleet_granule {
            fleet.granule = v;
        }
        if let Some(v) = self.fleet_replicas {
            fleet.replicas = v;
        }
        if let Some(v) = self.fleet_hot_key_rate {
            fleet.hot_key_rate = v;
        }
        if let Some(v) = self.fleet_load_bound {
            fleet.load_bound = v;
        }
        self.apply_tunables(&mut cfg.tunables);
    }

    /// Flags beat the file for tunables too, including after a reload.
    pub fn apply_tunables(&self, t: &mut Tunables) {
        if let Some(v) = self.slice_size {
            t.slice_size = v;
        }
        if let Some(v) = self.concurrency {
            t.concurrency = v;
        }
    }
}

/// Parses a config file.
pub fn load_file(path: &Path) -> Result<AgentConfig, ConfigError> {
    load_file_bytes(path).map(|(cfg, _)| cfg)
}

/// Parses a config file and returns the bytes it parsed, which the reload
/// watcher starts from (so an edit right after start is never missed).
pub fn load_file_bytes(path: &Path) -> Result<(AgentConfig, Vec<u8>), ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let cfg = parse(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((cfg, bytes))
}

/// Parses config YAML; the message carries the line and column.
pub fn parse(text: &str) -> Result<AgentConfig, serde_yaml_ng::Error> {
    serde_yaml_ng::from_str(text)
}

/// Per-agent settings a fill needs; a snapshot taken when it starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FillSettings {
    pub retries: u32,
    pub freshness: FreshnessPolicy,
}

/// Tunables in the form the data path uses, checked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RuntimeTunables {
    pub slice_size: u64,
    pub concurrency: usize,
    pub min_object_size: u64,
    pub fill: FillSettings,
}

impl RuntimeTunables {
    pub fn from_config(t: &Tunables) -> Result<Self, ConfigError> {
        let size = t.slice_size.bytes();
        if !size.is_power_of_two() || !(MIN_SLICE_SIZE..=MAX_SLICE_SIZE).contains(&size) {
            return Err(invalid(
                "tunables.sliceSize",
                format!(
                    "{} must be a power of two from {} to {}",
                    t.slice_size,
                    ByteSize(MIN_SLICE_SIZE),
                    ByteSize(MAX_SLICE_SIZE)
                ),
            ));
        }
        if t.concurrency == 0 || t.concurrency > MAX_CONCURRENCY {
            return Err(invalid(
                "tunables.concurrency",
                format!("{} must be from 1 to {MAX_CONCURRENCY}", t.concurrency),
            ));
        }
        if t.retries > 10 {
            return Err(invalid("tunables.retries", format!("{} must be at most 10", t.retries)));
        }
        Ok(Self {
            slice_size: size,
            concurrency: t.concurrency as usize,
            min_object_size: t.min_object_size.bytes(),
            fill: FillSettings {
                retries: t.retries,
                freshness: FreshnessPolicy {
                    default_ttl: t.default_ttl.get(),
                    honor_origin: t.honor_origin_cache_control,
                },
            },
        })
    }
}

/// Checks the parts of a config that only take effect at start, against
/// this host's memory.
pub fn validate(cfg: &AgentConfig) -> Result<RuntimeTunables, ConfigError> {
    check_bounds(cfg)?;
    check_memory(&cfg.cache, memory_ceiling())?;
    validate_rest(cfg)
}

/// Every size and count within bounds, so nothing is allocated or opened
/// from an absurd value. (The memory tier against the host: [`check_memory`].)
fn check_bounds(cfg: &AgentConfig) -> Result<(), ConfigError> {
    let counts: [(&'static str, u64, u64); 4] = [
        ("threads", cfg.threads as u64, MAX_THREADS),
        (
            "origin.maxConnections",
            u64::from(cfg.origin.max_connections),
            MAX_ORIGIN_CONNECTIONS,
        ),
        (
            "client.maxConnections",
            u64::from(cfg.client.max_connections),
            MAX_CLIENT_CONNECTIONS,
        ),
        (
            "client.maxConnectionsPerIp",
            u64::from(cfg.client.max_connections_per_ip),
            MAX_CLIENT_CONNECTIONS,
        ),
    ];
    for (field, value, max) in counts {
        if value > max {
            return Err(invalid(field, format!("{value} is more than the limit of {max}")));
        }
    }
    let durations = [
        ("origin.connectTimeout", cfg.origin.connect_timeout.get()),
        ("origin.firstByteTimeout", cfg.origin.first_byte_timeout.get()),
        ("origin.idleTimeout", cfg.origin.idle_timeout.get()),
        ("client.headerTimeout", cfg.client.header_timeout.get()),
        ("client.keepaliveTimeout", cfg.client.keepalive_timeout.get()),
        ("client.sendTimeout", cfg.client.send_timeout.get()),
    ];
    for (field, value) in durations {
        if value < MIN_TIMEOUT || value > MAX_TIMEOUT {
            return Err(invalid(
                field,
                format!("{value:?} must be from {MIN_TIMEOUT:?} to {MAX_TIMEOUT:?}"),
            ));
        }
    }
    if cfg.tunables.default_ttl.get() > MAX_TTL {
        return Err(invalid(
            "tunables.defaultTtl",
            format!(
                "{:?} is more than the limit of {MAX_TTL:?}",
                cfg.tunables.default_ttl.get()
            ),
        ));
    }
    if cfg.tunables.min_object_size.bytes() > MAX_SLICE_SIZE {
        return Err(invalid(
            "tunables.minObjectSize",
            format!(
                "{} is larger than the largest slice, 64Mi",
                cfg.tunables.min_object_size
            ),
        ));
    }
    for device in &cfg.cache.devices {
        if let Some(size) = device.size {
            if size.bytes() > MAX_DEVICE_SIZE {
                return Err(invalid(
                    "cache.devices.size",
                    format!("{size} for {} is more than the limit of 1Pi", device.path),
                ));
            }
        }
    }
    Ok(())
}

/// The memory tier against what the agent may use: refused when larger
/// than `ceiling` (the host's memory, or its cgroup's limit) unless forced,
/// and always when larger than [`MAX_MEMORY_TIER`].
pub fn check_memory(
    cache: &slicecache_api::agent_config::CacheConfig,
    ceiling: Option<u64>,
) -> Result<(), ConfigError> {
    let tier = cache.memory.bytes();
    if tier > MAX_MEMORY_TIER {
        return Err(invalid(
            "cache.memory",
            format!(
                "{} (--memory-cache) is more than the limit of {}",
                cache.memory,
                ByteSize(MAX_MEMORY_TIER)
            ),
        ));
    }
    match ceiling {
        Some(limit) if tier > limit && !cache.force_memory => Err(invalid(
            "cache.memory",
            format!(
                "{} (--memory-cache) is more than the {} of memory this agent may use (the host's memory or its cgroup limit, whichever is lower); \
                 lower it, or set cache.forceMemory (--force-memory-cache) to accept it",
                cache.memory,
                ByteSize(limit)
            ),
        )),
        _ => Ok(()),
    }
}

/// The memory this process may use: the host's total, or its cgroup's
/// limit when that is lower. `None` when neither can be read.
pub fn memory_ceiling() -> Option<u64> {
    let host = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    });
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok()?.trim().parse::<u64>().ok());
    match (host, cgroup) {
        (Some(h), Some(c)) => Some(h.min(c)),
        (h, c) => h.or(c),
    }
}

const MAX_THREADS: u64 = 1024;
const MAX_ORIGIN_CONNECTIONS: u64 = 65_536;
const MAX_CLIENT_CONNECTIONS: u64 = 1 << 20;
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const MAX_DEVICE_SIZE: u64 = 1 << 50;
/// No host has more: a forced memory tier still stops here.
pub const MAX_MEMORY_TIER: u64 = 64 << 40;

/// Most members a static fleet may list.
const MAX_FLEET_MEMBERS: usize = 1024;

/// The fleet section, when it lists members: listeners, granule, members.
fn check_fleet(cfg: &AgentConfig) -> Result<(), ConfigError> {
    let fleet = &cfg.fleet;
    if !fleet.enabled() {
        return Ok(());
    }
    fleet.peer_listen.parse::<std::net::SocketAddr>().map_err(|e| {
        invalid(
            "fleet.peerListen",
            format!("{:?} is not host:port: {e}", fleet.peer_listen),
        )
    })?;
    if fleet.peer_listen == cfg.listen || fleet.peer_listen == cfg.admin_listen {
        return Err(invalid(
            "fleet.peerListen",
            "must differ from listen and adminListen: the peer port is its own listener",
        ));
    }
    let granule = fleet.granule.bytes();
    if !granule.is_power_of_two() || !(MIN_SLICE_SIZE..=MAX_GRANULE).contains(&granule) {
        return Err(invalid(
            "fleet.granule",
            format!("{} must be a power of two from 64Ki to 1Gi", fleet.granule),
        ));
    }
    if cfg.tunables.slice_size.bytes() > granule {
        return Err(invalid(
            "fleet.granule",
            format!(
                "{} is smaller than the slice size {}: a slice must fall inside one ownership granule; raise fleet.granule",
                fleet.granule, cfg.tunables.slice_size
            ),
        ));
    }
    if !(1..=3).contains(&fleet.replicas) {
        return Err(invalid(
            "fleet.replicas",
            format!("{} is not 1, 2 or 3 (members holding each slice)", fleet.replicas),
        ));
    }
    if !fleet.load_bound.is_finite() || !(fleet.load_bound == 0.0 || fleet.load_bound >= 1.0) {
        return Err(invalid(
            "fleet.loadBound",
            format!(
                "{} is neither 0 (no shedding) nor a factor of 1 or more over the fleet's average load",
                fleet.load_bound
            ),
        ));
    }
    if let Some(service) = &fleet.peers_service {
        let label = service.len() <= 63
            && service.starts_with(|c: char| c.is_ascii_lowercase())
            && !service.ends_with('-')
            && service
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !label {
            return Err(invalid(
                "fleet.peersService",
                format!("{service:?} is not a Service name (lowercase letters, digits and '-', at most 63)"),
            ));
        }
    }
    if fleet.peers.len() > MAX_FLEET_MEMBERS {
        return Err(invalid(
            "fleet.peers",
            format!(
                "{} members is more than the limit of {MAX_FLEET_MEMBERS}",
                fleet.peers.len()
            ),
        ));
    }
    for (name, addr) in &fleet.peers {
        if name.is_empty()
            || addr
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(invalid(
                "fleet.peers",
                format!("member {name:?} at {addr:?}: give each member as NAME=HOST:PORT"),
            ));
        }
    }
    for (field, value) in [
        ("fleet.connectTimeout", fleet.connect_timeout.get()),
        ("fleet.firstByteTimeout", fleet.first_byte_timeout.get()),
    ] {
        if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&value) {
            return Err(invalid(field, format!("{value:?} must be between 1ms and 1h")));
        }
    }
    Ok(())
}

fn validate_rest(cfg: &AgentConfig) -> Result<RuntimeTunables, ConfigError> {
    check_fleet(cfg)?;
    crate::origin::OriginTarget::parse(&cfg.origin.url, cfg.origin.host_header.as_deref())
        .map_err(|m| invalid("origin.url", m.to_string()))?;
    for (field, addr) in [("listen", &cfg.listen), ("adminListen", &cfg.admin_listen)] {
        addr.parse::<std::net::SocketAddr>()
            .map_err(|e| invalid(field, format!("{addr:?} is not host:port: {e}")))?;
    }
    if cfg.listen == cfg.admin_listen {
        return Err(invalid("adminListen", "must differ from listen"));
    }
    if cfg.origin.max_connections == 0 {
        return Err(invalid("origin.maxConnections", "must be at least 1"));
    }
    if cfg.cache.memory.bytes() < MIN_SLICE_SIZE {
        return Err(invalid(
            "cache.memory",
            format!("{} is smaller than one slice", cfg.cache.memory),
        ));
    }
    // Several devices are shards of one disk tier; the same device twice
    // would be two stores writing over each other.
    let mut paths = std::collections::BTreeSet::new();
    if let Some(twice) = cfg.cache.devices.iter().find(|d| !paths.insert(d.path.as_str())) {
        return Err(invalid(
            "cache.devices",
            format!("{} is listed twice; list each device once", twice.path),
        ));
    }
    let discovers = cfg.cache.device_filter.is_some() || cfg.cache.use_all_devices;
    if discovers && cfg.cache.discovered_format == FormatPolicy::Overwrite {
        return Err(invalid(
            "cache.discoveredFormat",
            "Overwrite erases whatever a device holds; name such devices one by one in cache.devices",
        ));
    }
    RuntimeTunables::from_config(&cfg.tunables)
}

/// The tunables in force, swapped atomically on reload.
#[derive(Debug)]
pub struct LiveTunables {
    current: RwLock<Arc<RuntimeTunables>>,
}

impl LiveTunables {
    pub fn new(t: RuntimeTunables) -> Self {
        Self {
            current: RwLock::new(Arc::new(t)),
        }
    }

    pub fn get(&self) -> Arc<RuntimeTunables> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, t: RuntimeTunables) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(t);
    }
}

/// Watches the config file and applies tunable changes.
///
/// Polls content rather than using inotify: Kubernetes updates a mounted
/// ConfigMap by swapping a symlink, which file watchers miss more often than
/// a cheap periodic read does.
pub async fn watch_file(
    path: PathBuf,
    loaded: Option<Vec<u8>>,
    overrides: Overrides,
    live: Arc<LiveTunables>,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = loaded.or_else(|| std::fs::read(&path).ok());
    let mut missing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                // Logged when it goes missing, not on every poll.
                if !missing {
                    warn!(path = %path.display(), error = %e,
                          "config file unreadable; keeping the running configuration until it is back");
                    missing = true;
                }
                continue;
            }
        };
        if std::mem::take(&mut missing) {
            info!(path = %path.display(), "config file readable again");
        }
        if last.as_deref() == Some(&bytes[..]) {
            continue;
        }
        last = Some(bytes);
        match reload(&path, &overrides) {
            Ok(t) => {
                let old = live.get();
                if *old != t {
                    info!(path = %path.display(), slice_size = t.slice_size, concurrency = t.concurrency, "config reloaded: tunables updated");
                    publish_tunables(&metrics, &t);
                    live.set(t);
                } else {
                    info!(path = %path.display(), "config reloaded: tunables unchanged (other fields need a restart)");
                }
                metrics.config_reloads.with_label_values(&["ok"]).inc();
            }
            Err(e) => {
                error!(path = %path.display(), error = %e, "config reload rejected; keeping the running configuration");
                metrics.config_reloads.with_label_values(&["rejected"]).inc();
            }
        }
    }
}

fn reload(path: &Path, overrides: &Overrides) -> Result<RuntimeTunables, ConfigError> {
    let mut cfg = load_file(path)?;
    overrides.apply_tunables(&mut cfg.tunables);
    RuntimeTunables::from_config(&cfg.tunables)
}

pub fn publish_tunables(metrics: &Metrics, t: &RuntimeTunables) {
    metrics.slice_size.set(i64::try_from(t.slice_size).unwrap_or(i64::MAX));
    metrics.concurrency.set(t.concurrency as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrite_is_refused_for_discovered_devices() {
        let base = "origin:\n  url: http://127.0.0.1:3\ncache:\n  memory: 64Mi\n";
        let cfg = parse(&format!(
            "{base}  deviceFilter: '^nvme'\n  discoveredFormat: Overwrite\n"
        ))
        .expect("parses");
        let err = validate(&cfg).expect_err("refused").to_string();
        assert!(err.contains("cache.discoveredFormat"), "{err}");
        let cfg = parse(&format!("{base}  devices: [{{ path: /dev/vdb, format: Overwrite }}]\n")).expect("parses");
        validate(&cfg).expect("a named device may be overwritten");
    }

    #[test]
    fn parses_a_full_file_and_rejects_typos() {
        let cfg = parse(
            "listen: 127.0.0.1:1\nadminListen: 127.0.0.1:2\norigin:\n  url: http://127.0.0.1:3\ntunables:\n  sliceSize: 256Ki\n  concurrency: 8\ncache:\n  memory: 64Mi\n",
        )
        .expect("valid");
        let t = validate(&cfg).expect("valid");
        assert_eq!((t.slice_size, t.concurrency), (256 << 10, 8));
        let err = parse("origin:\n  url: http://x\n  urll: y\n")
            .expect_err("typo")
            .to_string();
        assert!(err.contains("urll"), "{err}");
        assert!(parse(": : :").is_err());
    }

    #[test]
    fn rejects_bad_tunables_naming_the_field() {
        let mut cfg = AgentConfig::for_origin("http://127.0.0.1:1");
        cfg.listen = "127.0.0.1:1".into();
        cfg.admin_listen = "127.0.0.1:2".into();
        for (size, conc, field) in [
            (3 << 20, 4, "sliceSize"),
            (32 << 10, 4, "sliceSize"),
            (1 << 20, 0, "concurrency"),
            (1 << 20, 65, "concurrency"),
        ] {
            cfg.tunables.slice_size = ByteSize(size);
            cfg.tunables.concurrency = conc;
            let err = validate(&cfg).expect_err("invalid").to_string();
            assert!(err.contains(field), "{err}");
        }
        cfg.tunables = Tunables::default();
        cfg.origin.url = "ftp://x".into();
        assert!(validate(&cfg).expect_err("invalid").to_string().contains("origin.url"));
    }

    #[test]
    fn several_devices_are_shards_but_not_the_same_one_twice() {
        let base = "origin:\n  url: http://127.0.0.1:3\ncache:\n  memory: 64Mi\n";
        let cfg = parse(&format!(
            "{base}  devices: [{{ path: /dev/vdb }}, {{ path: /dev/vdc }}]\n"
        ))
        .expect("parses");
        validate(&cfg).expect("two devices");
        let cfg = parse(&format!(
            "{base}  devices: [{{ path: /dev/vdb }}, {{ path: /dev/vdb }}]\n"
        ))
        .expect("parses");
        let err = validate(&cfg).expect_err("twice").to_string();
        assert!(err.contains("cache.devices") && err.contains("twice"), "{err}");
    }

    #[test]
    fn rejects_bad_fleet_spreading_naming_the_field() {
        let base = "origin:\n  url: http://127.0.0.1:3\nfleet:\n  peers: { b: '127.0.0.1:9' }\n";
        for (line, field) in [
            ("replicas: 0", "fleet.replicas"),
            ("replicas: 4", "fleet.replicas"),
            ("loadBound: 0.5", "fleet.loadBound"),
            ("loadBound: .nan", "fleet.loadBound"),
        ] {
            let cfg = parse(&format!("{base}  {line}\n")).expect("parses");
            let err = validate(&cfg).expect_err(line).to_string();
            assert!(err.contains(field), "{line}: {err}");
        }
        let cfg = parse(&format!("{base}  replicas: 3\n  loadBound: 0\n  hotKeyRate: 0\n")).expect("parses");
        validate(&cfg).expect("3 holders, no shedding, no hot keys");
    }

    #[test]
    fn a_memory_tier_beyond_the_host_needs_force() {
        let mut cache = slicecache_api::agent_config::CacheConfig {
            memory: ByteSize::gib(200),
            ..Default::default()
        };
        let err = check_memory(&cache, Some(128 << 30)).expect_err("refused").to_string();
        assert!(
            err.contains("cache.memory") && err.contains("200Gi") && err.contains("128Gi"),
            "{err}"
        );
        assert!(err.contains("--force-memory-cache"), "{err}");
        cache.force_memory = true;
        check_memory(&cache, Some(128 << 30)).expect("forced");
        cache.memory = ByteSize(1 << 60);
        let err = check_memory(&cache, Some(128 << 30))
            .expect_err("1Ei is refused even forced")
            .to_string();
        assert!(err.contains("limit"), "{err}");
        cache.memory = ByteSize::gib(1);
        cache.force_memory = false;
        check_memory(&cache, None).expect("no ceiling known");
    }

    #[test]
    fn absurd_counts_and_timeouts_are_refused_by_field() {
        let base = AgentConfig::for_origin("http://127.0.0.1:1");
        type Break = fn(&mut AgentConfig);
        let cases: [(&str, Break); 6] = [
            ("threads", |c| c.threads = 1 << 20),
            ("origin.maxConnections", |c| c.origin.max_connections = u32::MAX),
            ("client.headerTimeout", |c| {
                c.client.header_timeout = slicecache_api::units::HumanDuration::secs(0)
            }),
            ("client.sendTimeout", |c| {
                c.client.send_timeout = slicecache_api::units::HumanDuration::secs(1 << 30)
            }),
            ("tunables.minObjectSize", |c| {
                c.tunables.min_object_size = ByteSize::gib(1)
            }),
            ("tunables.defaultTtl", |c| {
                c.tunables.default_ttl = slicecache_api::units::HumanDuration::secs(u64::MAX / 2)
            }),
        ];
        for (field, break_it) in cases {
            let mut cfg = base.clone();
            break_it(&mut cfg);
            let err = check_bounds(&cfg).expect_err(field).to_string();
            assert!(err.starts_with(field), "{field}: {err}");
        }
        check_bounds(&base).expect("defaults are within bounds");
    }

    #[test]
    fn flags_override_the_file() {
        let mut cfg = AgentConfig::for_origin("http://127.0.0.1:1");
        let o = Overrides {
            origin: Some("http://127.0.0.1:9".into()),
            slice_size: Some(ByteSize::kib(128)),
            ..Overrides::default()
        };
        o.apply(&mut cfg);
        assert_eq!(cfg.origin.url, "http://127.0.0.1:9");
        assert_eq!(cfg.tunables.slice_size, ByteSize::kib(128));
    }
}
