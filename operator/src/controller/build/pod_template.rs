//! The agents' pod template, which the DaemonSet or Deployment wraps and the
//! wipe Jobs reuse, and its hash
//! ([`POD_TEMPLATE_HASH`](super::meta::POD_TEMPLATE_HASH)): everything
//! whose change needs the agents restarted.
//!
//! Contract: pure, like the whole build step: the same validated spec,
//! owner and defaults give the same template and hash.
//!
//! The template is assembled from named parts: the volumes and mounts of
//! each kind of storage (`PodStorage`), the agent container, and the
//! security contexts that [`Privilege`] picks from what the devices need.

use std::{collections::BTreeMap, path::Path};

use k8s_openapi::{
    api::core::v1::{
        Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
        EphemeralVolumeSource, HTTPGetAction, HostPathVolumeSource, KeyToPath, ObjectFieldSelector,
        PersistentVolumeClaimSpec, PersistentVolumeClaimTemplate, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
        SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeDevice, VolumeMount,
        VolumeResourceRequirements,
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use serde::Serialize;
use slicecache_api::{
    agent_config::{AgentConfig, Tunables},
    fleet_config::PEER_PORT_NAME,
    quantity::format_bytes,
    validate::{
        BlockVolume, DeviceSelection, HostPathFile, PurgeTokenRef, BLOCK_VOLUME_PATH, EMPTY_DIR_FILE_DIR,
        PEER_TOKEN_FILE, PURGE_TOKEN_FILE,
    },
    ValidatedSliceCache,
};

use super::{
    config_map::{CONFIG_DIR, CONFIG_FILE_KEY, CONFIG_PATH},
    fleet::PEER_TOKEN_KEY,
    meta::{hash_hex, labels, Owner},
    BuildDefaults, BuildError, ObjectNames,
};

/// Name of the agent container.
pub const AGENT_CONTAINER: &str = "agent";
/// User and group of agents that need no device access.
pub const NON_ROOT_UID: i64 = 65532;
/// Agent image used when `spec.image` is unset.
pub const DEFAULT_AGENT_IMAGE: &str = concat!("slicecache/slicecache-agent:", env!("CARGO_PKG_VERSION"));

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

/// The agent's container ports; `peer` only in fleet mode.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ports {
    pub client: u16,
    pub admin: u16,
    pub peer: Option<u16>,
}

/// The agents' pod template, without its hash (see [`pod_template_hash`]).
pub(super) fn pod_template(
    validated: &ValidatedSliceCache,
    owner: &Owner,
    defaults: &BuildDefaults,
    names: &ObjectNames,
    ports: Ports,
) -> PodTemplateSpec {
    let privilege = Privilege::of(validated);
    let cache = validated.cache();
    let mut storage = PodStorage::config_and_scratch(names);
    storage.add_node_devices(cache.devices());
    if let Some(file) = cache.host_path_file() {
        storage.add_host_file(file);
    }
    if let Some(size) = cache.empty_dir_file() {
        storage.add_empty_dir_file(size);
    }
    if let Some(block) = cache.block_volume() {
        storage.add_block_volume(owner, block);
    }
    if let Some(token) = validated.purge_token() {
        storage.add_purge_token(token);
    }
    // Fleet mode, by its peer port (the device wipe Job has none).
    let sharded = ports.peer.is_some();
    if sharded {
        storage.add_peer_token(names);
    }
    let PodStorage {
        volumes,
        mounts,
        devices,
    } = storage;

    let container = Container {
        volume_mounts: Some(mounts),
        volume_devices: (!devices.is_empty()).then_some(devices),
        ..agent_container(validated, defaults, privilege, ports)
    };

    let placement = validated.placement();
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(owner, "cache-agent")),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(names.service_account.clone()),
            // Only fleet mode talks to the API: it watches the peers
            // Service's EndpointSlices, as its Role allows and no more.
            automount_service_account_token: Some(sharded),
            node_selector: (!placement.node_selector().is_empty()).then(|| placement.node_selector().clone()),
            tolerations: (!placement.tolerations().is_empty()).then(|| placement.tolerations().to_vec()),
            affinity: placement.affinity().cloned(),
            security_context: Some(pod_security(privilege)),
            containers: vec![container],
            volumes: Some(volumes),
            termination_grace_period_seconds: Some(30),
            ..PodSpec::default()
        }),
    }
}

/// The value of [`POD_TEMPLATE_HASH`](super::meta::POD_TEMPLATE_HASH) for
/// `template`: the template itself, the agent config with its hot-reloaded
/// tunables reset, and the device selection.
pub(super) fn pod_template_hash(
    template: &PodTemplateSpec,
    agent_config: &AgentConfig,
    devices: &DeviceSelection,
) -> Result<String, BuildError> {
    hash_hex(&RestartRelevant {
        template,
        config: &AgentConfig {
            tunables: Tunables::default(),
            ..agent_config.clone()
        },
        devices: device_selection_key(devices),
    })
}

/// What a restart is needed for, hashed into the pod template hash.
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

// === storage ===

/// The volumes of the pod and the mounts and devices of the agent container,
/// in the order they are added.
#[derive(Debug)]
struct PodStorage {
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
    devices: Vec<VolumeDevice>,
}

impl PodStorage {
    /// The config file, and a scratch /tmp, as the root filesystem is
    /// read-only.
    fn config_and_scratch(names: &ObjectNames) -> Self {
        let volumes = vec![
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
        let mounts = vec![
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
        Self {
            volumes,
            mounts,
            devices: Vec::new(),
        }
    }

    /// Block devices of the node: each named path at the same path, or for
    /// discovery all of /dev and the udev database.
    fn add_node_devices(&mut self, devices: &DeviceSelection) {
        match devices {
            DeviceSelection::None => {}
            DeviceSelection::Paths(paths) => {
                for (i, path) in paths.iter().enumerate() {
                    let name = format!("device-{i}");
                    self.volumes.push(host_path_volume(&name, path, "BlockDevice"));
                    self.mounts.push(VolumeMount {
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
                self.volumes.push(host_path_volume("host-dev", "/dev", "Directory"));
                self.mounts.push(VolumeMount {
                    name: "host-dev".into(),
                    mount_path: "/dev".into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                });
                self.volumes
                    .push(host_path_volume("host-udev", "/run/udev", "Directory"));
                self.mounts.push(VolumeMount {
                    name: "host-udev".into(),
                    mount_path: "/run/udev".into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                });
            }
        }
    }

    /// The directory of a file-backed device on the node, at the same path.
    fn add_host_file(&mut self, file: &HostPathFile) {
        let dir = Path::new(file.path())
            .parent()
            .and_then(Path::to_str)
            .filter(|d| !d.is_empty())
            .unwrap_or("/");
        self.volumes
            .push(host_path_volume("device-file", dir, "DirectoryOrCreate"));
        self.mounts.push(VolumeMount {
            name: "device-file".into(),
            mount_path: dir.to_string(),
            ..VolumeMount::default()
        });
    }

    /// An emptyDir of `size` bytes for the file-backed device of the pod.
    fn add_empty_dir_file(&mut self, size: u64) {
        self.volumes.push(Volume {
            name: "cache-file".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit: Some(Quantity(format_bytes(size))),
            }),
            ..Volume::default()
        });
        self.mounts.push(VolumeMount {
            name: "cache-file".into(),
            mount_path: EMPTY_DIR_FILE_DIR.into(),
            ..VolumeMount::default()
        });
    }

    /// A raw block volume claimed for the pod, attached at
    /// [`BLOCK_VOLUME_PATH`].
    fn add_block_volume(&mut self, owner: &Owner, block: &BlockVolume) {
        self.volumes.push(Volume {
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
        self.devices.push(VolumeDevice {
            name: "cache-volume".into(),
            device_path: BLOCK_VOLUME_PATH.into(),
        });
    }

    /// The purge token Secret key, read-only at [`PURGE_TOKEN_FILE`].
    fn add_purge_token(&mut self, token: &PurgeTokenRef) {
        self.add_secret_file("purge-token", token.name(), token.key(), PURGE_TOKEN_FILE);
    }

    /// The fleet's peer token, read-only at [`PEER_TOKEN_FILE`].
    fn add_peer_token(&mut self, names: &ObjectNames) {
        self.add_secret_file("peer-token", &names.peer_token, PEER_TOKEN_KEY, PEER_TOKEN_FILE);
    }

    /// Key `key` of Secret `secret`, read-only at `file`, in a volume
    /// named `volume` mounted at the file's directory.
    fn add_secret_file(&mut self, volume: &str, secret: &str, key: &str, file: &str) {
        let file = Path::new(file);
        let dir = file.parent().and_then(Path::to_str).unwrap_or("/var/run/secrets");
        let file_name = file.file_name().and_then(|f| f.to_str()).unwrap_or(volume);
        self.volumes.push(Volume {
            name: volume.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_string()),
                items: Some(vec![KeyToPath {
                    key: key.to_string(),
                    path: file_name.to_string(),
                    mode: None,
                }]),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        self.mounts.push(VolumeMount {
            name: volume.into(),
            mount_path: dir.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
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

// === the container ===

/// The agent container without its mounts and devices ([`PodStorage`]).
fn agent_container(
    validated: &ValidatedSliceCache,
    defaults: &BuildDefaults,
    privilege: Privilege,
    ports: Ports,
) -> Container {
    let port = |name: &str, number: u16| ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(number),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    let mut container_ports = vec![port("http", ports.client), port("admin", ports.admin)];
    let mut env = Vec::new();
    if let Some(peer) = ports.peer {
        container_ports.push(port(PEER_PORT_NAME, peer));
        // The member name is the node's, so an agent that restarts on its
        // node owns what its disk holds again.
        env.push(field_env("NODE_NAME", "spec.nodeName"));
        env.push(field_env("POD_NAMESPACE", "metadata.namespace"));
    }
    Container {
        name: AGENT_CONTAINER.into(),
        image: Some(validated.image().unwrap_or(&defaults.agent_image).to_string()),
        args: Some(vec!["run".into(), "--config".into(), CONFIG_PATH.into()]),
        ports: Some(container_ports),
        env: (!env.is_empty()).then_some(env),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        resources: validated.resources().cloned(),
        security_context: Some(container_security(privilege)),
        ..Container::default()
    }
}

/// An environment variable from a field of the Pod (the downward API).
fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// An HTTP probe on the admin port.
fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

// === security ===

fn pod_security(privilege: Privilege) -> PodSecurityContext {
    match privilege {
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
