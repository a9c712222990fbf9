//! Starting the agent: configuration in, Pingora server out.
//!
//! Builds the shared state (origin client, cache tiers, fills, metrics), adds
//! the client service, the admin service and the config watcher to one
//! Pingora server, and runs it until SIGTERM (graceful) or SIGINT.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use slicecache_api::agent_config::AgentConfig;
use tracing::{info, warn};

use crate::admin::AdminApp;
use crate::cache::Cache;
use crate::client_limits::{ClientLimits, ConnectionGate};
use crate::config::{self, LiveTunables, Overrides};
use crate::discovery::{self, Selector, SystemView};
use crate::fill::Fills;
use crate::fleet::membership::{self, PeersService};
use crate::fleet::metrics::FleetMetrics;
use crate::fleet::token::{self, PeerTokens};
use crate::fleet::Fleet;
use crate::log_throttle::LogThrottle;
use crate::metrics::Metrics;
use crate::origin::{OriginClient, OriginTarget, OriginTimeouts};
use crate::server::{Agent, Listener, ProxyApp};
use crate::store::disk::{DiskOptions, DiskStore};
use crate::store::sharded::ShardedStore;
use crate::store::ExtentStore;
use crate::window::WindowBudget;

/// Where the configuration came from, for hot reload.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub file: Option<PathBuf>,
    /// The file's bytes as parsed at start.
    pub loaded: Option<Vec<u8>>,
    pub overrides: Overrides,
}

/// Runs the agent until it is told to stop.
pub fn run(cfg: AgentConfig, source: ConfigSource) -> anyhow::Result<()> {
    let tunables = config::validate(&cfg).context("invalid configuration")?;
    let metrics = Arc::new(Metrics::new().context("registering metrics")?);
    config::publish_tunables(&metrics, &tunables);

    let target = OriginTarget::parse(&cfg.origin.url, cfg.origin.host_header.as_deref())?;
    let timeouts = OriginTimeouts {
        connect: cfg.origin.connect_timeout.get(),
        first_byte: cfg.origin.first_byte_timeout.get(),
        idle: cfg.origin.idle_timeout.get(),
    };
    let max = cfg.origin.max_connections as usize;
    let origin = OriginClient::new(target, timeouts, max)?;

    let disk = open_devices(&cfg, &metrics)?.map(Arc::new);
    let tier: Option<Arc<dyn ExtentStore>> = disk.clone().map(|d| d as Arc<dyn ExtentStore>);
    // A fleet member gives 1/8 of its memory budget to the hot set.
    let memory = cfg.cache.memory.bytes();
    let hot = if cfg.fleet.enabled() { memory / 8 } else { 0 };
    let cache = Arc::new(Cache::with_hot_set(memory, hot, tier, metrics.clone()));
    let fleet = start_fleet(&cfg, &metrics)?;
    let fills = Fills::new(origin, cache.clone(), metrics.clone(), max, fleet.clone());
    let fetch_ahead = Arc::new(WindowBudget::for_memory(memory, metrics.window.clone()));
    metrics.window_budget.set(fetch_ahead.bytes() as i64);
    let live = Arc::new(LiveTunables::new(tunables));
    let workers = if cfg.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        cfg.threads
    };
    let descriptors = crate::client_limits::raise_descriptor_limit();
    let limits = ClientLimits::resolve(&cfg.client, descriptors, cfg.origin.max_connections);
    info!(descriptors, max_connections = limits.max_connections, per_ip = limits.max_connections_per_ip,
          header_timeout = ?limits.header_timeout, "client limits");
    let serving = |listener: Listener| {
        Arc::new(Agent {
            cache: cache.clone(),
            fills: fills.clone(),
            tunables: live.clone(),
            metrics: metrics.clone(),
            active: std::sync::atomic::AtomicUsize::new(0),
            workers,
            gate: ConnectionGate::new(limits, metrics.client_connections.clone(), metrics.client_cuts.clone()),
            refusal_log: LogThrottle::default(),
            fleet: fleet.clone(),
            fetch_ahead: fetch_ahead.clone(),
            listener,
        })
    };
    let agent = serving(Listener::Client);

    let conf = ServerConf {
        threads: workers,
        // After SIGTERM Pingora stops accepting connections at once (the
        // probes fail, members that dial it go to the origin instead) and
        // lets requests in flight finish for this long. A fleet member's
        // in-flight answers are slices other agents are streaming to
        // their clients: give them time.
        grace_period_seconds: Some(if fleet.is_some() { FLEET_DRAIN_SECONDS } else { 1 }),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy = Service::new("slicecache proxy".to_string(), ProxyApp(agent));
    proxy.add_tcp(&cfg.listen);
    let purge_token = match &cfg.admin.purge_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading purge token file {path}"))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("SLICECACHE_PURGE_TOKEN").ok().filter(|t| !t.is_empty()),
    };
    if purge_token.is_none() {
        info!("no purge token configured; POST /purge is disabled");
    }
    // A member that learns its fleet from the API turns ready once it knows
    // the members: until then it would take every key for its own, and the
    // others would send it slices it then fetched from the origin again.
    let ready = Arc::new(AtomicBool::new(cfg.fleet.peers_service.is_none()));
    let mut admin = Service::new(
        "slicecache admin".to_string(),
        AdminApp {
            cache: cache.clone(),
            metrics: metrics.clone(),
            purge_token,
            ready: ready.clone(),
            purge_log: LogThrottle::default(),
        },
    );
    admin.add_tcp(&cfg.admin_listen);
    admin.threads = Some(1);
    server.add_service(proxy);
    server.add_service(admin);
    if let Some(fleet) = &fleet {
        let mut peers = Service::new("slicecache peers".to_string(), ProxyApp(serving(Listener::Peer)));
        peers.add_tcp(&cfg.fleet.peer_listen);
        server.add_service(peers);
        if let Some(file) = &cfg.fleet.peer_token_file {
            server.add_service(background_service(
                "peer token watcher",
                TokenWatcher {
                    fleet: fleet.clone(),
                    file: PathBuf::from(file),
                },
            ));
        }
        info!(member = fleet.self_name(), peer_listen = %cfg.fleet.peer_listen,
              static_members = cfg.fleet.peers.len(), peers_service = ?cfg.fleet.peers_service,
              "fleet mode: misses go to each slice's owner");
        if let Some(name) = &cfg.fleet.peers_service {
            let service = PeersService {
                name: name.clone(),
                namespace: cfg.fleet.namespace.clone(),
                default_port: listen_port(&cfg.fleet.peer_listen),
            };
            server.add_service(background_service(
                "fleet membership",
                MembershipWatcher {
                    fleet: fleet.clone(),
                    service,
                    ready: ready.clone(),
                },
            ));
        }
    }
    if let Some(file) = source.file {
        server.add_service(background_service(
            "config watcher",
            ConfigWatcher {
                file,
                loaded: source.loaded,
                overrides: source.overrides,
                live,
                metrics,
            },
        ));
    }
    info!(listen = %cfg.listen, admin = %cfg.admin_listen, origin = %cfg.origin.url, "slicecache agent starting");
    server.run(RunArgs::default());
    if let Some(disk) = disk {
        // Write the index checkpoints so the next start need not scan.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the shutdown runtime")?;
        rt.block_on(disk.close());
    }
    info!("slicecache agent stopped");
    Ok(())
}

/// The fleet of `cfg.fleet`, when it lists members.
fn start_fleet(cfg: &AgentConfig, metrics: &Metrics) -> anyhow::Result<Option<Arc<Fleet>>> {
    if !cfg.fleet.enabled() {
        return Ok(None);
    }
    let name = Fleet::member_name(&cfg.fleet)?;
    let token_file = cfg
        .fleet
        .peer_token_file
        .as_deref()
        .context("fleet.peerTokenFile: fleet mode needs the token peers present to each other; name its file")?;
    let tokens = PeerTokens::read(Path::new(token_file))?;
    let fleet_metrics = FleetMetrics::new(&metrics.registry).context("registering fleet metrics")?;
    let fleet = Fleet::new(&cfg.fleet, name, tokens, cfg.origin.idle_timeout.get(), fleet_metrics)?;
    Ok(Some(Arc::new(fleet)))
}

/// The devices a config names: explicit ones, then discovered ones.
pub fn device_options(cfg: &AgentConfig) -> anyhow::Result<Vec<DiskOptions>> {
    let mut wanted: Vec<DiskOptions> = cfg
        .cache
        .devices
        .iter()
        .map(|d| {
            let mut o = DiskOptions::new(&d.path);
            o.size = d.size.map(|s| s.bytes());
            o.format = d.format;
            o
        })
        .collect();
    let selector = match (&cfg.cache.device_filter, cfg.cache.use_all_devices) {
        (Some(filter), _) => Some(Selector::Filter(
            regex::Regex::new(filter).with_context(|| format!("cache.deviceFilter {filter:?}"))?,
        )),
        (None, true) => Some(Selector::All),
        (None, false) => None,
    };
    if let Some(selector) = selector {
        let (found, refused) = discovery::discover(&SystemView::live(), &selector);
        for (name, reason) in &refused {
            warn!(device = %name, %reason, "device not used");
        }
        for c in found {
            info!(device = %c.path.display(), size = c.size_bytes, "device discovered");
            let mut o = DiskOptions::new(&c.path);
            o.format = cfg.cache.discovered_format;
            wanted.push(o);
        }
    }
    Ok(wanted)
}

/// Erases the slicecache superblock of every device the config names.
/// Foreign devices are refused and reported; the others are still wiped.
pub fn wipe(cfg: &AgentConfig) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for opts in device_options(cfg)? {
        let path = opts.path.display().to_string();
        match crate::store::disk::wipe::wipe(&opts.path) {
            Ok(outcome) => info!(device = %path, ?outcome, "wipe"),
            Err(e) => {
                tracing::error!(device = %path, error = %e, "wipe refused");
                failed.push(path);
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("not wiped: {}", failed.join(", "))
    }
}

/// Opens every configured and discovered device as one disk tier.
fn open_devices(cfg: &AgentConfig, metrics: &Metrics) -> anyhow::Result<Option<ShardedStore>> {
    let wanted = device_options(cfg)?;
    let mut shards = Vec::new();
    for opts in wanted {
        let path = opts.path.display().to_string();
        let store = DiskStore::open(opts, &metrics.registry).with_context(|| format!("cache device {path}"))?;
        let report = store.recovery();
        info!(device = %path, source = ?report.source, entries = report.entries, torn = report.torn_entries,
              seconds = report.seconds, "cache device ready");
        shards.push(Arc::new(store));
    }
    if shards.is_empty() {
        info!("no cache devices: running on memory alone");
    }
    Ok(ShardedStore::new(shards))
}

/// The port of a validated `host:port` listen address.
fn listen_port(addr: &str) -> u16 {
    addr.parse::<std::net::SocketAddr>().map_or(0, |a| a.port())
}

/// Seconds a fleet member lets requests in flight finish after SIGTERM.
const FLEET_DRAIN_SECONDS: u64 = 5;

struct MembershipWatcher {
    fleet: Arc<Fleet>,
    service: PeersService,
    /// Set once the first member list is applied.
    ready: Arc<AtomicBool>,
}

#[async_trait]
impl BackgroundService for MembershipWatcher {
    async fn start(&self, shutdown: ShutdownWatch) {
        membership::run(self.fleet.clone(), self.service.clone(), self.ready.clone(), shutdown).await;
    }
}

/// Reads the peer token file again while the agent runs ([`token::watch`]).
struct TokenWatcher {
    fleet: Arc<Fleet>,
    file: PathBuf,
}

#[async_trait]
impl BackgroundService for TokenWatcher {
    async fn start(&self, shutdown: ShutdownWatch) {
        token::watch(self.fleet.clone(), self.file.clone(), shutdown).await;
    }
}

struct ConfigWatcher {
    file: PathBuf,
    loaded: Option<Vec<u8>>,
    overrides: Overrides,
    live: Arc<LiveTunables>,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl BackgroundService for ConfigWatcher {
    async fn start(&self, shutdown: ShutdownWatch) {
        config::watch_file(
            self.file.clone(),
            self.loaded.clone(),
            self.overrides.clone(),
            self.live.clone(),
            self.metrics.clone(),
            Duration::from_millis(500),
            shutdown,
        )
        .await;
    }
}
