//! Operator failover on a real control plane: two replicas of the operator
//! compete for the Lease; the leader is killed (SIGKILL) in the middle of a
//! paced rollout, the standby takes the Lease within the lease duration and
//! finishes the rollout's bookkeeping: the SliceCache turns Ready at its new
//! generation with every agent updated, written by the new leader.

use std::time::{Duration, Instant};

use slicecache_e2e::{
    agent_binary,
    install::{
        condition, kubectl, ready, service_account_kubeconfig, Installation, LocalOperator, OPERATOR, SYSTEM_NS,
    },
    node_shim::{NodeShim, ShimOptions},
    poll,
};
use slicecache_testkit::origin::{pattern, OriginObject, TestOrigin};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_takes_over_a_killed_leader_mid_rollout_and_finishes_it() {
    let agent_bin = agent_binary();
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut install = Installation::start(dir.path()).await;
    let admin = install.admin.clone();
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
    let client = install.control_plane.client().await;
    let shim = NodeShim::start(client, ShimOptions::new(agent_bin, dir.path().join("shim")))
        .await
        .expect("starting the shim");
    let origin = TestOrigin::start().await.expect("an origin");
    origin.state.put("/obj", OriginObject::new(pattern(1 << 20, 7), "v1"));
    kubectl(&admin, &["create", "namespace", NS]).unwrap_or_else(|e| panic!("{e}"));
    let manifest = dir.path().join("media.yaml");
    let apply = |cpu: &str| {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: slicecache.io/v1alpha1\nkind: SliceCache\nmetadata:\n  name: media\n  namespace: {NS}\n\
                 spec:\n  origin:\n    url: {}\n  rollout:\n    maxUnavailable: 1\n    pauseBetweenNodes: 4s\n  \
                 resources:\n    requests:\n      cpu: {cpu}\n",
                origin.url()
            ),
        )
        .expect("writing the manifest");
        kubectl(&admin, &["apply", "-f", &manifest.to_string_lossy()]).unwrap_or_else(|e| panic!("{e}"));
    };
    apply("100m");
    poll(
        "SliceCache media Ready and every agent available",
        Duration::from_secs(90),
        || {
            install.operator.assert_healthy();
            let cache = install.get_json(&["slicecache", "media", "-n", NS]);
            let ds = install.get_json(&["daemonset", "media-agent", "-n", NS]);
            async move { (cache.is_some_and(|c| ready(&c)) && ds?["status"]["numberAvailable"] == 3).then_some(()) }
        },
    )
    .await;

    // A change, and the leader killed once the rollout is under way.
    apply("200m");
    poll("the rollout under way", Duration::from_secs(60), || {
        let ds = install.get_json(&["daemonset", "media-agent", "-n", NS]);
        async move {
            let ds = ds?;
            let updated = ds["status"]["updatedNumberScheduled"].as_i64().unwrap_or(0);
            (ds["metadata"]["generation"] == ds["status"]["observedGeneration"] && (1..3).contains(&updated))
                .then_some(())
        }
    })
    .await;
    install.operator.proc.signal(rustix::process::Signal::KILL);
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
            let cache = install.get_json(&["slicecache", "media", "-n", NS]);
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
    shim.shutdown().await;
}
