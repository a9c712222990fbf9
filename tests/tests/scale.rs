//! Scale on a real control plane: `kubectl scale slicecache` on a
//! Deployment-workload SliceCache goes through the scale subresource to the
//! agents' Deployment and to running agents (the node shim runs them), and
//! an autoscaling/v2 HorizontalPodAutoscaler that targets the SliceCache is
//! driven end to end from the agents' metrics: a real Prometheus scrapes
//! the agent Pods the API server lists, prometheus-adapter serves their
//! client bytes per second on the custom metrics API with the rule of
//! `docs/tuning.md`, and the real HPA controller scales the SliceCache
//! down to one agent while no client reads and up to three under load.

use std::time::{Duration, Instant};

use serde_json::Value;
use slicecache_e2e::{
    free_addr,
    install::{condition, kubectl, pod_port, ready, repo_root},
    metrics_adapter::{agent_pods_scrape_job, discover_agent_pods, MetricsAdapter},
    poll,
    scene::Scene,
    HttpClient, Prometheus,
};
use slicecache_testkit::origin::{pattern, OriginObject};

const NS: &str = "scale";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_scale_and_an_hpa_drive_the_agents_through_the_scale_subresource() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut scene = Scene::start(dir.path(), NS).await;
    let admin = scene.admin().to_path_buf();
    scene
        .origin
        .state
        .put("/obj", OriginObject::new(pattern(1 << 20, 4), "v1"));
    scene.apply(
        "weights",
        "  workload: Deployment\n  replicas: 1\n  cache:\n    memory: 64Mi\n",
    );
    scene
        .wait_for_cache("weights", "Ready with 1 agent", Duration::from_secs(60), |c| {
            ready(c) && c["status"]["nodes"]["desired"] == 1
        })
        .await;

    // kubectl scale writes the scale subresource; three agents run.
    kubectl(&admin, &["scale", "slicecache", "weights", "-n", NS, "--replicas=3"]).unwrap_or_else(|e| panic!("{e}"));
    poll("three ready agents", Duration::from_secs(90), || {
        scene.install.operator.assert_healthy();
        let deploy = scene.install.get_json(&["deployment", "weights-agent", "-n", NS]);
        let cache = scene.cache("weights");
        let running = scene
            .shim
            .agent_pods()
            .iter()
            .filter(|p| p.namespace == NS && p.ready)
            .count();
        async move {
            let deploy = deploy?;
            let cache = cache?;
            (deploy["spec"]["replicas"] == 3 && deploy["status"]["readyReplicas"] == 3 && running == 3 && ready(&cache))
                .then_some(())
        }
    })
    .await;
    let scale = kubectl(
        &admin,
        &[
            "get",
            "--raw",
            &format!("/apis/slicecache.io/v1alpha1/namespaces/{NS}/slicecaches/weights/scale"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let scale: Value = serde_json::from_str(&scale).expect("a Scale");
    assert_eq!(scale["spec"]["replicas"], 3, "{scale}");
    assert_eq!(scale["status"]["replicas"], 3, "{scale}");

    // An HPA on the SliceCache with the `Pods` metric of docs/tuning.md:
    // a real Prometheus finds the agent Pods through the API server, and
    // prometheus-adapter, with the rule the docs give, serves their client
    // bytes per second on the custom metrics API.
    let targets = dir.path().join("agent-targets.json");
    let discovery = discover_agent_pods(scene.install.control_plane.client().await, NS, targets.clone());
    let prometheus =
        Prometheus::start_with_scrape_configs(dir.path(), free_addr(), &agent_pods_scrape_job(&targets)).await;
    let mut adapter = MetricsAdapter::start(dir.path(), &admin, &prometheus.url, &documented_adapter_rules()).await;
    let hpa = dir.path().join("hpa.yaml");
    std::fs::write(
        &hpa,
        format!(
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: weights\n  namespace: {NS}\n\
             spec:\n  scaleTargetRef:\n    apiVersion: slicecache.io/v1alpha1\n    kind: SliceCache\n    name: weights\n  \
             minReplicas: 1\n  maxReplicas: 3\n  metrics:\n    - type: Pods\n      pods:\n        metric:\n          \
             name: slicecache_client_bytes_per_second\n        target:\n          type: AverageValue\n          \
             averageValue: {TARGET_PER_AGENT}\n  behavior:\n    scaleDown:\n      stabilizationWindowSeconds: 0\n"
        ),
    )
    .expect("writing the HPA");
    kubectl(&admin, &["apply", "-f", &hpa.to_string_lossy()]).unwrap_or_else(|e| panic!("{e}"));

    // Idle agents serve 0 bytes/s: the HPA reads the metric for every
    // agent and scales the SliceCache down to its minimum, one agent.
    let hpa = wait_for_agents(&mut scene, &mut adapter, 1, "no client traffic").await;
    assert!(
        condition(&hpa, "AbleToScale").is_some_and(|c| c["status"] == "True"),
        "the HPA cannot scale the SliceCache: {hpa}"
    );
    assert_eq!(
        hpa["status"]["currentMetrics"][0]["pods"]["current"]["averageValue"], "0",
        "{hpa}"
    );

    // One client pulling the object from the remaining agent at about
    // 16 MB/s, 16 times the per-agent target: the HPA scales up to its
    // maximum through the scale subresource, and three agents serve.
    // (The Pods the scale-down removes may still be listed, terminating.)
    let pod = scene
        .agent_pods("weights")
        .into_iter()
        .find(|p| p["metadata"]["deletionTimestamp"].is_null())
        .expect("one agent Pod");
    let addr = pod_port(&pod, "http").unwrap_or_else(|| panic!("a client address: {pod}"));
    let want = pattern(1 << 20, 4);
    let load = tokio::spawn(async move {
        loop {
            let resp = HttpClient::new(addr).get("/obj", &[]).await;
            let resp = resp.unwrap_or_else(|e| panic!("GET /obj at {addr}: {e}"));
            assert_eq!(resp.status, 200, "GET /obj at {addr}");
            assert!(resp.body == want, "GET /obj at {addr}: not the origin's bytes");
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    });
    let hpa = wait_for_agents(&mut scene, &mut adapter, 3, "a client pulling 16 MB/s").await;
    assert!(!load.is_finished(), "the client stopped: {:?}", load.await);
    load.abort();
    discovery.abort();
    let per_agent = hpa["status"]["currentMetrics"][0]["pods"]["current"]["averageValue"].clone();
    assert!(
        per_agent.as_str().is_some_and(|v| v != "0"),
        "the HPA scaled up without a client-bytes rate: {hpa}"
    );
    println!("HPA at 3 agents: {per_agent} per agent");
    scene.install.operator.assert_healthy();
    scene.shutdown().await;
}

/// What the HPA divides each agent's client bytes per second by.
const TARGET_PER_AGENT: &str = "1M";

/// The prometheus-adapter rule that `docs/tuning.md` gives users, read from
/// the docs so the test proves what they say.
fn documented_adapter_rules() -> String {
    let docs = std::fs::read_to_string(repo_root().join("docs/tuning.md")).expect("reading docs/tuning.md");
    let start = docs
        .find("```yaml\nrules:\n")
        .expect("docs/tuning.md gives the adapter's rules")
        + "```yaml\n".len();
    let len = docs[start..].find("```").expect("the rules' code block ends");
    docs[start..start + len].to_string()
}

/// Waits (up to 3 minutes) until the HPA has set the SliceCache to `agents`
/// replicas from a metric it read (ScalingActive True) and that many agents
/// run and are ready; the HPA then. On a timeout it shows what the HPA, the
/// SliceCache and the adapter last said.
async fn wait_for_agents(scene: &mut Scene, adapter: &mut MetricsAdapter, agents: u64, why: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        scene.install.operator.assert_healthy();
        adapter.assert_alive();
        let hpa = scene
            .install
            .get_json(&["hpa", "weights", "-n", NS])
            .unwrap_or_default();
        let cache = scene.cache("weights").unwrap_or_default();
        let running = scene
            .shim
            .agent_pods()
            .iter()
            .filter(|p| p.namespace == NS && p.ready)
            .count() as u64;
        let active = condition(&hpa, "ScalingActive").is_some_and(|c| c["status"] == "True");
        if active
            && hpa["status"]["desiredReplicas"] == agents
            && cache["spec"]["replicas"] == agents
            && cache["status"]["replicas"] == agents
            && running == agents
            && ready(&cache)
        {
            return hpa;
        }
        assert!(
            Instant::now() < deadline,
            "the HPA did not run {agents} agent(s) on {why} within 180 s ({running} ready agents);\n\
             the HPA's status: {}\nthe SliceCache's spec.replicas {} and status: {}\nthe adapter's log:\n{}",
            hpa["status"],
            cache["spec"]["replicas"],
            cache["status"],
            adapter.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
