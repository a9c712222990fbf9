//! Bad input on a real control plane: invalid SliceCaches are refused by
//! `kubectl apply` with a message that names the field (and the value,
//! where the schema can say it), and a SliceCache that is valid but cannot
//! be used (it names a Secret that does not exist) turns Degraded with a
//! reason and a Warning Event, while the objects it already runs stay. In a
//! namespace whose Pod Security level forbids privileged pods, a SliceCache
//! on raw devices turns Degraded with one sentence saying why and what to
//! change.

use std::time::Duration;

use slicecache_e2e::{
    install::{condition, kubectl, Installation},
    poll,
};

const NS: &str = "bad-input";

/// A SliceCache named `name` with `spec` (YAML, indented by two spaces).
fn manifest(name: &str, spec: &str) -> String {
    format!("apiVersion: slicecache.io/v1alpha1\nkind: SliceCache\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n{spec}")
}

const ORIGIN: &str = "  origin:\n    url: http://origin.example.com\n";

fn apply(admin: &std::path::Path, dir: &std::path::Path, name: &str, yaml: &str) -> Result<String, String> {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("writing a manifest");
    kubectl(admin, &["apply", "-f", &file.to_string_lossy()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_slicecaches_are_refused_and_unusable_ones_degrade() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut install = Installation::start(dir.path()).await;
    let admin = install.admin.clone();
    kubectl(&admin, &["create", "namespace", NS]).unwrap_or_else(|e| panic!("{e}"));

    // (name, spec, what the refusal must name)
    let cases: &[(&str, String, &[&str])] = &[
        ("no-origin", "  slicing:\n    concurrency: 4\n".into(), &["spec.origin"]),
        (
            "bad-url",
            "  origin:\n    url: ftp//origin\n".into(),
            &["spec.origin.url"],
        ),
        (
            "bad-quantity",
            format!("{ORIGIN}  cache:\n    memory: lots\n"),
            &["spec.cache.memory", "lots is not a whole number of bytes"],
        ),
        (
            "slice-not-power-of-two",
            format!("{ORIGIN}  slicing:\n    sliceSize: 100Ki\n"),
            &["spec.slicing.sliceSize", "100Ki is not a power of two"],
        ),
        (
            "slice-too-large",
            format!("{ORIGIN}  slicing:\n    sliceSize: 128Mi\n"),
            &[
                "spec.slicing.sliceSize",
                "128Mi is not a power of two from 64Ki to 64Mi",
            ],
        ),
        (
            "concurrency-zero",
            format!("{ORIGIN}  slicing:\n    concurrency: 0\n"),
            &["spec.slicing.concurrency"],
        ),
        (
            "retries-too-many",
            format!("{ORIGIN}  slicing:\n    retries: 11\n"),
            &["spec.slicing.retries"],
        ),
        (
            "unknown-tuning-mode",
            format!("{ORIGIN}  tuning:\n    mode: Sometimes\n"),
            &["spec.tuning.mode", "Sometimes"],
        ),
        (
            "wipe-unconfirmed",
            format!("{ORIGIN}  cleanup:\n    wipeDevicesOnDelete: true\n"),
            &["spec.cleanup.confirmation", "yes-really-wipe-cache-devices"],
        ),
        (
            "replicas-on-daemonset",
            format!("{ORIGIN}  replicas: 3\n"),
            &["spec.replicas", "workload: Deployment"],
        ),
        (
            "two-device-selections",
            format!("{ORIGIN}  cache:\n    disk:\n      devices: [/dev/nvme1n1]\n      useAllDevices: true\n"),
            &[
                "spec.cache.disk",
                "at most one of devices, deviceFilter and useAllDevices",
            ],
        ),
        (
            "unknown-field",
            format!("{ORIGIN}  slicing:\n    sliceSzie: 1Mi\n"),
            &["sliceSzie"],
        ),
    ];
    assert!(cases.len() >= 10);
    for (name, spec, needles) in cases {
        match apply(&admin, dir.path(), name, &manifest(name, spec)) {
            Ok(out) => panic!("{name}: kubectl apply accepted it: {out}"),
            Err(message) => {
                for needle in *needles {
                    assert!(message.contains(needle), "{name}: {needle:?} not in:\n{message}");
                }
                assert!(!message.contains("Status {"), "{name}: a Debug dump:\n{message}");
            }
        }
    }
    // None of them exists.
    let listed = kubectl(&admin, &["get", "slicecaches", "-n", NS, "-o", "name"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(listed.trim().is_empty(), "refused SliceCaches exist: {listed}");

    // Valid and running (no nodes are needed for its objects to exist)...
    apply(&admin, dir.path(), "media", &manifest("media", ORIGIN)).unwrap_or_else(|e| panic!("{e}"));
    poll("the DaemonSet of SliceCache media", Duration::from_secs(60), || {
        install.operator.assert_healthy();
        let ds = install.get_json(&["daemonset", "media-agent", "-n", NS]);
        async move { ds }
    })
    .await;
    // ...then pointed at a Secret that does not exist.
    let broken = format!("{ORIGIN}  purgeTokenSecretRef:\n    name: no-such-secret\n");
    apply(&admin, dir.path(), "media", &manifest("media", &broken)).unwrap_or_else(|e| panic!("{e}"));
    let cache = poll("SliceCache media Degraded", Duration::from_secs(60), || {
        install.operator.assert_healthy();
        let cache = install.get_json(&["slicecache", "media", "-n", NS]);
        async move {
            cache.filter(|c| {
                let generation = c["metadata"]["generation"].as_i64();
                condition(c, "Degraded")
                    .is_some_and(|d| d["status"] == "True" && d["observedGeneration"].as_i64() == generation)
            })
        }
    })
    .await;
    let degraded = condition(&cache, "Degraded").cloned().unwrap_or_default();
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.purgeTokenSecretRef") && message.contains("no-such-secret"),
        "{degraded}"
    );
    assert!(!message.contains("Status {"), "{degraded}");
    let reason = degraded["reason"].as_str().unwrap_or_default().to_string();
    assert!(!reason.is_empty(), "{degraded}");
    let events = poll(
        "a Warning Event for the missing Secret",
        Duration::from_secs(30),
        || {
            let events = install.get_json(&[
                "events",
                "-n",
                NS,
                "--field-selector",
                "involvedObject.kind=SliceCache,involvedObject.name=media,type=Warning",
            ]);
            async move {
                events.filter(|e| {
                    e["items"].as_array().is_some_and(|items| {
                        items
                            .iter()
                            .any(|i| i["message"].as_str().unwrap_or_default().contains("no-such-secret"))
                    })
                })
            }
        },
    )
    .await;
    assert!(events["items"].as_array().is_some_and(|i| !i.is_empty()));
    // Nothing it already ran was deleted.
    for object in ["daemonset/media-agent", "configmap/media-agent-config", "service/media"] {
        kubectl(&admin, &["get", object, "-n", NS]).unwrap_or_else(|e| panic!("{object} was deleted: {e}"));
    }
    install.operator.assert_healthy();

    // Raw devices need privileged agents; a baseline namespace forbids them.
    let strict = "strict";
    kubectl(&admin, &["create", "namespace", strict]).unwrap_or_else(|e| panic!("{e}"));
    kubectl(
        &admin,
        &[
            "label",
            "namespace",
            strict,
            "pod-security.kubernetes.io/enforce=baseline",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let raw = format!("{ORIGIN}  cache:\n    disk:\n      devices: [/dev/nvme9n1]\n");
    let yaml = manifest("raw", &raw).replace(&format!("namespace: {NS}"), &format!("namespace: {strict}"));
    apply(&admin, dir.path(), "raw", &yaml).unwrap_or_else(|e| panic!("{e}"));
    let cache = poll(
        "SliceCache raw Degraded by Pod Security",
        Duration::from_secs(60),
        || {
            install.operator.assert_healthy();
            let cache = install.get_json(&["slicecache", "raw", "-n", strict]);
            async move { cache.filter(|c| condition(c, "Degraded").is_some_and(|d| d["status"] == "True")) }
        },
    )
    .await;
    let degraded = condition(&cache, "Degraded").cloned().unwrap_or_default();
    assert_eq!(degraded["reason"], "PodSecurityForbidsPrivileged", "{degraded}");
    let message = degraded["message"].as_str().unwrap_or_default();
    for needle in [
        "\"baseline\"",
        "privileged",
        "spec.cache.disk.devices",
        "pod-security.kubernetes.io/enforce=privileged",
    ] {
        assert!(message.contains(needle), "{needle} not in {message}");
    }
    assert!(!message.contains('\n') && !message.contains("Status {"), "{message}");
    // Nothing was created for it.
    let ds = kubectl(
        &admin,
        &["get", "daemonset", "raw-agent", "-n", strict, "--ignore-not-found"],
    )
    .unwrap_or_default();
    assert!(ds.trim().is_empty(), "a DaemonSet exists: {ds}");
    install.operator.assert_healthy();
}
