//! A file in a tmpfs of the agent's own, mounted with `huge=always`, so
//! that the memory arena gets 2 MiB pages whatever the host's
//! `shmem_enabled` says.
//!
//! The host's shmem policy (`/sys/kernel/mm/transparent_hugepage/
//! shmem_enabled`, `never` by default) governs memfds and the kernel's
//! internal shared-memory mount only; a tmpfs mount carries its own `huge=`
//! option, which only `deny` and `force` override. A hit on a base-page
//! memfd costs `sendfile` one page-cache lookup and one page reference per
//! 4 KiB; on a file of huge pages it costs one lookup per 2 MiB (see
//! `docs/benchmarks.md`).
//!
//! The mount is made with the new mount API (`fsopen`, `fsconfig`,
//! `fsmount`), which returns a *detached* mount: it is attached to no mount
//! namespace, so nothing appears in the host's or the container's mount
//! table and nothing is left behind when the agent exits. The file is an
//! `O_TMPFILE` (it has no name), and the mount lives exactly as long as the
//! file is open. Making a mount needs `CAP_SYS_ADMIN` in the mount
//! namespace's user namespace: agents that run as root with their
//! capabilities (privileged agents with raw devices, the agent run by hand
//! as root) have it; others get an error here and the arena falls back to a
//! memfd, which follows the host's policy.
//!
//! The arena allocates pages by faulting each new block in through a
//! mapping that does not ask for huge pages (`MADV_HUGEPAGE`), so the
//! kernel uses the THP `defrag` setting's flags for such mappings: under
//! the kernel's default (`madvise`) it takes a free huge page when it has
//! one and otherwise falls back to base pages at once, without stalling the
//! fill to compact memory.

use std::fs::File;

use rustix::fs::{Mode, OFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

/// Creates an unnamed, empty file of `size` bytes in a new private tmpfs
/// that gives it huge pages, limited to `limit` bytes of memory.
pub fn huge_page_file(size: u64, limit: u64) -> std::io::Result<File> {
    use rustix::mount::{fsconfig_create, fsconfig_set_string, fsmount, fsopen};

    let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_set_string(&fs, "huge", "always")?;
    fsconfig_set_string(&fs, "size", limit.to_string())?;
    fsconfig_set_string(&fs, "mode", "0700")?;
    fsconfig_create(&fs)?;
    let attrs =
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    let mount = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
    let fd = rustix::fs::openat(
        &mount,
        ".",
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    )?;
    rustix::fs::ftruncate(&fd, size)?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    /// Only a process allowed to mount can make the file; the arena's own
    /// tests check which kind it got.
    fn may_mount() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn the_file_reads_back_what_was_written_and_appears_in_no_mount_table() {
        if !may_mount() {
            eprintln!("skipped: mounting a tmpfs needs CAP_SYS_ADMIN");
            return;
        }
        let before = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let file = huge_page_file(8 << 20, 8 << 20).expect("a tmpfs file");
        assert_eq!(file.metadata().expect("stat").len(), 8 << 20);
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 249) as u8).collect();
        file.write_all_at(&data, 4096).expect("write");
        let mut back = vec![0; data.len()];
        file.read_exact_at(&mut back, 4096).expect("read");
        assert_eq!(back, data);
        let after = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert_eq!(before, after, "the mount is detached");
    }

    #[test]
    fn the_memory_limit_holds() {
        if !may_mount() {
            eprintln!("skipped: mounting a tmpfs needs CAP_SYS_ADMIN");
            return;
        }
        let file = huge_page_file(8 << 20, 4 << 20).expect("a tmpfs file");
        let err = file
            .write_all_at(&vec![7u8; 6 << 20], 0)
            .expect_err("more than the limit");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    }
}
