//! The agent with its disk tier, end to end: a real agent process on a
//! file-backed device in front of the real test origin, stopped cleanly,
//! killed mid-write, and restarted on a corrupted device.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::{AgentBuilder, AgentProc};
use rustix::process::Signal;
use slicecache_testkit::client::HttpClient;
use slicecache_testkit::origin::{pattern, OriginObject, TestOrigin};

/// An agent on the file-backed `device` with 1 MiB of memory cache:
/// nearly everything is served from disk.
async fn start(origin: &str, device: &Path) -> AgentProc {
    start_with_memory(origin, device, "1Mi").await
}

async fn start_with_memory(origin: &str, device: &Path, memory: &str) -> AgentProc {
    AgentBuilder::new(origin)
        .flag("--device", &device.to_string_lossy())
        .flag("--device-size", "64Mi")
        .flag("--memory-cache", memory)
        .flag("--slice-size", "256Ki")
        .env("SLICECACHE_PURGE_TOKEN", "t0ken")
        .start()
        .await
}

fn objects(origin: &TestOrigin, prefix: &str, count: usize, seed: u64) -> Vec<(String, Bytes)> {
    (0..count)
        .map(|i| {
            let path = format!("/{prefix}/{i}.bin");
            let body = pattern((1 << 20) + i * 77_777, seed + i as u64);
            origin
                .state
                .put(&path, OriginObject::new(body.clone(), &format!("{prefix}{i}")));
            (path, body)
        })
        .collect()
}

async fn fetch_all(agent: &AgentProc, objects: &[(String, Bytes)]) {
    let mut client = HttpClient::new(agent.listen);
    for (path, body) in objects {
        let r = client
            .get(path, &[])
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}; agent log:\n{}", agent.log()));
        assert_eq!(r.status, 200, "{path}");
        assert!(r.body == *body, "{path}: wrong bytes");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clean_restart_keeps_every_object_a_hit() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("cache.dev");
    let origin = TestOrigin::start().await.unwrap();
    let objs = objects(&origin, "keep", 12, 1);

    let agent = start(&origin.url(), &device).await;
    fetch_all(&agent, &objs).await;
    let log = agent.stop();
    assert!(log.contains("slicecache agent stopped"), "{log}");

    origin.state.clear_seen();
    let agent = start(&origin.url(), &device).await;
    assert!(
        agent.log().contains("Checkpoint"),
        "a clean stop should leave a checkpoint:\n{}",
        agent.log()
    );
    fetch_all(&agent, &objs).await;
    assert_eq!(
        origin.state.body_bytes.load(Ordering::Relaxed),
        0,
        "{:?}",
        origin.state.seen()
    );
    assert!(
        agent
            .metric("slicecache_slices_total", &[("result", "hit"), ("tier", "disk")])
            .await
            > 0.0
    );
    assert_eq!(
        agent.metric("slicecache_slices_total", &[("result", "miss")]).await,
        0.0
    );
    // With a disk tier the exposition carries the store's metrics too; all
    // of it must pass Prometheus' own linter.
    let text = HttpClient::new(agent.admin).get("/metrics", &[]).await.unwrap().body;
    assert!(String::from_utf8_lossy(&text).contains("slicecache_disk_read_duration_seconds_bucket"));
    promtool_check(&text);
}

fn promtool_check(exposition: &[u8]) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: run scripts/install-deps.sh (Debian package `prometheus`)");
    child.stdin.take().unwrap().write_all(exposition).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_write_serves_only_correct_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("cache.dev");
    let origin = TestOrigin::start().await.unwrap();
    let settled = objects(&origin, "settled", 8, 10);
    let busy = objects(&origin, "busy", 16, 100);

    let agent = start(&origin.url(), &device).await;
    fetch_all(&agent, &settled).await;
    // The store flushes its head region at least every second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let listen = agent.listen;
    let load: Vec<_> = busy
        .chunks(4)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            tokio::spawn(async move {
                let mut client = HttpClient::new(listen);
                for (path, _) in chunk {
                    if client.get(&path, &[]).await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    agent.signal(Signal::KILL);
    for task in load {
        let _ = task.await;
    }
    drop(agent);

    origin.state.clear_seen();
    let agent = start(&origin.url(), &device).await;
    fetch_all(&agent, &settled).await;
    let settled_bytes: usize = settled.iter().map(|(_, b)| b.len()).sum();
    let refetched = origin.state.body_bytes.load(Ordering::Relaxed) as usize;
    assert!(
        refetched * 10 <= settled_bytes,
        "objects flushed before the kill should be hits: {refetched} of {settled_bytes} bytes came from the origin"
    );
    // Whatever survived of the interrupted writes, every byte served is right.
    fetch_all(&agent, &busy).await;
    fetch_all(&agent, &busy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_region_becomes_misses_and_the_rest_serves() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("cache.dev");
    let origin = TestOrigin::start().await.unwrap();
    let objs = objects(&origin, "corrupt", 12, 1000);

    let agent = start(&origin.url(), &device).await;
    fetch_all(&agent, &objs).await;
    agent.stop();

    // Scribble over 2 MiB inside the first region (after the 64 KiB
    // superblock and the 1 MiB checkpoint area of a 64 MiB device).
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&device).unwrap();
        f.seek(SeekFrom::Start(4 << 20)).unwrap();
        f.write_all(&pattern(2 << 20, 4242)).unwrap();
        f.sync_all().unwrap();
    }

    origin.state.clear_seen();
    let agent = start(&origin.url(), &device).await;
    fetch_all(&agent, &objs).await;
    let total: usize = objs.iter().map(|(_, b)| b.len()).sum();
    let refetched = origin.state.body_bytes.load(Ordering::Relaxed) as usize;
    assert!(refetched > 0, "the corrupted extents must be refetched, not served");
    assert!(refetched < total, "the uncorrupted extents must still be hits");
    let failures = agent.metric("slicecache_disk_checksum_failures_total", &[]).await;
    assert!(failures > 0.0, "checksum failures must be counted");
}

#[tokio::test(flavor = "multi_thread")]
async fn filling_the_device_far_past_its_size_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("cache.dev");
    let origin = TestOrigin::start().await.unwrap();
    // About 200 MiB through a 64 MiB device.
    let objs: Vec<(String, Bytes)> = (0..40)
        .map(|i| {
            let path = format!("/fill/{i}.bin");
            let body = pattern((5 << 20) + i * 1013, 5000 + i as u64);
            origin
                .state
                .put(&path, OriginObject::new(body.clone(), &format!("f{i}")));
            (path, body)
        })
        .collect();
    let agent = start(&origin.url(), &device).await;
    fetch_all(&agent, &objs).await;
    fetch_all(&agent, &objs[30..]).await;
    let reclaims = agent.metric("slicecache_disk_region_reclaims_total", &[]).await;
    assert!(reclaims > 0.0, "regions must be reclaimed");
    let errors = agent.metric("slicecache_requests_total", &[("status", "502")]).await;
    assert_eq!(errors, 0.0);
    let used = agent.metric("slicecache_disk_used_bytes", &[]).await;
    assert!(used <= (64 << 20) as f64, "used {used}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wipe_releases_our_device_and_refuses_a_foreign_one() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("cache.dev");
    let origin = TestOrigin::start().await.unwrap();
    let objs = objects(&origin, "wipe", 2, 7);
    let agent = start(&origin.url(), &device).await;
    fetch_all(&agent, &objs).await;
    agent.stop();

    let wipe = |path: &Path| {
        Command::new(env!("CARGO_BIN_EXE_slicecache-agent"))
            .args(["wipe", "--device", &path.to_string_lossy()])
            .output()
            .unwrap()
    };
    let out = wipe(&device);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let head = std::fs::read(&device).unwrap();
    assert!(
        head[..64 << 10].iter().all(|&b| b == 0),
        "the superblock must be erased"
    );

    let foreign = dir.path().join("foreign.img");
    let data = pattern(2 << 20, 99);
    std::fs::write(&foreign, &data).unwrap();
    let out = wipe(&foreign);
    assert!(!out.status.success(), "a foreign device must be refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("foreign.img"));
    assert!(
        std::fs::read(&foreign).unwrap() == data,
        "a foreign device is never written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_reaches_the_disk_tier_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("cache.dev");
    let origin = TestOrigin::start().await.unwrap();
    let objs = objects(&origin, "purge", 3, 77);
    let agent = start(&origin.url(), &device).await;
    fetch_all(&agent, &objs).await;

    let purged = &objs[0].0;
    let r = HttpClient::new(agent.admin)
        .request(
            "POST",
            &format!("/purge?url={purged}"),
            &[("Authorization", "Bearer t0ken")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    origin.state.clear_seen();
    fetch_all(&agent, &objs).await;
    let seen: Vec<String> = origin.state.seen().iter().map(|s| s.path.clone()).collect();
    assert!(
        seen.iter().all(|p| p == purged),
        "only the purged object is refetched: {seen:?}"
    );
    assert!(!seen.is_empty(), "the purged object must come from the origin again");

    // Purge it again and restart: the tombstone keeps it gone from the disk.
    let r = HttpClient::new(agent.admin)
        .request(
            "POST",
            &format!("/purge?url={purged}"),
            &[("Authorization", "Bearer t0ken")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    agent.stop();
    origin.state.clear_seen();
    let agent = start(&origin.url(), &device).await;
    fetch_all(&agent, &objs).await;
    let seen: Vec<String> = origin.state.seen().iter().map(|s| s.path.clone()).collect();
    assert!(
        seen.iter().all(|p| p == purged),
        "after restart only the purged object is refetched: {seen:?}"
    );
    assert!(!seen.is_empty(), "a purge must survive a restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_device_file_is_created_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("new.dev");
    assert!(!device.exists());
    let origin = TestOrigin::start().await.unwrap();
    let agent = start(&origin.url(), &device).await;
    let meta = std::fs::metadata(&device).unwrap();
    assert_eq!(meta.len(), 64 << 20, "--device-size 64Mi");
    // Only the superblock and the checkpoint header are written at format.
    let allocated = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
    assert!(
        allocated <= 1 << 20,
        "{allocated} bytes allocated: the file is not sparse"
    );
    assert!(agent.metric("slicecache_disk_capacity_bytes", &[]).await > (32 << 20) as f64);
}

async fn slice_hits(agent: &AgentProc, tier: &str) -> f64 {
    agent
        .metric("slicecache_slices_total", &[("result", "hit"), ("tier", tier)])
        .await
}

/// After a restart L1 is empty: the first read of each slice is a disk hit
/// that the admission policy promotes into memory, the second a memory hit.
#[tokio::test(flavor = "multi_thread")]
async fn disk_hits_are_promoted_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("cache.dev");
    let origin = TestOrigin::start().await.unwrap();
    let objs = objects(&origin, "promote", 4, 5);
    let agent = start_with_memory(&origin.url(), &device, "64Mi").await;
    fetch_all(&agent, &objs).await;
    agent.stop();

    origin.state.clear_seen();
    let agent = start_with_memory(&origin.url(), &device, "64Mi").await;
    fetch_all(&agent, &objs).await;
    let disk_hits = slice_hits(&agent, "disk").await;
    assert!(disk_hits >= 16.0, "{disk_hits} disk hits for 4 objects of 4-5 slices");
    assert_eq!(slice_hits(&agent, "memory").await, 0.0);
    assert_eq!(agent.metric("slicecache_promotions_total", &[]).await, disk_hits);

    fetch_all(&agent, &objs).await;
    assert_eq!(
        slice_hits(&agent, "memory").await,
        disk_hits,
        "every promoted slice is a memory hit"
    );
    assert_eq!(
        slice_hits(&agent, "disk").await,
        disk_hits,
        "no slice went back to disk"
    );
    assert_eq!(
        agent.metric("slicecache_slices_total", &[("result", "miss")]).await,
        0.0
    );
    assert_eq!(origin.state.body_bytes.load(Ordering::Relaxed), 0);
}
