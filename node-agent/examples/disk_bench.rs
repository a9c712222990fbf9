//! Benchmark of the L2 disk store, driven by `bench/disk.sh`.
//!
//! Phases on one device or file: sequential fill with 1 MiB extents, random
//! extent reads (throughput and latency percentiles), reopen from the
//! checkpoint, reopen by scanning after a simulated crash, and churn (writes
//! of several device sizes with a hot read set) to measure write
//! amplification. Prints `key=value` lines.
//!
//! Usage: disk_bench PATH SIZE_BYTES [REGION_BYTES] [EXTENT_BYTES]

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use slicecache_agent::store::disk::{DiskOptions, DiskStore};
use slicecache_agent::store::{ExtentKey, ExtentStore, ObjectId};

fn arg(n: usize) -> Option<String> {
    std::env::args().nth(n)
}

fn num(n: usize, default: u64) -> anyhow::Result<u64> {
    Ok(match arg(n) {
        Some(s) => s.parse()?,
        None => default,
    })
}

fn key(object: u128, i: u64, len: u32) -> ExtentKey {
    ExtentKey {
        object: ObjectId(object),
        version: 1,
        offset: i * u64::from(len),
        len,
    }
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn open(opts: &DiskOptions) -> anyhow::Result<DiskStore> {
    Ok(DiskStore::open(opts.clone(), &prometheus::Registry::new())?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = arg(1).ok_or_else(|| anyhow::anyhow!("usage: disk_bench PATH SIZE [REGION] [EXTENT]"))?;
    let size = num(2, 1 << 30)?;
    let region = num(3, 16 << 20)? as u32;
    let extent = num(4, 1 << 20)? as u32;
    let mut opts = DiskOptions::new(&path);
    opts.size = Some(size);
    opts.region_size = region;

    // Fill: 90% of the capacity with distinct extents.
    let store = open(&opts)?;
    let g = store.geometry();
    let count = g.capacity() * 9 / 10 / u64::from(extent + 4096);
    let payload = Bytes::from(vec![0xA5u8; extent as usize]);
    let started = Instant::now();
    for i in 0..count {
        store.put(key(1, i, extent), payload.clone()).await;
    }
    store.flush().await?;
    let fill = started.elapsed();
    println!("fill_bytes={}", count * u64::from(extent));
    println!("fill_seconds={:.3}", fill.as_secs_f64());
    println!("fill_mb_per_s={:.1}", mbps(count * u64::from(extent), fill));
    store.close().await?;
    drop(store);
    if std::env::var_os("DISK_BENCH_FILL_ONLY").is_some() {
        return Ok(());
    }

    // Random reads from disk (fresh open: nothing resident).
    let started = Instant::now();
    let store = Arc::new(open(&opts)?);
    println!("checkpoint_open_seconds={:.3}", started.elapsed().as_secs_f64());
    let concurrency = 8;
    let reads_per_task = (count / 2 / concurrency).clamp(50, 2000);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(reads_per_task as usize);
            let mut s = 0x9E37_79B9_7F4A_7C15u64 ^ t;
            let mut bytes = 0u64;
            for _ in 0..reads_per_task {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let t0 = Instant::now();
                let got = store.get(&key(1, s % count, extent)).await;
                lat.push(t0.elapsed());
                bytes += got.map_or(0, |b| b.len() as u64);
            }
            (lat, bytes)
        }));
    }
    let mut lat = Vec::new();
    let mut bytes = 0;
    for t in tasks {
        let (l, b) = t.await?;
        lat.extend(l);
        bytes += b;
    }
    let elapsed = started.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    println!("read_count={}", lat.len());
    println!("read_hit_bytes={bytes}");
    println!("read_mb_per_s={:.1}", mbps(bytes, elapsed));
    println!("read_p50_ms={:.3}", pct(0.50));
    println!("read_p99_ms={:.3}", pct(0.99));
    println!("index_bytes_per_entry={:.1}", store.stats().index_bytes_per_entry);
    // Crash: drop without close (the checkpoint was invalidated at open).
    drop(store);

    let started = Instant::now();
    let store = open(&opts)?;
    let scan = started.elapsed();
    let rec = store.recovery();
    let scanned = u64::from(rec.regions_in_use) * u64::from(region);
    println!("scan_source={:?}", rec.source);
    println!("scan_entries={}", rec.entries);
    println!("scan_seconds={:.3}", scan.as_secs_f64());
    println!(
        "scan_seconds_per_gib={:.3}",
        scan.as_secs_f64() / (scanned as f64 / f64::from(1u32 << 30))
    );

    // Churn: 3x the capacity in mixed sizes, reading a hot set meanwhile.
    let before = store.stats();
    let hot: Vec<_> = (0..64).map(|i| key(3, i, 64 << 10)).collect();
    let hot_payload = Bytes::from(vec![0x3Cu8; 64 << 10]);
    for k in &hot {
        store.put(*k, hot_payload.clone()).await;
    }
    let sizes = [64u32 << 10, 256 << 10, 1 << 20, 16 << 10];
    let mut written = 0u64;
    let mut i = 0u64;
    let mut hot_hits = 0u64;
    let mut hot_reads = 0u64;
    while written < 3 * g.capacity() {
        let len = sizes[(i % 4) as usize];
        store
            .put(key(2, i, len), payload.slice(..len.min(extent) as usize))
            .await;
        written += u64::from(len.min(extent));
        if i.is_multiple_of(16) {
            hot_reads += 1;
            hot_hits += u64::from(store.get(&hot[(i / 16 % 64) as usize]).await.is_some());
        }
        i += 1;
    }
    store.flush().await?;
    let after = store.stats();
    let put = after.put_bytes - before.put_bytes;
    let dev = after.device_written_bytes - before.device_written_bytes;
    println!("churn_put_bytes={put}");
    println!("churn_device_written_bytes={dev}");
    println!("churn_write_amplification={:.3}", dev as f64 / put as f64);
    println!(
        "churn_region_reclaims={}",
        after.region_reclaims - before.region_reclaims
    );
    println!("churn_reinsertions={}", after.reinsertions - before.reinsertions);
    println!("churn_hot_hit_ratio={:.3}", hot_hits as f64 / hot_reads.max(1) as f64);
    println!("churn_index_bytes_per_entry={:.1}", after.index_bytes_per_entry);
    store.close().await?;
    Ok(())
}
