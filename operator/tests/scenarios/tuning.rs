//! The tuner inside reconcile: the selector's series, mode Auto through the
//! ConfigMap, mode Recommend to status only, and Prometheus down.

use slicecache_testkit::scripted::{prometheus_vector, query_param, Answer, Scripted};

use crate::harness::*;

// === tuning ===

/// A Prometheus stand-in on 127.0.0.1 answering instant queries with
/// `answer(promql)` (an empty vector for `None`).
async fn fake_prometheus(answer: impl Fn(&str) -> Option<f64> + Send + Sync + 'static) -> Scripted {
    Scripted::start(move |target| {
        let promql = query_param(target, "query").unwrap_or_default();
        Answer::json(prometheus_vector(answer(&promql)))
    })
    .await
}

/// The tune step queries the series that `spec.tuning.prometheus.selector`
/// picks, and by default those of the agent pods.
#[tokio::test]
async fn the_tuner_queries_the_series_the_selector_picks() {
    use slicecache_operator::controller::{build::Owner, tune::TunerRegistry};
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = seen.clone();
    let prometheus = fake_prometheus(move |promql| {
        record.lock().unwrap().push(promql.to_string());
        None
    })
    .await;
    let url = prometheus.url();
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

const TUNING_INTERVAL: Duration = Duration::from_secs(20);

fn tuned_cache(mode: &str, prometheus: &str) -> SliceCache {
    cache(&format!(
        "{MINIMAL}  slicing:\n    concurrency: 8\n  tuning:\n    mode: {mode}\n    prometheus:\n      url: {prometheus}\n    interval: 20s\n"
    ))
}

/// Agents behind an origin that refuses a fifth of their subrequests with
/// 429: the law halves concurrency at once. 93.4% of slices are hits.
async fn throttled_prometheus() -> Scripted {
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
    let prometheus = throttled_prometheus().await;
    let url = prometheus.url();
    let cache = tuned_cache("Auto", &url);
    let live = live_objects(&cache);
    let (ctx, handle) = context();

    // Pass 1: the tuner decides 8 -> 4; only the ConfigMap is rewritten.
    let (c, l) = (cache.clone(), live.clone());
    let written = Arc::new(std::sync::Mutex::new((Value::Null, Value::Null)));
    let w = written.clone();
    let (result, handle) = run_keeping_handle(cache.clone(), ctx.clone(), handle, move |mut h| async move {
        expect_reads(&mut h, l).await;
        let call = expect_apply(&mut h, CM, None).await;
        let yaml = call.body["data"]["agent.yaml"].as_str().unwrap();
        let config: slicecache_api::agent_config::AgentConfig = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(config.tunables.concurrency, 4, "{yaml}");
        assert_eq!(config.tunables.slice_size.0, 1 << 20, "{yaml}");
        w.lock().unwrap().0 = call.body.clone();
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
    let asked = prometheus.requests();
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
    assert_eq!(prometheus.requests(), asked, "no evaluation before the interval");
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
    let prometheus = throttled_prometheus().await;
    let cache = tuned_cache("Recommend", &prometheus.url());
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
