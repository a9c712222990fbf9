//! The node shim: the kubelet of the tests. It registers Nodes with a real
//! API server, keeps them Ready, binds unscheduled Pods to them, and runs
//! the real `slicecache-agent` binary as a local process for every Pod on
//! them that asks for the agent image, reporting Pod status the way a
//! kubelet does, so that the DaemonSet, Deployment and EndpointSlice
//! controllers, and the operator, see a working cluster.
//!
//! Tests run it in-process ([`NodeShim::start`]) and ask it what happened:
//! the agent Pods with their addresses and process ids ([`NodeShim::pods`]),
//! how many agent Pods were unready over time ([`NodeShim::timeline`],
//! [`NodeShim::max_unready_seen`]), and they can crash an agent
//! ([`NodeShim::kill`]). Scripts run the same code as the
//! `slicecache-node-shim` binary.
//!
//! Every process the shim starts stops when the shim does: on
//! [`NodeShim::shutdown`] gracefully, on drop with SIGKILL.
//!
//! Pod addresses are 127.0.0.2 and up by default: every agent binds its
//! own address with the ports of its container, so the Pods' ports are the
//! operator's. kube-apiserver refuses loopback addresses in EndpointSlices
//! ("may not be in the loopback range"), so with these addresses Services
//! get slices without endpoints; a non-loopback range that is local to the
//! machine ([`ShimOptions::first_ip`], [`ShimOptions::last_ip`]) lifts that.
//! Raw block claims (generic ephemeral volumes, named claims) resolve
//! through their bound PersistentVolume to a device in the node's host
//! directory ([`claims`]); Pods wait, unbound, until their claims are.
//! Not done: startup probes, exec probes, init and multi-container Pods,
//! resource limits and requests, Pod affinity in binding, dynamic
//! provisioning (volumes come from whoever creates PersistentVolumes).

pub mod api_access;
pub mod claims;
pub mod env;
pub mod image;
pub mod nodes;
pub mod pod_files;
pub mod pod_sync;
pub mod process;
pub mod rewrite;
pub mod schedule;
pub mod state;
pub mod status;
pub mod volumes;
pub mod worker;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolume, PersistentVolumeClaim, Secret};
use kube::{
    api::Api,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{reflector, watcher, WatchStreamExt},
    Client, Config,
};
use tokio::{sync::watch, task::JoinHandle};

pub use image::ImageMatch;
pub use nodes::NodeCapacity;
pub use state::{PodInfo, TimelinePoint};

use self::{
    claims::ClaimStores,
    pod_files::ObjectStores,
    pod_sync::Commands,
    schedule::Candidate,
    state::ShimState,
    worker::{Runtime, WorkerCommand},
};

/// How the shim runs.
#[derive(Clone, Debug)]
pub struct ShimOptions {
    /// How many Nodes to register: `PREFIX-1` .. `PREFIX-N`.
    pub nodes: usize,
    pub node_prefix: String,
    /// Extra labels of every Node.
    pub node_labels: BTreeMap<String, String>,
    pub capacity: NodeCapacity,
    /// The `slicecache-agent` binary run for agent Pods.
    pub agent_binary: PathBuf,
    /// Which container images are the agent's.
    pub image: ImageMatch,
    /// Working directory: Pod files, node host paths, container logs.
    pub dir: PathBuf,
    /// Pod addresses: `first_ip..=last_ip`, each bound by its agent. The
    /// default range is loopback, which needs no setup, but the API server
    /// refuses loopback addresses in EndpointSlices (see the crate's notes).
    pub first_ip: Ipv4Addr,
    pub last_ip: Ipv4Addr,
    /// The admin kubeconfig whose cluster (server, CA) Pods that mount a
    /// service account token reach the API through, with a token of their
    /// own ([`api_access`]). `None`: such Pods get no API access.
    pub api_kubeconfig: Option<PathBuf>,
    /// Bind unscheduled Pods to the shim's Nodes (no kube-scheduler runs).
    pub schedule: bool,
    /// `RUST_LOG` of agents whose Pod does not set it.
    pub rust_log: String,
    /// Upper bound of a Pod's termination grace period.
    pub max_grace: Duration,
    /// How often readiness is probed (and volume files refreshed).
    pub probe_period: Duration,
    /// Upper bound of the restart backoff.
    pub max_backoff: Duration,
}

impl ShimOptions {
    /// Defaults: 3 nodes `shim-node-N`, addresses from 127.0.0.2, images
    /// whose repository is `slicecache-agent`.
    pub fn new(agent_binary: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> Self {
        Self {
            nodes: 3,
            node_prefix: "shim-node".into(),
            node_labels: BTreeMap::new(),
            capacity: NodeCapacity::default(),
            agent_binary: agent_binary.into(),
            image: ImageMatch::default(),
            dir: dir.into(),
            first_ip: Ipv4Addr::new(127, 0, 0, 2),
            last_ip: Ipv4Addr::new(127, 255, 255, 254),
            api_kubeconfig: None,
            schedule: true,
            rust_log: "info".into(),
            max_grace: Duration::from_secs(10),
            probe_period: Duration::from_millis(500),
            max_backoff: Duration::from_secs(2),
        }
    }

    pub fn node_names(&self) -> Vec<String> {
        (1..=self.nodes)
            .map(|i| nodes::node_name(&self.node_prefix, i))
            .collect()
    }
}

/// Why the shim could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("building the API client: {0}")]
    Client(#[source] kube::Error),
    #[error("registering node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("the ConfigMap, Secret, Node and volume caches did not fill within {0:?}")]
    CachesNotReady(Duration),
    #[error("the agent binary {0} does not exist")]
    NoAgentBinary(PathBuf),
    #[error("creating {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An API client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client, ShimError> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| ShimError::Kubeconfig {
        path: path.to_path_buf(),
        source,
    })?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| ShimError::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })?;
    Client::try_from(config).map_err(ShimError::Client)
}

/// A running shim.
#[derive(Debug)]
pub struct NodeShim {
    state: Arc<ShimState>,
    commands: Arc<Commands>,
    stop_tx: watch::Sender<bool>,
    pod_sync: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    node_names: Vec<String>,
    dir: PathBuf,
}

impl NodeShim {
    /// Registers the Nodes, fills the ConfigMap and Secret caches and
    /// starts running Pods.
    pub async fn start(client: Client, options: ShimOptions) -> Result<Self, ShimError> {
        if !options.agent_binary.is_file() {
            return Err(ShimError::NoAgentBinary(options.agent_binary.clone()));
        }
        std::fs::create_dir_all(&options.dir).map_err(|source| ShimError::Io {
            path: options.dir.clone(),
            source,
        })?;
        let node_names = options.node_names();
        let mut candidates = Vec::new();
        for name in &node_names {
            nodes::register(&client, name, &options.node_labels, &options.capacity)
                .await
                .map_err(|source| ShimError::Register {
                    node: name.clone(),
                    source,
                })?;
            let object = nodes::node_object(name, &options.node_labels);
            candidates.push(Candidate {
                name: name.clone(),
                labels: object.metadata.labels.unwrap_or_default(),
                taints: Vec::new(),
            });
            tracing::info!(node = %name, "node registered");
        }

        let mut background = Vec::new();
        let (config_maps, task) = cache::<ConfigMap>(&client);
        background.push(task);
        let (secrets, task) = cache::<Secret>(&client);
        background.push(task);
        let (node_cache, task) = cache::<Node>(&client);
        background.push(task);
        let (claims, task) = cache::<PersistentVolumeClaim>(&client);
        background.push(task);
        let (volumes, task) = cache::<PersistentVolume>(&client);
        background.push(task);
        let fill = Duration::from_secs(30);
        let filled = tokio::time::timeout(fill, async {
            config_maps.wait_until_ready().await.is_ok()
                && secrets.wait_until_ready().await.is_ok()
                && node_cache.wait_until_ready().await.is_ok()
                && claims.wait_until_ready().await.is_ok()
                && volumes.wait_until_ready().await.is_ok()
        })
        .await;
        if filled != Ok(true) {
            for task in &background {
                task.abort();
            }
            return Err(ShimError::CachesNotReady(fill));
        }

        background.push(tokio::spawn(heartbeats(
            client.clone(),
            node_names.clone(),
            options.capacity.clone(),
        )));

        let state = Arc::new(ShimState::new(options.first_ip, options.last_ip));
        let commands = Arc::new(Commands::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let dir = options.dir.clone();
        let rt = Arc::new(Runtime {
            client,
            nodes: node_cache,
            stores: ObjectStores { config_maps, secrets },
            claims: ClaimStores { claims, volumes },
            state: state.clone(),
            options: Arc::new(options),
        });
        let pod_sync = tokio::spawn(pod_sync::run(rt, candidates, commands.clone(), stop_rx));
        Ok(Self {
            state,
            commands,
            stop_tx,
            pod_sync: Some(pod_sync),
            background,
            node_names,
            dir,
        })
    }

    pub fn node_names(&self) -> &[String] {
        &self.node_names
    }

    /// The shim's working directory (container logs are under `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where host path `path` of Node `node` lives: every hostPath volume
    /// and local PersistentVolume of that node resolves there, never to
    /// the machine's own path.
    pub fn host_path(&self, node: &str, path: &str) -> PathBuf {
        volumes::node_host_dir(&self.dir, node).join(path.trim_start_matches('/'))
    }

    /// Every Pod on the shim's nodes, agent or not.
    pub fn pods(&self) -> Vec<PodInfo> {
        self.state.pods()
    }

    /// The Pods the shim runs an agent for.
    pub fn agent_pods(&self) -> Vec<PodInfo> {
        self.state.pods().into_iter().filter(|p| p.runs_agent).collect()
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodInfo> {
        self.state
            .pods()
            .into_iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    /// The process id of Pod `namespace/name`'s agent, while it runs.
    pub fn pid(&self, namespace: &str, name: &str) -> Option<u32> {
        self.pod(namespace, name).and_then(|p| p.pid)
    }

    /// SIGKILLs the agent of Pod `namespace/name`, as a crash would; the
    /// shim restarts it per the Pod's restart policy. False when the shim
    /// runs no such Pod.
    pub fn kill(&self, namespace: &str, name: &str) -> bool {
        self.commands.send(namespace, name, WorkerCommand::Kill)
    }

    /// The log of Pod `namespace/name`'s agent so far.
    pub fn log(&self, namespace: &str, name: &str) -> Option<String> {
        self.pod(namespace, name)
            .and_then(|p| std::fs::read_to_string(p.log).ok())
    }

    /// Every change of the number of agent Pods and of unready ones.
    pub fn timeline(&self) -> Vec<TimelinePoint> {
        self.state.timeline()
    }

    /// The most agent Pods unready at once since the start (or the last
    /// [`NodeShim::reset_timeline`]).
    pub fn max_unready_seen(&self) -> usize {
        self.state.timeline().iter().map(|p| p.unready).max().unwrap_or(0)
    }

    /// Starts the timeline afresh from now.
    pub fn reset_timeline(&self) {
        self.state.reset_timeline();
    }

    /// Stops every agent (SIGTERM, then SIGKILL after a short grace) and
    /// the shim's watches. The Pods stay in the API as they were.
    pub async fn shutdown(mut self) {
        let _ = self.stop_tx.send(true);
        if let Some(task) = self.pod_sync.take() {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "the pod loop ended abnormally");
            }
        }
        for task in &self.background {
            task.abort();
        }
        self.state.kill_all();
    }
}

impl Drop for NodeShim {
    fn drop(&mut self) {
        let _ = self.stop_tx.send(true);
        if let Some(task) = self.pod_sync.take() {
            task.abort();
        }
        for task in &self.background {
            task.abort();
        }
        // Without a shutdown the workers may not run again: kill what runs.
        self.state.kill_all();
    }
}

/// A cache of every `K` in the cluster, and the task that fills it.
fn cache<K>(client: &Client) -> (reflector::Store<K>, JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let api: Api<K> = Api::all(client.clone());
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let task = tokio::spawn(async move {
        stream
            .for_each(|event| async move {
                if let Err(e) = event {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                }
            })
            .await;
    });
    (reader, task)
}

async fn heartbeats(client: Client, names: Vec<String>, capacity: NodeCapacity) {
    let ready_since = status::now();
    let mut interval = tokio::time::interval(nodes::HEARTBEAT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        for name in &names {
            if let Err(e) = nodes::heartbeat(&client, name, &capacity, &ready_since).await {
                tracing::warn!(node = %name, error = %e, "node heartbeat failed");
            }
        }
    }
}
