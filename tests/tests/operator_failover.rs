//! Operator failover on a real control plane: two replicas of the operator
//! compete for the Lease; the leader is killed (SIGKILL) in the middle of a
//! paced rollout, the standby takes the Lease within the lease duration and
//! finishes the rollout's bookkeeping: the SliceCache turns Ready at its new
//! generation with every agent updated, written by the new leader.

use std::time::{Duration, Instant};

use slicecache_e2e::{
    install::{condition, kubectl, ready, service_account_kubeconfig, LocalOperator, OPERATOR, SYSTEM_NS},
    poll,
    scene::Scene,
};
use slicecache_testkit::origin::{pattern, OriginObject};

const NS: &str = "failover";
/// The Lease's duration (docs/operations.md): a standby takes over at most
/// this long (plus a second of jitter) after the leader's last renewal.
const LEASE: Duration = Duration::from_secs(15);

fn holder(admin: &std::path::Path) -> String {
    kubectl(
        admin,
        &[
            "get",
            "lease",
            OPERATOR,
            "-n",
            SYSTEM_NS,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    )
    .unwrap_or_default()
}

/// The spec with `cpu` requested: a change of it rolls the agents.
fn spec(cpu: &str) -> String {
    format!(
        "  rollout:\n    maxUnavailable: 1\n    pauseBetweenNodes: 4s\n  resources:\n    requests:\n      cpu: {cpu}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_takes_over_a_killed_leader_mid_rollout_and_finishes_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut scene = Scene::start(dir.path(), NS).await;
    let admin = scene.admin().to_path_buf();
    poll("the first operator to lead", Duration::from_secs(30), || {
        let h = holder(&admin);
        async move { (h == "local-operator").then_some(()) }
    })
    .await;
    let sa_kubeconfig = dir.path().join("standby.kubeconfig");
    service_account_kubeconfig(&admin, SYSTEM_NS, OPERATOR, &sa_kubeconfig).unwrap_or_else(|e| panic!("{e}"));
    let mut standby = LocalOperator::start_as(
        "standby",
        &admin,
        SYSTEM_NS,
        OPERATOR,
        &sa_kubeconfig,
        dir.path().join("standby.log"),
    );
    scene
        .origin
        .state
        .put("/obj", OriginObject::new(pattern(1 << 20, 7), "v1"));
    scene.apply("media", &spec("100m"));
    poll(
        "SliceCache media Ready and every agent available",
        Duration::from_secs(90),
        || {
            scene.install.operator.assert_healthy();
            let cache = scene.cache("media");
            let ds = scene.install.get_json(&["daemonset", "media-agent", "-n", NS]);
            async move { (cache.is_some_and(|c| ready(&c)) && ds?["status"]["numberAvailable"] == 3).then_some(()) }
        },
    )
    .await;

    // A change, and the leader killed once the rollout is under way.
    scene.apply("media", &spec("200m"));
    poll("the rollout under way", Duration::from_secs(60), || {
        let ds = scene.install.get_json(&["daemonset", "media-agent", "-n", NS]);
        async move {
            let ds = ds?;
            let updated = ds["status"]["updatedNumberScheduled"].as_i64().unwrap_or(0);
            (ds["metadata"]["generation"] == ds["status"]["observedGeneration"] && (1..3).contains(&updated))
                .then_some(())
        }
    })
    .await;
    scene.install.operator.proc.signal(rustix::process::Signal::KILL);
    let killed = Instant::now();
    poll("the standby to take the Lease", LEASE + Duration::from_secs(10), || {
        standby.assert_healthy();
        let h = holder(&admin);
        async move { (h == "standby").then_some(()) }
    })
    .await;
    let took = killed.elapsed();
    println!("the standby led {took:?} after the leader was killed");
    assert!(took <= LEASE + Duration::from_secs(3), "took {took:?}");

    // The new leader finishes it: Ready at the new generation, all updated.
    let cache = poll(
        "SliceCache media Ready at its new generation",
        Duration::from_secs(120),
        || {
            standby.assert_healthy();
            let cache = scene.cache("media");
            async move {
                cache.filter(|c| {
                    ready(c)
                        && c["status"]["nodes"]["updated"] == 3
                        && condition(c, "Progressing").is_some_and(|p| p["status"] == "False")
                })
            }
        },
    )
    .await;
    assert_eq!(
        condition(&cache, "Ready").map(|c| c["observedGeneration"].clone()),
        Some(cache["metadata"]["generation"].clone()),
        "{cache}"
    );
    standby.assert_healthy();
    scene.shutdown().await;
}
