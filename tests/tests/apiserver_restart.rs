//! kube-apiserver stopped and started again under a running operator: the
//! operator keeps running, the SliceCache keeps its status, and the
//! operator's watches come back (a spec change made after the restart is
//! reconciled).

use std::time::Duration;

use slicecache_e2e::{
    control_plane::Component,
    install::{condition, ready},
    scene::Scene,
};
use slicecache_testkit::origin::{pattern, OriginObject};

fn concurrency(n: u32) -> String {
    format!("  slicing:\n    concurrency: {n}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_survives_an_apiserver_restart_and_keeps_reconciling() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut scene = Scene::start(dir.path(), "apiserver-restart").await;
    scene
        .origin
        .state
        .put("/obj", OriginObject::new(pattern(1 << 20, 3), "v1"));
    scene.apply("media", &concurrency(4));
    let before = scene
        .wait_for_cache("media", "Ready", Duration::from_secs(60), ready)
        .await;

    scene.install.control_plane.restart(Component::Apiserver).await;

    // The operator is still running, and the status survived.
    scene.install.operator.assert_healthy();
    let after = scene.cache("media").expect("the SliceCache");
    assert!(ready(&after), "status lost across the restart: {after}");
    assert_eq!(
        condition(&after, "Ready").map(|c| c["observedGeneration"].clone()),
        condition(&before, "Ready").map(|c| c["observedGeneration"].clone()),
    );
    // Its watches are back: a change made now is reconciled.
    scene.apply("media", &concurrency(6));
    scene
        .wait_for_cache(
            "media",
            "status.effective.concurrency 6 after the restart",
            Duration::from_secs(90),
            |c| ready(c) && c["status"]["effective"]["concurrency"] == 6,
        )
        .await;
    scene.install.operator.assert_healthy();
    scene.shutdown().await;
}
