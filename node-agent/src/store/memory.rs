//! L1: extents in memory, admitted by TinyLFU and evicted by S3-FIFO
//! (Pingora's TinyUFO), bounded by total bytes.
//!
//! TinyUFO cannot enumerate its keys, so a small per-object index records
//! which extents are resident; it lets a purge or an invalidation remove an
//! object's extents without knowing their offsets.
//!
//! Admitted extents live in an [`Arena`] (a memfd) when one could be made,
//! so hits can be sent with `sendfile`; see the arena module for why.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use tinyufo::TinyUfo;

use super::arena::Arena;
use super::{ExtentKey, ExtentStore, ObjectId};

/// The in-memory tier.
pub struct MemoryStore {
    extents: TinyUfo<ExtentKey, (ExtentKey, Bytes)>,
    index: Mutex<HashMap<ObjectId, HashSet<ExtentKey>>>,
    meta: Mutex<HashMap<ObjectId, Bytes>>,
    capacity: usize,
    used: std::sync::atomic::AtomicUsize,
    arena: Option<Arena>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &self.capacity)
            .field("used", &self.used_bytes())
            .finish()
    }
}

impl MemoryStore {
    /// A tier holding at most `capacity` bytes of extents.
    pub fn new(capacity: u64) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        // TinyUFO sizes its frequency sketch from the expected entry count;
        // assume slices of about 256 KiB on average.
        let estimated = (capacity / (256 << 10)).max(64);
        // Responses still sending an evicted extent keep its range a while
        // longer, and a block is freed only when all its extents are, hence
        // the headroom; the file is sparse, so it costs nothing until used.
        let arena = match Arena::new(capacity as u64 + capacity as u64 / 4) {
            Ok(arena) => {
                tracing::info!(
                    block = arena.block_size(),
                    huge_pages = ?arena.huge_pages(),
                    "memory tier in a shared-memory arena; hits are sent with sendfile"
                );
                Some(arena)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no shared-memory arena; memory hits are copied to clients");
                None
            }
        };
        Self {
            // Weights are KiB (see `put_now`), so the limit is too.
            extents: TinyUfo::new((capacity >> 10).max(1), estimated),
            index: Mutex::new(HashMap::new()),
            meta: Mutex::new(HashMap::new()),
            capacity,
            used: std::sync::atomic::AtomicUsize::new(0),
            arena,
        }
    }

    /// The arena holding resident extents, if there is one.
    pub fn arena(&self) -> Option<&Arena> {
        self.arena.as_ref()
    }

    pub fn capacity_bytes(&self) -> usize {
        self.capacity
    }

    /// Bytes of extents resident now.
    pub fn used_bytes(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Synchronous lookup: L1 never blocks, so callers may use it under locks.
    pub fn get_now(&self, key: &ExtentKey) -> Option<Bytes> {
        self.extents.get(key).map(|(_, data)| data)
    }

    /// Synchronous insert of a filled extent, copied into the arena;
    /// returns whether the extent was admitted.
    pub fn put_now(&self, key: ExtentKey, data: Bytes) -> bool {
        self.insert(key, data, true)
    }

    /// Like [`Self::put_now`] for an extent read from L2, which stays on the
    /// heap: under a working set larger than L1 most promotions are evicted
    /// before their next hit, and the copy into the arena (fresh pages,
    /// then a hole punched on eviction) raised the disk tier's CPU per byte
    /// by half (1.48 → 2.31 s/GiB at 64 clients in `bench/run.sh`).
    pub fn put_promoted(&self, key: ExtentKey, data: Bytes) -> bool {
        self.insert(key, data, false)
    }

    fn insert(&self, key: ExtentKey, data: Bytes, into_arena: bool) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        // TinyUFO weights are u16: count KiB so a 64 MiB extent still fits.
        let weight = u16::try_from(data.len() >> 10).unwrap_or(u16::MAX).max(1);
        let len = data.len();
        if self.extents.get(&key).is_some() {
            return true;
        }
        let data = match &self.arena {
            Some(arena) if into_arena && arena.locate(&data).is_none() => arena.store(&data).unwrap_or(data),
            _ => data,
        };
        let evicted = self.extents.put(key, (key, data), weight);
        let mut index = lock(&self.index);
        let mut admitted = true;
        for kv in evicted {
            let (evicted_key, bytes) = kv.data;
            if evicted_key == key {
                admitted = false;
                continue;
            }
            self.used.fetch_sub(bytes.len(), Relaxed);
            if let Some(set) = index.get_mut(&evicted_key.object) {
                set.remove(&evicted_key);
                if set.is_empty() {
                    index.remove(&evicted_key.object);
                }
            }
        }
        if admitted {
            self.used.fetch_add(len, Relaxed);
            index.entry(key.object).or_default().insert(key);
        }
        admitted
    }

    fn remove_now(&self, object: ObjectId) {
        let keys = lock(&self.index).remove(&object).unwrap_or_default();
        for key in keys {
            if let Some((_, data)) = self.extents.remove(&key) {
                self.used.fetch_sub(data.len(), std::sync::atomic::Ordering::Relaxed);
            }
        }
        lock(&self.meta).remove(&object);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding an index lock leaves the index merely stale, never
    // unsafe; keep serving rather than poisoning every later request.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl ExtentStore for MemoryStore {
    async fn get(&self, key: &ExtentKey) -> Option<Bytes> {
        self.get_now(key)
    }

    async fn put(&self, key: ExtentKey, data: Bytes) {
        self.put_now(key, data);
    }

    async fn get_meta(&self, object: ObjectId) -> Option<Bytes> {
        lock(&self.meta).get(&object).cloned()
    }

    async fn put_meta(&self, object: ObjectId, meta: Bytes) {
        lock(&self.meta).insert(object, meta);
    }

    async fn remove_object(&self, object: ObjectId) {
        self.remove_now(object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(object: u128, offset: u64) -> ExtentKey {
        ExtentKey {
            object: ObjectId(object),
            version: 1,
            offset,
            len: 1024,
        }
    }

    #[test]
    fn stores_and_bounds_memory() {
        let store = MemoryStore::new(64 << 10);
        for i in 0..256u64 {
            store.put_now(key(1, i * 1024), Bytes::from(vec![i as u8; 1024]));
        }
        assert!(store.used_bytes() <= 64 << 10, "used {}", store.used_bytes());
        let hits = (0..256u64)
            .filter(|i| store.get_now(&key(1, i * 1024)).is_some_and(|b| b[0] == *i as u8))
            .count();
        assert!(hits > 0 && hits <= 64, "hits {hits}");
    }

    #[test]
    fn remove_object_drops_every_extent() {
        let store = MemoryStore::new(1 << 20);
        for i in 0..4u64 {
            store.put_now(key(1, i * 1024), Bytes::from(vec![1; 1024]));
            store.put_now(key(2, i * 1024), Bytes::from(vec![2; 1024]));
        }
        store.remove_now(ObjectId(1));
        assert!((0..4).all(|i| store.get_now(&key(1, i * 1024)).is_none()));
        assert!((0..4).all(|i| store.get_now(&key(2, i * 1024)).is_some()));
        assert_eq!(store.used_bytes(), 4 * 1024);
    }
}
