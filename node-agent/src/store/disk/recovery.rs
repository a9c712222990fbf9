//! Getting the index back after a restart: from the checkpoint a clean close
//! wrote ([`super::checkpoint`]), or by scanning every region's entry
//! headers after a crash.

use std::time::Instant;

use super::aligned::{AlignedBuf, ALIGN};
use super::checkpoint;
use super::entry::{object_tag, scan_region, Kind, RegionHeader};
use super::index::{Index, Slot};
use super::io::Device;
use super::region_table::RegionTable;
use super::superblock::Geometry;
use super::DiskError;

/// How the index was rebuilt at open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoverySource {
    /// Freshly formatted device.
    Formatted,
    /// Loaded from the clean-shutdown checkpoint.
    Checkpoint,
    /// Rebuilt by scanning regions (crash or no usable checkpoint).
    Scan,
}

/// What recovery found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecoveryReport {
    pub source: RecoverySource,
    pub entries: usize,
    pub torn_entries: u64,
    pub regions_in_use: u32,
    pub seconds: f64,
}

/// Rebuilds the index: checkpoint if valid, else a full scan.
pub fn recover(dev: &Device, g: &Geometry, uuid: u128) -> Result<(Index, RegionTable, RecoveryReport), DiskError> {
    let started = Instant::now();
    if let Some((index, regions)) = checkpoint::load(dev, g, uuid) {
        checkpoint::invalidate(dev, g)?;
        let report = RecoveryReport {
            source: RecoverySource::Checkpoint,
            entries: index.len(),
            torn_entries: 0,
            regions_in_use: regions.fifo.len() as u32,
            seconds: started.elapsed().as_secs_f64(),
        };
        return Ok((index, regions, report));
    }
    let (index, regions, torn) = scan(dev, g, uuid)?;
    let report = RecoveryReport {
        source: RecoverySource::Scan,
        entries: index.len(),
        torn_entries: torn,
        regions_in_use: regions.fifo.len() as u32,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((index, regions, report))
}

/// Reads every region, oldest first, replaying entries and tombstones.
fn scan(dev: &Device, g: &Geometry, uuid: u128) -> Result<(Index, RegionTable, u64), DiskError> {
    let io = |e| DiskError::io(dev.path(), "recovery read", e);
    let mut head = AlignedBuf::zeroed(ALIGN);
    let mut found = Vec::new();
    for region in 0..g.region_count {
        dev.read_at(head.as_mut_slice(), g.region_offset(region)).map_err(io)?;
        if let Ok(h) = RegionHeader::decode(head.as_slice()) {
            if h.uuid == uuid && h.region == region && h.seq != 0 {
                found.push(h);
            }
        }
    }
    found.sort_by_key(|h| h.seq);
    let mut index = Index::new(g.region_count);
    let mut sealed = Vec::with_capacity(found.len());
    let mut torn = 0;
    let mut img = AlignedBuf::zeroed(g.region_size as usize);
    for h in &found {
        dev.read_at(img.as_mut_slice(), g.region_offset(h.region)).map_err(io)?;
        let out = scan_region(img.as_slice(), h.nonce);
        torn += out.torn;
        for e in &out.entries {
            let key = e.header.key;
            match key.kind {
                Kind::Extent | Kind::Meta => index.insert(
                    key.hash64(),
                    Slot::new(h.region, e.offset, e.header.payload_len, object_tag(key.object)),
                ),
                Kind::Tombstone => {
                    index.remove_tag(object_tag(key.object));
                }
            }
        }
        sealed.push((h.region, h.seq, out.used));
    }
    let next = found.last().map_or(1, |h| h.seq + 1);
    Ok((index, RegionTable::from_sealed(g.region_count, sealed, next), torn))
}
