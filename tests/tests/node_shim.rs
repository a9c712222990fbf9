//! The node shim against a real control plane: the operator's own objects
//! for a SliceCache (ServiceAccount, ConfigMap, Services, DaemonSet, as
//! `build` renders them) applied to kube-apiserver, the DaemonSet
//! controller creating a Pod per shim node, and the shim running the real
//! agent binary for each. Checks what a kubelet must get right for the
//! operator's tests to mean something: Pods Ready with addresses of their
//! own, EndpointSlices listing them, bytes served through each Pod, a
//! ConfigMap change hot-reloaded without a restart, a deleted Pod's
//! process stopped and the Pod replaced, a crashed agent restarted, and no
//! process run for a Pod of another image.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use k8s_openapi::api::{
    core::v1::{Container, Namespace, Pod, PodSpec},
    discovery::v1::EndpointSlice,
};
use kube::{
    api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams},
    Client, Resource,
};
use serde::{de::DeserializeOwned, Serialize};
use slicecache_e2e::{
    agent_binary,
    control_plane::{cluster_binary, ControlPlane},
    metric_sum,
    node_shim::{NodeShim, PodInfo, ShimOptions},
    poll,
};
use slicecache_operator::controller::{
    build::{self, AgentWorkload, BuildDefaults, DesiredState, Owner},
    validate,
};
use slicecache_testkit::{
    client::HttpClient,
    origin::{pattern, OriginObject, TestOrigin},
};

const NS: &str = "slicecache-e2e";
const CACHE: &str = "media";
const OBJECT_LEN: usize = (3 << 20) + 12_345;

fn desired(origin: &str, slice_size: &str) -> DesiredState {
    let yaml = format!(
        "apiVersion: slicecache.io/v1alpha1\nkind: SliceCache\nmetadata:\n  name: {CACHE}\n  namespace: {NS}\n\
         spec:\n  origin:\n    url: {origin}\n  slicing:\n    sliceSize: {slice_size}\n  cache:\n    memory: 64Mi\n"
    );
    let cache: slicecache_api::SliceCache = serde_yaml_ng::from_str(&yaml).expect("a SliceCache manifest");
    let validated = validate::validate_spec(&cache).expect("a valid SliceCache");
    let owner = Owner {
        name: CACHE.into(),
        namespace: NS.into(),
        uid: None,
        generation: 1,
    };
    build::build(&validated, &owner, &BuildDefaults::default()).expect("built objects")
}

async fn apply<K>(client: &Client, object: &K)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), NS);
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply("slicecache-e2e").force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {} {name}: {e}", K::kind(&())));
}

/// The agent Pods the shim runs, once `n` of them are ready with a process.
async fn ready_agents(shim: &NodeShim, n: usize, limit: Duration) -> Vec<PodInfo> {
    poll(&format!("{n} ready agent pods"), limit, || async {
        let pods: Vec<PodInfo> = shim
            .agent_pods()
            .into_iter()
            .filter(|p| p.ready && p.pid.is_some() && p.namespace == NS)
            .collect();
        (pods.len() == n).then_some(pods)
    })
    .await
}

async fn metrics(ip: IpAddr, port: u16) -> Option<String> {
    let resp = HttpClient::new(SocketAddr::new(ip, port))
        .get("/metrics", &[])
        .await
        .ok()?;
    (resp.status == 200).then(|| String::from_utf8_lossy(&resp.body).into_owned())
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shim_runs_the_operators_daemon_set_like_a_kubelet() {
    // No control plane is a failure with the command that builds it, not a skip.
    if let Err(why) = cluster_binary() {
        panic!("{why}");
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("a temp dir");
    let cp = ControlPlane::start(dir.path()).await;
    let client = cp.client().await;

    let origin = TestOrigin::start().await.expect("the demo origin");
    let body = pattern(OBJECT_LEN, 7);
    origin.state.put("/obj", OriginObject::new(body.clone(), "\"v1\""));

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({ "metadata": { "name": NS } })).expect("a namespace");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating the namespace");

    let state = desired(&origin.url(), "1Mi");
    apply(&client, &state.service_account).await;
    apply(&client, &state.config_map).await;
    apply(&client, &state.client_service).await;
    apply(&client, &state.peer_service).await;
    let AgentWorkload::DaemonSet(ds) = &state.workload else {
        panic!("the default workload is a DaemonSet");
    };
    apply(&client, ds).await;

    let mut options = ShimOptions::new(agent_binary(), dir.path().join("shim"));
    options.nodes = 3;
    // A non-loopback range that is local to the machine (e.g. a local
    // route on lo, set up by a privileged CI step) lets EndpointSlices
    // carry the Pods: FIRST-LAST.
    if let Ok(range) = std::env::var("SLICECACHE_SHIM_POD_ADDRESSES") {
        let (first, last) = range.split_once('-').expect("SLICECACHE_SHIM_POD_ADDRESSES=FIRST-LAST");
        options.first_ip = first.parse().expect("an IPv4 address");
        options.last_ip = last.parse().expect("an IPv4 address");
    }
    let shim = NodeShim::start(client.clone(), options)
        .await
        .expect("starting the shim");

    // Three agents, one per node, each with an address of its own.
    let agents = ready_agents(&shim, 3, Duration::from_secs(90)).await;
    let nodes: BTreeSet<&str> = agents.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(nodes.len(), 3, "one agent per node: {agents:?}");
    let ips: BTreeSet<IpAddr> = agents.iter().filter_map(|p| p.ip).collect();
    assert_eq!(ips.len(), 3, "distinct pod addresses: {agents:?}");
    assert!(ips.iter().all(|ip| ip.is_loopback()));

    // The API agrees: Ready Pods with those addresses.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let selector = "app.kubernetes.io/name=slicecache-agent";
    poll(
        "the API to show 3 ready agent pods",
        Duration::from_secs(30),
        || async {
            let list = pods.list(&ListParams::default().labels(selector)).await.ok()?;
            let ready: BTreeSet<IpAddr> = list
                .items
                .iter()
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .filter_map(|p| p.status.as_ref()?.pod_ip.as_ref()?.parse().ok())
                .collect();
            (ready == ips).then_some(())
        },
    )
    .await;

    // The EndpointSlice controller lists them, ready, behind the client
    // Service, unless they are loopback addresses: kube-apiserver refuses
    // those in EndpointSlices ("may not be in the loopback range"), and
    // the controller then writes a slice without endpoints.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let service_slices = ListParams::default().labels(&format!("kubernetes.io/service-name={CACHE}"));
    if ips.iter().all(|ip| !ip.is_loopback()) {
        poll(
            "an EndpointSlice with the 3 agents",
            Duration::from_secs(30),
            || async {
                let list = slices.list(&service_slices).await.ok()?;
                let listed: BTreeSet<IpAddr> = list
                    .items
                    .iter()
                    .flat_map(|s| s.endpoints.iter())
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                    .flat_map(|e| e.addresses.iter().filter_map(|a| a.parse().ok()))
                    .collect();
                (listed == ips).then_some(())
            },
        )
        .await;
    } else {
        eprintln!("EndpointSlices not checked: loopback pod addresses {ips:?} cannot be published");
    }

    // Each agent serves the origin's bytes on its own address.
    let port = |listen: &str| -> u16 {
        listen
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {listen:?}"))
    };
    let (http_port, admin_port) = (port(&state.agent_config.listen), port(&state.agent_config.admin_listen));
    for ip in &ips {
        let resp = HttpClient::new(SocketAddr::new(*ip, http_port))
            .get("/obj", &[])
            .await
            .unwrap_or_else(|e| panic!("GET /obj from {ip}: {e}"));
        assert_eq!(resp.status, 200, "GET /obj from {ip}");
        assert!(resp.body == body, "GET /obj from {ip}: wrong bytes");
    }

    // A ConfigMap change reaches every agent without a restart.
    let pids: Vec<(String, u32)> = agents.iter().filter_map(|p| Some((p.name.clone(), p.pid?))).collect();
    let changed = desired(&origin.url(), "2Mi");
    assert_eq!(
        changed.pod_template_hash, state.pod_template_hash,
        "a tunable must not roll the pods"
    );
    apply(&client, &changed.config_map).await;
    for ip in &ips {
        poll(
            &format!("the agent at {ip} to reload 2Mi slices"),
            Duration::from_secs(20),
            || async {
                let text = metrics(*ip, admin_port).await?;
                (metric_sum(&text, "slicecache_slice_size_bytes", &[]) == (2 << 20) as f64).then_some(())
            },
        )
        .await;
    }
    for (name, pid) in &pids {
        assert_eq!(shim.pid(NS, name), Some(*pid), "{name} restarted on a tunable change");
    }

    // A crash is restarted, and counted.
    let (crash_name, crash_pid) = pids[0].clone();
    assert!(shim.kill(NS, &crash_name));
    let restarted = poll(
        "the crashed agent to be restarted and ready",
        Duration::from_secs(30),
        || async {
            shim.pod(NS, &crash_name)
                .filter(|p| p.ready && p.pid.is_some_and(|pid| pid != crash_pid))
        },
    )
    .await;
    assert_eq!(restarted.restarts, 1);

    // Deleting a Pod stops its process; the DaemonSet replaces the Pod.
    shim.reset_timeline();
    let victim = agents
        .iter()
        .find(|p| p.name != crash_name)
        .cloned()
        .expect("a second agent");
    let victim_pid = victim.pid.expect("a running agent");
    pods.delete(&victim.name, &DeleteParams::default())
        .await
        .expect("deleting a pod");
    poll("the deleted pod's agent to exit", Duration::from_secs(20), || async {
        (!alive(victim_pid)).then_some(())
    })
    .await;
    let replacement = poll(
        "a replacement pod on the same node",
        Duration::from_secs(60),
        || async {
            shim.agent_pods()
                .into_iter()
                .find(|p| p.node == victim.node && p.name != victim.name && p.ready && p.pid.is_some())
        },
    )
    .await;
    assert!(
        pods.get_opt(&victim.name).await.ok().flatten().is_none(),
        "the deleted pod is gone"
    );
    assert!(shim.max_unready_seen() >= 1, "timeline: {:?}", shim.timeline());
    assert_eq!(ready_agents(&shim, 3, Duration::from_secs(30)).await.len(), 3);
    assert_ne!(replacement.pid, Some(victim_pid));

    // A Pod of another image gets no process, only a reason.
    let other = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some("not-an-agent".into()),
            ..kube::api::ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(shim.node_names()[0].clone()),
            containers: vec![Container {
                name: "main".into(),
                image: Some("busybox:1.36".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    };
    pods.create(&PostParams::default(), &other)
        .await
        .expect("creating a busybox pod");
    poll("the busybox pod to be refused", Duration::from_secs(20), || async {
        let pod = pods.get("not-an-agent").await.ok()?;
        let status = pod.status?;
        let waiting = status.container_statuses?.first()?.state.clone()?.waiting?;
        (status.phase.as_deref() == Some("Pending") && waiting.reason.as_deref() == Some("ShimUnsupportedImage"))
            .then_some(())
    })
    .await;
    let refused = shim.pod(NS, "not-an-agent").expect("the shim knows the pod");
    assert!(!refused.runs_agent && refused.pid.is_none());

    // Stopping the shim stops every agent it started.
    let running: Vec<u32> = shim.agent_pods().iter().filter_map(|p| p.pid).collect();
    assert_eq!(running.len(), 3);
    shim.shutdown().await;
    for pid in running {
        assert!(!alive(pid), "agent {pid} outlived the shim");
    }
    drop(cp);
}
