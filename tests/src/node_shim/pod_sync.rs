//! The shim's one watch on Pods: binds unscheduled Pods to its Nodes (the
//! control plane has no scheduler) and hands every Pod placed on its Nodes
//! to a worker of its own, keyed by uid, so that a Pod recreated under the
//! same name is a new Pod.
//!
//! Workers see the latest version of their Pod through a watch channel
//! (`None` once the Pod left the API); a relist after a broken watch ends
//! the workers of Pods that vanished meanwhile.
//!
//! A Pod that fits no Node yet (its claims unbound, every Node tainted or
//! unlabelled) is tried again every [`RETRY_BINDING`], as the scheduler
//! retries unschedulable Pods when the cluster changes.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    api::{Api, PostParams},
    runtime::{reflector::ObjectRef, watcher, WatchStreamExt},
};
use serde_json::json;
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};

use super::{
    claims::{self, ClaimState},
    schedule::{self, Candidate},
    worker::{self, Runtime, WorkerCommand},
};

/// How often Pods that fit no Node are tried again.
pub const RETRY_BINDING: Duration = Duration::from_secs(1);

/// A Pod's namespace and name.
type PodName = (String, String);
/// A worker's Pod uid and command channel.
type WorkerInbox = (String, mpsc::UnboundedSender<WorkerCommand>);

/// Routes test commands (`kill`) to the worker of a Pod by namespace and name.
#[derive(Debug, Default)]
pub struct Commands {
    by_name: Mutex<BTreeMap<PodName, WorkerInbox>>,
}

impl Commands {
    /// Sends `cmd` to the worker of Pod `namespace/name`; false without one.
    pub fn send(&self, namespace: &str, name: &str, cmd: WorkerCommand) -> bool {
        let by_name = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        by_name
            .get(&(namespace.to_string(), name.to_string()))
            .is_some_and(|(_, tx)| tx.send(cmd).is_ok())
    }

    fn insert(&self, namespace: &str, name: &str, uid: &str, tx: mpsc::UnboundedSender<WorkerCommand>) {
        let mut by_name = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        by_name.insert((namespace.to_string(), name.to_string()), (uid.to_string(), tx));
    }

    fn remove_uid(&self, uid: &str) {
        let mut by_name = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        by_name.retain(|_, (u, _)| u != uid);
    }
}

struct WorkerHandle {
    pod_tx: watch::Sender<Option<Pod>>,
}

/// The Pod loop; returns once `stop` turned true and every worker ended.
pub async fn run(rt: Arc<Runtime>, nodes: Vec<Candidate>, commands: Arc<Commands>, mut stop: watch::Receiver<bool>) {
    let node_names: BTreeSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let api: Api<Pod> = Api::all(rt.client.clone());
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut workers: BTreeMap<String, WorkerHandle> = BTreeMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut relisted: Option<BTreeSet<String>> = None;
    // Pods bound but not yet seen on their node: counted as load so that a
    // burst of unscheduled Pods spreads.
    let mut pending_bindings: BTreeMap<String, String> = BTreeMap::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    // Pods that fit no Node when last tried, by uid.
    let mut unschedulable: BTreeMap<String, Pod> = BTreeMap::new();
    let mut retry = tokio::time::interval(RETRY_BINDING);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let sync = Sync {
        rt: &rt,
        nodes: &nodes,
        node_names: &node_names,
        commands: &commands,
        stop: stop.clone(),
    };
    loop {
        let event = tokio::select! {
            _ = stop.changed() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(uid) = done {
                    workers.remove(&uid);
                    commands.remove_uid(&uid);
                    finished.insert(uid);
                }
                continue;
            }
            _ = retry.tick(), if !unschedulable.is_empty() => {
                for pod in std::mem::take(&mut unschedulable).into_values() {
                    sync.apply(pod, &mut workers, &mut tasks, &mut pending_bindings, &finished, &mut unschedulable)
                        .await;
                }
                continue;
            }
            event = events.next() => event,
        };
        if *stop.borrow() {
            break;
        }
        let event = match event {
            None => break,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "watching pods failed; retrying");
                continue;
            }
            Some(Ok(event)) => event,
        };
        let pod = match event {
            watcher::Event::Init => {
                relisted = Some(BTreeSet::new());
                continue;
            }
            watcher::Event::InitApply(pod) => {
                if let (Some(seen), Some(uid)) = (relisted.as_mut(), pod.metadata.uid.clone()) {
                    seen.insert(uid);
                }
                pod
            }
            watcher::Event::InitDone => {
                if let Some(seen) = relisted.take() {
                    for (uid, handle) in &workers {
                        if !seen.contains(uid) {
                            handle.pod_tx.send_replace(None);
                        }
                    }
                }
                continue;
            }
            watcher::Event::Apply(pod) => pod,
            watcher::Event::Delete(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                pending_bindings.remove(&uid);
                unschedulable.remove(&uid);
                if let Some(handle) = workers.get(&uid) {
                    handle.pod_tx.send_replace(None);
                }
                continue;
            }
        };
        sync.apply(
            pod,
            &mut workers,
            &mut tasks,
            &mut pending_bindings,
            &finished,
            &mut unschedulable,
        )
        .await;
    }
    // Every worker watches `stop` too; wait until each stopped its process.
    while tasks.join_next().await.is_some() {}
}

struct Sync<'a> {
    rt: &'a Arc<Runtime>,
    /// The shim's Nodes as registered; their labels as the API has them
    /// now come from the Node cache ([`Runtime::nodes`]).
    nodes: &'a [Candidate],
    node_names: &'a BTreeSet<String>,
    commands: &'a Arc<Commands>,
    stop: watch::Receiver<bool>,
}

impl Sync<'_> {
    /// The shim's Nodes with their labels and taints as the API has them
    /// now (a label or taint added with kubectl counts), or as registered
    /// before the cache has seen them.
    fn current_nodes(&self) -> Vec<Candidate> {
        self.nodes
            .iter()
            .map(|n| match self.rt.nodes.get(&ObjectRef::new(&n.name)) {
                Some(node) => Candidate {
                    name: n.name.clone(),
                    labels: node.metadata.labels.clone().unwrap_or_default(),
                    taints: node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default(),
                },
                None => n.clone(),
            })
            .collect()
    }

    async fn apply(
        &self,
        pod: Pod,
        workers: &mut BTreeMap<String, WorkerHandle>,
        tasks: &mut JoinSet<String>,
        pending_bindings: &mut BTreeMap<String, String>,
        finished: &BTreeSet<String>,
        unschedulable: &mut BTreeMap<String, Pod>,
    ) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if self.rt.options.schedule && schedule::wants_binding(&pod) {
            if !pending_bindings.contains_key(&uid) {
                match self.bind(&pod, pending_bindings).await {
                    Some(node) => {
                        pending_bindings.insert(uid, node);
                    }
                    None => {
                        unschedulable.insert(uid, pod);
                    }
                }
            }
            return;
        }
        unschedulable.remove(&uid);
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            return;
        };
        if !self.node_names.contains(&node) {
            return;
        }
        pending_bindings.remove(&uid);
        if let Some(handle) = workers.get(&uid) {
            handle.pod_tx.send_replace(Some(pod));
            return;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if finished.contains(&uid) || matches!(phase, Some("Succeeded" | "Failed")) {
            // A worker already saw this Pod through, or it ran to completion
            // before this shim started.
            return;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        tracing::debug!(pod = %name, %namespace, %node, "new pod on a shim node");
        let (pod_tx, pod_rx) = watch::channel(Some(pod));
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        self.commands.insert(&namespace, &name, &uid, cmd_tx);
        let rt = self.rt.clone();
        let stop = self.stop.clone();
        let task_uid = uid.clone();
        tasks.spawn(async move {
            worker::run(rt, node, pod_rx, cmd_rx, stop).await;
            task_uid
        });
        workers.insert(uid, WorkerHandle { pod_tx });
    }

    /// Binds `pod` to the least loaded fitting shim node once its claims
    /// are bound; returns the node.
    async fn bind(&self, pod: &Pod, pending_bindings: &BTreeMap<String, String>) -> Option<String> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let volumes = match claims::resolve(pod, &self.rt.claims) {
            ClaimState::Bound { node_affinity, .. } => node_affinity,
            ClaimState::Waiting(why) => {
                tracing::debug!(pod = %name, %namespace, "not binding yet: {why}");
                return None;
            }
        };
        let mut load = self.rt.state.load();
        for node in pending_bindings.values() {
            *load.entry(node.clone()).or_insert(0) += 1;
        }
        let nodes = self.current_nodes();
        let node = schedule::pick_node(pod, &nodes, &load, &volumes)?.to_string();
        let api: Api<Pod> = Api::namespaced(self.rt.client.clone(), namespace);
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": { "name": name, "namespace": namespace, "uid": pod.metadata.uid },
            "target": { "apiVersion": "v1", "kind": "Node", "name": node },
        });
        match api
            .create_subresource::<_, serde_json::Value>("binding", name, &PostParams::default(), &binding)
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %name, %namespace, %node, "pod bound");
                Some(node)
            }
            Err(e) => {
                // Bound meanwhile (409) or gone (404): the watch shows what happened.
                tracing::debug!(pod = %name, error = %e, "binding failed");
                None
            }
        }
    }
}
