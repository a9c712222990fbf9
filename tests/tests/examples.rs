//! Every manifest in `examples/`, applied with `kubectl apply` to one
//! local control plane with four shim Nodes, each in a namespace of its
//! own and pointed at the test's origin. Each must turn Ready=True within
//! 60 s with all its agents ready and updated, every condition at the
//! current generation, Events recorded, and every agent Pod serving the
//! origin's object (sha256 of the body) on its own address.
//!
//! The Nodes are prepared the way each example's comment asks an
//! administrator to: `shim-node-3` is labelled `node-pool=build`
//! (file-backed), `shim-node-4` is labelled and tainted
//! `slicecache.io/cache-node=true` (production-nvme), so the examples
//! without a toleration place no agent there. What the machine lacks is
//! provided, not edited out of the examples:
//! - NVMe drives: loop devices over sparse files, plugged into
//!   `shim-node-4` at the example's `/dev/disk/by-id/...` paths;
//! - block storage for claims: a StorageClass `fast-block` with a 200Gi
//!   Block-mode `local` PersistentVolume (a loop device) on each of
//!   `shim-node-1` and `shim-node-2`, which kube-controller-manager binds
//!   to the claims of the Deployment's ephemeral volumes;
//! - the in-cluster Prometheus of production-nvme: a real Prometheus on
//!   127.0.0.1 (the operator runs outside the cluster and cannot resolve
//!   `*.svc` names), started only after Ready, to show that Ready does not
//!   wait for tuning signals;
//! - a cloud load balancer: none, so the LoadBalancer Service gets a
//!   cluster IP and node ports, and no ingress in its status.
//!
//! Resource requests stay as written (up to 4 CPUs and 10Gi for the
//! production agent): the shim's Nodes advertise 8 CPUs and 16Gi each, and
//! the shim does not count requests.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;
use slicecache_e2e::{
    free_addr,
    install::{adapt_example, condition, get_json, kubectl, pod_port, repo_root},
    local_volumes::{LocalBlockVolumes, NodeDevice},
    metric_sum,
    scene::Scene,
    sha256_hex, Prometheus, Target,
};
use slicecache_testkit::{
    client::HttpClient,
    metrics::scrape,
    origin::{pattern, OriginObject},
};

const OBJECT_LEN: usize = (3 << 20) + 1_234;
const READY_WITHIN: Duration = Duration::from_secs(60);
const GI: u64 = 1 << 30;

/// Ready=True, every desired agent ready and updated, and every condition
/// at the current generation.
fn settled(cache: &Value) -> bool {
    let generation = cache["metadata"]["generation"].as_i64();
    let nodes = &cache["status"]["nodes"];
    let conditions = cache["status"]["conditions"].as_array().cloned().unwrap_or_default();
    condition(cache, "Ready").is_some_and(|c| c["status"] == "True")
        && !conditions.is_empty()
        && conditions
            .iter()
            .all(|c| c["observedGeneration"].as_i64() == generation)
        && nodes["desired"].as_i64().is_some_and(|d| d > 0)
        && nodes["ready"] == nodes["desired"]
        && nodes["updated"] == nodes["desired"]
}

/// Applies `manifest` (an adapted example) and checks what every example
/// must show; returns the SliceCache and its agent Pods.
async fn apply_and_check(
    scene: &mut Scene,
    dir: &Path,
    (namespace, name): (&str, &str),
    manifest: String,
    agents: i64,
) -> (Value, Vec<Value>) {
    let file = dir.join(format!("{namespace}-{name}.yaml"));
    std::fs::write(&file, manifest).expect("writing the manifest");
    kubectl(scene.admin(), &["apply", "-f", &file.to_string_lossy()]).unwrap_or_else(|e| panic!("{e}"));
    let admin = scene.admin().to_path_buf();
    let deadline = Instant::now() + READY_WITHIN;
    let cache = loop {
        scene.install.operator.assert_healthy();
        let cache = get_json(&admin, &["slicecache", name, "-n", namespace]);
        if let Some(cache) = cache.as_ref().filter(|c| settled(c)) {
            break cache.clone();
        }
        if Instant::now() > deadline {
            panic!(
                "SliceCache {namespace}/{name} not Ready with {agents} agents ready and updated within {READY_WITHIN:?}:\n{}",
                diagnose(scene, namespace, cache)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(cache["status"]["nodes"]["desired"], agents, "{cache}");
    let table = kubectl(&admin, &["get", "slc", name, "-n", namespace]).unwrap_or_else(|e| panic!("{e}"));
    println!("{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("True")),
        "kubectl get slc:\n{table}"
    );

    let selector = format!("involvedObject.kind=SliceCache,involvedObject.name={name}");
    let events = get_json(&admin, &["events", "-n", namespace, "--field-selector", &selector]).expect("events");
    let events = events["items"].as_array().cloned().unwrap_or_default();
    assert!(!events.is_empty(), "no Events for SliceCache {namespace}/{name}");

    let selector = format!("app.kubernetes.io/instance={name}");
    let pods = get_json(&admin, &["pods", "-n", namespace, "-l", &selector]).expect("pods");
    let pods = pods["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(pods.len() as i64, agents, "agent pods of {namespace}/{name}");
    let want = sha256_hex(&pattern(OBJECT_LEN, 5));
    for pod in &pods {
        let addr = pod_port(pod, "http").unwrap_or_else(|| panic!("a client address: {pod}"));
        let resp = HttpClient::new(addr)
            .get("/obj", &[])
            .await
            .unwrap_or_else(|e| panic!("GET /obj from {namespace}/{name} at {addr}: {e}"));
        assert_eq!(resp.status, 200, "GET /obj from {namespace}/{name} at {addr}");
        assert_eq!(
            sha256_hex(&resp.body),
            want,
            "GET /obj from {namespace}/{name} at {addr}: sha256"
        );
    }
    (cache, pods)
}

/// What a test that timed out needs to see: the SliceCache's status, the
/// namespace's Pods, claims and Events, and the agents' logs.
fn diagnose(scene: &Scene, namespace: &str, cache: Option<Value>) -> String {
    let status = cache.map(|c| c["status"].to_string()).unwrap_or_default();
    let get = |what: &str| kubectl(scene.admin(), &["get", what, "-n", namespace, "-o", "wide"]).unwrap_or_else(|e| e);
    let mut out = format!(
        "status: {status}\npods:\n{}\nclaims:\n{}\nevents:\n{}",
        get("pods"),
        get("pvc"),
        get("events")
    );
    for pod in scene.shim.pods().iter().filter(|p| p.namespace == namespace) {
        let log = scene.shim.log(namespace, &pod.name).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        out.push_str(&format!("\nlog of {}:\n", pod.name));
        for line in tail.iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The node each Pod runs on, sorted.
fn pod_nodes(pods: &[Value]) -> Vec<String> {
    let mut nodes: Vec<String> = pods
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap_or_default().to_string())
        .collect();
    nodes.sort();
    nodes
}

/// Bytes of disk the agent of `pod` uses, by its own metrics.
async fn disk_capacity(pod: &Value) -> f64 {
    let admin = pod_port(pod, "admin").unwrap_or_else(|| panic!("an admin address: {pod}"));
    let text = scrape(admin).await.expect("agent metrics");
    metric_sum(&text, "slicecache_disk_capacity_bytes", &[])
}

fn create_namespace(scene: &Scene, namespace: &str) {
    kubectl(scene.admin(), &["create", "namespace", namespace]).unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_example_turns_ready_and_serves_the_origins_bytes() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let dir = dir.path();
    let mut scene = Scene::with_nodes(dir, "ex-minimal", 4).await;
    let body = pattern(OBJECT_LEN, 5);
    for path in ["/obj", "/releases/obj"] {
        scene.origin.state.put(path, OriginObject::new(body.clone(), "v1"));
    }
    let origin = scene.origin.url();
    let nodes = scene.shim.node_names().to_vec();
    let (build_node, cache_node) = (nodes[2].clone(), nodes[3].clone());
    let admin = scene.admin().to_path_buf();
    kubectl(&admin, &["label", "node", &build_node, "node-pool=build"]).unwrap_or_else(|e| panic!("{e}"));
    kubectl(&admin, &["label", "node", &cache_node, "slicecache.io/cache-node=true"]).unwrap_or_else(|e| panic!("{e}"));
    kubectl(
        &admin,
        &["taint", "node", &cache_node, "slicecache.io/cache-node=true:NoSchedule"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let example = |file: &str| repo_root().join("examples").join(file);
    let untainted = nodes[..3].to_vec();

    // minimal: only the origin. One agent per schedulable Node: the
    // tainted cache node is not one for it.
    let manifest = adapt_example(&example("minimal.yaml"), "ex-minimal", &origin, |_| {});
    let (_, pods) = apply_and_check(&mut scene, dir, ("ex-minimal", "media"), manifest, 3).await;
    assert_eq!(pod_nodes(&pods), untainted);

    // fleet: one cache over the same three Nodes.
    create_namespace(&scene, "ex-fleet");
    let manifest = adapt_example(&example("fleet.yaml"), "ex-fleet", &origin, |_| {});
    let (cache, pods) = apply_and_check(&mut scene, dir, ("ex-fleet", "models"), manifest, 3).await;
    assert_eq!(pod_nodes(&pods), untainted);
    assert_eq!(cache["spec"]["fleet"]["mode"], "Shard", "{cache}");
    scene
        .wait_for_cache_in("ex-fleet", "models", "3 fleet members", READY_WITHIN, |c| {
            c["status"]["fleet"]["members"] == 3
        })
        .await;

    // file-backed: the origin keeps its path (/releases); the device file
    // is created sparse, at its full 50Gi, in the build Node's host
    // directory, never on this machine's /var/lib.
    create_namespace(&scene, "ex-ci");
    let manifest = adapt_example(
        &example("file-backed.yaml"),
        "ex-ci",
        &format!("{origin}/releases"),
        |_| {},
    );
    let (_, pods) = apply_and_check(&mut scene, dir, ("ex-ci", "artifacts"), manifest, 1).await;
    assert_eq!(pod_nodes(&pods), std::slice::from_ref(&build_node));
    let file = scene.shim.host_path(&build_node, "/var/lib/slicecache/artifacts.img");
    let meta = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(meta.len(), 50 * GI, "{}", file.display());
    assert!(disk_capacity(&pods[0]).await > 0.9 * (50 * GI) as f64);

    // autoscaled: a Deployment of two whose ephemeral claims bind to the
    // fast-block volumes; each Pod runs where its volume is.
    let volumes = LocalBlockVolumes::provide(&admin, &scene.shim, "fast-block", &nodes[..2], "200Gi", dir)
        .unwrap_or_else(|e| panic!("{e}"));
    create_namespace(&scene, "ex-ml");
    let manifest = adapt_example(&example("autoscaled.yaml"), "ex-ml", &origin, |_| {});
    let (_, pods) = apply_and_check(&mut scene, dir, ("ex-ml", "weights"), manifest, 2).await;
    assert_eq!(pod_nodes(&pods), nodes[..2].to_vec());
    let claims = get_json(&admin, &["pvc", "-n", "ex-ml"]).expect("claims");
    let claims = claims["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(claims.len(), 2, "{claims:?}");
    for claim in &claims {
        assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
        let bound_to = claim["spec"]["volumeName"].as_str().unwrap_or_default();
        assert!(volumes.volumes.iter().any(|(name, _)| name == bound_to), "{claim}");
    }
    for pod in &pods {
        let capacity = disk_capacity(pod).await;
        assert!(
            capacity > 0.9 * (200 * GI) as f64,
            "the agent uses its 200Gi volume: {capacity}"
        );
    }
    // production-nvme: the cache node gets two 1Gi loop devices at the
    // example's by-id paths; the purge token Secret is created as the
    // example says; Prometheus is named by an address where none answers
    // yet.
    create_namespace(&scene, "ex-media");
    let spec_devices: Vec<String> = {
        let text = std::fs::read_to_string(example("production-nvme.yaml")).expect("the example");
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
        value["spec"]["cache"]["disk"]["devices"]
            .as_sequence()
            .map(|s| s.iter().filter_map(|d| d.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    assert_eq!(spec_devices.len(), 2, "the example's devices");
    let drives: Vec<NodeDevice> = spec_devices
        .iter()
        .map(|path| NodeDevice::plug(&scene.shim, &cache_node, path, GI, dir).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    kubectl(
        &admin,
        &[
            "-n",
            "ex-media",
            "create",
            "secret",
            "generic",
            "slicecache-purge",
            &format!("--from-literal=token={token}"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let prometheus_addr = free_addr();
    let manifest = adapt_example(&example("production-nvme.yaml"), "ex-media", &origin, |v| {
        v["spec"]["tuning"]["prometheus"]["url"] = format!("http://{prometheus_addr}").into();
    });
    let (cache, pods) = apply_and_check(&mut scene, dir, ("ex-media", "video-edge"), manifest, 1).await;
    assert_eq!(pod_nodes(&pods), std::slice::from_ref(&cache_node));
    let capacity = disk_capacity(&pods[0]).await;
    assert!(
        capacity > 1.8 * GI as f64,
        "the agent uses both drives: {capacity} bytes"
    );
    for drive in &drives {
        assert!(drive.device().exists(), "{}", drive.device().display());
    }
    // Ready counts agents, not tuning signals: it holds while the tuner
    // cannot reach Prometheus.
    let tuning_blind = |c: &Value| {
        settled(c)
            && condition(c, "TuningActive")
                .is_some_and(|t| t["status"] == "False" && t["reason"] == "PrometheusUnreachable")
    };
    if !tuning_blind(&cache) {
        scene
            .wait_for_cache_in(
                "ex-media",
                "video-edge",
                "Ready while Prometheus is unreachable",
                READY_WITHIN,
                tuning_blind,
            )
            .await;
    }
    let services = get_json(
        &admin,
        &[
            "services",
            "-n",
            "ex-media",
            "-l",
            "app.kubernetes.io/instance=video-edge",
        ],
    )
    .expect("services");
    let services = services["items"].as_array().cloned().unwrap_or_default();
    let lb = services
        .iter()
        .find(|s| s["spec"]["type"] == "LoadBalancer")
        .unwrap_or_else(|| panic!("a LoadBalancer Service: {services:?}"));
    assert!(lb["spec"]["ports"][0]["nodePort"].as_i64().is_some(), "{lb}");
    assert!(
        lb["status"]["loadBalancer"]["ingress"].is_null(),
        "no cloud provider, so no ingress: {lb}"
    );
    // Prometheus comes up, scraping the agent as Kubernetes discovery
    // would label it; the tuner reads it at its next interval (1m).
    let pod_name = pods[0]["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let target = Target::new(pod_port(&pods[0], "admin").expect("an admin address"))
        .label("namespace", "ex-media")
        .label("pod", &pod_name);
    let prometheus_dir = dir.join("prometheus");
    std::fs::create_dir_all(&prometheus_dir).expect("a Prometheus directory");
    let _prometheus = Prometheus::start_at(&prometheus_dir, prometheus_addr, "slicecache-agents", &[target]).await;
    let cache = scene
        .wait_for_cache_in(
            "ex-media",
            "video-edge",
            "TuningActive reading Prometheus",
            Duration::from_secs(100),
            |c| condition(c, "TuningActive").is_some_and(|t| t["reason"] != "PrometheusUnreachable"),
        )
        .await;
    println!(
        "TuningActive with Prometheus: {}",
        condition(&cache, "TuningActive").cloned().unwrap_or_default()
    );

    scene.shutdown().await;
    drop(volumes);
    drop(drives);
}
