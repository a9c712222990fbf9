//! `slicecache-operator`: run the controller, render manifests offline,
//! print the RBAC rules, or show what the tuner would decide now.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    Client, Config,
};
use slicecache_api::{
    agent_config::{MAX_CONCURRENCY, MAX_SLICE_SIZE, MIN_SLICE_SIZE},
    units::{ByteSize, HumanDuration},
};
use slicecache_operator::{
    controller::{self, build::BuildDefaults, Context},
    leader::{LeaderElector, LeaseTiming},
    metrics::{self, Metrics},
    rbac, render,
};

#[derive(Parser, Debug)]
#[command(
    name = "slicecache-operator",
    version,
    about = "Kubernetes operator for slicecache node agent fleets"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "SLICECACHE_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller against a cluster.
    Run(RunArgs),
    /// Print the objects the operator would apply for SliceCache manifests.
    Render {
        /// SliceCache manifest (multi-document YAML); `-` reads stdin.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Agent image for SliceCaches that name none.
        #[arg(long, env = "SLICECACHE_AGENT_IMAGE", default_value = controller::build::DEFAULT_AGENT_IMAGE)]
        agent_image: String,
    },
    /// Print the operator's RBAC rules: `clusterRole` and the namespaced `role` (YAML).
    Rbac,
    /// Print the tuning signals of one SliceCache and the decision the tuner
    /// would make now. Writes nothing.
    Tune(TuneArgs),
}

#[derive(clap::Args, Debug)]
struct TuneArgs {
    /// Base URL of the Prometheus HTTP API.
    #[arg(long)]
    prometheus: String,
    /// Namespace of the SliceCache.
    #[arg(long)]
    namespace: String,
    /// Name of the SliceCache.
    #[arg(long)]
    name: String,
    /// Label matchers for the agents' series instead of the default
    /// `namespace="NS",pod=~"NAME-agent-xxxxx"`, e.g. `job="slicecache"`.
    #[arg(long)]
    selector: Option<String>,
    /// Rate window of the queries (the tuning interval).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    window: std::time::Duration,
    /// Time allowed for each query.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: std::time::Duration,
    /// Slice size in force; default: the agents' slicecache_slice_size_bytes.
    #[arg(long, value_parser = slicecache_api::quantity::parse_bytes)]
    slice_size: Option<u64>,
    /// Concurrency in force; default: the agents' slicecache_concurrency.
    #[arg(long)]
    concurrency: Option<u32>,
    #[arg(long, default_value_t = ByteSize(MIN_SLICE_SIZE))]
    min_slice_size: ByteSize,
    #[arg(long, default_value_t = ByteSize(MAX_SLICE_SIZE))]
    max_slice_size: ByteSize,
    #[arg(long, default_value_t = 1)]
    min_concurrency: u32,
    #[arg(long, default_value_t = MAX_CONCURRENCY)]
    max_concurrency: u32,
    /// Consecutive intervals a change must be wanted; 1 shows what a
    /// confirmed decision would be.
    #[arg(long, default_value_t = 1)]
    required_intervals: u32,
    /// Print the PromQL of each signal too.
    #[arg(long)]
    show_queries: bool,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, <HumanDuration as std::str::FromStr>::Err> {
    s.parse::<HumanDuration>().map(|d| d.0)
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Kubeconfig file; unset: in-cluster config, then the usual kubeconfig.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", env = "SLICECACHE_METRICS_ADDR")]
    metrics_addr: SocketAddr,
    /// Agent image for SliceCaches that name none.
    #[arg(long, env = "SLICECACHE_AGENT_IMAGE", default_value = controller::build::DEFAULT_AGENT_IMAGE)]
    agent_image: String,
    /// Reconcile without leader election (one replica only).
    #[arg(long)]
    no_leader_election: bool,
    /// Name of the leader election Lease.
    #[arg(long, default_value = "slicecache-operator")]
    lease_name: String,
    /// Namespace of the Lease; the operator's own namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease and in Events.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How many SliceCaches are reconciled at once (one SliceCache is never
    /// reconciled twice at once). More lets a burst of new SliceCaches
    /// settle no sooner once the API server is busy, and makes each
    /// reconcile wait longer for it; 0 means no limit.
    #[arg(long, default_value_t = controller::DEFAULT_MAX_CONCURRENT_RECONCILES)]
    max_concurrent_reconciles: u16,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Render { file, agent_image } => {
            let input = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let out = render::render(&input, &BuildDefaults { agent_image })?;
            print!("{out}");
            Ok(())
        }
        Command::Rbac => {
            print!("{}", rbac::rules_yaml()?);
            Ok(())
        }
        Command::Tune(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(tune(args)),
        Command::Run(args) => {
            slicecache_api::logging::init_tracing(cli.log_json, std::io::stdout);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(run(args))
        }
    }
}

async fn client_config(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    })
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = client_config(args.kubeconfig.as_ref()).await?;
    let timing = LeaseTiming::DEFAULT;
    // The Lease gets a Client of its own with short timeouts, so that a
    // hanging renewal fails before the Lease could expire.
    let lease_client = Client::try_from(timing.client_config(config.clone()))?;
    let client = Client::try_from(config)?;
    let metrics = Arc::new(Metrics::new()?);
    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(metrics::serve(args.metrics_addr, metrics.clone(), ready.clone()));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = {
        let rx = stop_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        }
    };

    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "slicecache-operator".into());
    let ctx = Arc::new(Context::new(
        client,
        metrics,
        BuildDefaults {
            agent_image: args.agent_image,
        },
        Some(identity.clone()),
    ));
    let elector = (!args.no_leader_election)
        .then(|| LeaderElector::new(lease_client, &args.lease_namespace, &args.lease_name, &identity, timing));
    let mut server = std::pin::pin!(server);
    // Lead, reconcile, and when leadership is lost (another replica took
    // the Lease, or a renewal failed, as when the API server is down), stop
    // every reconcile at once and stand by for the Lease again: no reconcile
    // ever runs without it, and the process does not exit.
    loop {
        let leadership = match &elector {
            None => None,
            Some(elector) => tokio::select! {
                leadership = elector.acquire() => Some(leadership),
                () = stopped() => return Ok(()),
            },
        };
        ready.store(true, Ordering::Relaxed);
        let controller = controller::run(
            ctx.clone(),
            args.max_concurrent_reconciles,
            futures::FutureExt::shared(Box::pin(stopped())),
        );
        let lost = async {
            match &leadership {
                Some(l) => l.hold().await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            () = controller => Some(Ok(())),
            lost = lost => {
                tracing::warn!(reason = lost.reason(), error = %lost,
                               "lost leadership: reconciling stopped; standing by for the lease");
                None
            }
            r = &mut server => Some(match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::Error::from(e).context("metrics server")),
                Err(e) => Err(anyhow::Error::from(e).context("metrics server")),
            }),
        };
        ready.store(false, Ordering::Relaxed);
        if let Some(leadership) = leadership {
            leadership.release().await;
        }
        if let Some(result) = outcome {
            return result;
        }
    }
}

async fn tune(args: TuneArgs) -> anyhow::Result<()> {
    use slicecache_operator::tuner::{self, Bounds, LawConfig, PrometheusClient, Queries, Selector, Tunables, Tuner};

    let client = PrometheusClient::new(&args.prometheus, args.timeout)?;
    let selector = match &args.selector {
        Some(s) => Selector::custom(s),
        None => Selector::for_slicecache(&args.namespace, &args.name),
    };
    let queries = Queries::new(&selector, args.window);
    let bounds = Bounds {
        min_slice_size: args.min_slice_size.bytes(),
        max_slice_size: args.max_slice_size.bytes(),
        min_concurrency: args.min_concurrency,
        max_concurrency: args.max_concurrency,
    };
    let config = LawConfig {
        required_intervals: args.required_intervals.max(1),
        ..LawConfig::default()
    };
    let mut law = Tuner::new(config, bounds);
    // Flags fill in what the agents do not report; each flag wins over its gauge.
    let probe = tuner::signals::collect(&client, &queries).await.ok();
    let current = match (
        args.slice_size.or_else(|| probe.as_ref()?.slice_size),
        args.concurrency.or_else(|| probe.as_ref()?.concurrency),
    ) {
        (Some(slice_size), Some(concurrency)) => Some(Tunables {
            slice_size,
            concurrency,
        }),
        _ => None,
    };
    let eval = tuner::evaluate(&client, &queries, &mut law, std::time::Instant::now(), current).await;

    println!("prometheus: {}", client.base_url());
    println!("selector:   {selector}");
    println!("window:     {}s", args.window.as_secs());
    println!();
    match &eval.signals {
        Ok(signals) => {
            let snapshot = signals.snapshot();
            println!("signals:");
            for (name, promql) in queries.by_name() {
                let value = snapshot.get(name).map_or("n/a", String::as_str);
                println!("  {name:<36} {value}");
                if args.show_queries {
                    println!("    {promql}");
                }
            }
        }
        Err(e) => println!("signals: none ({}: {e})", e.reason()),
    }
    println!();
    let d = &eval.decision;
    match d.held_because {
        Some(hold) => println!("decision: hold ({hold})"),
        None => println!("decision: {} -> {}", d.from, d.to),
    }
    println!("reason:   {}", d.reason);
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
