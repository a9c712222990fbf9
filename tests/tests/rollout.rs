//! A paced rollout on a real control plane: an infrastructure change (the
//! agents' resources) rolls the DaemonSet's Pods node by node. The node
//! shim records how many agents were unready at each moment: never more
//! than `rollout.maxUnavailable`, and each node's replacement starts at
//! least `pauseBetweenNodes` after the previous one. The SliceCache shows
//! Progressing during the rollout and Ready after it.

use std::collections::BTreeSet;
use std::time::Duration;

use slicecache_e2e::{
    install::{condition, ready},
    poll,
    scene::Scene,
};
use slicecache_testkit::origin::{pattern, OriginObject};

const NS: &str = "rollout";
const PAUSE: Duration = Duration::from_secs(3);

/// The spec with `cpu` requested: a change of it is an infrastructure change.
fn spec(cpu: &str) -> String {
    format!(
        "  rollout:\n    maxUnavailable: 1\n    pauseBetweenNodes: {}s\n  resources:\n    requests:\n      cpu: {cpu}\n",
        PAUSE.as_secs()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_infrastructure_change_rolls_node_by_node_with_the_pause() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut scene = Scene::start(dir.path(), NS).await;
    scene
        .origin
        .state
        .put("/obj", OriginObject::new(pattern(1 << 20, 6), "v1"));
    scene.apply("media", &spec("100m"));
    scene
        .wait_for_cache("media", "Ready with 3 agents", Duration::from_secs(60), |c| {
            ready(c) && c["status"]["nodes"]["desired"] == 3
        })
        .await;
    let before: BTreeSet<String> = scene
        .shim
        .agent_pods()
        .into_iter()
        .filter(|p| p.namespace == NS)
        .map(|p| p.name)
        .collect();
    assert_eq!(before.len(), 3);

    // Every agent available (Ready for pauseBetweenNodes): the DaemonSet
    // controller replaces an unavailable old Pod at once, whatever
    // maxUnavailable says, so a change made earlier would not be paced.
    poll("three available agents", Duration::from_secs(60), || {
        let ds = scene.install.get_json(&["daemonset", "media-agent", "-n", NS]);
        async move { ds.filter(|d| d["status"]["numberAvailable"] == 3) }
    })
    .await;
    scene.shim.reset_timeline();
    scene.apply("media", &spec("200m"));
    let mut saw_progressing = false;
    poll(
        "every agent replaced and the SliceCache Ready",
        Duration::from_secs(120),
        || {
            scene.install.operator.assert_healthy();
            let cache = scene.cache("media");
            if let Some(c) = &cache {
                saw_progressing |= condition(c, "Progressing").is_some_and(|p| p["status"] == "True");
            }
            let now: BTreeSet<String> = scene
                .shim
                .agent_pods()
                .into_iter()
                .filter(|p| p.namespace == NS && p.ready)
                .map(|p| p.name)
                .collect();
            let replaced = now.len() == 3 && now.is_disjoint(&before);
            async move { cache.filter(|c| replaced && ready(c)) }
        },
    )
    .await;
    assert!(saw_progressing, "Progressing was never True during the rollout");

    let timeline = scene.shim.timeline();
    let max_unready = scene.shim.max_unready_seen();
    println!("rollout: at most {max_unready} agent(s) unready; timeline {timeline:?}");
    assert!(
        max_unready <= 1,
        "{max_unready} agents unready at once (maxUnavailable 1)"
    );
    // A node's turn starts when its old agent turns unready (stopping) while
    // every Pod is still there; its new Pod's start, right after the old
    // one is gone, is not a new turn. Turns are at least the pause apart.
    let starts: Vec<Duration> = timeline
        .windows(2)
        .filter(|w| w[0].unready == 0 && w[1].unready > 0 && w[0].agent_pods == w[1].agent_pods)
        .map(|w| w[1].at)
        .collect();
    assert_eq!(starts.len(), 3, "three node turns: {timeline:?}");
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= PAUSE,
            "a node started {gap:?} after the previous one (pause {PAUSE:?})"
        );
    }
    scene.shutdown().await;
}
