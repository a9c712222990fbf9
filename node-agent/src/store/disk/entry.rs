//! Entry and region headers: the self-describing records that make the log
//! recoverable without any other metadata.
//!
//! Every record written into a region (extent, object metadata, removal
//! tombstone) starts with a 64-byte [`EntryHeader`] that carries its full key,
//! payload length, CRC32C of the payload and a CRC of the header itself. Each
//! region starts with a [`RegionHeader`] holding a sequence number (FIFO order
//! across regions) and a random nonce that every entry repeats, so entries left
//! over from an earlier use of the region are never mistaken for current ones.
//! Decoding never panics on arbitrary bytes.

use crate::store::{ExtentKey, ObjectId};

/// Size of an entry header and of the alignment between entries.
pub const ENTRY_ALIGN: usize = 64;
pub const HEADER_LEN: usize = 64;
/// Bytes at the start of each region taken by the region header.
pub const REGION_HEADER_LEN: usize = 64;

pub const ENTRY_MAGIC: [u8; 4] = *b"SCEN";
pub const REGION_MAGIC: [u8; 4] = *b"SCRG";
pub const ENTRY_VERSION: u8 = 1;
pub const REGION_VERSION: u32 = 1;

/// What an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Extent = 1,
    Meta = 2,
    /// Removal of every entry of an object written before it.
    Tombstone = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Extent),
            2 => Some(Self::Meta),
            3 => Some(Self::Tombstone),
            _ => None,
        }
    }
}

/// The logical key of an entry. Metadata and tombstones use version, offset
/// and len of zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntryKey {
    pub kind: Kind,
    pub object: ObjectId,
    pub version: u64,
    pub offset: u64,
    pub len: u32,
}

impl EntryKey {
    pub fn extent(k: &ExtentKey) -> Self {
        Self {
            kind: Kind::Extent,
            object: k.object,
            version: k.version,
            offset: k.offset,
            len: k.len,
        }
    }

    pub fn meta(object: ObjectId) -> Self {
        Self {
            kind: Kind::Meta,
            object,
            version: 0,
            offset: 0,
            len: 0,
        }
    }

    pub fn tombstone(object: ObjectId) -> Self {
        Self {
            kind: Kind::Tombstone,
            object,
            version: 0,
            offset: 0,
            len: 0,
        }
    }

    /// 64-bit hash used as the in-memory index key. Collisions cannot serve
    /// wrong bytes: every read compares the full key in the header.
    pub fn hash64(&self) -> u64 {
        let mut b = [0u8; 37];
        b[0] = self.kind as u8;
        b[1..17].copy_from_slice(&self.object.0.to_le_bytes());
        b[17..25].copy_from_slice(&self.version.to_le_bytes());
        b[25..33].copy_from_slice(&self.offset.to_le_bytes());
        b[33..37].copy_from_slice(&self.len.to_le_bytes());
        xxhash_rust::xxh3::xxh3_64(&b)
    }
}

/// Short fingerprint of an object kept per index entry so `remove_object` can
/// find an object's entries without storing the full 128-bit id.
pub fn object_tag(object: ObjectId) -> u32 {
    (object.0 >> 96) as u32 ^ object.0 as u32
}

/// Bytes an entry with `payload_len` bytes of payload occupies in a region.
pub fn entry_size(payload_len: usize) -> usize {
    (HEADER_LEN + payload_len).div_ceil(ENTRY_ALIGN) * ENTRY_ALIGN
}

/// A decoded entry header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryHeader {
    pub key: EntryKey,
    pub nonce: u64,
    pub payload_len: u32,
    pub payload_crc: u32,
}

/// Why bytes are not a valid header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("too short")]
    Short,
    #[error("bad magic")]
    Magic,
    #[error("header checksum mismatch")]
    Checksum,
    #[error("unknown version or kind")]
    Unknown,
    #[error("fields are inconsistent")]
    Inconsistent,
}

/// Little-endian `u32` at byte `at` (the caller has checked the length).
pub(super) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Little-endian `u64` at byte `at` (the caller has checked the length).
pub(super) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn le_u128(b: &[u8], at: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    u128::from_le_bytes(a)
}

impl EntryHeader {
    pub fn new(key: EntryKey, nonce: u64, payload: &[u8]) -> Self {
        Self {
            key,
            nonce,
            payload_len: payload.len() as u32,
            payload_crc: crc32c::crc32c(payload),
        }
    }

    /// Byte layout (little endian), documented in docs/storage.md.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&ENTRY_MAGIC);
        b[4] = self.key.kind as u8;
        b[5] = ENTRY_VERSION;
        // 6..8 reserved
        b[8..16].copy_from_slice(&self.nonce.to_le_bytes());
        b[16..32].copy_from_slice(&self.key.object.0.to_le_bytes());
        b[32..40].copy_from_slice(&self.key.version.to_le_bytes());
        b[40..48].copy_from_slice(&self.key.offset.to_le_bytes());
        b[48..52].copy_from_slice(&self.key.len.to_le_bytes());
        b[52..56].copy_from_slice(&self.payload_len.to_le_bytes());
        b[56..60].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, HeaderError> {
        if b.len() < HEADER_LEN {
            return Err(HeaderError::Short);
        }
        if b[0..4] != ENTRY_MAGIC {
            return Err(HeaderError::Magic);
        }
        if le_u32(b, 60) != crc32c::crc32c(&b[..60]) {
            return Err(HeaderError::Checksum);
        }
        let kind = Kind::from_u8(b[4]).ok_or(HeaderError::Unknown)?;
        if b[5] != ENTRY_VERSION {
            return Err(HeaderError::Unknown);
        }
        let key = EntryKey {
            kind,
            object: ObjectId(le_u128(b, 16)),
            version: le_u64(b, 32),
            offset: le_u64(b, 40),
            len: le_u32(b, 48),
        };
        let payload_len = le_u32(b, 52);
        let consistent = match kind {
            Kind::Extent => key.len == payload_len,
            Kind::Meta => key.version == 0 && key.offset == 0 && key.len == 0,
            Kind::Tombstone => key.version == 0 && key.offset == 0 && key.len == 0 && payload_len == 0,
        };
        if !consistent {
            return Err(HeaderError::Inconsistent);
        }
        Ok(Self {
            key,
            nonce: le_u64(b, 8),
            payload_len,
            payload_crc: le_u32(b, 56),
        })
    }

    /// Bytes this entry occupies in its region.
    pub fn size(&self) -> usize {
        entry_size(self.payload_len as usize)
    }
}

/// Verifies a complete entry image (header followed by payload) against the
/// expected key; returns the payload range within `b`.
pub fn verify_entry(b: &[u8], expected: &EntryKey) -> Result<std::ops::Range<usize>, HeaderError> {
    let h = EntryHeader::decode(b)?;
    if h.key != *expected {
        return Err(HeaderError::Inconsistent);
    }
    let end = HEADER_LEN
        .checked_add(h.payload_len as usize)
        .filter(|&e| e <= b.len())
        .ok_or(HeaderError::Short)?;
    if crc32c::crc32c(&b[HEADER_LEN..end]) != h.payload_crc {
        return Err(HeaderError::Checksum);
    }
    Ok(HEADER_LEN..end)
}

/// The header at the start of every region in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionHeader {
    pub region: u32,
    /// Global write order of regions; higher is newer.
    pub seq: u64,
    /// Random per use of the region; repeated in each entry header.
    pub nonce: u64,
    /// Superblock UUID: regions written before a reformat are ignored.
    pub uuid: u128,
}

impl RegionHeader {
    pub fn encode(&self) -> [u8; REGION_HEADER_LEN] {
        let mut b = [0u8; REGION_HEADER_LEN];
        b[0..4].copy_from_slice(&REGION_MAGIC);
        b[4..8].copy_from_slice(&REGION_VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.region.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.nonce.to_le_bytes());
        b[32..48].copy_from_slice(&self.uuid.to_le_bytes());
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, HeaderError> {
        if b.len() < REGION_HEADER_LEN {
            return Err(HeaderError::Short);
        }
        if b[0..4] != REGION_MAGIC {
            return Err(HeaderError::Magic);
        }
        if le_u32(b, 60) != crc32c::crc32c(&b[..60]) {
            return Err(HeaderError::Checksum);
        }
        if le_u32(b, 4) != REGION_VERSION {
            return Err(HeaderError::Unknown);
        }
        Ok(Self {
            region: le_u32(b, 8),
            seq: le_u64(b, 16),
            nonce: le_u64(b, 24),
            uuid: le_u128(b, 32),
        })
    }
}

/// One entry found by [`scan_region`].
#[derive(Debug, PartialEq, Eq)]
pub struct Scanned {
    pub offset: u32,
    pub header: EntryHeader,
}

/// Result of scanning one region image.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    pub entries: Vec<Scanned>,
    /// Entries whose header validated but whose payload did not, plus runs of
    /// garbage between valid entries.
    pub torn: u64,
    /// End of the last valid entry.
    pub used: u32,
}

/// Walks the entries of one region image (`img` starts at the region header).
/// After a bad record it resynchronises on the next 64-byte boundary holding a
/// valid header with this region's nonce, so one corrupt entry does not hide
/// the rest of the region.
pub fn scan_region(img: &[u8], nonce: u64) -> ScanOutcome {
    let mut out = ScanOutcome {
        used: REGION_HEADER_LEN as u32,
        ..ScanOutcome::default()
    };
    let mut at = REGION_HEADER_LEN;
    let mut in_garbage = false;
    while at + HEADER_LEN <= img.len() {
        let parsed = EntryHeader::decode(&img[at..]).ok().filter(|h| h.nonce == nonce);
        let Some(h) = parsed else {
            if !in_garbage && img[at..at + HEADER_LEN].iter().any(|&b| b != 0) {
                in_garbage = true;
                out.torn += 1;
            }
            at += ENTRY_ALIGN;
            continue;
        };
        let size = h.size();
        if at + size > img.len() {
            out.torn += 1;
            at += ENTRY_ALIGN;
            continue;
        }
        in_garbage = false;
        let payload = &img[at + HEADER_LEN..at + HEADER_LEN + h.payload_len as usize];
        if crc32c::crc32c(payload) == h.payload_crc {
            out.entries.push(Scanned {
                offset: at as u32,
                header: h,
            });
        } else {
            out.torn += 1;
        }
        at += size;
        out.used = at as u32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> EntryKey {
        EntryKey::extent(&ExtentKey {
            object: ObjectId(7),
            version: 3,
            offset: 1 << 20,
            len: 5,
        })
    }

    #[test]
    fn header_round_trips_and_verifies() {
        let h = EntryHeader::new(key(), 99, b"hello");
        let enc = h.encode();
        assert_eq!(EntryHeader::decode(&enc), Ok(h));
        let mut img = enc.to_vec();
        img.extend_from_slice(b"hello");
        assert_eq!(verify_entry(&img, &key()), Ok(64..69));
        img[66] ^= 1;
        assert_eq!(verify_entry(&img, &key()), Err(HeaderError::Checksum));
    }

    #[test]
    fn scan_finds_entries_and_skips_corruption() {
        let nonce = 42;
        let mut img = vec![0u8; 4096];
        img[..64].copy_from_slice(
            &RegionHeader {
                region: 0,
                seq: 1,
                nonce,
                uuid: 5,
            }
            .encode(),
        );
        let mut at = 64;
        let mut offsets = vec![];
        for i in 0..5u8 {
            let payload = vec![i; 100];
            let k = EntryKey::extent(&ExtentKey {
                object: ObjectId(1),
                version: 1,
                offset: u64::from(i) * 100,
                len: 100,
            });
            let h = EntryHeader::new(k, nonce, &payload);
            img[at..at + 64].copy_from_slice(&h.encode());
            img[at + 64..at + 164].copy_from_slice(&payload);
            offsets.push(at as u32);
            at += h.size();
        }
        let clean = scan_region(&img, nonce);
        assert_eq!(clean.entries.len(), 5);
        assert_eq!(clean.torn, 0);
        assert_eq!(clean.used, at as u32);
        // Wrong nonce: nothing belongs to this use of the region.
        assert!(scan_region(&img, nonce + 1).entries.is_empty());
        // Smash the second entry's header: the others survive.
        img[offsets[1] as usize + 10] ^= 0xFF;
        // Corrupt the fourth entry's payload.
        img[offsets[3] as usize + 70] ^= 0xFF;
        let hurt = scan_region(&img, nonce);
        let found: Vec<u32> = hurt.entries.iter().map(|s| s.offset).collect();
        assert_eq!(found, vec![offsets[0], offsets[2], offsets[4]]);
        assert_eq!(hurt.torn, 2);
    }

    #[test]
    fn inconsistent_fields_are_rejected() {
        let mut k = EntryKey::meta(ObjectId(1));
        k.offset = 5;
        let enc = EntryHeader::new(k, 1, b"m").encode();
        assert_eq!(EntryHeader::decode(&enc), Err(HeaderError::Inconsistent));
    }

    proptest! {
        // A committed seed: CI explores the same 4096 inputs every run, and a
        // failure reproduces exactly. Change the seed to explore further.
        #![proptest_config(ProptestConfig {
            cases: 4096,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5EED_E47E),
            ..ProptestConfig::default()
        })]

        #[test]
        fn header_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = EntryHeader::decode(&bytes);
            let _ = RegionHeader::decode(&bytes);
            let _ = verify_entry(&bytes, &key());
        }

        #[test]
        fn valid_crc_with_arbitrary_fields_never_panics(fields in proptest::collection::vec(any::<u8>(), 56)) {
            let mut b = [0u8; 64];
            b[..4].copy_from_slice(&ENTRY_MAGIC);
            b[4..60].copy_from_slice(&fields);
            let crc = crc32c::crc32c(&b[..60]);
            b[60..].copy_from_slice(&crc.to_le_bytes());
            if let Ok(h) = EntryHeader::decode(&b) {
                prop_assert_eq!(&h.encode()[8..], &b[8..]);
                let _ = h.size();
            }
            let _ = verify_entry(&b, &key());
        }

        #[test]
        fn scan_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..3000), nonce in any::<u64>()) {
            let out = scan_region(&bytes, nonce);
            prop_assert!(out.used as usize <= bytes.len().max(REGION_HEADER_LEN));
        }
    }
}
