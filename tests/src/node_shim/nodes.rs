//! The shim's Nodes: registered as a kubelet registers itself, kept Ready
//! by a heartbeat (the Ready condition's `lastHeartbeatTime` and a Lease
//! in `kube-node-lease`), so that controllers treat them as healthy nodes.
//!
//! New Nodes get the `node.kubernetes.io/not-ready:NoSchedule` taint from
//! the API server's TaintNodesByCondition admission; in a cluster the node
//! lifecycle controller lifts it once the kubelet reports Ready. The local
//! control plane runs no such controller (it would also evict everything
//! when a heartbeat is late), so the shim lifts it itself, or no DaemonSet
//! would place a Pod on its Nodes.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo},
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};
use kube::{
    api::{Api, Patch, PatchParams},
    Client,
};
use serde_json::json;

use super::status::now;

/// Field manager of everything the shim applies.
pub const FIELD_MANAGER: &str = "slicecache-node-shim";
/// How often the Ready heartbeat and the node Lease are renewed.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Taints the node lifecycle controller would remove from a Ready node.
const CONDITION_TAINTS: &[&str] = &["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"];

/// What every shim Node reports as its size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCapacity {
    pub cpu: String,
    pub memory: String,
    pub pods: String,
}

impl Default for NodeCapacity {
    fn default() -> Self {
        Self {
            cpu: "8".into(),
            memory: "16Gi".into(),
            pods: "110".into(),
        }
    }
}

/// The name of shim node `index` (1-based): `PREFIX-INDEX`.
pub fn node_name(prefix: &str, index: usize) -> String {
    format!("{prefix}-{index}")
}

/// The Node object a shim node registers with (metadata and spec).
pub fn node_object(name: &str, labels: &BTreeMap<String, String>) -> Node {
    let mut all = labels.clone();
    all.insert("kubernetes.io/hostname".into(), name.into());
    all.insert("kubernetes.io/os".into(), "linux".into());
    all.insert(
        "kubernetes.io/arch".into(),
        std::env::consts::ARCH.replace("x86_64", "amd64"),
    );
    all.insert("slicecache.io/node-shim".into(), "true".into());
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(all),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

/// A shim node's status: Ready now, with `capacity` as capacity and
/// allocatable, reachable on 127.0.0.1.
pub fn node_status(
    name: &str,
    capacity: &NodeCapacity,
    ready_since: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> NodeStatus {
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(capacity.cpu.clone())),
        ("memory".to_string(), Quantity(capacity.memory.clone())),
        ("pods".to_string(), Quantity(capacity.pods.clone())),
        ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
    ]);
    let heartbeat = now();
    let condition = |type_: &str, status: bool, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(heartbeat.clone()),
        last_transition_time: Some(ready_since.clone()),
    };
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: "127.0.0.1".into(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.into(),
            },
        ]),
        conditions: Some(vec![
            condition("MemoryPressure", false, "KubeletHasSufficientMemory", "node shim"),
            condition("DiskPressure", false, "KubeletHasNoDiskPressure", "node shim"),
            condition("PIDPressure", false, "KubeletHasSufficientPID", "node shim"),
            condition(
                "Ready",
                true,
                "KubeletReady",
                "slicecache node shim is posting ready status",
            ),
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.replace("x86_64", "amd64"),
            boot_id: name.into(),
            container_runtime_version: "shim://0.1.0".into(),
            kernel_version: "shim".into(),
            kube_proxy_version: String::new(),
            kubelet_version: "v1.33.0-slicecache-node-shim".into(),
            machine_id: name.into(),
            operating_system: "linux".into(),
            os_image: "slicecache node shim".into(),
            system_uuid: name.into(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

/// Creates or updates Node `name` (labels and Ready status), lifts the
/// condition taints and renews its Lease.
pub async fn register(
    client: &Client,
    name: &str,
    labels: &BTreeMap<String, String>,
    capacity: &NodeCapacity,
) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut object = serde_json::to_value(node_object(name, labels)).map_err(kube::Error::SerdeError)?;
    object["apiVersion"] = json!("v1");
    object["kind"] = json!("Node");
    nodes.patch(name, &params, &Patch::Apply(&object)).await?;
    heartbeat(client, name, capacity, &now()).await
}

/// One heartbeat: the Ready status, the condition taints lifted, the Lease
/// renewed (when `kube-node-lease` exists).
pub async fn heartbeat(
    client: &Client,
    name: &str,
    capacity: &NodeCapacity,
    ready_since: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let status = node_status(name, capacity, ready_since);
    let node = nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    lift_condition_taints(&nodes, &node).await?;
    renew_lease(client, &node).await;
    Ok(())
}

async fn lift_condition_taints(nodes: &Api<Node>, node: &Node) -> Result<(), kube::Error> {
    let Some(taints) = node.spec.as_ref().and_then(|s| s.taints.as_ref()) else {
        return Ok(());
    };
    let kept: Vec<_> = taints
        .iter()
        .filter(|t| !CONDITION_TAINTS.contains(&t.key.as_str()))
        .cloned()
        .collect();
    if kept.len() == taints.len() {
        return Ok(());
    }
    let name = node.metadata.name.as_deref().unwrap_or_default();
    tracing::debug!(node = name, "lifting the not-ready taint");
    // A JSON merge patch replaces the list; the resource version makes it
    // fail rather than drop a taint someone added meanwhile.
    let patch = json!({
        "metadata": { "resourceVersion": node.metadata.resource_version },
        "spec": { "taints": if kept.is_empty() { serde_json::Value::Null } else { json!(kept) } },
    });
    nodes.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?;
    Ok(())
}

async fn renew_lease(client: &Client, node: &Node) {
    use k8s_openapi::api::coordination::v1::Lease;
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renew = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(k8s_openapi::jiff::Timestamp::now());
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Node", "name": name,
                "uid": node.metadata.uid,
            }],
        },
        "spec": { "holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renew },
    });
    if let Err(e) = leases
        .patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&lease))
        .await
    {
        // Only newer controllers read the Lease; the Ready heartbeat is what matters.
        tracing::debug!(node = name, error = %e, "renewing the node Lease failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_carry_the_standard_labels_and_a_ready_status() {
        let node = node_object("shim-node-1", &BTreeMap::from([("zone".to_string(), "a".to_string())]));
        let labels = node.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get("kubernetes.io/hostname").map(String::as_str),
            Some("shim-node-1")
        );
        assert_eq!(labels.get("kubernetes.io/os").map(String::as_str), Some("linux"));
        assert_eq!(labels.get("zone").map(String::as_str), Some("a"));
        let status = node_status("shim-node-1", &NodeCapacity::default(), &now());
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.as_str());
        assert_eq!(ready, Some("True"));
        assert_eq!(
            status
                .allocatable
                .as_ref()
                .and_then(|a| a.get("pods"))
                .map(|q| q.0.as_str()),
            Some("110")
        );
        assert_eq!(node_name("shim-node", 3), "shim-node-3");
    }
}
