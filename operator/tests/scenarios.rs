//! Reconcile scenarios against a mocked API server (kube-rs's
//! `ApiServerVerifier` pattern): each test drives `reconcile` and asserts the
//! method, path and body of every API call it makes, in order, and that it
//! makes no other.
#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use http::{Request, Response};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus, Deployment, DeploymentStatus};
use kube::{client::Body, runtime::controller::Action, Client};
use serde_json::{json, Value};
use slicecache_api::{SliceCache, ValidatedSliceCache};
use slicecache_operator::{
    controller::{
        self,
        build::{self, BuildDefaults, DesiredState, Owner},
        error_policy, reconcile, Context, FINALIZER,
    },
    metrics::Metrics,
};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NS: &str = "default";
const SA: &str = "/api/v1/namespaces/default/serviceaccounts/media-agent";
const CM: &str = "/api/v1/namespaces/default/configmaps/media-agent-config";
const SVC: &str = "/api/v1/namespaces/default/services/media";
const PEERS: &str = "/api/v1/namespaces/default/services/media-peers";
const PDB: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets/media-agent";
const DS: &str = "/apis/apps/v1/namespaces/default/daemonsets/media-agent";
const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments/media-agent";
const CACHE: &str = "/apis/slicecache.io/v1alpha1/namespaces/default/slicecaches/media";
const STATUS: &str = "/apis/slicecache.io/v1alpha1/namespaces/default/slicecaches/media/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

fn context() -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let metrics = Arc::new(Metrics::new().unwrap());
    let ctx = Context::new(client, metrics, BuildDefaults::default(), Some("test".into()));
    (Arc::new(ctx), handle)
}

fn cache(spec_yaml: &str) -> SliceCache {
    let mut cache: SliceCache = serde_yaml_ng::from_str(&format!(
        "apiVersion: slicecache.io/v1alpha1\nkind: SliceCache\nmetadata:\n  name: media\n  namespace: default\nspec:\n{spec_yaml}"
    ))
    .unwrap();
    cache.metadata.uid = Some("uid-1".into());
    cache.metadata.generation = Some(1);
    cache.metadata.finalizers = Some(vec![FINALIZER.into()]);
    cache
}

const MINIMAL: &str = "  origin:\n    url: https://media.example.com\n";

fn desired(cache: &SliceCache) -> DesiredState {
    let validated = ValidatedSliceCache::new(&cache.spec).unwrap();
    build::build(&validated, &Owner::of(cache, NS), &BuildDefaults::default()).unwrap()
}

/// One API call as the mock saw it.
struct Call {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

async fn next(handle: &mut Handle) -> (Call, tower_test::mock::SendResponse<Response<Body>>) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("timed out waiting for an API call")
        .expect("the client went away");
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (
        Call {
            method,
            path,
            query,
            content_type,
            body,
        },
        send,
    )
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, code: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "not found", "reason": "NotFound", "code": 404})
}

/// Expects `method path`, answers `code` with `body` (`None`: echo the request body).
async fn expect(handle: &mut Handle, method: &str, path: &str, code: u16, body: Option<Value>) -> Call {
    let (call, send) = next(handle).await;
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        (method, path),
        "unexpected call {} {}?{}",
        call.method,
        call.path,
        call.query
    );
    let reply = body.unwrap_or_else(|| call.body.clone());
    respond(send, code, &reply);
    call
}

/// Expects a server-side apply by the operator's field manager.
async fn expect_apply(handle: &mut Handle, path: &str, reply: Option<Value>) -> Call {
    let call = expect(handle, "PATCH", path, 200, reply).await;
    assert_eq!(call.content_type, "application/apply-patch+yaml", "{path}");
    assert!(
        call.query.contains("fieldManager=slicecache-operator"),
        "{}",
        call.query
    );
    assert!(call.query.contains("force=true"), "{}", call.query);
    call
}

async fn expect_event(handle: &mut Handle, type_: &str, reason: &str) -> Call {
    let call = expect(handle, "POST", EVENTS, 201, None).await;
    assert_eq!(call.body["reason"], reason, "{}", call.body);
    assert_eq!(call.body["type"], type_, "{}", call.body);
    assert_eq!(call.body["regarding"]["name"], "media");
    assert_eq!(call.body["regarding"]["kind"], "SliceCache");
    call
}

async fn expect_no_more_calls(handle: &mut Handle) {
    let more = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
    if let Ok(Some((request, _))) = more {
        panic!("unexpected extra call {} {}", request.method(), request.uri());
    }
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn with_status(cache: &SliceCache, status: &Value) -> Value {
    let mut v = serde_json::to_value(cache).unwrap();
    v["status"] = status.clone();
    v
}

fn daemon_set(d: &DesiredState) -> DaemonSet {
    d.workload.daemon_set().expect("a DaemonSet").clone()
}

fn deployment(d: &DesiredState) -> Deployment {
    d.workload.deployment().expect("a Deployment").clone()
}

/// A Deployment its controller has rolled out: `replicas` pods, all ready.
fn settled_deployment(mut deploy: Deployment, replicas: i32) -> Deployment {
    deploy.metadata.generation = Some(1);
    deploy.spec.as_mut().unwrap().replicas = Some(replicas);
    deploy.status = Some(DeploymentStatus {
        replicas: Some(replicas),
        ready_replicas: Some(replicas),
        updated_replicas: Some(replicas),
        available_replicas: Some(replicas),
        observed_generation: Some(1),
        ..DeploymentStatus::default()
    });
    deploy
}

fn settled(mut ds: DaemonSet, nodes: i32) -> DaemonSet {
    ds.metadata.generation = Some(1);
    ds.status = Some(DaemonSetStatus {
        current_number_scheduled: nodes,
        desired_number_scheduled: nodes,
        number_ready: nodes,
        updated_number_scheduled: Some(nodes),
        number_available: Some(nodes),
        number_misscheduled: 0,
        observed_generation: Some(1),
        ..DaemonSetStatus::default()
    });
    ds
}

/// Runs `reconcile` while `verify` plays the API server.
async fn run<F, Fut>(
    cache: SliceCache,
    ctx: Arc<Context>,
    handle: Handle,
    verify: F,
) -> Result<Action, controller::Error>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Handle> + Send,
{
    let verifier = tokio::spawn(async move {
        let mut handle = verify(handle).await;
        expect_no_more_calls(&mut handle).await;
    });
    let result = reconcile(Arc::new(cache), ctx).await;
    tokio::time::timeout(Duration::from_secs(10), verifier)
        .await
        .expect("verifier timed out")
        .expect("verifier failed");
    result
}

/// [`run`] for a Context that reconciles again: hands the mock back.
async fn run_keeping_handle<F, Fut>(
    cache: SliceCache,
    ctx: Arc<Context>,
    handle: Handle,
    verify: F,
) -> (Result<Action, controller::Error>, Handle)
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Handle> + Send,
{
    let verifier = tokio::spawn(async move {
        let mut handle = verify(handle).await;
        expect_no_more_calls(&mut handle).await;
        handle
    });
    let result = reconcile(Arc::new(cache), ctx).await;
    let handle = tokio::time::timeout(Duration::from_secs(10), verifier)
        .await
        .expect("verifier timed out")
        .expect("verifier failed");
    (result, handle)
}

#[tokio::test]
async fn first_reconcile_creates_everything_and_reports_progress() {
    let (ctx, handle) = context();
    let cache = cache(MINIMAL);
    let c = cache.clone();
    let result = run(cache, ctx, handle, move |mut h| async move {
        for (path, kind) in [
            (SA, "ServiceAccount"),
            (CM, "ConfigMap"),
            (SVC, "Service"),
            (PEERS, "Service"),
            (PDB, "PodDisruptionBudget"),
            (DS, "DaemonSet"),
        ] {
            expect(&mut h, "GET", path, 404, Some(not_found())).await;
            let call = expect_apply(&mut h, path, None).await;
            assert_eq!(call.body["kind"], kind);
            assert_eq!(call.body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
            assert_eq!(call.body["metadata"]["ownerReferences"][0]["controller"], true);
        }
        // No Deployment of an earlier workload: nothing to delete.
        expect(&mut h, "GET", DEPLOY, 404, Some(not_found())).await;
        let call = expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        let status = &call.body["status"];
        assert_eq!(call.body["kind"], "SliceCache");
        assert_eq!(status["observedGeneration"], 1);
        assert_eq!(condition(status, "Ready")["status"], "False");
        assert_eq!(condition(status, "Ready")["reason"], "Reconciling");
        assert_eq!(condition(status, "Progressing")["status"], "True");
        assert_eq!(condition(status, "Progressing")["reason"], "RollingOut");
        assert_eq!(condition(status, "Degraded")["status"], "False");
        assert_eq!(condition(status, "TuningActive")["reason"], "TuningOff");
        assert_eq!(status["effective"]["sliceSize"], "1Mi");
        assert_eq!(status["effective"]["concurrency"], 4);
        let event = expect_event(&mut h, "Normal", "Created").await;
        assert!(event.body["note"].as_str().unwrap().contains("DaemonSet media-agent"));
        h
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(controller::ROLLOUT_POLL));
}

#[tokio::test]
async fn settled_reconcile_makes_no_writes() {
    let cache = cache(MINIMAL);
    let d = desired(&cache);
    let live = (
        serde_json::to_value(&d.service_account).unwrap(),
        serde_json::to_value(&d.config_map).unwrap(),
        serde_json::to_value(&d.client_service).unwrap(),
        serde_json::to_value(&d.peer_service).unwrap(),
        serde_json::to_value(d.pod_disruption_budget.as_ref().unwrap()).unwrap(),
        serde_json::to_value(settled(daemon_set(&d), 3)).unwrap(),
    );
    let reads = move |live: (Value, Value, Value, Value, Value, Value)| {
        move |mut h: Handle| async move {
            expect(&mut h, "GET", SA, 200, Some(live.0)).await;
            expect(&mut h, "GET", CM, 200, Some(live.1)).await;
            expect(&mut h, "GET", SVC, 200, Some(live.2)).await;
            expect(&mut h, "GET", PEERS, 200, Some(live.3)).await;
            expect(&mut h, "GET", PDB, 200, Some(live.4)).await;
            expect(&mut h, "GET", DS, 200, Some(live.5)).await;
            expect(&mut h, "GET", DEPLOY, 404, Some(not_found())).await;
            h
        }
    };

    // Pass 1: objects are in place, the status is not: only the status is written.
    let (ctx, handle) = context();
    let written = Arc::new(std::sync::Mutex::new(Value::Null));
    let (w, c, l) = (written.clone(), cache.clone(), live.clone());
    let result = run(cache.clone(), ctx, handle, move |h| async move {
        let mut h = reads(l)(h).await;
        let call = expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        let status = call.body["status"].clone();
        assert_eq!(condition(&status, "Ready")["status"], "True");
        assert_eq!(condition(&status, "Ready")["reason"], "AllAgentsReady");
        assert_eq!(condition(&status, "Progressing")["reason"], "RolloutComplete");
        assert_eq!(status["nodes"], json!({"desired": 3, "ready": 3, "updated": 3}));
        *w.lock().unwrap() = status;
        h
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(controller::RESYNC));

    // Pass 2: the SliceCache now carries that status: reads only, no writes.
    let mut cache = cache;
    cache.status = Some(serde_json::from_value(written.lock().unwrap().clone()).unwrap());
    let (ctx, handle) = context();
    let result = run(cache, ctx, handle, move |h| reads(live)(h)).await;
    assert_eq!(result.unwrap(), Action::requeue(controller::RESYNC));
}

#[tokio::test]
async fn tunable_change_patches_only_the_config_map() {
    let old = cache(&format!("{MINIMAL}  slicing:\n    concurrency: 4\n"));
    let mut new = cache(&format!("{MINIMAL}  slicing:\n    concurrency: 16\n"));
    new.metadata.generation = Some(2);
    let d = desired(&old);
    let (ctx, handle) = context();
    let c = new.clone();
    let result = run(new, ctx, handle, move |mut h| async move {
        expect(
            &mut h,
            "GET",
            SA,
            200,
            Some(serde_json::to_value(&d.service_account).unwrap()),
        )
        .await;
        expect(
            &mut h,
            "GET",
            CM,
            200,
            Some(serde_json::to_value(&d.config_map).unwrap()),
        )
        .await;
        let call = expect_apply(&mut h, CM, None).await;
        let agent_yaml = call.body["data"]["agent.yaml"].as_str().unwrap();
        assert!(agent_yaml.contains("concurrency: 16"), "{agent_yaml}");
        assert_eq!(
            call.body["metadata"]["annotations"]["slicecache.io/config-generation"],
            "2"
        );
        expect(
            &mut h,
            "GET",
            SVC,
            200,
            Some(serde_json::to_value(&d.client_service).unwrap()),
        )
        .await;
        expect(
            &mut h,
            "GET",
            PEERS,
            200,
            Some(serde_json::to_value(&d.peer_service).unwrap()),
        )
        .await;
        let pdb = serde_json::to_value(d.pod_disruption_budget.as_ref().unwrap()).unwrap();
        expect(&mut h, "GET", PDB, 200, Some(pdb)).await;
        // The DaemonSet is read, found current, and not written.
        let ds = serde_json::to_value(settled(daemon_set(&d), 2)).unwrap();
        expect(&mut h, "GET", DS, 200, Some(ds)).await;
        expect(&mut h, "GET", DEPLOY, 404, Some(not_found())).await;
        let call = expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        assert_eq!(call.body["status"]["effective"]["concurrency"], 16);
        assert_eq!(call.body["status"]["observedGeneration"], 2);
        expect_event(&mut h, "Normal", "ConfigUpdated").await;
        h
    })
    .await;
    assert!(result.is_ok());
}

#[tokio::test]
async fn invalid_spec_reports_degraded_and_a_warning_event() {
    let cache = cache(&format!("{MINIMAL}  slicing:\n    sliceSize: 3Mi\n"));
    let (ctx, handle) = context();
    let c = cache.clone();
    let result = run(cache, ctx, handle, move |mut h| async move {
        let call = expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        let degraded = condition(&call.body["status"], "Degraded");
        assert_eq!(degraded["status"], "True");
        assert_eq!(degraded["reason"], "InvalidSpec");
        assert!(degraded["message"].as_str().unwrap().contains("spec.slicing.sliceSize"));
        let event = expect_event(&mut h, "Warning", "InvalidSpec").await;
        assert!(event.body["note"].as_str().unwrap().contains("sliceSize"));
        h
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn paused_writes_only_its_status() {
    let cache = cache(&format!("{MINIMAL}  paused: true\n"));
    let (ctx, handle) = context();
    let c = cache.clone();
    let result = run(cache, ctx, handle, move |mut h| async move {
        let call = expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        let progressing = condition(&call.body["status"], "Progressing");
        assert_eq!(progressing["status"], "False");
        assert_eq!(progressing["reason"], "Paused");
        expect_event(&mut h, "Normal", "Paused").await;
        h
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn delete_without_confirmation_keeps_devices_and_removes_the_finalizer() {
    let mut cache = cache(&format!(
        "{MINIMAL}  cache:\n    disk:\n      devices: [/dev/disk/by-id/nvme-a]\n  cleanup:\n    wipeDevicesOnDelete: true\n"
    ));
    cache.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    ));
    let (ctx, handle) = context();
    let reply = serde_json::to_value(&cache).unwrap();
    let result = run(cache, ctx, handle, move |mut h| async move {
        let event = expect_event(&mut h, "Normal", "CleanedUp").await;
        assert!(event.body["note"].as_str().unwrap().contains("keep their data"));
        let call = expect(&mut h, "PATCH", CACHE, 200, Some(reply)).await;
        assert_eq!(call.content_type, "application/json-patch+json");
        assert_eq!(call.body[1], json!({"op": "remove", "path": "/metadata/finalizers/0"}));
        h
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn delete_with_confirmation_stops_agents_then_wipes_each_node() {
    let mut cache = cache(&format!(
        "{MINIMAL}  cache:\n    disk:\n      devices: [/dev/disk/by-id/nvme-a]\n  cleanup:\n    wipeDevicesOnDelete: true\n    confirmation: yes-really-wipe-cache-devices\n"
    ));
    cache.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    ));
    let jobs = "/apis/batch/v1/namespaces/default/jobs";
    let d = desired(&cache);

    // Pass 1: the agents still run: their DaemonSet is deleted first.
    let (ctx, handle) = context();
    let ds = serde_json::to_value(settled(daemon_set(&d), 1)).unwrap();
    let c = cache.clone();
    let result = run(cache.clone(), ctx.clone(), handle, move |mut h| async move {
        expect(&mut h, "GET", DS, 200, Some(ds.clone())).await;
        let call = expect(&mut h, "DELETE", DS, 200, Some(ds)).await;
        assert_eq!(call.body["propagationPolicy"], "Foreground");
        let call = expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        let progressing = condition(&call.body["status"], "Progressing");
        assert_eq!(progressing["reason"], "CleaningUp");
        assert!(progressing["message"].as_str().unwrap().contains("to stop"));
        expect_event(&mut h, "Normal", "WaitingForAgentsToStop").await;
        h
    })
    .await;
    let error = result.unwrap_err();
    assert_eq!(error.reason(), "WaitingForAgentsToStop");
    assert_eq!(
        error_policy(Arc::new(cache.clone()), &error, ctx),
        Action::requeue(controller::CLEANUP_POLL)
    );

    // Pass 2: agents gone: one wipe Job per node.
    let (ctx, handle) = context();
    let c = cache.clone();
    let result = run(cache.clone(), ctx, handle, move |mut h| async move {
        expect(&mut h, "GET", DS, 404, Some(not_found())).await;
        let call = expect(
            &mut h,
            "GET",
            jobs,
            200,
            Some(json!({"kind": "JobList", "apiVersion": "batch/v1", "metadata": {}, "items": []})),
        )
        .await;
        assert!(
            call.query.contains("component%3Ddevice-wipe") || call.query.contains("component=device-wipe"),
            "{}",
            call.query
        );
        let nodes = json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": [
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}]});
        expect(&mut h, "GET", "/api/v1/nodes", 200, Some(nodes)).await;
        let call = expect_apply(&mut h, &format!("{jobs}/{}", job_name()), None).await;
        let pod = &call.body["spec"]["template"]["spec"];
        assert_eq!(pod["nodeName"], "node-a");
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["containers"][0]["args"][0], "wipe");
        assert_eq!(pod["containers"][0]["securityContext"]["privileged"], true);
        assert_eq!(pod["volumes"][2]["hostPath"]["type"], "BlockDevice");
        let call = expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        assert!(condition(&call.body["status"], "Progressing")["message"]
            .as_str()
            .unwrap()
            .contains("0/1 node Jobs succeeded"));
        expect_event(&mut h, "Normal", "WipeInProgress").await;
        h
    })
    .await;
    assert_eq!(result.unwrap_err().reason(), "WipeInProgress");

    // Pass 3: the Job succeeded: the finalizer goes.
    let (ctx, handle) = context();
    let reply = serde_json::to_value(&cache).unwrap();
    let result = run(cache, ctx, handle, move |mut h| async move {
        expect(&mut h, "GET", DS, 404, Some(not_found())).await;
        let done = json!({"kind": "JobList", "apiVersion": "batch/v1", "metadata": {}, "items": [
            {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job_name(), "annotations": {"slicecache.io/wipe-node": "node-a"}},
             "status": {"succeeded": 1}}]});
        expect(&mut h, "GET", jobs, 200, Some(done)).await;
        let event = expect_event(&mut h, "Normal", "CleanedUp").await;
        assert!(event.body["note"].as_str().unwrap().contains("wiped on 1 node"));
        expect(&mut h, "PATCH", CACHE, 200, Some(reply)).await;
        h
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

fn job_name() -> String {
    let cache = cache(&format!(
        "{MINIMAL}  cache:\n    disk:\n      devices: [/dev/disk/by-id/nvme-a]\n"
    ));
    let validated = ValidatedSliceCache::new(&cache.spec).unwrap();
    build::wipe_job(&validated, &Owner::of(&cache, NS), &BuildDefaults::default(), "node-a")
        .unwrap()
        .metadata
        .name
        .unwrap()
}

#[tokio::test]
async fn server_error_is_returned_reported_and_backed_off() {
    let cache = cache(MINIMAL);
    let (ctx, handle) = context();
    let c = cache.clone();
    let result = run(cache.clone(), ctx.clone(), handle, move |mut h| async move {
        expect(&mut h, "GET", SA, 404, Some(not_found())).await;
        let failure = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                             "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500});
        expect(&mut h, "PATCH", SA, 500, Some(failure)).await;
        let call = expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        let degraded = condition(&call.body["status"], "Degraded");
        assert_eq!(degraded["status"], "True");
        assert_eq!(degraded["reason"], "ApplyFailed");
        assert!(degraded["message"]
            .as_str()
            .unwrap()
            .contains("ServiceAccount media-agent"));
        expect_event(&mut h, "Warning", "ApplyFailed").await;
        h
    })
    .await;
    let error = result.unwrap_err();
    assert_eq!(error.reason(), "ApplyFailed");
    let cache = Arc::new(cache);
    assert_eq!(
        error_policy(cache.clone(), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(cache.clone(), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    assert_eq!(
        error_policy(cache, &error, ctx.clone()),
        Action::requeue(Duration::from_secs(20))
    );
    let metrics = ctx.metrics.render();
    assert!(
        metrics.contains("slicecache_operator_reconcile_errors_total{reason=\"ApplyFailed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_new_slice_cache_gets_the_finalizer_first() {
    let mut cache = cache(MINIMAL);
    cache.metadata.finalizers = None;
    let (ctx, handle) = context();
    let reply = serde_json::to_value(&cache).unwrap();
    let result = run(cache, ctx, handle, move |mut h| async move {
        let call = expect(&mut h, "PATCH", CACHE, 200, Some(reply)).await;
        assert_eq!(call.body[1]["value"], json!([FINALIZER]));
        h
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

// === workload Deployment ===

const DEPLOYMENT: &str = "  origin:\n    url: https://media.example.com\n  workload: Deployment\n";

#[tokio::test]
async fn deployment_mode_applies_a_deployment_and_reports_the_scale_status() {
    let cache = cache(&format!("{DEPLOYMENT}  replicas: 3\n"));
    let d = desired(&cache);
    let live = serde_json::to_value(settled_deployment(deployment(&d), 3)).unwrap();
    let (ctx, handle) = context();
    let c = cache.clone();
    let result = run(cache, ctx, handle, move |mut h| async move {
        for path in [SA, CM, SVC, PEERS, PDB] {
            expect(&mut h, "GET", path, 404, Some(not_found())).await;
            expect_apply(&mut h, path, None).await;
        }
        expect(&mut h, "GET", DEPLOY, 404, Some(not_found())).await;
        let call = expect_apply(&mut h, DEPLOY, Some(live)).await;
        assert_eq!(call.body["kind"], "Deployment");
        assert_eq!(call.body["apiVersion"], "apps/v1");
        assert_eq!(call.body["spec"]["replicas"], 3, "spec.replicas is copied");
        assert_eq!(call.body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(call.body["metadata"]["ownerReferences"][0]["controller"], true);
        let pod = &call.body["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"]["app.kubernetes.io/instance"], "media");
        // No DaemonSet of an earlier workload: nothing to delete.
        expect(&mut h, "GET", DS, 404, Some(not_found())).await;
        let call = expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        let status = &call.body["status"];
        assert_eq!(status["replicas"], 3, "{status}");
        assert_eq!(status["readyReplicas"], 3, "{status}");
        assert_eq!(
            status["selector"],
            "app.kubernetes.io/instance=media,app.kubernetes.io/name=slicecache-agent"
        );
        assert_eq!(status["nodes"], json!({"desired": 3, "ready": 3, "updated": 3}));
        assert_eq!(condition(status, "Ready")["status"], "True");
        assert_eq!(condition(status, "Ready")["message"], "3/3 agents ready");
        assert_eq!(condition(status, "Progressing")["reason"], "RolloutComplete");
        let event = expect_event(&mut h, "Normal", "Created").await;
        assert!(event.body["note"].as_str().unwrap().contains("Deployment media-agent"));
        h
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(controller::RESYNC));
}

/// Without spec.replicas the applied Deployment has no replicas field, so
/// the operator does not own it; an autoscaler that set 7 on the Deployment
/// keeps its 7, and status reports them.
#[tokio::test]
async fn unset_replicas_are_left_to_the_autoscaler() {
    let cache = cache(DEPLOYMENT);
    let d = desired(&cache);
    let scaled = serde_json::to_value(settled_deployment(deployment(&d), 7)).unwrap();
    let mut reads: Vec<(&'static str, Value)> = live_objects_of(&d);
    reads.push((DEPLOY, scaled));
    reads.push((DS, not_found()));

    // Pass 1: the Deployment is not yet applied: its body carries no replicas.
    let (ctx, handle) = context();
    let (c, echo) = (cache.clone(), reads[5].1.clone());
    let written = Arc::new(std::sync::Mutex::new(Value::Null));
    let w = written.clone();
    let result = run(cache.clone(), ctx, handle, move |mut h| async move {
        for path in [SA, CM, SVC, PEERS, PDB] {
            expect(&mut h, "GET", path, 404, Some(not_found())).await;
            expect_apply(&mut h, path, None).await;
        }
        expect(&mut h, "GET", DEPLOY, 404, Some(not_found())).await;
        let call = expect_apply(&mut h, DEPLOY, Some(echo)).await;
        assert!(call.body["spec"].get("replicas").is_none(), "{}", call.body["spec"]);
        expect(&mut h, "GET", DS, 404, Some(not_found())).await;
        let call = expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        let status = call.body["status"].clone();
        assert_eq!(status["replicas"], 7, "{status}");
        assert_eq!(status["nodes"]["desired"], 7, "{status}");
        *w.lock().unwrap() = status;
        expect_event(&mut h, "Normal", "Created").await;
        h
    })
    .await;
    assert!(result.is_ok());

    // Pass 2: the autoscaler's 7 is live: reads only, the Deployment is not written.
    let mut cache = cache;
    cache.status = Some(serde_json::from_value(written.lock().unwrap().clone()).unwrap());
    let (ctx, handle) = context();
    let result = run(cache, ctx, handle, move |mut h| async move {
        expect_reads(&mut h, reads).await;
        h
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(controller::RESYNC));
}

/// The SliceCache's objects other than the workload, as `desired` builds them.
fn live_objects_of(d: &DesiredState) -> Vec<(&'static str, Value)> {
    vec![
        (SA, serde_json::to_value(&d.service_account).unwrap()),
        (CM, serde_json::to_value(&d.config_map).unwrap()),
        (SVC, serde_json::to_value(&d.client_service).unwrap()),
        (PEERS, serde_json::to_value(&d.peer_service).unwrap()),
        (
            PDB,
            serde_json::to_value(d.pod_disruption_budget.as_ref().unwrap()).unwrap(),
        ),
    ]
}

#[tokio::test]
async fn switching_the_workload_replaces_the_old_kind() {
    let as_daemon_set = cache(MINIMAL);
    let as_deployment = cache(&format!("{DEPLOYMENT}  replicas: 2\n"));
    let old = desired(&as_daemon_set);
    let new = desired(&as_deployment);
    // Everything but the workload stays as it is.
    let shared = live_objects_of(&old);
    assert_eq!(shared, live_objects_of(&new));

    // DaemonSet -> Deployment: the Deployment is applied, then the DaemonSet deleted.
    let (ctx, handle) = context();
    let live_ds = serde_json::to_value(settled(daemon_set(&old), 2)).unwrap();
    let (c, reads, echo) = (
        as_deployment.clone(),
        shared.clone(),
        serde_json::to_value(deployment(&new)).unwrap(),
    );
    let result = run(as_deployment, ctx, handle, move |mut h| async move {
        expect_reads(&mut h, reads).await;
        expect(&mut h, "GET", DEPLOY, 404, Some(not_found())).await;
        let call = expect_apply(&mut h, DEPLOY, Some(echo)).await;
        assert_eq!(call.body["spec"]["replicas"], 2);
        expect(&mut h, "GET", DS, 200, Some(live_ds.clone())).await;
        let call = expect(&mut h, "DELETE", DS, 200, Some(live_ds)).await;
        assert_eq!(call.body["propagationPolicy"], "Background");
        let call = expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        let status = &call.body["status"];
        // The new Deployment has not been observed yet.
        assert_eq!(condition(status, "Ready")["reason"], "Reconciling");
        assert!(condition(status, "Ready")["message"]
            .as_str()
            .unwrap()
            .contains("Deployment controller"));
        let event = expect_event(&mut h, "Normal", "Created").await;
        assert!(event.body["note"].as_str().unwrap().contains("Deployment media-agent"));
        let event = expect_event(&mut h, "Normal", "Deleted").await;
        assert_eq!(event.body["note"], "deleted DaemonSet media-agent, no longer wanted");
        h
    })
    .await;
    assert!(result.is_ok());

    // Deployment -> DaemonSet: the reverse. A Deployment that some other
    // controller owns would be left alone; this one is ours.
    let (ctx, handle) = context();
    let live_deploy = serde_json::to_value(settled_deployment(deployment(&new), 2)).unwrap();
    let echo = serde_json::to_value(daemon_set(&old)).unwrap();
    let c = as_daemon_set.clone();
    let result = run(as_daemon_set, ctx, handle, move |mut h| async move {
        expect_reads(&mut h, shared).await;
        expect(&mut h, "GET", DS, 404, Some(not_found())).await;
        let call = expect_apply(&mut h, DS, Some(echo)).await;
        assert_eq!(call.body["kind"], "DaemonSet");
        expect(&mut h, "GET", DEPLOY, 200, Some(live_deploy.clone())).await;
        expect(&mut h, "DELETE", DEPLOY, 200, Some(live_deploy)).await;
        expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        expect_event(&mut h, "Normal", "Created").await;
        let event = expect_event(&mut h, "Normal", "Deleted").await;
        assert_eq!(event.body["note"], "deleted Deployment media-agent, no longer wanted");
        h
    })
    .await;
    assert!(result.is_ok());
}

#[tokio::test]
async fn a_workload_of_the_other_kind_owned_by_someone_else_is_not_deleted() {
    let cache = cache(DEPLOYMENT);
    let d = desired(&cache);
    let mut foreign = daemon_set(&desired(&self::cache(MINIMAL)));
    foreign.metadata.owner_references = None;
    let foreign = serde_json::to_value(foreign).unwrap();
    let live = serde_json::to_value(settled_deployment(deployment(&d), 1)).unwrap();
    let mut reads = live_objects_of(&d);
    reads.push((DEPLOY, live));
    reads.push((DS, foreign));
    let (ctx, handle) = context();
    let c = cache.clone();
    let result = run(cache, ctx, handle, move |mut h| async move {
        // Reads only: no DELETE of the DaemonSet that is not ours.
        expect_reads(&mut h, reads).await;
        expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        h
    })
    .await;
    assert!(result.is_ok());
}

#[tokio::test]
async fn a_deployment_scaled_to_zero_is_not_ready_and_not_degraded() {
    let cache = cache(&format!("{DEPLOYMENT}  replicas: 0\n"));
    let d = desired(&cache);
    let mut reads = live_objects_of(&d);
    reads.push((
        DEPLOY,
        serde_json::to_value(settled_deployment(deployment(&d), 0)).unwrap(),
    ));
    reads.push((DS, not_found()));
    let (ctx, handle) = context();
    let c = cache.clone();
    let result = run(cache, ctx, handle, move |mut h| async move {
        expect_reads(&mut h, reads).await;
        let call = expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        let status = &call.body["status"];
        assert_eq!(condition(status, "Ready")["status"], "False");
        assert_eq!(condition(status, "Ready")["reason"], "ScaledToZero");
        assert_eq!(condition(status, "Degraded")["status"], "False");
        assert_eq!(condition(status, "Progressing")["status"], "False");
        assert_eq!(status["replicas"], 0);
        h
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(controller::RESYNC));
}

/// Storage of the pod goes with the pods: even a confirmed wipe has nothing
/// to do, and no agent is stopped first.
#[tokio::test]
async fn delete_with_storage_of_the_pod_wipes_nothing() {
    let mut cache = cache(&format!(
        "{DEPLOYMENT}  cache:\n    disk:\n      volumeClaimTemplate:\n        size: 10Gi\n  cleanup:\n    wipeDevicesOnDelete: true\n    confirmation: yes-really-wipe-cache-devices\n"
    ));
    cache.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    ));
    let (ctx, handle) = context();
    let reply = serde_json::to_value(&cache).unwrap();
    let result = run(cache, ctx, handle, move |mut h| async move {
        let event = expect_event(&mut h, "Normal", "CleanedUp").await;
        assert!(
            event.body["note"].as_str().unwrap().contains("storage of the pod only"),
            "{}",
            event.body["note"]
        );
        expect(&mut h, "PATCH", CACHE, 200, Some(reply)).await;
        h
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

// === tuning ===

/// A Prometheus stand-in on 127.0.0.1 answering instant queries with
/// `answer(promql)` (an empty vector for `None`). Counts the queries.
async fn fake_prometheus(
    answer: impl Fn(&str) -> Option<f64> + Send + Sync + 'static,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let queries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (answer, counter) = (Arc::new(answer), queries.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (answer, counter) = (answer.clone(), counter.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head.split(' ').nth(1).unwrap_or("");
                let promql = target
                    .split_once("?query=")
                    .map(|(_, q)| percent_decode(q.split('&').next().unwrap_or("")))
                    .unwrap_or_default();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let result = match answer(&promql) {
                    Some(v) => format!(r#"[{{"metric":{{}},"value":[1700000000,"{v}"]}}]"#),
                    None => "[]".into(),
                };
                let body = format!(r#"{{"status":"success","data":{{"resultType":"vector","result":{result}}}}}"#);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, queries)
}

/// The tune step queries the series that `spec.tuning.prometheus.selector`
/// picks, and by default those of the agent pods.
#[tokio::test]
async fn the_tuner_queries_the_series_the_selector_picks() {
    use slicecache_operator::controller::{build::Owner, tune::TunerRegistry};
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = seen.clone();
    let (url, _) = fake_prometheus(move |promql| {
        record.lock().unwrap().push(promql.to_string());
        None
    })
    .await;
    let owner = Owner {
        name: "media".into(),
        namespace: NS.into(),
        uid: Some("uid-1".into()),
        generation: 1,
    };
    for (selector, want) in [
        ("", r#"{namespace="default",pod=~"media-agent-"#),
        (
            "      selector: 'job=\"edge\",cluster=~\"eu-.*\"'\n",
            r#"{job="edge",cluster=~"eu-.*""#,
        ),
    ] {
        let cache = cache(&format!(
            "{MINIMAL}  tuning:\n    mode: Recommend\n    prometheus:\n      url: {url}\n{selector}    interval: 20s\n"
        ));
        let validated = ValidatedSliceCache::new(&cache.spec).unwrap();
        let registry = TunerRegistry::new(Arc::new(Metrics::new().unwrap()));
        let report = registry.tune(&owner, &validated, None).await;
        let queries = std::mem::take(&mut *seen.lock().unwrap());
        assert_eq!(queries.len(), 15, "{queries:#?}");
        for q in &queries {
            assert!(q.contains(want), "{want} not in {q}");
        }
        // Nothing matches: the tuner holds and says so.
        assert_eq!(report.condition.reason, "NoData", "{report:?}");
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

const TUNING_INTERVAL: Duration = Duration::from_secs(20);

fn tuned_cache(mode: &str, prometheus: &str) -> SliceCache {
    cache(&format!(
        "{MINIMAL}  slicing:\n    concurrency: 8\n  tuning:\n    mode: {mode}\n    prometheus:\n      url: {prometheus}\n    interval: 20s\n"
    ))
}

/// Agents behind an origin that refuses a fifth of their subrequests with
/// 429: the law halves concurrency at once. 93.4% of slices are hits.
async fn throttled_prometheus() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use slicecache_operator::tuner::{window_for, Queries, Selector};
    let q = Queries::new(&Selector::for_slicecache(NS, "media"), window_for(TUNING_INTERVAL));
    fake_prometheus(move |promql| {
        if promql == q.hit_ratio {
            Some(0.934)
        } else if promql == q.throttle_ratio {
            Some(0.2)
        } else if promql == q.error_ratio {
            Some(0.0)
        } else if promql == q.origin_request_rate {
            Some(50.0)
        } else if promql == q.concurrency {
            Some(8.0)
        } else if promql == q.slice_size {
            Some(1048576.0)
        } else {
            None
        }
    })
    .await
}

/// The objects of `cache` as the spec builds them, live and settled.
fn live_objects(cache: &SliceCache) -> Vec<(&'static str, Value)> {
    let d = desired(cache);
    vec![
        (SA, serde_json::to_value(&d.service_account).unwrap()),
        (CM, serde_json::to_value(&d.config_map).unwrap()),
        (SVC, serde_json::to_value(&d.client_service).unwrap()),
        (PEERS, serde_json::to_value(&d.peer_service).unwrap()),
        (
            PDB,
            serde_json::to_value(d.pod_disruption_budget.as_ref().unwrap()).unwrap(),
        ),
        (DS, serde_json::to_value(settled(daemon_set(&d), 2)).unwrap()),
        (DEPLOY, not_found()),
    ]
}

/// Every owned object is read and found as desired, or absent (no write follows).
async fn expect_reads(h: &mut Handle, live: Vec<(&'static str, Value)>) {
    for (path, object) in live {
        let code = if object["reason"] == "NotFound" { 404 } else { 200 };
        expect(h, "GET", path, code, Some(object)).await;
    }
}

/// Seconds of a requeue action (kube's `Action` has no getter).
fn requeue_secs(action: &Action) -> f64 {
    let text = format!("{action:?}");
    let inner = text
        .split("Some(")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .unwrap_or_else(|| panic!("no requeue in {text}"));
    if let Some(ms) = inner.strip_suffix("ms") {
        ms.parse::<f64>().unwrap() / 1e3
    } else {
        inner.strip_suffix('s').unwrap().parse().unwrap()
    }
}

#[tokio::test]
async fn auto_tuning_halves_concurrency_on_429s_through_the_config_map() {
    let (url, queries) = throttled_prometheus().await;
    let cache = tuned_cache("Auto", &url);
    let live = live_objects(&cache);
    let (ctx, handle) = context();

    // Pass 1: the tuner decides 8 -> 4; only the ConfigMap is rewritten.
    let (c, l) = (cache.clone(), live.clone());
    let written = Arc::new(std::sync::Mutex::new((Value::Null, Value::Null)));
    let w = written.clone();
    let (result, handle) = run_keeping_handle(cache.clone(), ctx.clone(), handle, move |mut h| async move {
        for (path, object) in l {
            let code = if object["reason"] == "NotFound" { 404 } else { 200 };
            expect(&mut h, "GET", path, code, Some(object)).await;
            if path == CM {
                let call = expect_apply(&mut h, CM, None).await;
                let yaml = call.body["data"]["agent.yaml"].as_str().unwrap();
                let config: slicecache_api::agent_config::AgentConfig = serde_yaml_ng::from_str(yaml).unwrap();
                assert_eq!(config.tunables.concurrency, 4, "{yaml}");
                assert_eq!(config.tunables.slice_size.0, 1 << 20, "{yaml}");
                w.lock().unwrap().0 = call.body.clone();
            }
        }
        // The DaemonSet was read and not written: no restart.
        let call = expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        let status = &call.body["status"];
        let decision = &status["tuning"]["lastDecision"];
        assert_eq!(
            decision["from"],
            json!({"sliceSize": "1Mi", "concurrency": 8}),
            "{decision}"
        );
        assert_eq!(
            decision["to"],
            json!({"sliceSize": "1Mi", "concurrency": 4}),
            "{decision}"
        );
        assert!(decision["reason"].as_str().unwrap().contains("429"), "{decision}");
        assert_eq!(decision["metrics"]["originThrottleRatio"], "0.2000");
        assert_eq!(decision["metrics"]["originRequestsPerSecond"], "50.00");
        assert!(decision["time"].is_string());
        let active = condition(status, "TuningActive");
        assert_eq!(active["status"], "True");
        assert_eq!(active["reason"], "Tuning");
        assert!(active["message"].as_str().unwrap().contains(&url), "{active}");
        assert_eq!(status["effective"], json!({"sliceSize": "1Mi", "concurrency": 4}));
        assert_eq!(status["hitRatio"], "93.4%");
        w.lock().unwrap().1 = status.clone();
        expect_event(&mut h, "Normal", "ConfigUpdated").await;
        let event = expect_event(&mut h, "Normal", "TuningChanged").await;
        let note = event.body["note"].as_str().unwrap();
        assert!(
            note.starts_with("slice 1Mi concurrency 8 -> slice 1Mi concurrency 4: origin 429/503 at 20.00%"),
            "{note}"
        );
        h
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(TUNING_INTERVAL));
    let asked = queries.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(asked, 15, "one evaluation runs every query once");
    // The operator's metrics: the change, the values, the reason, the
    // evaluation, and the agents the DaemonSet reports.
    let rendered = ctx.metrics.render();
    let expected = [
        r#"slicecache_operator_tuning_decisions_total{direction="down",knob="concurrency",namespace="default",slicecache="media"} 1"#,
        r#"slicecache_operator_tuning_value{knob="concurrency",namespace="default",slicecache="media"} 4"#,
        r#"slicecache_operator_tuning_value{knob="sliceSize",namespace="default",slicecache="media"} 1048576"#,
        r#"slicecache_operator_tuning_active{namespace="default",reason="Tuning",slicecache="media"} 1"#,
        r#"slicecache_operator_tuning_interval_seconds{namespace="default",slicecache="media"} 20"#,
        r#"slicecache_operator_agents_desired{namespace="default",slicecache="media"} 2"#,
        r#"slicecache_operator_agents_ready{namespace="default",slicecache="media"} 2"#,
    ];
    for line in expected {
        assert!(rendered.lines().any(|l| l == line), "no {line} in\n{rendered}");
    }
    let evaluated: f64 = rendered
        .lines()
        .find_map(|l| l.strip_prefix(r#"slicecache_operator_tuning_last_evaluation_timestamp_seconds{namespace="default",slicecache="media"} "#))
        .unwrap_or_else(|| panic!("no last evaluation in\n{rendered}"))
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - evaluated).abs() < 60.0,
        "last evaluation at {evaluated}, now {now}"
    );

    // Pass 2, at once (the echo of the status write): no queries, and the
    // tuner's value stays in force: reads only, nothing is written.
    let (config_map, status) = written.lock().unwrap().clone();
    let mut cache = cache;
    cache.status = Some(serde_json::from_value(status).unwrap());
    let live: Vec<_> = live
        .into_iter()
        .map(|(path, object)| (path, if path == CM { config_map.clone() } else { object }))
        .collect();
    let (result, handle) = run_keeping_handle(cache.clone(), ctx.clone(), handle, move |mut h| async move {
        expect_reads(&mut h, live).await;
        h
    })
    .await;
    let secs = requeue_secs(&result.unwrap());
    assert!(
        secs > 15.0 && secs <= 20.0,
        "requeued after {secs}s: at the next evaluation"
    );
    assert_eq!(
        queries.load(std::sync::atomic::Ordering::SeqCst),
        asked,
        "no evaluation before the interval"
    );
    assert!(
        ctx.metrics.render().lines().any(|l| l == expected[0]),
        "no evaluation, no new count"
    );

    // Pass 3: the SliceCache is deleted: its series go with it.
    cache.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    ));
    let reply = serde_json::to_value(&cache).unwrap();
    let (result, _) = run_keeping_handle(cache, ctx.clone(), handle, move |mut h| async move {
        expect_event(&mut h, "Normal", "CleanedUp").await;
        expect(&mut h, "PATCH", CACHE, 200, Some(reply)).await;
        h
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
    let rendered = ctx.metrics.render();
    assert!(!rendered.contains(r#"slicecache="media""#), "{rendered}");
}

#[tokio::test]
async fn recommend_writes_the_decision_to_status_only() {
    let (url, _) = throttled_prometheus().await;
    let cache = tuned_cache("Recommend", &url);
    let live = live_objects(&cache);
    let (ctx, handle) = context();
    let c = cache.clone();
    let result = run(cache, ctx, handle, move |mut h| async move {
        // Every object is read and found current: the ConfigMap keeps the spec's 8.
        expect_reads(&mut h, live).await;
        let call = expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        let status = &call.body["status"];
        let decision = &status["tuning"]["lastDecision"];
        assert_eq!(decision["from"]["concurrency"], 8, "{decision}");
        assert_eq!(decision["to"]["concurrency"], 4, "{decision}");
        let active = condition(status, "TuningActive");
        assert_eq!(active["status"], "True");
        assert_eq!(active["reason"], "Recommending");
        assert_eq!(status["effective"]["concurrency"], 8);
        // Recommend reads the hit ratio too.
        assert_eq!(status["hitRatio"], "93.4%");
        let event = expect_event(&mut h, "Normal", "TuningRecommended").await;
        assert!(event.body["note"]
            .as_str()
            .unwrap()
            .contains("spec values stay in force"));
        h
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(TUNING_INTERVAL));
}

#[tokio::test]
async fn prometheus_down_holds_and_says_why() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = tuned_cache("Auto", &format!("http://127.0.0.1:{port}"));
    let live = live_objects(&cache);
    let (ctx, handle) = context();
    let c = cache.clone();
    let result = run(cache, ctx.clone(), handle, move |mut h| async move {
        // Reads only: no ConfigMap write.
        expect_reads(&mut h, live).await;
        let call = expect_apply(&mut h, STATUS, Some(with_status(&c, &json!({})))).await;
        let status = &call.body["status"];
        let active = condition(status, "TuningActive");
        assert_eq!(active["status"], "False", "{active}");
        assert_eq!(active["reason"], "PrometheusUnreachable", "{active}");
        let message = active["message"].as_str().unwrap();
        assert!(message.contains("Prometheus unreachable"), "{message}");
        assert!(message.contains("kept"), "{message}");
        let decision = &status["tuning"]["lastDecision"];
        assert_eq!(decision["from"], decision["to"], "{decision}");
        assert_eq!(decision["to"]["concurrency"], 8, "{decision}");
        assert!(
            decision["reason"].as_str().unwrap().starts_with("holding:"),
            "{decision}"
        );
        assert_eq!(status["effective"]["concurrency"], 8);
        assert!(
            status.get("hitRatio").is_none(),
            "no hit ratio without Prometheus: {status}"
        );
        let event = expect_event(&mut h, "Warning", "PrometheusUnreachable").await;
        assert!(event.body["note"].as_str().unwrap().contains("unreachable"));
        h
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(TUNING_INTERVAL));
    // Alertable: the reason, the hold, and no successful evaluation.
    let rendered = ctx.metrics.render();
    for line in [
        r#"slicecache_operator_tuning_active{namespace="default",reason="PrometheusUnreachable",slicecache="media"} 1"#,
        r#"slicecache_operator_tuning_holds_total{namespace="default",reason="PrometheusUnreachable",slicecache="media"} 1"#,
    ] {
        assert!(rendered.lines().any(|l| l == line), "no {line} in\n{rendered}");
    }
    assert!(
        !rendered.contains("slicecache_operator_tuning_last_evaluation_timestamp_seconds{"),
        "{rendered}"
    );
    assert!(
        !rendered.contains("slicecache_operator_tuning_decisions_total{"),
        "{rendered}"
    );
}

/// The controller lists (then watches) SliceCaches, every kind it owns (by
/// the managed-by label) and Nodes (all of them: any may match a
/// placement). Each LIST here gets an empty list.
#[tokio::test]
async fn the_controller_watches_owned_kinds_and_nodes() {
    let (ctx, mut handle) = context();
    let controller = tokio::spawn(controller::run(ctx, std::future::pending()));

    let mut listed = std::collections::BTreeMap::new();
    let mut open_watches = Vec::new();
    while listed.len() < 9 {
        let (call, send) = next(&mut handle).await;
        assert_eq!(call.method, "GET", "{} {}", call.path, call.query);
        if call.query.contains("watch=true") {
            // Leave watches open: the test is about what is listed.
            open_watches.push(send);
            continue;
        }
        listed.insert(call.path.clone(), call.query.clone());
        respond(
            send,
            200,
            &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
        );
    }
    let managed = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dslicecache-operator";
    for owned in [
        "/apis/apps/v1/daemonsets",
        "/apis/apps/v1/deployments",
        "/api/v1/configmaps",
        "/api/v1/services",
        "/api/v1/serviceaccounts",
        "/apis/policy/v1/poddisruptionbudgets",
        "/apis/batch/v1/jobs",
    ] {
        let query = listed
            .get(owned)
            .unwrap_or_else(|| panic!("{owned} not listed: {listed:?}"));
        assert!(query.contains(managed), "{owned}?{query}");
    }
    assert!(
        listed.contains_key("/apis/slicecache.io/v1alpha1/slicecaches"),
        "{listed:?}"
    );
    let nodes = listed
        .get("/api/v1/nodes")
        .unwrap_or_else(|| panic!("nodes not listed: {listed:?}"));
    assert!(!nodes.contains("labelSelector"), "every node is watched: {nodes}");

    controller.abort();
}
