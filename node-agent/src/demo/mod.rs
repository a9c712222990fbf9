//! `slicecache-agent demo`: a self-contained local try-out.
//!
//! Starts an embedded range-capable origin serving generated objects, runs the
//! agent binary in front of it on loopback with a file-backed device, drives a
//! short mixed workload (whole objects and random ranges, cold then warm), and
//! prints what happened: hit ratio, origin bytes against client bytes, and
//! throughput.

pub mod client;
pub mod origin;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};

use client::HttpClient;
use origin::{pattern, DemoOrigin, OriginObject};

const OBJECTS: &[(&str, usize)] = &[
    ("/video/intro.mp4", 24 << 20),
    ("/models/weights.bin", 40 << 20),
    ("/patches/game-1.2.pak", 9 << 20),
    ("/images/small.iso", 3 << 20 | 12345),
];

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the demo; returns when the workload is done.
pub async fn run() -> anyhow::Result<()> {
    let origin = DemoOrigin::start().await.context("starting the demo origin")?;
    for (i, (path, len)) in OBJECTS.iter().enumerate() {
        origin
            .state
            .put(path, OriginObject::new(pattern(*len, i as u64 + 1), &format!("v{i}")));
    }
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let device = dir.path().join("cache.dev");
    let listen = free_port()?;
    let admin = free_port()?;
    let exe = std::env::current_exe().context("locating the agent binary")?;
    println!("slicecache demo");
    println!(
        "  origin   http://{} ({} objects, {} MiB)",
        origin.addr,
        OBJECTS.len(),
        OBJECTS.iter().map(|o| o.1).sum::<usize>() >> 20
    );
    println!("  agent    http://{listen}  (admin http://{admin}/metrics)");
    println!("  device   {} (file-backed, 256Mi)", device.display());
    let child = Command::new(exe)
        .args([
            "run",
            "--origin",
            &origin.url(),
            "--listen",
            &listen.to_string(),
            "--admin-listen",
            &admin.to_string(),
        ])
        .args([
            "--device",
            &device.to_string_lossy(),
            "--device-size",
            "256Mi",
            "--memory-cache",
            "64Mi",
        ])
        .args(["--slice-size", "1Mi", "--concurrency", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the agent")?;
    let _child = ChildGuard(child);
    wait_ready(admin).await?;

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for pass in ["cold", "warm"] {
        origin.state.clear_seen();
        let started = Instant::now();
        let mut client_bytes = 0u64;
        let mut requests = 0u32;
        let mut client = HttpClient::new(listen);
        for (i, (path, len)) in OBJECTS.iter().enumerate() {
            let expected = pattern(*len, i as u64 + 1);
            let resp = client.get(path, &[]).await?;
            check(resp.status == 200 && resp.body == expected, path, "whole object")?;
            client_bytes += resp.body.len() as u64;
            requests += 1;
            for _ in 0..8 {
                let a = rng.random_range(0..*len);
                let b = (a + rng.random_range(1..(4 << 20))).min(*len - 1);
                let resp = client.get(path, &[("Range", &format!("bytes={a}-{b}"))]).await?;
                check(resp.status == 206 && resp.body == expected.slice(a..=b), path, "range")?;
                client_bytes += resp.body.len() as u64;
                requests += 1;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let origin_bytes = origin.state.body_bytes.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "\n{pass} pass: {requests} requests, {:.1} MiB to clients, {:.1} MiB from origin, {:.0} MiB/s, every byte verified",
            client_bytes as f64 / 1048576.0,
            origin_bytes as f64 / 1048576.0,
            client_bytes as f64 / 1048576.0 / secs
        );
    }
    let metrics = HttpClient::new(admin).get("/metrics", &[]).await?;
    let text = String::from_utf8_lossy(&metrics.body);
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let hits = sum("slicecache_slices_total{result=\"hit\"");
    let disk_hits = sum("slicecache_slices_total{result=\"hit\",tier=\"disk\"}");
    let total =
        hits + sum("slicecache_slices_total{result=\"miss\"") + sum("slicecache_slices_total{result=\"coalesced\"");
    println!(
        "\nslice hit ratio over both passes: {:.1}% ({hits} of {total} slices; {disk_hits} of the hits from the disk tier)",
        if total > 0.0 { 100.0 * hits / total } else { 0.0 }
    );
    println!(
        "origin bytes {:.1} MiB vs client bytes {:.1} MiB (agent's own counters)",
        sum("slicecache_origin_bytes_total") / 1048576.0,
        sum("slicecache_client_bytes_total") / 1048576.0
    );
    println!("\ndone; the agent and origin are stopped.");
    Ok(())
}

fn check(ok: bool, path: &str, what: &str) -> anyhow::Result<()> {
    if !ok {
        bail!("{what} of {path}: wrong status or bytes");
    }
    Ok(())
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

async fn wait_ready(admin: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(resp) = HttpClient::new(admin).get("/readyz", &[]).await {
            if resp.status == 200 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the agent did not become ready on {admin} within 30s")
}
