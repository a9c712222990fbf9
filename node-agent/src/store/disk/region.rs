//! The log: the single writer that appends to it.
//!
//! The device is cut into equal regions written strictly sequentially, which
//! is what lets small extents share one large O_DIRECT write and lets a crash
//! cost at most the unflushed tail of the head region. The region table
//! ([`super::region_table`]) records which regions are free, which are
//! sealed (in FIFO order) and their sequence numbers; on close the writer
//! saves it with the index ([`super::checkpoint`]). [`RegionWriter`] runs on
//! its own thread: it copies entries into the head buffer, hands full
//! buffers to a flusher thread, flushes the head's tail on a timer, and when
//! no region is free reclaims the oldest one, rewriting its recently read
//! entries at the head (reinsertion).

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::aligned::{align_down, RegionBuf, ALIGN};
use super::checkpoint;
use super::entry::{
    entry_size, object_tag, verify_entry, EntryHeader, EntryKey, Kind, RegionHeader, HEADER_LEN, REGION_HEADER_LEN,
};
use super::index::Slot;
use super::io::IoPool;
use super::{DiskError, Shared};
use crate::store::ObjectId;

/// Work for the writer thread.
#[derive(Debug)]
pub enum Cmd {
    Put {
        key: EntryKey,
        data: Bytes,
        /// Released once the bytes are in the head buffer (back-pressure).
        _permit: OwnedSemaphorePermit,
    },
    Remove {
        object: ObjectId,
        done: oneshot::Sender<()>,
    },
    Flush {
        done: oneshot::Sender<Result<(), DiskError>>,
    },
    Close {
        done: oneshot::Sender<Result<(), DiskError>>,
    },
}

/// One device write, counted and timed. The in-flight gauge drops before the
/// duration is observed, so a reader that sees the histogram's count
/// unchanged across its own read, and the gauge raised at its start, knows a
/// write was in progress the whole time (the overlap test relies on it).
fn write_span(shared: &Shared, span: &[u8], at: u64) -> std::io::Result<()> {
    let m = &shared.metrics;
    m.device_written_bytes.inc_by(span.len() as u64);
    m.writes_in_flight.inc();
    let started = Instant::now();
    let result = shared.dev.write_at(span, at);
    let elapsed = started.elapsed();
    m.writes_in_flight.dec();
    m.write_duration_seconds.observe(elapsed.as_secs_f64());
    result
}

/// Knobs of the writer.
#[derive(Clone, Copy, Debug)]
pub struct WriterConfig {
    pub flush_interval: Duration,
    pub write_buffers: usize,
    pub reinsert: bool,
}

#[derive(Debug)]
struct Head {
    region: u32,
    nonce: u64,
    buf: Arc<RegionBuf>,
    /// Device bytes of this region already written (block aligned).
    written: usize,
    /// `buf.filled()` at the last write; equal means nothing is dirty.
    written_filled: usize,
}

/// The single appender. Owns the head buffer, the spare buffers and the
/// flusher threads (one per spare buffer: sealed regions are written in
/// parallel, which keeps more than one direct write queued on the device).
#[derive(Debug)]
pub(crate) struct RegionWriter {
    shared: Arc<Shared>,
    config: WriterConfig,
    head: Option<Head>,
    spare: Vec<Arc<RegionBuf>>,
    inflight: usize,
    done_tx: mpsc::Sender<Arc<RegionBuf>>,
    done_rx: mpsc::Receiver<Arc<RegionBuf>>,
    flusher: IoPool,
    last_flush: Instant,
}

impl RegionWriter {
    pub fn new(shared: Arc<Shared>, config: WriterConfig) -> std::io::Result<Self> {
        let region_size = shared.geometry.region_size as usize;
        let spare = (0..config.write_buffers.max(2))
            .map(|_| Arc::new(RegionBuf::new(region_size)))
            .collect();
        let (done_tx, done_rx) = mpsc::channel();
        Ok(Self {
            shared,
            config,
            head: None,
            spare,
            inflight: 0,
            done_tx,
            done_rx,
            flusher: IoPool::new("slicecache-disk-flush", config.write_buffers.max(2) - 1)?,
            last_flush: Instant::now(),
        })
    }

    /// Serves commands until the store is closed or dropped. Dropping the
    /// store without `close` leaves the head's unflushed tail unwritten, like
    /// a crash.
    pub fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        loop {
            let cmd = rx.recv_timeout(self.config.flush_interval);
            self.collect_done();
            match cmd {
                Ok(Cmd::Put { key, data, _permit }) => {
                    self.append(key, &data, false);
                }
                Ok(Cmd::Remove { object, done }) => {
                    self.shared.lock().index.remove_tag(object_tag(object));
                    self.append(EntryKey::tombstone(object), &[], false);
                    let _ = done.send(());
                }
                Ok(Cmd::Flush { done }) => {
                    let _ = done.send(self.flush(true));
                }
                Ok(Cmd::Close { done }) => {
                    let result = self.flush(true).and_then(|()| self.checkpoint());
                    let _ = done.send(result);
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.last_flush.elapsed() >= self.config.flush_interval {
                if let Err(e) = self.write_head_tail() {
                    tracing::warn!(error = %e, "periodic flush of the disk cache head failed");
                }
            }
            self.shared.update_gauges(self.head_free());
        }
        // Let in-flight region writes finish and their threads exit, so the
        // device is released.
        self.flusher.join();
    }

    fn head_free(&self) -> u64 {
        self.head
            .as_ref()
            .map_or(0, |h| (h.buf.capacity() - h.buf.filled()) as u64)
    }

    /// Appends one entry, sealing and opening regions as needed.
    fn append(&mut self, key: EntryKey, payload: &[u8], reinsertion: bool) {
        let size = entry_size(payload.len());
        let region_size = self.shared.geometry.region_size as usize;
        if size > region_size - REGION_HEADER_LEN {
            self.shared.metrics.puts_rejected.inc();
            return;
        }
        for _ in 0..3 {
            if self.head.is_none() {
                if let Err(e) = self.open_head() {
                    tracing::error!(error = %e, "disk cache cannot open a region; dropping write");
                    return;
                }
            }
            let Some(head) = self.head.as_ref() else {
                return;
            };
            let header = EntryHeader::new(key, head.nonce, payload).encode();
            if let Some(offset) = head.buf.append(&[&header, payload], size) {
                let region = head.region;
                if key.kind != Kind::Tombstone {
                    let slot = Slot::new(region, offset as u32, payload.len() as u32, object_tag(key.object));
                    self.shared.lock().index.insert(key.hash64(), slot);
                }
                if !reinsertion {
                    self.shared.metrics.put_bytes.inc_by(payload.len() as u64);
                }
                return;
            }
            self.seal_head();
        }
    }

    /// Hands the head buffer to the flusher; its region joins the FIFO.
    fn seal_head(&mut self) {
        let Some(head) = self.head.take() else { return };
        {
            let mut st = self.shared.lock();
            st.regions.used[head.region as usize] = head.buf.filled() as u32;
            st.regions.fifo.push_back(head.region);
        }
        let shared = Arc::clone(&self.shared);
        let done = self.done_tx.clone();
        let Head {
            region, buf, written, ..
        } = head;
        self.inflight += 1;
        let submitted = self.flusher.execute(move || {
            let base = shared.geometry.region_offset(region);
            let (result, _) = buf.with_dirty_span(written, |span| write_span(&shared, span, base + written as u64));
            {
                let mut st = shared.lock();
                if let Err(e) = result {
                    shared.metrics.io_errors.inc();
                    st.index.drop_region(region);
                    shared.record_write_error(format!("writing region {region}: {e}"));
                }
                if st.resident.get(&region).is_some_and(|b| Arc::ptr_eq(b, &buf)) {
                    st.resident.remove(&region);
                }
            }
            let _ = done.send(buf);
        });
        if !submitted {
            self.inflight -= 1;
        }
    }

    fn collect_done(&mut self) {
        while let Ok(buf) = self.done_rx.try_recv() {
            self.inflight -= 1;
            self.spare.push(buf);
        }
    }

    /// Takes a spare buffer, waiting for the flusher if all are in flight.
    fn take_spare(&mut self) -> Result<RegionBuf, DiskError> {
        let mut buf = match self.spare.pop() {
            Some(b) => b,
            None => {
                let b = self.done_rx.recv().map_err(|_| DiskError::Closed)?;
                self.inflight -= 1;
                b
            }
        };
        // Readers copy out of resident buffers under a short-lived clone.
        let mut spins = 0u32;
        loop {
            match Arc::try_unwrap(buf) {
                Ok(mut inner) => {
                    inner.reset();
                    return Ok(inner);
                }
                Err(shared) => {
                    buf = shared;
                    spins += 1;
                    if spins > 1000 {
                        std::thread::sleep(Duration::from_micros(50));
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
        }
    }

    /// Starts a new head region: a free one, or else the oldest sealed one,
    /// whose recently read entries are carried over.
    fn open_head(&mut self) -> Result<(), DiskError> {
        let buf = self.take_spare()?;
        let region_size = u64::from(self.shared.geometry.region_size);
        let (region, hot, seq) = {
            let mut st = self.shared.lock();
            let (region, hot) = match st.regions.free.pop_front() {
                Some(r) => (r, Vec::new()),
                None => {
                    let r = st.regions.fifo.pop_front().ok_or(DiskError::Closed)?;
                    let live = st.index.take_region(r);
                    self.shared.metrics.region_reclaims.inc();
                    let mut budget = region_size / 2;
                    let hot: Vec<Slot> = if self.config.reinsert {
                        live.into_iter()
                            .map(|(_, s)| s)
                            .filter(|s| s.accessed())
                            .filter(|s| {
                                let ok = s.size() <= budget;
                                if ok {
                                    budget -= s.size();
                                }
                                ok
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    (r, hot)
                }
            };
            let seq = st.regions.next_seq;
            st.regions.next_seq += 1;
            (region, hot, seq)
        };
        // Read the survivors before the region is overwritten.
        let base = self.shared.geometry.region_offset(region);
        let mut carried = Vec::with_capacity(hot.len());
        for slot in hot {
            let len = HEADER_LEN + slot.len as usize;
            let Ok((img, start)) =
                self.shared
                    .dev
                    .read_unaligned(base + u64::from(slot.offset()), len, &self.shared.read_bufs)
            else {
                self.shared.metrics.io_errors.inc();
                continue;
            };
            let bytes = &img.as_slice()[start..start + len];
            let Ok(h) = EntryHeader::decode(bytes) else {
                continue;
            };
            if let Ok(range) = verify_entry(bytes, &h.key) {
                carried.push((h.key, bytes[range].to_vec()));
            }
        }
        let nonce = rand::random::<u64>();
        let rh = RegionHeader {
            region,
            seq,
            nonce,
            uuid: self.shared.uuid,
        }
        .encode();
        buf.append(&[&rh], REGION_HEADER_LEN);
        let buf = Arc::new(buf);
        {
            let mut st = self.shared.lock();
            st.regions.seq[region as usize] = seq;
            st.regions.used[region as usize] = 0;
            st.resident.insert(region, Arc::clone(&buf));
        }
        self.head = Some(Head {
            region,
            nonce,
            buf,
            written: 0,
            written_filled: 0,
        });
        for (key, payload) in carried {
            self.shared.metrics.reinsertions.inc();
            self.shared.metrics.reinserted_bytes.inc_by(payload.len() as u64);
            self.append(key, &payload, true);
        }
        Ok(())
    }

    /// Writes the head's dirty tail (rewriting its last partial block).
    fn write_head_tail(&mut self) -> Result<(), DiskError> {
        self.last_flush = Instant::now();
        let Some(head) = self.head.as_mut() else {
            return Ok(());
        };
        if head.buf.filled() == head.written_filled {
            return Ok(());
        }
        let base = self.shared.geometry.region_offset(head.region);
        let from = head.written;
        let shared = &self.shared;
        let (result, filled) = head
            .buf
            .with_dirty_span(from, |span| write_span(shared, span, base + from as u64));
        result.map_err(|e| {
            self.shared.metrics.io_errors.inc();
            DiskError::io(self.shared.dev.path(), "write", e)
        })?;
        head.written = align_down(filled as u64, ALIGN as u64) as usize;
        head.written_filled = filled;
        let mut st = self.shared.lock();
        st.regions.used[head.region as usize] = filled as u32;
        Ok(())
    }

    /// Makes everything appended so far durable.
    fn flush(&mut self, sync: bool) -> Result<(), DiskError> {
        self.write_head_tail()?;
        while self.inflight > 0 {
            let buf = self.done_rx.recv().map_err(|_| DiskError::Closed)?;
            self.inflight -= 1;
            self.spare.push(buf);
        }
        if let Some(e) = self.shared.take_write_error() {
            return Err(DiskError::Write(e));
        }
        if sync {
            self.shared
                .dev
                .sync()
                .map_err(|e| DiskError::io(self.shared.dev.path(), "sync", e))?;
        }
        Ok(())
    }

    /// Writes the index checkpoint after a final flush.
    fn checkpoint(&mut self) -> Result<(), DiskError> {
        if let Some(head) = self.head.take() {
            let mut st = self.shared.lock();
            st.regions.used[head.region as usize] = head.buf.filled() as u32;
            st.regions.fifo.push_back(head.region);
        }
        checkpoint::write(&self.shared)
    }
}
