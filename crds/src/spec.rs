//! `SliceCache` spec: what users write with kubectl.
//!
//! Almost every field is optional so that a manifest naming only the origin
//! URL is complete. Defaults are resolved in one place, the validation layer
//! ([`crate::validate`]), and documented on each field; the schema carries no
//! `default` values, so an operator upgrade that improves a default reaches
//! every resource that did not pin the value.
//!
//! The schema says what it can (ranges, enums, patterns, CEL rules between
//! sibling fields); [`crate::validate`] checks the rest (powers of two,
//! quantity bounds, regex syntax, URL parsing).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Affinity, ResourceRequirements, Toleration},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{CustomResource, KubeSchema};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::{
    agent_config::FormatPolicy,
    status::SliceCacheStatus,
    units::{ByteSize, HumanDuration},
};

/// CEL: `spec.replicas` only with `workload: Deployment`.
pub const REPLICAS_RULE: &str = "!has(self.replicas) || (has(self.workload) && self.workload == 'Deployment')";

/// CEL: `workload: Deployment` only without storage of the node.
pub const DEPLOYMENT_STORAGE_RULE: &str = "!has(self.workload) || self.workload != 'Deployment' || !has(self.cache) || !has(self.cache.disk) || ((!has(self.cache.disk.devices) || size(self.cache.disk.devices) == 0) && !has(self.cache.disk.deviceFilter) && (!has(self.cache.disk.useAllDevices) || !self.cache.disk.useAllDevices) && !has(self.cache.disk.hostPathFile))";

/// The confirmation string that arms `spec.cleanup.wipeDevicesOnDelete`.
pub const WIPE_CONFIRMATION: &str = "yes-really-wipe-cache-devices";

/// CEL: a slice size is a power of two from 64Ki to 64Mi.
///
/// CEL has no quantity arithmetic before Kubernetes 1.29, so the rule parses
/// the only spellings that can denote such a size: plain bytes, `Ki` and `Mi`
/// (a decimal suffix never yields a power of two, `Gi` and up are too large).
/// `string(self)` reads both forms of the int-or-string value, so the rule
/// needs no `type()`. It never rejects what [`crate::validate`] accepts; the
/// `ByteSize` rule on the same field rejects signs and other malformed strings.
pub const SLICE_SIZE_RULE: &str = "string(self).endsWith('Ki') ? int(string(self).substring(0, size(string(self)) - 2)) * 1024 in [65536, 131072, 262144, 524288, 1048576, 2097152, 4194304, 8388608, 16777216, 33554432, 67108864] : string(self).endsWith('Mi') ? int(string(self).substring(0, size(string(self)) - 2)) * 1048576 in [65536, 131072, 262144, 524288, 1048576, 2097152, 4194304, 8388608, 16777216, 33554432, 67108864] : string(self).matches('^[0-9]+$') && int(string(self)) in [65536, 131072, 262144, 524288, 1048576, 2097152, 4194304, 8388608, 16777216, 33554432, 67108864]";
/// Message of [`SLICE_SIZE_RULE`], naming the rejected value (the API
/// server's "Invalid value" shows only the value's type).
pub const SLICE_SIZE_MESSAGE: &str =
    "string(self) + ' is not a power of two from 64Ki to 64Mi; use e.g. 256Ki, 1Mi or 4Mi'";

/// CEL: `minSliceSize` does not exceed `maxSliceSize`. Compares bytes
/// parsed the way [`SLICE_SIZE_RULE`] does; spellings that rule rejects
/// anyway are left to it.
pub const SLICE_BOUNDS_RULE: &str = "!has(self.minSliceSize) || !has(self.maxSliceSize) || !string(self.minSliceSize).matches('^[0-9]+(Ki|Mi)?$') || !string(self.maxSliceSize).matches('^[0-9]+(Ki|Mi)?$') || (string(self.minSliceSize).endsWith('Ki') ? int(string(self.minSliceSize).substring(0, size(string(self.minSliceSize)) - 2)) * 1024 : string(self.minSliceSize).endsWith('Mi') ? int(string(self.minSliceSize).substring(0, size(string(self.minSliceSize)) - 2)) * 1048576 : int(string(self.minSliceSize))) <= (string(self.maxSliceSize).endsWith('Ki') ? int(string(self.maxSliceSize).substring(0, size(string(self.maxSliceSize)) - 2)) * 1024 : string(self.maxSliceSize).endsWith('Mi') ? int(string(self.maxSliceSize).substring(0, size(string(self.maxSliceSize)) - 2)) * 1048576 : int(string(self.maxSliceSize)))";

/// A fleet of slicing HTTP caches in front of one origin: one node agent per
/// chosen node, each caching on local memory and raw block devices.
// Each `printcolumn(...)` repeats `type_`/`priority`, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "slicecache.io",
    version = "v1alpha1",
    kind = "SliceCache",
    plural = "slicecaches",
    singular = "slicecache",
    namespaced,
    shortname = "slc",
    category = "slicecache",
    status = "SliceCacheStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    derive = "PartialEq",
    doc = "A fleet of slicing HTTP caches on the local disks of cluster nodes, in front of one origin.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether every desired node agent serves with the current configuration"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        json_path = ".status.nodes.ready",
        description = "Node agents that are ready"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.nodes.desired",
        description = "Nodes that should run an agent",
        priority = 1
    ),
    printcolumn(
        name = "Slice",
        type_ = "string",
        json_path = ".status.effective.sliceSize",
        description = "Slice size in force"
    ),
    printcolumn(
        name = "Concurrency",
        type_ = "integer",
        json_path = ".status.effective.concurrency",
        description = "Origin subrequests per client request in force"
    ),
    printcolumn(
        name = "Hit%",
        type_ = "string",
        json_path = ".status.hitRatio",
        description = "Cache hit ratio over the last tuning interval"
    ),
    printcolumn(
        name = "Tuning",
        type_ = "string",
        json_path = ".spec.tuning.mode",
        description = "Tuning mode",
        priority = 1
    ),
    printcolumn(
        name = "Members",
        type_ = "integer",
        json_path = ".status.fleet.members",
        description = "Fleet members (agents serving their peers) in mode Shard",
        priority = 1
    ),
    printcolumn(
        name = "Owned",
        type_ = "string",
        json_path = ".status.fleet.ownedFraction",
        description = "Share of the keys each member owns in mode Shard",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(REPLICAS_RULE)
        .message("replicas applies only to workload: Deployment; a DaemonSet runs one agent on every node that placement selects")
        .field_path(".replicas"),
    validation = Rule::new(DEPLOYMENT_STORAGE_RULE)
        .message("workload: Deployment cannot use storage of the node (devices, deviceFilter, useAllDevices, hostPathFile); use cache.disk.emptyDirFile or cache.disk.volumeClaimTemplate")
        .field_path(".workload")
)]
pub struct SliceCacheSpec {
    /// The origin that misses are fetched from.
    pub origin: OriginSpec,

    /// How client requests are cut into aligned slices and fetched from the origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slicing: Option<SlicingSpec>,

    /// Cache tiers: memory (L1), local block devices or files (L2), and freshness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,

    /// Which nodes run a node agent. Without any setting, every schedulable
    /// node runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementSpec>,

    /// Compute resources of the node agent container. Unset: no requests or limits.
    /// Give the agent at least the L1 memory size (`cache.memory`) plus
    /// headroom for in-flight slices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Node agent container image. Unset: the image the operator was released with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// The Service that clients use to reach the agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,

    /// Automatic tuning of slice size and concurrency from the agents' Prometheus metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<TuningSpec>,

    /// How changes that restart agents roll across nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,

    /// Stop reconciling: nothing is created, changed or deleted while true,
    /// and running agents keep serving. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,

    /// What happens to cache devices when this SliceCache is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<CleanupSpec>,

    /// What runs the agents: DaemonSet (one agent on every node that
    /// placement selects, with storage of the node) or Deployment (a number
    /// of agent pods, each with storage of its own, scalable through the
    /// scale subresource). Default: DaemonSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadKind>,

    /// Agent pods of workload Deployment; the scale subresource reads and
    /// writes this field, so an HPA or KEDA scales the SliceCache through it.
    /// Unset: the operator leaves the Deployment's replicas to whoever sets
    /// them (1 when it is created). Only with workload Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// Secret key holding the bearer token for the agents' purge endpoint.
    /// Unset: purge is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_token_secret_ref: Option<SecretKeyRef>,

    /// One cache per fleet: each slice has an owner agent, only the owner
    /// fetches it from the origin, and the other agents ask the owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetSpec>,
}

// === fleet ===

/// How the agents of this SliceCache share the key space.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetSpec {
    /// Off (every agent is a cache of its own) or Shard (one cache: each
    /// slice owned by one agent). Default: Off. Quote `"Off"` in YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FleetMode>,
    /// Ownership granule: slices of one aligned span of this size share an
    /// owner. A power of two from 64Ki to 1Gi, at least the largest slice
    /// size the spec allows (`slicing.sliceSize`, or `tuning.maxSliceSize`
    /// when the tuner runs), so slice-size changes never move ownership.
    /// Default: 4Mi, or that largest slice size when it is larger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granule: Option<ByteSize>,
    /// Time to connect to a peer before a miss goes to the origin instead.
    /// Default: 200ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<HumanDuration>,
    /// Time for a peer's first response byte before a miss goes to the
    /// origin instead. Default: 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_timeout: Option<HumanDuration>,
    /// Agents that hold each slice, 1-3: the owner fills it from the
    /// origin, the others copy it from the owner into memory, and each
    /// agent asks the holder its name picks. More spreads the load of
    /// popular objects at the cost of memory. Hot keys are spread over 3
    /// holders whatever this says. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3))]
    pub replicas: Option<u8>,
    /// How often the operator rotates the token the agents present to each
    /// other, without restarting them: the new token is accepted, then
    /// presented, then the old one dropped, 5 minutes apart. At least 1h.
    /// Default: 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_rotation: Option<HumanDuration>,
}

/// Off: N agents are N caches, each filling every object it is asked for
/// from the origin. Shard: the agents are one cache; each slice is fetched
/// from the origin once per fleet. Default: Off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FleetMode {
    /// Every agent is a cache of its own.
    #[default]
    Off,
    /// One cache: each slice has an owner agent.
    Shard,
}

// === origin ===

/// The origin that cache misses are fetched from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OriginSpec {
    /// Origin base URL, `http://` or `https://`, e.g. `https://media.example.com`.
    /// Client request paths are appended to it.
    #[schemars(regex(pattern = r"^https?://[^\s/?#]+([/?#]\S*)?$"), length(max = 2048))]
    pub url: String,

    /// Host header sent to the origin. Unset: the authority of `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9.\-\[\]:]+$"), length(min = 1, max = 255))]
    pub host_header: Option<String>,

    /// Timeouts for origin requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<OriginTimeouts>,

    /// Origin subrequests one agent runs at once across all client requests.
    /// Default: 256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub max_connections_per_agent: Option<u32>,
}

/// Timeouts for origin requests; durations such as `500ms`, `2s`, `1m`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OriginTimeouts {
    /// Time allowed to establish a connection (TCP and TLS). Default: 2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<HumanDuration>,
    /// Time allowed from sending a request to the first response byte. Default: 15s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte: Option<HumanDuration>,
    /// Time allowed between two reads of a response body. Default: 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<HumanDuration>,
}

// === slicing ===

/// How client requests are cut into aligned slices `[k*S, (k+1)*S)` and fetched.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlicingSpec {
    /// Slice size S: a power of two from 64Ki to 64Mi, as bytes or a quantity
    /// (`1Mi`, `1048576`). Default: 1Mi. With tuning mode Auto this is the
    /// starting point and must lie within the tuning bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(SLICE_SIZE_RULE).message(Message::Expression(SLICE_SIZE_MESSAGE.into())))]
    pub slice_size: Option<ByteSize>,

    /// Origin subrequests in flight per client request, 1-64. Default: 4.
    /// With tuning mode Auto this is the starting point and must lie within
    /// the tuning bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub concurrency: Option<u32>,

    /// Objects up to this size are fetched and cached whole instead of in
    /// slices, as bytes or a quantity. Default: 0 (slice everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_object_size: Option<ByteSize>,

    /// Retries for a failed slice fetch (with backoff and jitter), 0-10. Default: 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: Option<u32>,
}

// === cache ===

/// Cache tiers and freshness.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// L1 memory cache size per agent, as bytes or a quantity. Default: 256Mi.
    /// Must be at least one slice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,

    /// L2: local block devices, or a file used as one. Unset: the agents
    /// cache in memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskSpec>,

    /// Freshness of cached objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<TtlSpec>,
}

/// Which local devices the agents own. Choose devices by stable path, by
/// kernel name filter, or all unused devices (at most one of the three), and
/// optionally a file-backed device.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.devices) && size(self.devices) > 0 ? 1 : 0) + (has(self.deviceFilter) ? 1 : 0) + (has(self.useAllDevices) && self.useAllDevices ? 1 : 0) <= 1"
).message("at most one of devices, deviceFilter and useAllDevices may be set"))]
pub struct DiskSpec {
    /// Block devices by stable path, e.g. `/dev/disk/by-id/nvme-...`. A node
    /// that lacks a listed path runs without it and reports it in status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = r"^/dev/\S+$")))]
    pub devices: Vec<String>,

    /// Regular expression matched against kernel device names (as in
    /// `/sys/block`, e.g. `^nvme[0-9]+n1$`); matching whole, unpartitioned,
    /// unmounted devices are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub device_filter: Option<String>,

    /// Use every whole, unpartitioned, unmounted device on the node. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_all_devices: Option<bool>,

    /// A file on the node used as a block device, for nodes without a spare disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path_file: Option<HostPathFileSpec>,

    /// A file in an emptyDir volume of each agent pod, used as a block
    /// device: storage of the pod, which starts empty with every new pod.
    /// Works with both workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir_file: Option<EmptyDirFileSpec>,

    /// A PersistentVolumeClaim with volumeMode Block for each agent pod (a
    /// generic ephemeral volume: created with the pod, deleted with it),
    /// used as a block device. Works with both workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claim_template: Option<VolumeClaimTemplateSpec>,

    /// Whether agents may format a device that carries no slicecache
    /// ownership marker. IfNotOwned formats only blank devices (no filesystem,
    /// partition table or other signature) and devices already marked as
    /// slicecache's; Never uses only devices that already carry the marker;
    /// Overwrite formats the named devices whatever they hold, erasing any
    /// foreign data (refused with deviceFilter or useAllDevices).
    /// Default: IfNotOwned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "format_policy_schema")]
    pub format: Option<FormatPolicy>,
}

/// A file on each node used as a block device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostPathFileSpec {
    /// Absolute path of the file on the node; created with `size` when missing.
    #[schemars(regex(pattern = r"^/\S*[^/]$"), length(max = 4096))]
    pub path: String,
    /// File size, as bytes or a quantity; at least 64Mi.
    pub size: ByteSize,
}

/// A file in an emptyDir volume of each agent pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirFileSpec {
    /// File size, as bytes or a quantity; at least 64Mi. Also the emptyDir's
    /// sizeLimit; request as much `ephemeral-storage` in `resources` so the
    /// scheduler places the pod where the node has the room.
    pub size: ByteSize,
}

/// A raw block PersistentVolumeClaim for each agent pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeClaimTemplateSpec {
    /// StorageClass of the claims; it must support volumeMode Block.
    /// Unset: the cluster's default StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub storage_class_name: Option<String>,
    /// Requested size of each claim, as bytes or a quantity; at least 64Mi.
    /// The agent uses the whole volume it gets.
    pub size: ByteSize,
}

/// Freshness of cached objects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TtlSpec {
    /// Freshness lifetime when the origin gives none, or when origin headers
    /// are ignored. Default: 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<HumanDuration>,
    /// Whether origin `Cache-Control`/`Expires` win over `default`. Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honor_origin_cache_control: Option<bool>,
}

// === placement and workload ===

/// Which nodes run a node agent, DaemonSet-style.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Node labels an agent's node must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the agent pods, e.g. for dedicated cache nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Affinity of the agent pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

/// What runs the agents. DaemonSet: one agent on every node that placement
/// selects, with storage of the node (devices, hostPathFile) or of the pod.
/// Deployment: `replicas` agent pods, scalable through the scale
/// subresource (HPA, KEDA), with storage of the pod only (emptyDirFile,
/// volumeClaimTemplate) or memory alone. Default: DaemonSet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadKind {
    /// One agent on every selected node.
    #[default]
    DaemonSet,
    /// A scalable number of agent pods.
    Deployment,
}

impl WorkloadKind {
    /// The Kubernetes kind that runs the agents.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DaemonSet => "DaemonSet",
            Self::Deployment => "Deployment",
        }
    }
}

/// The client-facing Service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type: ClusterIP, NodePort or LoadBalancer. Default: ClusterIP.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,
    /// Service port clients connect to, 1-65535. Default: 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

/// Service type: ClusterIP (inside the cluster only), NodePort (also on a
/// port of every node) or LoadBalancer (also through a cloud load balancer).
/// Default: ClusterIP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also through a cloud load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The value of a Service's `spec.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

// === tuning ===

/// Automatic tuning of slice size and concurrency.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(
        "!has(self.minConcurrency) || !has(self.maxConcurrency) || self.minConcurrency <= self.maxConcurrency"
    ).message("minConcurrency must not exceed maxConcurrency").field_path(".minConcurrency"),
    validation = Rule::new(SLICE_BOUNDS_RULE)
        .message("minSliceSize must not exceed maxSliceSize")
        .field_path(".minSliceSize"),
    validation = Rule::new(
        "!has(self.mode) || self.mode == 'Off' || (has(self.prometheus) && has(self.prometheus.url))"
    ).message("tuning modes Recommend and Auto need prometheus.url").field_path(".prometheus")
)]
pub struct TuningSpec {
    /// Off, Recommend or Auto. Default: Off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TuningMode>,

    /// Where the agents' metrics are queried. Required for Recommend and Auto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSpec>,

    /// Time between two tuning evaluations. Default: 1m; at least 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,

    /// Smallest slice size the tuner may choose: a power of two, 64Ki-64Mi.
    /// Default: 64Ki.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(SLICE_SIZE_RULE).message(Message::Expression(SLICE_SIZE_MESSAGE.into())))]
    pub min_slice_size: Option<ByteSize>,

    /// Largest slice size the tuner may choose: a power of two, 64Ki-64Mi,
    /// not below minSliceSize. Default: 64Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(SLICE_SIZE_RULE).message(Message::Expression(SLICE_SIZE_MESSAGE.into())))]
    pub max_slice_size: Option<ByteSize>,

    /// Smallest concurrency the tuner may choose, 1-64. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub min_concurrency: Option<u32>,

    /// Largest concurrency the tuner may choose, 1-64, not below minConcurrency. Default: 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrency: Option<u32>,

    /// Least time between two applied changes, so that each change is
    /// measured before the next. Default: 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<HumanDuration>,
}

/// Off: the spec values are used as written. Recommend: the operator
/// computes decisions and writes them to status only. Auto: decisions are
/// applied (agents hot-reload, caches stay warm). Default: Off. Quote `"Off"`
/// in YAML: kubectl reads a bare `Off` as the boolean false.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TuningMode {
    /// No tuning: the spec values are in force.
    #[default]
    Off,
    /// Decisions are written to status only.
    Recommend,
    /// Decisions are applied.
    Auto,
}

/// A Prometheus server that scrapes the agents.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSpec {
    /// Base URL of the Prometheus HTTP API, e.g.
    /// `http://prometheus-operated.monitoring.svc:9090`.
    #[schemars(regex(pattern = r"^https?://[^\s/?#]+([/?#]\S*)?$"), length(max = 2048))]
    pub url: String,

    /// PromQL label matchers that pick this SliceCache's agent series, e.g.
    /// `job="slicecache",cluster="eu"` (braces optional). Default: the
    /// `namespace` and `pod` labels of the agent pods, which Kubernetes
    /// service discovery, PodMonitors and ServiceMonitors put on every
    /// target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub selector: Option<String>,
}

// === rollout, cleanup, secrets ===

/// How changes that restart agents roll across nodes. Changes to tunables
/// only (slice size, concurrency, retries, TTLs) never restart agents.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Agents that may be unavailable at once during a rollout: a count of at
    /// least 1 or a percentage of desired nodes such as `25%` (rounded up,
    /// at least one node). Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "string(self).endsWith('%') ? string(self).matches('^(100|[1-9][0-9]?)%$') : string(self).matches('^[1-9][0-9]{0,9}$') && self == int(string(self))"
    ).message("must be a count of at least 1 or a percentage from 1% to 100%"))]
    pub max_unavailable: Option<IntOrString>,

    /// Time to wait after an agent became ready before the next node is
    /// restarted, so that its cache warms. Default: 0s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_between_nodes: Option<HumanDuration>,
}

/// What happens to cache devices when the SliceCache is deleted.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.wipeDevicesOnDelete) || !self.wipeDevicesOnDelete || (has(self.confirmation) && self.confirmation == 'yes-really-wipe-cache-devices')"
).message("wipeDevicesOnDelete requires confirmation: yes-really-wipe-cache-devices").field_path(".confirmation"))]
pub struct CleanupSpec {
    /// Erase the slicecache superblock on every device when the SliceCache is
    /// deleted. Acts only together with the confirmation string. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_devices_on_delete: Option<bool>,
    /// Must be exactly `yes-really-wipe-cache-devices` for wipeDevicesOnDelete to act.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub confirmation: Option<String>,
}

/// A key of a Secret in the SliceCache's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
    /// Key within the Secret. Default: `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

// The derived schema of an `Option<enum>` carries the enum's own doc comment
// (kube's `OptionalEnum` rewrite), which for `FormatPolicy` is written for the
// agent config file. Spell the schema out so the field's doc comment shows.
fn format_policy_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "enum": ["IfNotOwned", "Never", "Overwrite"],
        "nullable": true
    })
}
