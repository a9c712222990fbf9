//! `spec.cache`: the memory tier and the disk tier, whose storage is of the
//! node (devices by path, filter or all; a host file) or of the pod (a file
//! in an emptyDir, a raw block volume claim), never both.

use std::collections::BTreeSet;

use regex::RegexBuilder;

use super::{
    error::ValidationError,
    model::{BlockVolume, Cache, DeviceSelection, HostPathFile, Slicing, Tuning},
};
use crate::{
    agent_config::{CacheConfig, FormatPolicy, Tunables},
    spec::{SliceCacheSpec, TuningMode},
    units::ByteSize,
};

/// Smallest file-backed device.
pub const MIN_HOST_PATH_FILE_SIZE: u64 = 64 << 20;
/// Largest compiled `deviceFilter`, in bytes of regex program.
const DEVICE_FILTER_SIZE_LIMIT: usize = 1 << 20;

pub(super) fn validate(
    spec: &SliceCacheSpec,
    slicing: &Slicing,
    tuning: &Tuning,
    errors: &mut Vec<ValidationError>,
) -> Cache {
    let c = spec.cache.clone().unwrap_or_default();
    let defaults = CacheConfig::default();
    let tunable_defaults = Tunables::default();

    let memory = c.memory.unwrap_or(defaults.memory);
    // L1 must hold at least the largest slice that can be in force.
    let (min_field, largest_slice) = if tuning.mode == TuningMode::Auto {
        ("spec.tuning.maxSliceSize", tuning.max_slice_size)
    } else {
        ("spec.slicing.sliceSize", slicing.slice_size)
    };
    if memory.bytes() < largest_slice {
        errors.push(ValidationError::MemoryBelowSlice {
            field: "spec.cache.memory",
            value: memory,
            min_field,
            min: ByteSize(largest_slice),
        });
    }

    let disk = c.disk.unwrap_or_default();
    let mut selected = Vec::new();
    if !disk.devices.is_empty() {
        selected.push("devices");
    }
    if disk.device_filter.is_some() {
        selected.push("deviceFilter");
    }
    if disk.use_all_devices == Some(true) {
        selected.push("useAllDevices");
    }
    if selected.len() > 1 {
        errors.push(ValidationError::ConflictingDeviceSelection {
            field: "spec.cache.disk",
            fields: selected,
        });
    }

    let mut seen = BTreeSet::new();
    for path in &disk.devices {
        if !is_device_path(path) {
            errors.push(ValidationError::InvalidDevicePath {
                field: "spec.cache.disk.devices",
                value: path.clone(),
            });
        } else if !seen.insert(path.as_str()) {
            errors.push(ValidationError::DuplicateDevice {
                field: "spec.cache.disk.devices",
                value: path.clone(),
            });
        }
    }

    let filter = disk.device_filter.as_ref().and_then(|f| {
        if f.is_empty() {
            errors.push(ValidationError::Empty {
                field: "spec.cache.disk.deviceFilter",
            });
            return None;
        }
        RegexBuilder::new(f)
            .size_limit(DEVICE_FILTER_SIZE_LIMIT)
            .build()
            .map_err(|e| {
                errors.push(ValidationError::InvalidDeviceFilter {
                    field: "spec.cache.disk.deviceFilter",
                    value: f.clone(),
                    problem: regex_problem(&e),
                })
            })
            .ok()
    });

    let devices = if !disk.devices.is_empty() {
        DeviceSelection::Paths(disk.devices.clone())
    } else if let Some(filter) = filter {
        DeviceSelection::Filter(filter)
    } else if disk.use_all_devices == Some(true) {
        DeviceSelection::All
    } else {
        DeviceSelection::None
    };

    if disk.format == Some(FormatPolicy::Overwrite) {
        let discovery = match devices {
            DeviceSelection::Filter(_) => Some("deviceFilter"),
            DeviceSelection::All => Some("useAllDevices"),
            DeviceSelection::Paths(_) | DeviceSelection::None => None,
        };
        if let Some(selection) = discovery {
            errors.push(ValidationError::OverwriteWithDiscovery {
                field: "spec.cache.disk.format",
                selection,
            });
        }
    }

    let host_path_file = disk.host_path_file.as_ref().map(|f| {
        if !is_file_path(&f.path) {
            errors.push(ValidationError::InvalidHostPath {
                field: "spec.cache.disk.hostPathFile.path",
                value: f.path.clone(),
            });
        } else if seen.contains(f.path.as_str()) {
            errors.push(ValidationError::DuplicateDevice {
                field: "spec.cache.disk.hostPathFile.path",
                value: f.path.clone(),
            });
        }
        if f.size.bytes() < MIN_HOST_PATH_FILE_SIZE {
            errors.push(ValidationError::SizeTooSmall {
                field: "spec.cache.disk.hostPathFile.size",
                value: f.size,
                min: ByteSize(MIN_HOST_PATH_FILE_SIZE),
            });
        }
        HostPathFile {
            path: f.path.clone(),
            size: f.size.bytes(),
        }
    });

    let pod_storage_size = |errors: &mut Vec<ValidationError>, field: &'static str, size: ByteSize| {
        if size.bytes() < MIN_HOST_PATH_FILE_SIZE {
            errors.push(ValidationError::SizeTooSmall {
                field,
                value: size,
                min: ByteSize(MIN_HOST_PATH_FILE_SIZE),
            });
        }
        size.bytes()
    };
    let empty_dir_file = disk
        .empty_dir_file
        .as_ref()
        .map(|f| pod_storage_size(errors, "spec.cache.disk.emptyDirFile.size", f.size));
    let block_volume = disk.volume_claim_template.as_ref().map(|t| {
        if t.storage_class_name.as_deref().is_some_and(|c| c.trim().is_empty()) {
            errors.push(ValidationError::Empty {
                field: "spec.cache.disk.volumeClaimTemplate.storageClassName",
            });
        }
        BlockVolume {
            storage_class_name: t.storage_class_name.clone(),
            size: pod_storage_size(errors, "spec.cache.disk.volumeClaimTemplate.size", t.size),
        }
    });
    // A wipe on delete erases the node's devices with the pod's own mounts;
    // storage of the pod goes with its pods, so the two do not mix.
    let pod = if disk.empty_dir_file.is_some() {
        Some("emptyDirFile")
    } else if disk.volume_claim_template.is_some() {
        Some("volumeClaimTemplate")
    } else {
        None
    };
    if let (Some(pod), Some(node)) = (pod, node_storage_fields(&disk).first()) {
        errors.push(ValidationError::PodAndNodeStorage {
            field: "spec.cache.disk",
            pod,
            node: node.1,
        });
    }

    let ttl = c.ttl.unwrap_or_default();
    Cache {
        memory: memory.bytes(),
        devices,
        host_path_file,
        empty_dir_file,
        block_volume,
        format: disk.format.unwrap_or_default(),
        default_ttl: ttl.default.unwrap_or(tunable_defaults.default_ttl),
        honor_origin_cache_control: ttl
            .honor_origin_cache_control
            .unwrap_or(tunable_defaults.honor_origin_cache_control),
    }
}

/// The node storage fields set in `disk`, as `(field path, field name)`.
pub(super) fn node_storage_fields(disk: &crate::spec::DiskSpec) -> Vec<(&'static str, &'static str)> {
    let mut found = Vec::new();
    if !disk.devices.is_empty() {
        found.push(("spec.cache.disk.devices", "devices"));
    }
    if disk.device_filter.is_some() {
        found.push(("spec.cache.disk.deviceFilter", "deviceFilter"));
    }
    if disk.use_all_devices == Some(true) {
        found.push(("spec.cache.disk.useAllDevices", "useAllDevices"));
    }
    if disk.host_path_file.is_some() {
        found.push(("spec.cache.disk.hostPathFile", "hostPathFile"));
    }
    found
}

fn is_device_path(path: &str) -> bool {
    path.starts_with("/dev/")
        && path.len() > "/dev/".len()
        && !path.ends_with('/')
        && !path.chars().any(char::is_whitespace)
        && !path.split('/').any(|c| c == "..")
}

fn is_file_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() > 1
        && !path.ends_with('/')
        && !path.chars().any(char::is_whitespace)
        && !path.split('/').any(|c| c == "..")
}

/// The one-line summary of a regex error; the full text spans lines with a caret diagram.
fn regex_problem(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or(&text)
        .trim_start_matches("error: ")
        .to_string()
}
