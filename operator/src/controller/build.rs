//! Build: from a [`ValidatedSliceCache`] to the Kubernetes objects that run
//! its agents.
//!
//! Contract: pure functions, no client, no clock. The same validated spec,
//! [`Owner`] and tunables in force (the tuner's, in mode Auto: see
//! [`build_tuned`]) always give the same objects, byte for byte, so the step is
//! unit-tested on YAML fixtures and `slicecache-operator render` prints
//! exactly what the controller would apply. Every object carries the
//! `app.kubernetes.io/*` labels, an owner reference to the SliceCache (when
//! its uid is known) and a [`DESIRED_HASH`] annotation that the apply step
//! compares with the live object to skip writes that would change nothing.
//!
//! Changes are classified here. The agents hot-reload the tunables of their
//! config file (slice size, concurrency, retries, TTLs), so those reach only
//! the ConfigMap. Everything else (image, devices, ports, resources,
//! placement, and the config fields that are read once at start) goes into
//! the pod template hash ([`POD_TEMPLATE_HASH`]), and a changed hash rolls
//! the agents within `spec.rollout`.
//!
//! The agents run in a DaemonSet or, with `spec.workload: Deployment`, in a
//! Deployment ([`AgentWorkload`]); both wrap the one pod template that
//! [`pod_template`] builds. A Deployment carries `replicas` only when the
//! spec sets them: unset, the field is left out of the applied object, so
//! under server-side apply the operator does not own it and never resets
//! what an autoscaler wrote.

use std::{collections::BTreeMap, path::Path};

use k8s_openapi::{
    api::{
        apps::v1::{
            DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec, DeploymentStrategy,
            RollingUpdateDaemonSet, RollingUpdateDeployment,
        },
        core::v1::{
            Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
            EphemeralVolumeSource, HTTPGetAction, HostPathVolumeSource, KeyToPath, PersistentVolumeClaimSpec,
            PersistentVolumeClaimTemplate, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
            SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume,
            VolumeDevice, VolumeMount, VolumeResourceRequirements,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use slicecache_api::{
    agent_config::{AgentConfig, Tunables},
    quantity::format_bytes,
    spec::WorkloadKind,
    units::ByteSize,
    validate::{DeviceSelection, MaxUnavailable, BLOCK_VOLUME_PATH, EMPTY_DIR_FILE_DIR, PURGE_TOKEN_FILE},
    SliceCache, ValidatedSliceCache,
};

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "slicecache-operator";
/// Pod template annotation: hash of everything that needs an agent restart.
pub const POD_TEMPLATE_HASH: &str = "slicecache.io/pod-template-hash";
/// ConfigMap annotation: the SliceCache generation whose spec last changed
/// the agent config.
pub const CONFIG_GENERATION: &str = "slicecache.io/config-generation";
/// ConfigMap annotation: hash of the agent config file.
pub const CONFIG_HASH: &str = "slicecache.io/config-hash";
/// Annotation on every built object: hash of the object as built, without
/// this annotation and without [`CONFIG_GENERATION`].
pub const DESIRED_HASH: &str = "slicecache.io/desired-hash";
/// Key of the agent config file in the ConfigMap.
pub const CONFIG_FILE_KEY: &str = "agent.yaml";
/// Directory the ConfigMap is mounted at. The whole directory is mounted
/// (no `subPath`) so that the kubelet updates the file in place and the agent
/// hot-reloads it.
pub const CONFIG_DIR: &str = "/etc/slicecache";
/// The config file as the agent sees it.
pub const CONFIG_PATH: &str = "/etc/slicecache/agent.yaml";
/// Name of the agent container.
pub const AGENT_CONTAINER: &str = "agent";
/// User and group of agents that need no device access.
pub const NON_ROOT_UID: i64 = 65532;
/// Agent image used when `spec.image` is unset.
pub const DEFAULT_AGENT_IMAGE: &str = concat!("slicecache/slicecache-agent:", env!("CARGO_PKG_VERSION"));

/// `app.kubernetes.io/name` of everything the operator builds.
pub const APP_NAME: &str = "slicecache-agent";

/// Why objects could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the agent config could not be rendered as YAML: {0}")]
    ConfigSerialization(#[source] serde_yaml_ng::Error),
    #[error("agent config {field}: {value:?} has no port (expected host:port)")]
    InvalidListenAddress { field: &'static str, value: String },
    #[error("an object could not be serialised for hashing: {0}")]
    Hash(#[source] serde_json::Error),
}

impl BuildError {
    /// Stable CamelCase reason, for events, conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ConfigSerialization(_) => "ConfigSerialization",
            Self::InvalidListenAddress { .. } => "InvalidListenAddress",
            Self::Hash(_) => "HashFailed",
        }
    }
}

/// The SliceCache the objects belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    /// `None` only when rendering offline; the objects then carry no owner reference.
    pub uid: Option<String>,
    pub generation: i64,
}

impl Owner {
    /// The owner facts of `cache`; `default_namespace` fills in a missing namespace.
    pub fn of(cache: &SliceCache, default_namespace: &str) -> Self {
        Self {
            name: cache.name_any(),
            namespace: cache.namespace().unwrap_or_else(|| default_namespace.to_string()),
            uid: cache.uid(),
            generation: cache.metadata.generation.unwrap_or(0),
        }
    }

    fn owner_reference(&self) -> Option<OwnerReference> {
        self.uid.as_ref().map(|uid| OwnerReference {
            api_version: SliceCache::api_version(&()).into_owned(),
            kind: SliceCache::kind(&()).into_owned(),
            name: self.name.clone(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        })
    }
}

/// Operator-wide settings the build uses.
#[derive(Clone, Debug)]
pub struct BuildDefaults {
    /// Agent image when `spec.image` is unset.
    pub agent_image: String,
}

impl Default for BuildDefaults {
    fn default() -> Self {
        Self {
            agent_image: DEFAULT_AGENT_IMAGE.to_string(),
        }
    }
}

/// Names of the objects built for one SliceCache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectNames {
    pub service_account: String,
    pub config_map: String,
    pub daemon_set: String,
    /// The Deployment of workload Deployment; the same name as the DaemonSet.
    pub deployment: String,
    pub client_service: String,
    pub peer_service: String,
    pub pod_disruption_budget: String,
}

impl ObjectNames {
    pub fn for_cache(name: &str) -> Self {
        Self {
            service_account: format!("{name}-agent"),
            config_map: format!("{name}-agent-config"),
            daemon_set: format!("{name}-agent"),
            deployment: format!("{name}-agent"),
            client_service: name.to_string(),
            peer_service: format!("{name}-peers"),
            pod_disruption_budget: format!("{name}-agent"),
        }
    }
}

/// Everything one SliceCache should have in the cluster.
#[derive(Clone, Debug)]
pub struct DesiredState {
    pub names: ObjectNames,
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    pub client_service: Service,
    pub peer_service: Service,
    /// `None` when no PDB is wanted (`rollout.maxUnavailable: 100%`): the
    /// apply step then deletes one left from before.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    /// The DaemonSet or Deployment that runs the agents.
    pub workload: AgentWorkload,
    /// The agent config rendered into the ConfigMap.
    pub agent_config: AgentConfig,
    /// Value of [`POD_TEMPLATE_HASH`] on the pod template.
    pub pod_template_hash: String,
    /// Value of [`CONFIG_HASH`] on the ConfigMap.
    pub config_hash: String,
}

impl DesiredState {
    /// The objects in apply order (the workload last, so that its pods find
    /// their ServiceAccount and ConfigMap), as JSON values for printing.
    pub fn to_values(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        let mut out = vec![
            serde_json::to_value(&self.service_account)?,
            serde_json::to_value(&self.config_map)?,
            serde_json::to_value(&self.client_service)?,
            serde_json::to_value(&self.peer_service)?,
        ];
        if let Some(pdb) = &self.pod_disruption_budget {
            out.push(serde_json::to_value(pdb)?);
        }
        out.push(match &self.workload {
            AgentWorkload::DaemonSet(ds) => serde_json::to_value(ds)?,
            AgentWorkload::Deployment(deploy) => serde_json::to_value(deploy)?,
        });
        Ok(out)
    }
}

/// What runs the agents: a DaemonSet or a Deployment around the same pod
/// template. The apply step returns the live object in the same form.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentWorkload {
    DaemonSet(DaemonSet),
    Deployment(Deployment),
}

impl AgentWorkload {
    pub fn kind(&self) -> WorkloadKind {
        match self {
            Self::DaemonSet(_) => WorkloadKind::DaemonSet,
            Self::Deployment(_) => WorkloadKind::Deployment,
        }
    }

    pub fn daemon_set(&self) -> Option<&DaemonSet> {
        match self {
            Self::DaemonSet(ds) => Some(ds),
            Self::Deployment(_) => None,
        }
    }

    pub fn deployment(&self) -> Option<&Deployment> {
        match self {
            Self::Deployment(deploy) => Some(deploy),
            Self::DaemonSet(_) => None,
        }
    }

    /// The agents' pod template.
    pub fn pod_template(&self) -> Option<&PodTemplateSpec> {
        match self {
            Self::DaemonSet(ds) => ds.spec.as_ref().map(|s| &s.template),
            Self::Deployment(deploy) => deploy.spec.as_ref().map(|s| &s.template),
        }
    }

    /// The workload's pod selector as a string (`k=v,k=v`), as the scale
    /// subresource reports it in `status.selector`.
    pub fn selector_string(&self) -> Option<String> {
        let selector = match self {
            Self::DaemonSet(ds) => &ds.spec.as_ref()?.selector,
            Self::Deployment(deploy) => &deploy.spec.as_ref()?.selector,
        };
        let labels = selector.match_labels.as_ref()?;
        Some(
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        )
    }

    /// The value of [`POD_TEMPLATE_HASH`] on the pod template.
    pub fn pod_template_hash(&self) -> Option<&str> {
        template_hash(self.pod_template()?)
    }
}

/// The value of [`POD_TEMPLATE_HASH`] on a pod template.
pub fn template_hash(template: &PodTemplateSpec) -> Option<&str> {
    template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(POD_TEMPLATE_HASH)
        .map(String::as_str)
}

/// How much the agent container may do, from what its devices need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// Raw block devices (explicit paths, a filter, or all devices): the
    /// container is privileged, as opening host block devices needs device
    /// cgroup access that only privileged containers get from a hostPath.
    RawDevices,
    /// A file-backed device in a kubelet-created, root-owned host directory:
    /// the container runs as uid 0 with every capability dropped, which is
    /// enough to create and write the file and nothing else.
    HostFile,
    /// A raw block PersistentVolumeClaim of the pod: the kubelet grants the
    /// container the device, whose node is root-owned; uid 0 with every
    /// capability dropped opens it, as for [`Privilege::HostFile`].
    BlockVolume,
    /// Memory only: non-root, every capability dropped.
    Unprivileged,
}

impl Privilege {
    pub fn of(validated: &ValidatedSliceCache) -> Self {
        match validated.cache().devices() {
            DeviceSelection::Paths(_) | DeviceSelection::Filter(_) | DeviceSelection::All => Self::RawDevices,
            DeviceSelection::None if validated.cache().host_path_file().is_some() => Self::HostFile,
            DeviceSelection::None if validated.cache().block_volume().is_some() => Self::BlockVolume,
            // A file in an emptyDir: the kubelet creates the directory
            // world-writable, so a non-root agent creates the file.
            DeviceSelection::None => Self::Unprivileged,
        }
    }
}

// === builders ===

/// Builds every object for `validated`, with the spec's slice size and
/// concurrency.
pub fn build(
    validated: &ValidatedSliceCache,
    owner: &Owner,
    defaults: &BuildDefaults,
) -> Result<DesiredState, BuildError> {
    build_tuned(validated, owner, defaults, None)
}

/// Builds every object for `validated`; `in_force`, when given, replaces the
/// spec's slice size and concurrency in the agent config (mode Auto: the
/// tuner's values). They are tunables, so they change the ConfigMap and
/// never the pod template hash.
pub fn build_tuned(
    validated: &ValidatedSliceCache,
    owner: &Owner,
    defaults: &BuildDefaults,
    in_force: Option<crate::tuner::Tunables>,
) -> Result<DesiredState, BuildError> {
    let names = ObjectNames::for_cache(&owner.name);
    let mut agent_config = validated.agent_config();
    if let Some(t) = in_force {
        agent_config.tunables.slice_size = ByteSize(t.slice_size);
        agent_config.tunables.concurrency = t.concurrency;
    }
    let client_port = listen_port("listen", &agent_config.listen)?;
    let admin_port = listen_port("adminListen", &agent_config.admin_listen)?;

    let config_yaml = serde_yaml_ng::to_string(&agent_config).map_err(BuildError::ConfigSerialization)?;
    let config_hash = hash_hex(&config_yaml)?;

    let mut config_map = ConfigMap {
        metadata: metadata(owner, &names.config_map, "config"),
        data: Some(BTreeMap::from([(CONFIG_FILE_KEY.to_string(), config_yaml)])),
        ..ConfigMap::default()
    };
    annotate(&mut config_map.metadata, CONFIG_HASH, &config_hash);
    annotate(
        &mut config_map.metadata,
        CONFIG_GENERATION,
        &owner.generation.to_string(),
    );

    let service_account = ServiceAccount {
        metadata: metadata(owner, &names.service_account, "cache-agent"),
        // The agent never talks to the Kubernetes API.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };

    let client_service = Service {
        metadata: metadata(owner, &names.client_service, "cache-agent"),
        spec: Some(ServiceSpec {
            type_: Some(validated.service().type_().as_str().to_string()),
            selector: Some(selector_labels(owner)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: i32::from(validated.service().port()),
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    // Agents find each other (and Prometheus finds them) through the
    // headless Service; unready agents are listed too, since peers and
    // scrapes matter most while an agent warms up.
    let peer_service = Service {
        metadata: metadata(owner, &names.peer_service, "cache-agent"),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(owner)),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".into()),
                    port: i32::from(client_port),
                    target_port: Some(IntOrString::String("http".into())),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("admin".into()),
                    port: i32::from(admin_port),
                    target_port: Some(IntOrString::String("admin".into())),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let max_unavailable = validated.rollout().max_unavailable();
    let pod_disruption_budget = (max_unavailable != MaxUnavailable::Percent(100)).then(|| PodDisruptionBudget {
        metadata: metadata(owner, &names.pod_disruption_budget, "cache-agent"),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(max_unavailable.to_int_or_string()),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(owner)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    });

    let mut template = pod_template(validated, owner, defaults, &names, client_port, admin_port);
    let pod_template_hash = hash_hex(&RestartRelevant {
        template: &template,
        config: &AgentConfig {
            tunables: Tunables::default(),
            ..agent_config.clone()
        },
        devices: device_selection_key(validated.cache().devices()),
    })?;
    annotate(
        template.metadata.get_or_insert_with(ObjectMeta::default),
        POD_TEMPLATE_HASH,
        &pod_template_hash,
    );

    let workload = agent_workload(validated, owner, &names, template);

    let mut state = DesiredState {
        names,
        service_account,
        config_map,
        client_service,
        peer_service,
        pod_disruption_budget,
        workload,
        agent_config,
        pod_template_hash,
        config_hash,
    };
    stamp(&mut state.service_account)?;
    stamp(&mut state.config_map)?;
    stamp(&mut state.client_service)?;
    stamp(&mut state.peer_service)?;
    if let Some(pdb) = state.pod_disruption_budget.as_mut() {
        stamp(pdb)?;
    }
    match &mut state.workload {
        AgentWorkload::DaemonSet(ds) => stamp(ds)?,
        AgentWorkload::Deployment(deploy) => stamp(deploy)?,
    }
    Ok(state)
}

/// The DaemonSet or Deployment around `template`.
fn agent_workload(
    validated: &ValidatedSliceCache,
    owner: &Owner,
    names: &ObjectNames,
    template: PodTemplateSpec,
) -> AgentWorkload {
    let selector = LabelSelector {
        match_labels: Some(selector_labels(owner)),
        ..LabelSelector::default()
    };
    let max_unavailable = Some(validated.rollout().max_unavailable().to_int_or_string());
    // pauseBetweenNodes: a new agent counts as available (and the rollout
    // moves on) only after it has been ready this long.
    let min_ready_seconds =
        Some(i32::try_from(validated.rollout().pause_between_nodes().as_secs()).unwrap_or(i32::MAX));
    match validated.workload() {
        WorkloadKind::DaemonSet => AgentWorkload::DaemonSet(DaemonSet {
            metadata: metadata(owner, &names.daemon_set, "cache-agent"),
            spec: Some(DaemonSetSpec {
                selector,
                template,
                update_strategy: Some(DaemonSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDaemonSet {
                        max_unavailable,
                        // Two agents must never open the same device at once.
                        max_surge: Some(IntOrString::Int(0)),
                    }),
                }),
                min_ready_seconds,
                revision_history_limit: Some(5),
            }),
            ..DaemonSet::default()
        }),
        WorkloadKind::Deployment => AgentWorkload::Deployment(Deployment {
            metadata: metadata(owner, &names.deployment, "cache-agent"),
            spec: Some(DeploymentSpec {
                // None leaves the field, and its ownership, to whoever scales
                // the Deployment.
                replicas: validated.replicas(),
                selector,
                template,
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_unavailable,
                        // Each pod has storage of its own, so a new agent
                        // may start before an old one stops.
                        max_surge: Some(IntOrString::Int(1)),
                    }),
                }),
                min_ready_seconds,
                revision_history_limit: Some(5),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }),
    }
}

/// What a restart is needed for, hashed into [`POD_TEMPLATE_HASH`].
#[derive(Serialize)]
struct RestartRelevant<'a> {
    template: &'a PodTemplateSpec,
    /// The agent config with its hot-reloaded tunables reset: a change to
    /// anything left (origin, listeners, memory, devices) needs a restart.
    config: &'a AgentConfig,
    /// The device selection, spelled out (also in the config, kept here so
    /// that a change of selection always restarts the agents).
    devices: String,
}

fn device_selection_key(devices: &DeviceSelection) -> String {
    match devices {
        DeviceSelection::None => "none".into(),
        DeviceSelection::Paths(p) => format!("paths:{}", p.join(",")),
        DeviceSelection::Filter(re) => format!("filter:{}", re.as_str()),
        DeviceSelection::All => "all".into(),
    }
}

fn pod_template(
    validated: &ValidatedSliceCache,
    owner: &Owner,
    defaults: &BuildDefaults,
    names: &ObjectNames,
    client_port: u16,
    admin_port: u16,
) -> PodTemplateSpec {
    let privilege = Privilege::of(validated);
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.config_map.clone(),
                items: Some(vec![KeyToPath {
                    key: CONFIG_FILE_KEY.into(),
                    path: CONFIG_FILE_KEY.into(),
                    mode: None,
                }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        // The root filesystem is read-only; the agent gets a scratch /tmp.
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];

    match validated.cache().devices() {
        DeviceSelection::None => {}
        DeviceSelection::Paths(paths) => {
            for (i, path) in paths.iter().enumerate() {
                let name = format!("device-{i}");
                volumes.push(host_path_volume(&name, path, "BlockDevice"));
                mounts.push(VolumeMount {
                    name,
                    mount_path: path.clone(),
                    ..VolumeMount::default()
                });
            }
        }
        DeviceSelection::Filter(_) | DeviceSelection::All => {
            // Discovery needs every device node and the udev database behind
            // /dev/disk/by-*. A read-only bind of /dev stops the agent from
            // creating or removing device nodes; it does not stop it from
            // opening block devices for writing, which it needs.
            volumes.push(host_path_volume("host-dev", "/dev", "Directory"));
            mounts.push(VolumeMount {
                name: "host-dev".into(),
                mount_path: "/dev".into(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
            volumes.push(host_path_volume("host-udev", "/run/udev", "Directory"));
            mounts.push(VolumeMount {
                name: "host-udev".into(),
                mount_path: "/run/udev".into(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        }
    }
    if let Some(file) = validated.cache().host_path_file() {
        let dir = Path::new(file.path())
            .parent()
            .and_then(Path::to_str)
            .filter(|d| !d.is_empty())
            .unwrap_or("/");
        volumes.push(host_path_volume("device-file", dir, "DirectoryOrCreate"));
        mounts.push(VolumeMount {
            name: "device-file".into(),
            mount_path: dir.to_string(),
            ..VolumeMount::default()
        });
    }
    if let Some(size) = validated.cache().empty_dir_file() {
        volumes.push(Volume {
            name: "cache-file".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit: Some(Quantity(format_bytes(size))),
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "cache-file".into(),
            mount_path: EMPTY_DIR_FILE_DIR.into(),
            ..VolumeMount::default()
        });
    }
    let mut volume_devices = Vec::new();
    if let Some(block) = validated.cache().block_volume() {
        volumes.push(Volume {
            name: "cache-volume".into(),
            ephemeral: Some(EphemeralVolumeSource {
                volume_claim_template: Some(PersistentVolumeClaimTemplate {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(owner, "cache-volume")),
                        ..ObjectMeta::default()
                    }),
                    spec: PersistentVolumeClaimSpec {
                        access_modes: Some(vec!["ReadWriteOnce".into()]),
                        volume_mode: Some("Block".into()),
                        storage_class_name: block.storage_class_name().map(str::to_string),
                        resources: Some(VolumeResourceRequirements {
                            requests: Some(BTreeMap::from([(
                                "storage".to_string(),
                                Quantity(format_bytes(block.size())),
                            )])),
                            ..VolumeResourceRequirements::default()
                        }),
                        ..PersistentVolumeClaimSpec::default()
                    },
                }),
            }),
            ..Volume::default()
        });
        volume_devices.push(VolumeDevice {
            name: "cache-volume".into(),
            device_path: BLOCK_VOLUME_PATH.into(),
        });
    }
    if let Some(token) = validated.purge_token() {
        let file = Path::new(PURGE_TOKEN_FILE);
        let dir = file
            .parent()
            .and_then(Path::to_str)
            .unwrap_or("/var/run/secrets/slicecache");
        let file_name = file.file_name().and_then(|f| f.to_str()).unwrap_or("purge-token");
        volumes.push(Volume {
            name: "purge-token".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(token.name().to_string()),
                items: Some(vec![KeyToPath {
                    key: token.key().to_string(),
                    path: file_name.to_string(),
                    mode: None,
                }]),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "purge-token".into(),
            mount_path: dir.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }

    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    };

    let container = Container {
        name: AGENT_CONTAINER.into(),
        image: Some(validated.image().unwrap_or(&defaults.agent_image).to_string()),
        args: Some(vec!["run".into(), "--config".into(), CONFIG_PATH.into()]),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: i32::from(client_port),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: i32::from(admin_port),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        resources: validated.resources().cloned(),
        volume_mounts: Some(mounts),
        volume_devices: (!volume_devices.is_empty()).then_some(volume_devices),
        security_context: Some(container_security(privilege)),
        ..Container::default()
    };

    let placement = validated.placement();
    let pod_security = match privilege {
        Privilege::Unprivileged => PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NON_ROOT_UID),
            run_as_group: Some(NON_ROOT_UID),
            fs_group: Some(NON_ROOT_UID),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..PodSecurityContext::default()
        },
        Privilege::HostFile | Privilege::BlockVolume | Privilege::RawDevices => PodSecurityContext {
            seccomp_profile: Some(runtime_default_seccomp()),
            ..PodSecurityContext::default()
        },
    };

    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(owner, "cache-agent")),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(names.service_account.clone()),
            automount_service_account_token: Some(false),
            node_selector: (!placement.node_selector().is_empty()).then(|| placement.node_selector().clone()),
            tolerations: (!placement.tolerations().is_empty()).then(|| placement.tolerations().to_vec()),
            affinity: placement.affinity().cloned(),
            security_context: Some(pod_security),
            containers: vec![container],
            volumes: Some(volumes),
            termination_grace_period_seconds: Some(30),
            ..PodSpec::default()
        }),
    }
}

fn container_security(privilege: Privilege) -> SecurityContext {
    let drop_all = Some(Capabilities {
        add: None,
        drop: Some(vec!["ALL".into()]),
    });
    match privilege {
        Privilege::RawDevices => SecurityContext {
            privileged: Some(true),
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            read_only_root_filesystem: Some(true),
            ..SecurityContext::default()
        },
        Privilege::HostFile | Privilege::BlockVolume => SecurityContext {
            privileged: Some(false),
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: drop_all,
            ..SecurityContext::default()
        },
        Privilege::Unprivileged => SecurityContext {
            privileged: Some(false),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: drop_all,
            ..SecurityContext::default()
        },
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

fn host_path_volume(name: &str, path: &str, type_: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some(type_.into()),
        }),
        ..Volume::default()
    }
}

// === labels, metadata, hashes ===

/// Labels that select one SliceCache's agent pods; never change them, as a
/// DaemonSet's and a Deployment's selector are immutable.
pub fn selector_labels(owner: &Owner) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        ("app.kubernetes.io/instance".to_string(), owner.name.clone()),
    ])
}

/// The `app.kubernetes.io/*` labels of every built object.
pub fn labels(owner: &Owner, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(owner);
    labels.insert("app.kubernetes.io/component".into(), component.into());
    labels.insert("app.kubernetes.io/part-of".into(), "slicecache".into());
    labels.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    labels
}

/// Metadata with name, namespace, labels and owner reference.
pub fn metadata(owner: &Owner, name: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(owner.namespace.clone()),
        labels: Some(labels(owner, component)),
        owner_references: owner.owner_reference().map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

fn annotate(meta: &mut ObjectMeta, key: &str, value: &str) {
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_string(), value.to_string());
}

/// Sets [`DESIRED_HASH`] on `object`, leaving [`CONFIG_GENERATION`] out of
/// the hash so that a generation bump alone causes no write.
fn stamp<K: Resource + Serialize + Clone>(object: &mut K) -> Result<(), BuildError> {
    let hash = desired_hash(object)?;
    annotate(object.meta_mut(), DESIRED_HASH, &hash);
    Ok(())
}

/// The [`DESIRED_HASH`] of an object as built.
pub fn desired_hash<K: Resource + Serialize + Clone>(object: &K) -> Result<String, BuildError> {
    let mut copy = object.clone();
    if let Some(annotations) = copy.meta_mut().annotations.as_mut() {
        annotations.remove(DESIRED_HASH);
        annotations.remove(CONFIG_GENERATION);
    }
    hash_hex(&copy)
}

/// A stable 64-bit hash of a value's JSON form, as 16 hex digits.
/// Struct fields serialise in declaration order and maps are ordered, so
/// the JSON, and the hash, depend only on the value.
fn hash_hex<T: Serialize + ?Sized>(value: &T) -> Result<String, BuildError> {
    let bytes = serde_json::to_vec(value).map_err(BuildError::Hash)?;
    Ok(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)))
}

/// The port of a `host:port` listen address.
fn listen_port(field: &'static str, listen: &str) -> Result<u16, BuildError> {
    listen
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .ok_or_else(|| BuildError::InvalidListenAddress {
            field,
            value: listen.to_string(),
        })
}

// === device wipe Jobs ===

/// `app.kubernetes.io/component` of device wipe Jobs.
pub const WIPE_COMPONENT: &str = "device-wipe";
/// Job annotation naming the node a wipe Job runs on.
pub const WIPE_NODE: &str = "slicecache.io/wipe-node";

/// The label selector of one SliceCache's wipe Jobs.
pub fn wipe_job_selector(owner: &Owner) -> String {
    format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/component={WIPE_COMPONENT}",
        owner.name
    )
}

/// A Job that erases the slicecache superblocks of the devices on `node`.
///
/// It mounts the same devices and config as the agents and runs
/// `slicecache-agent wipe --config ...` once, pinned to the node by
/// `nodeName` (so it runs even where agents are no longer scheduled) and
/// tolerating what the agents tolerate.
pub fn wipe_job(
    validated: &ValidatedSliceCache,
    owner: &Owner,
    defaults: &BuildDefaults,
    node: &str,
) -> Result<k8s_openapi::api::batch::v1::Job, BuildError> {
    use k8s_openapi::api::batch::v1::{Job, JobSpec};

    let names = ObjectNames::for_cache(&owner.name);
    let config = validated.agent_config();
    let client_port = listen_port("listen", &config.listen)?;
    let admin_port = listen_port("adminListen", &config.admin_listen)?;
    let mut template = pod_template(validated, owner, defaults, &names, client_port, admin_port);
    template.metadata = Some(ObjectMeta {
        labels: Some(labels(owner, WIPE_COMPONENT)),
        ..ObjectMeta::default()
    });
    if let Some(spec) = template.spec.as_mut() {
        spec.node_name = Some(node.to_string());
        spec.node_selector = None;
        spec.affinity = None;
        spec.restart_policy = Some("Never".into());
        for c in &mut spec.containers {
            c.name = "wipe".into();
            c.args = Some(vec!["wipe".into(), "--config".into(), CONFIG_PATH.into()]);
            c.ports = None;
            c.liveness_probe = None;
            c.readiness_probe = None;
        }
    }
    // Job names become label values (<= 63 characters).
    let node_hash = format!("{:010x}", xxhash_rust::xxh3::xxh3_64(node.as_bytes()) & 0xff_ffff_ffff);
    let prefix: String = owner.name.chars().take(46).collect();
    let name = format!("{prefix}-wipe-{node_hash}");
    let mut metadata = metadata(owner, &name, WIPE_COMPONENT);
    annotate(&mut metadata, WIPE_NODE, node);
    Ok(Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            template,
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}
