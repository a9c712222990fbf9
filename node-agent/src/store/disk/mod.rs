//! L2: a log-structured extent store on a raw block device (or a file used as
//! one).
//!
//! Memory is small and expensive, local disks are large and cheap; this tier
//! keeps the working set of a node on its disk and survives agent restarts.
//! The device carries a superblock ([`superblock`]), a checkpoint area and
//! equal regions written sequentially with O_DIRECT ([`region`]); every record
//! has a checksummed header ([`entry`]) so the compact in-memory [`index`] can
//! be rebuilt by scanning after a crash ([`recovery`]); a clean close saves
//! it with the [`region_table`] in the [`checkpoint`] instead. All device I/O runs on
//! dedicated threads ([`io`]), never on async workers. The on-disk format is
//! documented in docs/storage.md.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use slicecache_api::agent_config::FormatPolicy;
use tokio::sync::{oneshot, Semaphore};

use super::{ExtentKey, ExtentStore, ObjectId};

pub mod aligned;
pub mod blank_check;
pub mod checkpoint;
pub mod entry;
pub mod index;
pub mod io;
pub mod metrics;
pub mod recovery;
pub mod region;
pub mod region_table;
pub mod superblock;
pub mod wipe;

use aligned::{align_down, AlignedBuf, BufPool, RegionBuf, ALIGN};
use entry::{entry_size, EntryKey, HEADER_LEN, REGION_HEADER_LEN};
use index::Index;
use io::{Device, IoPool};
use metrics::DiskMetrics;
pub use recovery::{RecoveryReport, RecoverySource};
use region::{Cmd, RegionWriter, WriterConfig};
use region_table::RegionTable;
use superblock::{probe, GeometryError, Probe, Superblock, PROBE_LEN, SUPERBLOCK_LEN};
pub use superblock::{Geometry, Signature};

/// Default region size: large sequential writes, bounded loss on crash.
pub const DEFAULT_REGION_SIZE: u32 = 16 << 20;

/// Idle read buffers kept for reuse: a few dozen slices' worth. Buffers in
/// use (on their way to a client, or promoted into L1) are not counted.
const READ_BUF_POOL_BYTES: usize = 32 << 20;

/// How to open a disk store.
#[derive(Clone, Debug)]
pub struct DiskOptions {
    /// Block device or regular file.
    pub path: PathBuf,
    /// Create `path` as a sparse file of this many bytes if it does not exist
    /// (or is an empty file). Ignored for existing devices.
    pub size: Option<u64>,
    /// Whether a blank device may be formatted.
    pub format: FormatPolicy,
    /// Region size for formatting; must match an existing superblock.
    pub region_size: u32,
    /// Region buffers in memory (the head plus up to `write_buffers - 1`
    /// region writes in flight, each on its own flusher thread), at least 2.
    pub write_buffers: usize,
    /// Threads serving device reads.
    pub read_threads: usize,
    /// How often the head's unwritten tail is written out.
    pub flush_interval: Duration,
    /// Rewrite recently read entries when their region is reclaimed.
    pub reinsert_hot: bool,
    /// Value of the `device` label on metrics.
    pub name: String,
}

impl DiskOptions {
    /// Defaults for `path`: 16 MiB regions, 3 write buffers, 4 read threads,
    /// 1 s flush interval, reinsertion on, format if blank.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let name = path
            .file_name()
            .map_or_else(|| "disk".to_owned(), |n| n.to_string_lossy().into_owned());
        Self {
            path,
            size: None,
            format: FormatPolicy::IfNotOwned,
            region_size: DEFAULT_REGION_SIZE,
            write_buffers: 3,
            read_threads: 4,
            flush_interval: Duration::from_secs(1),
            reinsert_hot: true,
            name,
        }
    }
}

/// Why the store cannot open or an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot open cache device {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{op} on cache device {path} failed: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error(
        "refusing to format {path}: it carries {found}; nothing was written. \
         If it really is free for slicecache, name it in cache.devices with format: Overwrite"
    )]
    Foreign { path: PathBuf, found: Signature },
    #[error("{path} carries no slicecache superblock and the format policy is Never")]
    NotFormatted { path: PathBuf },
    #[error("{path} carries a damaged slicecache superblock ({reason}); refusing to use or reformat it")]
    DamagedSuperblock {
        path: PathBuf,
        reason: superblock::SuperblockError,
    },
    #[error("geometry of {path} does not match its superblock: {detail}")]
    GeometryMismatch { path: PathBuf, detail: String },
    #[error("invalid disk cache options for {path}: {reason}")]
    InvalidOptions { path: PathBuf, reason: OptionError },
    #[error("registering disk cache metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("a region write failed: {0}")]
    Write(String),
    #[error("the disk store is closed")]
    Closed,
}

impl DiskError {
    pub(crate) fn io(path: &Path, op: &'static str, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    }
}

/// Everything behind the index lock.
#[derive(Debug)]
pub(crate) struct State {
    pub index: Index,
    pub regions: RegionTable,
    /// Region images still in memory (the head and regions being written).
    pub resident: HashMap<u32, Arc<RegionBuf>>,
}

/// State shared by the async front, the writer thread and I/O threads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub dev: Device,
    pub geometry: Geometry,
    pub uuid: u128,
    pub metrics: DiskMetrics,
    state: Mutex<State>,
    reads: IoPool,
    /// Buffers for device reads (see [`BufPool`]).
    pub read_bufs: Arc<BufPool>,
    write_error: Mutex<Option<String>>,
    /// Throttles the log line for entries that failed their checksum.
    corrupt_log: crate::log_throttle::LogThrottle,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn record_write_error(&self, e: String) {
        tracing::error!(error = %e, "disk cache write failed; entries of that region are dropped");
        *self.write_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
    }

    pub fn take_write_error(&self) -> Option<String> {
        self.write_error.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    pub fn update_gauges(&self, head_free: u64) {
        let st = self.lock();
        let m = &self.metrics;
        m.entries.set(st.index.len() as i64);
        m.used_bytes.set(st.index.live_bytes() as i64);
        let free = st.regions.free.len() as u64 * u64::from(self.geometry.region_size) + head_free;
        m.free_bytes.set(free as i64);
    }
}

/// A point-in-time summary, for tests, benchmarks and the admin page.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiskStats {
    pub entries: usize,
    pub used_bytes: u64,
    pub capacity_bytes: u64,
    pub free_regions: u32,
    pub region_reclaims: u64,
    pub reinsertions: u64,
    pub put_bytes: u64,
    pub device_written_bytes: u64,
    pub checksum_failures: u64,
    pub index_bytes_per_entry: f64,
}

/// Device I/O as seen at one moment (see [`DiskStore::io_activity`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoActivity {
    /// Entry reads that went to the device (not served from a write buffer).
    pub device_reads: u64,
    /// Writes that have returned.
    pub writes_completed: u64,
    /// Writes submitted to the device and not yet returned.
    pub writes_in_flight: i64,
}

/// The L2 store. Cheap to share behind an `Arc`; see the module docs.
pub struct DiskStore {
    shared: Arc<Shared>,
    cmd: Mutex<Option<mpsc::Sender<Cmd>>>,
    permits: Arc<Semaphore>,
    max_permits: u32,
    recovery: RecoveryReport,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
}

impl fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskStore")
            .field("path", &self.shared.dev.path())
            .field("geometry", &self.shared.geometry)
            .finish_non_exhaustive()
    }
}

/// Which disk option is out of range, and why.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    #[error("write_buffers {0} must be between 2 and 16")]
    WriteBuffers(usize),
    #[error("read_threads {0} must be between 1 and 256")]
    ReadThreads(usize),
    #[error("flush_interval must be positive")]
    FlushInterval,
    #[error("device of {0} bytes is too small")]
    DeviceTooSmall(u64),
    #[error(transparent)]
    Geometry(#[from] GeometryError),
}

fn validate(opts: &DiskOptions) -> Result<(), OptionError> {
    if opts.write_buffers < 2 || opts.write_buffers > 16 {
        return Err(OptionError::WriteBuffers(opts.write_buffers));
    }
    if opts.read_threads == 0 || opts.read_threads > 256 {
        return Err(OptionError::ReadThreads(opts.read_threads));
    }
    if opts.flush_interval.is_zero() {
        return Err(OptionError::FlushInterval);
    }
    Ok(())
}

impl DiskStore {
    /// Opens (and if allowed, formats) the device, rebuilds the index and
    /// starts the I/O threads. Blocking: call it before serving or from
    /// `spawn_blocking`.
    pub fn open(opts: DiskOptions, registry: &prometheus::Registry) -> Result<Self, DiskError> {
        let path = opts.path.clone();
        validate(&opts).map_err(|reason| DiskError::InvalidOptions {
            path: path.clone(),
            reason,
        })?;
        let dev = Device::open(&path, opts.size).map_err(|source| DiskError::Open {
            path: path.clone(),
            source,
        })?;
        let device_size = dev.size();
        if device_size < ALIGN as u64 {
            return Err(DiskError::InvalidOptions {
                path,
                reason: OptionError::DeviceTooSmall(device_size),
            });
        }
        let probe_len = (align_down(device_size, ALIGN as u64) as usize).min(PROBE_LEN);
        let mut head = AlignedBuf::zeroed(probe_len);
        dev.read_at(head.as_mut_slice(), 0)
            .map_err(|e| DiskError::io(&path, "probe read", e))?;
        let mut formatted = false;
        let sb = match probe(head.as_slice()) {
            Probe::Owned(sb) => {
                let g = sb.geometry;
                if g.device_size != device_size {
                    return Err(DiskError::GeometryMismatch {
                        path,
                        detail: format!(
                            "superblock records {} bytes but the device has {device_size} bytes",
                            g.device_size
                        ),
                    });
                }
                if g.region_size != opts.region_size {
                    return Err(DiskError::GeometryMismatch {
                        path,
                        detail: format!(
                            "superblock records {} byte regions but {} were configured",
                            g.region_size, opts.region_size
                        ),
                    });
                }
                sb
            }
            Probe::Damaged(reason) if opts.format == FormatPolicy::Overwrite => {
                tracing::warn!(device = %path.display(), %reason, "format: Overwrite; reformatting a device with a damaged superblock");
                formatted = true;
                format(&dev, device_size, opts.region_size)?
            }
            Probe::Foreign(found) if opts.format == FormatPolicy::Overwrite => {
                tracing::warn!(device = %path.display(), ?found, "format: Overwrite; erasing a device that is not ours");
                formatted = true;
                format(&dev, device_size, opts.region_size)?
            }
            Probe::Damaged(reason) => return Err(DiskError::DamagedSuperblock { path, reason }),
            Probe::Foreign(found) => return Err(DiskError::Foreign { path, found }),
            Probe::Blank => {
                if opts.format == FormatPolicy::Never {
                    return Err(DiskError::NotFormatted { path });
                }
                // The head alone is not proof: look at the end and across the device.
                if let Err(found) =
                    blank_check::confirm_blank(&dev).map_err(|e| DiskError::io(&path, "blank check read", e))?
                {
                    return Err(DiskError::Foreign { path, found });
                }
                formatted = true;
                format(&dev, device_size, opts.region_size)?
            }
        };
        let geometry = sb.geometry;
        // Reclaim takes the oldest sealed region, which must not be one still
        // being written: a small device gets fewer buffers (never under 2,
        // which MIN_REGIONS leaves room for).
        let write_buffers = opts
            .write_buffers
            .min((geometry.region_count as usize).saturating_sub(1))
            .max(2);
        let metrics = DiskMetrics::new(&opts.name)?;
        let (index, regions, mut report) = if formatted {
            let report = RecoveryReport {
                source: RecoverySource::Formatted,
                entries: 0,
                torn_entries: 0,
                regions_in_use: 0,
                seconds: 0.0,
            };
            (
                Index::new(geometry.region_count),
                RegionTable::empty(geometry.region_count),
                report,
            )
        } else {
            recovery::recover(&dev, &geometry, sb.uuid)?
        };
        if report.source == RecoverySource::Scan {
            tracing::info!(
                path = %path.display(),
                entries = report.entries,
                torn = report.torn_entries,
                seconds = report.seconds,
                "disk cache index rebuilt by scanning"
            );
        }
        report.entries = index.len();
        metrics.capacity_bytes.set(geometry.capacity() as i64);
        metrics.recovery_torn_entries.inc_by(report.torn_entries);
        metrics.recovery_duration_seconds.set(report.seconds);
        let reads = IoPool::new("slicecache-disk-read", opts.read_threads)
            .map_err(|e| DiskError::io(&path, "spawning read threads", e))?;
        let shared = Arc::new(Shared {
            dev,
            geometry,
            uuid: sb.uuid,
            metrics,
            state: Mutex::new(State {
                index,
                regions,
                resident: HashMap::new(),
            }),
            reads,
            read_bufs: BufPool::new(READ_BUF_POOL_BYTES),
            write_error: Mutex::new(None),
            corrupt_log: crate::log_throttle::LogThrottle::default(),
        });
        shared.update_gauges(0);
        shared.metrics.register(registry)?;
        let config = WriterConfig {
            flush_interval: opts.flush_interval,
            write_buffers,
            reinsert: opts.reinsert_hot,
        };
        let writer = RegionWriter::new(Arc::clone(&shared), config)
            .map_err(|e| DiskError::io(&path, "spawning the flush thread", e))?;
        let (tx, rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("slicecache-disk-writer".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(|e| DiskError::io(&path, "spawning the writer thread", e))?;
        // Queue at most two regions' worth of puts (in KiB permits).
        let max_permits = (geometry.region_size / 512).max(1);
        Ok(Self {
            shared,
            cmd: Mutex::new(Some(tx)),
            permits: Arc::new(Semaphore::new(max_permits as usize)),
            max_permits,
            recovery: report,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// The device layout.
    pub fn geometry(&self) -> Geometry {
        self.shared.geometry
    }

    /// How the index was obtained at open.
    pub fn recovery(&self) -> RecoveryReport {
        self.recovery
    }

    /// Counts of device I/O. Completed writes are read before the in-flight
    /// gauge: when a later call shows `writes_completed` unchanged, every
    /// write in flight at this call was still in flight then.
    pub fn io_activity(&self) -> IoActivity {
        let m = &self.shared.metrics;
        let device_reads = m.read_duration_seconds.get_sample_count();
        let writes_completed = m.write_duration_seconds.get_sample_count();
        IoActivity {
            device_reads,
            writes_completed,
            writes_in_flight: m.writes_in_flight.get(),
        }
    }

    pub fn stats(&self) -> DiskStats {
        let st = self.shared.lock();
        let m = &self.shared.metrics;
        DiskStats {
            entries: st.index.len(),
            used_bytes: st.index.live_bytes(),
            capacity_bytes: self.shared.geometry.capacity(),
            free_regions: st.regions.free.len() as u32,
            region_reclaims: m.region_reclaims.get(),
            reinsertions: m.reinsertions.get(),
            put_bytes: m.put_bytes.get(),
            device_written_bytes: m.device_written_bytes.get(),
            checksum_failures: m.checksum_failures.get(),
            index_bytes_per_entry: st.index.bytes_per_entry(),
        }
    }

    fn send(&self, cmd: Cmd) -> bool {
        let guard = self.cmd.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().is_some_and(|tx| tx.send(cmd).is_ok())
    }

    async fn call(&self, make: impl FnOnce(oneshot::Sender<Result<(), DiskError>>) -> Cmd) -> Result<(), DiskError> {
        let (tx, rx) = oneshot::channel();
        if !self.send(make(tx)) {
            return Err(DiskError::Closed);
        }
        rx.await.map_err(|_| DiskError::Closed)?
    }

    /// Writes everything put so far to the device and syncs it.
    pub async fn flush(&self) -> Result<(), DiskError> {
        self.call(|done| Cmd::Flush { done }).await
    }

    /// Flushes, writes the index checkpoint and stops the writer. Later puts
    /// are ignored; reads keep working. Dropping the store without `close`
    /// behaves like a crash (the next open scans).
    pub async fn close(&self) -> Result<(), DiskError> {
        let result = self.call(|done| Cmd::Close { done }).await;
        self.cmd.lock().unwrap_or_else(PoisonError::into_inner).take();
        let handle = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        result
    }

    async fn put_entry(&self, key: EntryKey, data: Bytes) {
        let size = entry_size(data.len());
        if size > self.shared.geometry.region_size as usize - REGION_HEADER_LEN {
            self.shared.metrics.puts_rejected.inc();
            return;
        }
        let want = ((data.len() >> 10) as u32 + 1).min(self.max_permits);
        let Ok(permit) = Arc::clone(&self.permits).acquire_many_owned(want).await else {
            return;
        };
        self.send(Cmd::Put {
            key,
            data,
            _permit: permit,
        });
    }

    async fn get_entry(&self, key: EntryKey) -> Option<Bytes> {
        let result = self.read_entry(key).await;
        let m = &self.shared.metrics;
        if result.is_some() {
            m.hits.inc()
        } else {
            m.misses.inc()
        }
        result
    }

    async fn read_entry(&self, key: EntryKey) -> Option<Bytes> {
        let hash = key.hash64();
        let (slot, seq, resident) = {
            let mut st = self.shared.lock();
            let slot = st.index.touch(hash)?;
            let seq = st.regions.seq[slot.region as usize];
            (slot, seq, st.resident.get(&slot.region).cloned())
        };
        let len = HEADER_LEN + slot.len as usize;
        if let Some(buf) = resident {
            if let Some(img) = buf.read(slot.offset() as usize, len) {
                drop(buf);
                // Bytes in memory were copied from the caller; still check the
                // key so a hash collision is a miss.
                return match entry::EntryHeader::decode(&img) {
                    Ok(h) if h.key == key => Some(Bytes::from(img).slice(HEADER_LEN..)),
                    _ => None,
                };
            }
        }
        let (tx, rx) = oneshot::channel();
        let shared = Arc::clone(&self.shared);
        let offset = shared.geometry.region_offset(slot.region) + u64::from(slot.offset());
        // The checksum runs on the read thread too: it is a pass over the
        // whole entry, which the async workers have better things to do with.
        let submitted = self.shared.reads.execute(move || {
            let started = std::time::Instant::now();
            let read = shared.dev.read_unaligned(offset, len, &shared.read_bufs);
            shared
                .metrics
                .read_duration_seconds
                .observe(started.elapsed().as_secs_f64());
            let outcome = match read {
                Ok((buf, start)) => match entry::verify_entry(&buf.as_slice()[start..start + len], &key) {
                    Ok(range) => {
                        DeviceRead::Verified(Bytes::from_owner(buf).slice(start + range.start..start + range.end))
                    }
                    Err(_) => DeviceRead::Corrupt,
                },
                Err(e) => DeviceRead::Failed(e),
            };
            let _ = tx.send(outcome);
        });
        if !submitted {
            return None;
        }
        match rx.await.ok()? {
            DeviceRead::Verified(bytes) => Some(bytes),
            DeviceRead::Failed(e) => {
                self.shared.metrics.io_errors.inc();
                tracing::warn!(error = %e, "disk cache read failed");
                None
            }
            DeviceRead::Corrupt => {
                let mut st = self.shared.lock();
                // A reclaim between lookup and read is a plain miss; only a
                // failure at an unchanged location is corruption.
                if st.regions.seq[slot.region as usize] == seq
                    && st.index.remove_if_at(hash, slot.region, slot.offset())
                {
                    self.shared.metrics.checksum_failures.inc();
                    if let Some(held_back) = self.shared.corrupt_log.allow() {
                        tracing::warn!(
                            region = slot.region,
                            offset = slot.offset(),
                            held_back,
                            "disk cache entry failed its checksum; dropped it and fetching the slice again"
                        );
                    }
                }
                None
            }
        }
    }
}

/// What a read thread found at an entry's location.
enum DeviceRead {
    /// The entry's payload, its key and checksum verified.
    Verified(Bytes),
    /// Not the entry the index pointed to, or its checksum failed.
    Corrupt,
    Failed(std::io::Error),
}

impl Drop for DiskStore {
    /// Stops the writer without flushing or checkpointing (crash semantics)
    /// and waits for it and the read threads, so the device is closed when
    /// this returns and can be opened again at once (block devices are
    /// opened O_EXCL).
    fn drop(&mut self) {
        self.cmd.lock().unwrap_or_else(PoisonError::into_inner).take();
        let handle = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        self.shared.reads.join();
    }
}

/// Writes a fresh superblock. Only called on a device that probed blank.
fn format(dev: &Device, device_size: u64, region_size: u32) -> Result<Superblock, DiskError> {
    let geometry = Geometry::plan(device_size, region_size).map_err(|e| DiskError::InvalidOptions {
        path: dev.path().to_path_buf(),
        reason: e.into(),
    })?;
    let created_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let sb = Superblock {
        uuid: rand::random::<u128>(),
        geometry,
        created_unix,
    };
    // The checkpoint header may hold garbage from an earlier life of the disk;
    // its UUID would not match, but zero it anyway before claiming the device.
    checkpoint::invalidate(dev, &geometry)?;
    let mut buf = AlignedBuf::zeroed(SUPERBLOCK_LEN);
    buf.as_mut_slice().copy_from_slice(&sb.encode());
    dev.write_at(buf.as_slice(), 0)
        .and_then(|()| dev.sync())
        .map_err(|e| DiskError::io(dev.path(), "superblock write", e))?;
    tracing::info!(path = %dev.path().display(), ?geometry, "formatted slicecache disk cache");
    Ok(sb)
}

#[async_trait]
impl ExtentStore for DiskStore {
    async fn get(&self, key: &ExtentKey) -> Option<Bytes> {
        self.get_entry(EntryKey::extent(key)).await
    }

    async fn put(&self, key: ExtentKey, data: Bytes) {
        if data.len() != key.len as usize {
            self.shared.metrics.puts_rejected.inc();
            return;
        }
        self.put_entry(EntryKey::extent(&key), data).await;
    }

    async fn get_meta(&self, object: ObjectId) -> Option<Bytes> {
        self.get_entry(EntryKey::meta(object)).await
    }

    async fn put_meta(&self, object: ObjectId, meta: Bytes) {
        self.put_entry(EntryKey::meta(object), meta).await;
    }

    async fn remove_object(&self, object: ObjectId) {
        let (done, rx) = oneshot::channel();
        if self.send(Cmd::Remove { object, done }) {
            let _ = rx.await;
        }
    }
}
