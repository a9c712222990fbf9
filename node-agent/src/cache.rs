//! The object catalog over the cache tiers.
//!
//! The catalog knows each object's current metadata and which extents it has
//! cached. A lookup assembles a slice from whatever extents cover it, whatever
//! slice size they were cached under; anything missing makes the slice a miss.
//! L1 is consulted first; L2 hits are offered to L1 (its admission policy
//! decides), and every fill goes to L1 at once and to L2 in the background.
//!
//! A fleet member also has a hot set: a second, small memory store (1/8 of
//! the memory budget, taken from L1) for slices fetched from the peers
//! that own them. Its admission gate (TinyUFO's: a newcomer must be asked
//! for more often than what it would evict) keeps only slices that are
//! asked for again, so hot objects stop crossing to their owner on every
//! hit while the fleet still holds one copy of everything else, never on a
//! non-owner's disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::metrics::Metrics;
use crate::object::ObjectMeta;
use crate::store::memory::MemoryStore;
use crate::store::{ExtentKey, ExtentStore, ObjectId};

/// Where a cached slice came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Memory,
    Disk,
}

#[derive(Debug)]
struct ObjectEntry {
    meta: Arc<ObjectMeta>,
    /// Extents known to have been cached: offset → length. A hint: a tier may
    /// have evicted one since, which a lookup then treats as a miss.
    extents: BTreeMap<u64, u32>,
}

/// Where a filled extent is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Memory now, disk in the background.
    AllTiers,
    /// Memory alone.
    MemoryOnly,
    /// The hot set alone (a slice a fleet peer owns); nothing without one.
    Hot,
}

/// Metadata plus tiers.
#[derive(Debug)]
pub struct Cache {
    memory: MemoryStore,
    /// Slices that fleet peers own; see the module docs.
    hot: Option<MemoryStore>,
    disk: Option<Arc<dyn ExtentStore>>,
    objects: Mutex<HashMap<ObjectId, ObjectEntry>>,
    metrics: Arc<Metrics>,
}

impl Cache {
    pub fn new(memory_bytes: u64, disk: Option<Arc<dyn ExtentStore>>, metrics: Arc<Metrics>) -> Self {
        Self::with_hot_set(memory_bytes, 0, disk, metrics)
    }

    /// A cache whose memory budget `memory_bytes` is split: `hot_bytes`
    /// for the hot set (none when 0), the rest for L1.
    pub fn with_hot_set(
        memory_bytes: u64,
        hot_bytes: u64,
        disk: Option<Arc<dyn ExtentStore>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let hot_bytes = hot_bytes.min(memory_bytes / 2);
        Self {
            memory: MemoryStore::new(memory_bytes - hot_bytes),
            hot: (hot_bytes > 0).then(|| MemoryStore::new(hot_bytes)),
            disk,
            objects: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    pub fn memory(&self) -> &MemoryStore {
        &self.memory
    }

    /// One extent from the pieces a fill received: written straight into
    /// the memory arena when it has room, so the pieces are not joined on
    /// the heap first (a copy, and a slice's worth of heap per fill), else
    /// joined.
    pub fn join_parts(&self, parts: &[Bytes]) -> Bytes {
        if let [one] = parts {
            return one.clone();
        }
        if let Some(stored) = self.memory.arena().and_then(|a| a.store_parts(parts)) {
            return stored;
        }
        let mut data = bytes::BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
        for part in parts {
            data.extend_from_slice(part);
        }
        data.freeze()
    }

    /// The hot set, on fleet members.
    pub fn hot_set(&self) -> Option<&MemoryStore> {
        self.hot.as_ref()
    }

    /// An extent resident in L1 or the hot set.
    fn in_ram(&self, key: &ExtentKey) -> Option<Bytes> {
        self.memory
            .get_now(key)
            .or_else(|| self.hot.as_ref().and_then(|h| h.get_now(key)))
    }

    fn objects(&self) -> MutexGuard<'_, HashMap<ObjectId, ObjectEntry>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The metadata for `object`, from memory or (after a restart) from L2.
    pub async fn meta(&self, object: ObjectId) -> Option<Arc<ObjectMeta>> {
        if let Some(entry) = self.objects().get(&object) {
            return Some(entry.meta.clone());
        }
        let disk = self.disk.as_ref()?;
        let meta = ObjectMeta::decode(&disk.get_meta(object).await?)?;
        let meta = Arc::new(meta);
        self.objects().entry(object).or_insert_with(|| ObjectEntry {
            meta: meta.clone(),
            extents: BTreeMap::new(),
        });
        Some(meta)
    }

    /// Records `meta` as the object's current version. A different version
    /// replaces the old one and drops its extents from every tier.
    pub async fn set_meta(&self, object: ObjectId, mut meta: ObjectMeta) -> Arc<ObjectMeta> {
        let previous = self.objects().get(&object).map(|e| e.meta.clone());
        let replaced = match previous {
            Some(old) if old.same_version(&meta) => {
                // Same bytes: keep what we know about cached extents.
                meta.extent_sizes = old.extent_sizes.clone();
                false
            }
            Some(_) => true,
            None => false,
        };
        if replaced {
            self.metrics.object_invalidations.inc();
            self.drop_extents(object).await;
        }
        let meta = Arc::new(meta);
        {
            let mut objects = self.objects();
            let entry = objects.entry(object).or_insert_with(|| ObjectEntry {
                meta: meta.clone(),
                extents: BTreeMap::new(),
            });
            if replaced {
                entry.extents.clear();
            }
            entry.meta = meta.clone();
        }
        if let Some(disk) = &self.disk {
            if !meta.no_store {
                disk.put_meta(object, meta.encode()).await;
            }
        }
        meta
    }

    /// Forgets the object entirely (purge, or a change detected mid-flight).
    pub async fn remove(&self, object: ObjectId) -> bool {
        let known = self.objects().remove(&object).is_some();
        self.drop_extents(object).await;
        known
    }

    async fn drop_extents(&self, object: ObjectId) {
        self.memory.remove_object(object).await;
        if let Some(hot) = &self.hot {
            hot.remove_object(object).await;
        }
        if let Some(disk) = &self.disk {
            disk.remove_object(object).await;
        }
    }

    /// Objects whose cache key starts with `prefix`.
    pub fn objects_with_prefix(&self, prefix: &str) -> Vec<ObjectId> {
        self.objects()
            .iter()
            .filter(|(_, e)| e.meta.key.starts_with(prefix))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Assembles `[offset, end)` of `meta`'s version from cached extents, or
    /// `None` if any byte of it is missing.
    pub async fn lookup(
        &self,
        object: ObjectId,
        meta: &ObjectMeta,
        offset: u64,
        end: u64,
    ) -> Option<(Vec<Bytes>, Tier)> {
        self.lookup_in(object, meta, offset, end, true).await
    }

    /// [`Self::lookup`] in L1 only: never waits for the disk.
    pub async fn lookup_memory(
        &self,
        object: ObjectId,
        meta: &ObjectMeta,
        offset: u64,
        end: u64,
    ) -> Option<Vec<Bytes>> {
        self.lookup_in(object, meta, offset, end, false).await.map(|(p, _)| p)
    }

    /// Whether an L2 tier exists.
    pub fn has_disk(&self) -> bool {
        self.disk.is_some()
    }

    async fn lookup_in(
        &self,
        object: ObjectId,
        meta: &ObjectMeta,
        offset: u64,
        end: u64,
        use_disk: bool,
    ) -> Option<(Vec<Bytes>, Tier)> {
        let version = meta.version();
        let mut pieces = Vec::new();
        let mut tier = Tier::Memory;
        let mut pos = offset;
        while pos < end {
            let (key, data, from) = self.find_extent(object, meta, version, pos, use_disk).await?;
            if from == Tier::Disk {
                tier = Tier::Disk;
            }
            let start = usize::try_from(pos - key.offset).ok()?;
            let stop = usize::try_from((end - key.offset).min(u64::from(key.len))).ok()?;
            if data.len() != key.len as usize || start >= stop {
                return None;
            }
            pieces.push(data.slice(start..stop));
            pos = key.offset + stop as u64;
        }
        Some((pieces, tier))
    }

    /// Whether `[offset, end)` of `meta`'s version is all in L1 right now.
    pub fn in_memory(&self, object: ObjectId, meta: &ObjectMeta, offset: u64, end: u64) -> bool {
        let version = meta.version();
        let mut pos = offset;
        while pos < end {
            let resident = self.probes(object, meta, pos).find(|&(off, len)| {
                let key = ExtentKey {
                    object,
                    version,
                    offset: off,
                    len,
                };
                self.in_ram(&key).is_some()
            });
            match resident {
                Some((off, len)) => pos = off + u64::from(len),
                None => return false,
            }
        }
        true
    }

    /// Whether the object's metadata is known (without asking L2).
    pub fn knows(&self, object: ObjectId) -> bool {
        self.objects().contains_key(&object)
    }

    /// The extents that may hold byte `pos`: the one the catalog recorded,
    /// then the aligned extent under each slice size the object was cached
    /// with.
    fn probes<'m>(&self, object: ObjectId, meta: &'m ObjectMeta, pos: u64) -> impl Iterator<Item = (u64, u32)> + 'm {
        let hinted = self.objects().get(&object).and_then(|e| {
            let (&off, &len) = e.extents.range(..=pos).next_back()?;
            (off + u64::from(len) > pos).then_some((off, len))
        });
        hinted
            .into_iter()
            .chain(meta.extent_sizes.iter().filter_map(move |&size| {
                let off = pos / size * size;
                let len = u32::try_from(size.min(meta.size.checked_sub(off)?)).ok()?;
                Some((off, len))
            }))
    }

    async fn find_extent(
        &self,
        object: ObjectId,
        meta: &ObjectMeta,
        version: u64,
        pos: u64,
        use_disk: bool,
    ) -> Option<(ExtentKey, Bytes, Tier)> {
        for (off, len) in self.probes(object, meta, pos) {
            let key = ExtentKey {
                object,
                version,
                offset: off,
                len,
            };
            if let Some(data) = self.in_ram(&key) {
                return Some((key, data, Tier::Memory));
            }
            if !use_disk {
                // Keep the hint: the extent may well be on disk.
                continue;
            }
            if let Some(disk) = &self.disk {
                if let Some(data) = disk.get(&key).await {
                    if self.memory.put_promoted(key, data.clone()) {
                        self.metrics.promotions.inc();
                    }
                    self.note_extent(object, version, off, len);
                    return Some((key, data, Tier::Disk));
                }
            }
            if let Some(entry) = self.objects().get_mut(&object) {
                if entry.extents.get(&off) == Some(&len) {
                    entry.extents.remove(&off);
                }
            }
        }
        None
    }

    fn note_extent(&self, object: ObjectId, version: u64, offset: u64, len: u32) {
        if let Some(entry) = self.objects().get_mut(&object) {
            if entry.meta.version() == version {
                entry.extents.insert(offset, len);
            }
        }
    }

    /// Caches a filled extent: in L1 now, in L2 in the background.
    /// `nominal` is the slice size it was fetched under; a new size is
    /// recorded in the metadata so lookups know to probe it.
    pub fn insert(self: &Arc<Self>, object: ObjectId, meta: &ObjectMeta, offset: u64, nominal: u64, data: Bytes) {
        self.insert_to(Keep::AllTiers, object, meta, offset, nominal, data);
    }

    /// [`Self::insert`], keeping the extent as `keep` says: memory alone for bytes fetched
    /// in place of a failed fleet peer (the owner's disk is the fleet's copy),
    /// the hot set for bytes a peer sent.
    pub fn insert_to(
        self: &Arc<Self>,
        keep: Keep,
        object: ObjectId,
        meta: &ObjectMeta,
        offset: u64,
        nominal: u64,
        data: Bytes,
    ) {
        let Ok(len) = u32::try_from(data.len()) else {
            return;
        };
        if meta.no_store || len == 0 {
            return;
        }
        let version = meta.version();
        let key = ExtentKey {
            object,
            version,
            offset,
            len,
        };
        let new_size = {
            let mut objects = self.objects();
            let Some(entry) = objects.get_mut(&object) else {
                return;
            };
            if entry.meta.version() != version {
                // The object changed while this slice was in flight.
                return;
            }
            entry.extents.insert(offset, len);
            if entry.meta.extent_sizes.contains(&nominal) {
                None
            } else {
                let mut updated = (*entry.meta).clone();
                updated.extent_sizes.push(nominal);
                entry.meta = Arc::new(updated);
                Some(entry.meta.clone())
            }
        };
        if keep == Keep::Hot {
            if let Some(hot) = &self.hot {
                let admitted = hot.put_now(key, data);
                let result = if admitted { "admitted" } else { "rejected" };
                self.metrics.hot_set_puts.with_label_values(&[result]).inc();
            }
            return;
        }
        self.memory.put_now(key, data.clone());
        if let Some(disk) = self.disk.clone().filter(|_| keep == Keep::AllTiers) {
            tokio::spawn(async move {
                if let Some(meta) = new_size {
                    disk.put_meta(object, meta.encode()).await;
                }
                disk.put(key, data).await;
            });
        }
    }

    /// Extends an object's freshness after a 304.
    pub fn refresh(&self, object: ObjectId, refreshed: ObjectMeta) -> Option<Arc<ObjectMeta>> {
        let mut objects = self.objects();
        let entry = objects.get_mut(&object)?;
        if !entry.meta.same_version(&refreshed) {
            return None;
        }
        let mut meta = (*entry.meta).clone();
        meta.fresh_until = refreshed.fresh_until;
        entry.meta = Arc::new(meta);
        Some(entry.meta.clone())
    }
}
