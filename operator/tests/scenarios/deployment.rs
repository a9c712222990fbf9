//! Workload Deployment: the scale status, replicas left to an autoscaler,
//! switching workload kinds, and deletion with storage of the pod.

use crate::harness::*;

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
        // No DaemonSet of an earlier workload: nothing to delete.
        for path in [SA, CM, SVC, PEERS, PDB, DS, DEPLOY] {
            expect(&mut h, "GET", path, 404, Some(not_found())).await;
        }
        for path in [SA, CM, SVC, PEERS, PDB] {
            expect_apply(&mut h, path, None).await;
        }
        let call = expect_apply(&mut h, DEPLOY, Some(live)).await;
        assert_eq!(call.body["kind"], "Deployment");
        assert_eq!(call.body["apiVersion"], "apps/v1");
        assert_eq!(call.body["spec"]["replicas"], 3, "spec.replicas is copied");
        assert_eq!(call.body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(call.body["metadata"]["ownerReferences"][0]["controller"], true);
        let pod = &call.body["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"]["app.kubernetes.io/instance"], "media");
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
    reads.push((DS, not_found()));
    reads.push((DEPLOY, scaled));

    // Pass 1: the Deployment is not yet applied: its body carries no replicas.
    let (ctx, handle) = context();
    let (c, echo) = (cache.clone(), reads[6].1.clone());
    let written = Arc::new(std::sync::Mutex::new(Value::Null));
    let w = written.clone();
    let result = run(cache.clone(), ctx, handle, move |mut h| async move {
        for path in [SA, CM, SVC, PEERS, PDB, DS, DEPLOY] {
            expect(&mut h, "GET", path, 404, Some(not_found())).await;
        }
        for path in [SA, CM, SVC, PEERS, PDB] {
            expect_apply(&mut h, path, None).await;
        }
        let call = expect_apply(&mut h, DEPLOY, Some(echo)).await;
        assert!(call.body["spec"].get("replicas").is_none(), "{}", call.body["spec"]);
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
        expect(&mut h, "GET", DS, 200, Some(live_ds.clone())).await;
        expect(&mut h, "GET", DEPLOY, 404, Some(not_found())).await;
        let call = expect_apply(&mut h, DEPLOY, Some(echo)).await;
        assert_eq!(call.body["spec"]["replicas"], 2);
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
        expect(&mut h, "GET", DEPLOY, 200, Some(live_deploy.clone())).await;
        let call = expect_apply(&mut h, DS, Some(echo)).await;
        assert_eq!(call.body["kind"], "DaemonSet");
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
    reads.push((DS, foreign));
    reads.push((DEPLOY, live));
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
    reads.push((DS, not_found()));
    reads.push((
        DEPLOY,
        serde_json::to_value(settled_deployment(deployment(&d), 0)).unwrap(),
    ));
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
