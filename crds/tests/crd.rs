//! The generated CRD: committed copy, names, printer columns, structural
//! schema, and its CEL rules evaluated client-side as the apiserver would.

use std::path::PathBuf;

use serde_json::{json, Value};
use slicecache_api::crd::{crd, crd_yaml, CRD_FILE_NAME};

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("generated")
        .join(CRD_FILE_NAME)
}

fn schema() -> Value {
    let crd = crd();
    let version = &crd.spec.versions[0];
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("CRD has an openAPIV3Schema");
    serde_json::to_value(schema).expect("schema serialises")
}

/// The schema node at a dotted path of property names (`spec.cache.disk`).
fn node(schema: &Value, path: &str) -> Value {
    path.split('.')
        .try_fold(schema, |n, key| n.get("properties")?.get(key))
        .unwrap_or_else(|| panic!("no schema node at {path}"))
        .clone()
}

fn rules(schema: &Value, path: &str) -> Vec<String> {
    node(schema, path)
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .map(|rules| {
            rules
                .iter()
                .filter_map(|r| r.get("rule").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn committed_crd_is_up_to_date() {
    let path = committed_path();
    let generated = crd_yaml();
    if std::env::var_os("SLICECACHE_UPDATE_CRD").is_some() {
        std::fs::write(&path, &generated).expect("write the generated CRD");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/generated/{CRD_FILE_NAME} is stale; regenerate it with\n  \
         cargo run -p slicecache-api --bin crdgen > crds/generated/{CRD_FILE_NAME}\n\
         (or run this test with SLICECACHE_UPDATE_CRD=1)"
    );
}

#[test]
fn committed_crd_parses_back_to_the_same_definition() {
    let text = crd_yaml();
    let parsed: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_yaml_ng::from_str(&text).expect("CRD YAML parses");
    assert_eq!(parsed, crd());
    // kubectl reads YAML 1.1, where a bare Off is the boolean false.
    assert!(text.contains("- 'Off'"), "the enum value Off must be quoted");
}

#[test]
fn names_scope_and_subresources() {
    let crd = crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("slicecaches.slicecache.io"));
    assert_eq!(crd.spec.group, "slicecache.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    let names = &crd.spec.names;
    assert_eq!(names.kind, "SliceCache");
    assert_eq!(names.plural, "slicecaches");
    assert_eq!(names.singular.as_deref(), Some("slicecache"));
    assert_eq!(names.short_names.as_deref(), Some(&["slc".to_string()][..]));
    assert_eq!(names.categories.as_deref(), Some(&["slicecache".to_string()][..]));

    assert_eq!(crd.spec.versions.len(), 1);
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.served && v.storage);
    let sub = v.subresources.as_ref().expect("subresources");
    assert!(sub.status.is_some(), "status subresource");
    let scale = sub.scale.as_ref().expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(scale.label_selector_path.as_deref(), Some(".status.selector"));
    // The paths point at fields the schema has, of the types /scale needs.
    let schema = schema();
    assert_eq!(node(&schema, "spec.replicas")["type"], "integer");
    assert_eq!(node(&schema, "status.replicas")["type"], "integer");
    assert_eq!(node(&schema, "status.selector")["type"], "string");
}

#[test]
fn printer_columns() {
    let crd = crd();
    let columns = crd.spec.versions[0]
        .additional_printer_columns
        .clone()
        .unwrap_or_default();
    let default_columns: Vec<(&str, &str, &str)> = columns
        .iter()
        .filter(|c| c.priority.unwrap_or(0) == 0)
        .map(|c| (c.name.as_str(), c.type_.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        default_columns,
        vec![
            ("Ready", "string", ".status.conditions[?(@.type==\"Ready\")].status"),
            ("Nodes", "integer", ".status.nodes.ready"),
            ("Slice", "string", ".status.effective.sliceSize"),
            ("Concurrency", "integer", ".status.effective.concurrency"),
            ("Hit%", "string", ".status.hitRatio"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ]
    );
    // Every column points at a field the schema has.
    let schema = schema();
    for c in &columns {
        let path = c.json_path.trim_start_matches('.');
        if path.starts_with("metadata") || path.starts_with("status.conditions") {
            continue;
        }
        node(&schema, path);
    }
}

#[test]
fn cel_rules_sit_where_fields_constrain_each_other() {
    let s = schema();
    let has = |path: &str, needle: &str| {
        let found = rules(&s, path);
        assert!(
            found.iter().any(|r| r.contains(needle)),
            "{path}: no rule containing {needle:?} in {found:?}"
        );
    };
    has("spec.cleanup", "yes-really-wipe-cache-devices");
    has("spec", "self.workload == 'Deployment'");
    has("spec", "!has(self.cache.disk.hostPathFile)");
    has("spec.cache.disk", "has(self.deviceFilter)");
    has("spec.tuning", "self.minConcurrency <= self.maxConcurrency");
    has("spec.tuning", "has(self.prometheus)");
    has("spec.tuning", "!has(self.minSliceSize) || !has(self.maxSliceSize)");
    has("spec.rollout.maxUnavailable", "self == int(string(self))");
    for path in [
        "spec.slicing.sliceSize",
        "spec.tuning.minSliceSize",
        "spec.tuning.maxSliceSize",
    ] {
        has(path, "67108864");
    }
    for path in [
        "spec.cache.memory",
        "spec.slicing.minObjectSize",
        "spec.cache.disk.hostPathFile.size",
    ] {
        has(path, "string(self).matches('^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$')");
    }
}

#[test]
fn ranges_enums_and_patterns() {
    let s = schema();
    let check = |path: &str, key: &str, want: Value| {
        assert_eq!(node(&s, path).get(key), Some(&want), "{path}.{key}");
    };
    check("spec.slicing.concurrency", "minimum", json!(1.0));
    check("spec.slicing.concurrency", "maximum", json!(64.0));
    check("spec.slicing.retries", "maximum", json!(10.0));
    check("spec.tuning.minConcurrency", "minimum", json!(1.0));
    check("spec.tuning.maxConcurrency", "maximum", json!(64.0));
    check("spec.service.port", "maximum", json!(65535.0));
    check("spec.tuning.mode", "enum", json!(["Off", "Recommend", "Auto"]));
    check(
        "spec.service.type",
        "enum",
        json!(["ClusterIP", "NodePort", "LoadBalancer"]),
    );
    check(
        "spec.cache.disk.format",
        "enum",
        json!(["IfNotOwned", "Never", "Overwrite"]),
    );
    check("spec.origin.url", "pattern", json!(r"^https?://[^\s/?#]+([/?#]\S*)?$"));
    check("spec", "required", json!(["origin"]));
    check("status.conditions", "x-kubernetes-list-type", json!("map"));
    check("status.conditions", "x-kubernetes-list-map-keys", json!(["type"]));
}

#[test]
fn every_spec_and_status_field_has_a_description() {
    fn walk(n: &Value, path: &str, missing: &mut Vec<String>) {
        // Embedded Kubernetes types document themselves.
        if ["affinity", "tolerations", "resources", "conditions"]
            .iter()
            .any(|k| path.ends_with(k))
        {
            return;
        }
        if let Some(props) = n.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                let p = format!("{path}.{k}");
                if v.get("description").is_none() {
                    missing.push(p.clone());
                }
                walk(v, &p, missing);
            }
        }
        if let Some(items) = n.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
    }
    let s = schema();
    let mut missing = Vec::new();
    walk(&node(&s, "spec"), "spec", &mut missing);
    walk(&node(&s, "status"), "status", &mut missing);
    assert!(missing.is_empty(), "fields without a description: {missing:?}");
}

/// The parts of the structural-schema rules a derive can break: every node
/// has a type (or is int-or-string), nothing under a junctor declares type,
/// description, default or nullable, and no `$ref` survives.
#[test]
fn schema_is_structural() {
    fn walk(n: &Value, path: &str, in_junctor: bool, errors: &mut Vec<String>) {
        let Some(obj) = n.as_object() else { return };
        if obj.contains_key("$ref") {
            errors.push(format!("{path}: $ref"));
        }
        if in_junctor {
            for key in ["type", "description", "default", "nullable", "additionalProperties"] {
                if obj.contains_key(key) {
                    errors.push(format!("{path}: {key} inside anyOf/allOf/oneOf/not"));
                }
            }
        } else if !obj.contains_key("type")
            && obj.get("x-kubernetes-int-or-string") != Some(&json!(true))
            && obj.get("x-kubernetes-preserve-unknown-fields") != Some(&json!(true))
        {
            errors.push(format!("{path}: no type"));
        }
        for junctor in ["anyOf", "allOf", "oneOf"] {
            for (i, sub) in obj
                .get(junctor)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                walk(sub, &format!("{path}.{junctor}[{i}]"), true, errors);
            }
        }
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), in_junctor, errors);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(sub) = obj.get(key).filter(|v| v.is_object()) {
                walk(sub, &format!("{path}.{key}"), in_junctor, errors);
            }
        }
    }
    let mut errors = Vec::new();
    walk(&schema(), "", false, &mut errors);
    assert!(errors.is_empty(), "{errors:#?}");
}

// === CEL, evaluated with kube-cel ===

fn object(spec: Value) -> Value {
    json!({
        "apiVersion": "slicecache.io/v1alpha1",
        "kind": "SliceCache",
        "metadata": { "name": "edge", "namespace": "default" },
        "spec": spec,
    })
}

fn cel(spec: Value) -> Result<(), String> {
    kube_cel::Validator::new()
        .validate(&schema(), &object(spec), None)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
}

fn origin() -> Value {
    json!({ "url": "https://media.example.com" })
}

fn with(key: &str, value: Value) -> Value {
    let mut spec = json!({ "origin": origin() });
    spec[key] = value;
    spec
}

fn assert_cel_rejects(spec: Value, needle: &str) {
    match cel(spec.clone()) {
        Ok(()) => panic!("CEL should reject {spec}"),
        Err(e) => assert!(e.contains(needle), "{e:?} should contain {needle:?}"),
    }
}

#[test]
fn every_cel_rule_compiles() {
    fn walk(c: &kube_cel::CompiledSchema, errors: &mut Vec<String>) {
        errors.extend(c.compilation_errors().iter().map(|e| e.to_string()));
        c.properties.values().for_each(|p| walk(p, errors));
        c.items.iter().for_each(|i| walk(i, errors));
        c.additional_properties.iter().for_each(|a| walk(a, errors));
    }
    let compiled = kube_cel::compile_schema(&schema());
    let mut errors = Vec::new();
    walk(&compiled, &mut errors);
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn cel_accepts_minimal_and_full_specs() {
    cel(json!({ "origin": origin() })).expect("minimal");
    cel(json!({
        "origin": { "url": "https://media.example.com", "maxConnectionsPerAgent": 64 },
        "slicing": { "sliceSize": "1024Ki", "concurrency": 8, "minObjectSize": 0 },
        "cache": {
            "memory": "2Gi",
            "disk": { "devices": ["/dev/disk/by-id/nvme-a"], "useAllDevices": false,
                      "hostPathFile": { "path": "/var/lib/slicecache/cache.img", "size": 10737418240u64 } },
        },
        "tuning": { "mode": "Auto", "prometheus": { "url": "http://prom:9090" },
                    "minSliceSize": 65536, "maxSliceSize": "64Mi", "minConcurrency": 2, "maxConcurrency": 32 },
        "rollout": { "maxUnavailable": "25%" },
        "cleanup": { "wipeDevicesOnDelete": true, "confirmation": "yes-really-wipe-cache-devices" },
    }))
    .expect("full");
}

#[test]
fn cel_wipe_needs_confirmation() {
    let needle = "wipeDevicesOnDelete requires confirmation";
    assert_cel_rejects(with("cleanup", json!({ "wipeDevicesOnDelete": true })), needle);
    assert_cel_rejects(
        with("cleanup", json!({ "wipeDevicesOnDelete": true, "confirmation": "yes" })),
        needle,
    );
    cel(with("cleanup", json!({ "wipeDevicesOnDelete": false }))).expect("off needs no confirmation");
}

#[test]
fn cel_replicas_and_node_storage_need_the_right_workload() {
    let spec = |extra: Value| {
        let mut spec = json!({ "origin": origin() });
        for (k, v) in extra.as_object().expect("object") {
            spec[k] = v.clone();
        }
        spec
    };
    let replicas = "replicas applies only to workload: Deployment";
    assert_cel_rejects(spec(json!({ "replicas": 2 })), replicas);
    assert_cel_rejects(spec(json!({ "workload": "DaemonSet", "replicas": 2 })), replicas);
    cel(spec(json!({ "workload": "Deployment", "replicas": 2 }))).expect("Deployment takes replicas");
    cel(spec(json!({ "workload": "Deployment" }))).expect("replicas may stay unset");

    let node_storage = "workload: Deployment cannot use storage of the node";
    for disk in [
        json!({ "devices": ["/dev/sdb"] }),
        json!({ "deviceFilter": "^nvme" }),
        json!({ "useAllDevices": true }),
        json!({ "hostPathFile": { "path": "/var/lib/slicecache/cache.img", "size": "1Gi" } }),
    ] {
        assert_cel_rejects(
            spec(json!({ "workload": "Deployment", "cache": { "disk": disk.clone() } })),
            node_storage,
        );
        cel(spec(json!({ "cache": { "disk": disk } }))).expect("a DaemonSet uses storage of the node");
    }
    for disk in [
        json!({ "emptyDirFile": { "size": "10Gi" } }),
        json!({ "volumeClaimTemplate": { "storageClassName": "fast-block", "size": "100Gi" } }),
        json!({ "useAllDevices": false, "devices": [] }),
    ] {
        cel(spec(
            json!({ "workload": "Deployment", "replicas": 3, "cache": { "disk": disk } }),
        ))
        .expect("storage of the pod");
    }
}

#[test]
fn cel_device_selection_is_exclusive() {
    let needle = "at most one of devices, deviceFilter and useAllDevices";
    let disk = |d: Value| with("cache", json!({ "disk": d }));
    assert_cel_rejects(disk(json!({ "devices": ["/dev/sdb"], "deviceFilter": "^sd" })), needle);
    assert_cel_rejects(disk(json!({ "devices": ["/dev/sdb"], "useAllDevices": true })), needle);
    assert_cel_rejects(disk(json!({ "deviceFilter": "^sd", "useAllDevices": true })), needle);
    cel(disk(
        json!({ "devices": [], "deviceFilter": "^sd", "useAllDevices": false }),
    ))
    .expect("one selection");
}

#[test]
fn cel_tuning_rules() {
    assert_cel_rejects(
        with("tuning", json!({ "minConcurrency": 16, "maxConcurrency": 8 })),
        "minConcurrency must not exceed maxConcurrency",
    );
    for (min, max) in [
        (json!("4Mi"), json!("1Mi")),
        (json!("2Mi"), json!("1024Ki")),
        (json!(262144), json!("128Ki")),
    ] {
        assert_cel_rejects(
            with("tuning", json!({ "minSliceSize": min, "maxSliceSize": max })),
            "minSliceSize must not exceed maxSliceSize",
        );
    }
    for (min, max) in [
        (json!("1Mi"), json!("1Mi")),
        (json!("512Ki"), json!("1Mi")),
        (json!(65536), json!("64Mi")),
    ] {
        cel(with("tuning", json!({ "minSliceSize": min, "maxSliceSize": max }))).expect("min <= max");
    }
    for mode in ["Recommend", "Auto"] {
        assert_cel_rejects(with("tuning", json!({ "mode": mode })), "need prometheus.url");
    }
    cel(with("tuning", json!({ "mode": "Off" }))).expect("Off needs no Prometheus");
}

#[test]
fn cel_max_unavailable() {
    for bad in [
        json!(0),
        json!(-1),
        json!("0%"),
        json!("101%"),
        json!("abc"),
        json!("05%"),
        json!("5"),
    ] {
        assert_cel_rejects(
            with("rollout", json!({ "maxUnavailable": bad })),
            "must be a count of at least 1",
        );
    }
    for ok in [json!(1), json!(3), json!("1%"), json!("25%"), json!("100%")] {
        cel(with("rollout", json!({ "maxUnavailable": ok }))).expect("valid maxUnavailable");
    }
}

#[test]
fn cel_slice_size_edges() {
    // The message names the rejected value, then the rule.
    let needle = "is not a power of two from 64Ki to 64Mi";
    for ok in [
        json!("64Ki"),
        json!(65536),
        json!("65536"),
        json!("1024Ki"),
        json!("1Mi"),
        json!("64Mi"),
        json!(67108864),
    ] {
        cel(with("slicing", json!({ "sliceSize": ok.clone() }))).unwrap_or_else(|e| panic!("{ok}: {e}"));
        cel(with(
            "tuning",
            json!({ "minSliceSize": ok.clone(), "maxSliceSize": ok.clone() }),
        ))
        .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        json!("32Ki"),
        json!("3Mi"),
        json!("128Mi"),
        json!(3145728),
        json!("1M"),
        json!("1Gi"),
        json!(0),
    ] {
        assert_cel_rejects(with("slicing", json!({ "sliceSize": bad.clone() })), needle);
        assert_cel_rejects(with("tuning", json!({ "maxSliceSize": bad })), needle);
    }
}

#[test]
fn cel_byte_sizes_reject_garbage() {
    let needle = "is not a whole number of bytes or a quantity";
    for bad in [json!("lots"), json!(-1), json!("1.5Gi"), json!("+1Mi"), json!("1mi")] {
        assert_cel_rejects(with("cache", json!({ "memory": bad.clone() })), needle);
        // The value itself, which the API server's "Invalid value" omits.
        let shown = bad.as_str().map_or_else(|| bad.to_string(), str::to_string);
        assert_cel_rejects(
            with("cache", json!({ "memory": bad })),
            &format!("spec.cache.memory: {shown} is not"),
        );
    }
    for ok in [json!("512Mi"), json!(1073741824u64), json!("2G")] {
        cel(with("cache", json!({ "memory": ok }))).expect("valid memory size");
    }
}

/// The CEL rules and the Rust validation layer agree on slice sizes: CEL
/// never rejects what Rust accepts (it must not lock users out), and for
/// the sizes CEL accepts, Rust agrees.
#[test]
fn cel_and_rust_agree_on_slice_sizes() {
    use slicecache_api::{SliceCacheSpec, ValidatedSliceCache};
    let mut candidates: Vec<Value> = Vec::new();
    for shift in 10..=30u32 {
        for n in [1u64 << shift, 3u64 << shift] {
            candidates.push(json!(n));
            candidates.push(json!(n.to_string()));
            if n % 1024 == 0 {
                candidates.push(json!(format!("{}Ki", n >> 10)));
            }
            if n % (1 << 20) == 0 {
                candidates.push(json!(format!("{}Mi", n >> 20)));
            }
        }
    }
    candidates.extend([json!("01Mi"), json!("0064Ki"), json!("1M"), json!("64k")]);
    for size in candidates {
        let spec_json = with("slicing", json!({ "sliceSize": size.clone() }));
        let spec: SliceCacheSpec = serde_json::from_value(spec_json.clone()).expect("spec parses");
        let rust_ok = ValidatedSliceCache::new(&spec).is_ok();
        let cel_ok = cel(spec_json).is_ok();
        assert_eq!(cel_ok, rust_ok, "sliceSize {size}: CEL {cel_ok}, Rust {rust_ok}");
    }
}

/// Every `format` in the schema is one Kubernetes knows: schemars' `uint8`
/// ... `uint64` made kube-apiserver warn on each apply of the CRD.
#[test]
fn every_format_is_one_kubernetes_knows() {
    fn walk(n: &Value, path: &str, unknown: &mut Vec<String>) {
        match n {
            Value::Object(obj) => {
                if let Some(Value::String(f)) = obj.get("format") {
                    let known = [
                        "int32",
                        "int64",
                        "float",
                        "double",
                        "byte",
                        "date",
                        "date-time",
                        "duration",
                    ];
                    if !known.contains(&f.as_str()) {
                        unknown.push(format!("{path}: {f}"));
                    }
                }
                for (k, v) in obj {
                    walk(v, &format!("{path}.{k}"), unknown);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, &format!("{path}[]"), unknown)),
            _ => {}
        }
    }
    let mut unknown = Vec::new();
    walk(&schema(), "", &mut unknown);
    assert!(unknown.is_empty(), "formats Kubernetes does not know: {unknown:?}");
}
