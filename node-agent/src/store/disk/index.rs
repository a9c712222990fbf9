//! The in-memory index: where each live entry sits on the device.
//!
//! It has to hold every entry of a multi-terabyte device in RAM, so it stores
//! no keys: the map key is a 64-bit hash of the full entry key (the header on
//! disk holds the full key and every read compares it), and the value packs
//! region, offset, payload length, an object fingerprint for removal and an
//! access bit for reinsertion into 16 bytes. Per region it also keeps the
//! hashes written there so reclaiming a region never scans the whole map.
//! About 37 bytes per entry in total; see docs/storage.md.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::entry::entry_size;

/// The keys are already xxh3 hashes; hashing them again is wasted work.
#[derive(Default, Clone, Copy, Debug)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

const ACCESSED: u32 = 1;

/// Where one entry lives (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub region: u32,
    /// Offset in region (64-aligned); bit 0 is the access bit.
    offset_bits: u32,
    /// Payload length.
    pub len: u32,
    /// [`super::entry::object_tag`] of the entry's object.
    pub tag: u32,
}

impl Slot {
    pub fn new(region: u32, offset: u32, len: u32, tag: u32) -> Self {
        Self {
            region,
            offset_bits: offset & !ACCESSED,
            len,
            tag,
        }
    }

    pub fn offset(&self) -> u32 {
        self.offset_bits & !ACCESSED
    }

    pub fn accessed(&self) -> bool {
        self.offset_bits & ACCESSED != 0
    }

    /// Bytes the entry occupies in its region.
    pub fn size(&self) -> u64 {
        entry_size(self.len as usize) as u64
    }

    /// Checkpoint form: (region, offset|access, len, tag).
    pub fn to_raw(self) -> [u32; 4] {
        [self.region, self.offset_bits, self.len, self.tag]
    }

    pub fn from_raw(raw: [u32; 4]) -> Self {
        Self {
            region: raw[0],
            offset_bits: raw[1],
            len: raw[2],
            tag: raw[3],
        }
    }
}

/// Hash of entry key → slot, plus per-region hash lists.
#[derive(Debug)]
pub struct Index {
    map: HashMap<u64, Slot, BuildHasherDefault<PassThrough>>,
    region_keys: Vec<Vec<u64>>,
    live_bytes: u64,
}

impl Index {
    pub fn new(region_count: u32) -> Self {
        Self {
            map: HashMap::default(),
            region_keys: vec![Vec::new(); region_count as usize],
            live_bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of live entries (headers, payloads, padding).
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Looks up an entry and marks it recently accessed.
    pub fn touch(&mut self, hash: u64) -> Option<Slot> {
        let slot = self.map.get_mut(&hash)?;
        slot.offset_bits |= ACCESSED;
        Some(*slot)
    }

    pub fn get(&self, hash: u64) -> Option<Slot> {
        self.map.get(&hash).copied()
    }

    /// Inserts or replaces an entry.
    pub fn insert(&mut self, hash: u64, slot: Slot) {
        if let Some(old) = self.map.insert(hash, slot) {
            self.live_bytes -= old.size();
        }
        self.live_bytes += slot.size();
        if let Some(keys) = self.region_keys.get_mut(slot.region as usize) {
            keys.push(hash);
        }
    }

    pub fn remove(&mut self, hash: u64) -> Option<Slot> {
        let old = self.map.remove(&hash)?;
        self.live_bytes -= old.size();
        Some(old)
    }

    /// Removes the entry only if it still lives at `region`/`offset` (a read
    /// that failed verification must not drop a newer copy).
    pub fn remove_if_at(&mut self, hash: u64, region: u32, offset: u32) -> bool {
        match self.map.get(&hash) {
            Some(s) if s.region == region && s.offset() == offset => self.remove(hash).is_some(),
            _ => false,
        }
    }

    /// Removes every entry whose object fingerprint is `tag`. May remove a few
    /// entries of other objects sharing the fingerprint, which is harmless for
    /// a cache. Linear in the index size; purges are rare.
    pub fn remove_tag(&mut self, tag: u32) -> usize {
        let before = self.map.len();
        let mut freed = 0;
        self.map.retain(|_, s| {
            let keep = s.tag != tag;
            if !keep {
                freed += s.size();
            }
            keep
        });
        self.live_bytes -= freed;
        before - self.map.len()
    }

    /// Removes and returns every live entry of `region` in write order.
    pub fn take_region(&mut self, region: u32) -> Vec<(u64, Slot)> {
        let Some(keys) = self.region_keys.get_mut(region as usize) else {
            return Vec::new();
        };
        let keys = std::mem::take(keys);
        let mut live = Vec::new();
        for hash in keys {
            if let Some(slot) = self.map.get(&hash).copied() {
                if slot.region == region {
                    self.remove(hash);
                    live.push((hash, slot));
                }
            }
        }
        live
    }

    /// Drops every entry of `region` (its write failed).
    pub fn drop_region(&mut self, region: u32) -> usize {
        self.take_region(region).len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, Slot)> + '_ {
        self.map.iter().map(|(h, s)| (*h, *s))
    }

    /// Approximate heap bytes per entry at the current size.
    pub fn bytes_per_entry(&self) -> f64 {
        if self.map.is_empty() {
            return 0.0;
        }
        // hashbrown: one control byte plus the (key, value) pair per bucket.
        let table = self.map.capacity() as f64 * 8.0 / 7.0 * (1.0 + 24.0);
        let lists: usize = self.region_keys.iter().map(|k| k.capacity() * 8).sum();
        (table + lists as f64) / self.map.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_is_sixteen_bytes() {
        assert_eq!(size_of::<Slot>(), 16);
    }

    #[test]
    fn insert_replace_remove_and_take_region() {
        let mut ix = Index::new(4);
        ix.insert(1, Slot::new(0, 64, 100, 9));
        ix.insert(2, Slot::new(0, 256, 100, 8));
        ix.insert(1, Slot::new(1, 64, 100, 9));
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.live_bytes(), 2 * 192);
        let touched = ix.touch(2).expect("present");
        assert!(touched.accessed());
        assert_eq!(touched.offset(), 256);
        let taken = ix.take_region(0);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].0, 2);
        assert!(taken[0].1.accessed());
        assert_eq!(ix.len(), 1);
        assert!(!ix.remove_if_at(1, 1, 128));
        assert!(ix.remove_if_at(1, 1, 64));
        assert_eq!(ix.live_bytes(), 0);
        ix.insert(5, Slot::new(2, 0, 10, 77));
        ix.insert(6, Slot::new(2, 128, 10, 77));
        ix.insert(7, Slot::new(2, 256, 10, 78));
        assert_eq!(ix.remove_tag(77), 2);
        assert_eq!(ix.len(), 1);
    }
}
