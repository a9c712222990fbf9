//! `slicecache-operator`: run the controller, render manifests offline, or
//! print the RBAC rules.

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
use slicecache_operator::{
    controller::{self, build::BuildDefaults, Context},
    leader::LeaderElector,
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
    /// Print the operator's ClusterRole rules (YAML list).
    Rbac,
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
        Command::Run(args) => {
            init_tracing(cli.log_json);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(run(args))
        }
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = client(args.kubeconfig.as_ref()).await?;
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
    let elector = (!args.no_leader_election)
        .then(|| LeaderElector::new(client.clone(), &args.lease_namespace, &args.lease_name, &identity));
    if let Some(elector) = &elector {
        tokio::select! {
            () = elector.acquire() => {}
            () = stopped() => return Ok(()),
        }
    }

    let ctx = Arc::new(Context::new(
        client,
        metrics,
        BuildDefaults {
            agent_image: args.agent_image,
        },
        Some(identity),
    ));
    ready.store(true, Ordering::Relaxed);
    let controller = controller::run(ctx, futures::FutureExt::shared(Box::pin(stopped())));
    let lost = async {
        match &elector {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        () = controller => Ok(()),
        () = lost => Err(anyhow::anyhow!("lost leadership")),
        r = server => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::from(e).context("metrics server")),
            Err(e) => Err(anyhow::Error::from(e).context("metrics server")),
        },
    };
    ready.store(false, Ordering::Relaxed);
    if let Some(elector) = &elector {
        elector.release().await;
    }
    result
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
