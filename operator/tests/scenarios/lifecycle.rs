//! The lifecycle of a SliceCache run by a DaemonSet: first reconcile,
//! settled resyncs, tunable changes, invalid and paused specs, deletion with
//! and without a device wipe, server errors and the finalizer, and what the
//! controller watches.

use crate::harness::*;

#[tokio::test]
async fn first_reconcile_creates_everything_and_reports_progress() {
    let (ctx, handle) = context();
    let cache = cache(MINIMAL);
    let c = cache.clone();
    let result = run(cache, ctx, handle, move |mut h| async move {
        // Every object is read first (concurrently, in this order); there is
        // no Deployment of an earlier workload: nothing to delete.
        for path in [SA, CM, SVC, PEERS, PDB, DS, DEPLOY] {
            expect(&mut h, "GET", path, 404, Some(not_found())).await;
        }
        for (path, kind) in [
            (SA, "ServiceAccount"),
            (CM, "ConfigMap"),
            (SVC, "Service"),
            (PEERS, "Service"),
            (PDB, "PodDisruptionBudget"),
            (DS, "DaemonSet"),
        ] {
            let call = expect_apply(&mut h, path, None).await;
            assert_eq!(call.body["kind"], kind);
            assert_eq!(call.body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
            assert_eq!(call.body["metadata"]["ownerReferences"][0]["controller"], true);
        }
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
        let call = expect_apply(&mut h, CM, None).await;
        let agent_yaml = call.body["data"]["agent.yaml"].as_str().unwrap();
        assert!(agent_yaml.contains("concurrency: 16"), "{agent_yaml}");
        assert_eq!(
            call.body["metadata"]["annotations"]["slicecache.io/config-generation"],
            "2"
        );
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
        for path in [SA, CM, SVC, PEERS, PDB, DS, DEPLOY] {
            expect(&mut h, "GET", path, 404, Some(not_found())).await;
        }
        let failure = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                             "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500});
        expect(&mut h, "PATCH", SA, 500, Some(failure)).await;
        // The other writes went out with it (they are concurrent); no
        // workload write follows the failure.
        for path in [CM, SVC, PEERS, PDB] {
            expect_apply(&mut h, path, None).await;
        }
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

/// The controller lists (then watches) SliceCaches, every kind it owns (by
/// the managed-by label), the EndpointSlices of its Services (the same label) and Nodes (all of them: any may match a
/// placement). Each LIST here gets an empty list.
#[tokio::test]
async fn the_controller_watches_owned_kinds_and_nodes() {
    let (ctx, mut handle) = context();
    let controller = tokio::spawn(controller::run(
        ctx,
        controller::DEFAULT_MAX_CONCURRENT_RECONCILES,
        std::future::pending(),
    ));

    let mut listed = std::collections::BTreeMap::new();
    let mut open_watches = Vec::new();
    while listed.len() < 10 {
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
        "/apis/discovery.k8s.io/v1/endpointslices",
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
