//! The admin port and configuration: purge and its token, hot reload of the
//! slice size without losing the cache, and the Prometheus metrics.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use slicecache_testkit::client::HttpClient;
use slicecache_testkit::origin::{pattern, OriginObject, TestOrigin};

use common::{assert_aligned, assert_bytes, assert_partial, free_addrs, metric_sum, wait_for, AgentBuilder, S};

async fn purge(admin: &mut HttpClient, query: &str, auth: Option<&str>) -> (u16, String) {
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
    let resp = admin
        .request("POST", &format!("/purge?{query}"), &headers)
        .await
        .unwrap();
    (resp.status, String::from_utf8_lossy(&resp.body).into_owned())
}

/// Origin body bytes one GET of `path` costs.
async fn origin_cost(origin: &TestOrigin, client: &mut HttpClient, path: &str, want: &[u8]) -> u64 {
    let before = origin.state.body_bytes.load(Ordering::Relaxed);
    let resp = client.get(path, &[]).await.unwrap();
    assert_eq!(resp.status, 200, "{path}");
    assert_bytes(&resp.body, want, path);
    common::settled(origin).await;
    origin.state.body_bytes.load(Ordering::Relaxed) - before
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_by_url_and_prefix_needs_the_token() {
    let origin = TestOrigin::start().await.unwrap();
    let objects = [("/p/a/1", 100_000usize), ("/p/a/2", 70_000), ("/p/b/1", 90_000)];
    let bodies: Vec<_> = objects
        .iter()
        .enumerate()
        .map(|(i, (p, l))| {
            let b = pattern(*l, 60 + i as u64);
            origin.state.put(p, OriginObject::new(b.clone(), &format!("p{i}")));
            b
        })
        .collect();
    let agent = AgentBuilder::new(&origin.url())
        .env("SLICECACHE_PURGE_TOKEN", "s3cret-token")
        .start()
        .await;
    let mut c = agent.client();
    let mut admin = agent.admin_client();
    for (i, (p, l)) in objects.iter().enumerate() {
        assert_eq!(origin_cost(&origin, &mut c, p, &bodies[i]).await, *l as u64, "{p} cold");
        assert_eq!(origin_cost(&origin, &mut c, p, &bodies[i]).await, 0, "{p} warm");
    }

    // Without a token, with a wrong one, or with the wrong scheme: 401, and
    // nothing is purged.
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cret-toke"),
        Some("Basic s3cret-token"),
    ] {
        let (status, _) = purge(&mut admin, "url=/p/a/1", auth).await;
        assert_eq!(status, 401, "auth {auth:?}");
    }
    assert_eq!(
        origin_cost(&origin, &mut c, "/p/a/1", &bodies[0]).await,
        0,
        "still cached"
    );

    // With the token: purged, and the next GET goes to the origin again.
    let (status, body) = purge(&mut admin, "url=/p/a/1", Some("Bearer s3cret-token")).await;
    assert_eq!((status, body.trim()), (200, "{\"purged\":1}"));
    assert_eq!(
        origin_cost(&origin, &mut c, "/p/a/1", &bodies[0]).await,
        100_000,
        "refetched after purge"
    );
    assert_eq!(
        origin_cost(&origin, &mut c, "/p/a/2", &bodies[1]).await,
        0,
        "others untouched"
    );
    assert_eq!(
        origin_cost(&origin, &mut c, "/p/b/1", &bodies[2]).await,
        0,
        "others untouched"
    );

    // Prefix purge: everything under /p/a/, nothing else.
    let (status, body) = purge(&mut admin, "prefix=%2Fp%2Fa%2F", Some("Bearer s3cret-token")).await;
    assert_eq!((status, body.trim()), (200, "{\"purged\":2}"));
    assert_eq!(origin_cost(&origin, &mut c, "/p/a/1", &bodies[0]).await, 100_000);
    assert_eq!(origin_cost(&origin, &mut c, "/p/a/2", &bodies[1]).await, 70_000);
    assert_eq!(origin_cost(&origin, &mut c, "/p/b/1", &bodies[2]).await, 0);

    // Purging something not cached is fine; bad requests are 400/405.
    let (status, body) = purge(&mut admin, "url=/nothing", Some("Bearer s3cret-token")).await;
    assert_eq!((status, body.trim()), (200, "{\"purged\":0}"));
    let (status, _) = purge(&mut admin, "", Some("Bearer s3cret-token")).await;
    assert_eq!(status, 400);
    assert_eq!(admin.get("/purge?url=/p/a/1", &[]).await.unwrap().status, 405);

    let text = agent.metrics().await;
    assert_eq!(metric_sum(&text, "slicecache_purges_total", &[("kind", "url")]), 2.0);
    assert_eq!(metric_sum(&text, "slicecache_purges_total", &[("kind", "prefix")]), 1.0);

    // An agent without a token refuses purges outright.
    let untokened = AgentBuilder::new(&origin.url()).start().await;
    let mut admin = untokened.admin_client();
    for auth in [None, Some("Bearer s3cret-token")] {
        let (status, _) = purge(&mut admin, "url=/p/a/1", auth).await;
        assert_eq!(status, 403, "no token configured, auth {auth:?}");
    }
}

/// Writes `text` to `path` atomically, as a ConfigMap update would appear.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn config_yaml(listen: &str, admin: &str, origin: &str, token_file: &Path, slice: &str, concurrency: u32) -> String {
    format!(
        "listen: \"{listen}\"\nadminListen: \"{admin}\"\norigin:\n  url: \"{origin}\"\n\
         tunables:\n  sliceSize: {slice}\n  concurrency: {concurrency}\n  retries: 2\n\
         cache:\n  memory: 64Mi\nadmin:\n  purgeTokenFile: \"{}\"\n",
        token_file.display()
    )
}

/// Hot reload: broken files are rejected while the agent keeps serving; a
/// new slice size takes effect without losing what was cached under the old
/// one, and new objects are fetched in slices of the new size.
#[tokio::test(flavor = "multi_thread")]
async fn hot_reload_changes_slice_size_and_keeps_the_cache() {
    let origin = TestOrigin::start().await.unwrap();
    let a_len = (1 << 20) + 5;
    let a = pattern(a_len, 71);
    let b = pattern(1 << 20, 72);
    origin.state.put("/reload/a.bin", OriginObject::new(a.clone(), "a"));
    origin.state.put("/reload/b.bin", OriginObject::new(b.clone(), "b"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.yaml");
    let token = dir.path().join("purge-token");
    std::fs::write(&token, "file-token\n").unwrap();
    let (listen, admin) = free_addrs();
    let yaml = |slice: &str, conc: u32| {
        config_yaml(
            &listen.to_string(),
            &admin.to_string(),
            &origin.url(),
            &token,
            slice,
            conc,
        )
    };
    write_atomically(&file, &yaml("64Ki", 4));
    let agent = AgentBuilder::with_config(&file, listen, admin).start().await;
    assert_eq!(agent.metric("slicecache_slice_size_bytes", &[]).await, 65536.0);
    assert_eq!(agent.metric("slicecache_concurrency", &[]).await, 4.0);
    // The watcher takes its baseline when it starts, which can be after
    // /readyz answers: nudge the file (a comment, same tunables) until a
    // reload shows it is watching.
    let ok = |agent: &common::AgentProc| {
        let admin = agent.admin;
        async move {
            let m = HttpClient::new(admin).get("/metrics", &[]).await.unwrap();
            metric_sum(
                &String::from_utf8_lossy(&m.body),
                "slicecache_config_reloads_total",
                &[("result", "ok")],
            )
        }
    };
    let mut nudge = 0;
    while ok(&agent).await < 1.0 {
        nudge += 1;
        assert!(nudge < 20, "the config watcher never reloaded an edited file");
        write_atomically(&file, &format!("{}# nudge {nudge}\n", yaml("64Ki", 4)));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let ok_base = ok(&agent).await;
    assert_eq!(agent.metric("slicecache_slice_size_bytes", &[]).await, 65536.0);

    let mut c = agent.client();
    let resp = c.get("/reload/a.bin", &[]).await.unwrap();
    assert_bytes(&resp.body, &a, "a cold");
    assert_aligned(&common::settled(&origin).await, S);

    // A file that does not parse, then one with an invalid slice size: both
    // rejected, the running configuration stays, the agent keeps serving.
    for (n, broken) in [(1.0, "tunables: [unclosed\n".to_string()), (2.0, yaml("100Ki", 4))] {
        write_atomically(&file, &broken);
        wait_for("a rejected reload", Duration::from_secs(10), || async {
            agent
                .metric("slicecache_config_reloads_total", &[("result", "rejected")])
                .await
                >= n
        })
        .await;
        assert_eq!(agent.metric("slicecache_slice_size_bytes", &[]).await, 65536.0);
        origin.state.clear_seen();
        let resp = c.get("/reload/a.bin", &[("Range", "bytes=1000-200000")]).await.unwrap();
        assert_partial(&resp, &a, 1000, 200_000, "served while the file is broken");
        assert!(common::settled(&origin).await.is_empty(), "served from cache");
    }
    assert_eq!(
        agent
            .metric("slicecache_config_reloads_total", &[("result", "ok")])
            .await,
        ok_base
    );

    // The real change: 128Ki slices, concurrency 8.
    write_atomically(&file, &yaml("128Ki", 8));
    wait_for("the new slice size", Duration::from_secs(10), || async {
        agent.metric("slicecache_slice_size_bytes", &[]).await == 131072.0
    })
    .await;
    assert_eq!(
        agent
            .metric("slicecache_config_reloads_total", &[("result", "ok")])
            .await,
        ok_base + 1.0
    );
    assert_eq!(agent.metric("slicecache_concurrency", &[]).await, 8.0);

    // Everything cached under 64Ki still serves: whole and random ranges,
    // byte-exact, with nothing from the origin.
    origin.state.clear_seen();
    let resp = c.get("/reload/a.bin", &[]).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_bytes(&resp.body, &a, "a after the reload");
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for _ in 0..50 {
        let x = rng.random_range(0..a_len as u64);
        let y = (x + rng.random_range(0..300_000)).min(a_len as u64 - 1);
        let resp = c
            .get("/reload/a.bin", &[("Range", &format!("bytes={x}-{y}"))])
            .await
            .unwrap();
        assert_partial(&resp, &a, x, y, "a range after the reload");
    }
    assert!(common::settled(&origin).await.is_empty());
    assert_eq!(origin.state.body_bytes.load(Ordering::Relaxed), 0, "cache kept");

    // A new object is fetched in 128Ki slices.
    let resp = c
        .get("/reload/b.bin", &[("Range", "bytes=100000-300000")])
        .await
        .unwrap();
    assert_partial(&resp, &b, 100_000, 300_000, "b range");
    let seen = common::settled(&origin).await;
    assert_aligned(&seen, 128 << 10);
    assert_eq!(seen.len(), 3, "slices 0-2 of 128Ki: {seen:?}");
    let resp = c.get("/reload/b.bin", &[]).await.unwrap();
    assert_bytes(&resp.body, &b, "b whole");
    let seen = common::settled(&origin).await;
    assert_aligned(&seen, 128 << 10);
    assert_eq!(seen.len(), 8, "each 128Ki slice of b once: {seen:?}");

    // The purge token came from the file.
    let mut admin_client = agent.admin_client();
    assert_eq!(
        purge(&mut admin_client, "url=/reload/b.bin", Some("Bearer nope"))
            .await
            .0,
        401
    );
    assert_eq!(
        purge(&mut admin_client, "url=/reload/b.bin", Some("Bearer file-token"))
            .await
            .0,
        200
    );
}

/// `/metrics` passes `promtool check metrics`, and the main counters move as
/// traffic flows.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_promtool_clean_and_move() {
    let promtool = std::process::Command::new("promtool").arg("--version").output();
    assert!(
        promtool.as_ref().is_ok_and(|o| o.status.success()),
        "promtool is not installed (or does not run): run scripts/install-deps.sh, which installs the \
         Debian `prometheus` package ({promtool:?})"
    );
    let origin = TestOrigin::start().await.unwrap();
    let len = 3 * S as usize + 10;
    let body = pattern(len, 81);
    origin.state.put("/m.bin", OriginObject::new(body.clone(), "m"));
    let agent = AgentBuilder::new(&origin.url()).start().await;
    let mut c = agent.client();

    let m0 = agent.metrics().await;
    let get200 = [("method", "GET"), ("status", "200")];
    let v = |text: &str, name: &str, labels: &[(&str, &str)]| metric_sum(text, name, labels);

    let resp = c.get("/m.bin", &[]).await.unwrap();
    assert_bytes(&resp.body, &body, "cold");
    // The client can have its last byte a moment before the agent counts it
    // and before the last fill has cached its slice.
    wait_for("the cold read to be accounted", Duration::from_secs(5), || async {
        let m = agent.metrics().await;
        v(&m, "slicecache_slice_fetch_duration_seconds_count", &[]) >= 4.0
            && v(&m, "slicecache_client_bytes_total", &[]) >= len as f64
    })
    .await;
    let m1 = agent.metrics().await;
    assert_eq!(
        v(&m1, "slicecache_requests_total", &get200) - v(&m0, "slicecache_requests_total", &get200),
        1.0
    );
    assert_eq!(
        v(&m1, "slicecache_origin_bytes_total", &[]) - v(&m0, "slicecache_origin_bytes_total", &[]),
        len as f64
    );
    assert_eq!(
        v(&m1, "slicecache_client_bytes_total", &[]) - v(&m0, "slicecache_client_bytes_total", &[]),
        len as f64
    );
    assert_eq!(v(&m1, "slicecache_slices_total", &[("result", "miss")]), 4.0, "{m1}");
    assert_eq!(v(&m1, "slicecache_slices_total", &[("result", "hit")]), 0.0);
    assert_eq!(v(&m1, "slicecache_origin_requests_total", &[("status", "206")]), 4.0);

    let resp = c.get("/m.bin", &[]).await.unwrap();
    assert_bytes(&resp.body, &body, "warm");
    let resp = c.get("/m.bin", &[("Range", "bytes=5-70000")]).await.unwrap();
    assert_partial(&resp, &body, 5, 70000, "warm range");
    let m2 = agent.metrics().await;
    assert_eq!(v(&m2, "slicecache_requests_total", &get200), 2.0);
    assert_eq!(
        v(
            &m2,
            "slicecache_requests_total",
            &[("method", "GET"), ("status", "206")]
        ),
        1.0
    );
    assert_eq!(
        v(&m2, "slicecache_origin_bytes_total", &[]),
        v(&m1, "slicecache_origin_bytes_total", &[]),
        "warm reads cost no origin bytes"
    );
    assert_eq!(
        v(&m2, "slicecache_slices_total", &[("result", "hit"), ("tier", "memory")]),
        6.0,
        "4 slices whole + 2 for the range"
    );
    assert!(v(&m2, "slicecache_client_ttfb_seconds_count", &[]) >= 3.0);
    assert!(v(&m2, "slicecache_memory_used_bytes", &[]) >= len as f64);
    assert_eq!(v(&m2, "slicecache_memory_capacity_bytes", &[]), (64u64 << 20) as f64);

    // Look-ahead: the first 4 slices of a request (concurrency 4) are
    // looked up at once. Nothing above waited for a slot (memory hits never
    // count); of a cold 7-slice object the last 3 did.
    assert_eq!(v(&m2, "slicecache_lookahead_waits_total", &[]), 0.0);
    let long = pattern(7 * S as usize, 82);
    origin.state.put("/long.bin", OriginObject::new(long.clone(), "l"));
    let resp = c.get("/long.bin", &[]).await.unwrap();
    assert_bytes(&resp.body, &long, "cold, 7 slices");
    let m3 = agent.metrics().await;
    assert_eq!(v(&m3, "slicecache_lookahead_waits_total", &[]), 3.0, "{m3}");

    // promtool's linter over the live exposition.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.txt");
    std::fs::write(&path, &m2).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics failed ({}):\n{report}",
        out.status
    );
}
