//! The fetch window against a far origin: it grows while the origin's round
//! trip bounds the slices, and the agent-wide fetch-ahead budget holds
//! however many cold clients there are.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use slicecache_testkit::origin::{pattern, OriginObject, TestOrigin};

use common::{assert_aligned, assert_bytes, AgentBuilder, S};

/// A cold whole-object read through an origin 20 ms away: the response
/// starts with 4 slices in flight and ends with many more at once, each
/// slice fetched once and the bytes exact.
#[tokio::test(flavor = "multi_thread")]
async fn a_far_origin_grows_the_window_beyond_concurrency() {
    let origin = TestOrigin::start().await.unwrap();
    let len = 128 * S as usize;
    let body = pattern(len, 11);
    origin.state.put("/far.bin", OriginObject::new(body.clone(), "far"));
    origin.state.latency_ms.store(20, Ordering::Relaxed);
    // 64Mi of memory: a 16 MiB budget, so the per-request cap is 64 slices.
    let agent = AgentBuilder::new(&origin.url()).start().await;

    let resp = agent.client().get("/far.bin", &[]).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_bytes(&resp.body, &body, "the far object");

    let seen = common::settled(&origin).await;
    assert_aligned(&seen, S);
    assert_eq!(seen.len(), 128, "each slice fetched once");
    let peak = origin.state.peak_in_flight.load(Ordering::Relaxed);
    assert!(
        peak >= 16,
        "the origin saw at most {peak} requests at once; a window that never grew keeps 4"
    );
    assert!(
        peak <= 64,
        "the per-request cap is 64 slices; the origin saw {peak} at once"
    );
    let grows = agent.metric("slicecache_fetch_window_grows_total", &[]).await;
    assert!(grows >= 12.0, "window growths counted: {grows}");
    let windows = agent.metric("slicecache_fetch_window_slices_count", &[]).await;
    let slices = agent.metric("slicecache_fetch_window_slices_sum", &[]).await;
    assert_eq!(windows, 1.0, "one response grew its window");
    assert!(slices >= 16.0, "the window ended at {slices} slices");
    assert_eq!(
        agent.metric("slicecache_fetch_ahead_bytes", &[]).await,
        0.0,
        "every share returned"
    );
}

/// 48 clients read 48 distinct cold objects at once through an origin
/// 20 ms away. Each would fetch 3 slices ahead (more as its window grows),
/// but the 16 Mi memory tier gives fetch-ahead a 4 MiB budget: 64 slices
/// across the agent. So the origin never sees more requests at once than
/// one slice per client plus that budget; the bytes are exact for all.
#[tokio::test(flavor = "multi_thread")]
async fn the_fetch_ahead_budget_holds_under_many_cold_clients() {
    const CLIENTS: usize = 48;
    let origin = TestOrigin::start().await.unwrap();
    let len = 32 * S as usize;
    let mut bodies = HashMap::new();
    for i in 0..CLIENTS {
        let body = pattern(len, i as u64);
        origin
            .state
            .put(&format!("/cold/{i}"), OriginObject::new(body.clone(), &format!("c{i}")));
        bodies.insert(i, body);
    }
    origin.state.latency_ms.store(20, Ordering::Relaxed);
    let agent = AgentBuilder::new(&origin.url())
        .flag("--memory-cache", "16Mi")
        .start()
        .await;
    let budget = agent.metric("slicecache_fetch_ahead_budget_bytes", &[]).await;
    assert_eq!(budget, (4 << 20) as f64);

    let agent = Arc::new(agent);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (agent, done) = (agent.clone(), done.clone());
        tokio::spawn(async move {
            let mut most = 0.0f64;
            while !done.load(Ordering::Relaxed) {
                most = most.max(agent.metric("slicecache_fetch_ahead_bytes", &[]).await);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            most
        })
    };
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for (i, body) in bodies {
        let mut client = agent.client();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let resp = client.get(&format!("/cold/{i}"), &[]).await.unwrap();
            assert_eq!(resp.status, 200, "client {i}");
            assert_bytes(&resp.body, &body, &format!("client {i}"));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seen = common::settled(&origin).await;
    assert_aligned(&seen, S);
    assert_eq!(seen.len(), CLIENTS * 32, "each slice fetched once");
    let peak = origin.state.peak_in_flight.load(Ordering::Relaxed) as usize;
    let bound = CLIENTS + (4 << 20) / S as usize;
    assert!(
        peak <= bound,
        "the origin saw {peak} requests at once, more than {CLIENTS} clients' current slices plus a 64-slice budget"
    );
    let waits = agent.metric("slicecache_fetch_ahead_budget_waits_total", &[]).await;
    assert!(waits > 0.0, "the budget held some fetches ahead back");
    done.store(true, Ordering::Relaxed);
    let most = sampler.await.unwrap();
    assert!(
        most > 0.0 && most <= budget,
        "fetched ahead at most {most} bytes at once, against a budget of {budget}"
    );
}
