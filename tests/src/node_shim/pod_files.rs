//! Preparing one Pod's container as a local process: the volume files
//! written, the host paths and devices created, the environment resolved
//! and the command line rewritten, giving a [`Launch`].
//!
//! ConfigMaps and Secrets come from the shim's watch caches
//! ([`ObjectStores`]), which is also how a changed ConfigMap reaches a
//! running agent: [`refresh_objects`] rewrites the files whose content
//! changed (atomically), as the kubelet updates a mounted ConfigMap in
//! place, and the agent hot-reloads its tunables from the new file.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Volume};
use kube::runtime::reflector::{ObjectRef, Store};

use super::{
    env::{self, EnvError, ObjectData, PodFacts},
    process::Launch,
    rewrite,
    volumes::{self, PathMap, PodDirs, VolumeError, VolumeKind},
};

/// The shim's caches of ConfigMaps and Secrets (all namespaces).
#[derive(Clone, Debug)]
pub struct ObjectStores {
    pub config_maps: Store<ConfigMap>,
    pub secrets: Store<Secret>,
}

/// [`ObjectData`] of one namespace.
#[derive(Debug)]
pub struct NamespaceObjects<'a> {
    pub stores: &'a ObjectStores,
    pub namespace: &'a str,
}

impl ObjectData for NamespaceObjects<'_> {
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let cm = self
            .stores
            .config_maps
            .get(&ObjectRef::new(name).within(self.namespace))?;
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        for (k, v) in cm.binary_data.iter().flatten() {
            data.insert(k.clone(), v.0.clone());
        }
        Some(data)
    }

    fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let secret = self.stores.secrets.get(&ObjectRef::new(name).within(self.namespace))?;
        Some(
            secret
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
        )
    }
}

/// Why a container could not be prepared. The kubelet's waiting reason
/// comes from [`PrepareError::reason`]; the message is the error's text.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("command {0:?} is not the agent; the node shim runs only slicecache-agent")]
    Command(String),
    #[error("preparing the pod's files: {0}")]
    Io(#[from] std::io::Error),
}

impl PrepareError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Volume(v) => v.reason(),
            Self::Env(_) | Self::Command(_) => "CreateContainerConfigError",
            Self::Io(_) => "ContainerCreating",
        }
    }

    /// Whether waiting can fix it (an object that may yet be created).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::Volume(
                VolumeError::MissingObject { .. } | VolumeError::MissingKey { .. } | VolumeError::ClaimNotBound(_)
            ) | Self::Env(EnvError::MissingObject { .. } | EnvError::MissingKey { .. })
                | Self::Io(_)
        )
    }
}

/// Everything about the Pod a preparation needs.
#[derive(Debug)]
pub struct PodContext<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub node: &'a str,
    pub dirs: &'a PodDirs,
    pub ip: IpAddr,
    pub host_ip: &'a str,
    pub stores: &'a ObjectStores,
    /// The local device of each claimed Block volume (see `claims`).
    pub claim_devices: &'a BTreeMap<String, PathBuf>,
    pub agent_binary: &'a Path,
    pub rust_log: &'a str,
    pub log: PathBuf,
}

impl PodContext<'_> {
    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    fn volumes(&self) -> impl Iterator<Item = &Volume> {
        self.pod.spec.iter().flat_map(|s| s.volumes.iter().flatten())
    }

    pub fn paths(&self) -> PathMap {
        volumes::path_map(self.pod, self.container, self.dirs, self.claim_devices)
    }
}

/// Lays out the Pod's volumes and returns the container's launch.
pub fn prepare(ctx: &PodContext<'_>) -> Result<Launch, PrepareError> {
    let paths = ctx.paths();
    std::fs::create_dir_all(&ctx.dirs.pod)?;
    for volume in ctx.volumes() {
        match volumes::volume_kind(ctx.pod, volume) {
            VolumeKind::Objects(_) => {}
            VolumeKind::Scratch => std::fs::create_dir_all(ctx.dirs.volume(&volume.name))?,
            VolumeKind::HostPath { path, type_ } => {
                volumes::prepare_host_path(&ctx.dirs.host_path(&path), &type_)?;
            }
            VolumeKind::Claim(claim) => {
                if let Some(device) = ctx.claim_devices.get(&volume.name) {
                    if !device.exists() {
                        return Err(VolumeError::ClaimNotBound(format!(
                            "the device of claim {claim:?} is not on the node: {} does not exist",
                            device.display()
                        ))
                        .into());
                    }
                } else {
                    // A claim in Filesystem mode: a directory of the Pod.
                    std::fs::create_dir_all(ctx.dirs.volume(&volume.name))?;
                }
            }
            VolumeKind::Unsupported(why) => return Err(VolumeError::Unsupported(why).into()),
        }
    }
    refresh_objects(ctx, &paths)?;

    let objects = NamespaceObjects {
        stores: ctx.stores,
        namespace: ctx.namespace(),
    };
    let facts = PodFacts {
        pod: ctx.pod,
        node_name: ctx.node,
        pod_ip: ctx.ip.to_string(),
        host_ip: ctx.host_ip.to_string(),
    };
    let container_env = env::resolve_env(ctx.container, &facts, &objects)?;
    let mut command_line: Vec<String> = Vec::new();
    if let Some(command) = ctx.container.command.as_ref().filter(|c| !c.is_empty()) {
        let program = Path::new(&command[0]).file_name().and_then(|n| n.to_str());
        if program != Some("slicecache-agent") {
            return Err(PrepareError::Command(command[0].clone()));
        }
        command_line.extend(command[1..].iter().cloned());
    }
    command_line.extend(ctx.container.args.iter().flatten().cloned());
    let command_line: Vec<String> = command_line.iter().map(|a| env::expand(a, &container_env)).collect();

    let scratch = paths.map_path("/tmp").unwrap_or_else(|| ctx.dirs.pod.join("tmp"));
    std::fs::create_dir_all(&scratch)?;
    let mut launch_env = vec![
        (
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        ),
        ("HOME".to_string(), ctx.dirs.pod.to_string_lossy().into_owned()),
        ("TMPDIR".to_string(), scratch.to_string_lossy().into_owned()),
        (
            "HOSTNAME".to_string(),
            ctx.pod.metadata.name.clone().unwrap_or_default(),
        ),
        ("RUST_LOG".to_string(), ctx.rust_log.to_string()),
    ];
    for (name, value) in container_env {
        launch_env.retain(|(n, _)| *n != name);
        launch_env.push((name, paths.rewrite(&value)));
    }
    Ok(Launch {
        program: ctx.agent_binary.to_path_buf(),
        args: rewrite::rewrite_args(&command_line, &paths, ctx.ip),
        env: launch_env,
        cwd: ctx.dirs.pod.clone(),
        log: ctx.log.clone(),
    })
}

/// Writes every ConfigMap and Secret file of the Pod's volumes whose
/// content (after rewriting) changed; returns how many files were written.
pub fn refresh_objects(ctx: &PodContext<'_>, paths: &PathMap) -> Result<usize, PrepareError> {
    let objects = NamespaceObjects {
        stores: ctx.stores,
        namespace: ctx.namespace(),
    };
    let mut written = 0;
    for volume in ctx.volumes() {
        let VolumeKind::Objects(sources) = volumes::volume_kind(ctx.pod, volume) else {
            continue;
        };
        let dir = ctx.dirs.volume(&volume.name);
        std::fs::create_dir_all(&dir)?;
        for source in &sources {
            let data = if source.secret {
                objects.secret(&source.name)
            } else {
                objects.config_map(&source.name)
            };
            for (relative, content) in volumes::object_files(source, data.as_ref())? {
                let content = if source.secret {
                    content
                } else {
                    rewrite::rewrite_yaml(&content, paths, ctx.ip).unwrap_or(content)
                };
                let target = safe_join(&dir, &relative)
                    .ok_or_else(|| VolumeError::Unsupported(format!("file path {relative:?} leaves its volume")))?;
                if volumes::write_atomic(&target, &content)? {
                    written += 1;
                }
            }
        }
    }
    Ok(written)
}

/// `dir/relative` unless `relative` is absolute or climbs out with `..`.
fn safe_join(dir: &Path, relative: &str) -> Option<PathBuf> {
    let rel = Path::new(relative);
    let ok = rel.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    ok.then(|| dir.join(rel))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::{reflector::store::Writer, watcher};
    use slicecache_api::agent_config::AgentConfig;
    use slicecache_operator::controller::{
        build::{self, BuildDefaults, Owner},
        validate,
    };

    use super::*;

    /// The operator's own objects for a SliceCache with a file-backed
    /// device and a purge token: its ConfigMap and Secret in the caches,
    /// and a Pod made from its DaemonSet's template.
    fn operator_pod() -> (Pod, ObjectStores) {
        let yaml = [
            "apiVersion: slicecache.io/v1alpha1",
            "kind: SliceCache",
            "metadata: {name: media, namespace: ns}",
            "spec:",
            "  origin: {url: 'http://127.0.0.1:1234'}",
            "  cache:",
            "    memory: 64Mi",
            "    disk:",
            "      hostPathFile: {path: /var/lib/slicecache/cache.img, size: 64Mi}",
            "  purgeTokenSecretRef: {name: purge, key: token}",
        ]
        .join("\n");
        let cache: slicecache_api::SliceCache = serde_yaml_ng::from_str(&yaml).expect("a SliceCache");
        let validated = validate::validate_spec(&cache).expect("a valid SliceCache");
        let owner = Owner {
            name: "media".into(),
            namespace: "ns".into(),
            uid: None,
            generation: 1,
        };
        let state = build::build(&validated, &owner, &BuildDefaults::default()).expect("built objects");
        let template = state.workload.pod_template().cloned().expect("a pod template");
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("media-agent-x1".into()),
                namespace: Some("ns".into()),
                uid: Some("uid-1".into()),
                ..template.metadata.unwrap_or_default()
            },
            spec: template.spec,
            status: None,
        };
        let mut config_maps = Writer::<ConfigMap>::default();
        config_maps.apply_watcher_event(&watcher::Event::Apply(state.config_map.clone()));
        let mut secrets = Writer::<Secret>::default();
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "purge", "namespace": "ns" },
            "data": { "token": "c2VjcmV0" },
        }))
        .expect("a Secret");
        secrets.apply_watcher_event(&watcher::Event::Apply(secret));
        let stores = ObjectStores {
            config_maps: config_maps.as_reader(),
            secrets: secrets.as_reader(),
        };
        (pod, stores)
    }

    #[test]
    fn the_operators_pod_becomes_a_local_launch() -> Result<(), PrepareError> {
        let (pod, stores) = operator_pod();
        let root = tempfile::tempdir()?;
        let container = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .cloned()
            .expect("a container");
        let dirs = PodDirs::new(root.path(), &pod, "shim-node-1");
        let ip: IpAddr = [127, 0, 0, 9].into();
        let ctx = PodContext {
            pod: &pod,
            container: &container,
            node: "shim-node-1",
            dirs: &dirs,
            ip,
            host_ip: "127.0.0.1",
            stores: &stores,
            claim_devices: &BTreeMap::new(),
            agent_binary: Path::new("/bin/slicecache-agent"),
            rust_log: "info",
            log: root.path().join("logs/agent.log"),
        };
        let launch = prepare(&ctx)?;
        let config_path = dirs.volume("config").join("agent.yaml");
        assert_eq!(
            launch.args,
            ["run", "--config", config_path.to_string_lossy().as_ref()],
            "{launch:?}"
        );
        let config: AgentConfig = serde_yaml_ng::from_slice(&std::fs::read(&config_path)?).expect("a config");
        assert_eq!(config.listen, "127.0.0.9:8080");
        assert_eq!(config.admin_listen, "127.0.0.9:9090");
        let device = &config.cache.devices[0].path;
        assert_eq!(
            Path::new(device),
            dirs.host_path("/var/lib/slicecache/cache.img"),
            "the device file lives in the node's host directory"
        );
        assert!(dirs.host_path("/var/lib/slicecache").is_dir());
        let token = config.admin.purge_token_file.expect("a purge token file");
        assert_eq!(std::fs::read_to_string(&token)?, "secret");
        let tmp = launch.env.iter().find(|(k, _)| k == "TMPDIR").map(|(_, v)| v.clone());
        assert_eq!(tmp.as_deref().map(Path::new), Some(dirs.volume("tmp").as_path()));

        // A changed ConfigMap is rewritten in place; an unchanged one is not.
        assert_eq!(refresh_objects(&ctx, &ctx.paths())?, 0);
        Ok(())
    }

    #[test]
    fn safe_join_refuses_escapes() {
        let d = Path::new("/v");
        assert_eq!(safe_join(d, "a/b.yaml"), Some(PathBuf::from("/v/a/b.yaml")));
        assert_eq!(safe_join(d, "../x"), None);
        assert_eq!(safe_join(d, "/etc/passwd"), None);
    }

    #[test]
    fn retryable_errors_are_the_ones_a_new_object_can_fix() {
        let missing = PrepareError::Volume(VolumeError::MissingObject {
            kind: "ConfigMap",
            name: "c".into(),
        });
        assert!(missing.retryable());
        assert_eq!(missing.reason(), "ContainerCreating");
        let command = PrepareError::Command("/bin/sh".into());
        assert!(!command.retryable());
        assert_eq!(command.reason(), "CreateContainerConfigError");
    }
}
