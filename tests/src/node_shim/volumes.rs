//! A Pod's volumes as local files: what the kubelet would mount into a
//! container, the shim writes under the Pod's directory, and a [`PathMap`]
//! translates the container's mount paths to those directories.
//!
//! The agent runs as a plain process, so it sees the host's filesystem. The
//! shim therefore never mounts anything: each volume becomes a directory
//! (`POD/volumes/NAME/`, or a per-node directory for hostPath volumes), and
//! every path the container would use is rewritten through the map, in
//! arguments, environment values and the config files themselves (see
//! `rewrite`). ConfigMap and Secret files are written atomically (temporary
//! file, then rename), as the kubelet swaps a mounted ConfigMap, so an agent
//! polling its config never reads half a file.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, Volume};

/// Size of a file that stands in for a hostPath block device that the
/// node lacks.
pub const DEFAULT_DEVICE_FILE_SIZE: u64 = 256 << 20;

/// Container paths mapped to local paths, longest container path first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathMap {
    mounts: Vec<(String, PathBuf)>,
}

impl PathMap {
    /// Adds `container_path` (absolute, `/`-separated) as `local`.
    pub fn insert(&mut self, container_path: &str, local: PathBuf) {
        let container_path = container_path.trim_end_matches('/');
        if container_path.is_empty() {
            // Mounting over `/` cannot be mapped by prefix; no agent Pod does it.
            return;
        }
        self.mounts.retain(|(p, _)| p != container_path);
        self.mounts.push((container_path.to_string(), local));
        self.mounts
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    }

    /// The local path of `container_path`, when it lies in a mounted volume.
    pub fn map_path(&self, container_path: &str) -> Option<PathBuf> {
        self.mounts.iter().find_map(|(mount, local)| {
            let rest = container_path.strip_prefix(mount.as_str())?;
            if rest.is_empty() {
                Some(local.clone())
            } else {
                rest.strip_prefix('/').map(|r| local.join(r))
            }
        })
    }

    /// Rewrites every mounted path inside `s`: a path starts at the start of
    /// the string or after one of `=:, "'` and ends at the end of the string
    /// or before `/` or one of those delimiters. `--config=/etc/x/a.yaml`
    /// and `PATH_A:/etc/x` are rewritten; `/etc/xy` is not under `/etc/x`.
    pub fn rewrite(&self, s: &str) -> String {
        const DELIMITERS: &[char] = &['=', ':', ',', ' ', '"', '\''];
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            let at_start = i == 0 || s[..i].ends_with(DELIMITERS);
            if at_start && s[i..].starts_with('/') {
                let hit = self.mounts.iter().find(|(mount, _)| {
                    s[i..].starts_with(mount.as_str())
                        && s[i + mount.len()..]
                            .chars()
                            .next()
                            .is_none_or(|c| c == '/' || DELIMITERS.contains(&c))
                });
                if let Some((mount, local)) = hit {
                    out.push_str(&local.to_string_lossy());
                    i += mount.len();
                    continue;
                }
            }
            let Some(c) = s[i..].chars().next() else { break };
            out.push(c);
            i += c.len_utf8();
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
    }
}

/// `ROOT/nodes/NODE/host`: the "host filesystem" of shim node `node`.
pub fn node_host_dir(root: &Path, node: &str) -> PathBuf {
    root.join("nodes").join(node).join("host")
}

/// Where a Pod's and its node's files live.
#[derive(Clone, Debug)]
pub struct PodDirs {
    /// `ROOT/pods/NS_NAME_UID`: volumes, devices, scratch; removed when the Pod goes.
    pub pod: PathBuf,
    /// `ROOT/nodes/NODE/host`: the node's "host filesystem" for hostPath volumes.
    pub node_host: PathBuf,
}

impl PodDirs {
    pub fn new(root: &Path, pod: &Pod, node: &str) -> Self {
        let meta = &pod.metadata;
        let uid: String = meta.uid.as_deref().unwrap_or("nouid").chars().take(8).collect();
        let dir = format!(
            "{}_{}_{uid}",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or("unnamed")
        );
        Self {
            pod: root.join("pods").join(dir),
            node_host: node_host_dir(root, node),
        }
    }

    pub fn volume(&self, name: &str) -> PathBuf {
        self.pod.join("volumes").join(name)
    }

    /// The local stand-in for host path `path`.
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.node_host.join(path.trim_start_matches('/'))
    }
}

/// What one volume is, as far as the shim cares.
#[derive(Clone, Debug, PartialEq)]
pub enum VolumeKind {
    /// Files from a ConfigMap (`secret: false`) or Secret, kept up to date.
    Objects(Vec<ObjectFiles>),
    /// A directory of the Pod (emptyDir, ephemeral and claimed filesystems).
    Scratch,
    /// A host path of the node, with its hostPath type.
    HostPath { path: String, type_: String },
    /// A claim (a raw block ephemeral volume or a named claim): its
    /// device comes from the bound PersistentVolume (see `claims`).
    Claim(String),
    /// Something the shim cannot provide; the Pod fails to start with this.
    Unsupported(String),
}

/// The files one ConfigMap or Secret contributes to a volume.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectFiles {
    pub secret: bool,
    pub name: String,
    pub items: Option<Vec<KeyToPath>>,
    pub optional: bool,
}

/// The claim behind a volume of `pod` that the shim resolves: a generic
/// ephemeral volume in Block mode (`POD-VOLUME`) or a named claim.
pub fn claim_name(pod: &Pod, volume: &Volume) -> Option<String> {
    if let Some(claim) = &volume.persistent_volume_claim {
        return Some(claim.claim_name.clone());
    }
    let spec = volume
        .ephemeral
        .as_ref()?
        .volume_claim_template
        .as_ref()
        .map(|t| &t.spec)?;
    let pod_name = pod.metadata.name.as_deref()?;
    (spec.volume_mode.as_deref() == Some("Block")).then(|| format!("{pod_name}-{}", volume.name))
}

/// Classifies `volume` of `pod`.
pub fn volume_kind(pod: &Pod, volume: &Volume) -> VolumeKind {
    if let Some(claim) = claim_name(pod, volume) {
        return VolumeKind::Claim(claim);
    }
    if let Some(cm) = &volume.config_map {
        return VolumeKind::Objects(vec![ObjectFiles {
            secret: false,
            name: cm.name.clone(),
            items: cm.items.clone(),
            optional: cm.optional.unwrap_or(false),
        }]);
    }
    if let Some(secret) = &volume.secret {
        return VolumeKind::Objects(vec![ObjectFiles {
            secret: true,
            name: secret.secret_name.clone().unwrap_or_default(),
            items: secret.items.clone(),
            optional: secret.optional.unwrap_or(false),
        }]);
    }
    if let Some(projected) = &volume.projected {
        let mut files = Vec::new();
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                files.push(ObjectFiles {
                    secret: false,
                    name: cm.name.clone(),
                    items: cm.items.clone(),
                    optional: cm.optional.unwrap_or(false),
                });
            } else if let Some(secret) = &source.secret {
                files.push(ObjectFiles {
                    secret: true,
                    name: secret.name.clone(),
                    items: secret.items.clone(),
                    optional: secret.optional.unwrap_or(false),
                });
            }
            // Service account tokens, downward API and trust bundles give
            // no files: the agent never talks to the Kubernetes API, and
            // the default token volume must not keep a Pod from starting.
        }
        return VolumeKind::Objects(files);
    }
    if let Some(host) = &volume.host_path {
        return VolumeKind::HostPath {
            path: host.path.clone(),
            type_: host.type_.clone().unwrap_or_default(),
        };
    }
    if volume.ephemeral.is_some() {
        return VolumeKind::Scratch;
    }
    if volume.empty_dir.is_some() {
        return VolumeKind::Scratch;
    }
    VolumeKind::Unsupported(format!(
        "volume {:?}: this kind of volume is not supported",
        volume.name
    ))
}

/// Why a volume's files could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error("{kind} {name:?} not found")]
    MissingObject { kind: &'static str, name: String },
    #[error("{kind} {name:?} has no key {key:?}")]
    MissingKey {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    ClaimNotBound(String),
}

impl VolumeError {
    /// The kubelet's waiting reason for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingObject { .. } | Self::MissingKey { .. } | Self::ClaimNotBound(_) => "ContainerCreating",
            Self::Unsupported(_) => "CreateContainerConfigError",
        }
    }
}

/// The relative file paths and contents of one ConfigMap's or Secret's
/// `data`, selected by `items` (all keys without items).
pub fn object_files(
    files: &ObjectFiles,
    data: Option<&BTreeMap<String, Vec<u8>>>,
) -> Result<Vec<(String, Vec<u8>)>, VolumeError> {
    let kind = if files.secret { "Secret" } else { "ConfigMap" };
    let Some(data) = data else {
        return if files.optional {
            Ok(Vec::new())
        } else {
            Err(VolumeError::MissingObject {
                kind,
                name: files.name.clone(),
            })
        };
    };
    match &files.items {
        None => Ok(data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Some(items) => items
            .iter()
            .filter_map(|item| match data.get(&item.key) {
                Some(v) => Some(Ok((item.path.clone(), v.clone()))),
                None if files.optional => None,
                None => Some(Err(VolumeError::MissingKey {
                    kind,
                    name: files.name.clone(),
                    key: item.key.clone(),
                })),
            })
            .collect(),
    }
}

/// The [`PathMap`] of `container` in a Pod laid out in `dirs`: each volume
/// mount (with its subPath) and each volume device, a claimed one at its
/// device in `claim_devices` (by volume name).
pub fn path_map(
    pod: &Pod,
    container: &Container,
    dirs: &PodDirs,
    claim_devices: &BTreeMap<String, PathBuf>,
) -> PathMap {
    let volumes: BTreeMap<&str, &Volume> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .map(|v| (v.name.as_str(), v))
        .collect();
    let mut map = PathMap::default();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(volume) = volumes.get(mount.name.as_str()) else {
            continue;
        };
        let mut local = volume_dir(pod, volume, dirs);
        if let Some(sub) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            local = local.join(sub);
        }
        map.insert(&mount.mount_path, local);
    }
    for device in container.volume_devices.iter().flatten() {
        let local = match volumes.get(device.name.as_str()).map(|v| volume_kind(pod, v)) {
            Some(VolumeKind::HostPath { path, .. }) => dirs.host_path(&path),
            _ => match claim_devices.get(&device.name) {
                Some(local) => local.clone(),
                None => dirs.pod.join("devices").join(&device.name),
            },
        };
        map.insert(&device.device_path, local);
    }
    map
}

/// The local directory (or file) that stands in for `volume`.
pub fn volume_dir(pod: &Pod, volume: &Volume, dirs: &PodDirs) -> PathBuf {
    match volume_kind(pod, volume) {
        VolumeKind::HostPath { path, .. } => dirs.host_path(&path),
        _ => dirs.volume(&volume.name),
    }
}

/// Creates what a hostPath volume of `type_` needs at `local`: a sparse
/// file for a block device, an empty file for a file, else a directory.
pub fn prepare_host_path(local: &Path, type_: &str) -> std::io::Result<()> {
    match type_ {
        "BlockDevice" => sparse_file(local, DEFAULT_DEVICE_FILE_SIZE),
        "File" | "FileOrCreate" | "CharDevice" | "Socket" => {
            if let Some(parent) = local.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if !local.exists() {
                std::fs::File::create(local)?;
            }
            Ok(())
        }
        _ => std::fs::create_dir_all(local),
    }
}

/// Creates `path` as a sparse file of `size` bytes unless it exists.
pub fn sparse_file(path: &Path, size: u64) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::File::create(path)?;
    file.set_len(size)
}

/// Writes `content` to `path` atomically (temporary file, then rename);
/// returns false without writing when the file already holds it.
pub fn write_atomic(path: &Path, content: &[u8]) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.shim-tmp"));
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, HostPathVolumeSource, PodSpec, VolumeDevice, VolumeMount};

    use super::*;

    fn map() -> PathMap {
        let mut m = PathMap::default();
        m.insert("/etc/slicecache", PathBuf::from("/shim/pod/volumes/config"));
        m.insert("/etc/slicecache/extra/", PathBuf::from("/shim/pod/volumes/extra"));
        m.insert("/tmp", PathBuf::from("/shim/pod/volumes/tmp"));
        m
    }

    #[test]
    fn map_path_takes_the_longest_mount_and_whole_segments() {
        let m = map();
        assert_eq!(
            m.map_path("/etc/slicecache/agent.yaml"),
            Some(PathBuf::from("/shim/pod/volumes/config/agent.yaml"))
        );
        assert_eq!(
            m.map_path("/etc/slicecache/extra/a"),
            Some(PathBuf::from("/shim/pod/volumes/extra/a"))
        );
        assert_eq!(m.map_path("/tmp"), Some(PathBuf::from("/shim/pod/volumes/tmp")));
        assert_eq!(m.map_path("/tmpfoo"), None);
        assert_eq!(m.map_path("/var/x"), None);
    }

    #[test]
    fn rewrite_replaces_paths_inside_flags_and_lists_only() {
        let m = map();
        assert_eq!(
            m.rewrite("/etc/slicecache/agent.yaml"),
            "/shim/pod/volumes/config/agent.yaml"
        );
        assert_eq!(
            m.rewrite("--config=/etc/slicecache/agent.yaml"),
            "--config=/shim/pod/volumes/config/agent.yaml"
        );
        assert_eq!(
            m.rewrite("/tmp/a:/etc/slicecache,/opt/x"),
            "/shim/pod/volumes/tmp/a:/shim/pod/volumes/config,/opt/x"
        );
        // Not at a delimiter, or not a whole segment: untouched.
        assert_eq!(m.rewrite("x/tmp/a"), "x/tmp/a");
        assert_eq!(m.rewrite("/tmpdir/a"), "/tmpdir/a");
        assert_eq!(m.rewrite("0.0.0.0:8080"), "0.0.0.0:8080");
        assert_eq!(m.rewrite("héllo /tmp"), "héllo /shim/pod/volumes/tmp");
    }

    fn pod_with(volumes: Vec<Volume>) -> Pod {
        Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("agent-x".into()),
                namespace: Some("ns".into()),
                uid: Some("0123456789abcdef".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                volumes: Some(volumes),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn path_map_covers_mounts_sub_paths_host_paths_and_devices() {
        let pod = pod_with(vec![
            Volume {
                name: "config".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "c".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "dev".into(),
                host_path: Some(HostPathVolumeSource {
                    path: "/dev/disk/by-id/nvme-1".into(),
                    type_: Some("BlockDevice".into()),
                }),
                ..Default::default()
            },
        ]);
        let container = Container {
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "config".into(),
                    mount_path: "/etc/slicecache".into(),
                    ..Default::default()
                },
                VolumeMount {
                    name: "config".into(),
                    mount_path: "/etc/other.yaml".into(),
                    sub_path: Some("agent.yaml".into()),
                    ..Default::default()
                },
                VolumeMount {
                    name: "dev".into(),
                    mount_path: "/dev/disk/by-id/nvme-1".into(),
                    ..Default::default()
                },
            ]),
            volume_devices: Some(vec![VolumeDevice {
                name: "block".into(),
                device_path: "/dev/slicecache-volume".into(),
            }]),
            ..Default::default()
        };
        let dirs = PodDirs::new(Path::new("/r"), &pod, "shim-node-1");
        assert_eq!(dirs.pod, PathBuf::from("/r/pods/ns_agent-x_01234567"));
        let m = path_map(&pod, &container, &dirs, &BTreeMap::new());
        assert_eq!(
            m.map_path("/etc/slicecache/agent.yaml"),
            Some(PathBuf::from("/r/pods/ns_agent-x_01234567/volumes/config/agent.yaml"))
        );
        assert_eq!(
            m.map_path("/etc/other.yaml"),
            Some(PathBuf::from("/r/pods/ns_agent-x_01234567/volumes/config/agent.yaml"))
        );
        assert_eq!(
            m.map_path("/dev/disk/by-id/nvme-1"),
            Some(PathBuf::from("/r/nodes/shim-node-1/host/dev/disk/by-id/nvme-1"))
        );
        assert_eq!(
            m.map_path("/dev/slicecache-volume"),
            Some(PathBuf::from("/r/pods/ns_agent-x_01234567/devices/block"))
        );
    }

    #[test]
    fn object_files_select_items_and_honour_optional() {
        let data = BTreeMap::from([
            ("agent.yaml".to_string(), b"a: 1".to_vec()),
            ("other".to_string(), b"x".to_vec()),
        ]);
        let all = ObjectFiles {
            secret: false,
            name: "c".into(),
            items: None,
            optional: false,
        };
        assert_eq!(object_files(&all, Some(&data)).map(|f| f.len()), Ok(2));
        let picked = ObjectFiles {
            items: Some(vec![KeyToPath {
                key: "agent.yaml".into(),
                path: "conf/agent.yaml".into(),
                mode: None,
            }]),
            ..all.clone()
        };
        assert_eq!(
            object_files(&picked, Some(&data)),
            Ok(vec![("conf/agent.yaml".to_string(), b"a: 1".to_vec())])
        );
        let missing_key = ObjectFiles {
            secret: true,
            items: Some(vec![KeyToPath {
                key: "token".into(),
                path: "t".into(),
                mode: None,
            }]),
            ..all.clone()
        };
        assert!(matches!(
            object_files(&missing_key, Some(&data)),
            Err(VolumeError::MissingKey { kind: "Secret", .. })
        ));
        assert!(matches!(
            object_files(&all, None),
            Err(VolumeError::MissingObject { kind: "ConfigMap", .. })
        ));
        let optional = ObjectFiles { optional: true, ..all };
        assert_eq!(object_files(&optional, None), Ok(Vec::new()));
    }

    #[test]
    fn write_atomic_skips_unchanged_content() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("v/agent.yaml");
        assert!(write_atomic(&path, b"one")?);
        assert!(!write_atomic(&path, b"one")?);
        assert!(write_atomic(&path, b"two")?);
        assert_eq!(std::fs::read(&path)?, b"two");
        sparse_file(&dir.path().join("d/dev"), 1 << 20)?;
        assert_eq!(std::fs::metadata(dir.path().join("d/dev"))?.len(), 1 << 20);
        Ok(())
    }
}
