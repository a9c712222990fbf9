//! The build step on the repository's `examples/`: exact objects
//! against golden files, change classification, devices and privileges,
//! owner references, and the ConfigMap's agent config.
//!
//! Regenerate the golden files with `UPDATE_GOLDEN=1 cargo test -p slicecache-operator --test build`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::Container};
use slicecache_api::{agent_config::AgentConfig, units::ByteSize, SliceCache, ValidatedSliceCache};
use slicecache_operator::{
    controller::build::{
        self, AgentWorkload, BuildDefaults, DesiredState, Owner, CONFIG_FILE_KEY, CONFIG_GENERATION, DESIRED_HASH,
        POD_TEMPLATE_HASH,
    },
    render,
    tuner::Tunables,
};

/// An example users apply, read where they find it.
fn example_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name)
}

/// The golden rendering of an example.
fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn load(name: &str) -> SliceCache {
    let text = std::fs::read_to_string(example_path(name)).unwrap();
    let mut cache: SliceCache = serde_yaml_ng::from_str(&text).unwrap();
    cache.metadata.uid = Some("5f0c3c1e-0000-4000-8000-000000000001".into());
    cache.metadata.generation = Some(3);
    cache
}

fn build_cache(cache: &SliceCache) -> DesiredState {
    let validated = ValidatedSliceCache::new(&cache.spec).unwrap();
    build::build(&validated, &Owner::of(cache, "default"), &BuildDefaults::default()).unwrap()
}

fn agent(workload: &AgentWorkload) -> &Container {
    &workload.pod_template().unwrap().spec.as_ref().unwrap().containers[0]
}

fn daemon_set(desired: &DesiredState) -> &DaemonSet {
    desired.workload.daemon_set().expect("a DaemonSet")
}

fn parsed_config(desired: &DesiredState) -> AgentConfig {
    let yaml = &desired.config_map.data.as_ref().unwrap()[CONFIG_FILE_KEY];
    serde_yaml_ng::from_str(yaml).unwrap()
}

#[test]
fn rendered_examples_match_golden_files() {
    for name in ["minimal", "file-backed", "production-nvme", "autoscaled", "fleet"] {
        let input = std::fs::read_to_string(example_path(&format!("{name}.yaml"))).unwrap();
        let out = render::render(&input, &BuildDefaults::default()).unwrap();
        let golden = golden_path(&format!("{name}.rendered.yaml"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &out).unwrap();
        }
        let expected = std::fs::read_to_string(&golden).unwrap();
        assert_eq!(
            out,
            expected,
            "{name}: rendered objects differ from {}",
            golden.display()
        );
    }
}

#[test]
fn config_map_parses_back_into_the_agent_config() {
    let cache = load("production-nvme.yaml");
    let desired = build_cache(&cache);
    let config = parsed_config(&desired);
    assert_eq!(config, ValidatedSliceCache::new(&cache.spec).unwrap().agent_config());
    assert_eq!(config.origin.url, "https://origin.video.example.com");
    assert_eq!(config.origin.host_header.as_deref(), Some("vod.example.com"));
    assert_eq!(config.origin.max_connections, 512);
    assert_eq!(config.tunables.slice_size, ByteSize::mib(2));
    assert_eq!(config.tunables.concurrency, 8);
    assert_eq!(config.tunables.retries, 3);
    assert_eq!(config.cache.memory, ByteSize::gib(8));
    assert_eq!(config.cache.devices.len(), 2);
    assert_eq!(
        config.admin.purge_token_file.as_deref(),
        Some(slicecache_api::validate::PURGE_TOKEN_FILE)
    );
    let annotations = desired.config_map.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[CONFIG_GENERATION], "3");

    let minimal = parsed_config(&build_cache(&load("minimal.yaml")));
    assert_eq!(minimal.tunables.slice_size, ByteSize::mib(1));
    assert_eq!(minimal.tunables.concurrency, 4);
    assert!(minimal.cache.devices.is_empty());
}

#[test]
fn tunable_change_keeps_the_pod_template_and_rewrites_only_the_config_map() {
    let before = load("production-nvme.yaml");
    let mut after = before.clone();
    let slicing = after.spec.slicing.as_mut().unwrap();
    slicing.slice_size = Some(ByteSize::mib(4));
    slicing.concurrency = Some(16);
    slicing.retries = Some(5);
    let ttl = after.spec.cache.as_mut().unwrap().ttl.as_mut().unwrap();
    ttl.default = Some("2h".parse().unwrap());
    ttl.honor_origin_cache_control = Some(false);
    after.metadata.generation = Some(4);

    let (a, b) = (build_cache(&before), build_cache(&after));
    assert_eq!(a.pod_template_hash, b.pod_template_hash);
    assert_eq!(a.workload, b.workload, "a tunable change must not touch the DaemonSet");
    assert_eq!(a.client_service, b.client_service);
    assert_eq!(a.peer_service, b.peer_service);
    assert_eq!(a.service_account, b.service_account);
    assert_eq!(a.pod_disruption_budget, b.pod_disruption_budget);
    assert_ne!(a.config_map, b.config_map);
    assert_ne!(
        a.config_map.metadata.annotations.as_ref().unwrap()[DESIRED_HASH],
        b.config_map.metadata.annotations.as_ref().unwrap()[DESIRED_HASH]
    );
    assert_eq!(parsed_config(&b).tunables.concurrency, 16);
}

#[test]
fn tuned_values_reach_only_the_config_map() {
    let cache = load("production-nvme.yaml");
    let validated = ValidatedSliceCache::new(&cache.spec).unwrap();
    let owner = Owner::of(&cache, "default");
    let defaults = BuildDefaults::default();
    let spec = build::build(&validated, &owner, &defaults).unwrap();
    let tuned = build::build_tuned(
        &validated,
        &owner,
        &defaults,
        Some(Tunables {
            slice_size: 512 << 10,
            concurrency: 3,
        }),
    )
    .unwrap();

    assert_eq!(spec.pod_template_hash, tuned.pod_template_hash);
    assert_eq!(spec.workload, tuned.workload, "tuning must not restart agents");
    assert_eq!(spec.client_service, tuned.client_service);
    assert_eq!(spec.pod_disruption_budget, tuned.pod_disruption_budget);
    assert_ne!(spec.config_hash, tuned.config_hash);
    assert_ne!(
        spec.config_map.metadata.annotations.as_ref().unwrap()[DESIRED_HASH],
        tuned.config_map.metadata.annotations.as_ref().unwrap()[DESIRED_HASH]
    );
    let config = parsed_config(&tuned);
    assert_eq!(config.tunables.slice_size, ByteSize::kib(512));
    assert_eq!(config.tunables.concurrency, 3);
    assert_eq!(tuned.agent_config, config);
    // Everything else is the spec's, unchanged.
    let from_spec = parsed_config(&spec);
    assert_eq!(config.tunables.retries, from_spec.tunables.retries);
    assert_eq!(config.origin, from_spec.origin);
    assert_eq!(config.cache, from_spec.cache);
    // No values given: exactly what build renders.
    let none = build::build_tuned(&validated, &owner, &defaults, None).unwrap();
    assert_eq!(none.config_map, spec.config_map);
}

#[test]
fn generation_bump_alone_changes_no_desired_hash() {
    let before = load("minimal.yaml");
    let mut after = before.clone();
    after.metadata.generation = Some(9);
    let (a, b) = (build_cache(&before), build_cache(&after));
    let hash = |d: &DesiredState| d.config_map.metadata.annotations.as_ref().unwrap()[DESIRED_HASH].clone();
    assert_eq!(hash(&a), hash(&b));
    assert_eq!(a.workload, b.workload);
}

#[test]
fn restart_relevant_changes_alter_the_pod_template_hash() {
    let base = load("production-nvme.yaml");
    let base_hash = build_cache(&base).pod_template_hash;

    let mut image = base.clone();
    image.spec.image = Some("slicecache/slicecache-agent:9.9.9".into());
    let mut memory = base.clone();
    memory.spec.cache.as_mut().unwrap().memory = Some(ByteSize::gib(4));
    let mut devices = base.clone();
    devices
        .spec
        .cache
        .as_mut()
        .unwrap()
        .disk
        .as_mut()
        .unwrap()
        .devices
        .pop();
    let mut placement = base.clone();
    placement.spec.placement.as_mut().unwrap().node_selector = None;
    let mut origin = base.clone();
    origin.spec.origin.url = "https://other.example.com".into();

    for (what, changed) in [
        ("image", image),
        ("memory", memory),
        ("devices", devices),
        ("placement", placement),
        ("origin", origin),
    ] {
        let desired = build_cache(&changed);
        assert_ne!(desired.pod_template_hash, base_hash, "{what} must restart the agents");
        let annotations = daemon_set(&desired)
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap();
        assert_eq!(
            annotations.annotations.as_ref().unwrap()[POD_TEMPLATE_HASH],
            desired.pod_template_hash
        );
    }
}

#[test]
fn explicit_devices_are_block_device_host_paths_mounted_at_the_same_path() {
    let cache = load("production-nvme.yaml");
    let desired = build_cache(&cache);
    let pod = daemon_set(&desired)
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let container = agent(&desired.workload);
    for path in &cache.spec.cache.as_ref().unwrap().disk.as_ref().unwrap().devices {
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.host_path.as_ref().is_some_and(|h| &h.path == path))
            .unwrap_or_else(|| panic!("no hostPath volume for {path}"));
        assert_eq!(volume.host_path.as_ref().unwrap().type_.as_deref(), Some("BlockDevice"));
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume.name)
            .unwrap();
        assert_eq!(&mount.mount_path, path);
    }
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(
        security.privileged,
        Some(true),
        "raw block devices need a privileged agent"
    );
}

#[test]
fn no_container_is_privileged_unless_devices_need_it() {
    for name in ["minimal.yaml", "file-backed.yaml"] {
        let desired = build_cache(&load(name));
        let container = agent(&desired.workload);
        let security = container.security_context.as_ref().unwrap();
        assert_ne!(security.privileged, Some(true), "{name}");
        assert_eq!(security.allow_privilege_escalation, Some(false), "{name}");
        assert_eq!(security.read_only_root_filesystem, Some(true), "{name}");
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..]),
            "{name}"
        );
    }
    let minimal = build_cache(&load("minimal.yaml"));
    assert_eq!(
        agent(&minimal.workload)
            .security_context
            .as_ref()
            .unwrap()
            .run_as_non_root,
        Some(true)
    );
}

#[test]
fn host_path_file_mounts_its_directory() {
    let desired = build_cache(&load("file-backed.yaml"));
    let pod = daemon_set(&desired)
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let volume = pod.volumes.iter().flatten().find(|v| v.name == "device-file").unwrap();
    let host_path = volume.host_path.as_ref().unwrap();
    assert_eq!(host_path.path, "/var/lib/slicecache");
    assert_eq!(host_path.type_.as_deref(), Some("DirectoryOrCreate"));
    let config = parsed_config(&desired);
    assert_eq!(config.cache.devices[0].path, "/var/lib/slicecache/artifacts.img");
    assert_eq!(config.cache.devices[0].size, Some(ByteSize::gib(50)));
}

#[test]
fn device_filter_mounts_dev_and_passes_the_filter_in_the_config() {
    let mut cache = load("minimal.yaml");
    cache.spec.cache = Some(serde_yaml_ng::from_str("disk:\n  deviceFilter: ^nvme[0-9]+n1$\n").unwrap());
    let desired = build_cache(&cache);
    let container = agent(&desired.workload);
    let dev = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/dev")
        .unwrap();
    assert_eq!(dev.read_only, Some(true));
    assert_eq!(container.security_context.as_ref().unwrap().privileged, Some(true));
    assert_eq!(
        parsed_config(&desired).cache.device_filter.as_deref(),
        Some("^nvme[0-9]+n1$")
    );
}

#[test]
fn every_object_is_owned_and_labelled() {
    let cache = load("production-nvme.yaml");
    let desired = build_cache(&cache);
    for value in desired.to_values().unwrap() {
        let meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
            serde_json::from_value(value["metadata"].clone()).unwrap();
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "SliceCache");
        assert_eq!(owner.api_version, "slicecache.io/v1alpha1");
        assert_eq!(owner.name, "video-edge");
        assert_eq!(owner.uid, "5f0c3c1e-0000-4000-8000-000000000001");
        assert_eq!(owner.controller, Some(true));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "video-edge");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "slicecache-operator");
        assert_eq!(meta.namespace.as_deref(), Some("media"));
        assert!(meta.annotations.as_ref().unwrap().contains_key(DESIRED_HASH));
    }
}

#[test]
fn rollout_settings_reach_the_daemon_set() {
    let desired = build_cache(&load("production-nvme.yaml"));
    let spec = daemon_set(&desired).spec.as_ref().unwrap();
    let rolling = spec.update_strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
    assert_eq!(
        rolling.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    assert_eq!(spec.min_ready_seconds, Some(300));
    let container = agent(&desired.workload);
    assert_eq!(
        container.args.as_deref().unwrap(),
        ["run", "--config", "/etc/slicecache/agent.yaml"]
    );
    let probe = container.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(probe.path.as_deref(), Some("/readyz"));
}

/// docs/operations.md#rollout: maxUnavailable as given, never a surge, and
/// pauseBetweenNodes as minReadySeconds in whole seconds (fractions dropped).
#[test]
fn rollout_maps_to_rolling_update_and_min_ready_seconds() {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let cases = [
        ("", IntOrString::Int(1), 0),
        (
            "  rollout:\n    maxUnavailable: 25%\n    pauseBetweenNodes: 1500ms\n",
            IntOrString::String("25%".into()),
            1,
        ),
        (
            "  rollout:\n    maxUnavailable: 3\n    pauseBetweenNodes: 500ms\n",
            IntOrString::Int(3),
            0,
        ),
        ("  rollout:\n    pauseBetweenNodes: 1m30s\n", IntOrString::Int(1), 90),
    ];
    for (rollout, max_unavailable, min_ready) in cases {
        let mut cache: SliceCache = serde_yaml_ng::from_str(&format!(
            "apiVersion: slicecache.io/v1alpha1\nkind: SliceCache\nmetadata:\n  name: media\n  namespace: default\n  uid: uid-1\nspec:\n  origin:\n    url: https://media.example.com\n{rollout}"
        ))
        .unwrap();
        cache.metadata.generation = Some(1);
        let desired = build_cache(&cache);
        let spec = daemon_set(&desired).spec.as_ref().unwrap();
        let strategy = spec.update_strategy.as_ref().unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"), "{rollout}");
        let rolling = strategy.rolling_update.as_ref().unwrap();
        assert_eq!(rolling.max_unavailable.as_ref(), Some(&max_unavailable), "{rollout}");
        assert_eq!(rolling.max_surge, Some(IntOrString::Int(0)), "{rollout}");
        assert_eq!(spec.min_ready_seconds, Some(min_ready), "{rollout}");
    }
}

// === workload Deployment ===

fn media(spec_yaml: &str) -> SliceCache {
    let mut cache: SliceCache = serde_yaml_ng::from_str(&format!(
        "apiVersion: slicecache.io/v1alpha1\nkind: SliceCache\nmetadata:\n  name: media\n  namespace: default\n  uid: uid-1\nspec:\n  origin:\n    url: https://media.example.com\n{spec_yaml}"
    ))
    .unwrap();
    cache.metadata.generation = Some(1);
    cache
}

#[test]
fn deployment_wraps_the_daemon_set_pod_template() {
    let storage = "  cache:\n    disk:\n      emptyDirFile:\n        size: 1Gi\n  rollout:\n    maxUnavailable: 25%\n    pauseBetweenNodes: 30s\n";
    let ds = build_cache(&media(storage));
    let deploy = build_cache(&media(&format!("{storage}  workload: Deployment\n")));

    // One pod template, one hash: switching the workload changes only the wrapper.
    assert_eq!(ds.pod_template_hash, deploy.pod_template_hash);
    assert_eq!(ds.workload.pod_template(), deploy.workload.pod_template());
    assert_eq!(ds.config_map, deploy.config_map);
    assert_eq!(ds.client_service, deploy.client_service);
    assert_eq!(ds.pod_disruption_budget, deploy.pod_disruption_budget);

    let daemon_set = ds.workload.daemon_set().unwrap();
    let deployment = deploy.workload.deployment().expect("a Deployment");
    assert!(deploy.workload.daemon_set().is_none());
    assert_eq!(deployment.metadata.name.as_deref(), Some("media-agent"));
    assert_eq!(deployment.metadata.labels, daemon_set.metadata.labels);
    let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("SliceCache", "uid-1"));
    assert_eq!(owner.controller, Some(true));
    assert!(deployment
        .metadata
        .annotations
        .as_ref()
        .unwrap()
        .contains_key(DESIRED_HASH));

    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.selector, daemon_set.spec.as_ref().unwrap().selector);
    assert_eq!(
        deploy.workload.selector_string().as_deref(),
        Some("app.kubernetes.io/instance=media,app.kubernetes.io/name=slicecache-agent")
    );
    // Unset replicas stay out of the applied object: the autoscaler owns them.
    assert_eq!(spec.replicas, None);
    let json = serde_json::to_value(deployment).unwrap();
    assert!(json["spec"].get("replicas").is_none(), "{}", json["spec"]);
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let strategy = spec.strategy.as_ref().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.as_ref().unwrap();
    assert_eq!(rolling.max_unavailable, Some(IntOrString::String("25%".into())));
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
    assert_eq!(spec.min_ready_seconds, Some(30));

    // The last object printed is the Deployment.
    let values = deploy.to_values().unwrap();
    assert_eq!(values.last().unwrap()["kind"], "Deployment");
}

#[test]
fn deployment_takes_the_spec_replicas_and_they_change_only_the_deployment() {
    let two = build_cache(&media("  workload: Deployment\n  replicas: 2\n"));
    let five = build_cache(&media("  workload: Deployment\n  replicas: 5\n"));
    let replicas = |d: &DesiredState| d.workload.deployment().unwrap().spec.as_ref().unwrap().replicas;
    assert_eq!(replicas(&two), Some(2));
    assert_eq!(replicas(&five), Some(5));
    // Scaling is no restart: same pod template, same ConfigMap.
    assert_eq!(two.pod_template_hash, five.pod_template_hash);
    assert_eq!(two.config_map, five.config_map);
    assert_ne!(
        two.workload
            .deployment()
            .unwrap()
            .metadata
            .annotations
            .as_ref()
            .unwrap()[DESIRED_HASH],
        five.workload
            .deployment()
            .unwrap()
            .metadata
            .annotations
            .as_ref()
            .unwrap()[DESIRED_HASH],
        "a new replica count is written"
    );
}

#[test]
fn empty_dir_file_is_a_sized_empty_dir_of_an_unprivileged_pod() {
    let desired = build_cache(&media(
        "  workload: Deployment\n  cache:\n    disk:\n      emptyDirFile:\n        size: 10Gi\n",
    ));
    let pod = desired.workload.pod_template().unwrap().spec.as_ref().unwrap();
    let volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "cache-file")
        .unwrap();
    let empty_dir = volume.empty_dir.as_ref().unwrap();
    assert_eq!(empty_dir.size_limit.as_ref().unwrap().0, "10Gi");
    assert_eq!(empty_dir.medium, None, "tmpfs has no O_DIRECT");
    let container = agent(&desired.workload);
    let mount = container
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "cache-file")
        .unwrap();
    assert_eq!(mount.mount_path, slicecache_api::validate::EMPTY_DIR_FILE_DIR);
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.privileged, Some(false));
    let config = parsed_config(&desired);
    assert_eq!(config.cache.devices.len(), 1);
    assert_eq!(
        config.cache.devices[0].path,
        slicecache_api::validate::EMPTY_DIR_FILE_PATH
    );
    assert_eq!(config.cache.devices[0].size, Some(ByteSize::gib(10)));
}

#[test]
fn volume_claim_template_is_a_raw_block_ephemeral_volume() {
    let desired = build_cache(&load("autoscaled.yaml"));
    let pod = desired.workload.pod_template().unwrap().spec.as_ref().unwrap();
    let volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "cache-volume")
        .unwrap();
    let claim = volume
        .ephemeral
        .as_ref()
        .unwrap()
        .volume_claim_template
        .as_ref()
        .unwrap();
    assert_eq!(claim.spec.volume_mode.as_deref(), Some("Block"));
    assert_eq!(
        claim.spec.access_modes.as_deref(),
        Some(&["ReadWriteOnce".to_string()][..])
    );
    assert_eq!(claim.spec.storage_class_name.as_deref(), Some("fast-block"));
    let requests = claim.spec.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert_eq!(requests["storage"].0, "200Gi");
    let container = agent(&desired.workload);
    let devices = container.volume_devices.as_ref().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].name, "cache-volume");
    assert_eq!(devices[0].device_path, slicecache_api::validate::BLOCK_VOLUME_PATH);
    // Root to open the root-owned device node, nothing more.
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_user, Some(0));
    assert_eq!(security.privileged, Some(false));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    assert!(pod.volumes.as_ref().unwrap().iter().all(|v| v.host_path.is_none()));
    let config = parsed_config(&desired);
    assert_eq!(config.cache.devices.len(), 1);
    assert_eq!(
        config.cache.devices[0].path,
        slicecache_api::validate::BLOCK_VOLUME_PATH
    );
    assert_eq!(config.cache.devices[0].size, None, "the agent uses the whole volume");
    assert_eq!(
        desired.workload.deployment().unwrap().spec.as_ref().unwrap().replicas,
        Some(2)
    );
}

#[test]
fn fleet_mode_adds_the_peer_port_token_and_the_right_to_read_endpointslices() {
    let desired = build_cache(&load("fleet.yaml"));
    let fleet = desired.fleet.as_ref().expect("fleet objects");

    // The agents may read EndpointSlices, and nothing else.
    let rules = fleet.role.rules.as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].api_groups.as_deref(),
        Some(&["discovery.k8s.io".to_string()][..])
    );
    assert_eq!(rules[0].resources.as_deref(), Some(&["endpointslices".to_string()][..]));
    assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
    let subject = &fleet.role_binding.subjects.as_ref().unwrap()[0];
    assert_eq!(subject.name, desired.names.service_account);
    assert_eq!(
        fleet.role_binding.role_ref.name,
        fleet.role.metadata.name.clone().unwrap()
    );
    assert!(fleet.peer_token.data.is_none(), "the token is made once, at creation");

    // The config names the peers Service and the mounted token.
    let config = parsed_config(&desired);
    assert_eq!(config.fleet.peers_service.as_deref(), Some("models-peers"));
    assert_eq!(config.fleet.granule, ByteSize::mib(4));
    let token_file = config.fleet.peer_token_file.clone().unwrap();

    // The peer port is on the container and the peers Service.
    let container = agent(&desired.workload);
    let ports: Vec<_> = container
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert!(ports.contains(&("peer".to_string(), 8081)), "{ports:?}");
    let service_ports: Vec<_> = desired
        .peer_service
        .spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone())
        .collect();
    assert!(service_ports.contains(&"peer".to_string()), "{service_ports:?}");

    // The member name is the node's; the token is mounted where the config says.
    let env: Vec<_> = container
        .env
        .iter()
        .flatten()
        .map(|e| {
            let field = e
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.clone());
            (e.name.clone(), field)
        })
        .collect();
    assert!(
        env.contains(&("NODE_NAME".to_string(), Some("spec.nodeName".to_string()))),
        "{env:?}"
    );
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "peer-token")
        .expect("token mount");
    assert!(
        token_file.starts_with(&mount.mount_path),
        "{token_file} under {}",
        mount.mount_path
    );
    let pod = desired.workload.pod_template().unwrap().spec.as_ref().unwrap();
    assert_eq!(
        pod.automount_service_account_token,
        Some(true),
        "the agents watch the API"
    );
    let volume = pod.volumes.iter().flatten().find(|v| v.name == "peer-token").unwrap();
    assert_eq!(
        volume.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("models-peer-token")
    );
}

#[test]
fn without_fleet_mode_nothing_of_it_is_built() {
    let desired = build_cache(&load("minimal.yaml"));
    assert!(desired.fleet.is_none());
    assert!(!parsed_config(&desired).fleet.enabled());
    let container = agent(&desired.workload);
    assert!(container
        .ports
        .iter()
        .flatten()
        .all(|p| p.name.as_deref() != Some("peer")));
    assert!(container.env.is_none());
    let pod = desired.workload.pod_template().unwrap().spec.as_ref().unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
}
