//! Where L1 keeps its bytes: one anonymous shared-memory file (a memfd),
//! so that a cache hit can go to the client socket with `sendfile` instead
//! of being copied out of the heap by `write`.
//!
//! Copying hit bytes into the socket was about half of the agent's CPU under
//! load (nginx sends its cache files with `sendfile` and pays no such copy).
//! Each extent L1 admits is written once into a free range of the memfd and
//! handed out as a [`Bytes`] that views the file through a read-only shared
//! mapping, so every other consumer (multipart bodies, the disk tier, tests)
//! reads it like any other `Bytes`, while the sender finds its file offset
//! with [`Arena::locate`].
//!
//! Reuse is safe because a freed range is hole-punched before it can be
//! allocated again: pages that a socket still references (a `sendfile` not
//! yet read by the client) leave the file with their old contents intact,
//! and the next writer gets fresh pages. The file is sparse, so only bytes
//! actually cached use memory.
//!
//! That holds only while the file is made of base pages. Punching part of a
//! large shmem folio zeroes the punched bytes in place (and only then tries
//! to split the folio), so bytes a socket had not sent yet would go out as
//! zeros. Large folios reach a memfd written with `pwrite` only when the
//! host's shmem THP policy says `always`, `within_size` or `force` (for the
//! PMD size or any mTHP size); `advise` applies to `madvise`d mappings,
//! which this module never makes. [`Arena::new`] refuses such a host, and the
//! memory tier then keeps its extents on the heap.
//!
//! This is the module's one `unsafe` operation: mapping the file. The memfd
//! is created here, never shared, never truncated, and written only in ranges
//! that no [`Bytes`] views (allocation hands a range to exactly one lease),
//! so the mapped bytes a reader sees never change under it.

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use memmap2::Mmap;
use rustix::fs::{FallocateFlags, MemfdFlags};

/// Allocation granularity: ranges start and end on page boundaries, so a
/// punched hole frees whole pages.
const PAGE: u64 = 4096;

/// A memfd-backed byte arena for L1 extents.
#[derive(Clone)]
pub struct Arena {
    inner: Arc<Inner>,
}

struct Inner {
    file: File,
    map: Mmap,
    free: Mutex<FreeRanges>,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("size", &self.inner.map.len())
            .field("free", &self.free_bytes())
            .finish()
    }
}

impl Arena {
    /// Creates a sparse arena of `size` bytes (rounded up to whole pages).
    /// Fails on a host whose shmem THP policy could give the file large
    /// folios (see the module docs).
    pub fn new(size: u64) -> std::io::Result<Self> {
        if let Some(setting) = shmem_large_folios(std::path::Path::new(THP_SYSFS)) {
            return Err(std::io::Error::other(format!(
                "shmem transparent huge pages are enabled ({setting}); freeing part of a huge page \
                 would zero bytes still being sent. Set it to `advise` or `never` to use sendfile"
            )));
        }
        let size = size.div_ceil(PAGE).max(1) * PAGE;
        let fd = rustix::fs::memfd_create("slicecache-l1", MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, size)?;
        let file = File::from(fd);
        // SAFETY: see the module docs: the file is private to this arena, is
        // never resized, and is written only where no lease views it.
        let map = unsafe { Mmap::map(&file)? };
        Ok(Self {
            inner: Arc::new(Inner {
                file,
                map,
                free: Mutex::new(FreeRanges::new(size)),
            }),
        })
    }

    /// Copies `data` into a free range and returns a view of it, or `None`
    /// when no free range is large enough (the caller keeps its heap copy).
    pub fn store(&self, data: &[u8]) -> Option<Bytes> {
        if data.is_empty() {
            return None;
        }
        let cap = (data.len() as u64).div_ceil(PAGE) * PAGE;
        let offset = self.inner.lock_free().alloc(cap)?;
        let lease = Lease {
            inner: self.inner.clone(),
            offset,
            len: data.len(),
            cap,
        };
        if let Err(e) = self.inner.file.write_all_at(data, offset) {
            tracing::warn!(error = %e, "writing to the memory arena failed; keeping the extent on the heap");
            return None; // dropping the lease frees the range
        }
        Some(Bytes::from_owner(lease))
    }

    /// The arena file offset of `bytes`, if it views this arena.
    pub fn locate(&self, bytes: &[u8]) -> Option<u64> {
        let base = self.inner.map.as_ptr() as usize;
        let start = bytes.as_ptr() as usize;
        let inside = start >= base && start + bytes.len() <= base + self.inner.map.len();
        inside.then(|| (start - base) as u64)
    }

    /// The file `sendfile` reads from.
    pub fn file(&self) -> &File {
        &self.inner.file
    }

    /// Bytes not held by any extent.
    pub fn free_bytes(&self) -> u64 {
        self.inner.lock_free().free
    }
}

const THP_SYSFS: &str = "/sys/kernel/mm/transparent_hugepage";

/// The setting (file and value) under `dir` that lets shmem written with
/// `pwrite` use large folios, if any. A missing directory (no THP in the
/// kernel) means base pages only.
fn shmem_large_folios(dir: &std::path::Path) -> Option<String> {
    let read = |p: &std::path::Path| {
        let text = std::fs::read_to_string(p).ok()?;
        // The active value is the one in brackets: "always [never] advise".
        let start = text.find('[')? + 1;
        let end = start + text[start..].find(']')?;
        Some(text[start..end].to_owned())
    };
    let enables = |v: &str| matches!(v, "always" | "within_size" | "force");
    let top_file = dir.join("shmem_enabled");
    let top = read(&top_file);
    if let Some(v) = top.as_deref().filter(|v| enables(v)) {
        return Some(format!("{}: {v}", top_file.display()));
    }
    let mut sizes: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("shmem_enabled")))
        .filter(|p| {
            p.parent().is_some_and(|d| {
                d.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("hugepages-"))
            })
        })
        .collect();
    sizes.sort();
    sizes.into_iter().find_map(|p| {
        let v = read(&p)?;
        enables(&v).then(|| format!("{}: {v}", p.display()))
    })
}

impl Inner {
    fn lock_free(&self) -> std::sync::MutexGuard<'_, FreeRanges> {
        // The free list is updated in single steps; a panic elsewhere while
        // it is held cannot leave it half-changed.
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One extent's range of the arena; freeing it punches the range out.
struct Lease {
    inner: Arc<Inner>,
    offset: u64,
    len: usize,
    cap: u64,
}

impl AsRef<[u8]> for Lease {
    fn as_ref(&self) -> &[u8] {
        let start = self.offset as usize;
        &self.inner.map[start..start + self.len]
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        if let Err(e) = rustix::fs::fallocate(&self.inner.file, punch, self.offset, self.cap) {
            // Without the hole a socket still sending these pages could see
            // the next extent's bytes; never reuse the range.
            tracing::error!(error = %e, offset = self.offset, "freeing a memory arena range failed; range retired");
            return;
        }
        self.inner.lock_free().release(self.offset, self.cap);
    }
}

// === impl FreeRanges ===

/// Free ranges by start offset, coalesced; first fit.
#[derive(Debug)]
struct FreeRanges {
    ranges: BTreeMap<u64, u64>,
    free: u64,
}

impl FreeRanges {
    fn new(size: u64) -> Self {
        Self {
            ranges: BTreeMap::from([(0, size)]),
            free: size,
        }
    }

    fn alloc(&mut self, len: u64) -> Option<u64> {
        let (&start, &have) = self.ranges.iter().find(|(_, &have)| have >= len)?;
        self.ranges.remove(&start);
        if have > len {
            self.ranges.insert(start + len, have - len);
        }
        self.free -= len;
        Some(start)
    }

    fn release(&mut self, mut start: u64, mut len: u64) {
        self.free += len;
        if let Some((&next, &next_len)) = self.ranges.range(start + len..).next() {
            if next == start + len {
                self.ranges.remove(&next);
                len += next_len;
            }
        }
        if let Some((&prev, &prev_len)) = self.ranges.range(..start).next_back() {
            if prev + prev_len == start {
                self.ranges.remove(&prev);
                start = prev;
                len += prev_len;
            }
        }
        self.ranges.insert(start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_bytes_read_back_and_locate_in_the_file() {
        let arena = Arena::new(1 << 20).expect("memfd arena");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let stored = arena.store(&data).expect("room");
        assert_eq!(&stored[..], &data[..]);
        let offset = arena.locate(&stored).expect("inside the arena");
        let mut from_file = vec![0; data.len()];
        arena.file().read_exact_at(&mut from_file, offset).expect("read");
        assert_eq!(from_file, data);
        // A slice of the view is located at its own offset.
        let part = stored.slice(5000..6000);
        assert_eq!(arena.locate(&part), Some(offset + 5000));
        assert_eq!(arena.locate(&data), None, "heap bytes are not in the arena");
    }

    #[test]
    fn freed_ranges_are_reused_and_coalesced() {
        let arena = Arena::new(64 * PAGE).expect("memfd arena");
        let a = arena.store(&[1; 16 * 4096]).expect("a");
        let b = arena.store(&[2; 16 * 4096]).expect("b");
        let c = arena.store(&[3; 32 * 4096]).expect("c");
        assert!(arena.store(&[4; 1]).is_none(), "the arena is full");
        drop(a);
        drop(b);
        assert_eq!(arena.free_bytes(), 32 * PAGE);
        // Only a coalesced a+b range fits this.
        let d = arena.store(&[5; 32 * 4096]).expect("a and b coalesced");
        assert!(d.iter().all(|&x| x == 5));
        assert!(c.iter().all(|&x| x == 3), "a neighbour is untouched");
        drop((c, d));
        assert_eq!(arena.free_bytes(), 64 * PAGE);
    }

    #[test]
    fn a_view_outlives_its_range_being_freed_elsewhere() {
        // Clones share one lease: the range stays allocated until the last.
        let arena = Arena::new(4 * PAGE).expect("memfd arena");
        let a = arena.store(&[7; 4096]).expect("a");
        let clone = a.slice(10..20);
        drop(a);
        assert_eq!(arena.free_bytes(), 3 * PAGE);
        assert!(clone.iter().all(|&x| x == 7));
        drop(clone);
        assert_eq!(arena.free_bytes(), 4 * PAGE);
    }

    fn thp_dir(top: &str, sizes: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("shmem_enabled"), top).expect("write");
        for (size, value) in sizes {
            let d = dir.path().join(format!("hugepages-{size}"));
            std::fs::create_dir(&d).expect("mkdir");
            std::fs::write(d.join("shmem_enabled"), value).expect("write");
        }
        dir
    }

    #[test]
    fn shmem_thp_policies_that_allow_large_folios_are_found() {
        let never = "always within_size advise [never] deny force\n";
        let inherit = "always [inherit] within_size advise never\n";
        let off = "always inherit within_size advise [never]\n";
        // The defaults, and `advise`, which needs an madvise'd mapping.
        assert_eq!(
            shmem_large_folios(thp_dir(never, &[("2048kB", inherit), ("64kB", off)]).path()),
            None
        );
        let advise = "always within_size [advise] never deny force\n";
        assert_eq!(shmem_large_folios(thp_dir(advise, &[("2048kB", inherit)]).path()), None);
        assert_eq!(shmem_large_folios(std::path::Path::new("/nonexistent/thp")), None);
        // A global policy, or one mTHP size, that applies to pwrite.
        let within = "always [within_size] advise never deny force\n";
        let found = shmem_large_folios(thp_dir(within, &[]).path()).expect("within_size");
        assert!(found.ends_with("shmem_enabled: within_size"), "{found}");
        let always64 = "[always] inherit within_size advise never\n";
        let found =
            shmem_large_folios(thp_dir(never, &[("2048kB", inherit), ("64kB", always64)]).path()).expect("64kB");
        assert!(found.contains("hugepages-64kB"), "{found}");
    }
}
