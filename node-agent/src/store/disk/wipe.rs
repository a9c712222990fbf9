//! Releasing a device: erasing the slicecache superblock and checkpoint so
//! that the device reads as blank again (`slicecache-agent wipe`, run by the
//! operator's cleanup Jobs when a SliceCache is deleted with the wipe
//! confirmation).
//!
//! Only a device that carries the slicecache magic is touched. A blank device
//! is left alone and a device with anyone else's signature is refused, so a
//! wrong path in a config can never destroy foreign data.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::superblock::{probe, Probe, PROBE_LEN, RESERVED_LEN};
use super::DiskError;

/// What a wipe did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WipeOutcome {
    /// The slicecache superblock (and checkpoint) were erased.
    Erased { bytes: u64 },
    /// Nothing to do: the device is already blank.
    AlreadyBlank,
}

/// Erases the slicecache metadata on `path`, or refuses a foreign device.
pub fn wipe(path: &Path) -> Result<WipeOutcome, DiskError> {
    let io = |source: std::io::Error| DiskError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut dev = OpenOptions::new().read(true).write(true).open(path).map_err(io)?;
    let mut head = vec![0u8; PROBE_LEN];
    let mut filled = 0;
    while filled < head.len() {
        match dev.read(&mut head[filled..]).map_err(io)? {
            0 => break,
            n => filled += n,
        }
    }
    let erase_len = match probe(&head) {
        Probe::Foreign(found) => {
            return Err(DiskError::Foreign {
                path: path.to_path_buf(),
                found,
            })
        }
        Probe::Blank => return Ok(WipeOutcome::AlreadyBlank),
        Probe::Owned(sb) => sb.geometry.checkpoint_offset + sb.geometry.checkpoint_len,
        // Ours but unreadable: the reserved area holds every copy of it.
        Probe::Damaged(_) => RESERVED_LEN,
    };
    let zeros = vec![0u8; 1 << 20];
    dev.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut left = erase_len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        dev.write_all(&zeros[..n]).map_err(io)?;
        left -= n as u64;
    }
    dev.sync_all().map_err(io)?;
    Ok(WipeOutcome::Erased { bytes: erase_len })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::disk::{DiskOptions, DiskStore};

    #[test]
    fn erases_ours_skips_blank_and_refuses_foreign() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dev");
        let mut opts = DiskOptions::new(&path);
        opts.size = Some(64 << 20);
        opts.region_size = 1 << 20;
        let store = DiskStore::open(opts.clone(), &prometheus::Registry::new()).expect("format");
        drop(store);
        assert!(matches!(wipe(&path), Ok(WipeOutcome::Erased { .. })));
        assert_eq!(wipe(&path).expect("blank"), WipeOutcome::AlreadyBlank);
        // A wiped device formats afresh.
        DiskStore::open(opts, &prometheus::Registry::new()).expect("reformat");

        let foreign = dir.path().join("ext4");
        let mut bytes = vec![0u8; 1 << 20];
        bytes[0x438] = 0x53;
        bytes[0x439] = 0xEF;
        std::fs::write(&foreign, &bytes).expect("write");
        assert!(matches!(wipe(&foreign), Err(DiskError::Foreign { .. })));
        assert_eq!(
            std::fs::read(&foreign).expect("read"),
            bytes,
            "a foreign device is never written"
        );
    }
}
