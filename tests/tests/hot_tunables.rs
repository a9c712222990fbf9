//! Tunables stay hot on a real control plane: a slice-size and concurrency
//! change in the SliceCache reaches every agent through its ConfigMap
//! without a Pod restart (the node shim's process ids stay the same), the
//! caches stay warm (no origin bytes for what they held), and
//! `status.effective` shows the new values.

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

const OBJECT_LEN: usize = (3 << 20) + 777;

async fn metrics(admin: std::net::SocketAddr) -> String {
    let resp = HttpClient::new(admin)
        .get("/metrics", &[])
        .await
        .unwrap_or_else(|e| panic!("GET /metrics from {admin}: {e}"));
    String::from_utf8_lossy(&resp.body).into_owned()
}

fn slicing(slice: &str, concurrency: u32) -> String {
    format!("  slicing:\n    sliceSize: {slice}\n    concurrency: {concurrency}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tunables_change_reaches_every_agent_without_a_restart_and_keeps_the_cache_warm() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut scene = Scene::start(dir.path(), "hot").await;
    let body = pattern(OBJECT_LEN, 5);
    scene.origin.state.put("/obj", OriginObject::new(body.clone(), "v1"));
    scene.apply("media", &slicing("256Ki", 4));
    scene
        .wait_for_cache("media", "Ready with 3 agents", Duration::from_secs(60), ready)
        .await;
    let pods = scene.agent_pods("media");
    assert_eq!(pods.len(), 3, "{pods:?}");
    let agents: Vec<_> = pods
        .iter()
        .map(|p| {
            let name = p["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let http = pod_port(p, "http").unwrap_or_else(|| panic!("a client address: {p}"));
            let admin = pod_port(p, "admin").unwrap_or_else(|| panic!("an admin address: {p}"));
            (name, http, admin)
        })
        .collect();
    let pids: Vec<Option<u32>> = agents.iter().map(|(name, ..)| scene.shim.pid("hot", name)).collect();
    assert!(pids.iter().all(Option::is_some), "{pids:?}");

    // Warm every agent: the whole object, once from the origin.
    for (name, http, _) in &agents {
        let resp = HttpClient::new(*http)
            .get("/obj", &[])
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(resp.status == 200 && resp.body == body, "{name}: cold read");
    }
    let mut origin_before = Vec::new();
    for (_, _, admin) in &agents {
        let text = metrics(*admin).await;
        assert_eq!(metric_sum(&text, "slicecache_slice_size_bytes", &[]), 262_144.0);
        origin_before.push(metric_sum(&text, "slicecache_origin_bytes_total", &[]));
    }

    // The change.
    scene.apply("media", &slicing("512Ki", 6));
    for (name, _, admin) in &agents {
        let admin = *admin;
        poll(
            &format!("{name} to reload 512Ki x 6"),
            Duration::from_secs(60),
            || async move {
                let text = metrics(admin).await;
                (metric_sum(&text, "slicecache_slice_size_bytes", &[]) == 524_288.0
                    && metric_sum(&text, "slicecache_concurrency", &[]) == 6.0)
                    .then_some(())
            },
        )
        .await;
    }
    scene
        .wait_for_cache(
            "media",
            "status.effective 512Ki x 6 and Ready",
            Duration::from_secs(60),
            |c| {
                ready(c)
                    && c["status"]["effective"]["sliceSize"] == "512Ki"
                    && c["status"]["effective"]["concurrency"] == 6
            },
        )
        .await;

    // Same processes, no restarts.
    let after: Vec<Option<u32>> = agents.iter().map(|(name, ..)| scene.shim.pid("hot", name)).collect();
    assert_eq!(after, pids, "an agent was restarted by a tunables change");
    for (name, ..) in &agents {
        let info = scene.shim.pod("hot", name).expect("the pod");
        assert_eq!(info.restarts, 0, "{name} restarted");
    }
    // Still warm: every byte again, nothing more from the origin.
    for ((name, http, admin), before) in agents.iter().zip(&origin_before) {
        let resp = HttpClient::new(*http)
            .get("/obj", &[])
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(resp.status == 200 && resp.body == body, "{name}: warm read");
        let text = metrics(*admin).await;
        assert_eq!(
            metric_sum(&text, "slicecache_origin_bytes_total", &[]),
            *before,
            "{name} went to the origin for what it held"
        );
        assert!(metric_sum(&text, "slicecache_slices_total", &[("result", "hit")]) > 0.0);
    }
    scene.install.operator.assert_healthy();
    scene.shutdown().await;
}
