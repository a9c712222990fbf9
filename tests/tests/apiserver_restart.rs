//! kube-apiserver stopped and started again under a running operator: the
//! operator keeps running, the SliceCache keeps its status, and the
//! operator's watches come back (a spec change made after the restart is
//! reconciled).

use std::time::Duration;

use slicecache_e2e::{
    agent_binary,
    control_plane::Component,
    install::{condition, kubectl, ready, Installation},
    node_shim::{NodeShim, ShimOptions},
    poll,
};
use slicecache_testkit::origin::{pattern, OriginObject, TestOrigin};

const NS: &str = "apiserver-restart";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_survives_an_apiserver_restart_and_keeps_reconciling() {
    let agent_bin = agent_binary();
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut install = Installation::start(dir.path()).await;
    let admin = install.admin.clone();
    let client = install.control_plane.client().await;
    let shim = NodeShim::start(client, ShimOptions::new(agent_bin, dir.path().join("shim")))
        .await
        .expect("starting the shim");
    let origin = TestOrigin::start().await.expect("an origin");
    origin.state.put("/obj", OriginObject::new(pattern(1 << 20, 3), "v1"));
    kubectl(&admin, &["create", "namespace", NS]).unwrap_or_else(|e| panic!("{e}"));
    let manifest = dir.path().join("media.yaml");
    let apply = |concurrency: u32| {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: slicecache.io/v1alpha1\nkind: SliceCache\nmetadata:\n  name: media\n  namespace: {NS}\n\
                 spec:\n  origin:\n    url: {}\n  slicing:\n    concurrency: {concurrency}\n",
                origin.url()
            ),
        )
        .expect("writing the manifest");
        kubectl(&admin, &["apply", "-f", &manifest.to_string_lossy()]).unwrap_or_else(|e| panic!("{e}"));
    };
    apply(4);
    let before = poll("SliceCache media Ready", Duration::from_secs(60), || {
        install.operator.assert_healthy();
        let cache = install.get_json(&["slicecache", "media", "-n", NS]);
        async move { cache.filter(ready) }
    })
    .await;

    install.control_plane.restart(Component::Apiserver).await;

    // The operator is still running, and the status survived.
    install.operator.assert_healthy();
    let after = install
        .get_json(&["slicecache", "media", "-n", NS])
        .expect("the SliceCache");
    assert!(ready(&after), "status lost across the restart: {after}");
    assert_eq!(
        condition(&after, "Ready").map(|c| c["observedGeneration"].clone()),
        condition(&before, "Ready").map(|c| c["observedGeneration"].clone()),
    );
    // Its watches are back: a change made now is reconciled.
    apply(6);
    poll(
        "status.effective.concurrency 6 after the restart",
        Duration::from_secs(90),
        || {
            install.operator.assert_healthy();
            let cache = install.get_json(&["slicecache", "media", "-n", NS]);
            async move { cache.filter(|c| ready(c) && c["status"]["effective"]["concurrency"] == 6) }
        },
    )
    .await;
    install.operator.assert_healthy();
    shim.shutdown().await;
}
