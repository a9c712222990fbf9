//! Loop devices over sparse files: real block devices (O_DIRECT, O_EXCL,
//! a size from the kernel) for tests on machines without spare disks.
//! Attaching one needs root (`losetup`); [`LoopDevice::attach`] says why
//! when it cannot, and the device is detached when its guard drops.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// An attached loop device; detached on drop (the kernel finishes the
/// detach once the last opener closes it).
#[derive(Debug)]
pub struct LoopDevice {
    device: PathBuf,
    backing: PathBuf,
}

impl LoopDevice {
    /// Creates `backing` as a sparse file of `size` bytes (unless it exists)
    /// and attaches the first free loop device to it.
    pub fn attach(backing: &Path, size: u64) -> Result<Self, String> {
        if !backing.exists() {
            if let Some(parent) = backing.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            let file = std::fs::File::create(backing).map_err(|e| format!("creating {}: {e}", backing.display()))?;
            file.set_len(size)
                .map_err(|e| format!("sizing {} to {size} bytes: {e}", backing.display()))?;
        }
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(backing)
            .output()
            .map_err(|e| format!("running losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup --find --show {}: {} (it needs root)",
                backing.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let device = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Ok(Self {
            device,
            backing: backing.to_path_buf(),
        })
    }

    /// The device node, such as `/dev/loop3`.
    pub fn path(&self) -> &Path {
        &self.device
    }

    /// The sparse file behind it.
    pub fn backing(&self) -> &Path {
        &self.backing
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("--detach").arg(&self.device).status();
    }
}
