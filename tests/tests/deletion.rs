//! Deleting a SliceCache on a real control plane: the operator's finalizer
//! runs and is released, and the real garbage collector (in the
//! kube-controller-manager) removes every object the SliceCache owned.
//! Devices are never wiped unless `spec.cleanup` asks with its
//! confirmation: deleting a SliceCache on raw devices creates no wipe Job.

use std::time::Duration;

use slicecache_e2e::{
    install::{kubectl, Installation},
    poll,
};

const NS: &str = "deletion";
const OWNED: [&str; 5] = [
    "daemonset/media-agent",
    "configmap/media-agent-config",
    "service/media",
    "service/media-peers",
    "serviceaccount/media-agent",
];

fn exists(admin: &std::path::Path, object: &str) -> bool {
    kubectl(admin, &["get", object, "-n", NS, "--ignore-not-found", "-o", "name"])
        .is_ok_and(|out| !out.trim().is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_slicecache_releases_its_finalizer_and_the_garbage_collector_removes_its_objects() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut install = Installation::start(dir.path()).await;
    let admin = install.admin.clone();
    kubectl(&admin, &["create", "namespace", NS]).unwrap_or_else(|e| panic!("{e}"));
    // Raw devices, no wipe asked for.
    let manifest = dir.path().join("media.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: slicecache.io/v1alpha1\nkind: SliceCache\nmetadata:\n  name: media\n  namespace: {NS}\n\
             spec:\n  origin:\n    url: http://origin.example.com\n  cache:\n    disk:\n      devices: [/dev/nvme9n1]\n"
        ),
    )
    .expect("writing the manifest");
    kubectl(&admin, &["apply", "-f", &manifest.to_string_lossy()]).unwrap_or_else(|e| panic!("{e}"));
    poll("the objects of SliceCache media", Duration::from_secs(60), || {
        install.operator.assert_healthy();
        let all = OWNED.iter().all(|o| exists(&admin, o));
        async move { all.then_some(()) }
    })
    .await;
    let cache = install
        .get_json(&["slicecache", "media", "-n", NS])
        .expect("the SliceCache");
    let finalizers = cache["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
    assert!(!finalizers.is_empty(), "the operator adds its finalizer: {cache}");
    let uid = cache["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let ds = install
        .get_json(&["daemonset", "media-agent", "-n", NS])
        .expect("the DaemonSet");
    assert_eq!(ds["metadata"]["ownerReferences"][0]["uid"], uid.as_str(), "{ds}");

    kubectl(&admin, &["delete", "slicecache", "media", "-n", NS, "--wait=false"]).unwrap_or_else(|e| panic!("{e}"));
    poll("SliceCache media to be gone", Duration::from_secs(60), || {
        install.operator.assert_healthy();
        let gone = !exists(&admin, "slicecache/media");
        async move { gone.then_some(()) }
    })
    .await;
    poll(
        "the garbage collector to remove every owned object",
        Duration::from_secs(90),
        || {
            let left: Vec<&str> = OWNED.iter().copied().filter(|o| exists(&admin, o)).collect();
            async move { left.is_empty().then_some(()) }
        },
    )
    .await;
    // No wipe, and an Event says so.
    let events = install
        .get_json(&["events", "-n", NS, "--field-selector", "involvedObject.name=media"])
        .expect("events");
    let notes: Vec<String> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect();
    assert!(
        notes.iter().any(|n| n.contains("cache devices keep their data")),
        "no Event saying the devices keep their data: {notes:#?}"
    );
    let jobs = kubectl(&admin, &["get", "jobs", "-n", NS, "-o", "name"]).unwrap_or_default();
    assert!(
        jobs.trim().is_empty(),
        "a Job was created without the wipe confirmation: {jobs}"
    );
    install.operator.assert_healthy();
}
