//! The validated model: a `SliceCache` spec that passed validation, with
//! every default resolved, as [`ValidatedSliceCache`] and one type per spec
//! section.
//!
//! Fields are private to the validation layer: the section checks beside
//! this module build the values, and everyone else reads them through
//! accessors, so a value of these types has always been checked.

use std::time::Duration;

use http::Uri;
use k8s_openapi::{
    api::core::v1::{Affinity, ResourceRequirements, Toleration},
    apimachinery::pkg::util::intstr::IntOrString,
};
use regex::Regex;

use crate::{
    agent_config::FormatPolicy,
    spec::{ServiceType, TuningMode, WorkloadKind},
    units::HumanDuration,
};

/// A `SliceCache` spec that passed validation, with every default resolved.
///
/// Built only by [`ValidatedSliceCache::new`].
#[derive(Clone, Debug)]
pub struct ValidatedSliceCache {
    pub(super) origin: Origin,
    pub(super) slicing: Slicing,
    pub(super) cache: Cache,
    pub(super) placement: Placement,
    pub(super) resources: Option<ResourceRequirements>,
    pub(super) image: Option<String>,
    pub(super) service: Service,
    pub(super) tuning: Tuning,
    pub(super) rollout: Rollout,
    pub(super) paused: bool,
    pub(super) wipe_devices_on_delete: bool,
    pub(super) workload: WorkloadKind,
    pub(super) replicas: Option<i32>,
    pub(super) purge_token: Option<PurgeTokenRef>,
    pub(super) fleet: Fleet,
}

/// One cache per fleet, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fleet {
    pub(super) mode: crate::spec::FleetMode,
    pub(super) granule: u64,
    pub(super) connect_timeout: HumanDuration,
    pub(super) first_byte_timeout: HumanDuration,
    pub(super) replicas: u8,
    pub(super) token_rotation: HumanDuration,
}

/// The origin, validated.
#[derive(Clone, Debug)]
pub struct Origin {
    pub(super) url: Uri,
    /// As written: the agent joins request paths onto it, so keep its exact form.
    pub(super) url_text: String,
    pub(super) host_header: Option<String>,
    pub(super) connect_timeout: HumanDuration,
    pub(super) first_byte_timeout: HumanDuration,
    pub(super) idle_timeout: HumanDuration,
    pub(super) max_connections_per_agent: u32,
}

/// Slicing parameters as written (or defaulted); the tuner may override
/// slice size and concurrency at run time within [`Tuning`]'s bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slicing {
    pub(super) slice_size: u64,
    pub(super) concurrency: u32,
    pub(super) min_object_size: u64,
    pub(super) retries: u32,
}

/// Cache tiers, validated.
#[derive(Clone, Debug)]
pub struct Cache {
    pub(super) memory: u64,
    pub(super) devices: DeviceSelection,
    pub(super) host_path_file: Option<HostPathFile>,
    pub(super) empty_dir_file: Option<u64>,
    pub(super) block_volume: Option<BlockVolume>,
    pub(super) format: FormatPolicy,
    pub(super) default_ttl: HumanDuration,
    pub(super) honor_origin_cache_control: bool,
}

/// How each agent finds its block devices.
#[derive(Clone, Debug)]
pub enum DeviceSelection {
    /// No block devices (memory only, or only the file-backed device).
    None,
    /// These stable paths, on every node that has them.
    Paths(Vec<String>),
    /// Whole, unused devices whose kernel name matches.
    Filter(Regex),
    /// Every whole, unused device.
    All,
}

/// A file used as a block device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPathFile {
    pub(super) path: String,
    pub(super) size: u64,
}

/// A raw block PersistentVolumeClaim per agent pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockVolume {
    pub(super) storage_class_name: Option<String>,
    pub(super) size: u64,
}

/// Where agent pods go.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    pub(super) node_selector: std::collections::BTreeMap<String, String>,
    pub(super) tolerations: Vec<Toleration>,
    pub(super) affinity: Option<Affinity>,
}

/// The client-facing Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    pub(super) type_: ServiceType,
    pub(super) port: u16,
}

/// Tuner settings, validated.
#[derive(Clone, Debug)]
pub struct Tuning {
    pub(super) mode: TuningMode,
    pub(super) prometheus_url: Option<Uri>,
    pub(super) prometheus_selector: Option<String>,
    pub(super) interval: HumanDuration,
    pub(super) min_slice_size: u64,
    pub(super) max_slice_size: u64,
    pub(super) min_concurrency: u32,
    pub(super) max_concurrency: u32,
    pub(super) cooldown: HumanDuration,
}

/// How restarts roll across nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rollout {
    pub(super) max_unavailable: MaxUnavailable,
    pub(super) pause_between_nodes: HumanDuration,
}

/// Agents that may be down at once during a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxUnavailable {
    /// A number of nodes, at least 1.
    Count(u32),
    /// A percentage of desired nodes, 1-100.
    Percent(u8),
}

/// The Secret key holding the purge token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeTokenRef {
    pub(super) name: String,
    pub(super) key: String,
}

// === impl ValidatedSliceCache ===

impl ValidatedSliceCache {
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn slicing(&self) -> &Slicing {
        &self.slicing
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Agent container resources, as written.
    pub fn resources(&self) -> Option<&ResourceRequirements> {
        self.resources.as_ref()
    }

    /// Agent image; `None` means the operator's default.
    pub fn image(&self) -> Option<&str> {
        self.image.as_deref()
    }

    pub fn service(&self) -> &Service {
        &self.service
    }

    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    pub fn rollout(&self) -> &Rollout {
        &self.rollout
    }

    /// Whether reconciling is paused.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Whether devices are to be wiped on delete: true only when the
    /// confirmation string was given as well.
    pub fn wipe_devices_on_delete(&self) -> bool {
        self.wipe_devices_on_delete
    }

    /// What runs the agents.
    pub fn workload(&self) -> WorkloadKind {
        self.workload
    }

    /// Agent pods of workload Deployment; `None` leaves the Deployment's
    /// replicas to whoever sets them. Always `None` for a DaemonSet.
    pub fn replicas(&self) -> Option<i32> {
        self.replicas
    }

    /// The purge token Secret key, if purge is enabled.
    pub fn purge_token(&self) -> Option<&PurgeTokenRef> {
        self.purge_token.as_ref()
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }
}

// === impl Origin ===

impl Origin {
    /// The origin base URL (`http` or `https`, with a host).
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// The origin base URL exactly as written in the spec.
    pub fn url_str(&self) -> &str {
        &self.url_text
    }

    /// Host header override.
    pub fn host_header(&self) -> Option<&str> {
        self.host_header.as_deref()
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout.get()
    }

    pub fn first_byte_timeout(&self) -> Duration {
        self.first_byte_timeout.get()
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout.get()
    }

    pub fn max_connections_per_agent(&self) -> u32 {
        self.max_connections_per_agent
    }
}

// === impl Slicing ===

impl Slicing {
    /// Slice size in bytes: a power of two within 64Ki-64Mi.
    pub fn slice_size(&self) -> u64 {
        self.slice_size
    }

    /// Subrequests per client request, 1-64.
    pub fn concurrency(&self) -> u32 {
        self.concurrency
    }

    /// Objects up to this many bytes are cached whole.
    pub fn min_object_size(&self) -> u64 {
        self.min_object_size
    }

    pub fn retries(&self) -> u32 {
        self.retries
    }
}

// === impl Cache ===

impl Cache {
    /// L1 memory cache size in bytes.
    pub fn memory(&self) -> u64 {
        self.memory
    }

    pub fn devices(&self) -> &DeviceSelection {
        &self.devices
    }

    pub fn host_path_file(&self) -> Option<&HostPathFile> {
        self.host_path_file.as_ref()
    }

    /// Size in bytes of the file in each pod's emptyDir, if any.
    pub fn empty_dir_file(&self) -> Option<u64> {
        self.empty_dir_file
    }

    /// The raw block volume of each pod, if any.
    pub fn block_volume(&self) -> Option<&BlockVolume> {
        self.block_volume.as_ref()
    }

    pub fn format(&self) -> FormatPolicy {
        self.format
    }

    pub fn default_ttl(&self) -> Duration {
        self.default_ttl.get()
    }

    pub fn honor_origin_cache_control(&self) -> bool {
        self.honor_origin_cache_control
    }

    /// Whether any L2 storage is configured.
    pub fn has_disk(&self) -> bool {
        self.has_node_storage() || self.empty_dir_file.is_some() || self.block_volume.is_some()
    }

    /// Whether L2 storage lives on the node (block devices or a host file),
    /// outliving the agent pods: what a DaemonSet needs and a wipe erases.
    pub fn has_node_storage(&self) -> bool {
        !matches!(self.devices, DeviceSelection::None) || self.host_path_file.is_some()
    }
}

// === impl HostPathFile ===

impl HostPathFile {
    /// Absolute path on the node.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

// === impl BlockVolume ===

impl BlockVolume {
    /// StorageClass of the claims; `None` means the cluster's default.
    pub fn storage_class_name(&self) -> Option<&str> {
        self.storage_class_name.as_deref()
    }

    /// Requested size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

// === impl Placement ===

impl Placement {
    pub fn node_selector(&self) -> &std::collections::BTreeMap<String, String> {
        &self.node_selector
    }

    pub fn tolerations(&self) -> &[Toleration] {
        &self.tolerations
    }

    pub fn affinity(&self) -> Option<&Affinity> {
        self.affinity.as_ref()
    }
}

// === impl Service ===

impl Service {
    pub fn type_(&self) -> ServiceType {
        self.type_
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

// === impl Tuning ===

impl Tuning {
    pub fn mode(&self) -> TuningMode {
        self.mode
    }

    /// Whether the tuner runs (mode Recommend or Auto).
    pub fn is_active(&self) -> bool {
        self.mode != TuningMode::Off
    }

    /// Prometheus base URL; always set when the tuner is active.
    pub fn prometheus_url(&self) -> Option<&Uri> {
        self.prometheus_url.as_ref()
    }

    /// Label matchers for the agents' series from
    /// `spec.tuning.prometheus.selector`, without braces; `None`: the default.
    pub fn prometheus_selector(&self) -> Option<&str> {
        self.prometheus_selector.as_deref()
    }

    pub fn interval(&self) -> Duration {
        self.interval.get()
    }

    /// Slice size bounds in bytes, `min <= max`, both powers of two.
    pub fn slice_size_bounds(&self) -> (u64, u64) {
        (self.min_slice_size, self.max_slice_size)
    }

    /// Concurrency bounds, `min <= max`.
    pub fn concurrency_bounds(&self) -> (u32, u32) {
        (self.min_concurrency, self.max_concurrency)
    }

    pub fn cooldown(&self) -> Duration {
        self.cooldown.get()
    }
}

// === impl Rollout ===

impl Rollout {
    pub fn max_unavailable(&self) -> MaxUnavailable {
        self.max_unavailable
    }

    pub fn pause_between_nodes(&self) -> Duration {
        self.pause_between_nodes.get()
    }
}

impl MaxUnavailable {
    /// Nodes that may be down at once out of `desired`: percentages round
    /// up (as for DaemonSets), and the result is at least 1.
    pub fn resolve(self, desired: u32) -> u32 {
        let n = match self {
            Self::Count(n) => n,
            Self::Percent(p) => (u64::from(desired) * u64::from(p)).div_ceil(100) as u32,
        };
        n.max(1)
    }

    /// The value as the Kubernetes API writes it (`1`, `25%`).
    pub fn to_int_or_string(self) -> IntOrString {
        match self {
            Self::Count(n) => IntOrString::Int(i32::try_from(n).unwrap_or(i32::MAX)),
            Self::Percent(p) => IntOrString::String(format!("{p}%")),
        }
    }
}

// === impl PurgeTokenRef ===

impl PurgeTokenRef {
    /// Secret name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Key within the Secret.
    pub fn key(&self) -> &str {
        &self.key
    }
}
