//! Page-aligned memory for O_DIRECT, the one place in the store that needs
//! `unsafe`.
//!
//! O_DIRECT transfers require the user buffer, the file offset and the length
//! to be multiples of the logical block size. `Vec<u8>` gives no alignment
//! guarantee, so this module allocates with an explicit [`Layout`].
//! [`AlignedBuf`] is a plain owned buffer (reads, checkpoints, superblock);
//! [`RegionBuf`] is the write head: one writer appends behind a mutex while
//! readers copy already-committed bytes without taking it.

#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

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
