//! Finding the raw disks an agent may use when the SliceCache names them by
//! `deviceFilter` or `useAllDevices` instead of by path.
//!
//! Discovery reads sysfs and the mount table only; it never opens a device.
//! A disk is refused when it is mounted, has partitions or holders (LVM, RAID,
//! dm-crypt), is read-only, or is used as swap; each refusal is logged with
//! its reason. The store itself then refuses any candidate that carries a
//! foreign signature when it opens it.

use std::fmt;
use std::path::{Path, PathBuf};

use regex::Regex;

/// A whole disk that passed discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Kernel name, e.g. `nvme0n1`.
    pub name: String,
    /// Device node, e.g. `/dev/nvme0n1`.
    pub path: PathBuf,
    pub size_bytes: u64,
}

/// Why a disk was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotMatched,
    Virtual,
    Mounted,
    Swap,
    Partitioned(Vec<String>),
    HasHolders(Vec<String>),
    ReadOnly,
    Empty,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotMatched => write!(f, "does not match deviceFilter"),
            Self::Virtual => write!(
                f,
                "virtual device (loop, ram, zram, dm, md, nbd, optical); name it in deviceFilter to use it anyway"
            ),
            Self::Mounted => write!(f, "mounted (it or one of its partitions)"),
            Self::Swap => write!(f, "used as swap"),
            Self::Partitioned(p) => write!(f, "has partitions: {}", p.join(", ")),
            Self::HasHolders(h) => write!(f, "in use by {} (LVM, RAID or dm-crypt)", h.join(", ")),
            Self::ReadOnly => write!(f, "read-only"),
            Self::Empty => write!(f, "size 0 (no medium)"),
        }
    }
}

/// The system views discovery reads; tests point them at a fake tree.
#[derive(Clone, Debug)]
pub struct SystemView {
    /// Usually `/sys/block`.
    pub sys_block: PathBuf,
    /// Contents of `/proc/self/mountinfo`.
    pub mountinfo: String,
    /// Contents of `/proc/swaps`.
    pub swaps: String,
    /// Where device nodes live, usually `/dev`.
    pub dev: PathBuf,
}

impl SystemView {
    /// The running system's view.
    pub fn live() -> Self {
        Self {
            sys_block: PathBuf::from("/sys/block"),
            mountinfo: std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            swaps: std::fs::read_to_string("/proc/swaps").unwrap_or_default(),
            dev: PathBuf::from("/dev"),
        }
    }
}

/// Which disks to consider.
#[derive(Clone, Debug)]
pub enum Selector {
    Filter(Regex),
    All,
}

/// Lists candidate disks and the refused ones with their reasons.
pub fn discover(view: &SystemView, selector: &Selector) -> (Vec<Candidate>, Vec<(String, Refusal)>) {
    let mut names: Vec<String> = std::fs::read_dir(&view.sys_block)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mounted = mounted_devices(&view.mountinfo);
    let mut taken = Vec::new();
    let mut refused = Vec::new();
    for name in names {
        match check(view, &name, selector, &mounted) {
            Ok(size_bytes) => taken.push(Candidate {
                path: view.dev.join(&name),
                name,
                size_bytes,
            }),
            Err(Refusal::NotMatched) => {}
            Err(reason) => refused.push((name, reason)),
        }
    }
    (taken, refused)
}

fn check(view: &SystemView, name: &str, selector: &Selector, mounted: &[String]) -> Result<u64, Refusal> {
    match selector {
        Selector::Filter(re) if !re.is_match(name) => return Err(Refusal::NotMatched),
        Selector::All if is_virtual(name) => return Err(Refusal::Virtual),
        _ => {}
    }
    let dir = view.sys_block.join(name);
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let dev_ids = |d: &Path| read(&d.join("dev"));
    let partitions: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().join("partition").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let mut ids = vec![dev_ids(&dir)];
    ids.extend(partitions.iter().map(|p| dev_ids(&dir.join(p))));
    if ids.iter().any(|id| !id.is_empty() && mounted.contains(id)) {
        return Err(Refusal::Mounted);
    }
    let dev_path = view.dev.join(name);
    let in_swaps = |n: &str| {
        view.swaps
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some(n))
    };
    if in_swaps(&dev_path.to_string_lossy()) || partitions.iter().any(|p| in_swaps(&view.dev.join(p).to_string_lossy()))
    {
        return Err(Refusal::Swap);
    }
    if !partitions.is_empty() {
        let mut p = partitions;
        p.sort();
        return Err(Refusal::Partitioned(p));
    }
    let holders: Vec<String> = std::fs::read_dir(dir.join("holders"))
        .map(|e| {
            e.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if !holders.is_empty() {
        return Err(Refusal::HasHolders(holders));
    }
    if read(&dir.join("ro")) == "1" {
        return Err(Refusal::ReadOnly);
    }
    let sectors: u64 = read(&dir.join("size")).parse().unwrap_or(0);
    if sectors == 0 {
        return Err(Refusal::Empty);
    }
    // sysfs counts 512-byte sectors whatever the logical block size.
    Ok(sectors * 512)
}

fn is_virtual(name: &str) -> bool {
    ["loop", "ram", "zram", "dm-", "md", "nbd", "sr", "fd"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// `major:minor` of every mounted block device (field 3 of mountinfo).
fn mounted_devices(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeSys(tempfile::TempDir);

    impl FakeSys {
        fn new() -> Self {
            Self(tempfile::tempdir().expect("tempdir"))
        }

        fn disk(&self, name: &str, dev: &str, sectors: u64) -> PathBuf {
            let d = self.0.path().join(name);
            std::fs::create_dir_all(d.join("holders")).expect("mkdir");
            std::fs::write(d.join("dev"), dev).expect("write");
            std::fs::write(d.join("size"), sectors.to_string()).expect("write");
            std::fs::write(d.join("ro"), "0").expect("write");
            d
        }

        fn view(&self, mountinfo: &str, swaps: &str) -> SystemView {
            SystemView {
                sys_block: self.0.path().to_path_buf(),
                mountinfo: mountinfo.into(),
                swaps: swaps.into(),
                dev: PathBuf::from("/dev"),
            }
        }
    }

    #[test]
    fn takes_unused_disks_and_refuses_the_rest_with_reasons() {
        let sys = FakeSys::new();
        sys.disk("nvme0n1", "259:0", 2048);
        let sda = sys.disk("sda", "8:0", 4096);
        std::fs::create_dir_all(sda.join("sda1")).expect("mkdir");
        std::fs::write(sda.join("sda1/partition"), "1").expect("write");
        std::fs::write(sda.join("sda1/dev"), "8:1").expect("write");
        sys.disk("nvme1n1", "259:1", 2048);
        let held = sys.disk("nvme2n1", "259:2", 2048);
        std::fs::create_dir_all(held.join("holders/dm-0")).expect("mkdir");
        let ro = sys.disk("nvme3n1", "259:3", 2048);
        std::fs::write(ro.join("ro"), "1").expect("write");
        sys.disk("nvme4n1", "259:4", 2048);
        sys.disk("loop0", "7:0", 2048);
        let mountinfo = "22 1 259:1 / /data rw - ext4 /dev/nvme1n1 rw\n";
        let swaps = "Filename Type Size Used Priority\n/dev/nvme4n1 partition 1 0 -2\n";
        let view = sys.view(mountinfo, swaps);

        let (taken, refused) = discover(&view, &Selector::All);
        assert_eq!(
            taken,
            vec![Candidate {
                name: "nvme0n1".into(),
                path: PathBuf::from("/dev/nvme0n1"),
                size_bytes: 2048 * 512
            }]
        );
        let reason = |n: &str| refused.iter().find(|(name, _)| name == n).map(|(_, r)| r.clone());
        assert_eq!(reason("sda"), Some(Refusal::Partitioned(vec!["sda1".into()])));
        assert_eq!(reason("nvme1n1"), Some(Refusal::Mounted));
        assert_eq!(reason("nvme2n1"), Some(Refusal::HasHolders(vec!["dm-0".into()])));
        assert_eq!(reason("nvme3n1"), Some(Refusal::ReadOnly));
        assert_eq!(reason("nvme4n1"), Some(Refusal::Swap));
        assert_eq!(reason("loop0"), Some(Refusal::Virtual));

        let filter = Selector::Filter(Regex::new("^loop").expect("regex"));
        let (taken, refused) = discover(&view, &filter);
        assert_eq!(taken.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), vec!["loop0"]);
        assert!(refused.is_empty(), "{refused:?}");
    }

    #[test]
    fn a_partition_mount_refuses_the_whole_disk() {
        let sys = FakeSys::new();
        let sdb = sys.disk("sdb", "8:16", 4096);
        std::fs::create_dir_all(sdb.join("sdb1")).expect("mkdir");
        std::fs::write(sdb.join("sdb1/partition"), "1").expect("write");
        std::fs::write(sdb.join("sdb1/dev"), "8:17").expect("write");
        let view = sys.view("30 1 8:17 / /boot rw - vfat /dev/sdb1 rw\n", "");
        let (taken, refused) = discover(&view, &Selector::All);
        assert!(taken.is_empty());
        assert_eq!(refused, vec![("sdb".to_string(), Refusal::Mounted)]);
    }
}
