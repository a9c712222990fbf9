//! Scale on a real control plane: `kubectl scale slicecache` on a
//! Deployment-workload SliceCache goes through the scale subresource to the
//! agents' Deployment and to running agents (the node shim runs them), and
//! an autoscaling/v2 HorizontalPodAutoscaler that targets the SliceCache is
//! accepted and reads its scale subresource with the real HPA controller.
//! (No metrics adapter runs here, so the HPA cannot compute a replica
//! count: the test stops at the scale subresource it reads.)

use std::time::Duration;

use slicecache_e2e::{
    install::{condition, kubectl, ready},
    poll,
    scene::Scene,
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
    let scale: serde_json::Value = serde_json::from_str(&scale).expect("a Scale");
    assert_eq!(scale["spec"]["replicas"], 3, "{scale}");
    assert_eq!(scale["status"]["replicas"], 3, "{scale}");

    // An HPA on the SliceCache: accepted, and the HPA controller reads the
    // scale subresource (AbleToScale True, SucceededGetScale).
    let hpa = dir.path().join("hpa.yaml");
    std::fs::write(
        &hpa,
        format!(
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: weights\n  namespace: {NS}\n\
             spec:\n  scaleTargetRef:\n    apiVersion: slicecache.io/v1alpha1\n    kind: SliceCache\n    name: weights\n  \
             minReplicas: 2\n  maxReplicas: 4\n  metrics:\n    - type: Resource\n      resource:\n        name: cpu\n        \
             target:\n          type: Utilization\n          averageUtilization: 60\n"
        ),
    )
    .expect("writing the HPA");
    kubectl(&admin, &["apply", "-f", &hpa.to_string_lossy()]).unwrap_or_else(|e| panic!("{e}"));
    let hpa = poll(
        "the HPA controller to read the scale subresource",
        Duration::from_secs(90),
        || {
            let hpa = scene.install.get_json(&["hpa", "weights", "-n", NS]);
            async move {
                hpa.filter(|h| {
                    condition(h, "AbleToScale")
                        .is_some_and(|c| c["status"] == "True" && c["reason"] == "SucceededGetScale")
                })
            }
        },
    )
    .await;
    assert_eq!(hpa["status"]["currentReplicas"], 3, "{hpa}");
    scene.install.operator.assert_healthy();
    scene.shutdown().await;
}
