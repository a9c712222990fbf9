//! An agent killed on a real control plane: the node shim restarts it as
//! the DaemonSet's `restartPolicy` says, the SliceCache turns Ready again,
//! and the agent's disk cache (a hostPathFile on its node) survives: the
//! restarted process serves the object from disk, with nothing from the
//! origin.

use std::time::Duration;

use slicecache_e2e::{
    install::{pod_port, ready},
    metric_sum, poll,
    scene::Scene,
};
use slicecache_testkit::{
    client::HttpClient,
    origin::{pattern, OriginObject},
};

const NS: &str = "restart";
const OBJECT_LEN: usize = (6 << 20) + 99;

async fn metrics(admin: std::net::SocketAddr) -> Option<String> {
    let resp = HttpClient::new(admin).get("/metrics", &[]).await.ok()?;
    (resp.status == 200).then(|| String::from_utf8_lossy(&resp.body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_agent_is_restarted_and_serves_from_the_disk_it_left() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut scene = Scene::start(dir.path(), NS).await;
    let body = pattern(OBJECT_LEN, 8);
    scene.origin.state.put("/obj", OriginObject::new(body.clone(), "v1"));
    scene.apply(
        "media",
        "  slicing:\n    sliceSize: 1Mi\n  cache:\n    memory: 64Mi\n    disk:\n      hostPathFile:\n        \
         path: /var/lib/slicecache/media.img\n        size: 256Mi\n",
    );
    scene
        .wait_for_cache("media", "Ready", Duration::from_secs(60), ready)
        .await;
    let pod = scene.agent_pods("media").first().cloned().expect("an agent pod");
    let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let http = pod_port(&pod, "http").unwrap_or_else(|| panic!("a client address: {pod}"));
    let admin_addr = pod_port(&pod, "admin").unwrap_or_else(|| panic!("an admin address: {pod}"));

    // Fill its disk, and wait until every slice is on the device: the disk
    // tier writes its region buffers within a second (flushInterval), and a
    // SIGKILL loses what is still in them.
    let resp = HttpClient::new(http).get("/obj", &[]).await.expect("a cold read");
    assert!(resp.status == 200 && resp.body == body, "cold read");
    poll(
        "the slices written to the device",
        Duration::from_secs(30),
        || async move {
            let text = metrics(admin_addr).await?;
            (metric_sum(&text, "slicecache_disk_device_written_bytes_total", &[]) >= OBJECT_LEN as f64).then_some(())
        },
    )
    .await;

    // Kill it: the shim restarts it, and the SliceCache is Ready again.
    let pid = scene.shim.pid(NS, &name).expect("a process");
    assert!(scene.shim.kill(NS, &name), "killing {name}");
    poll(&format!("{name} restarted"), Duration::from_secs(60), || {
        let info = scene.shim.pod(NS, &name);
        async move { info.filter(|i| i.restarts >= 1 && i.pid.is_some_and(|p| p != pid) && i.ready) }
    })
    .await;
    scene
        .wait_for_cache("media", "Ready again", Duration::from_secs(60), ready)
        .await;

    // The new process serves the object from the disk its predecessor filled.
    let resp = HttpClient::new(http)
        .get("/obj", &[])
        .await
        .expect("a read after the restart");
    assert!(resp.status == 200 && resp.body == body, "read after the restart");
    let text = metrics(admin_addr).await.expect("metrics after the restart");
    assert_eq!(
        metric_sum(&text, "slicecache_origin_bytes_total", &[]),
        0.0,
        "the restarted agent went to the origin"
    );
    assert!(metric_sum(&text, "slicecache_slices_total", &[("result", "hit"), ("tier", "disk")]) >= 6.0);
    scene.install.operator.assert_healthy();
    scene.shutdown().await;
}
