//! Proof that a device is blank before the agent formats it.
//!
//! [`super::superblock::probe`] looks at the first 72 KiB: enough to know our
//! own superblock and the common signatures at the start of a device. But
//! much metadata lives at the end (GPT's backup header, Linux RAID 0.90 and
//! 1.0 superblocks, ZFS labels L2 and L3), and a disk whose start was zeroed
//! may still hold data. So before a device the head calls blank is
//! formatted, this module also requires:
//! - the first and the last MiB all zero (the known end-of-device
//!   signatures are named when found),
//! - [`SAMPLES`] blocks of 4 KiB spread evenly over the rest all zero,
//! - and, where the system has `blkid`, that `blkid -p` (the low-level
//!   probe Rook also relies on) finds no filesystem or partition table.
//!
//! Any hit refuses the device with what was found and where; nothing is
//! written. A device the user named with `format: Overwrite` skips all of
//! this (see `FormatPolicy`).

use std::path::Path;
use std::process::Command;

use super::aligned::{align_down, AlignedBuf};
use super::io::Device;
use super::superblock::Signature;

/// Bytes checked whole at each end of the device.
pub const EDGE: u64 = 1 << 20;
/// Blocks sampled between the two ends.
pub const SAMPLES: u64 = 1024;
const SAMPLE_LEN: usize = 4096;

/// Linux RAID superblock magic (`MD_SB_MAGIC`), little-endian on disk.
const MD_MAGIC: u32 = 0xa92b_4efc;
/// ZFS uberblock magic, little-endian on disk.
const ZFS_UBERBLOCK_MAGIC: u64 = 0x00ba_b10c;

/// `Ok(())` when the device is blank everywhere checked; otherwise the
/// first thing found. Blocking (device reads, perhaps a `blkid` run).
pub fn confirm_blank(dev: &Device) -> std::io::Result<Result<(), Signature>> {
    let size = align_down(dev.size(), SAMPLE_LEN as u64);
    let head_len = size.min(EDGE);
    let mut head = AlignedBuf::zeroed(head_len as usize);
    dev.read_at(head.as_mut_slice(), 0)?;
    if let Some(at) = first_nonzero(head.as_slice()) {
        return Ok(Err(Signature::NonZero { first_nonzero: at }));
    }
    let tail_start = size.saturating_sub(EDGE).max(head_len);
    if tail_start < size {
        let mut tail = AlignedBuf::zeroed((size - tail_start) as usize);
        dev.read_at(tail.as_mut_slice(), tail_start)?;
        if let Some(found) = end_signature(tail.as_slice(), tail_start, dev.size()) {
            return Ok(Err(found));
        }
        if let Some(at) = first_nonzero(tail.as_slice()) {
            return Ok(Err(Signature::NonZero {
                first_nonzero: tail_start + at,
            }));
        }
    }
    let middle = head_len..tail_start;
    if middle.end > middle.start + SAMPLE_LEN as u64 {
        let span = middle.end - middle.start - SAMPLE_LEN as u64;
        let mut block = AlignedBuf::zeroed(SAMPLE_LEN);
        for i in 0..SAMPLES {
            let at = middle.start + align_down(span / (SAMPLES - 1) * i, SAMPLE_LEN as u64);
            dev.read_at(block.as_mut_slice(), at)?;
            if let Some(off) = first_nonzero(block.as_slice()) {
                return Ok(Err(Signature::NonZero {
                    first_nonzero: at + off,
                }));
            }
        }
    }
    Ok(blkid_probe(dev.path()).map_or(Ok(()), Err))
}

/// Known metadata in the device's last bytes; `tail` starts at byte
/// `tail_start` of a device of `device_size` bytes.
fn end_signature(tail: &[u8], tail_start: u64, device_size: u64) -> Option<Signature> {
    let at = |offset: u64| -> Option<&[u8]> {
        let start = usize::try_from(offset.checked_sub(tail_start)?).ok()?;
        tail.get(start..)
    };
    // GPT's backup header sits in the last logical block (512 B or 4 KiB).
    for block in [512u64, 4096] {
        if let Some(pos) = device_size.checked_sub(block) {
            if at(pos).is_some_and(|b| b.starts_with(b"EFI PART")) {
                return Some(Signature::GptBackup { at: pos });
            }
        }
    }
    let md = |pos: u64| at(pos).and_then(|b| b.get(..4)) == Some(&MD_MAGIC.to_le_bytes()[..]);
    // 0.90: 64 KiB-aligned, 64 KiB before the end; 1.0: 8 KiB before the end, 4 KiB-aligned.
    if let Some(pos) = (device_size & !0xffff).checked_sub(0x10000) {
        if md(pos) {
            return Some(Signature::MdRaid {
                version: "0.90",
                at: pos,
            });
        }
    }
    if let Some(pos) = device_size.checked_sub(8192).map(|p| p & !0xfff) {
        if md(pos) {
            return Some(Signature::MdRaid {
                version: "1.0",
                at: pos,
            });
        }
    }
    // ZFS labels L2 and L3 (256 KiB each) hold uberblocks in their second half.
    let magic = ZFS_UBERBLOCK_MAGIC.to_le_bytes();
    let magic_be = ZFS_UBERBLOCK_MAGIC.to_be_bytes();
    (0..tail.len() / 1024)
        .map(|k| k * 1024)
        .find(|&off| matches!(tail.get(off..off + 8), Some(b) if b == magic || b == magic_be))
        .map(|off| Signature::Zfs {
            at: tail_start + off as u64,
        })
}

/// What `blkid -p` finds on `path`, if the system has `blkid` and it finds
/// anything. Exit status 2 means it found nothing.
fn blkid_probe(path: &Path) -> Option<Signature> {
    let out = Command::new("blkid")
        .arg("-p")
        .arg("-o")
        .arg("export")
        .arg(path)
        .output()
        .ok()?;
    if out.status.code() == Some(2) || !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_string)
    };
    match (field("TYPE"), field("PTTYPE")) {
        (Some(t), _) => Some(Signature::Blkid(format!("a {t} signature"))),
        (None, Some(p)) => Some(Signature::Blkid(format!("a {p} partition table"))),
        (None, None) => None,
    }
}

fn first_nonzero(b: &[u8]) -> Option<u64> {
    b.iter().position(|&x| x != 0).map(|i| i as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    const SIZE: u64 = 64 << 20;

    fn device_with(writes: &[(u64, &[u8])]) -> (tempfile::TempDir, Device) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dev.img");
        let f = std::fs::File::create(&path).expect("create");
        f.set_len(SIZE).expect("size");
        for (at, bytes) in writes {
            f.write_all_at(bytes, *at).expect("write");
        }
        drop(f);
        let dev = Device::open(&path, None).expect("open");
        (dir, dev)
    }

    #[test]
    fn a_blank_device_passes() {
        let (_dir, dev) = device_with(&[]);
        assert_eq!(confirm_blank(&dev).expect("io"), Ok(()));
    }

    #[test]
    fn end_of_device_metadata_is_found_and_named() {
        let md = MD_MAGIC.to_le_bytes();
        let zfs = ZFS_UBERBLOCK_MAGIC.to_le_bytes();
        let cases: [(u64, &[u8], Signature); 4] = [
            (SIZE - 512, b"EFI PART", Signature::GptBackup { at: SIZE - 512 }),
            (
                SIZE - 0x10000,
                &md,
                Signature::MdRaid {
                    version: "0.90",
                    at: SIZE - 0x10000,
                },
            ),
            (
                SIZE - 8192,
                &md,
                Signature::MdRaid {
                    version: "1.0",
                    at: SIZE - 8192,
                },
            ),
            (
                SIZE - (256 << 10) + (128 << 10),
                &zfs,
                Signature::Zfs { at: SIZE - (128 << 10) },
            ),
        ];
        for (at, bytes, want) in cases {
            let (_dir, dev) = device_with(&[(at, bytes)]);
            assert_eq!(confirm_blank(&dev).expect("io"), Err(want.clone()), "{want}");
        }
    }

    #[test]
    fn data_past_the_first_64k_or_in_the_middle_is_found() {
        let (_dir, dev) = device_with(&[(68 << 10, b"x")]);
        assert_eq!(
            confirm_blank(&dev).expect("io"),
            Err(Signature::NonZero {
                first_nonzero: 68 << 10
            })
        );
        // A sample lands on every 4 KiB block at a multiple of the stride.
        let stride = (SIZE - 2 * EDGE - SAMPLE_LEN as u64) / (SAMPLES - 1);
        let at = EDGE + align_down(stride * 500, SAMPLE_LEN as u64) + 100;
        let (_dir, dev) = device_with(&[(at, b"y")]);
        assert_eq!(
            confirm_blank(&dev).expect("io"),
            Err(Signature::NonZero { first_nonzero: at })
        );
    }
}
