//! The mocked API server every scenario talks to, and the fixtures they
//! share: the SliceCache paths, builders of live objects, and `expect`
//! helpers that assert one API call each (method, path, body) and answer it.

pub use std::{sync::Arc, time::Duration};

pub use http::{Request, Response};
pub use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus, Deployment, DeploymentStatus};
pub use kube::{client::Body, runtime::controller::Action, Client};
pub use serde_json::{json, Value};
pub use slicecache_api::{SliceCache, ValidatedSliceCache};
pub use slicecache_operator::{
    controller::{
        self,
        build::{self, BuildDefaults, DesiredState, Owner},
        error_policy, reconcile, Context, FINALIZER,
    },
    metrics::Metrics,
};

pub use slicecache_testkit::mock_apiserver::Handle;

pub const NS: &str = "default";
pub const SA: &str = "/api/v1/namespaces/default/serviceaccounts/media-agent";
pub const CM: &str = "/api/v1/namespaces/default/configmaps/media-agent-config";
pub const SVC: &str = "/api/v1/namespaces/default/services/media";
pub const PEERS: &str = "/api/v1/namespaces/default/services/media-peers";
pub const PDB: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets/media-agent";
pub const DS: &str = "/apis/apps/v1/namespaces/default/daemonsets/media-agent";
pub const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments/media-agent";
pub const CACHE: &str = "/apis/slicecache.io/v1alpha1/namespaces/default/slicecaches/media";
pub const STATUS: &str = "/apis/slicecache.io/v1alpha1/namespaces/default/slicecaches/media/status";
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

pub fn context() -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let metrics = Arc::new(Metrics::new().unwrap());
    let ctx = Context::new(client, metrics, BuildDefaults::default(), Some("test".into()));
    (Arc::new(ctx), handle)
}

pub fn cache(spec_yaml: &str) -> SliceCache {
    let mut cache: SliceCache = serde_yaml_ng::from_str(&format!(
        "apiVersion: slicecache.io/v1alpha1\nkind: SliceCache\nmetadata:\n  name: media\n  namespace: default\nspec:\n{spec_yaml}"
    ))
    .unwrap();
    cache.metadata.uid = Some("uid-1".into());
    cache.metadata.generation = Some(1);
    cache.metadata.finalizers = Some(vec![FINALIZER.into()]);
    cache
}

pub const MINIMAL: &str = "  origin:\n    url: https://media.example.com\n";

pub fn desired(cache: &SliceCache) -> DesiredState {
    let validated = ValidatedSliceCache::new(&cache.spec).unwrap();
    build::build(&validated, &Owner::of(cache, NS), &BuildDefaults::default()).unwrap()
}

pub use slicecache_testkit::mock_apiserver::{next, Call};

pub fn respond(send: tower_test::mock::SendResponse<Response<Body>>, code: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

pub fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "not found", "reason": "NotFound", "code": 404})
}

/// Expects `method path`, answers `code` with `body` (`None`: echo the request body).
pub async fn expect(handle: &mut Handle, method: &str, path: &str, code: u16, body: Option<Value>) -> Call {
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
pub async fn expect_apply(handle: &mut Handle, path: &str, reply: Option<Value>) -> Call {
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

pub async fn expect_event(handle: &mut Handle, type_: &str, reason: &str) -> Call {
    let call = expect(handle, "POST", EVENTS, 201, None).await;
    assert_eq!(call.body["reason"], reason, "{}", call.body);
    assert_eq!(call.body["type"], type_, "{}", call.body);
    assert_eq!(call.body["regarding"]["name"], "media");
    assert_eq!(call.body["regarding"]["kind"], "SliceCache");
    call
}

pub async fn expect_no_more_calls(handle: &mut Handle) {
    let more = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
    if let Ok(Some((request, _))) = more {
        panic!("unexpected extra call {} {}", request.method(), request.uri());
    }
}

pub fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

pub fn with_status(cache: &SliceCache, status: &Value) -> Value {
    let mut v = serde_json::to_value(cache).unwrap();
    v["status"] = status.clone();
    v
}

pub fn daemon_set(d: &DesiredState) -> DaemonSet {
    d.workload.daemon_set().expect("a DaemonSet").clone()
}

pub fn deployment(d: &DesiredState) -> Deployment {
    d.workload.deployment().expect("a Deployment").clone()
}

/// A Deployment its controller has rolled out: `replicas` pods, all ready.
pub fn settled_deployment(mut deploy: Deployment, replicas: i32) -> Deployment {
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

pub fn settled(mut ds: DaemonSet, nodes: i32) -> DaemonSet {
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
pub async fn run<F, Fut>(
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
pub async fn run_keeping_handle<F, Fut>(
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

/// Every owned object is read and found as desired, or absent (no write follows).
pub async fn expect_reads(h: &mut Handle, live: Vec<(&'static str, Value)>) {
    for (path, object) in live {
        let code = if object["reason"] == "NotFound" { 404 } else { 200 };
        expect(h, "GET", path, code, Some(object)).await;
    }
}
