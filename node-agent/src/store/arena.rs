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
//! # Blocks, and why memory is freed only a whole block at a time
//!
//! The file is cut into blocks of the kernel's PMD huge page size (2 MiB on
//! x86-64). Extents smaller than a block are packed one after another into
//! the current open block; larger ones take whole contiguous blocks. A
//! block goes back to the free list only when no extent in it is alive any
//! more, and only after its whole range has been hole-punched.
//!
//! The punch is what makes reuse safe: pages that a socket still references
//! (a `sendfile` the client has not read yet) leave the file with their old
//! contents intact, and the next writer gets fresh pages. Punching *part* of
//! a large shmem folio would not be safe: Linux zeroes the punched bytes in
//! place and only then tries to split the folio, so bytes in flight would
//! go out as zeros (seen here with a 256 KiB splice from a memfd and a
//! punch of its first MiB). Folios are never larger than a PMD and are
//! aligned to their size, so a punch of whole aligned blocks always frees
//! whole folios, whatever the host's shmem huge page policy is.
//!
//! That lets the arena use huge pages, and it takes them whatever the
//! host's policy is when it may: an agent with `CAP_SYS_ADMIN` puts its
//! file in a tmpfs of its own mounted with `huge=always` (see the tmpfs
//! module; [`HugePages::OwnMount`]). Otherwise the file is a memfd and the
//! host's `shmem_enabled` decides: at `always`, `within_size` or `force`
//! writes get large folios by themselves, at `advise` the arena asks for
//! them (`MADV_HUGEPAGE` on a second, writable mapping, then
//! `MADV_POPULATE_WRITE` of each block ahead of use, on the populating
//! thread), and under `never` (the kernel's default) the file is made of
//! base pages and works the same. A
//! hit on huge pages costs the kernel one page lookup per 2 MiB instead of
//! one per 4 KiB.
//!
//! New blocks of the own mount are populated through the writable mapping
//! too, by a thread of the arena's own ahead of the allocator: a fault
//! clears a whole huge page at once, outside the file's lock. A fill never
//! waits for that: an extent that needs a new block when none is populated
//! goes to a second memfd of base pages (the spill file) instead. Written
//! into directly, a fresh huge page would be zeroed by the first `pwrite`
//! around the bytes it writes, while the file's lock (one for the whole
//! arena) stalls every other fill; that made a cold 64 MiB miss three
//! times slower here.
//!
//! The price of whole-block freeing is space: a block stays allocated while
//! any extent in it lives. Slices are powers of two, so they pack blocks
//! exactly; the arena is made larger than L1's byte budget (see the memory
//! store) and an extent that finds no room stays on the heap.
//!
//! This module's `unsafe` is mapping the file, and unmapping populated
//! blocks from the writable mapping again. The memfd is created here,
//! never shared, never truncated, and written only in ranges that no
//! [`Bytes`] views (allocation hands a range to exactly one lease), so the
//! mapped bytes a reader sees never change under it.

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;
use memmap2::{Advice, Mmap, MmapOptions, MmapRaw, UncheckedAdvice};
use rustix::fs::{FallocateFlags, MemfdFlags};

/// Extents start on page boundaries.
const PAGE: u64 = 4096;
/// The block size when the kernel does not say its PMD size.
const DEFAULT_BLOCK: u64 = 2 << 20;
/// Blocks larger than this (a PMD over 64 KiB base pages is 512 MiB) would
/// waste too much; such hosts get no arena.
const MAX_BLOCK: u64 = 32 << 20;
const THP_SYSFS: &str = "/sys/kernel/mm/transparent_hugepage";
/// Free blocks the populating thread keeps faulted in ahead of the
/// allocator (16 MiB with 2 MiB blocks).
const AHEAD: usize = 8;

/// How the arena's file gets its pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HugePages {
    /// Base pages: a memfd under `never`, or `deny`, or no THP in the kernel.
    Off,
    /// Huge pages on every write from the arena's own tmpfs mount
    /// (`huge=always`), whatever the host's shmem policy short of `deny`:
    /// see the tmpfs module. Needs `CAP_SYS_ADMIN`.
    OwnMount,
    /// Large folios on every write to a memfd: the host's policy is
    /// `always`, `within_size` or `force`.
    OnWrite,
    /// Large folios for mappings that ask (`advise`): the arena populates
    /// each block it opens through a `MADV_HUGEPAGE` mapping.
    Advise,
}

/// A memfd-backed byte arena for L1 extents.
#[derive(Clone)]
pub struct Arena {
    inner: Arc<Inner>,
    /// Base pages for extents that find no populated huge-page block ready
    /// (only where blocks are populated: the own mount and `advise`).
    spill: Option<Arc<Inner>>,
}

struct Inner {
    file: File,
    map: Mmap,
    /// A writable mapping used only to populate new blocks (with
    /// `MADV_HUGEPAGE` under `HugePages::Advise`; plain for
    /// `HugePages::OwnMount`); bytes are always written with `pwrite`.
    populate: Option<MmapRaw>,
    populate_failed: AtomicBool,
    /// Wakes the populating thread (see [`populate_ahead`]); `None` without
    /// a populating mapping.
    kick: Option<SyncSender<()>>,
    /// Blocks populated by that thread (for tests).
    populated_ahead: AtomicU64,
    /// Extents that went to the spill file because no populated block was
    /// ready.
    spilled: AtomicU64,
    block: u64,
    huge: HugePages,
    blocks: Mutex<Blocks>,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("size", &self.inner.map.len())
            .field("block", &self.inner.block)
            .field("huge_pages", &self.inner.huge)
            .field("free", &self.free_bytes())
            .finish()
    }
}

impl Arena {
    /// Creates a sparse arena of at least `size` bytes, in blocks of the
    /// host's PMD size, with huge pages from a tmpfs of its own where the
    /// agent may mount one, else as the host's shmem policy allows.
    pub fn new(size: u64) -> std::io::Result<Self> {
        let dir = Path::new(THP_SYSFS);
        let block = pmd_size(dir).unwrap_or(DEFAULT_BLOCK);
        if block > MAX_BLOCK || !block.is_power_of_two() || block < PAGE {
            return Err(std::io::Error::other(format!(
                "the huge page size ({block} bytes) is unsuitable for memory arena blocks"
            )));
        }
        let policy = shmem_policy(dir, block);
        if own_mount_helps(policy.as_deref()) {
            match Self::with_blocks(size, block, HugePages::OwnMount) {
                Ok(arena) => return Ok(arena),
                Err(e) => tracing::info!(
                    error = %e,
                    "no tmpfs of the agent's own for the memory arena (mounting one needs CAP_SYS_ADMIN); \
                     using a memfd, which gets huge pages only as the host's shmem_enabled allows"
                ),
            }
        }
        Self::with_blocks(size, block, memfd_huge_pages(policy.as_deref()))
    }

    /// An arena of `size` bytes (rounded up to whole blocks) in blocks of
    /// `block` bytes, a power-of-two multiple of the page size.
    pub fn with_blocks(size: u64, block: u64, huge: HugePages) -> std::io::Result<Self> {
        Self::build(size, block, huge, true)
    }

    /// [`Self::with_blocks`], with or without the populating thread (tests
    /// leave it out to see what fills do when no block is ready).
    fn build(size: u64, block: u64, huge: HugePages, populating: bool) -> std::io::Result<Self> {
        assert!(block.is_power_of_two() && block >= PAGE, "block {block}");
        let count = size.div_ceil(block).max(1);
        let (inner, kicks) = Inner::create(count, block, huge)?;
        let spill = match kicks {
            Some(_) => Some(Inner::create(count, block, HugePages::Off)?.0),
            None => None,
        };
        if let Some(kicks) = kicks {
            if populating {
                let weak = Arc::downgrade(&inner);
                std::thread::Builder::new()
                    .name("arena populate".into())
                    .spawn(move || populate_ahead(&weak, &kicks))?;
                inner.kick();
            }
        }
        Ok(Self { inner, spill })
    }

    /// Copies `data` into a free range and returns a view of it, or `None`
    /// when no free range is large enough (the caller keeps its heap copy).
    pub fn store(&self, data: &[u8]) -> Option<Bytes> {
        self.store_parts(&[data])
    }

    /// Like [`Self::store`] for bytes that arrived in pieces (a fill's
    /// chunks): written one after another into one range, so they need not
    /// be joined on the heap first.
    ///
    /// Where blocks are populated ahead, an extent that needs a new block
    /// when none is populated goes to the spill file's base pages instead
    /// of waiting for the kernel to allocate and clear a huge page: fills
    /// never wait for page clearing, and hits from a spilled extent cost a
    /// page lookup per 4 KiB, as from any memfd under `never`.
    pub fn store_parts<B: AsRef<[u8]>>(&self, parts: &[B]) -> Option<Bytes> {
        let ready_only = self.spill.is_some() && !self.inner.populate_failed.load(Ordering::Relaxed);
        match self.inner.store_parts(parts, ready_only) {
            Ok(stored) => stored,
            Err(NoRoom::Full) => None,
            Err(NoRoom::NotPopulated) => {
                let spill = self.spill.as_ref()?;
                self.inner.spilled.fetch_add(1, Ordering::Relaxed);
                spill.store_parts(parts, false).unwrap_or(None)
            }
        }
    }

    /// The file `sendfile` reads `bytes` from, and its offset there, if
    /// `bytes` views this arena.
    pub fn locate(&self, bytes: &[u8]) -> Option<(&File, u64)> {
        std::iter::once(&self.inner)
            .chain(&self.spill)
            .find_map(|inner| Some((&inner.file, inner.offset_of(bytes)?)))
    }

    /// Bytes a new extent could still be given: free blocks and the rest
    /// of the open one.
    pub fn free_bytes(&self) -> u64 {
        self.inner.lock_blocks().free_bytes()
    }

    /// The block size: the unit memory is freed in.
    pub fn block_size(&self) -> u64 {
        self.inner.block
    }

    /// How the file gets its pages.
    pub fn huge_pages(&self) -> HugePages {
        self.inner.huge
    }

    /// Blocks populated ahead by the populating thread. (Nothing else
    /// populates: a fill that finds no populated block spills.)
    pub fn populated_blocks(&self) -> u64 {
        self.inner.populated_ahead.load(Ordering::Relaxed)
    }

    /// Extents stored in the spill file's base pages because no populated
    /// block was ready for them.
    pub fn spilled_extents(&self) -> u64 {
        self.inner.spilled.load(Ordering::Relaxed)
    }
}

impl Inner {
    /// One file of `count` blocks and its mappings, and where the blocks
    /// are populated, the receiver of kicks for the populating thread the
    /// caller starts.
    fn create(count: u64, block: u64, huge: HugePages) -> std::io::Result<(Arc<Self>, Option<Receiver<()>>)> {
        let file = match huge {
            // One block of slack over the file's size: the limit is never
            // what stops a write inside the file.
            HugePages::OwnMount => super::tmpfs::huge_page_file(count * block, (count + 1) * block)?,
            HugePages::Off | HugePages::OnWrite | HugePages::Advise => {
                let fd = rustix::fs::memfd_create("slicecache-l1", MemfdFlags::CLOEXEC)?;
                rustix::fs::ftruncate(&fd, count * block)?;
                File::from(fd)
            }
        };
        // SAFETY: see the module docs: the file is private to this arena, is
        // never resized, and is written only where no lease views it.
        let map = unsafe { Mmap::map(&file)? };
        let populate = match huge {
            HugePages::Advise => {
                let raw = MmapOptions::new().map_raw(&file)?;
                raw.advise(Advice::HugePage)?;
                Some(raw)
            }
            HugePages::OwnMount => Some(MmapOptions::new().map_raw(&file)?),
            HugePages::Off | HugePages::OnWrite => None,
        };
        let (kick, kicks) = match populate {
            Some(_) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let inner = Arc::new(Self {
            file,
            map,
            populate,
            populate_failed: AtomicBool::new(false),
            kick,
            populated_ahead: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
            block,
            huge,
            blocks: Mutex::new(Blocks::new(count, block)),
        });
        Ok((inner, kicks))
    }

    /// Writes `parts` into a range of this file (with `ready_only`, only
    /// into blocks already populated); `Ok(None)` when writing failed.
    fn store_parts<B: AsRef<[u8]>>(self: &Arc<Self>, parts: &[B], ready_only: bool) -> Result<Option<Bytes>, NoRoom> {
        let len: usize = parts.iter().map(|p| p.as_ref().len()).sum();
        if len == 0 {
            return Ok(None);
        }
        let cap = (len as u64).div_ceil(PAGE) * PAGE;
        let reserved = self.lock_blocks().reserve(cap, ready_only);
        let reserved = match reserved {
            Ok(reserved) => reserved,
            Err(no_room) => {
                self.kick();
                return Err(no_room);
            }
        };
        if let Some(run) = reserved.closed {
            self.reclaim(run);
        }
        let lease = Lease {
            inner: self.clone(),
            offset: reserved.offset,
            len,
            cap,
        };
        // The allocator moved past blocks the thread keeps ready.
        self.kick();
        let mut at = reserved.offset;
        for part in parts {
            let part = part.as_ref();
            if let Err(e) = self.file.write_all_at(part, at) {
                tracing::warn!(error = %e, "writing to the memory arena failed; keeping the extent on the heap");
                return Ok(None); // dropping the lease frees the range
            }
            at += part.len() as u64;
        }
        Ok(Some(Bytes::from_owner(lease)))
    }

    /// The offset of `bytes` in this file, if they view its mapping.
    fn offset_of(&self, bytes: &[u8]) -> Option<u64> {
        let base = self.map.as_ptr() as usize;
        let start = bytes.as_ptr() as usize;
        let inside = start >= base && start + bytes.len() <= base + self.map.len();
        inside.then(|| (start - base) as u64)
    }

    fn lock_blocks(&self) -> std::sync::MutexGuard<'_, Blocks> {
        // Block state is updated in single steps; a panic elsewhere while it
        // is held cannot leave it half-changed.
        self.blocks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bytes(&self, run: Run) -> (u64, u64) {
        (run.first * self.block, run.count * self.block)
    }

    /// Faults a block in through the populating mapping, so its pages are
    /// huge ones (under `advise`, `pwrite` would fill it with base pages)
    /// and are cleared here rather than by the first `pwrite` while it holds
    /// the file's lock (the own mount). Populating never changes a byte
    /// that is there (it only fills holes with zeroed pages), so it may run
    /// while the block is being written. Whether it populated.
    fn populate_block(&self, block: u64) -> bool {
        let Some(raw) = &self.populate else { return false };
        if self.populate_failed.load(Ordering::Relaxed) {
            return false;
        }
        let (offset, len) = ((block * self.block) as usize, self.block as usize);
        if let Err(e) = raw.advise_range(Advice::PopulateWrite, offset, len) {
            // Kernels before 5.14 lack MADV_POPULATE_WRITE: base pages then.
            self.populate_failed.store(true, Ordering::Relaxed);
            tracing::warn!(error = %e, "populating memory arena blocks failed; blocks get their pages as they are written");
            return false;
        }
        // The pages stay in the file; only this mapping lets go of them, so
        // they do not count in the agent's RSS and no page table keeps them.
        // SAFETY: a shared mapping of the arena's own file, which nothing
        // reads or writes through (it exists to populate): dropping its
        // page table entries changes no byte anyone can see.
        if let Err(e) = unsafe { raw.unchecked_advise_range(UncheckedAdvice::DontNeed, offset, len) } {
            tracing::debug!(error = %e, "unmapping a populated memory arena block failed");
        }
        true
    }

    /// Asks the populating thread to look at the free blocks again.
    fn kick(&self) {
        if let Some(kick) = &self.kick {
            let _ = kick.try_send(()); // a kick already waiting will do
        }
    }

    /// Punches out a run no extent uses any more and returns it to the free
    /// list. The punch comes first: pages a socket still holds keep their
    /// bytes, and the next writer gets fresh ones.
    fn reclaim(&self, run: Run) {
        let (offset, len) = self.bytes(run);
        let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        if let Err(e) = rustix::fs::fallocate(&self.file, punch, offset, len) {
            // Without the hole a socket still sending these pages could see
            // the next extent's bytes; never reuse the run.
            tracing::error!(error = %e, offset, len, "freeing memory arena blocks failed; blocks retired");
            return;
        }
        self.lock_blocks().release_punched(run);
        self.kick();
    }
}

/// The populating thread: keeps the first [`AHEAD`] free blocks (those the
/// first-fit allocator hands out next) faulted in, so that a fill rarely
/// waits for the kernel to allocate and clear a block's pages. It ends with
/// the arena.
fn populate_ahead(inner: &Weak<Inner>, kicks: &Receiver<()>) {
    // Background work: fills and hits come first (a fill that finds no
    // populated block spills to base pages instead of waiting), so the
    // kernel's page clearing here takes only CPU they leave.
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
        tracing::debug!(error = %e, "lowering the arena populating thread's priority failed");
    }
    while kicks.recv().is_ok() {
        loop {
            let Some(inner) = inner.upgrade() else { return };
            let todo = inner.lock_blocks().unprepared_ahead(AHEAD);
            if todo.is_empty() || inner.populate_failed.load(Ordering::Relaxed) {
                break;
            }
            for (b, epoch) in todo {
                if inner.populate_block(b) {
                    inner.populated_ahead.fetch_add(1, Ordering::Relaxed);
                    inner.lock_blocks().mark_prepared(b, epoch);
                }
            }
        }
    }
}

/// The block size the kernel's PMD huge pages have, if it says.
fn pmd_size(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join("hpage_pmd_size"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The host's shmem policy for PMD-sized folios: the size's own
/// `hugepages-*kB/shmem_enabled`, unless it says `inherit`, then the
/// global `shmem_enabled`. Smaller mTHP sizes need no look: every folio
/// fits a block, which is all the arena relies on.
fn shmem_policy(dir: &Path, pmd: u64) -> Option<String> {
    let read = |p: &Path| {
        let text = std::fs::read_to_string(p).ok()?;
        // The active value is the one in brackets: "always [never] advise".
        let start = text.find('[')? + 1;
        let end = start + text[start..].find(']')?;
        Some(text[start..end].to_owned())
    };
    let per_size = read(&dir.join(format!("hugepages-{}kB", pmd >> 10)).join("shmem_enabled"));
    match per_size.as_deref() {
        None | Some("inherit") => read(&dir.join("shmem_enabled")),
        Some(_) => per_size,
    }
}

/// What a memfd arena gets from the host's shmem policy.
fn memfd_huge_pages(policy: Option<&str>) -> HugePages {
    match policy {
        Some("always" | "within_size" | "force") => HugePages::OnWrite,
        Some("advise") => HugePages::Advise,
        _ => HugePages::Off,
    }
}

/// Whether the arena should try a tmpfs of its own: where a memfd would
/// get base pages, and under `advise` too, where a memfd's huge pages come
/// from faulting each new block in through a `MADV_HUGEPAGE` mapping, which
/// may stall the fill while the kernel compacts memory (a write to the own
/// mount takes a free huge page or base pages, never waits). Never under
/// `deny`, which no mount escapes.
fn own_mount_helps(policy: Option<&str>) -> bool {
    memfd_huge_pages(policy) != HugePages::OnWrite && policy != Some("deny")
}

/// One extent's range of the arena; dropping the last view releases it.
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
        let block = self.inner.block;
        let first = self.offset / block;
        let count = (self.offset + self.cap).div_ceil(block) - first;
        let emptied = self.inner.lock_blocks().unref(Run { first, count });
        if let Some(run) = emptied {
            self.inner.reclaim(run);
        }
    }
}

// === impl Blocks ===

/// Consecutive blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first: u64,
    count: u64,
}

/// What [`Blocks::reserve`] gave: the extent's offset, and a block it
/// closed that no extent uses any more (to reclaim).
#[derive(Debug, PartialEq, Eq)]
struct Reserved {
    offset: u64,
    closed: Option<Run>,
}

/// Why [`Blocks::reserve`] found no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoRoom {
    /// No free range is large enough.
    Full,
    /// The free range it would take is not populated yet.
    NotPopulated,
}

/// Which blocks are free, and how many holders each used block has.
#[derive(Debug)]
struct Blocks {
    block: u64,
    /// Free blocks, in block units.
    free: FreeRanges,
    /// Per block: the extents in it, plus one while it is the open block.
    holders: Vec<u32>,
    /// The block small extents are packed into, and the bytes used in it.
    open: Option<(u64, u64)>,
    /// Per block: populated since it was last punched (and not yet handed
    /// out since).
    prepared: Vec<bool>,
    /// Per block: how often it was punched, so that a block populated while
    /// it was handed out and freed again is not taken as populated.
    punched: Vec<u32>,
}

impl Blocks {
    fn new(count: u64, block: u64) -> Self {
        Self {
            block,
            free: FreeRanges::new(count),
            holders: vec![0; count as usize],
            open: None,
            prepared: vec![false; count as usize],
            punched: vec![0; count as usize],
        }
    }

    /// Of the first `n` free blocks, those not populated, with their punch
    /// counts.
    fn unprepared_ahead(&self, n: usize) -> Vec<(u64, u32)> {
        self.free
            .blocks()
            .take(n)
            .filter(|&b| !self.prepared[b as usize])
            .map(|b| (b, self.punched[b as usize]))
            .collect()
    }

    /// Records that `block` was populated, unless it was punched since the
    /// populating thread looked at it or is no longer free.
    fn mark_prepared(&mut self, block: u64, punched: u32) {
        if self.punched[block as usize] == punched && self.holders[block as usize] == 0 {
            self.prepared[block as usize] = true;
        }
    }

    /// Returns a punched run to the free list.
    fn release_punched(&mut self, run: Run) {
        for b in run.first..run.first + run.count {
            self.prepared[b as usize] = false;
            self.punched[b as usize] = self.punched[b as usize].wrapping_add(1);
        }
        self.free.release(run.first, run.count);
    }

    /// Finds room for `cap` bytes: packed into the open block when smaller
    /// than a block, else whole blocks of its own. With `ready_only`, new
    /// blocks must be populated already.
    fn reserve(&mut self, cap: u64, ready_only: bool) -> Result<Reserved, NoRoom> {
        if cap < self.block {
            if let Some((b, used)) = self.open.filter(|&(_, used)| used + cap <= self.block) {
                self.holders[b as usize] += 1;
                self.open = Some((b, used + cap));
                return Ok(Reserved {
                    offset: b * self.block + used,
                    closed: self.close_if_full(),
                });
            }
        }
        let count = cap.div_ceil(self.block);
        let first = self.free.alloc(count).ok_or(NoRoom::Full)?;
        let run = first..first + count;
        if ready_only && !run.clone().all(|b| self.prepared[b as usize]) {
            self.free.release(first, count);
            return Err(NoRoom::NotPopulated);
        }
        // Handed out: populated or not, it is no longer "ready ahead".
        for b in run.clone() {
            self.prepared[b as usize] = false;
        }
        if cap >= self.block {
            for b in run {
                self.holders[b as usize] = 1;
            }
            return Ok(Reserved {
                offset: first * self.block,
                closed: None,
            });
        }
        let closed = self
            .open
            .take()
            .and_then(|(b, _)| self.unref(Run { first: b, count: 1 }));
        self.holders[first as usize] = 2; // this extent, and being open
        self.open = Some((first, cap));
        debug_assert!(self.close_if_full().is_none(), "smaller than a block");
        Ok(Reserved {
            offset: first * self.block,
            closed,
        })
    }

    /// A full open block is closed at once, so that it is freed as soon as
    /// its extents are. (It still has those extents: nothing to reclaim.)
    fn close_if_full(&mut self) -> Option<Run> {
        let (b, used) = self.open?;
        if used < self.block {
            return None;
        }
        self.open = None;
        self.unref(Run { first: b, count: 1 })
    }

    /// Drops one holder from each block of `run`; returns the run if that
    /// left it unused (a run's blocks are held together or not at all).
    fn unref(&mut self, run: Run) -> Option<Run> {
        let mut emptied = true;
        for b in run.first..run.first + run.count {
            let holders = &mut self.holders[b as usize];
            debug_assert!(*holders > 0, "block {b} released more often than held");
            *holders = holders.saturating_sub(1);
            emptied &= *holders == 0;
        }
        emptied.then_some(run)
    }

    fn free_bytes(&self) -> u64 {
        let open_rest = self.open.map_or(0, |(_, used)| self.block - used);
        self.free.free * self.block + open_rest
    }
}

// === impl FreeRanges ===

/// Free ranges by start, coalesced; first fit.
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

    /// Free units in the order [`Self::alloc`] hands them out.
    fn blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|(&start, &len)| start..start + len)
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
mod tests;
