//! Page-aligned memory for O_DIRECT, the one place in the store that needs
//! `unsafe`.
//!
//! O_DIRECT transfers require the user buffer, the file offset and the length
//! to be multiples of the logical block size. `Vec<u8>` gives no alignment
//! guarantee, so this module allocates with an explicit [`Layout`].
//! [`AlignedBuf`] is a plain owned buffer (reads, checkpoints, superblock);
//! [`BufPool`] recycles the buffers that device reads land in;
//! [`RegionBuf`] is the write head: one writer appends behind a mutex while
//! readers copy already-committed bytes without taking it.

#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Alignment of every buffer and every device transfer.
pub const ALIGN: usize = 4096;

/// Rounds `n` up to a multiple of `to` (a power of two).
pub const fn align_up(n: u64, to: u64) -> u64 {
    (n + to - 1) & !(to - 1)
}

/// Rounds `n` down to a multiple of `to` (a power of two).
pub const fn align_down(n: u64, to: u64) -> u64 {
    n & !(to - 1)
}

// === impl AlignedBuf ===

/// A zero-initialised, [`ALIGN`]-aligned heap buffer of fixed length.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively (like Box<[u8]>); shared
// references only hand out `&[u8]`, mutation requires `&mut self`.
unsafe impl Send for AlignedBuf {}
// SAFETY: see above; no interior mutability.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes; `len` is rounded up to [`ALIGN`] and is
    /// at least one block.
    pub fn zeroed(len: usize) -> Self {
        let len = (align_up(len.max(1) as u64, ALIGN as u64)) as usize;
        let layout = Self::layout(len);
        // SAFETY: layout has a non-zero size (len >= ALIGN) and a valid
        // power-of-two alignment.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Self { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        match Layout::from_size_align(len, ALIGN) {
            Ok(layout) => layout,
            // Only reachable for sizes near isize::MAX, which no caller asks for.
            Err(_) => panic!("aligned buffer of {len} bytes exceeds the address space"),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised (zeroed) bytes for the life
        // of self, and no `&mut` can coexist with this `&self` borrow.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was returned by alloc_zeroed with exactly this layout and
        // is freed only here.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf").field("len", &self.len).finish()
    }
}

// === impl BufPool ===

/// Idle [`AlignedBuf`]s kept for the next device read, up to a byte cap.
///
/// Every disk hit reads its entry into an aligned buffer that then travels
/// to the client (and may be promoted into L1) as `Bytes`. Allocating each
/// one afresh costs more CPU than the read itself: the allocator hands out
/// newly mapped memory that the kernel faults in and zeroes page by page,
/// and unmaps it again on free. A [`PooledBuf`] goes back here when the
/// last `Bytes` pointing into it is dropped.
#[derive(Debug)]
pub struct BufPool {
    idle: Mutex<Idle>,
    cap: usize,
}

#[derive(Debug, Default)]
struct Idle {
    by_len: HashMap<usize, Vec<AlignedBuf>>,
    bytes: usize,
}

impl BufPool {
    /// A pool that keeps at most `cap` bytes of idle buffers.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(Idle::default()),
            cap,
        })
    }

    /// A buffer of `len` bytes rounded up to [`ALIGN`]; its contents are
    /// whatever was last read into it (zeros when new).
    pub fn take(self: &Arc<Self>, len: usize) -> PooledBuf {
        let len = align_up(len.max(1) as u64, ALIGN as u64) as usize;
        let reused = {
            let mut idle = self.lock();
            match idle.by_len.get_mut(&len).and_then(Vec::pop) {
                Some(buf) => {
                    idle.bytes -= len;
                    Some(buf)
                }
                None => {
                    // A miss with the pool full means it holds lengths no
                    // longer asked for (a new slice size): let one go, so the
                    // buffer allocated now fits when it comes back. Below the
                    // cap a miss only means every buffer of this length is
                    // in use, and the idle ones of other lengths are kept.
                    if idle.bytes + len > self.cap {
                        idle.evict_one();
                    }
                    None
                }
            }
        };
        PooledBuf {
            buf: Some(reused.unwrap_or_else(|| AlignedBuf::zeroed(len))),
            pool: Arc::clone(self),
        }
    }

    /// Bytes held by idle buffers.
    pub fn idle_bytes(&self) -> usize {
        self.lock().bytes
    }

    fn give(&self, buf: AlignedBuf) {
        let mut idle = self.lock();
        if idle.bytes + buf.len() <= self.cap {
            idle.bytes += buf.len();
            idle.by_len.entry(buf.len()).or_default().push(buf);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Idle {
    /// Frees one buffer of the length with the most idle bytes.
    fn evict_one(&mut self) {
        let Some((&len, _)) = self
            .by_len
            .iter()
            .filter(|(_, bufs)| !bufs.is_empty())
            .max_by_key(|(len, bufs)| **len * bufs.len())
        else {
            return;
        };
        if let Some(bufs) = self.by_len.get_mut(&len) {
            if bufs.pop().is_some() {
                self.bytes -= len;
            }
            if bufs.is_empty() {
                self.by_len.remove(&len);
            }
        }
    }
}

/// An [`AlignedBuf`] on loan from a [`BufPool`], returned when dropped.
#[derive(Debug)]
pub struct PooledBuf {
    buf: Option<AlignedBuf>,
    pool: Arc<BufPool>,
}

impl PooledBuf {
    pub fn as_slice(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], AlignedBuf::as_slice)
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.buf.as_mut().map_or(&mut [], AlignedBuf::as_mut_slice)
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give(buf);
        }
    }
}

// === impl RegionBuf ===

/// An append-only, aligned region image shared between one appender, the
/// flusher and readers.
///
/// Bytes below `filled` are immutable until [`RegionBuf::reset`] (which needs
/// `&mut self`, so no reader can hold a reference then). Appends and device
/// writes take `writer`, so the bytes above `filled` are only ever touched by
/// one thread at a time.
pub struct RegionBuf {
    ptr: NonNull<u8>,
    len: usize,
    filled: AtomicUsize,
    writer: Mutex<()>,
    // Keeps the allocation; `ptr` points into it.
    _owner: AlignedBuf,
}

// SAFETY: the allocation is owned by `_owner`; concurrent access follows the
// protocol documented on the type: writes only above `filled` under `writer`,
// lock-free reads only below `filled` (published with Release/Acquire).
unsafe impl Send for RegionBuf {}
// SAFETY: see above.
unsafe impl Sync for RegionBuf {}

impl RegionBuf {
    pub fn new(len: usize) -> Self {
        let owner = AlignedBuf::zeroed(len);
        let len = owner.len();
        // The heap allocation does not move when `owner` moves into the struct.
        let ptr = owner.ptr;
        Self {
            ptr,
            len,
            filled: AtomicUsize::new(0),
            writer: Mutex::new(()),
            _owner: owner,
        }
    }

    pub fn capacity(&self) -> usize {
        self.len
    }

    /// Bytes appended so far.
    pub fn filled(&self) -> usize {
        self.filled.load(Ordering::Acquire)
    }

    /// Appends `parts` back to back and advances `filled` by `advance` (which
    /// may exceed their total: the gap stays zero as padding). Returns the
    /// offset of the first byte, or `None` if it does not fit.
    pub fn append(&self, parts: &[&[u8]], advance: usize) -> Option<usize> {
        let _guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let start = self.filled.load(Ordering::Acquire);
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if advance < total || start.checked_add(advance)? > self.len {
            return None;
        }
        let mut at = start;
        for part in parts {
            // SAFETY: [at, at + part.len()) lies within [start, start + advance)
            // which is inside the allocation and above `filled`, so no reader
            // looks at it; the writer mutex excludes other appenders and the
            // flusher. `part` cannot alias this buffer's unpublished tail
            // because no reference to it exists.
            unsafe {
                std::ptr::copy_nonoverlapping(part.as_ptr(), self.ptr.as_ptr().add(at), part.len());
            }
            at += part.len();
        }
        self.filled.store(start + advance, Ordering::Release);
        Some(start)
    }

    /// Copies `len` committed bytes at `offset`; `None` if not yet committed.
    pub fn read(&self, offset: usize, len: usize) -> Option<Vec<u8>> {
        let end = offset.checked_add(len)?;
        if end > self.filled.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: [offset, end) is below `filled`, so it is initialised and no
        // writer touches it until `reset(&mut self)`.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) };
        Some(bytes.to_vec())
    }

    /// Runs `f` on the block-aligned span `[from, align_up(filled))` while
    /// holding the writer lock, so nothing is appended during a device write.
    /// `from` must be block aligned. Returns `f`'s result and the committed
    /// length that the span covers.
    pub fn with_dirty_span<R>(&self, from: usize, f: impl FnOnce(&[u8]) -> R) -> (R, usize) {
        let _guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let filled = self.filled.load(Ordering::Acquire);
        let end = (align_up(filled as u64, ALIGN as u64) as usize).min(self.len);
        let from = from.min(end);
        // SAFETY: the writer lock is held, so no append runs concurrently and
        // the whole allocation is stable; bytes above `filled` are zero padding
        // written at allocation or reset. Readers only read.
        let span = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(from), end - from) };
        (f(span), filled)
    }

    /// Zeroes the buffer for reuse by a new region.
    pub fn reset(&mut self) {
        let filled = *self.filled.get_mut();
        let end = (align_up(filled as u64, ALIGN as u64) as usize).min(self.len);
        // SAFETY: `&mut self` means no reader, appender or flusher holds a
        // reference; [0, end) is inside the allocation.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), 0, end) };
        *self.filled.get_mut() = 0;
    }
}

impl std::fmt::Debug for RegionBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionBuf")
            .field("len", &self.len)
            .field("filled", &self.filled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_zeroed() {
        let buf = AlignedBuf::zeroed(5000);
        assert_eq!(buf.len(), 8192);
        assert_eq!(buf.as_slice().as_ptr() as usize % ALIGN, 0);
        assert!(buf.as_slice().iter().all(|&b| b == 0));
    }

    #[test]
    fn pooled_buffers_come_back_and_the_pool_follows_demand() {
        let pool = BufPool::new(3 * 8192);
        let mut a = pool.take(5000);
        assert_eq!(a.as_slice().len(), 8192);
        assert_eq!(a.as_slice().as_ptr() as usize % ALIGN, 0);
        a.as_mut_slice()[0] = 7;
        let first = a.as_slice().as_ptr();
        drop(a);
        assert_eq!(pool.idle_bytes(), 8192);
        // The same memory is lent again, with what was last read into it.
        let b = pool.take(8000);
        assert_eq!((b.as_slice().as_ptr(), b.as_slice()[0]), (first, 7));
        assert_eq!(pool.idle_bytes(), 0);
        // Alive behind `Bytes` until the last clone goes.
        let bytes = bytes::Bytes::from_owner(b).slice(0..10);
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(pool.idle_bytes(), 0);
        drop(clone);
        assert_eq!(pool.idle_bytes(), 8192);
        // The cap holds: four buffers back, three kept.
        let four: Vec<_> = (0..4).map(|_| pool.take(8192)).collect();
        drop(four);
        assert_eq!(pool.idle_bytes(), 3 * 8192);
        // With the pool full, a miss of another length lets one idle buffer go.
        let other = pool.take(4096);
        assert_eq!(pool.idle_bytes(), 2 * 8192);
        drop(other);
        assert_eq!(pool.idle_bytes(), 2 * 8192 + 4096);
        // Below the cap a miss keeps the idle buffers of other lengths.
        let roomy = BufPool::new(4 * 8192);
        drop(roomy.take(8192));
        let other = roomy.take(4096);
        assert_eq!(roomy.idle_bytes(), 8192);
        drop(other);
        assert_eq!(roomy.idle_bytes(), 8192 + 4096);
    }

    #[test]
    fn region_buf_appends_and_reads_committed_bytes_only() {
        let mut rb = RegionBuf::new(8192);
        assert_eq!(rb.append(&[b"abc", b"de"], 64), Some(0));
        assert_eq!(rb.append(&[b"xyz"], 3), Some(64));
        assert_eq!(rb.read(0, 5).as_deref(), Some(&b"abcde"[..]));
        assert_eq!(rb.read(64, 3).as_deref(), Some(&b"xyz"[..]));
        assert_eq!(rb.read(64, 4), None);
        assert_eq!(rb.append(&[b"a"], 9000), None);
        let (len, filled) = rb.with_dirty_span(0, |s| s.len());
        assert_eq!((len, filled), (4096, 67));
        rb.reset();
        assert_eq!(rb.filled(), 0);
        assert_eq!(rb.with_dirty_span(0, |s| s.len()).0, 0);
        assert_eq!(rb.append(&[b"q"], 1), Some(0));
        assert_eq!(rb.read(0, 2), None);
    }
}
