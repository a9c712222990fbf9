//! A paced rollout on a real control plane: an infrastructure change (the
//! agents' resources) rolls the DaemonSet's Pods node by node. The node
//! shim records how many agents were unready at each moment: never more
//! than `rollout.maxUnavailable`, and each node's replacement starts at
//! least `pauseBetweenNodes` after the previous one. The SliceCache shows
//! Progressing during the rollout and Ready after it.

use std::collections::BTreeSet;
use std::time::Duration;

use slicecache_e2e::{
    agent_binary,
    install::{condition, kubectl, ready, Installation},
    node_shim::{NodeShim, ShimOptions},
    poll,
};
use slicecache_testkit::origin::{pattern, OriginObject, TestOrigin};

const NS: &str = "rollout";
const PAUSE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_infrastructure_change_rolls_node_by_node_with_the_pause() {
    let agent_bin = agent_binary();
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut install = Installation::start(dir.path()).await;
    let admin = install.admin.clone();
    let client = install.control_plane.client().await;
    let shim = NodeShim::start(client, ShimOptions::new(agent_bin, dir.path().join("shim")))
        .await
        .expect("starting the shim");
    let origin = TestOrigin::start().await.expect("an origin");
    origin.state.put("/obj", OriginObject::new(pattern(1 << 20, 6), "v1"));
    kubectl(&admin, &["create", "namespace", NS]).unwrap_or_else(|e| panic!("{e}"));
    let manifest = dir.path().join("media.yaml");
    let apply = |cpu: &str| {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: slicecache.io/v1alpha1\nkind: SliceCache\nmetadata:\n  name: media\n  namespace: {NS}\n\
                 spec:\n  origin:\n    url: {}\n  rollout:\n    maxUnavailable: 1\n    pauseBetweenNodes: {}s\n  \
                 resources:\n    requests:\n      cpu: {cpu}\n",
                origin.url(),
                PAUSE.as_secs()
            ),
        )
        .expect("writing the manifest");
        kubectl(&admin, &["apply", "-f", &manifest.to_string_lossy()]).unwrap_or_else(|e| panic!("{e}"));
    };
    apply("100m");
    poll("SliceCache media Ready with 3 agents", Duration::from_secs(60), || {
        install.operator.assert_healthy();
        let cache = install.get_json(&["slicecache", "media", "-n", NS]);
        async move { cache.filter(|c| ready(c) && c["status"]["nodes"]["desired"] == 3) }
    })
    .await;
    let before: BTreeSet<String> = shim
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
        let ds = install.get_json(&["daemonset", "media-agent", "-n", NS]);
        async move { ds.filter(|d| d["status"]["numberAvailable"] == 3) }
    })
    .await;
    shim.reset_timeline();
    apply("200m");
    let mut saw_progressing = false;
    poll(
        "every agent replaced and the SliceCache Ready",
        Duration::from_secs(120),
        || {
            install.operator.assert_healthy();
            let cache = install.get_json(&["slicecache", "media", "-n", NS]);
            if let Some(c) = &cache {
                saw_progressing |= condition(c, "Progressing").is_some_and(|p| p["status"] == "True");
            }
            let now: BTreeSet<String> = shim
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

    let timeline = shim.timeline();
    let max_unready = shim.max_unready_seen();
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
    shim.shutdown().await;
}
