//! Getting the index back after a restart: from the checkpoint a clean close
//! wrote, or by scanning every region's entry headers after a crash.
//!
//! The checkpoint is an optimisation, never a source of truth that could
//! disagree with the log: it is invalidated (its header zeroed and synced)
//! right after it is loaded, before the first new write, so a later crash
//! always falls back to the scan.

use std::time::Instant;

use super::aligned::{align_up, AlignedBuf, ALIGN};
use super::entry::{entry_size, le_u32, le_u64, object_tag, scan_region, Kind, RegionHeader};
use super::index::{Index, Slot};
use super::io::Device;
use super::region::RegionTable;
use super::superblock::Geometry;
use super::{DiskError, Shared};

const CKPT_MAGIC: [u8; 8] = *b"SCCKPT01";
const CKPT_VERSION: u32 = 1;
const CKPT_HEADER_LEN: usize = 4096;
const REGION_REC: usize = 16;
const ENTRY_REC: usize = 24;

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
    if let Some((index, regions)) = load_checkpoint(dev, g, uuid) {
        invalidate_checkpoint(dev, g)?;
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

fn load_checkpoint(dev: &Device, g: &Geometry, uuid: u128) -> Option<(Index, RegionTable)> {
    let mut hdr = AlignedBuf::zeroed(CKPT_HEADER_LEN);
    dev.read_at(hdr.as_mut_slice(), g.checkpoint_offset).ok()?;
    let b = hdr.as_slice();
    if b[0..8] != CKPT_MAGIC || le_u32(b, 60) != crc32c::crc32c(&b[..60]) {
        return None;
    }
    if le_u32(b, 8) != CKPT_VERSION || le_u32(b, 12) != g.region_count {
        return None;
    }
    let mut u = [0u8; 16];
    u.copy_from_slice(&b[16..32]);
    if u128::from_le_bytes(u) != uuid {
        return None;
    }
    let next_seq = le_u64(b, 32);
    let entries = usize::try_from(le_u64(b, 40)).ok()?;
    let payload_len = usize::try_from(le_u64(b, 48)).ok()?;
    let crc = le_u32(b, 56);
    let regions = g.region_count as usize;
    if payload_len
        != regions
            .checked_mul(REGION_REC)?
            .checked_add(entries.checked_mul(ENTRY_REC)?)?
        || (CKPT_HEADER_LEN + payload_len) as u64 > g.checkpoint_len
    {
        return None;
    }
    let mut body = AlignedBuf::zeroed(payload_len);
    if payload_len > 0 {
        let span = body.len();
        dev.read_at(
            &mut body.as_mut_slice()[..span],
            g.checkpoint_offset + CKPT_HEADER_LEN as u64,
        )
        .ok()?;
    }
    let p = &body.as_slice()[..payload_len];
    if crc32c::crc32c(p) != crc {
        return None;
    }
    let mut sealed = Vec::new();
    for r in 0..regions {
        let seq = le_u64(p, r * REGION_REC);
        let used = le_u32(p, r * REGION_REC + 8);
        if used > g.region_size {
            return None;
        }
        if seq != 0 {
            sealed.push((r as u32, seq, used));
        }
    }
    let table = RegionTable::from_sealed(g.region_count, sealed, next_seq);
    let mut index = Index::new(g.region_count);
    let base = regions * REGION_REC;
    for i in 0..entries {
        let at = base + i * ENTRY_REC;
        let hash = le_u64(p, at);
        let slot = Slot::from_raw([
            le_u32(p, at + 8),
            le_u32(p, at + 12),
            le_u32(p, at + 16),
            le_u32(p, at + 20),
        ]);
        let region = slot.region as usize;
        let end = u64::from(slot.offset()) + entry_size(slot.len as usize) as u64;
        if region >= regions || table.seq[region] == 0 || end > u64::from(table.used[region]) {
            return None;
        }
        index.insert(hash, slot);
    }
    Some((index, table))
}

/// Zeroes the checkpoint header so it is never loaded twice.
pub fn invalidate_checkpoint(dev: &Device, g: &Geometry) -> Result<(), DiskError> {
    let zero = AlignedBuf::zeroed(CKPT_HEADER_LEN);
    dev.write_at(zero.as_slice(), g.checkpoint_offset)
        .and_then(|()| dev.sync())
        .map_err(|e| DiskError::io(dev.path(), "checkpoint invalidation", e))
}

/// Serialises the index and region table into the checkpoint area. Skipped
/// (with a warning) when it does not fit: the next open then scans.
pub(crate) fn write_checkpoint(shared: &Shared) -> Result<(), DiskError> {
    let g = &shared.geometry;
    let st = shared.lock();
    let regions = g.region_count as usize;
    let payload_len = regions * REGION_REC + st.index.len() * ENTRY_REC;
    let total = align_up((CKPT_HEADER_LEN + payload_len) as u64, ALIGN as u64);
    if total > g.checkpoint_len {
        tracing::warn!(
            entries = st.index.len(),
            needed = total,
            available = g.checkpoint_len,
            "index checkpoint does not fit; next start will scan the device"
        );
        return Ok(());
    }
    let mut buf = AlignedBuf::zeroed(total as usize);
    let b = buf.as_mut_slice();
    {
        let p = &mut b[CKPT_HEADER_LEN..CKPT_HEADER_LEN + payload_len];
        for r in 0..regions {
            let at = r * REGION_REC;
            p[at..at + 8].copy_from_slice(&st.regions.seq[r].to_le_bytes());
            p[at + 8..at + 12].copy_from_slice(&st.regions.used[r].to_le_bytes());
        }
        let mut at = regions * REGION_REC;
        for (hash, slot) in st.index.iter() {
            p[at..at + 8].copy_from_slice(&hash.to_le_bytes());
            for (i, v) in slot.to_raw().iter().enumerate() {
                p[at + 8 + 4 * i..at + 12 + 4 * i].copy_from_slice(&v.to_le_bytes());
            }
            at += ENTRY_REC;
        }
    }
    let crc = crc32c::crc32c(&b[CKPT_HEADER_LEN..CKPT_HEADER_LEN + payload_len]);
    b[0..8].copy_from_slice(&CKPT_MAGIC);
    b[8..12].copy_from_slice(&CKPT_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&g.region_count.to_le_bytes());
    b[16..32].copy_from_slice(&shared.uuid.to_le_bytes());
    b[32..40].copy_from_slice(&st.regions.next_seq.to_le_bytes());
    b[40..48].copy_from_slice(&(st.index.len() as u64).to_le_bytes());
    b[48..56].copy_from_slice(&(payload_len as u64).to_le_bytes());
    b[56..60].copy_from_slice(&crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&b[..60]);
    b[60..64].copy_from_slice(&hcrc.to_le_bytes());
    drop(st);
    // Body first, then the header that makes it valid.
    let dev = &shared.dev;
    let io = |e| DiskError::io(dev.path(), "checkpoint write", e);
    if total as usize > CKPT_HEADER_LEN {
        dev.write_at(
            &buf.as_slice()[CKPT_HEADER_LEN..],
            g.checkpoint_offset + CKPT_HEADER_LEN as u64,
        )
        .map_err(io)?;
        dev.sync().map_err(io)?;
    }
    dev.write_at(&buf.as_slice()[..CKPT_HEADER_LEN], g.checkpoint_offset)
        .map_err(io)?;
    dev.sync().map_err(io)?;
    Ok(())
}
