//! The superblock: proof that a device belongs to slicecache, and its geometry.
//!
//! The agent is pointed at whole block devices by path, so the most dangerous
//! thing it can do is format someone else's disk. This module decides, from the
//! first bytes of a device, whether it is ours ([`Probe::Owned`]), blank
//! ([`Probe::Blank`]) or foreign ([`Probe::Foreign`], naming the signature it
//! found), and encodes/decodes the 4 KiB superblock that records the layout
//! the rest of the store relies on. Decoding never panics on arbitrary bytes.

use std::fmt;

use super::aligned::{align_up, ALIGN};
use super::entry::{le_u32, le_u64};

/// Bytes 0..8 of a slicecache device.
pub const MAGIC: [u8; 8] = *b"SLCCACHE";
/// Bumped on any incompatible change of the on-disk format.
pub const FORMAT_VERSION: u32 = 1;
/// Written next to the magic so a human with `hexdump` knows who owns the disk.
pub const OWNER_MARKER: [u8; 32] = *b"slicecache.io/owned-device\0\0\0\0\0\0";
/// Size of the encoded superblock.
pub const SUPERBLOCK_LEN: usize = 4096;
/// Bytes at the start of the device reserved for the superblock; also the span
/// that must be all zero before we format a device without our magic.
pub const RESERVED_LEN: u64 = 64 * 1024;
/// How many bytes [`probe`] wants to look at (btrfs keeps its magic past 64 KiB).
pub const PROBE_LEN: usize = 72 * 1024;

const CRC_OFFSET: usize = SUPERBLOCK_LEN - 4;

/// Layout of a formatted device. All offsets are bytes from device start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub device_size: u64,
    pub region_size: u32,
    pub block_size: u32,
    pub region_count: u32,
    pub checkpoint_offset: u64,
    pub checkpoint_len: u64,
    pub data_offset: u64,
}

/// Smallest number of regions the write path works with: one head, one in
/// flight, one to reclaim.
pub const MIN_REGIONS: u32 = 3;

/// Why a device cannot be laid out with the asked region size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    #[error("region size {0} must be a multiple of 4096 between 64 KiB and 1 GiB")]
    RegionSize(u32),
    #[error(
        "device of {device_size} bytes holds {region_count} regions of {region_size} bytes \
         after {data_offset} bytes of superblock and checkpoint; need at least {MIN_REGIONS}"
    )]
    TooFewRegions {
        device_size: u64,
        region_count: u64,
        region_size: u32,
        data_offset: u64,
    },
    #[error("{0} regions is too many; use larger regions")]
    TooManyRegions(u64),
}

impl Geometry {
    /// Lays out a device of `device_size` bytes with regions of `region_size`.
    /// The checkpoint area gets 1/256 of the device (at least 1 MiB).
    pub fn plan(device_size: u64, region_size: u32) -> Result<Self, GeometryError> {
        if region_size < 64 * 1024 || !region_size.is_multiple_of(ALIGN as u32) || region_size > (1 << 30) {
            return Err(GeometryError::RegionSize(region_size));
        }
        let checkpoint_offset = RESERVED_LEN;
        let checkpoint_len = align_up((device_size / 256).max(1 << 20), ALIGN as u64);
        let data_offset = checkpoint_offset + checkpoint_len;
        let region_count = device_size.saturating_sub(data_offset) / u64::from(region_size);
        if region_count < u64::from(MIN_REGIONS) {
            return Err(GeometryError::TooFewRegions {
                device_size,
                region_count,
                region_size,
                data_offset,
            });
        }
        let region_count = u32::try_from(region_count).map_err(|_| GeometryError::TooManyRegions(region_count))?;
        Ok(Self {
            device_size,
            region_size,
            block_size: ALIGN as u32,
            region_count,
            checkpoint_offset,
            checkpoint_len,
            data_offset,
        })
    }

    /// Device offset of the first byte of `region`.
    pub fn region_offset(&self, region: u32) -> u64 {
        self.data_offset + u64::from(region) * u64::from(self.region_size)
    }

    /// Bytes available for entries.
    pub fn capacity(&self) -> u64 {
        u64::from(self.region_count) * u64::from(self.region_size)
    }
}

/// The decoded superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub uuid: u128,
    pub geometry: Geometry,
    pub created_unix: u64,
}

/// Why a superblock did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SuperblockError {
    #[error("no slicecache magic")]
    NoMagic,
    #[error("superblock checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("format version {0} is not supported (this agent reads version {FORMAT_VERSION})")]
    Version(u32),
    #[error("ownership marker missing")]
    Marker,
    #[error("inconsistent geometry: {0}")]
    Geometry(String),
    #[error("superblock is truncated")]
    Short,
}

fn u128_at(b: &[u8], at: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    u128::from_le_bytes(a)
}

impl Superblock {
    /// Byte layout (little endian), documented in docs/storage.md.
    pub fn encode(&self) -> [u8; SUPERBLOCK_LEN] {
        let g = &self.geometry;
        let mut b = [0u8; SUPERBLOCK_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(SUPERBLOCK_LEN as u32).to_le_bytes());
        b[16..32].copy_from_slice(&self.uuid.to_le_bytes());
        b[32..40].copy_from_slice(&g.device_size.to_le_bytes());
        b[40..44].copy_from_slice(&g.region_size.to_le_bytes());
        b[44..48].copy_from_slice(&g.block_size.to_le_bytes());
        b[48..52].copy_from_slice(&g.region_count.to_le_bytes());
        // 52..56 reserved
        b[56..64].copy_from_slice(&g.checkpoint_offset.to_le_bytes());
        b[64..72].copy_from_slice(&g.checkpoint_len.to_le_bytes());
        b[72..80].copy_from_slice(&g.data_offset.to_le_bytes());
        b[80..112].copy_from_slice(&OWNER_MARKER);
        b[112..120].copy_from_slice(&self.created_unix.to_le_bytes());
        let crc = crc32c::crc32c(&b[..CRC_OFFSET]);
        b[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and validates a superblock from the start of `b`.
    pub fn decode(b: &[u8]) -> Result<Self, SuperblockError> {
        if b.len() < 8 || b[0..8] != MAGIC {
            return Err(SuperblockError::NoMagic);
        }
        if b.len() < SUPERBLOCK_LEN {
            return Err(SuperblockError::Short);
        }
        let stored = le_u32(b, CRC_OFFSET);
        let computed = crc32c::crc32c(&b[..CRC_OFFSET]);
        if stored != computed {
            return Err(SuperblockError::Checksum { stored, computed });
        }
        let version = le_u32(b, 8);
        if version != FORMAT_VERSION {
            return Err(SuperblockError::Version(version));
        }
        if b[80..112] != OWNER_MARKER {
            return Err(SuperblockError::Marker);
        }
        let device_size = le_u64(b, 32);
        let region_size = le_u32(b, 40);
        let stored_geometry = Geometry {
            device_size,
            region_size,
            block_size: le_u32(b, 44),
            region_count: le_u32(b, 48),
            checkpoint_offset: le_u64(b, 56),
            checkpoint_len: le_u64(b, 64),
            data_offset: le_u64(b, 72),
        };
        // The layout is a pure function of size and region size; anything else
        // is corruption that slipped past the CRC or a foreign writer.
        let planned = Geometry::plan(device_size, region_size).map_err(|e| SuperblockError::Geometry(e.to_string()))?;
        if planned != stored_geometry {
            return Err(SuperblockError::Geometry(format!(
                "stored {stored_geometry:?} differs from the layout {planned:?}"
            )));
        }
        Ok(Self {
            uuid: u128_at(b, 16),
            geometry: stored_geometry,
            created_unix: le_u64(b, 112),
        })
    }
}

/// A foreign on-disk signature: found where a superblock would go, or
/// anywhere [`super::blank_check`] looks before formatting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signature {
    Ext4,
    Xfs,
    Btrfs,
    Lvm2,
    Gpt,
    Mbr,
    Swap,
    /// GPT's backup header in the device's last sector.
    GptBackup {
        at: u64,
    },
    /// A Linux software-RAID member (`0.90` or `1.0`: superblock at the end).
    MdRaid {
        version: &'static str,
        at: u64,
    },
    /// A ZFS label (L2/L3 sit in the device's last 512 KiB).
    Zfs {
        at: u64,
    },
    /// What the system's `blkid -p` reported (its TYPE or PTTYPE).
    Blkid(String),
    /// No known signature, but a non-zero byte where the device should be blank.
    NonZero {
        first_nonzero: u64,
    },
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ext4 => f.write_str("an ext2/3/4 filesystem (magic 0xEF53 at byte 0x438)"),
            Self::Xfs => f.write_str("an XFS filesystem (magic \"XFSB\" at byte 0)"),
            Self::Btrfs => f.write_str("a btrfs filesystem (magic \"_BHRfS_M\" at byte 0x10040)"),
            Self::Lvm2 => f.write_str("an LVM2 physical volume (label \"LABELONE\" at byte 512)"),
            Self::Gpt => f.write_str("a GPT partition table (\"EFI PART\" at byte 512)"),
            Self::Mbr => f.write_str("an MBR partition table (0x55AA at byte 510)"),
            Self::Swap => f.write_str("a swap area (\"SWAPSPACE2\" at byte 4086)"),
            Self::GptBackup { at } => write!(f, "a GPT backup header (\"EFI PART\" at byte {at}, near the end)"),
            Self::MdRaid { version, at } => write!(f, "a Linux RAID {version} superblock (at byte {at}, near the end)"),
            Self::Zfs { at } => write!(f, "a ZFS label (uberblock magic at byte {at}, near the end)"),
            Self::Blkid(what) => write!(f, "{what} (reported by blkid -p)"),
            Self::NonZero { first_nonzero } => write!(f, "unknown data (non-zero byte at offset {first_nonzero})"),
        }
    }
}

/// What the first bytes of a device say about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Carries a valid slicecache superblock.
    Owned(Superblock),
    /// Carries the slicecache magic but the superblock does not validate.
    Damaged(SuperblockError),
    /// All zero where signatures live: safe to format.
    Blank,
    /// Someone else's data.
    Foreign(Signature),
}

fn has(b: &[u8], at: usize, magic: &[u8]) -> bool {
    b.get(at..at + magic.len()) == Some(magic)
}

/// Classifies a device from its first bytes (ideally [`PROBE_LEN`] of them;
/// fewer on tiny devices).
pub fn probe(b: &[u8]) -> Probe {
    if has(b, 0, &MAGIC) {
        return match Superblock::decode(b) {
            Ok(sb) => Probe::Owned(sb),
            Err(e) => Probe::Damaged(e),
        };
    }
    let known = [
        (0x438, &[0x53u8, 0xEF][..], Signature::Ext4),
        (0, b"XFSB", Signature::Xfs),
        (0x10040, b"_BHRfS_M", Signature::Btrfs),
        (512, b"LABELONE", Signature::Lvm2),
        (512, b"EFI PART", Signature::Gpt),
        (4086, b"SWAPSPACE2", Signature::Swap),
        (510, &[0x55, 0xAA], Signature::Mbr),
    ];
    for (at, magic, sig) in known {
        if has(b, at, magic) {
            return Probe::Foreign(sig);
        }
    }
    let window = &b[..b.len().min(RESERVED_LEN as usize)];
    match window.iter().position(|&x| x != 0) {
        Some(i) => Probe::Foreign(Signature::NonZero {
            first_nonzero: i as u64,
        }),
        None => Probe::Blank,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Superblock {
        Superblock {
            uuid: 0x1234_5678_9abc_def0_1122_3344_5566_7788,
            geometry: Geometry::plan(64 << 20, 1 << 20).expect("plan"),
            created_unix: 1_700_000_000,
        }
    }

    #[test]
    fn round_trips() {
        let sb = sample();
        assert_eq!(Superblock::decode(&sb.encode()), Ok(sb));
        assert_eq!(probe(&sb.encode()), Probe::Owned(sb));
    }

    #[test]
    fn any_flipped_bit_is_rejected() {
        let enc = sample().encode();
        for byte in [0usize, 9, 20, 33, 41, 50, 60, 90, 113, 4000, 4093] {
            let mut b = enc;
            b[byte] ^= 0x10;
            assert!(Superblock::decode(&b).is_err(), "flip at {byte} accepted");
        }
    }

    #[test]
    fn recognises_foreign_signatures() {
        let mut b = vec![0u8; PROBE_LEN];
        assert_eq!(probe(&b), Probe::Blank);
        b[0x438] = 0x53;
        b[0x439] = 0xEF;
        assert_eq!(probe(&b), Probe::Foreign(Signature::Ext4));
        let mut b = vec![0u8; PROBE_LEN];
        b[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(probe(&b), Probe::Foreign(Signature::Gpt));
        let mut b = vec![0u8; PROBE_LEN];
        b[70_000] = 1; // outside the 64 KiB window: still blank
        assert_eq!(probe(&b), Probe::Blank);
        b[1000] = 7;
        assert_eq!(probe(&b), Probe::Foreign(Signature::NonZero { first_nonzero: 1000 }));
    }

    #[test]
    fn plan_rejects_tiny_devices_and_odd_regions() {
        assert!(Geometry::plan(1 << 20, 64 << 10).is_err());
        assert!(Geometry::plan(1 << 30, 65_000).is_err());
        let g = Geometry::plan(1 << 30, 16 << 20).expect("plan");
        assert_eq!(g.data_offset, RESERVED_LEN + (4 << 20));
        assert_eq!(g.region_count, ((1u64 << 30) - g.data_offset) as u32 / (16 << 20));
    }

    proptest! {
        // A committed seed: CI explores the same 4096 inputs every run, and a
        // failure reproduces exactly. Change the seed to explore further.
        #![proptest_config(ProptestConfig {
            cases: 4096,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5EED_5B10),
            ..ProptestConfig::default()
        })]

        #[test]
        fn decode_and_probe_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
            let _ = Superblock::decode(&bytes);
            let _ = probe(&bytes);
        }

        #[test]
        fn decode_never_panics_with_our_magic(mut bytes in proptest::collection::vec(any::<u8>(), 8..5000)) {
            bytes[..8].copy_from_slice(&MAGIC);
            let _ = Superblock::decode(&bytes);
        }

        #[test]
        fn valid_crc_with_arbitrary_fields_never_panics(fields in proptest::collection::vec(any::<u8>(), 120)) {
            let mut b = sample().encode();
            b[8..128].copy_from_slice(&fields);
            let crc = crc32c::crc32c(&b[..CRC_OFFSET]);
            b[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
            let _ = Superblock::decode(&b);
        }
    }
}
