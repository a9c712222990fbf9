//! End-to-end tests of the L2 disk store on real files (and a loop device
//! when the machine allows it): persistence, crash recovery (drop and
//! SIGKILL), corruption, foreign devices, churn and geometry checks.

#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use slicecache_agent::store::disk::{DiskError, DiskOptions, DiskStore, RecoverySource, Signature};
use slicecache_agent::store::{ExtentKey, ExtentStore, ObjectId};
use slicecache_api::agent_config::FormatPolicy;

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

fn options(path: &Path, size: u64, region: u32) -> DiskOptions {
    let mut o = DiskOptions::new(path);
    o.size = Some(size);
    o.region_size = region;
    o.flush_interval = Duration::from_millis(50);
    o
}

fn open(o: &DiskOptions) -> Result<DiskStore, DiskError> {
    DiskStore::open(o.clone(), &prometheus::Registry::new())
}

fn key(object: u128, i: u64, len: u32) -> ExtentKey {
    ExtentKey {
        object: ObjectId(object),
        version: 7,
        offset: i * u64::from(len),
        len,
    }
}

/// Deterministic bytes for a key, so any served extent can be checked.
fn content(k: &ExtentKey) -> Bytes {
    let mut s = xxhash_rust::xxh3::xxh3_64(
        &[
            k.object.0.to_le_bytes().as_slice(),
            &k.version.to_le_bytes(),
            &k.offset.to_le_bytes(),
        ]
        .concat(),
    ) | 1;
    let mut v = Vec::with_capacity(k.len as usize + 8);
    while v.len() < k.len as usize {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.extend_from_slice(&s.to_le_bytes());
    }
    v.truncate(k.len as usize);
    Bytes::from(v)
}

fn len_for(i: u64) -> u32 {
    // Mix of small and medium extents, none block aligned.
    [3000, 700, 12_345, 64, 40_000][(i % 5) as usize]
}

fn file_hash(path: &Path) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&std::fs::read(path).unwrap())
}

async fn assert_exact_or_miss(store: &DiskStore, k: &ExtentKey) -> bool {
    match store.get(k).await {
        Some(b) => {
            assert_eq!(b, content(k), "wrong bytes served for {k:?}");
            true
        }
        None => false,
    }
}

#[tokio::test]
async fn clean_close_persists_extents_and_metadata() {
    let dir = tmpdir();
    let o = options(&dir.path().join("dev"), 32 << 20, 256 << 10);
    let store = open(&o).unwrap();
    assert_eq!(store.recovery().source, RecoverySource::Formatted);
    let keys: Vec<_> = (0..300).map(|i| key(1 + (i % 7) as u128, i, len_for(i))).collect();
    for k in &keys {
        store.put(*k, content(k)).await;
    }
    for o in 1..=7u128 {
        store.put_meta(ObjectId(o), Bytes::from(format!("meta-of-{o}"))).await;
    }
    // Served from memory before anything is flushed, too.
    store.flush().await.unwrap();
    assert!(assert_exact_or_miss(&store, &keys[0]).await);
    store.close().await.unwrap();
    drop(store);

    for round in 0..2 {
        let store = open(&o).unwrap();
        assert_eq!(store.recovery().source, RecoverySource::Checkpoint, "round {round}");
        for k in &keys {
            assert!(assert_exact_or_miss(&store, k).await, "missing {k:?} after reopen");
        }
        for o in 1..=7u128 {
            assert_eq!(
                store.get_meta(ObjectId(o)).await.unwrap(),
                Bytes::from(format!("meta-of-{o}"))
            );
        }
        assert_eq!(store.get(&key(99, 0, 10)).await, None);
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn drop_without_close_recovers_flushed_data_by_scan() {
    let dir = tmpdir();
    let o = options(&dir.path().join("dev"), 32 << 20, 256 << 10);
    let store = open(&o).unwrap();
    let flushed: Vec<_> = (0..400).map(|i| key(2, i, len_for(i))).collect();
    for k in &flushed {
        store.put(*k, content(k)).await;
    }
    store.put_meta(ObjectId(2), Bytes::from_static(b"meta2")).await;
    store.flush().await.unwrap();
    let unflushed: Vec<_> = (0..50).map(|i| key(3, i, len_for(i))).collect();
    for k in &unflushed {
        store.put(*k, content(k)).await;
    }
    drop(store); // no close: no checkpoint, head tail may be lost

    let store = open(&o).unwrap();
    let rec = store.recovery();
    assert_eq!(rec.source, RecoverySource::Scan);
    for k in &flushed {
        assert!(assert_exact_or_miss(&store, k).await, "flushed {k:?} lost");
    }
    assert_eq!(store.get_meta(ObjectId(2)).await.unwrap(), Bytes::from_static(b"meta2"));
    for k in &unflushed {
        assert_exact_or_miss(&store, k).await;
    }
    assert_eq!(store.stats().checksum_failures, 0);
}

const CRASH_ENV: &str = "SLICECACHE_DISK_CRASH_DEVICE";

/// Child half of `sigkill_during_writes_loses_only_unflushed_data`: does
/// nothing unless the parent sets CRASH_ENV.
#[test]
fn crash_child_writer() {
    let Ok(path) = std::env::var(CRASH_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let o = options(Path::new(&path), 32 << 20, 256 << 10);
        let store = open(&o).unwrap();
        let mut out = std::io::stdout();
        let mut i = 0u64;
        loop {
            for _ in 0..50 {
                let k = key(5, i, len_for(i));
                store.put(k, content(&k)).await;
                i += 1;
            }
            store.flush().await.unwrap();
            writeln!(out, "flushed {i}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[tokio::test]
async fn sigkill_during_writes_loses_only_unflushed_data() {
    let dir = tmpdir();
    let path = dir.path().join("dev");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_writer", "--nocapture", "--test-threads=1"])
        .env(CRASH_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut durable = 0u64;
    while durable < 600 {
        let line = lines.next().expect("child exited early").unwrap();
        if let Some(n) = line.strip_prefix("flushed ") {
            durable = n.parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL, mid write loop
    child.wait().unwrap();

    let store = open(&options(&path, 32 << 20, 256 << 10)).unwrap();
    assert_eq!(store.recovery().source, RecoverySource::Scan);
    let mut later_hits = 0;
    for i in 0..durable + 2000 {
        let k = key(5, i, len_for(i));
        let hit = assert_exact_or_miss(&store, &k).await;
        if i < durable {
            assert!(hit, "extent {i} was flushed before the kill but is gone");
        } else if hit {
            later_hits += 1;
        }
    }
    println!("durable {durable}, recovered {later_hits} more written after the last flush");
    assert_eq!(store.stats().checksum_failures, 0);
}

fn scribble(path: &Path, at: u64, len: usize) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    let junk: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(151).wrapping_add(77)).collect();
    f.write_all_at(&junk, at).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test]
async fn corrupt_bytes_are_misses_and_the_rest_serves() {
    for clean_close in [true, false] {
        let dir = tmpdir();
        let path = dir.path().join("dev");
        let o = options(&path, 32 << 20, 256 << 10);
        let store = open(&o).unwrap();
        let keys: Vec<_> = (0..200).map(|i| key(6, i, len_for(i))).collect();
        for k in &keys {
            store.put(*k, content(k)).await;
        }
        store.flush().await.unwrap();
        let g = store.geometry();
        if clean_close {
            store.close().await.unwrap();
        }
        drop(store);
        // 8 KiB of garbage in the middle of the second region written.
        scribble(&path, g.region_offset(1) + 100_000, 8192);

        let store = open(&o).unwrap();
        let expected = if clean_close {
            RecoverySource::Checkpoint
        } else {
            RecoverySource::Scan
        };
        assert_eq!(store.recovery().source, expected);
        if !clean_close {
            assert!(store.recovery().torn_entries > 0, "scan did not notice the corruption");
        }
        let mut misses = 0;
        for k in &keys {
            if !assert_exact_or_miss(&store, k).await {
                misses += 1;
            }
        }
        // 8 KiB can touch at most a handful of these entries.
        assert!((1..=6).contains(&misses), "misses {misses} (clean_close {clean_close})");
        if clean_close {
            assert_eq!(store.stats().checksum_failures, misses);
        }
        // A second read of a dropped entry is a plain miss, not a new failure.
        let failures = store.stats().checksum_failures;
        for k in &keys {
            assert_exact_or_miss(&store, k).await;
        }
        assert_eq!(store.stats().checksum_failures, failures);
    }
}

#[tokio::test]
async fn foreign_and_blank_devices_are_refused_untouched() {
    let dir = tmpdir();
    // ext4 superblock magic at 0x438.
    let ext4 = dir.path().join("ext4");
    std::fs::write(&ext4, vec![0u8; 8 << 20]).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&ext4)
        .unwrap()
        .write_all_at(&[0x53, 0xEF], 0x438)
        .unwrap();
    let before = file_hash(&ext4);
    let err = open(&options(&ext4, 8 << 20, 64 << 10)).unwrap_err();
    assert!(
        matches!(
            err,
            DiskError::Foreign {
                found: Signature::Ext4,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("ext2/3/4"), "{err}");
    assert_eq!(file_hash(&ext4), before);

    // Random data with no known signature.
    let random = dir.path().join("random");
    let data: Vec<u8> = (0..(8u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
        .collect();
    std::fs::write(&random, &data).unwrap();
    let before = file_hash(&random);
    let err = open(&options(&random, 8 << 20, 64 << 10)).unwrap_err();
    assert!(
        matches!(
            err,
            DiskError::Foreign {
                found: Signature::NonZero { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(file_hash(&random), before);

    // GPT label.
    let gpt = dir.path().join("gpt");
    std::fs::write(&gpt, vec![0u8; 8 << 20]).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&gpt)
        .unwrap()
        .write_all_at(b"EFI PART", 512)
        .unwrap();
    let before = file_hash(&gpt);
    let err = open(&options(&gpt, 8 << 20, 64 << 10)).unwrap_err();
    assert!(
        matches!(
            err,
            DiskError::Foreign {
                found: Signature::Gpt,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(file_hash(&gpt), before);
    // Only an explicit Overwrite takes it, and then it serves as ours.
    let mut o = options(&gpt, 8 << 20, 64 << 10);
    o.format = FormatPolicy::Overwrite;
    open(&o).unwrap().close().await.unwrap();
    assert_ne!(file_hash(&gpt), before, "Overwrite formatted the device");
    o.format = FormatPolicy::Never;
    open(&o).expect("an overwritten device carries our marker");

    // Blank, but the policy forbids formatting.
    let blank = dir.path().join("blank");
    let mut o = options(&blank, 8 << 20, 64 << 10);
    o.format = FormatPolicy::Never;
    let err = open(&o).unwrap_err();
    assert!(matches!(err, DiskError::NotFormatted { .. }), "{err}");
    assert!(std::fs::read(&blank).unwrap().iter().all(|&b| b == 0));
    // Once formatted, Never is fine.
    o.format = FormatPolicy::IfNotOwned;
    open(&o).unwrap().close().await.unwrap();
    o.format = FormatPolicy::Never;
    open(&o).unwrap();
}

#[tokio::test]
async fn geometry_mismatch_is_refused() {
    let dir = tmpdir();
    let path = dir.path().join("dev");
    let o = options(&path, 16 << 20, 64 << 10);
    open(&o).unwrap().close().await.unwrap();
    // Device shrank.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(12 << 20)
        .unwrap();
    let err = open(&o).unwrap_err();
    assert!(matches!(err, DiskError::GeometryMismatch { .. }), "{err}");
    assert!(err.to_string().contains("12582912"), "{err}");
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    // Configured region size differs.
    let mut other = o.clone();
    other.region_size = 128 << 10;
    let err = open(&other).unwrap_err();
    assert!(matches!(err, DiskError::GeometryMismatch { .. }), "{err}");
    open(&o).unwrap();
}

#[tokio::test]
async fn churn_of_ten_device_sizes_keeps_serving_recent_and_hot_data() {
    let dir = tmpdir();
    let size = 8u64 << 20;
    let o = options(&dir.path().join("dev"), size, 64 << 10);
    let store = open(&o).unwrap();
    let hot: Vec<_> = (0..8).map(|i| key(100, i, 2000)).collect();
    for k in &hot {
        store.put(*k, content(k)).await;
    }
    let mut written = 0u64;
    let mut i = 0u64;
    while written < 10 * size {
        let k = key(101, i, len_for(i));
        store.put(k, content(&k)).await;
        written += u64::from(k.len);
        i += 1;
        if i.is_multiple_of(200) {
            for h in &hot {
                assert!(assert_exact_or_miss(&store, h).await, "hot extent {h:?} evicted");
            }
        }
    }
    store.flush().await.unwrap();
    let stats = store.stats();
    assert!(stats.region_reclaims > 100, "{stats:?}");
    assert!(stats.reinsertions > 0, "{stats:?}");
    // The most recent ~quarter of the device is certainly still there.
    let mut recent = 0u64;
    let mut j = i;
    while recent < size / 4 {
        j -= 1;
        let k = key(101, j, len_for(j));
        assert!(assert_exact_or_miss(&store, &k).await, "recent extent {j} missing");
        recent += u64::from(k.len);
    }
    let wa = stats.device_written_bytes as f64 / stats.put_bytes as f64;
    println!(
        "churn: put {} B, device writes {} B, write amplification {wa:.3}, reclaims {}, reinsertions {}, index {:.1} B/entry",
        stats.put_bytes, stats.device_written_bytes, stats.region_reclaims, stats.reinsertions, stats.index_bytes_per_entry
    );
    assert!(wa < 1.5, "write amplification {wa}");
    assert!(stats.used_bytes <= stats.capacity_bytes);
    store.close().await.unwrap();
}

#[tokio::test]
async fn remove_object_survives_restart() {
    for clean_close in [true, false] {
        let dir = tmpdir();
        let o = options(&dir.path().join("dev"), 16 << 20, 64 << 10);
        let store = open(&o).unwrap();
        let a: Vec<_> = (0..60).map(|i| key(10, i, 5000)).collect();
        let b: Vec<_> = (0..60).map(|i| key(11, i, 5000)).collect();
        for k in a.iter().chain(&b) {
            store.put(*k, content(k)).await;
        }
        store.put_meta(ObjectId(10), Bytes::from_static(b"a")).await;
        store.put_meta(ObjectId(11), Bytes::from_static(b"b")).await;
        store.remove_object(ObjectId(10)).await;
        assert_eq!(store.get(&a[0]).await, None);
        // Re-cached after the purge: must survive.
        store.put(a[1], content(&a[1])).await;
        store.flush().await.unwrap();
        if clean_close {
            store.close().await.unwrap();
        }
        drop(store);
        let store = open(&o).unwrap();
        assert_eq!(store.get_meta(ObjectId(10)).await, None);
        assert_eq!(store.get_meta(ObjectId(11)).await.as_deref(), Some(&b"b"[..]));
        for (n, k) in a.iter().enumerate() {
            assert_eq!(
                assert_exact_or_miss(&store, k).await,
                n == 1,
                "{k:?} clean_close {clean_close}"
            );
        }
        for k in &b {
            assert!(assert_exact_or_miss(&store, k).await);
        }
    }
}

#[tokio::test]
async fn metrics_are_registered_with_conventional_names() {
    let dir = tmpdir();
    let registry = prometheus::Registry::new();
    let store = DiskStore::open(options(&dir.path().join("dev"), 8 << 20, 64 << 10), &registry).unwrap();
    let k = key(1, 0, 100);
    store.put(k, content(&k)).await;
    store.flush().await.unwrap();
    assert!(store.get(&k).await.is_some());
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    for name in [
        "slicecache_disk_used_bytes",
        "slicecache_disk_free_bytes",
        "slicecache_disk_entries",
        "slicecache_disk_region_reclaims_total",
        "slicecache_disk_reinsertions_total",
        "slicecache_disk_checksum_failures_total",
        "slicecache_disk_recovery_torn_entries_total",
        "slicecache_disk_recovery_duration_seconds",
        "slicecache_disk_read_duration_seconds_bucket",
        "slicecache_disk_write_duration_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
    assert!(text.contains("slicecache_disk_hits_total{device=\"dev\"} 1"), "{text}");
}

/// Descriptors this process holds on `path`.
fn open_descriptors(path: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

/// A dropped store has closed its device by the time `drop` returns, even
/// right after device reads: the next open of a block device (O_EXCL) must
/// not find it busy, and the agent reopens its disks on a config reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_closes_the_device() {
    let dir = tmpdir();
    let path = dir.path().join("dev");
    let o = options(&path, 16 << 20, 1 << 20);
    let keys: Vec<_> = (0..40).map(|i| key(30, i, len_for(i))).collect();
    let store = open(&o).unwrap();
    for k in &keys {
        store.put(*k, content(k)).await;
    }
    store.close().await.unwrap();
    drop(store);
    let path = path.canonicalize().unwrap();
    for round in 0..200 {
        let store = open(&o).unwrap();
        // A fresh store has nothing resident: every hit is a device read.
        let reads = keys.iter().map(|k| assert_exact_or_miss(&store, k));
        let hits = futures::future::join_all(reads)
            .await
            .into_iter()
            .filter(|hit| *hit)
            .count();
        assert_eq!(hits, keys.len(), "round {round}");
        assert!(store.io_activity().device_reads > 0);
        drop(store);
        assert_eq!(
            open_descriptors(&path),
            0,
            "device still open after drop in round {round}"
        );
    }
}

struct LoopDevice(PathBuf);

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[tokio::test]
async fn loop_device_round_trip() {
    // SAFETY-free root check: /proc/self/status carries the effective uid.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        println!("skipping loop device test: not running as root");
        return;
    }
    let dir = tmpdir();
    let backing = dir.path().join("backing");
    std::fs::File::create(&backing).unwrap().set_len(64 << 20).unwrap();
    let out = match Command::new("losetup").args(["-f", "--show"]).arg(&backing).output() {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            println!(
                "skipping loop device test: losetup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        Err(e) => {
            println!("skipping loop device test: cannot run losetup: {e}");
            return;
        }
    };
    let dev = LoopDevice(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_owned()));
    let mut o = options(&dev.0, 0, 1 << 20);
    o.size = None;
    let store = open(&o).unwrap();
    assert_eq!(store.geometry().device_size, 64 << 20);
    let keys: Vec<_> = (0..500).map(|i| key(20, i, len_for(i))).collect();
    for k in &keys {
        store.put(*k, content(k)).await;
    }
    store.close().await.unwrap();
    drop(store);
    let store = open(&o).unwrap();
    assert_eq!(store.recovery().source, RecoverySource::Checkpoint);
    for k in &keys {
        assert!(assert_exact_or_miss(&store, k).await);
    }
    drop(store);
    // Crash path on the block device too.
    let store = open(&o).unwrap();
    let extra: Vec<_> = (0..100).map(|i| key(21, i, len_for(i))).collect();
    for k in &extra {
        store.put(*k, content(k)).await;
    }
    store.flush().await.unwrap();
    drop(store);
    let store = open(&o).unwrap();
    assert_eq!(store.recovery().source, RecoverySource::Scan);
    for k in keys.iter().chain(&extra) {
        assert!(assert_exact_or_miss(&store, k).await);
    }
}

/// Device reads run on their own threads while region writes are in
/// flight: a read that starts with a write in flight and ends before any
/// write completes ran entirely inside that write. With reads queued behind
/// writes (one I/O thread, or writes holding a lock across the syscall) no
/// read could satisfy that: such a design scores exactly zero, so a few
/// are proof enough, and four readers keep the sample large on a busy
/// machine.
///
/// The file is written full of zeros first: on a sparse file every region
/// write allocates blocks, and ext4 then holds the inode lock exclusively
/// across the direct write, which queues the reads in the filesystem (a
/// block device has no such lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_reads_overlap_region_writes() {
    let dir = tmpdir();
    let path = dir.path().join("dev");
    let size = 512u64 << 20;
    {
        let mut f = std::fs::File::create(&path).unwrap();
        let zeros = vec![0u8; 4 << 20];
        for _ in 0..size / zeros.len() as u64 {
            f.write_all(&zeros).unwrap();
        }
        f.sync_all().unwrap();
    }
    let o = options(&path, size, 16 << 20);
    let store = std::sync::Arc::new(open(&o).unwrap());
    let old: Vec<_> = (0..128).map(|i| key(30, i, 256 << 10)).collect();
    for k in &old {
        store.put(*k, content(k)).await;
    }
    store.flush().await.unwrap();

    let new: Vec<_> = (0..320).map(|i| key(31, i, 1 << 20)).collect();
    let bodies: Vec<_> = new.iter().map(content).collect();
    let writer = {
        let store = std::sync::Arc::clone(&store);
        let new = new.clone();
        tokio::spawn(async move {
            for (k, body) in new.into_iter().zip(bodies) {
                store.put(k, body).await;
            }
            store.flush().await.unwrap();
        })
    };
    // Four readers at once, so a loaded machine still yields enough samples.
    let readers: Vec<_> = (0..4usize)
        .map(|r| {
            let store = std::sync::Arc::clone(&store);
            let old = old.clone();
            let writing = writer.abort_handle();
            tokio::spawn(async move {
                let (mut device_reads, mut overlapped) = (0u32, 0u32);
                let mut i = r * 31;
                while !writing.is_finished() {
                    let k = &old[i % old.len()];
                    i += 1;
                    let before = store.io_activity();
                    let got = store.get(k).await;
                    let after = store.io_activity();
                    assert!(got.is_some_and(|b| b == content(k)), "{k:?} lost or wrong");
                    if after.device_reads > before.device_reads {
                        device_reads += 1;
                        if before.writes_in_flight > 0 && after.writes_completed == before.writes_completed {
                            overlapped += 1;
                        }
                    }
                }
                (device_reads, overlapped)
            })
        })
        .collect();
    let (mut device_reads, mut overlapped) = (0u32, 0u32);
    for r in readers {
        let (d, o) = r.await.unwrap();
        device_reads += d;
        overlapped += o;
    }
    writer.await.unwrap();
    println!("device reads during the write burst: {device_reads}, inside one write: {overlapped}");
    assert!(
        overlapped >= 3,
        "only {overlapped} of {device_reads} device reads ran inside a write"
    );
    for k in &new {
        assert!(assert_exact_or_miss(&store, k).await, "{k:?} lost");
    }
}
