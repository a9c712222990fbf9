//! `slicecache-node-shim`: the tests' kubelet as a program, for scripts and
//! for trying the operator by hand against the local control plane. It
//! registers the Nodes, runs the agent Pods placed on them until SIGTERM
//! or SIGINT, then stops every agent it started.

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use slicecache_e2e::node_shim::{self, ImageMatch, NodeShim, ShimOptions};

#[derive(Parser, Debug)]
#[command(
    name = "slicecache-node-shim",
    about = "Plays kubelet for a local control plane: runs slicecache-agent for agent Pods"
)]
struct Cli {
    /// Admin kubeconfig of the control plane.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// The slicecache-agent binary to run for agent Pods.
    #[arg(long, env = "SLICECACHE_AGENT_BIN")]
    agent_bin: PathBuf,
    /// Working directory: Pod files, node host paths, container logs.
    #[arg(long)]
    dir: PathBuf,
    /// Number of Nodes to register.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Node names are PREFIX-1 .. PREFIX-N.
    #[arg(long, default_value = "shim-node")]
    node_prefix: String,
    /// Extra Node label KEY=VALUE (repeatable).
    #[arg(long = "node-label", value_parser = parse_label)]
    node_labels: Vec<(String, String)>,
    /// Agent images: a repository name (default `slicecache-agent`, any
    /// registry and tag) or `exact:IMAGE`.
    #[arg(long, default_value = "slicecache-agent")]
    image: String,
    /// First Pod address; later Pods count up from it.
    #[arg(long, default_value = "127.0.0.2")]
    first_ip: Ipv4Addr,
    /// Last Pod address.
    #[arg(long, default_value = "127.255.255.254")]
    last_ip: Ipv4Addr,
    /// Leave unscheduled Pods alone (a kube-scheduler runs).
    #[arg(long)]
    no_schedule: bool,
    /// Upper bound of a Pod's termination grace period, in seconds.
    #[arg(long, default_value_t = 10)]
    max_grace_seconds: u64,
    /// RUST_LOG of agents whose Pod sets none.
    #[arg(long, default_value = "info")]
    agent_log: String,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut options = ShimOptions::new(&cli.agent_bin, &cli.dir);
    options.nodes = cli.nodes;
    options.node_prefix = cli.node_prefix;
    options.node_labels = cli.node_labels.into_iter().collect::<BTreeMap<_, _>>();
    options.image = ImageMatch::parse(&cli.image);
    options.first_ip = cli.first_ip;
    options.last_ip = cli.last_ip;
    options.schedule = !cli.no_schedule;
    options.max_grace = Duration::from_secs(cli.max_grace_seconds);
    options.rust_log = cli.agent_log;

    let client = node_shim::client_from_kubeconfig(&cli.kubeconfig).await?;
    let shim = NodeShim::start(client, options)
        .await
        .context("starting the node shim")?;
    println!("ready: nodes={}", shim.node_names().join(","));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping the agents"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping the agents"),
    }
    shim.shutdown().await;
    Ok(())
}
