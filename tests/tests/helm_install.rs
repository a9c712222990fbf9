//! The install a user does, on a real control plane: `helm install` of the
//! chart, the operator with exactly the chart's RBAC (a local process
//! authenticated with a token of the chart's ServiceAccount), the node shim
//! as three kubelets, and `kubectl apply` of `examples/minimal.yaml`
//! pointed at a local origin. The SliceCache must turn Ready with its
//! agents serving the origin's bytes; then `helm upgrade` changes the
//! operator Deployment and `helm uninstall` removes the release but keeps
//! the CRD (`crds.keep`, docs/install.md).

use std::time::Duration;

use slicecache_e2e::{
    agent_binary,
    install::{
        adapt_example, get_json, helm, kubectl, pod_port, ready, repo_root, Installation, CRD, OPERATOR, RELEASE,
        SYSTEM_NS,
    },
    node_shim::{NodeShim, ShimOptions},
    poll,
};
use slicecache_testkit::{
    client::HttpClient,
    origin::{pattern, OriginObject, TestOrigin},
};

const NS: &str = "slicecache-e2e";
const OBJECT_LEN: usize = (2 << 20) + 4_321;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn helm_install_runs_the_minimal_example_with_the_charts_rbac() {
    let agent_bin = agent_binary();
    let dir = tempfile::tempdir().expect("a temp dir");
    let Installation {
        mut operator,
        admin,
        control_plane: cp,
    } = Installation::start(dir.path()).await;
    let chart = repo_root().join("charts/slicecache-operator");
    let chart = chart.to_string_lossy();

    // Three nodes.
    let client = cp.client().await;
    let options = ShimOptions::new(agent_bin, dir.path().join("shim"));
    let shim = NodeShim::start(client, options).await.expect("starting the shim");

    // The origin and the example, adapted.
    let origin = TestOrigin::start().await.expect("the demo origin");
    let body = pattern(OBJECT_LEN, 11);
    origin.state.put("/obj", OriginObject::new(body.clone(), "v1"));
    kubectl(&admin, &["create", "namespace", NS]).unwrap_or_else(|e| panic!("{e}"));
    let manifest = dir.path().join("minimal.yaml");
    std::fs::write(
        &manifest,
        adapt_example(&repo_root().join("examples/minimal.yaml"), NS, &origin.url(), |_| {}),
    )
    .expect("writing the manifest");
    kubectl(&admin, &["apply", "-f", &manifest.to_string_lossy()]).unwrap_or_else(|e| panic!("{e}"));

    let cache = poll(
        "SliceCache media Ready=True with 3/3 agents",
        Duration::from_secs(60),
        || {
            operator.assert_healthy();
            let cache = get_json(&admin, &["slicecache", "media", "-n", NS]);
            async move { cache.filter(ready) }
        },
    )
    .await;
    assert_eq!(cache["status"]["nodes"]["desired"], 3, "{cache}");

    // Events for it.
    let events = get_json(
        &admin,
        &[
            "events",
            "-n",
            NS,
            "--field-selector",
            "involvedObject.kind=SliceCache,involvedObject.name=media",
        ],
    )
    .expect("events");
    let events = events["items"].as_array().cloned().unwrap_or_default();
    assert!(!events.is_empty(), "no Events for the SliceCache");

    // Each agent Pod serves the origin's bytes on its own address.
    let pods = get_json(&admin, &["pods", "-n", NS, "-l", "app.kubernetes.io/instance=media"]).expect("pods");
    let pods = pods["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(pods.len(), 3, "agent pods: {pods:?}");
    for pod in &pods {
        let addr = pod_port(pod, "http").unwrap_or_else(|| panic!("a client address: {pod}"));
        let resp = HttpClient::new(addr)
            .get("/obj", &[])
            .await
            .unwrap_or_else(|e| panic!("GET /obj from {addr}: {e}"));
        assert_eq!(resp.status, 200, "GET /obj from {addr}");
        assert!(resp.body == body, "GET /obj from {addr}: wrong bytes");
    }
    operator.assert_healthy();

    // helm upgrade with another log level: the Deployment shows it.
    helm(
        &admin,
        &["upgrade", RELEASE, &chart, "-n", SYSTEM_NS, "--set", "logLevel=debug"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rust_log = kubectl(
        &admin,
        &[
            "get",
            "deployment",
            OPERATOR,
            "-n",
            SYSTEM_NS,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"RUST_LOG\")].value}",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rust_log, "debug");
    operator.assert_healthy();

    // helm uninstall: the release's objects go, the CRD (and the
    // SliceCache) stay.
    drop(operator);
    helm(&admin, &["uninstall", RELEASE, "-n", SYSTEM_NS]).unwrap_or_else(|e| panic!("{e}"));
    let left = kubectl(
        &admin,
        &["get", "deployment", OPERATOR, "-n", SYSTEM_NS, "--ignore-not-found"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        left.trim().is_empty(),
        "the operator Deployment outlived helm uninstall: {left}"
    );
    let sa = kubectl(
        &admin,
        &["get", "serviceaccount", OPERATOR, "-n", SYSTEM_NS, "--ignore-not-found"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(sa.trim().is_empty(), "the ServiceAccount outlived helm uninstall: {sa}");
    kubectl(&admin, &["get", "crd", CRD]).unwrap_or_else(|e| panic!("the CRD is kept: {e}"));
    kubectl(&admin, &["get", "slicecache", "media", "-n", NS])
        .unwrap_or_else(|e| panic!("the SliceCache is kept: {e}"));

    shim.shutdown().await;
    drop(cp);
}
