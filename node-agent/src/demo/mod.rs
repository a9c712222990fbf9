//! `slicecache-agent demo`: a self-contained local try-out.
//!
//! Starts an embedded range-capable origin serving generated objects, runs the
//! agent binary in front of it on loopback with a file-backed device, drives a
//! short mixed workload (whole objects and random ranges, cold then warm), and
//! prints what happened: hit ratio, origin bytes against client bytes, and
//! throughput.

pub mod origin;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use rand::{Rng, RngCore, SeedableRng};

use crate::origin::{OriginClient, OriginRequest, OriginTarget, OriginTimeouts};
use crate::range::ByteRange;
use origin::DemoOrigin;

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

/// Pseudo-random bytes, the same for the same seed.
fn generated(len: usize, seed: u64) -> Bytes {
    let mut body = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut body);
    Bytes::from(body)
}

/// A keep-alive client of `addr`: the agent's own origin client, pointed
/// at the agent (or its admin port).
fn client_of(addr: SocketAddr) -> anyhow::Result<Arc<OriginClient>> {
    let target = OriginTarget::parse(&format!("http://{addr}"), None)?;
    let timeouts = OriginTimeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_secs(30),
        idle: Duration::from_secs(30),
    };
    Ok(OriginClient::new(target, timeouts, 4)?)
}

/// GETs `path` (a range of it, if given); the status and the whole body.
async fn fetch(client: &Arc<OriginClient>, path: &str, range: Option<ByteRange>) -> anyhow::Result<(u16, Bytes)> {
    let req = OriginRequest {
        path: path.to_string(),
        range,
        ..OriginRequest::default()
    };
    let mut resp = client.send(&req).await.with_context(|| format!("GET {path}"))?;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.with_context(|| format!("reading {path}"))? {
        body.extend_from_slice(&chunk);
    }
    let status = resp.status();
    resp.release().await;
    Ok((status, Bytes::from(body)))
}

/// Runs the demo; returns when the workload is done.
pub async fn run() -> anyhow::Result<()> {
    let objects: Vec<(&str, Bytes)> = OBJECTS
        .iter()
        .enumerate()
        .map(|(i, (path, len))| (*path, generated(*len, i as u64 + 1)))
        .collect();
    let origin = DemoOrigin::start(&objects).await.context("starting the demo origin")?;
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
    let admin_client = client_of(admin)?;
    wait_ready(&admin_client, admin).await?;

    let client = client_of(listen)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for pass in ["cold", "warm"] {
        let origin_before = origin.bytes_sent();
        let started = Instant::now();
        let mut client_bytes = 0u64;
        let mut requests = 0u32;
        for (path, expected) in &objects {
            let len = expected.len() as u64;
            let (status, body) = fetch(&client, path, None).await?;
            check(status == 200 && body == expected, path, "whole object")?;
            client_bytes += body.len() as u64;
            requests += 1;
            for _ in 0..8 {
                let first = rng.random_range(0..len);
                let last = (first + rng.random_range(1..(4 << 20))).min(len - 1);
                let (status, body) = fetch(&client, path, Some(ByteRange { first, last })).await?;
                let want = expected.slice(first as usize..=last as usize);
                check(status == 206 && body == want, path, "range")?;
                client_bytes += body.len() as u64;
                requests += 1;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let origin_bytes = origin.bytes_sent() - origin_before;
        println!(
            "\n{pass} pass: {requests} requests, {:.1} MiB to clients, {:.1} MiB from origin, {:.0} MiB/s, every byte verified",
            client_bytes as f64 / 1048576.0,
            origin_bytes as f64 / 1048576.0,
            client_bytes as f64 / 1048576.0 / secs
        );
    }
    let (_, metrics) = fetch(&admin_client, "/metrics", None).await?;
    let text = String::from_utf8_lossy(&metrics);
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

async fn wait_ready(admin_client: &Arc<OriginClient>, admin: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok((200, _)) = fetch(admin_client, "/readyz", None).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the agent did not become ready on {admin} within 30s")
}
