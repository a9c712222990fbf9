//! From an unchecked [`SliceCacheSpec`] to a [`ValidatedSliceCache`].
//!
//! The CRD schema rejects what OpenAPI and CEL can express; this module
//! checks the rest (powers of two, quantity bounds, URL structure, regex
//! syntax, bounds between quantity fields) and resolves every default. It
//! also re-checks what the schema checks, because objects reach the operator
//! from older CRD versions and from tests as well as from the apiserver.
//!
//! A [`ValidatedSliceCache`] can only be built here, so code that holds one
//! never re-validates and never sees an `Option` for a defaulted field.
//! Validation reports every problem at once, each naming its field path.

use std::{collections::BTreeSet, fmt, time::Duration};

use http::Uri;
use k8s_openapi::{
    api::core::v1::{Affinity, ResourceRequirements, Toleration},
    apimachinery::pkg::util::intstr::IntOrString,
};
use regex::{Regex, RegexBuilder};

use crate::{
    agent_config::{
        AdminConfig, AgentConfig, CacheConfig, DeviceConfig, FormatPolicy, OriginConfig, Tunables, MAX_CONCURRENCY,
        MAX_SLICE_SIZE, MIN_SLICE_SIZE,
    },
    quantity::format_bytes,
    spec::{ServiceType, SliceCacheSpec, TuningMode, WorkloadKind, WIPE_CONFIRMATION},
    units::{ByteSize, HumanDuration},
};

/// Where the operator mounts the purge token Secret key in the agent
/// container; [`ValidatedSliceCache::agent_config`] points the agent at it.
pub const PURGE_TOKEN_FILE: &str = "/var/run/secrets/slicecache/purge-token";
/// Secret key used when `purgeTokenSecretRef.key` is unset.
pub const DEFAULT_PURGE_TOKEN_KEY: &str = "token";
/// Smallest file-backed device.
pub const MIN_HOST_PATH_FILE_SIZE: u64 = 64 << 20;
/// Where the operator mounts the emptyDir of `cache.disk.emptyDirFile` in
/// the agent container.
pub const EMPTY_DIR_FILE_DIR: &str = "/var/cache/slicecache";
/// The file of `cache.disk.emptyDirFile` as the agent sees it.
pub const EMPTY_DIR_FILE_PATH: &str = "/var/cache/slicecache/cache.img";
/// Where the operator attaches the raw block volume of
/// `cache.disk.volumeClaimTemplate` in the agent container.
pub const BLOCK_VOLUME_PATH: &str = "/dev/slicecache-volume";
/// Largest `minObjectSize`: larger whole objects would defeat slicing.
pub const MAX_MIN_OBJECT_SIZE: u64 = MAX_SLICE_SIZE;
/// Shortest tuning interval: Prometheus needs a few scrapes per interval.
pub const MIN_TUNING_INTERVAL: Duration = Duration::from_secs(10);
/// Default tuning interval.
pub const DEFAULT_TUNING_INTERVAL: Duration = Duration::from_secs(60);
/// Default tuning cooldown.
pub const DEFAULT_TUNING_COOLDOWN: Duration = Duration::from_secs(600);
/// Default client Service port.
pub const DEFAULT_SERVICE_PORT: u16 = 80;
/// Most retries per slice fetch.
pub const MAX_RETRIES: u32 = 10;
/// Largest compiled `deviceFilter`, in bytes of regex program.
const DEVICE_FILTER_SIZE_LIMIT: usize = 1 << 20;

/// One problem with a spec. Every message starts with the field path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{field}: {value:?} is not a valid origin URL: {problem}")]
    InvalidUrl {
        field: &'static str,
        value: String,
        problem: String,
    },
    #[error("{field}: {value:?} is not a valid host name")]
    InvalidHostHeader { field: &'static str, value: String },
    #[error("{field}: {value} is not a power of two")]
    NotPowerOfTwo { field: &'static str, value: ByteSize },
    #[error("{field}: {value} is outside {min}-{max}")]
    SizeOutOfRange {
        field: &'static str,
        value: ByteSize,
        min: ByteSize,
        max: ByteSize,
    },
    #[error("{field}: {value} is smaller than the minimum {min}")]
    SizeTooSmall {
        field: &'static str,
        value: ByteSize,
        min: ByteSize,
    },
    #[error("{field}: {value} is outside {min}-{max}")]
    NumberOutOfRange {
        field: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("{field}: {value} is shorter than the minimum {min}")]
    DurationTooShort {
        field: &'static str,
        value: HumanDuration,
        min: HumanDuration,
    },
    #[error("{field}: {value} is larger than {max_field} ({max})")]
    BoundsInverted {
        field: &'static str,
        value: String,
        max_field: &'static str,
        max: String,
    },
    #[error("{field}: {value} is outside the tuning bounds {min}-{max}")]
    OutsideTuningBounds {
        field: &'static str,
        value: String,
        min: String,
        max: String,
    },
    #[error("{field}: required when spec.tuning.mode is {mode:?}")]
    PrometheusRequired { field: &'static str, mode: TuningMode },
    #[error("{field}: {value:?} is not a list of PromQL label matchers such as job=\"slicecache\": {problem}")]
    InvalidSelector {
        field: &'static str,
        value: String,
        problem: String,
    },
    #[error("{field}: {value:?} is not a valid regular expression: {problem}")]
    InvalidDeviceFilter {
        field: &'static str,
        value: String,
        problem: String,
    },
    #[error("{field}: {value:?} must be an absolute path under /dev/")]
    InvalidDevicePath { field: &'static str, value: String },
    #[error("{field}: {value:?} is listed more than once")]
    DuplicateDevice { field: &'static str, value: String },
    #[error("{field}: at most one of devices, deviceFilter and useAllDevices may be set, found {}", .fields.join(" and "))]
    ConflictingDeviceSelection {
        field: &'static str,
        fields: Vec<&'static str>,
    },
    #[error(
        "{field}: Overwrite erases whatever a device holds, so it needs devices named one by one, not {selection}"
    )]
    OverwriteWithDiscovery {
        field: &'static str,
        selection: &'static str,
    },
    #[error("{field}: {value:?} must be an absolute file path")]
    InvalidHostPath { field: &'static str, value: String },
    #[error("{field}: {value} is smaller than {min_field} ({min})")]
    MemoryBelowSlice {
        field: &'static str,
        value: ByteSize,
        min_field: &'static str,
        min: ByteSize,
    },
    #[error("{field}: {value:?} must be a count of at least 1 or a percentage from 1% to 100%")]
    InvalidMaxUnavailable { field: &'static str, value: String },
    #[error("{field}: must not be empty")]
    Empty { field: &'static str },
    #[error("{field}: must be {WIPE_CONFIRMATION:?} for wipeDevicesOnDelete to act")]
    WipeNotConfirmed { field: &'static str },
    #[error("{field}: applies only to spec.workload: Deployment; a DaemonSet runs one agent on every node that spec.placement selects")]
    ReplicasNeedDeployment { field: &'static str },
    #[error("{field}: workload Deployment cannot use storage of the node, as its pods move between nodes and two may share one; use spec.cache.disk.emptyDirFile or spec.cache.disk.volumeClaimTemplate, or workload DaemonSet")]
    NodeStorageWithDeployment { field: &'static str },
    #[error("{field}: {pod} (storage of the pod) cannot be combined with {node} (storage of the node)")]
    PodAndNodeStorage {
        field: &'static str,
        pod: &'static str,
        node: &'static str,
    },
}

// === impl ValidationError ===

impl ValidationError {
    /// A stable CamelCase name for this kind of problem, usable as an Event
    /// or condition reason and as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } => "InvalidUrl",
            Self::InvalidHostHeader { .. } => "InvalidHostHeader",
            Self::NotPowerOfTwo { .. } => "NotPowerOfTwo",
            Self::SizeOutOfRange { .. } => "SizeOutOfRange",
            Self::SizeTooSmall { .. } => "SizeTooSmall",
            Self::NumberOutOfRange { .. } => "NumberOutOfRange",
            Self::DurationTooShort { .. } => "DurationTooShort",
            Self::BoundsInverted { .. } => "BoundsInverted",
            Self::OutsideTuningBounds { .. } => "OutsideTuningBounds",
            Self::PrometheusRequired { .. } => "PrometheusRequired",
            Self::InvalidSelector { .. } => "InvalidSelector",
            Self::InvalidDeviceFilter { .. } => "InvalidDeviceFilter",
            Self::InvalidDevicePath { .. } => "InvalidDevicePath",
            Self::DuplicateDevice { .. } => "DuplicateDevice",
            Self::ConflictingDeviceSelection { .. } => "ConflictingDeviceSelection",
            Self::OverwriteWithDiscovery { .. } => "OverwriteWithDiscovery",
            Self::InvalidHostPath { .. } => "InvalidHostPath",
            Self::MemoryBelowSlice { .. } => "MemoryBelowSlice",
            Self::InvalidMaxUnavailable { .. } => "InvalidMaxUnavailable",
            Self::Empty { .. } => "Empty",
            Self::WipeNotConfirmed { .. } => "WipeNotConfirmed",
            Self::ReplicasNeedDeployment { .. } => "ReplicasNeedDeployment",
            Self::NodeStorageWithDeployment { .. } => "NodeStorageWithDeployment",
            Self::PodAndNodeStorage { .. } => "PodAndNodeStorage",
        }
    }

    /// The path of the offending field, e.g. `spec.slicing.sliceSize`.
    pub fn field(&self) -> &'static str {
        match self {
            Self::InvalidUrl { field, .. }
            | Self::InvalidHostHeader { field, .. }
            | Self::NotPowerOfTwo { field, .. }
            | Self::SizeOutOfRange { field, .. }
            | Self::SizeTooSmall { field, .. }
            | Self::NumberOutOfRange { field, .. }
            | Self::DurationTooShort { field, .. }
            | Self::BoundsInverted { field, .. }
            | Self::OutsideTuningBounds { field, .. }
            | Self::PrometheusRequired { field, .. }
            | Self::InvalidSelector { field, .. }
            | Self::InvalidDeviceFilter { field, .. }
            | Self::InvalidDevicePath { field, .. }
            | Self::DuplicateDevice { field, .. }
            | Self::ConflictingDeviceSelection { field, .. }
            | Self::OverwriteWithDiscovery { field, .. }
            | Self::InvalidHostPath { field, .. }
            | Self::MemoryBelowSlice { field, .. }
            | Self::InvalidMaxUnavailable { field, .. }
            | Self::PodAndNodeStorage { field, .. }
            | Self::Empty { field }
            | Self::WipeNotConfirmed { field }
            | Self::ReplicasNeedDeployment { field }
            | Self::NodeStorageWithDeployment { field } => field,
        }
    }
}

/// Every problem found in one spec; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationErrors(Vec<ValidationError>);

// === impl ValidationErrors ===

impl ValidationErrors {
    /// The problems, in field order.
    pub fn errors(&self) -> &[ValidationError] {
        &self.0
    }

    /// The reason of the first problem, for a condition or Event that can
    /// carry only one.
    pub fn reason(&self) -> &'static str {
        self.0.first().map_or("Invalid", ValidationError::reason)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ValidationError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a `ValidationErrors` holds at least one error.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

impl IntoIterator for ValidationErrors {
    type Item = ValidationError;
    type IntoIter = std::vec::IntoIter<ValidationError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

// === validated types ===

/// A `SliceCache` spec that passed validation, with every default resolved.
///
/// Built only by [`ValidatedSliceCache::new`].
#[derive(Clone, Debug)]
pub struct ValidatedSliceCache {
    origin: Origin,
    slicing: Slicing,
    cache: Cache,
    placement: Placement,
    resources: Option<ResourceRequirements>,
    image: Option<String>,
    service: Service,
    tuning: Tuning,
    rollout: Rollout,
    paused: bool,
    wipe_devices_on_delete: bool,
    workload: WorkloadKind,
    replicas: Option<i32>,
    purge_token: Option<PurgeTokenRef>,
}

/// The origin, validated.
#[derive(Clone, Debug)]
pub struct Origin {
    url: Uri,
    /// As written: the agent joins request paths onto it, so keep its exact form.
    url_text: String,
    host_header: Option<String>,
    connect_timeout: HumanDuration,
    first_byte_timeout: HumanDuration,
    idle_timeout: HumanDuration,
    max_connections_per_agent: u32,
}

/// Slicing parameters as written (or defaulted); the tuner may override
/// slice size and concurrency at run time within [`Tuning`]'s bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slicing {
    slice_size: u64,
    concurrency: u32,
    min_object_size: u64,
    retries: u32,
}

/// Cache tiers, validated.
#[derive(Clone, Debug)]
pub struct Cache {
    memory: u64,
    devices: DeviceSelection,
    host_path_file: Option<HostPathFile>,
    empty_dir_file: Option<u64>,
    block_volume: Option<BlockVolume>,
    format: FormatPolicy,
    default_ttl: HumanDuration,
    honor_origin_cache_control: bool,
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
    path: String,
    size: u64,
}

/// A raw block PersistentVolumeClaim per agent pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockVolume {
    storage_class_name: Option<String>,
    size: u64,
}

/// Where agent pods go.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    node_selector: std::collections::BTreeMap<String, String>,
    tolerations: Vec<Toleration>,
    affinity: Option<Affinity>,
}

/// The client-facing Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    type_: ServiceType,
    port: u16,
}

/// Tuner settings, validated.
#[derive(Clone, Debug)]
pub struct Tuning {
    mode: TuningMode,
    prometheus_url: Option<Uri>,
    prometheus_selector: Option<String>,
    interval: HumanDuration,
    min_slice_size: u64,
    max_slice_size: u64,
    min_concurrency: u32,
    max_concurrency: u32,
    cooldown: HumanDuration,
}

/// How restarts roll across nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rollout {
    max_unavailable: MaxUnavailable,
    pause_between_nodes: HumanDuration,
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
    name: String,
    key: String,
}

// === impl ValidatedSliceCache ===

impl ValidatedSliceCache {
    /// Checks `spec` and resolves its defaults, or lists every problem.
    pub fn new(spec: &SliceCacheSpec) -> Result<Self, ValidationErrors> {
        let mut errors = Vec::new();
        let origin = validate_origin(spec, &mut errors);
        let tuning = validate_tuning(spec, &mut errors);
        let slicing = validate_slicing(spec, &tuning, &mut errors);
        let cache = validate_cache(spec, &slicing, &tuning, &mut errors);
        let service = validate_service(spec, &mut errors);
        let rollout = validate_rollout(spec, &mut errors);
        let wipe_devices_on_delete = validate_cleanup(spec, &mut errors);
        let purge_token = validate_purge_token(spec, &mut errors);
        let workload = validate_workload(spec, &cache, &mut errors);
        if spec.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
            errors.push(ValidationError::Empty { field: "spec.image" });
        }
        let placement = spec
            .placement
            .clone()
            .map(|p| Placement {
                node_selector: p.node_selector.unwrap_or_default(),
                tolerations: p.tolerations.unwrap_or_default(),
                affinity: p.affinity,
            })
            .unwrap_or_default();

        match origin {
            Some(origin) if errors.is_empty() => Ok(Self {
                origin,
                slicing,
                cache,
                placement,
                resources: spec.resources.clone(),
                image: spec.image.clone(),
                service,
                tuning,
                rollout,
                paused: spec.paused.unwrap_or(false),
                wipe_devices_on_delete,
                workload,
                replicas: spec.replicas,
                purge_token,
            }),
            _ => Err(ValidationErrors(errors)),
        }
    }

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

    /// The agent configuration file for this spec, as the operator renders
    /// it into the agents' ConfigMap.
    ///
    /// Tunables carry the spec's starting values; with tuning mode Auto the
    /// operator overwrites `tunables.sliceSize` and `tunables.concurrency`
    /// with the tuner's decision. Devices found by `deviceFilter` or
    /// `useAllDevices` differ per node and are not listed here (see
    /// [`Cache::devices`]); explicit paths and the file-backed device are.
    /// Host paths are used unchanged: the operator mounts them at the same
    /// path in the agent container, and the purge token at
    /// [`PURGE_TOKEN_FILE`].
    pub fn agent_config(&self) -> AgentConfig {
        let mut config = AgentConfig::for_origin(self.origin.url_text.clone());
        config.origin = OriginConfig {
            url: self.origin.url_text.clone(),
            host_header: self.origin.host_header.clone(),
            connect_timeout: self.origin.connect_timeout,
            first_byte_timeout: self.origin.first_byte_timeout,
            idle_timeout: self.origin.idle_timeout,
            max_connections: self.origin.max_connections_per_agent,
        };
        config.tunables = Tunables {
            slice_size: ByteSize(self.slicing.slice_size),
            concurrency: self.slicing.concurrency,
            min_object_size: ByteSize(self.slicing.min_object_size),
            retries: self.slicing.retries,
            default_ttl: self.cache.default_ttl,
            honor_origin_cache_control: self.cache.honor_origin_cache_control,
        };
        let format = self.cache.format;
        let mut devices: Vec<DeviceConfig> = match &self.cache.devices {
            DeviceSelection::Paths(paths) => paths
                .iter()
                .map(|path| DeviceConfig {
                    path: path.clone(),
                    size: None,
                    format,
                })
                .collect(),
            DeviceSelection::None | DeviceSelection::Filter(_) | DeviceSelection::All => Vec::new(),
        };
        if let Some(file) = &self.cache.host_path_file {
            devices.push(DeviceConfig {
                path: file.path.clone(),
                size: Some(ByteSize(file.size)),
                format,
            });
        }
        if let Some(size) = self.cache.empty_dir_file {
            devices.push(DeviceConfig {
                path: EMPTY_DIR_FILE_PATH.to_string(),
                size: Some(ByteSize(size)),
                format,
            });
        }
        if self.cache.block_volume.is_some() {
            devices.push(DeviceConfig {
                path: BLOCK_VOLUME_PATH.to_string(),
                size: None,
                format,
            });
        }
        config.cache = CacheConfig {
            memory: ByteSize(self.cache.memory),
            devices,
            // Discovered devices differ per node: each agent finds its own.
            device_filter: match &self.cache.devices {
                DeviceSelection::Filter(re) => Some(re.as_str().to_string()),
                _ => None,
            },
            use_all_devices: matches!(self.cache.devices, DeviceSelection::All),
            discovered_format: format,
            force_memory: false,
        };
        config.admin = AdminConfig {
            purge_token_file: self.purge_token.as_ref().map(|_| PURGE_TOKEN_FILE.to_string()),
        };
        config
    }
}

impl TryFrom<&SliceCacheSpec> for ValidatedSliceCache {
    type Error = ValidationErrors;

    fn try_from(spec: &SliceCacheSpec) -> Result<Self, Self::Error> {
        Self::new(spec)
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

// === the checks ===

fn validate_origin(spec: &SliceCacheSpec, errors: &mut Vec<ValidationError>) -> Option<Origin> {
    let o = &spec.origin;
    let defaults = OriginConfig::new("");
    let url = parse_http_url(errors, "spec.origin.url", &o.url);
    if let Some(host) = &o.host_header {
        if !is_host(host) {
            errors.push(ValidationError::InvalidHostHeader {
                field: "spec.origin.hostHeader",
                value: host.clone(),
            });
        }
    }
    let timeouts = o.timeouts.clone().unwrap_or_default();
    let connect_timeout = positive_duration(
        errors,
        "spec.origin.timeouts.connect",
        timeouts.connect,
        defaults.connect_timeout,
    );
    let first_byte_timeout = positive_duration(
        errors,
        "spec.origin.timeouts.firstByte",
        timeouts.first_byte,
        defaults.first_byte_timeout,
    );
    let idle_timeout = positive_duration(
        errors,
        "spec.origin.timeouts.idle",
        timeouts.idle,
        defaults.idle_timeout,
    );
    let max_connections_per_agent = o.max_connections_per_agent.unwrap_or(defaults.max_connections);
    check_range(
        errors,
        "spec.origin.maxConnectionsPerAgent",
        i64::from(max_connections_per_agent),
        1,
        65535,
    );
    Some(Origin {
        url: url?,
        url_text: o.url.clone(),
        host_header: o.host_header.clone(),
        connect_timeout,
        first_byte_timeout,
        idle_timeout,
        max_connections_per_agent,
    })
}

/// Checks PromQL label matchers (`name="value"`, with `=`, `!=`, `=~` or
/// `!~`, separated by commas, braces optional) and returns them without
/// braces. Regular expressions are left to Prometheus.
pub fn label_matchers(text: &str) -> Result<String, String> {
    let t = text.trim();
    let t = t
        .strip_prefix('{')
        .and_then(|m| m.strip_suffix('}'))
        .unwrap_or(t)
        .trim();
    if t.is_empty() {
        return Err("no matcher".into());
    }
    let mut rest = t;
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("expected a label name at {rest:?}"));
        }
        rest = rest[name_end..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .ok_or_else(|| format!("expected =, !=, =~ or !~ after {name}"))?;
        rest = rest[op.len()..].trim_start();
        let quote = rest
            .chars()
            .next()
            .filter(|c| matches!(c, '"' | '\''))
            .ok_or_else(|| format!("the value of {name} must be quoted"))?;
        let mut escaped = false;
        let mut end = None;
        for (i, c) in rest.char_indices().skip(1) {
            match c {
                '\n' => break,
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                _ if c == quote => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or_else(|| format!("the value of {name} has no closing quote"))?;
        rest = rest[end + 1..].trim_start();
        if !rest.is_empty() {
            rest = rest
                .strip_prefix(',')
                .ok_or_else(|| format!("expected a comma before {rest:?}"))?
                .trim_start();
        }
    }
    Ok(t.to_string())
}

fn validate_tuning(spec: &SliceCacheSpec, errors: &mut Vec<ValidationError>) -> Tuning {
    let t = spec.tuning.clone().unwrap_or_default();
    let mode = t.mode.unwrap_or_default();

    let prometheus_url = match (&t.prometheus, mode) {
        (Some(p), _) => parse_http_url(errors, "spec.tuning.prometheus.url", &p.url),
        (None, TuningMode::Off) => None,
        (None, mode) => {
            errors.push(ValidationError::PrometheusRequired {
                field: "spec.tuning.prometheus.url",
                mode,
            });
            None
        }
    };

    let prometheus_selector = t
        .prometheus
        .as_ref()
        .and_then(|p| p.selector.as_deref())
        .and_then(|text| match label_matchers(text) {
            Ok(m) => Some(m),
            Err(problem) => {
                errors.push(ValidationError::InvalidSelector {
                    field: "spec.tuning.prometheus.selector",
                    value: text.to_string(),
                    problem,
                });
                None
            }
        });

    let interval = t.interval.unwrap_or(HumanDuration(DEFAULT_TUNING_INTERVAL));
    if interval.get() < MIN_TUNING_INTERVAL {
        errors.push(ValidationError::DurationTooShort {
            field: "spec.tuning.interval",
            value: interval,
            min: HumanDuration(MIN_TUNING_INTERVAL),
        });
    }

    let min_slice = t
        .min_slice_size
        .map(|s| slice_size(errors, "spec.tuning.minSliceSize", s));
    let max_slice = t
        .max_slice_size
        .map(|s| slice_size(errors, "spec.tuning.maxSliceSize", s));
    let min_slice_size = min_slice.flatten().unwrap_or(MIN_SLICE_SIZE);
    let max_slice_size = max_slice.flatten().unwrap_or(MAX_SLICE_SIZE);
    if min_slice_size > max_slice_size {
        errors.push(ValidationError::BoundsInverted {
            field: "spec.tuning.minSliceSize",
            value: format_bytes(min_slice_size),
            max_field: "spec.tuning.maxSliceSize",
            max: format_bytes(max_slice_size),
        });
    }

    let max_c = i64::from(MAX_CONCURRENCY);
    let min_concurrency = t.min_concurrency.unwrap_or(1);
    let max_concurrency = t.max_concurrency.unwrap_or(MAX_CONCURRENCY);
    let min_ok = check_range(
        errors,
        "spec.tuning.minConcurrency",
        i64::from(min_concurrency),
        1,
        max_c,
    );
    let max_ok = check_range(
        errors,
        "spec.tuning.maxConcurrency",
        i64::from(max_concurrency),
        1,
        max_c,
    );
    if min_ok && max_ok && min_concurrency > max_concurrency {
        errors.push(ValidationError::BoundsInverted {
            field: "spec.tuning.minConcurrency",
            value: min_concurrency.to_string(),
            max_field: "spec.tuning.maxConcurrency",
            max: max_concurrency.to_string(),
        });
    }

    let cooldown = t.cooldown.unwrap_or(HumanDuration(DEFAULT_TUNING_COOLDOWN));
    Tuning {
        mode,
        prometheus_url,
        prometheus_selector,
        interval,
        min_slice_size,
        max_slice_size,
        min_concurrency,
        max_concurrency,
        cooldown,
    }
}

fn validate_slicing(spec: &SliceCacheSpec, tuning: &Tuning, errors: &mut Vec<ValidationError>) -> Slicing {
    let s = spec.slicing.clone().unwrap_or_default();
    let defaults = Tunables::default();
    let active = Some(tuning).filter(|t| t.is_active());

    let slice_size = match s.slice_size {
        Some(size) => {
            let checked = slice_size(errors, "spec.slicing.sliceSize", size);
            if let (Some(v), Some(t)) = (checked, active) {
                if v < t.min_slice_size || v > t.max_slice_size {
                    errors.push(ValidationError::OutsideTuningBounds {
                        field: "spec.slicing.sliceSize",
                        value: format_bytes(v),
                        min: format_bytes(t.min_slice_size),
                        max: format_bytes(t.max_slice_size),
                    });
                }
            }
            checked.unwrap_or(defaults.slice_size.bytes())
        }
        // An unwritten starting point follows the bounds instead of failing them.
        None => {
            let d = defaults.slice_size.bytes();
            active.map_or(d, |t| d.clamp(t.min_slice_size, t.max_slice_size.max(t.min_slice_size)))
        }
    };

    let concurrency = match s.concurrency {
        Some(c) => {
            let ok = check_range(
                errors,
                "spec.slicing.concurrency",
                i64::from(c),
                1,
                i64::from(MAX_CONCURRENCY),
            );
            if let (true, Some(t)) = (ok, active) {
                if c < t.min_concurrency || c > t.max_concurrency {
                    errors.push(ValidationError::OutsideTuningBounds {
                        field: "spec.slicing.concurrency",
                        value: c.to_string(),
                        min: t.min_concurrency.to_string(),
                        max: t.max_concurrency.to_string(),
                    });
                }
            }
            c
        }
        None => {
            let d = defaults.concurrency;
            active.map_or(d, |t| {
                d.clamp(t.min_concurrency, t.max_concurrency.max(t.min_concurrency))
            })
        }
    };

    let min_object_size = s.min_object_size.unwrap_or(defaults.min_object_size);
    if min_object_size.bytes() > MAX_MIN_OBJECT_SIZE {
        errors.push(ValidationError::SizeOutOfRange {
            field: "spec.slicing.minObjectSize",
            value: min_object_size,
            min: ByteSize(0),
            max: ByteSize(MAX_MIN_OBJECT_SIZE),
        });
    }

    let retries = s.retries.unwrap_or(defaults.retries);
    check_range(
        errors,
        "spec.slicing.retries",
        i64::from(retries),
        0,
        i64::from(MAX_RETRIES),
    );

    Slicing {
        slice_size,
        concurrency,
        min_object_size: min_object_size.bytes(),
        retries,
    }
}

fn validate_cache(
    spec: &SliceCacheSpec,
    slicing: &Slicing,
    tuning: &Tuning,
    errors: &mut Vec<ValidationError>,
) -> Cache {
    let c = spec.cache.clone().unwrap_or_default();
    let defaults = CacheConfig::default();
    let tunable_defaults = Tunables::default();

    let memory = c.memory.unwrap_or(defaults.memory);
    // L1 must hold at least the largest slice that can be in force.
    let (min_field, largest_slice) = if tuning.mode == TuningMode::Auto {
        ("spec.tuning.maxSliceSize", tuning.max_slice_size)
    } else {
        ("spec.slicing.sliceSize", slicing.slice_size)
    };
    if memory.bytes() < largest_slice {
        errors.push(ValidationError::MemoryBelowSlice {
            field: "spec.cache.memory",
            value: memory,
            min_field,
            min: ByteSize(largest_slice),
        });
    }

    let disk = c.disk.unwrap_or_default();
    let mut selected = Vec::new();
    if !disk.devices.is_empty() {
        selected.push("devices");
    }
    if disk.device_filter.is_some() {
        selected.push("deviceFilter");
    }
    if disk.use_all_devices == Some(true) {
        selected.push("useAllDevices");
    }
    if selected.len() > 1 {
        errors.push(ValidationError::ConflictingDeviceSelection {
            field: "spec.cache.disk",
            fields: selected,
        });
    }

    let mut seen = BTreeSet::new();
    for path in &disk.devices {
        if !is_device_path(path) {
            errors.push(ValidationError::InvalidDevicePath {
                field: "spec.cache.disk.devices",
                value: path.clone(),
            });
        } else if !seen.insert(path.as_str()) {
            errors.push(ValidationError::DuplicateDevice {
                field: "spec.cache.disk.devices",
                value: path.clone(),
            });
        }
    }

    let filter = disk.device_filter.as_ref().and_then(|f| {
        if f.is_empty() {
            errors.push(ValidationError::Empty {
                field: "spec.cache.disk.deviceFilter",
            });
            return None;
        }
        RegexBuilder::new(f)
            .size_limit(DEVICE_FILTER_SIZE_LIMIT)
            .build()
            .map_err(|e| {
                errors.push(ValidationError::InvalidDeviceFilter {
                    field: "spec.cache.disk.deviceFilter",
                    value: f.clone(),
                    problem: regex_problem(&e),
                })
            })
            .ok()
    });

    let devices = if !disk.devices.is_empty() {
        DeviceSelection::Paths(disk.devices.clone())
    } else if let Some(filter) = filter {
        DeviceSelection::Filter(filter)
    } else if disk.use_all_devices == Some(true) {
        DeviceSelection::All
    } else {
        DeviceSelection::None
    };

    if disk.format == Some(FormatPolicy::Overwrite) {
        let discovery = match devices {
            DeviceSelection::Filter(_) => Some("deviceFilter"),
            DeviceSelection::All => Some("useAllDevices"),
            DeviceSelection::Paths(_) | DeviceSelection::None => None,
        };
        if let Some(selection) = discovery {
            errors.push(ValidationError::OverwriteWithDiscovery {
                field: "spec.cache.disk.format",
                selection,
            });
        }
    }

    let host_path_file = disk.host_path_file.as_ref().map(|f| {
        if !is_file_path(&f.path) {
            errors.push(ValidationError::InvalidHostPath {
                field: "spec.cache.disk.hostPathFile.path",
                value: f.path.clone(),
            });
        } else if seen.contains(f.path.as_str()) {
            errors.push(ValidationError::DuplicateDevice {
                field: "spec.cache.disk.hostPathFile.path",
                value: f.path.clone(),
            });
        }
        if f.size.bytes() < MIN_HOST_PATH_FILE_SIZE {
            errors.push(ValidationError::SizeTooSmall {
                field: "spec.cache.disk.hostPathFile.size",
                value: f.size,
                min: ByteSize(MIN_HOST_PATH_FILE_SIZE),
            });
        }
        HostPathFile {
            path: f.path.clone(),
            size: f.size.bytes(),
        }
    });

    let pod_storage_size = |errors: &mut Vec<ValidationError>, field: &'static str, size: ByteSize| {
        if size.bytes() < MIN_HOST_PATH_FILE_SIZE {
            errors.push(ValidationError::SizeTooSmall {
                field,
                value: size,
                min: ByteSize(MIN_HOST_PATH_FILE_SIZE),
            });
        }
        size.bytes()
    };
    let empty_dir_file = disk
        .empty_dir_file
        .as_ref()
        .map(|f| pod_storage_size(errors, "spec.cache.disk.emptyDirFile.size", f.size));
    let block_volume = disk.volume_claim_template.as_ref().map(|t| {
        if t.storage_class_name.as_deref().is_some_and(|c| c.trim().is_empty()) {
            errors.push(ValidationError::Empty {
                field: "spec.cache.disk.volumeClaimTemplate.storageClassName",
            });
        }
        BlockVolume {
            storage_class_name: t.storage_class_name.clone(),
            size: pod_storage_size(errors, "spec.cache.disk.volumeClaimTemplate.size", t.size),
        }
    });
    // A wipe on delete erases the node's devices with the pod's own mounts;
    // storage of the pod goes with its pods, so the two do not mix.
    let pod = if disk.empty_dir_file.is_some() {
        Some("emptyDirFile")
    } else if disk.volume_claim_template.is_some() {
        Some("volumeClaimTemplate")
    } else {
        None
    };
    if let (Some(pod), Some(node)) = (pod, node_storage_fields(&disk).first()) {
        errors.push(ValidationError::PodAndNodeStorage {
            field: "spec.cache.disk",
            pod,
            node: node.1,
        });
    }

    let ttl = c.ttl.unwrap_or_default();
    Cache {
        memory: memory.bytes(),
        devices,
        host_path_file,
        empty_dir_file,
        block_volume,
        format: disk.format.unwrap_or_default(),
        default_ttl: ttl.default.unwrap_or(tunable_defaults.default_ttl),
        honor_origin_cache_control: ttl
            .honor_origin_cache_control
            .unwrap_or(tunable_defaults.honor_origin_cache_control),
    }
}

/// The node storage fields set in `disk`, as `(field path, field name)`.
fn node_storage_fields(disk: &crate::spec::DiskSpec) -> Vec<(&'static str, &'static str)> {
    let mut found = Vec::new();
    if !disk.devices.is_empty() {
        found.push(("spec.cache.disk.devices", "devices"));
    }
    if disk.device_filter.is_some() {
        found.push(("spec.cache.disk.deviceFilter", "deviceFilter"));
    }
    if disk.use_all_devices == Some(true) {
        found.push(("spec.cache.disk.useAllDevices", "useAllDevices"));
    }
    if disk.host_path_file.is_some() {
        found.push(("spec.cache.disk.hostPathFile", "hostPathFile"));
    }
    found
}

fn validate_workload(spec: &SliceCacheSpec, cache: &Cache, errors: &mut Vec<ValidationError>) -> WorkloadKind {
    let workload = spec.workload.unwrap_or_default();
    match workload {
        WorkloadKind::DaemonSet => {
            if spec.replicas.is_some() {
                errors.push(ValidationError::ReplicasNeedDeployment { field: "spec.replicas" });
            }
        }
        WorkloadKind::Deployment => {
            if let Some(replicas) = spec.replicas {
                check_range(errors, "spec.replicas", i64::from(replicas), 0, i64::from(i32::MAX));
            }
            if cache.has_node_storage() {
                let disk = spec.cache.as_ref().and_then(|c| c.disk.clone()).unwrap_or_default();
                for (field, _) in node_storage_fields(&disk) {
                    errors.push(ValidationError::NodeStorageWithDeployment { field });
                }
            }
        }
    }
    workload
}

fn validate_service(spec: &SliceCacheSpec, errors: &mut Vec<ValidationError>) -> Service {
    let s = spec.service.clone().unwrap_or_default();
    let port = s.port.unwrap_or(DEFAULT_SERVICE_PORT);
    check_range(errors, "spec.service.port", i64::from(port), 1, 65535);
    Service {
        type_: s.type_.unwrap_or_default(),
        port,
    }
}

fn validate_rollout(spec: &SliceCacheSpec, errors: &mut Vec<ValidationError>) -> Rollout {
    let r = spec.rollout.clone().unwrap_or_default();
    let max_unavailable = match &r.max_unavailable {
        None => MaxUnavailable::Count(1),
        Some(v) => parse_max_unavailable(v).unwrap_or_else(|| {
            errors.push(ValidationError::InvalidMaxUnavailable {
                field: "spec.rollout.maxUnavailable",
                value: match v {
                    IntOrString::Int(n) => n.to_string(),
                    IntOrString::String(s) => s.clone(),
                },
            });
            MaxUnavailable::Count(1)
        }),
    };
    Rollout {
        max_unavailable,
        pause_between_nodes: r.pause_between_nodes.unwrap_or_default(),
    }
}

fn validate_cleanup(spec: &SliceCacheSpec, errors: &mut Vec<ValidationError>) -> bool {
    let c = spec.cleanup.clone().unwrap_or_default();
    if c.wipe_devices_on_delete != Some(true) {
        return false;
    }
    if c.confirmation.as_deref() != Some(WIPE_CONFIRMATION) {
        errors.push(ValidationError::WipeNotConfirmed {
            field: "spec.cleanup.confirmation",
        });
        return false;
    }
    true
}

fn validate_purge_token(spec: &SliceCacheSpec, errors: &mut Vec<ValidationError>) -> Option<PurgeTokenRef> {
    let r = spec.purge_token_secret_ref.as_ref()?;
    if r.name.trim().is_empty() {
        errors.push(ValidationError::Empty {
            field: "spec.purgeTokenSecretRef.name",
        });
    }
    if r.key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        errors.push(ValidationError::Empty {
            field: "spec.purgeTokenSecretRef.key",
        });
    }
    Some(PurgeTokenRef {
        name: r.name.clone(),
        key: r.key.clone().unwrap_or_else(|| DEFAULT_PURGE_TOKEN_KEY.to_string()),
    })
}

// === helpers ===

/// A slice size: a power of two within [MIN_SLICE_SIZE, MAX_SLICE_SIZE].
fn slice_size(errors: &mut Vec<ValidationError>, field: &'static str, size: ByteSize) -> Option<u64> {
    let v = size.bytes();
    if !(MIN_SLICE_SIZE..=MAX_SLICE_SIZE).contains(&v) {
        errors.push(ValidationError::SizeOutOfRange {
            field,
            value: size,
            min: ByteSize(MIN_SLICE_SIZE),
            max: ByteSize(MAX_SLICE_SIZE),
        });
        return None;
    }
    if !v.is_power_of_two() {
        errors.push(ValidationError::NotPowerOfTwo { field, value: size });
        return None;
    }
    Some(v)
}

fn check_range(errors: &mut Vec<ValidationError>, field: &'static str, value: i64, min: i64, max: i64) -> bool {
    if (min..=max).contains(&value) {
        return true;
    }
    errors.push(ValidationError::NumberOutOfRange { field, value, min, max });
    false
}

fn positive_duration(
    errors: &mut Vec<ValidationError>,
    field: &'static str,
    value: Option<HumanDuration>,
    default: HumanDuration,
) -> HumanDuration {
    let d = value.unwrap_or(default);
    if d.get().is_zero() {
        errors.push(ValidationError::DurationTooShort {
            field,
            value: d,
            min: HumanDuration::millis(1),
        });
    }
    d
}

fn parse_http_url(errors: &mut Vec<ValidationError>, field: &'static str, value: &str) -> Option<Uri> {
    match check_http_url(value) {
        Ok(uri) => Some(uri),
        Err(problem) => {
            errors.push(ValidationError::InvalidUrl {
                field,
                value: value.to_string(),
                problem,
            });
            None
        }
    }
}

fn check_http_url(value: &str) -> Result<Uri, String> {
    if value.is_empty() {
        return Err("empty".into());
    }
    if value.chars().any(char::is_whitespace) {
        return Err("contains whitespace".into());
    }
    let uri: Uri = value.parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("scheme {other:?} is not http or https")),
        None => return Err("needs a scheme, http:// or https://".into()),
    }
    let authority = uri.authority().ok_or("needs a host")?;
    if authority.as_str().contains('@') {
        return Err("must not carry credentials; use a Secret".into());
    }
    if authority.host().is_empty() {
        return Err("needs a host".into());
    }
    if uri.query().is_some() {
        return Err("must not have a query string".into());
    }
    Ok(uri)
}

/// A host name or IP literal, optionally with a port.
fn is_host(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        && value.parse::<http::uri::Authority>().is_ok()
}

fn is_device_path(path: &str) -> bool {
    path.starts_with("/dev/")
        && path.len() > "/dev/".len()
        && !path.ends_with('/')
        && !path.chars().any(char::is_whitespace)
        && !path.split('/').any(|c| c == "..")
}

fn is_file_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() > 1
        && !path.ends_with('/')
        && !path.chars().any(char::is_whitespace)
        && !path.split('/').any(|c| c == "..")
}

fn parse_max_unavailable(v: &IntOrString) -> Option<MaxUnavailable> {
    match v {
        IntOrString::Int(n) => u32::try_from(*n).ok().filter(|n| *n >= 1).map(MaxUnavailable::Count),
        IntOrString::String(s) => {
            let digits = s.strip_suffix('%')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
                return None;
            }
            digits
                .parse::<u8>()
                .ok()
                .filter(|p| (1..=100).contains(p))
                .map(MaxUnavailable::Percent)
        }
    }
}

/// The one-line summary of a regex error; the full text spans lines with a caret diagram.
fn regex_problem(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or(&text)
        .trim_start_matches("error: ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "origin:\n  url: https://media.example.com\n";

    fn spec(yaml: &str) -> SliceCacheSpec {
        serde_yaml_ng::from_str(yaml).expect("test spec parses")
    }

    fn valid(yaml: &str) -> ValidatedSliceCache {
        ValidatedSliceCache::new(&spec(yaml)).unwrap_or_else(|e| panic!("spec should be valid: {e}\n{yaml}"))
    }

    /// Asserts that `yaml` is rejected with exactly one error, for `field`,
    /// whose message names the field and contains `needle`.
    fn rejected(yaml: &str, field: &str, reason: &str, needle: &str) -> ValidationError {
        let errors = match ValidatedSliceCache::new(&spec(yaml)) {
            Ok(_) => panic!("spec should be rejected ({field}):\n{yaml}"),
            Err(e) => e,
        };
        assert_eq!(errors.len(), 1, "expected one error, got: {errors}");
        let e = errors.errors()[0].clone();
        let message = e.to_string();
        assert_eq!(e.field(), field, "{message}");
        assert_eq!(e.reason(), reason, "{message}");
        assert!(
            message.starts_with(&format!("{field}: ")),
            "message must name the field: {message}"
        );
        assert!(message.contains(needle), "{message:?} should contain {needle:?}");
        e
    }

    // === defaults ===

    #[test]
    fn minimal_spec_resolves_every_default() {
        let v = valid(ORIGIN);
        let o = v.origin();
        assert_eq!(o.url().host(), Some("media.example.com"));
        assert_eq!(o.url_str(), "https://media.example.com");
        assert_eq!(o.host_header(), None);
        assert_eq!(o.connect_timeout(), Duration::from_secs(2));
        assert_eq!(o.first_byte_timeout(), Duration::from_secs(15));
        assert_eq!(o.idle_timeout(), Duration::from_secs(30));
        assert_eq!(o.max_connections_per_agent(), 256);

        let s = v.slicing();
        assert_eq!(s.slice_size(), 1 << 20);
        assert_eq!(s.concurrency(), 4);
        assert_eq!(s.min_object_size(), 0);
        assert_eq!(s.retries(), 2);

        let c = v.cache();
        assert_eq!(c.memory(), 256 << 20);
        assert!(matches!(c.devices(), DeviceSelection::None));
        assert!(c.host_path_file().is_none());
        assert!(!c.has_disk());
        assert_eq!(c.format(), FormatPolicy::IfNotOwned);
        assert_eq!(c.default_ttl(), Duration::from_secs(3600));
        assert!(c.honor_origin_cache_control());

        let t = v.tuning();
        assert_eq!(t.mode(), TuningMode::Off);
        assert!(!t.is_active());
        assert!(t.prometheus_url().is_none());
        assert_eq!(t.interval(), Duration::from_secs(60));
        assert_eq!(t.slice_size_bounds(), (64 << 10, 64 << 20));
        assert_eq!(t.concurrency_bounds(), (1, 64));
        assert_eq!(t.cooldown(), Duration::from_secs(600));

        assert_eq!(v.service().type_(), ServiceType::ClusterIP);
        assert_eq!(v.service().port(), 80);
        assert_eq!(v.rollout().max_unavailable(), MaxUnavailable::Count(1));
        assert_eq!(v.rollout().pause_between_nodes(), Duration::ZERO);
        assert!(v.placement().node_selector().is_empty());
        assert!(v.placement().tolerations().is_empty());
        assert!(v.placement().affinity().is_none());
        assert!(v.resources().is_none());
        assert!(v.image().is_none());
        assert!(!v.paused());
        assert!(!v.wipe_devices_on_delete());
        assert_eq!(v.replicas(), None);
        assert!(v.purge_token().is_none());
    }

    #[test]
    fn minimal_agent_config_matches_agent_defaults() {
        let config = valid(ORIGIN).agent_config();
        assert_eq!(config, AgentConfig::for_origin("https://media.example.com"));
    }

    #[test]
    fn agent_config_maps_every_field() {
        let v = valid(
            r#"
origin:
  url: http://origin.internal:8080/assets
  hostHeader: assets.example.com
  timeouts: { connect: 500ms, firstByte: 5s, idle: 1m }
  maxConnectionsPerAgent: 64
slicing: { sliceSize: 4Mi, concurrency: 8, minObjectSize: 256Ki, retries: 3 }
cache:
  memory: 2Gi
  disk:
    devices: [/dev/disk/by-id/nvme-a, /dev/disk/by-id/nvme-b]
    hostPathFile: { path: /var/lib/slicecache/extra.img, size: 10Gi }
    format: Never
  ttl: { default: 5m, honorOriginCacheControl: false }
purgeTokenSecretRef: { name: purge }
"#,
        );
        let c = v.agent_config();
        assert_eq!(c.origin.url, "http://origin.internal:8080/assets");
        assert_eq!(c.origin.host_header.as_deref(), Some("assets.example.com"));
        assert_eq!(c.origin.connect_timeout, HumanDuration::millis(500));
        assert_eq!(c.origin.first_byte_timeout, HumanDuration::secs(5));
        assert_eq!(c.origin.idle_timeout, HumanDuration::secs(60));
        assert_eq!(c.origin.max_connections, 64);
        assert_eq!(c.tunables.slice_size, ByteSize::mib(4));
        assert_eq!(c.tunables.concurrency, 8);
        assert_eq!(c.tunables.min_object_size, ByteSize::kib(256));
        assert_eq!(c.tunables.retries, 3);
        assert_eq!(c.tunables.default_ttl, HumanDuration::secs(300));
        assert!(!c.tunables.honor_origin_cache_control);
        assert_eq!(c.cache.memory, ByteSize::gib(2));
        let devices: Vec<_> = c
            .cache
            .devices
            .iter()
            .map(|d| (d.path.as_str(), d.size, d.format))
            .collect();
        assert_eq!(
            devices,
            vec![
                ("/dev/disk/by-id/nvme-a", None, FormatPolicy::Never),
                ("/dev/disk/by-id/nvme-b", None, FormatPolicy::Never),
                (
                    "/var/lib/slicecache/extra.img",
                    Some(ByteSize::gib(10)),
                    FormatPolicy::Never
                ),
            ]
        );
        assert_eq!(c.admin.purge_token_file.as_deref(), Some(PURGE_TOKEN_FILE));
        let token = v.purge_token().expect("purge token");
        assert_eq!((token.name(), token.key()), ("purge", DEFAULT_PURGE_TOKEN_KEY));

        // The rendered file is what the agent parses.
        let yaml = serde_yaml_ng::to_string(&c).expect("serialise");
        let back: AgentConfig = serde_yaml_ng::from_str(&yaml).expect("agent parses its config");
        assert_eq!(back, c);
    }

    #[test]
    fn discovered_devices_are_left_to_the_node() {
        let v = valid(&format!(
            "{ORIGIN}cache:\n  disk:\n    deviceFilter: '^nvme[0-9]+n1$'\n"
        ));
        match v.cache().devices() {
            DeviceSelection::Filter(re) => {
                assert!(re.is_match("nvme0n1"));
                assert!(!re.is_match("sda"));
            }
            other => panic!("expected a filter, got {other:?}"),
        }
        assert!(v.cache().has_disk());
        assert!(v.agent_config().cache.devices.is_empty());

        let v = valid(&format!("{ORIGIN}cache:\n  disk:\n    useAllDevices: true\n"));
        assert!(matches!(v.cache().devices(), DeviceSelection::All));
    }

    #[test]
    fn overwrite_needs_devices_named_one_by_one() {
        let v = valid(&format!(
            "{ORIGIN}cache:\n  disk:\n    format: Overwrite\n    devices: [/dev/disk/by-id/nvme-a]\n    hostPathFile: {{ path: /var/lib/slicecache/dev, size: 1Gi }}\n"
        ));
        let formats: Vec<_> = v.agent_config().cache.devices.iter().map(|d| d.format).collect();
        assert_eq!(formats, [FormatPolicy::Overwrite, FormatPolicy::Overwrite]);
        for (selection, yaml) in [
            ("deviceFilter", "deviceFilter: '^nvme'"),
            ("useAllDevices", "useAllDevices: true"),
        ] {
            rejected(
                &format!("{ORIGIN}cache:\n  disk:\n    format: Overwrite\n    {yaml}\n"),
                "spec.cache.disk.format",
                "OverwriteWithDiscovery",
                selection,
            );
        }
    }

    #[test]
    fn tuning_clamps_unwritten_starting_points_into_bounds() {
        let v = valid(&format!(
            "{ORIGIN}tuning:\n  mode: Auto\n  prometheus: {{ url: 'http://prom:9090' }}\n  minSliceSize: 4Mi\n  maxSliceSize: 16Mi\n  minConcurrency: 8\n  maxConcurrency: 16\ncache:\n  memory: 1Gi\n"
        ));
        assert_eq!(v.slicing().slice_size(), 4 << 20);
        assert_eq!(v.slicing().concurrency(), 8);
        assert_eq!(v.tuning().slice_size_bounds(), (4 << 20, 16 << 20));
        assert_eq!(v.tuning().concurrency_bounds(), (8, 16));
        assert_eq!(
            v.tuning().prometheus_url().map(Uri::to_string).as_deref(),
            Some("http://prom:9090/")
        );
    }

    #[test]
    fn wipe_acts_only_with_the_confirmation() {
        let v = valid(&format!(
            "{ORIGIN}cleanup:\n  wipeDevicesOnDelete: true\n  confirmation: {WIPE_CONFIRMATION}\n"
        ));
        assert!(v.wipe_devices_on_delete());
        // A confirmation without the switch does nothing.
        let v = valid(&format!("{ORIGIN}cleanup:\n  confirmation: {WIPE_CONFIRMATION}\n"));
        assert!(!v.wipe_devices_on_delete());
    }

    #[test]
    fn max_unavailable_resolves_like_a_daemonset() {
        assert_eq!(MaxUnavailable::Count(2).resolve(10), 2);
        assert_eq!(MaxUnavailable::Percent(25).resolve(10), 3);
        assert_eq!(MaxUnavailable::Percent(1).resolve(3), 1);
        assert_eq!(MaxUnavailable::Percent(100).resolve(0), 1);
        assert_eq!(
            MaxUnavailable::Percent(25).to_int_or_string(),
            IntOrString::String("25%".into())
        );
        let v = valid(&format!(
            "{ORIGIN}rollout:\n  maxUnavailable: 50%\n  pauseBetweenNodes: 30s\n"
        ));
        assert_eq!(v.rollout().max_unavailable(), MaxUnavailable::Percent(50));
        assert_eq!(v.rollout().pause_between_nodes(), Duration::from_secs(30));
    }

    // === slice size edges ===

    #[test]
    fn slice_size_edges() {
        for ok in ["64Ki", "65536", "128Ki", "1Mi", "1024Ki", "64Mi", "67108864"] {
            let v = valid(&format!("{ORIGIN}slicing:\n  sliceSize: '{ok}'\n"));
            assert!(v.slicing().slice_size().is_power_of_two(), "{ok}");
        }
        let v = valid(&format!("{ORIGIN}slicing:\n  sliceSize: 65536\n"));
        assert_eq!(v.slicing().slice_size(), 65536);

        let e = rejected(
            &format!("{ORIGIN}slicing:\n  sliceSize: 32Ki\n"),
            "spec.slicing.sliceSize",
            "SizeOutOfRange",
            "32Ki is outside 64Ki-64Mi",
        );
        assert!(matches!(e, ValidationError::SizeOutOfRange { .. }));
        rejected(
            &format!("{ORIGIN}slicing:\n  sliceSize: 3Mi\n"),
            "spec.slicing.sliceSize",
            "NotPowerOfTwo",
            "3Mi is not a power of two",
        );
        rejected(
            &format!("{ORIGIN}slicing:\n  sliceSize: 128Mi\ncache:\n  memory: 1Gi\n"),
            "spec.slicing.sliceSize",
            "SizeOutOfRange",
            "128Mi is outside 64Ki-64Mi",
        );
        rejected(
            &format!("{ORIGIN}slicing:\n  sliceSize: 1M\n"),
            "spec.slicing.sliceSize",
            "NotPowerOfTwo",
            "1000000 is not a power of two",
        );
        rejected(
            &format!("{ORIGIN}slicing:\n  sliceSize: 0\n"),
            "spec.slicing.sliceSize",
            "SizeOutOfRange",
            "0 is outside",
        );
    }

    // === every rule, one rejected input each ===

    #[test]
    fn rejects_bad_origin_urls() {
        for (url, problem) in [
            ("ftp://media.example.com", "scheme \"ftp\" is not http or https"),
            ("media.example.com", "needs a scheme"),
            ("https://user:pw@media.example.com", "must not carry credentials"),
            ("https://media.example.com/?a=b", "must not have a query string"),
            ("https://media example.com", "contains whitespace"),
            ("", "empty"),
        ] {
            rejected(
                &format!("origin:\n  url: '{url}'\n"),
                "spec.origin.url",
                "InvalidUrl",
                problem,
            );
        }
    }

    #[test]
    fn rejects_bad_host_header() {
        rejected(
            &format!("{ORIGIN}  hostHeader: 'a b/c'\n"),
            "spec.origin.hostHeader",
            "InvalidHostHeader",
            "\"a b/c\" is not a valid host name",
        );
    }

    #[test]
    fn rejects_zero_timeouts() {
        for (key, field) in [
            ("connect", "spec.origin.timeouts.connect"),
            ("firstByte", "spec.origin.timeouts.firstByte"),
            ("idle", "spec.origin.timeouts.idle"),
        ] {
            rejected(
                &format!("{ORIGIN}  timeouts:\n    {key}: 0s\n"),
                field,
                "DurationTooShort",
                "0s is shorter than the minimum 1ms",
            );
        }
    }

    #[test]
    fn rejects_numbers_out_of_range() {
        for (yaml, field, needle) in [
            (
                "  maxConnectionsPerAgent: 0\n",
                "spec.origin.maxConnectionsPerAgent",
                "0 is outside 1-65535",
            ),
            (
                "slicing:\n  concurrency: 0\n",
                "spec.slicing.concurrency",
                "0 is outside 1-64",
            ),
            (
                "slicing:\n  concurrency: 65\n",
                "spec.slicing.concurrency",
                "65 is outside 1-64",
            ),
            (
                "slicing:\n  retries: 11\n",
                "spec.slicing.retries",
                "11 is outside 0-10",
            ),
            ("service:\n  port: 0\n", "spec.service.port", "0 is outside 1-65535"),
            ("workload: Deployment\nreplicas: -1\n", "spec.replicas", "-1 is outside"),
            (
                "tuning:\n  minConcurrency: 0\n",
                "spec.tuning.minConcurrency",
                "0 is outside 1-64",
            ),
            (
                "tuning:\n  maxConcurrency: 100\n",
                "spec.tuning.maxConcurrency",
                "100 is outside 1-64",
            ),
        ] {
            rejected(&format!("{ORIGIN}{yaml}"), field, "NumberOutOfRange", needle);
        }
    }

    #[test]
    fn rejects_large_min_object_size() {
        rejected(
            &format!("{ORIGIN}slicing:\n  minObjectSize: 1Gi\n"),
            "spec.slicing.minObjectSize",
            "SizeOutOfRange",
            "1Gi is outside 0-64Mi",
        );
    }

    #[test]
    fn rejects_memory_smaller_than_a_slice() {
        rejected(
            &format!("{ORIGIN}slicing:\n  sliceSize: 64Mi\ncache:\n  memory: 32Mi\n"),
            "spec.cache.memory",
            "MemoryBelowSlice",
            "32Mi is smaller than spec.slicing.sliceSize (64Mi)",
        );
        rejected(
            &format!(
                "{ORIGIN}tuning:\n  mode: Auto\n  prometheus: {{ url: 'http://prom:9090' }}\ncache:\n  memory: 32Mi\n"
            ),
            "spec.cache.memory",
            "MemoryBelowSlice",
            "smaller than spec.tuning.maxSliceSize (64Mi)",
        );
    }

    #[test]
    fn rejects_conflicting_device_selection() {
        let e = rejected(
            &format!(
                "{ORIGIN}cache:\n  disk:\n    devices: [/dev/sdb]\n    deviceFilter: '^sd'\n    useAllDevices: true\n"
            ),
            "spec.cache.disk",
            "ConflictingDeviceSelection",
            "at most one of devices, deviceFilter and useAllDevices may be set",
        );
        assert!(
            e.to_string()
                .contains("found devices and deviceFilter and useAllDevices"),
            "{e}"
        );
        rejected(
            &format!("{ORIGIN}cache:\n  disk:\n    deviceFilter: '^sd'\n    useAllDevices: true\n"),
            "spec.cache.disk",
            "ConflictingDeviceSelection",
            "found deviceFilter and useAllDevices",
        );
        // useAllDevices: false is not a selection.
        valid(&format!(
            "{ORIGIN}cache:\n  disk:\n    devices: [/dev/sdb]\n    useAllDevices: false\n"
        ));
    }

    #[test]
    fn rejects_bad_device_paths() {
        for path in [
            "sdb",
            "/dev/",
            "/var/lib/disk",
            "/dev/../etc/passwd",
            "/dev/disk/by-id/",
        ] {
            rejected(
                &format!("{ORIGIN}cache:\n  disk:\n    devices: ['{path}']\n"),
                "spec.cache.disk.devices",
                "InvalidDevicePath",
                "must be an absolute path under /dev/",
            );
        }
        rejected(
            &format!("{ORIGIN}cache:\n  disk:\n    devices: [/dev/sdb, /dev/sdb]\n"),
            "spec.cache.disk.devices",
            "DuplicateDevice",
            "\"/dev/sdb\" is listed more than once",
        );
    }

    #[test]
    fn prometheus_selectors_are_label_matchers() {
        for (text, want) in [
            (r#"job="slicecache""#, r#"job="slicecache""#),
            (
                r#" { job="a", pod=~"x-.*" , env!='dev',} "#,
                r#"job="a", pod=~"x-.*" , env!='dev',"#,
            ),
            (r#"a!~"q\"{,}\"""#, r#"a!~"q\"{,}\"""#),
        ] {
            assert_eq!(label_matchers(text).as_deref(), Ok(want), "{text}");
        }
        for (text, problem) in [
            ("{}", "no matcher"),
            ("job", "expected =, !=, =~ or !~ after job"),
            ("job=slicecache", "the value of job must be quoted"),
            (r#"job="a"#, "the value of job has no closing quote"),
            (r#"job="a" pod="b""#, "expected a comma before"),
            (r#"9job="a""#, "expected a label name"),
            (r#"job="a"} or vector(1) {x="y""#, "expected a comma before"),
        ] {
            let got = label_matchers(text).expect_err(text);
            assert!(got.contains(problem), "{text}: {got}");
        }
        rejected(
            &format!("{ORIGIN}tuning:\n  prometheus:\n    url: http://prom:9090\n    selector: 'job=x'\n"),
            "spec.tuning.prometheus.selector",
            "InvalidSelector",
            "is not a list of PromQL label matchers such as job=\"slicecache\": the value of job must be quoted",
        );
        let v = ValidatedSliceCache::new(&spec(&format!(
            "{ORIGIN}tuning:\n  prometheus:\n    url: http://prom:9090\n    selector: '{{job=\"edge\"}}'\n"
        )))
        .expect("a custom selector is valid");
        assert_eq!(v.tuning().prometheus_selector(), Some(r#"job="edge""#));
    }

    #[test]
    fn rejects_bad_device_filter() {
        rejected(
            &format!("{ORIGIN}cache:\n  disk:\n    deviceFilter: '^nvme[0-9+n1$'\n"),
            "spec.cache.disk.deviceFilter",
            "InvalidDeviceFilter",
            "is not a valid regular expression: unclosed character class",
        );
        rejected(
            &format!("{ORIGIN}cache:\n  disk:\n    deviceFilter: ''\n"),
            "spec.cache.disk.deviceFilter",
            "Empty",
            "must not be empty",
        );
    }

    #[test]
    fn rejects_bad_host_path_file() {
        rejected(
            &format!("{ORIGIN}cache:\n  disk:\n    hostPathFile: {{ path: cache.img, size: 1Gi }}\n"),
            "spec.cache.disk.hostPathFile.path",
            "InvalidHostPath",
            "must be an absolute file path",
        );
        rejected(
            &format!("{ORIGIN}cache:\n  disk:\n    hostPathFile: {{ path: /var/lib/cache.img, size: 1Mi }}\n"),
            "spec.cache.disk.hostPathFile.size",
            "SizeTooSmall",
            "1Mi is smaller than the minimum 64Mi",
        );
        rejected(
            &format!("{ORIGIN}cache:\n  disk:\n    devices: [/dev/loop0]\n    hostPathFile: {{ path: /dev/loop0, size: 1Gi }}\n"),
            "spec.cache.disk.hostPathFile.path",
            "DuplicateDevice",
            "listed more than once",
        );
    }

    #[test]
    fn rejects_tuning_without_prometheus() {
        for mode in ["Recommend", "Auto"] {
            rejected(
                &format!("{ORIGIN}tuning:\n  mode: {mode}\n"),
                "spec.tuning.prometheus.url",
                "PrometheusRequired",
                &format!("required when spec.tuning.mode is {mode}"),
            );
        }
        rejected(
            &format!("{ORIGIN}tuning:\n  prometheus: {{ url: 'prom:9090' }}\n"),
            "spec.tuning.prometheus.url",
            "InvalidUrl",
            "needs a scheme",
        );
    }

    #[test]
    fn rejects_short_tuning_interval() {
        rejected(
            &format!("{ORIGIN}tuning:\n  interval: 5s\n"),
            "spec.tuning.interval",
            "DurationTooShort",
            "5s is shorter than the minimum 10s",
        );
    }

    #[test]
    fn rejects_bad_tuning_slice_bounds() {
        rejected(
            &format!("{ORIGIN}tuning:\n  minSliceSize: 3Mi\n"),
            "spec.tuning.minSliceSize",
            "NotPowerOfTwo",
            "3Mi is not a power of two",
        );
        rejected(
            &format!("{ORIGIN}tuning:\n  maxSliceSize: 128Mi\n"),
            "spec.tuning.maxSliceSize",
            "SizeOutOfRange",
            "128Mi is outside 64Ki-64Mi",
        );
        rejected(
            &format!("{ORIGIN}tuning:\n  minSliceSize: 4Mi\n  maxSliceSize: 1Mi\n"),
            "spec.tuning.minSliceSize",
            "BoundsInverted",
            "4Mi is larger than spec.tuning.maxSliceSize (1Mi)",
        );
        // Against the default maximum, too.
        valid(&format!(
            "{ORIGIN}tuning:\n  minSliceSize: 64Mi\ncache:\n  memory: 64Mi\n"
        ));
    }

    #[test]
    fn rejects_inverted_concurrency_bounds() {
        rejected(
            &format!("{ORIGIN}tuning:\n  minConcurrency: 16\n  maxConcurrency: 8\n"),
            "spec.tuning.minConcurrency",
            "BoundsInverted",
            "16 is larger than spec.tuning.maxConcurrency (8)",
        );
    }

    #[test]
    fn rejects_starting_points_outside_tuning_bounds() {
        let auto = "tuning:\n  mode: Auto\n  prometheus: { url: 'http://prom:9090' }\n  maxSliceSize: 4Mi\n  maxConcurrency: 8\n";
        rejected(
            &format!("{ORIGIN}{auto}slicing:\n  sliceSize: 8Mi\n"),
            "spec.slicing.sliceSize",
            "OutsideTuningBounds",
            "8Mi is outside the tuning bounds 64Ki-4Mi",
        );
        rejected(
            &format!("{ORIGIN}{auto}slicing:\n  concurrency: 16\n"),
            "spec.slicing.concurrency",
            "OutsideTuningBounds",
            "16 is outside the tuning bounds 1-8",
        );
        // With tuning off, the bounds do not constrain the spec values.
        valid(&format!(
            "{ORIGIN}tuning:\n  maxSliceSize: 4Mi\n  maxConcurrency: 8\nslicing:\n  sliceSize: 8Mi\n  concurrency: 16\n"
        ));
    }

    #[test]
    fn rejects_bad_max_unavailable() {
        for value in ["0", "'0%'", "'101%'", "'abc'", "-1", "'05%'"] {
            rejected(
                &format!("{ORIGIN}rollout:\n  maxUnavailable: {value}\n"),
                "spec.rollout.maxUnavailable",
                "InvalidMaxUnavailable",
                "must be a count of at least 1 or a percentage",
            );
        }
    }

    #[test]
    fn rejects_wipe_without_confirmation() {
        for cleanup in [
            "wipeDevicesOnDelete: true",
            "wipeDevicesOnDelete: true\n  confirmation: yes",
        ] {
            rejected(
                &format!("{ORIGIN}cleanup:\n  {cleanup}\n"),
                "spec.cleanup.confirmation",
                "WipeNotConfirmed",
                "must be \"yes-really-wipe-cache-devices\"",
            );
        }
    }

    #[test]
    fn rejects_empty_strings() {
        rejected(
            &format!("{ORIGIN}image: ' '\n"),
            "spec.image",
            "Empty",
            "must not be empty",
        );
        rejected(
            &format!("{ORIGIN}purgeTokenSecretRef: {{ name: '' }}\n"),
            "spec.purgeTokenSecretRef.name",
            "Empty",
            "must not be empty",
        );
        rejected(
            &format!("{ORIGIN}purgeTokenSecretRef: {{ name: purge, key: '' }}\n"),
            "spec.purgeTokenSecretRef.key",
            "Empty",
            "must not be empty",
        );
    }

    #[test]
    fn reports_every_problem_at_once() {
        let errors = ValidatedSliceCache::new(&spec(
            "origin:\n  url: ftp://x\nslicing:\n  sliceSize: 3Mi\n  concurrency: 0\ncleanup:\n  wipeDevicesOnDelete: true\n",
        ))
        .expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(ValidationError::field).collect();
        assert_eq!(
            fields,
            [
                "spec.origin.url",
                "spec.slicing.sliceSize",
                "spec.slicing.concurrency",
                "spec.cleanup.confirmation"
            ]
        );
        assert_eq!(errors.reason(), "InvalidUrl");
        let text = errors.to_string();
        assert!(
            text.contains("spec.slicing.sliceSize: 3Mi is not a power of two; "),
            "{text}"
        );
    }

    // === workload ===

    #[test]
    fn workload_defaults_to_daemon_set_without_replicas() {
        let v = valid(ORIGIN);
        assert_eq!(v.workload(), WorkloadKind::DaemonSet);
        assert_eq!(v.replicas(), None);
    }

    #[test]
    fn deployment_takes_replicas_and_storage_of_the_pod() {
        let v = valid(&format!(
            "{ORIGIN}workload: Deployment\nreplicas: 3\ncache:\n  disk:\n    emptyDirFile:\n      size: 1Gi\n    volumeClaimTemplate:\n      storageClassName: fast-block\n      size: 100Gi\n"
        ));
        assert_eq!(v.workload(), WorkloadKind::Deployment);
        assert_eq!(v.replicas(), Some(3));
        let c = v.cache();
        assert!(c.has_disk());
        assert!(!c.has_node_storage());
        assert_eq!(c.empty_dir_file(), Some(1 << 30));
        let volume = c.block_volume().expect("block volume");
        assert_eq!(volume.storage_class_name(), Some("fast-block"));
        assert_eq!(volume.size(), 100 << 30);
        let devices = v.agent_config().cache.devices;
        let paths: Vec<_> = devices.iter().map(|d| (d.path.as_str(), d.size)).collect();
        assert_eq!(
            paths,
            [(EMPTY_DIR_FILE_PATH, Some(ByteSize::gib(1))), (BLOCK_VOLUME_PATH, None)]
        );

        // Memory alone, and replicas left to an autoscaler.
        let v = valid(&format!("{ORIGIN}workload: Deployment\n"));
        assert_eq!(v.replicas(), None);
        assert!(!v.cache().has_disk());
        // Storage of the pod works with a DaemonSet too.
        valid(&format!(
            "{ORIGIN}cache:\n  disk:\n    emptyDirFile:\n      size: 64Mi\n"
        ));
    }

    #[test]
    fn replicas_need_workload_deployment() {
        for yaml in ["replicas: 2\n", "workload: DaemonSet\nreplicas: 0\n"] {
            rejected(
                &format!("{ORIGIN}{yaml}"),
                "spec.replicas",
                "ReplicasNeedDeployment",
                "applies only to spec.workload: Deployment",
            );
        }
    }

    #[test]
    fn deployment_rejects_storage_of_the_node() {
        for (disk, field) in [
            ("devices: [/dev/sdb]", "spec.cache.disk.devices"),
            ("deviceFilter: \"^nvme\"", "spec.cache.disk.deviceFilter"),
            ("useAllDevices: true", "spec.cache.disk.useAllDevices"),
            (
                "hostPathFile:\n      path: /var/lib/slicecache/cache.img\n      size: 1Gi",
                "spec.cache.disk.hostPathFile",
            ),
        ] {
            rejected(
                &format!("{ORIGIN}workload: Deployment\ncache:\n  disk:\n    {disk}\n"),
                field,
                "NodeStorageWithDeployment",
                "use spec.cache.disk.emptyDirFile or spec.cache.disk.volumeClaimTemplate",
            );
        }
    }

    #[test]
    fn rejects_pod_storage_beside_node_storage_and_small_pod_storage() {
        rejected(
            &format!("{ORIGIN}cache:\n  disk:\n    devices: [/dev/sdb]\n    volumeClaimTemplate:\n      size: 1Gi\n"),
            "spec.cache.disk",
            "PodAndNodeStorage",
            "volumeClaimTemplate (storage of the pod) cannot be combined with devices",
        );
        rejected(
            &format!("{ORIGIN}cache:\n  disk:\n    emptyDirFile:\n      size: 1Mi\n"),
            "spec.cache.disk.emptyDirFile.size",
            "SizeTooSmall",
            "smaller than the minimum 64Mi",
        );
        rejected(
            &format!("{ORIGIN}workload: Deployment\ncache:\n  disk:\n    volumeClaimTemplate:\n      size: 32Mi\n"),
            "spec.cache.disk.volumeClaimTemplate.size",
            "SizeTooSmall",
            "smaller than the minimum 64Mi",
        );
    }

    #[test]
    fn reasons_are_camel_case_and_distinct() {
        let samples = [
            ValidationError::Empty { field: "f" },
            ValidationError::WipeNotConfirmed { field: "f" },
            ValidationError::NotPowerOfTwo {
                field: "f",
                value: ByteSize(3),
            },
        ];
        for e in &samples {
            let r = e.reason();
            assert!(r.chars().next().is_some_and(|c| c.is_ascii_uppercase()), "{r}");
            assert!(r.chars().all(|c| c.is_ascii_alphanumeric()), "{r}");
        }
    }
}
