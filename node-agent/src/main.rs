//! `slicecache-agent`: run the node agent, or a self-contained local demo.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use slicecache_agent::config::{self, Overrides};
use slicecache_agent::run::{self, ConfigSource};
use slicecache_api::agent_config::AgentConfig;
use slicecache_api::units::ByteSize;

#[derive(Parser, Debug)]
#[command(name = "slicecache-agent", version, about = "Slicing HTTP cache node agent")]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "SLICECACHE_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent.
    Run(Box<RunArgs>),
    /// Run a self-contained local demo: embedded origin, agent, workload.
    Demo,
    /// Erase the slicecache superblock of every configured device, releasing
    /// it. Devices that carry anyone else's signature are refused.
    Wipe(WipeArgs),
}

#[derive(clap::Args, Debug)]
struct WipeArgs {
    /// Agent config naming the devices (as for `run`).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// A device to wipe (instead of, or besides, the config's).
    #[arg(long)]
    device: Option<String>,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// YAML config file (the mounted ConfigMap). Tunables hot-reload from it.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Client listener, host:port.
    #[arg(long)]
    listen: Option<String>,
    /// Admin listener (metrics, health, purge), host:port.
    #[arg(long)]
    admin_listen: Option<String>,
    /// Origin base URL.
    #[arg(long)]
    origin: Option<String>,
    /// Block device or file for the disk tier; a missing file is created.
    #[arg(long)]
    device: Option<String>,
    /// Size of a device file to create (bytes or quantity, e.g. 10Gi).
    #[arg(long)]
    device_size: Option<ByteSize>,
    /// Memory tier size (bytes or quantity, e.g. 512Mi). At most the host's
    /// memory (or the cgroup's limit) unless --force-memory-cache.
    #[arg(long)]
    memory_cache: Option<ByteSize>,
    /// Accept a memory tier larger than the host's memory.
    #[arg(long)]
    force_memory_cache: bool,
    /// Slice size: a power of two from 64Ki to 64Mi.
    #[arg(long)]
    slice_size: Option<ByteSize>,
    /// Origin subrequests in flight per client request (1-64).
    #[arg(long)]
    concurrency: Option<u32>,
    /// This agent's fleet member name (default: $NODE_NAME, then the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Peer listener, host:port: where fleet members ask for the slices this agent owns.
    #[arg(long)]
    peer_listen: Option<String>,
    /// Static fleet members, NAME=HOST:PORT,... (this agent's own name may be
    /// listed); turns fleet mode on.
    #[arg(long, value_delimiter = ',', value_parser = parse_peer)]
    peers: Vec<(String, String)>,
    /// Kubernetes membership: the headless Service whose EndpointSlices list
    /// the fleet's members (watched; needs get/list/watch on endpointslices);
    /// turns fleet mode on.
    #[arg(long)]
    peers_service: Option<String>,
    /// File holding the token fleet members present to each other.
    #[arg(long)]
    peer_token_file: Option<String>,
    /// Ownership granule: a power of two the slice size divides (default 4Mi).
    #[arg(long)]
    fleet_granule: Option<ByteSize>,
    /// Members holding each slice, 1 to 3 (default 1).
    #[arg(long)]
    fleet_replicas: Option<u8>,
    /// Peer requests a second at which an owner marks a granule hot, so the
    /// members spread it over 3 holders; 0 turns it off (default 64).
    #[arg(long)]
    fleet_hot_key_rate: Option<u32>,
    /// Shed a holder whose load is over this times the fleet's average; 0
    /// turns shedding off (default 1.25).
    #[arg(long)]
    fleet_load_bound: Option<f64>,
}

/// One `NAME=HOST:PORT` of `--peers`.
fn parse_peer(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, addr)) if !name.is_empty() && !addr.is_empty() => Ok((name.to_string(), addr.to_string())),
        _ => Err(format!("{s:?} is not NAME=HOST:PORT")),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Demo) && std::env::var_os("RUST_LOG").is_none() {
        // The demo's client reuses each connection right after releasing it,
        // so Pingora's pool would log its harmless race with its idle
        // watcher (see docs/agent.md) on most requests. No thread runs yet.
        std::env::set_var("RUST_LOG", "info,pingora_core::connectors=off");
    }
    slicecache_api::logging::init_tracing(cli.log_json, std::io::stderr);
    let result = match cli.command {
        Command::Run(args) => run_agent(*args),
        Command::Wipe(args) => wipe_devices(args),
        Command::Demo => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")
            .and_then(|rt| rt.block_on(slicecache_agent::demo::run())),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slicecache-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_agent(args: RunArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen,
        admin_listen: args.admin_listen,
        origin: args.origin,
        device: args.device,
        device_size: args.device_size,
        memory_cache: args.memory_cache,
        force_memory: args.force_memory_cache,
        slice_size: args.slice_size,
        concurrency: args.concurrency,
        node_name: args.node_name,
        peer_listen: args.peer_listen,
        peers: (!args.peers.is_empty()).then(|| args.peers.into_iter().collect()),
        peer_token_file: args.peer_token_file,
        peers_service: args.peers_service,
        fleet_granule: args.fleet_granule,
        fleet_replicas: args.fleet_replicas,
        fleet_hot_key_rate: args.fleet_hot_key_rate,
        fleet_load_bound: args.fleet_load_bound,
    };
    let (mut cfg, loaded) = match &args.config {
        Some(path) => {
            let (cfg, bytes) = config::load_file_bytes(path)?;
            (cfg, Some(bytes))
        }
        None => {
            let origin = overrides
                .origin
                .clone()
                .context("no origin: pass --origin URL or --config FILE")?;
            (AgentConfig::for_origin(origin), None)
        }
    };
    overrides.apply(&mut cfg);
    run::run(
        cfg,
        ConfigSource {
            file: args.config,
            loaded,
            overrides,
        },
    )
}

fn wipe_devices(args: WipeArgs) -> anyhow::Result<()> {
    let mut cfg = match &args.config {
        Some(path) => config::load_file(path)?,
        None => AgentConfig::for_origin("http://unused"),
    };
    if let Some(device) = args.device {
        cfg.cache.devices.push(slicecache_api::agent_config::DeviceConfig {
            path: device,
            size: None,
            format: Default::default(),
        });
    }
    anyhow::ensure!(
        !cfg.cache.devices.is_empty() || cfg.cache.device_filter.is_some() || cfg.cache.use_all_devices,
        "no devices to wipe: pass --config with devices or --device PATH"
    );
    run::wipe(&cfg)
}
