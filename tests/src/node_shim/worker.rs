//! One Pod on one of the shim's nodes, from placement to removal: what a
//! kubelet's pod worker does, for the agent's Pods only.
//!
//! A Pod whose container asks for the agent image gets a loopback address,
//! its volume files, and a `slicecache-agent` process; its status follows
//! the process (Running, readiness from the readiness probe every probe
//! period, a SIGKILL after `failureThreshold` failed liveness probes,
//! restarts with a short backoff per `restartPolicy`), and its
//! ConfigMap and Secret files follow the API objects while it runs. When
//! the Pod is deleted the process gets SIGTERM, then SIGKILL after the
//! grace period (capped by the shim's options), and the Pod is removed with
//! a grace period of 0, which is the kubelet's last word that lets
//! controllers replace it. Any other Pod gets no process: it stays Pending
//! with a waiting reason and an Event saying why.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Container, Event, EventSource, ObjectReference, Pod, Probe},
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use kube::{
    api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions},
    Client,
};
use serde_json::json;
use slicecache_testkit::client::HttpClient;
use tokio::sync::{mpsc, watch};

use super::{
    api_access,
    claims::{self, ClaimStores},
    image::ImageMatch,
    pod_files::{self, ObjectStores, PodContext},
    process::ContainerProcess,
    state::{PodInfo, ShimState},
    status::{now, ContainerView, PodView, RunState},
    volumes::PodDirs,
    ShimOptions,
};

/// What every Pod worker shares.
pub struct Runtime {
    pub client: Client,
    /// Every Node, as the API has it.
    pub nodes: kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Node>,
    pub stores: ObjectStores,
    pub claims: ClaimStores,
    pub state: Arc<ShimState>,
    pub options: Arc<ShimOptions>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("state", &self.state)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Requests from tests to a Pod worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerCommand {
    /// SIGKILL the process now, as a crash would end it.
    Kill,
}

/// Why the shim runs no process for `pod`, or `None` when it does.
pub fn refusal(pod: &Pod, image: &ImageMatch) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        return Some("the slicecache node shim runs no init containers".into());
    }
    match spec.containers.as_slice() {
        [c] => {
            let img = c.image.as_deref().unwrap_or_default();
            (!image.matches(img)).then(|| {
                format!("image {img:?} is not the slicecache agent's; the slicecache node shim runs no process for it")
            })
        }
        _ => Some("the slicecache node shim runs Pods of exactly one (agent) container".into()),
    }
}

/// Runs the worker of the Pod in `pod_rx` (on `node`) until the Pod is
/// gone or `stop` turns true.
pub async fn run(
    rt: Arc<Runtime>,
    node: String,
    mut pod_rx: watch::Receiver<Option<Pod>>,
    mut cmd_rx: mpsc::UnboundedReceiver<WorkerCommand>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(pod) = pod_rx.borrow_and_update().clone() else {
        return;
    };
    let mut w = Worker::new(rt, node, pod);
    match refusal(&w.pod, &w.rt.options.image) {
        Some(why) => w.refused(why, &mut pod_rx, &mut stop).await,
        None => w.run_agent(&mut pod_rx, &mut cmd_rx, &mut stop).await,
    }
}

/// What woke the worker.
enum Wake {
    Stop,
    PodChanged,
    Command(WorkerCommand),
    Exited(std::io::Result<std::process::ExitStatus>),
    Tick,
}

/// How the worker's loop ended.
enum End {
    /// The shim stops: the process stops, the Pod stays.
    ShimStopped,
    /// The Pod is gone from the API (or the watch lost it).
    PodGone,
    /// The Pod is being deleted: stop, then remove it.
    Deleting,
}

struct Worker {
    rt: Arc<Runtime>,
    node: String,
    pod: Pod,
    uid: String,
    namespace: String,
    name: String,
    api: Api<Pod>,
    dirs: PodDirs,
    log: PathBuf,
    view: PodView,
    last_written: Option<serde_json::Value>,
    ip: Option<Ipv4Addr>,
    runs_agent: bool,
    /// The kubeconfig written for the Pod (see [`api_access`]), once written.
    kubeconfig: Option<PathBuf>,
    /// The local devices of the Pod's Block claims, once bound.
    claim_devices: BTreeMap<String, PathBuf>,
}

impl Worker {
    fn new(rt: Arc<Runtime>, node: String, pod: Pod) -> Self {
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dirs = PodDirs::new(&rt.options.dir, &pod, &node);
        let log = rt.options.dir.join("logs").join(format!(
            "{}.log",
            dirs.pod.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        ));
        let containers = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| ContainerView {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                state: RunState::Waiting {
                    reason: "ContainerCreating".into(),
                    message: None,
                },
                last_exit: None,
                ready: false,
                restart_count: 0,
                pid: None,
            })
            .collect();
        Self {
            api: Api::namespaced(rt.client.clone(), &namespace),
            view: PodView::new("127.0.0.1", containers),
            rt,
            node,
            pod,
            uid,
            namespace,
            name,
            dirs,
            log,
            last_written: None,
            ip: None,
            runs_agent: false,
            kubeconfig: None,
            claim_devices: BTreeMap::new(),
        }
    }

    fn container(&self) -> Option<&Container> {
        self.pod.spec.as_ref().and_then(|s| s.containers.first())
    }

    /// Publishes the Pod to the shared state and writes its status when changed.
    async fn publish(&mut self) {
        self.view.pod_ip = self.ip.map(IpAddr::V4);
        self.view.refresh_conditions();
        let c = self.view.containers.first();
        self.rt.state.update_pod(PodInfo {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            node: self.node.clone(),
            ip: self.view.pod_ip,
            pid: c.and_then(|c| c.pid),
            ready: self.view.ready(),
            restarts: c.map_or(0, |c| c.restart_count),
            runs_agent: self.runs_agent,
            log: self.log.clone(),
        });
        let status = match serde_json::to_value(self.view.to_status()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(pod = %self.name, error = %e, "serialising the pod status failed");
                return;
            }
        };
        if self.last_written.as_ref() == Some(&status) {
            return;
        }
        let patch = json!({ "status": status });
        match self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.last_written = Some(status),
            Err(e) => {
                tracing::warn!(pod = %self.name, namespace = %self.namespace, error = %e, "writing the pod status failed")
            }
        }
    }

    async fn event(&self, type_: &str, reason: &str, message: String) {
        let events: Api<Event> = Api::namespaced(self.rt.client.clone(), &self.namespace);
        let at = now();
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", self.name)),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                uid: Some(self.uid.clone()),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            source: Some(EventSource {
                component: Some(super::nodes::FIELD_MANAGER.into()),
                host: Some(self.node.clone()),
            }),
            reporting_component: Some(super::nodes::FIELD_MANAGER.into()),
            reporting_instance: Some(self.node.clone()),
            first_timestamp: Some(at.clone()),
            last_timestamp: Some(at),
            count: Some(1),
            ..Event::default()
        };
        if let Err(e) = events.create(&PostParams::default(), &event).await {
            tracing::debug!(pod = %self.name, reason, error = %e, "recording an event failed");
        }
    }

    // === Pods the shim does not run ===

    async fn refused(
        &mut self,
        why: String,
        pod_rx: &mut watch::Receiver<Option<Pod>>,
        stop: &mut watch::Receiver<bool>,
    ) {
        tracing::info!(pod = %self.name, namespace = %self.namespace, "{why}");
        for c in &mut self.view.containers {
            c.state = RunState::Waiting {
                reason: "ShimUnsupportedImage".into(),
                message: Some(why.clone()),
            };
        }
        self.view.message = Some(why.clone());
        self.view.reason = Some("ShimUnsupportedImage".into());
        self.publish().await;
        self.event("Warning", "ShimUnsupportedImage", why).await;
        loop {
            if self.pod.metadata.deletion_timestamp.is_some() {
                self.remove_from_api().await;
                break;
            }
            tokio::select! {
                _ = stop.changed() => break,
                changed = pod_rx.changed() => {
                    let Some(pod) = changed.ok().and_then(|()| pod_rx.borrow_and_update().clone()) else { break };
                    self.pod = pod;
                }
            }
        }
        self.rt.state.remove_pod(&self.uid);
    }

    // === agent Pods ===

    async fn run_agent(
        &mut self,
        pod_rx: &mut watch::Receiver<Option<Pod>>,
        cmd_rx: &mut mpsc::UnboundedReceiver<WorkerCommand>,
        stop: &mut watch::Receiver<bool>,
    ) {
        self.runs_agent = true;
        let options = self.rt.options.clone();
        let mut tick = tokio::time::interval(options.probe_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut process: Option<ContainerProcess> = None;
        let mut next_start = Some(Instant::now());
        let mut backoffs: u32 = 0;
        let mut probe_failures: i32 = 0;
        let mut liveness_failures: i32 = 0;
        let mut next_liveness: Option<Instant> = None;
        let end = loop {
            if self.pod.metadata.deletion_timestamp.is_some() {
                break End::Deleting;
            }
            if process.is_none() && next_start.is_some_and(|t| t <= Instant::now()) {
                if let Err(message) = self.grant_api_access().await {
                    tracing::warn!(pod = %self.name, %message, "no API access for the pod");
                    self.event("Warning", "FailedMount", message).await;
                }
                match self.start() {
                    Ok(p) => {
                        self.rt.state.add_pid(p.pid());
                        self.set_state(RunState::Running {
                            started_at: p.started_at().clone(),
                        });
                        if let Some(c) = self.view.containers.first_mut() {
                            c.pid = Some(p.pid());
                        }
                        tracing::info!(pod = %self.name, node = %self.node, pid = p.pid(), ip = ?self.ip, "agent started");
                        self.event("Normal", "Started", format!("Started container (pid {})", p.pid()))
                            .await;
                        probe_failures = 0;
                        liveness_failures = 0;
                        next_liveness = self.container().and_then(|c| c.liveness_probe.as_ref()).map(|probe| {
                            let delay = u64::try_from(probe.initial_delay_seconds.unwrap_or(0)).unwrap_or(0);
                            Instant::now() + Duration::from_secs(delay).max(probe_period(probe))
                        });
                        next_start = None;
                        process = Some(p);
                    }
                    Err((reason, message, retry)) => {
                        tracing::info!(pod = %self.name, reason, %message, "container not started");
                        self.set_state(RunState::Waiting {
                            reason: reason.into(),
                            message: Some(message),
                        });
                        next_start = Some(Instant::now() + retry);
                    }
                }
            }
            self.publish().await;

            let wake = tokio::select! {
                biased;
                _ = stop.changed() => Wake::Stop,
                _ = pod_rx.changed() => Wake::PodChanged,
                Some(cmd) = cmd_rx.recv() => Wake::Command(cmd),
                exited = wait(process.as_mut()) => Wake::Exited(exited),
                _ = tick.tick() => Wake::Tick,
            };
            match wake {
                Wake::Stop => break End::ShimStopped,
                Wake::PodChanged => match pod_rx.borrow_and_update().clone() {
                    Some(pod) => self.pod = pod,
                    None => break End::PodGone,
                },
                Wake::Command(WorkerCommand::Kill) => {
                    if let Some(p) = process.as_mut() {
                        tracing::info!(pod = %self.name, pid = p.pid(), "killing the agent (simulated crash)");
                        p.kill();
                    }
                }
                Wake::Exited(result) => {
                    let Some(p) = process.take() else { continue };
                    self.rt.state.remove_pid(p.pid());
                    let exit = match result {
                        Ok(status) => p.exit(status),
                        Err(e) => {
                            tracing::warn!(pod = %self.name, error = %e, "waiting for the agent failed");
                            p.exit(
                                <std::process::ExitStatus as std::os::unix::process::ExitStatusExt>::from_raw(137 << 8),
                            )
                        }
                    };
                    tracing::info!(pod = %self.name, pid = p.pid(), exit_code = exit.exit_code, signal = ?exit.signal, "agent exited");
                    let ran_long = p.started_at().0.duration_until(now().0).as_secs() >= 10;
                    if ran_long {
                        backoffs = 0;
                    }
                    let restart = match self.restart_policy() {
                        "Never" => false,
                        "OnFailure" => exit.exit_code != 0,
                        _ => true,
                    };
                    if let Some(c) = self.view.containers.first_mut() {
                        c.ready = false;
                        c.pid = None;
                        c.last_exit = Some(exit.clone());
                        if restart {
                            c.restart_count += 1;
                        }
                    }
                    if restart {
                        let delay = Duration::from_millis(250 << backoffs.min(3)).min(options.max_backoff);
                        backoffs += 1;
                        self.set_state(RunState::Waiting {
                            reason: "CrashLoopBackOff".into(),
                            message: Some(format!("back-off {delay:?} restarting failed container")),
                        });
                        next_start = Some(Instant::now() + delay);
                    } else {
                        self.view.finished = Some(if exit.exit_code == 0 { "Succeeded" } else { "Failed" });
                        self.set_state(RunState::Terminated(exit));
                    }
                }
                Wake::Tick if process.is_some() => {
                    let liveness = self.container().and_then(|c| c.liveness_probe.clone());
                    if let Some(probe) = liveness.filter(|_| next_liveness.is_some_and(|t| t <= Instant::now())) {
                        next_liveness = Some(Instant::now() + probe_period(&probe));
                        if self.probe(Some(&probe)).await {
                            liveness_failures = 0;
                        } else {
                            liveness_failures += 1;
                            if liveness_failures >= probe.failure_threshold.unwrap_or(3).max(1) {
                                liveness_failures = 0;
                                if let Some(p) = process.as_mut() {
                                    tracing::warn!(pod = %self.name, pid = p.pid(), "liveness probe failed, killing the agent");
                                    p.kill();
                                }
                                self.event("Warning", "Unhealthy", "Liveness probe failed; restarting".into())
                                    .await;
                            }
                        }
                    }
                    let readiness = self.container().and_then(|c| c.readiness_probe.clone());
                    let ok = self.probe(readiness.as_ref()).await;
                    probe_failures = if ok { 0 } else { probe_failures + 1 };
                    let threshold = self.readiness_failure_threshold();
                    if let Some(c) = self.view.containers.first_mut() {
                        // Ready on the first success, unready after
                        // failureThreshold failures in a row.
                        if ok {
                            c.ready = true;
                        } else if probe_failures >= threshold {
                            c.ready = false;
                        }
                    }
                    self.refresh_files();
                }
                Wake::Tick => {}
            }
        };

        if let End::Deleting = end {
            if let Some(c) = self.view.containers.first_mut() {
                c.ready = false;
            }
            self.publish().await;
        }
        if let Some(mut p) = process.take() {
            let grace = match end {
                End::Deleting => self.grace_period(),
                End::ShimStopped => options.max_grace.min(Duration::from_secs(5)),
                End::PodGone => Duration::from_secs(2),
            };
            if let End::Deleting = end {
                self.event(
                    "Normal",
                    "Killing",
                    format!("Stopping container (grace period {grace:?})"),
                )
                .await;
            }
            let exit = p.stop(grace).await;
            self.rt.state.remove_pid(p.pid());
            tracing::info!(pod = %self.name, pid = p.pid(), exit_code = exit.exit_code, "agent stopped");
            if let Some(c) = self.view.containers.first_mut() {
                c.ready = false;
                c.pid = None;
            }
            self.set_state(RunState::Terminated(exit));
        }
        if let End::Deleting = end {
            self.publish().await;
            self.remove_from_api().await;
        }
        self.clean_up();
    }

    fn set_state(&mut self, state: RunState) {
        if let Some(c) = self.view.containers.first_mut() {
            c.state = state;
        }
    }

    fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    /// The Pod's grace period (deletion's, else the spec's), within the shim's cap.
    fn grace_period(&self) -> Duration {
        let seconds = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0)).min(self.rt.options.max_grace)
    }

    /// Writes the Pod's kubeconfig once, when the API server mounted a
    /// service account token into it and the shim knows the cluster.
    async fn grant_api_access(&mut self) -> Result<(), String> {
        let Some(admin) = self.rt.options.api_kubeconfig.clone() else {
            return Ok(());
        };
        if self.kubeconfig.is_some() || !api_access::mounts_token(&self.pod) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dirs.pod).map_err(|e| format!("creating {}: {e}", self.dirs.pod.display()))?;
        let out = self.dirs.pod.join("kubeconfig");
        api_access::write_pod_kubeconfig(&self.rt.client, &admin, &self.pod, &out).await?;
        self.kubeconfig = Some(out);
        Ok(())
    }

    /// Prepares and spawns the container; on failure the waiting reason,
    /// message and retry delay.
    fn start(&mut self) -> Result<ContainerProcess, (&'static str, String, Duration)> {
        let container = self.container().cloned().ok_or((
            "CreateContainerConfigError",
            "the pod has no container".to_string(),
            Duration::from_secs(5),
        ))?;
        let ip = match self.ip {
            Some(ip) => ip,
            None => {
                let ports: Vec<u16> = container
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| u16::try_from(p.container_port).ok())
                    .collect();
                let ip = self.rt.state.allocate_ip(&ports).ok_or((
                    "ContainerCreating",
                    "no free loopback address for the pod's ports".to_string(),
                    Duration::from_secs(1),
                ))?;
                self.ip = Some(ip);
                ip
            }
        };
        self.claim_devices = claims::local_devices(&self.pod, &self.rt.claims, &self.dirs)
            .map_err(|e| (e.reason(), e.to_string(), Duration::from_secs(1)))?;
        let options = self.rt.options.clone();
        let ctx = PodContext {
            pod: &self.pod,
            container: &container,
            node: &self.node,
            dirs: &self.dirs,
            ip: IpAddr::V4(ip),
            host_ip: "127.0.0.1",
            stores: &self.rt.stores,
            claim_devices: &self.claim_devices,
            agent_binary: &options.agent_binary,
            rust_log: &options.rust_log,
            log: self.log.clone(),
        };
        let mut launch = pod_files::prepare(&ctx).map_err(|e| {
            let retry = if e.retryable() { 1 } else { 5 };
            (e.reason(), e.to_string(), Duration::from_secs(retry))
        })?;
        if let Some(kubeconfig) = &self.kubeconfig {
            launch.env.retain(|(n, _)| n != "KUBECONFIG");
            launch
                .env
                .push(("KUBECONFIG".into(), kubeconfig.to_string_lossy().into_owned()));
        }
        tracing::debug!(pod = %self.name, ?launch, "launching");
        ContainerProcess::spawn(&launch).map_err(|e| {
            (
                "RunContainerError",
                format!("starting {}: {e}", launch.program.display()),
                Duration::from_secs(1),
            )
        })
    }

    /// Brings the ConfigMap and Secret files up to date.
    fn refresh_files(&self) {
        let (Some(container), Some(ip)) = (self.container(), self.ip) else {
            return;
        };
        let ctx = PodContext {
            pod: &self.pod,
            container,
            node: &self.node,
            dirs: &self.dirs,
            ip: IpAddr::V4(ip),
            host_ip: "127.0.0.1",
            stores: &self.rt.stores,
            claim_devices: &self.claim_devices,
            agent_binary: &self.rt.options.agent_binary,
            rust_log: &self.rt.options.rust_log,
            log: self.log.clone(),
        };
        match pod_files::refresh_objects(&ctx, &ctx.paths()) {
            Ok(0) => {}
            Ok(n) => tracing::info!(pod = %self.name, files = n, "volume files updated"),
            // A ConfigMap deleted under a running Pod: the kubelet keeps the
            // last files too.
            Err(e) => tracing::debug!(pod = %self.name, error = %e, "volume files not refreshed"),
        }
    }

    fn readiness_failure_threshold(&self) -> i32 {
        self.container()
            .and_then(|c| c.readiness_probe.as_ref())
            .and_then(|p| p.failure_threshold)
            .unwrap_or(3)
            .max(1)
    }

    /// One probe: HTTP GET (2xx/3xx) or TCP connect on the Pod's address;
    /// success without a probe (or with an exec probe, which the shim
    /// cannot run).
    async fn probe(&self, probe: Option<&Probe>) -> bool {
        let (Some(container), Some(ip)) = (self.container(), self.ip) else {
            return false;
        };
        let Some(probe) = probe else {
            return true;
        };
        let timeout = Duration::from_secs(u64::try_from(probe.timeout_seconds.unwrap_or(1)).unwrap_or(1))
            .min(Duration::from_secs(1));
        if let Some(http) = &probe.http_get {
            let Some(port) = resolve_port(container, &http.port) else {
                return false;
            };
            let path = http.path.as_deref().unwrap_or("/");
            let mut client = HttpClient::new(SocketAddr::new(IpAddr::V4(ip), port));
            return matches!(
                tokio::time::timeout(timeout, client.get(path, &[])).await,
                Ok(Ok(resp)) if (200..400).contains(&resp.status)
            );
        }
        if let Some(tcp) = &probe.tcp_socket {
            let Some(port) = resolve_port(container, &tcp.port) else {
                return false;
            };
            return matches!(
                tokio::time::timeout(timeout, tokio::net::TcpStream::connect((ip, port))).await,
                Ok(Ok(_))
            );
        }
        true
    }

    /// Deletes the Pod with grace period 0 (this uid only).
    async fn remove_from_api(&self) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&self.name, &params).await {
            Ok(_) => tracing::info!(pod = %self.name, namespace = %self.namespace, "pod removed"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(pod = %self.name, error = %e, "removing the pod failed"),
        }
    }

    fn clean_up(&mut self) {
        if let Some(ip) = self.ip.take() {
            self.rt.state.release_ip(ip);
        }
        self.rt.state.remove_pod(&self.uid);
        if let Err(e) = std::fs::remove_dir_all(&self.dirs.pod) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::debug!(pod = %self.name, error = %e, "removing the pod directory failed");
            }
        }
    }
}

/// A probe's period (at least a second).
fn probe_period(probe: &Probe) -> Duration {
    Duration::from_secs(u64::try_from(probe.period_seconds.unwrap_or(10)).unwrap_or(10).max(1))
}

/// Waits for `process` to exit; never resolves without one.
async fn wait(process: Option<&mut ContainerProcess>) -> std::io::Result<std::process::ExitStatus> {
    match process {
        Some(p) => p.wait().await,
        None => std::future::pending().await,
    }
}

/// A probe's port: a number, or the name of one of the container's ports.
pub fn resolve_port(container: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerPort, PodSpec};

    use super::*;

    fn pod_of(images: &[&str]) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: images
                    .iter()
                    .map(|i| Container {
                        name: "c".into(),
                        image: Some((*i).into()),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn only_single_agent_container_pods_are_run() {
        let m = ImageMatch::default();
        assert_eq!(refusal(&pod_of(&["slicecache/slicecache-agent:0.1.0"]), &m), None);
        assert!(refusal(&pod_of(&["busybox"]), &m).is_some_and(|w| w.contains("busybox")));
        assert!(refusal(&pod_of(&["slicecache-agent", "slicecache-agent"]), &m).is_some());
        assert!(refusal(&pod_of(&[]), &m).is_some());
    }

    #[test]
    fn probe_ports_resolve_by_name_or_number() {
        let c = Container {
            ports: Some(vec![ContainerPort {
                name: Some("admin".into()),
                container_port: 9090,
                ..ContainerPort::default()
            }]),
            ..Container::default()
        };
        assert_eq!(resolve_port(&c, &IntOrString::String("admin".into())), Some(9090));
        assert_eq!(resolve_port(&c, &IntOrString::Int(8080)), Some(8080));
        assert_eq!(resolve_port(&c, &IntOrString::String("nope".into())), None);
    }
}
