//! The example manifests under `examples/`: they parse, survive a YAML
//! round trip, lose no field to a typo, pass the Rust validation layer and
//! the CRD's CEL rules.

use std::path::PathBuf;

use serde_json::Value;
use slicecache_api::{
    crd::crd,
    spec::{TuningMode, WorkloadKind},
    validate::{DeviceSelection, ValidatedSliceCache},
    SliceCache,
};

const EXAMPLES: [&str; 4] = [
    "minimal.yaml",
    "production-nvme.yaml",
    "file-backed.yaml",
    "autoscaled.yaml",
];

fn read(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn parse(name: &str) -> SliceCache {
    serde_yaml_ng::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn validated(name: &str) -> ValidatedSliceCache {
    ValidatedSliceCache::new(&parse(name).spec).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every leaf path of a JSON value, e.g. `spec.cache.disk.devices[0]`.
fn leaf_paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                leaf_paths(v, &format!("{prefix}.{k}"), out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                leaf_paths(v, &format!("{prefix}[{i}]"), out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn examples_round_trip() {
    for name in EXAMPLES {
        let first = parse(name);
        let text = serde_yaml_ng::to_string(&first).expect("serialise");
        let second: SliceCache = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        assert_eq!(first, second, "{name}");
    }
}

#[test]
fn examples_keep_every_field() {
    // Unknown fields are ignored on read (the apiserver prunes them anyway), so a
    // misspelt key would vanish silently; compare what went in with what came out.
    for name in EXAMPLES {
        let raw: Value = serde_yaml_ng::from_str(&read(name)).expect("yaml");
        let typed = serde_json::to_value(parse(name)).expect("json");
        let (mut want, mut got) = (Vec::new(), Vec::new());
        leaf_paths(&raw, "", &mut want);
        leaf_paths(&typed, "", &mut got);
        let lost: Vec<_> = want.iter().filter(|p| !got.contains(p)).collect();
        assert!(lost.is_empty(), "{name}: fields not understood: {lost:?}");
    }
}

#[test]
fn examples_validate() {
    for name in EXAMPLES {
        let v = validated(name);
        // Round-trips through the agent config format too.
        let config = v.agent_config();
        let text = serde_yaml_ng::to_string(&config).expect("serialise agent config");
        let back: slicecache_api::agent_config::AgentConfig = serde_yaml_ng::from_str(&text).expect("agent config");
        assert_eq!(back, config, "{name}");
    }
}

#[test]
fn examples_pass_the_crd_cel_rules() {
    let crd = crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .map(|s| serde_json::to_value(s).expect("schema"))
        .expect("schema");
    for name in EXAMPLES {
        let object: Value = serde_yaml_ng::from_str(&read(name)).expect("yaml");
        if let Err(errors) = kube_cel::Validator::new().validate(&schema, &object, None) {
            panic!(
                "{name}: {}",
                errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            );
        }
    }
}

#[test]
fn examples_avoid_yaml11_booleans() {
    // kubectl reads YAML 1.1: a bare Off, On, yes or no becomes a boolean.
    const WORDS: [&str; 8] = ["Off", "off", "On", "on", "yes", "Yes", "no", "No"];
    for name in EXAMPLES {
        for (n, line) in read(name).lines().enumerate() {
            let line = line.split(" #").next().unwrap_or(line).trim_end();
            if line.trim_start().starts_with('#') {
                continue;
            }
            let value = line
                .rsplit_once(": ")
                .map(|(_, v)| v)
                .or_else(|| line.trim_start().strip_prefix("- "));
            if let Some(v) = value {
                assert!(!WORDS.contains(&v.trim()), "{name}:{}: quote {v:?}", n + 1);
            }
        }
    }
}

#[test]
fn examples_say_what_they_claim() {
    let minimal = validated("minimal.yaml");
    assert!(!minimal.cache().has_disk());
    assert_eq!(minimal.slicing().slice_size(), 1 << 20);

    let nvme = validated("production-nvme.yaml");
    match nvme.cache().devices() {
        DeviceSelection::Paths(paths) => {
            assert!(!paths.is_empty());
            assert!(paths.iter().all(|p| p.starts_with("/dev/disk/by-id/")), "{paths:?}");
        }
        other => panic!("expected device paths, got {other:?}"),
    }
    assert_eq!(nvme.tuning().mode(), TuningMode::Auto);
    assert!(nvme.tuning().prometheus_url().is_some());
    assert!(nvme.purge_token().is_some());
    assert!(!nvme.wipe_devices_on_delete());

    let file = validated("file-backed.yaml");
    assert!(matches!(file.cache().devices(), DeviceSelection::None));
    let f = file.cache().host_path_file().expect("hostPathFile");
    assert_eq!(f.size(), 50 << 30);
    assert_eq!(file.agent_config().cache.devices.len(), 1);

    let scaled = validated("autoscaled.yaml");
    assert_eq!(scaled.workload(), WorkloadKind::Deployment);
    assert_eq!(scaled.replicas(), Some(2));
    assert!(!scaled.cache().has_node_storage());
    let volume = scaled.cache().block_volume().expect("volumeClaimTemplate");
    assert_eq!(volume.size(), 200 << 30);
}
