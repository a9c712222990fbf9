//! Block devices for the node shim's Nodes, as an administrator provides
//! them: loop devices over sparse files ([`LoopDevice`]), plugged into a
//! Node's host directory at the path the node would show them
//! ([`NodeDevice`]), and offered to claims as `local` PersistentVolumes of
//! a StorageClass ([`LocalBlockVolumes`]) that kube-controller-manager's
//! binder binds. The shim then resolves a Pod's claim to its volume and
//! that volume's path on its Node to the loop device.
//!
//! The StorageClass has no provisioner (`kubernetes.io/no-provisioner`)
//! and binds claims at once (`Immediate`): there is no scheduler to wait
//! for, and each volume's node affinity then places the Pod.

use std::path::{Path, PathBuf};

use slicecache_api::quantity::parse_bytes;
use slicecache_testkit::loop_device::LoopDevice;

use crate::install::kubectl;
use crate::node_shim::NodeShim;

/// A loop device plugged into a Node at a host path (a symlink in the
/// Node's host directory); unplugged and detached on drop.
#[derive(Debug)]
pub struct NodeDevice {
    pub node: String,
    pub host_path: String,
    link: PathBuf,
    device: LoopDevice,
}

impl NodeDevice {
    /// Attaches a loop device over a sparse file of `size` bytes under
    /// `backing_dir` and shows it on `node` at `host_path`.
    pub fn plug(shim: &NodeShim, node: &str, host_path: &str, size: u64, backing_dir: &Path) -> Result<Self, String> {
        let file_name = format!("{node}{}.img", host_path.replace('/', "_"));
        let device = LoopDevice::attach(&backing_dir.join(file_name), size)?;
        let link = shim.host_path(node, host_path);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::os::unix::fs::symlink(device.path(), &link)
            .map_err(|e| format!("linking {} to {}: {e}", link.display(), device.path().display()))?;
        Ok(Self {
            node: node.to_string(),
            host_path: host_path.to_string(),
            link,
            device,
        })
    }

    /// The loop device, such as `/dev/loop3`.
    pub fn device(&self) -> &Path {
        self.device.path()
    }
}

impl Drop for NodeDevice {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
    }
}

/// A StorageClass and one Block-mode `local` PersistentVolume per Node,
/// each a [`NodeDevice`].
#[derive(Debug)]
pub struct LocalBlockVolumes {
    pub storage_class: String,
    /// `(PersistentVolume name, its device)`.
    pub volumes: Vec<(String, NodeDevice)>,
}

impl LocalBlockVolumes {
    /// Creates StorageClass `storage_class` and a volume of `size` (a
    /// quantity, such as `200Gi`) on each of `nodes`.
    pub fn provide(
        admin: &Path,
        shim: &NodeShim,
        storage_class: &str,
        nodes: &[String],
        size: &str,
        dir: &Path,
    ) -> Result<Self, String> {
        let bytes = parse_bytes(size).map_err(|e| format!("volume size {size:?}: {e}"))?;
        let mut manifest = format!(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: {storage_class}\n\
             provisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: Immediate\nreclaimPolicy: Retain\n"
        );
        let mut volumes = Vec::new();
        for node in nodes {
            let name = format!("{storage_class}-{node}");
            let host_path = format!("/dev/slicecache-e2e/{name}");
            let device = NodeDevice::plug(shim, node, &host_path, bytes, dir)?;
            manifest.push_str(&format!(
                "---\napiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: {name}\nspec:\n  \
                 capacity:\n    storage: {size}\n  volumeMode: Block\n  accessModes: [ReadWriteOnce]\n  \
                 persistentVolumeReclaimPolicy: Retain\n  storageClassName: {storage_class}\n  \
                 local:\n    path: {host_path}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n        \
                 - matchExpressions:\n            - key: kubernetes.io/hostname\n              operator: In\n              \
                 values: [{node}]\n"
            ));
            volumes.push((name, device));
        }
        let file = dir.join(format!("{storage_class}-volumes.yaml"));
        std::fs::write(&file, manifest).map_err(|e| format!("writing {}: {e}", file.display()))?;
        kubectl(admin, &["apply", "-f", &file.to_string_lossy()])?;
        Ok(Self {
            storage_class: storage_class.to_string(),
            volumes,
        })
    }
}
