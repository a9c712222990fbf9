//! The tuner against Prometheus servers that fail it: down, slow, empty,
//! and not Prometheus at all. (A real Prometheus scraping a real agent,
//! queried through `slicecache-operator tune`, is in the e2e crate.)

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use slicecache_operator::tuner::{
    self, Bounds, HoldReason, LawConfig, PrometheusClient, Queries, QueryError, Selector, Tunables, Tuner,
};
use slicecache_testkit::net::free_addr;
use slicecache_testkit::scripted::{prometheus_vector, Answer, Scripted};

async fn evaluate_once(url: &str, timeout: Duration) -> tuner::Evaluation {
    let client = PrometheusClient::new(url, timeout).unwrap();
    let queries = Queries::new(&Selector::for_slicecache("ns", "c"), Duration::from_secs(60));
    let mut law = Tuner::new(LawConfig::default(), Bounds::default());
    let current = Tunables {
        slice_size: 1 << 20,
        concurrency: 4,
    };
    tuner::evaluate(&client, &queries, &mut law, Instant::now(), Some(current)).await
}

#[tokio::test]
async fn holds_when_prometheus_is_down_slow_or_empty() {
    // Down: nothing listens.
    let down = format!("http://{}", free_addr());
    let eval = evaluate_once(&down, Duration::from_secs(5)).await;
    assert!(
        matches!(eval.signals, Err(QueryError::Unreachable(_))),
        "{:?}",
        eval.signals
    );
    assert_eq!(eval.decision.held_because, Some(HoldReason::PrometheusUnreachable));
    assert!(!eval.decision.changed());

    // Slow: accepts and never answers.
    let slow = Scripted::start(|_| Answer::Never).await;
    let started = Instant::now();
    let eval = evaluate_once(&slow.url(), Duration::from_millis(300)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        eval.decision.held_because,
        Some(HoldReason::QueryTimeout),
        "{}",
        eval.decision
    );

    // Empty: a Prometheus that scrapes nothing of ours.
    let empty = Scripted::start(|_| Answer::json(prometheus_vector(None))).await;
    let eval = evaluate_once(&empty.url(), Duration::from_secs(5)).await;
    assert_eq!(
        eval.decision.held_because,
        Some(HoldReason::NoData),
        "{}",
        eval.decision
    );
    assert!(eval.signals.unwrap().is_empty());

    // Not Prometheus at all.
    let other = Scripted::start(|_| Answer::Ok {
        content_type: "text/html",
        body: "<html>hello</html>".into(),
    })
    .await;
    let eval = evaluate_once(&other.url(), Duration::from_secs(5)).await;
    assert_eq!(
        eval.decision.held_because,
        Some(HoldReason::PrometheusError),
        "{}",
        eval.decision
    );
}
