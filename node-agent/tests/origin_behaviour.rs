//! How the agent treats its origin: one fetch per slice however many
//! clients want it, no mixing of object versions, origins without range
//! support, 429 retries, and client aborts.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use slicecache_testkit::origin::{pattern, OriginObject, TestOrigin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{assert_aligned, assert_bytes, assert_partial, header, raw_get, AgentBuilder, S};

/// 16 clients read one cold object at the same moment (8 whole, 8 by
/// overlapping ranges) over a slow origin: every slice is fetched once.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_clients_share_one_fetch_per_slice() {
    let origin = TestOrigin::start().await.unwrap();
    let len = 9 * S as usize + 100;
    let body = pattern(len, 9);
    origin.state.put("/hot.bin", OriginObject::new(body.clone(), "hot"));
    origin.state.latency_ms.store(80, Ordering::Relaxed);
    let agent = AgentBuilder::new(&origin.url()).start().await;

    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let mut client = agent.client();
        let barrier = barrier.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            if i % 2 == 0 {
                let resp = client.get("/hot.bin", &[]).await.unwrap();
                assert_eq!(resp.status, 200, "client {i}");
                assert_bytes(&resp.body, &body, &format!("client {i} whole"));
            } else {
                let a = i * S / 3;
                let b = a + 4 * S + 17;
                let resp = client
                    .get("/hot.bin", &[("Range", &format!("bytes={a}-{b}"))])
                    .await
                    .unwrap();
                assert_partial(&resp, &body, a, b, &format!("client {i} range"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seen = common::settled(&origin).await;
    assert_aligned(&seen, S);
    let mut per_range: HashMap<String, usize> = HashMap::new();
    for r in &seen {
        *per_range.entry(r.range.clone().unwrap()).or_insert(0) += 1;
    }
    let dups: Vec<_> = per_range.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dups.is_empty(), "slices fetched more than once: {dups:?}");
    assert_eq!(per_range.len(), 10, "every slice fetched: {per_range:?}");
    assert_eq!(origin.state.body_bytes.load(Ordering::Relaxed), len as u64);
    let coalesced = agent
        .metric("slicecache_slices_total", &[("result", "coalesced")])
        .await;
    assert!(coalesced >= 15.0, "joins of in-flight fetches counted: {coalesced}");
}

/// The object is replaced at the origin while a response is being streamed
/// slice by slice: the client gets the old version whole or a truncated
/// body of the old version, never bytes of both; the next request gets the
/// new version whole.
#[tokio::test(flavor = "multi_thread")]
async fn object_changed_mid_response_never_mixes_versions() {
    let origin = TestOrigin::start().await.unwrap();
    let len = 8 * S as usize;
    let old = pattern(len, 1);
    let new = pattern(len, 2);
    origin.state.put("/changing.bin", OriginObject::new(old.clone(), "v1"));
    origin.state.latency_ms.store(200, Ordering::Relaxed);
    let agent = AgentBuilder::new(&origin.url()).start().await;

    let listen = agent.listen;
    let request = tokio::spawn(async move { raw_get(listen, "/changing.bin", &[]).await });
    // Slice 0 answers at ~200 ms and the header goes out; slices 1-4 are then
    // asked for (If-Match v1) and answered at ~400 ms, after the change.
    tokio::time::sleep(Duration::from_millis(300)).await;
    origin.state.put("/changing.bin", OriginObject::new(new.clone(), "v2"));
    let (status, headers, got) = request.await.unwrap();
    let etag = header(&headers, "etag").unwrap_or_default().to_string();
    let declared: usize = header(&headers, "content-length").unwrap().parse().unwrap();
    let version = match etag.as_str() {
        "\"v1\"" => &old,
        "\"v2\"" => &new,
        other => panic!("unexpected ETag {other:?}"),
    };
    assert_eq!(status, 200);
    assert_eq!(declared, len);
    assert!(got.len() <= len, "more bytes than declared");
    assert_bytes(
        &got,
        &version[..got.len()],
        &format!("body of {etag} (mixed versions?)"),
    );
    let seen = common::settled(&origin).await;
    assert!(
        seen.iter().any(|r| r.status == 412),
        "the change was caught by If-Match: {seen:?}"
    );
    eprintln!(
        "mid-flight change: served {etag}, {} of {len} bytes ({})",
        got.len(),
        if got.len() == len { "complete" } else { "truncated" }
    );

    // The next request: the new version, whole and intact, twice.
    origin.state.latency_ms.store(0, Ordering::Relaxed);
    let mut c = agent.client();
    for pass in ["after change", "cached"] {
        let resp = c.get("/changing.bin", &[]).await.unwrap();
        assert_eq!(resp.status, 200, "{pass}");
        assert_eq!(resp.header("etag"), Some("\"v2\""), "{pass}");
        assert_bytes(&resp.body, &new, pass);
    }
    assert_aligned(&common::settled(&origin).await, S);
}

/// Slices of the old version cached before a change are never served once
/// the agent has seen the new version, whether it learns of it from a
/// failed If-Match on a missing slice or from a revalidation.
#[tokio::test(flavor = "multi_thread")]
async fn old_slices_are_not_served_after_a_change() {
    let origin = TestOrigin::start().await.unwrap();
    let agent = AgentBuilder::new(&origin.url()).start().await;
    let mut c = agent.client();

    // (a) Fresh object, partially cached; a miss meets the new version.
    let old = pattern(6 * S as usize, 11);
    let new = pattern(7 * S as usize + 10, 12);
    origin.state.put("/a.bin", OriginObject::new(old.clone(), "a1"));
    let resp = c
        .get("/a.bin", &[("Range", &format!("bytes=0-{}", 2 * S - 1))])
        .await
        .unwrap();
    assert_partial(&resp, &old, 0, 2 * S - 1, "warm slices 0-1 of v1");
    origin.state.put("/a.bin", OriginObject::new(new.clone(), "a2"));
    let (a, b) = (5 * S + 3, 5 * S + 99);
    let resp = c.get("/a.bin", &[("Range", &format!("bytes={a}-{b}"))]).await.unwrap();
    assert_partial(&resp, &new, a, b, "miss after the change: new version");
    assert_eq!(resp.header("etag"), Some("\"a2\""));
    let resp = c.get("/a.bin", &[("Range", "bytes=0-99")]).await.unwrap();
    assert_partial(&resp, &new, 0, 99, "slice 0 after the change: not the cached v1");
    let resp = c.get("/a.bin", &[]).await.unwrap();
    assert_eq!(resp.header("etag"), Some("\"a2\""));
    assert_bytes(&resp.body, &new, "whole after the change");

    // (b) Always-stale object: each request revalidates; 304 keeps the
    // cached bytes, a new version replaces them.
    let old = pattern(4 * S as usize, 21);
    let new = pattern(4 * S as usize, 22);
    let mut o = OriginObject::new(old.clone(), "b1");
    o.cache_control = Some("max-age=0".into());
    origin.state.put("/b.bin", o);
    let resp = c.get("/b.bin", &[]).await.unwrap();
    assert_bytes(&resp.body, &old, "v1 cold");
    origin.state.clear_seen();
    let resp = c.get("/b.bin", &[]).await.unwrap();
    assert_bytes(&resp.body, &old, "v1 revalidated");
    let seen = common::settled(&origin).await;
    assert_eq!(
        seen.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![304],
        "one revalidation, no body: {seen:?}"
    );
    assert_eq!(origin.state.body_bytes.load(Ordering::Relaxed), 0);
    let mut o = OriginObject::new(new.clone(), "b2");
    o.cache_control = Some("max-age=0".into());
    origin.state.put("/b.bin", o);
    let resp = c
        .get("/b.bin", &[("Range", &format!("bytes={}-{}", 2 * S - 5, 2 * S + 5))])
        .await
        .unwrap();
    assert_partial(&resp, &new, 2 * S - 5, 2 * S + 5, "revalidation finds v2");
    assert_eq!(resp.header("etag"), Some("\"b2\""));
    let resp = c.get("/b.bin", &[]).await.unwrap();
    assert_eq!(resp.header("etag"), Some("\"b2\""));
    assert_bytes(&resp.body, &new, "whole v2, none of v1's cached slices");
}

/// An origin that ignores Range: bytes are exact, the whole object gets
/// cached from the full responses, and a second pass costs nothing.
#[tokio::test(flavor = "multi_thread")]
async fn origin_without_range_support() {
    let origin = TestOrigin::start().await.unwrap();
    origin.state.ignore_ranges.store(true, Ordering::Relaxed);
    let len = 5 * S as usize + 17;
    let body = pattern(len, 31);
    origin.state.put("/norange.bin", OriginObject::new(body.clone(), "nr"));
    let body2 = pattern(len, 32);
    origin
        .state
        .put("/norange2.bin", OriginObject::new(body2.clone(), "nr2"));
    let agent = AgentBuilder::new(&origin.url()).start().await;
    let mut c = agent.client();

    let resp = c.get("/norange.bin", &[("Range", "bytes=70000-80000")]).await.unwrap();
    assert_partial(&resp, &body, 70000, 80000, "cold range");
    assert_eq!(
        resp.header("accept-ranges"),
        Some("bytes"),
        "the agent serves ranges anyway"
    );
    let seen = common::settled(&origin).await;
    assert_eq!(seen.len(), 1, "one origin request: {seen:?}");
    assert_eq!((seen[0].status, seen[0].body_bytes), (200, len as u64));
    // The agent waits for the whole body to be cached in the background.
    tokio::time::sleep(Duration::from_millis(200)).await;

    origin.state.clear_seen();
    let resp = c.get("/norange.bin", &[]).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_bytes(&resp.body, &body, "whole, warm");
    for (a, b) in [(0, 9), (S - 1, S), (4 * S, len as u64 - 1), (123, 3 * S + 7)] {
        let resp = c
            .get("/norange.bin", &[("Range", &format!("bytes={a}-{b}"))])
            .await
            .unwrap();
        assert_partial(&resp, &body, a, b, "warm range");
    }
    assert!(
        common::settled(&origin).await.is_empty(),
        "warm pass reached the origin"
    );
    assert_eq!(origin.state.body_bytes.load(Ordering::Relaxed), 0);

    // A cold whole-object read is exact too, and cached whole.
    origin.state.clear_seen();
    let resp = c.get("/norange2.bin", &[]).await.unwrap();
    assert_bytes(&resp.body, &body2, "cold whole");
    let cold_fetches = common::settled(&origin).await.len();
    assert!(cold_fetches >= 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    origin.state.clear_seen();
    let resp = c.get("/norange2.bin", &[]).await.unwrap();
    assert_bytes(&resp.body, &body2, "warm whole");
    common::settled(&origin).await;
    assert_eq!(
        origin.state.body_bytes.load(Ordering::Relaxed),
        0,
        "second pass from cache"
    );
    eprintln!("cold whole read of a range-less origin: {cold_fetches} origin fetch(es)");
}

/// 429s are retried (and counted); when they outlast the retries the client
/// gets a 5xx, and the next request succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn origin_429_is_retried() {
    let origin = TestOrigin::start().await.unwrap();
    let body = pattern(3 * S as usize + 1, 41);
    origin.state.put("/busy.bin", OriginObject::new(body.clone(), "busy"));
    origin.state.put("/busier.bin", OriginObject::new(body.clone(), "busy"));
    let agent = AgentBuilder::new(&origin.url()).start().await;
    let mut c = agent.client();

    origin.state.fail_next.store(1, Ordering::Relaxed);
    let resp = c.get("/busy.bin", &[]).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_bytes(&resp.body, &body, "after one 429");
    let seen = common::settled(&origin).await;
    assert_eq!(seen[0].status, 429, "{seen:?}");
    assert_eq!(seen.iter().filter(|r| r.status == 429).count(), 1);
    assert!(agent.metric("slicecache_origin_retries_total", &[]).await >= 1.0);
    assert!(
        agent
            .metric("slicecache_origin_requests_total", &[("status", "429")])
            .await
            >= 1.0
    );

    // Default retries: 2, so three 429s in a row exhaust them.
    origin.state.fail_next.store(3, Ordering::Relaxed);
    let resp = c.get("/busier.bin", &[("Range", "bytes=0-9")]).await.unwrap();
    assert!(
        resp.status >= 500,
        "a persistently busy origin gives a 5xx, got {}",
        resp.status
    );
    assert_eq!(origin.state.fail_next.load(Ordering::Relaxed), 0);
    let resp = c.get("/busier.bin", &[("Range", "bytes=0-9")]).await.unwrap();
    assert_partial(&resp, &body, 0, 9, "once the origin recovers");
}

/// Clients that hang up mid-body on a slow, large, cold object do not take
/// the agent down; the unwanted fetches stop, and it keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn client_abort_is_harmless() {
    let origin = TestOrigin::start().await.unwrap();
    let len = 64 * S as usize;
    let body = pattern(len, 51);
    for p in ["/big0.bin", "/big1.bin", "/big2.bin"] {
        origin.state.put(p, OriginObject::new(body.clone(), "big"));
    }
    origin.state.latency_ms.store(300, Ordering::Relaxed);
    let mut agent = AgentBuilder::new(&origin.url()).start().await;

    for p in ["/big0.bin", "/big1.bin", "/big2.bin"] {
        let mut s = tokio::net::TcpStream::connect(agent.listen).await.unwrap();
        s.write_all(format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
                .await
                .expect("a response header")
                .unwrap();
            assert!(n > 0, "connection closed before the header");
            buf.extend_from_slice(&chunk[..n]);
        }
        assert!(
            buf.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..40])
        );
        drop(s); // hang up with the body still coming
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    agent.assert_alive();
    let fetched = common::settled(&origin).await.len();
    assert!(
        fetched < 3 * 16,
        "the origin kept being asked for slices nobody wanted: {fetched} fetches"
    );
    assert_eq!(
        agent.metric("slicecache_origin_subrequests_in_flight", &[]).await,
        0.0,
        "cancelled fetches released their subrequest slots"
    );

    origin.state.latency_ms.store(0, Ordering::Relaxed);
    let mut c = agent.client();
    let resp = c.get("/big1.bin", &[("Range", "bytes=100-200")]).await.unwrap();
    assert_partial(&resp, &body, 100, 200, "after aborts");
    let resp = c.get("/big2.bin", &[]).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_bytes(&resp.body, &body, "whole after aborts");
    assert_eq!(agent.admin_client().get("/healthz", &[]).await.unwrap().status, 200);
    agent.assert_alive();
}

/// After the agent has learned a new version of an object, a response of
/// that new version must not join an origin fetch still in flight for the
/// old version (guarded by the old `If-Match`): that fetch ends in 412, and
/// the new response would be cut short although nothing changed for it.
#[tokio::test(flavor = "multi_thread")]
async fn new_version_response_does_not_join_an_old_version_fetch() {
    let origin = TestOrigin::start().await.unwrap();
    let len = 8 * S as usize;
    let old = pattern(len, 61);
    let new = pattern(len, 62);
    origin.state.put("/swap.bin", OriginObject::new(old.clone(), "w1"));
    let agent = AgentBuilder::new(&origin.url()).start().await;
    let mut c = agent.client();
    let resp = c.get("/swap.bin", &[("Range", "bytes=0-9")]).await.unwrap();
    assert_partial(&resp, &old, 0, 9, "v1 slice 0 warm");

    // A: a miss on slice 3 of v1, guarded by If-Match v1, slow at the origin.
    origin.state.latency_ms.store(1500, Ordering::Relaxed);
    let listen = agent.listen;
    let a = tokio::spawn(async move {
        let range = format!("bytes={}-{}", 3 * S, 3 * S + 9);
        raw_get(listen, "/swap.bin", &[("Range", range.as_str())]).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The object changes; B's miss on slice 5 meets it (412), and the agent
    // learns v2 while A's fetch is still in flight.
    origin.state.put("/swap.bin", OriginObject::new(new.clone(), "w2"));
    origin.state.latency_ms.store(0, Ordering::Relaxed);
    let resp = c
        .get("/swap.bin", &[("Range", &format!("bytes={}-{}", 5 * S, 5 * S + 9))])
        .await
        .unwrap();
    assert_partial(&resp, &new, 5 * S, 5 * S + 9, "B: v2 after the change");
    assert_eq!(resp.header("etag"), Some("\"w2\""));

    // D: the whole object, now v2 from the start. Its slice 3 must not be
    // taken from A's v1-guarded fetch.
    let mut d = agent.client();
    let resp = d.get("/swap.bin", &[]).await;
    let resp = resp.unwrap_or_else(|e| panic!("D: v2 response cut short: {e}"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("etag"), Some("\"w2\""));
    assert_bytes(&resp.body, &new, "D: whole v2");

    // A, whatever it got, never mixed versions.
    let (_, headers, got) = a.await.unwrap();
    let version = if header(&headers, "etag") == Some("\"w2\"") {
        &new
    } else {
        &old
    };
    let first = 3 * S as usize;
    assert_bytes(&got, &version[first..first + got.len()], "A");

    // And v2 stays cached: the late 412 of A's fetch does not throw it away.
    origin.state.clear_seen();
    let resp = d.get("/swap.bin", &[]).await.unwrap();
    assert_bytes(&resp.body, &new, "v2 again");
    common::settled(&origin).await;
    assert_eq!(origin.state.body_bytes.load(Ordering::Relaxed), 0, "v2 still cached");
}
