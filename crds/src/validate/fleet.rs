//! `spec.fleet`: whether the agents form one cache, its ownership granule
//! and the peer timeouts.

use super::{
    checks::{check_range, min_duration, positive_duration},
    error::ValidationError,
    model::{Fleet, Slicing, Tuning},
};
use crate::{
    agent_config::MIN_SLICE_SIZE,
    fleet_config::{FleetConfig, DEFAULT_GRANULE, MAX_GRANULE},
    spec::{FleetMode, SliceCacheSpec},
    units::{ByteSize, HumanDuration},
};

pub(super) fn validate(
    spec: &SliceCacheSpec,
    slicing: &Slicing,
    tuning: &Tuning,
    errors: &mut Vec<ValidationError>,
) -> Fleet {
    let f = spec.fleet.clone().unwrap_or_default();
    let defaults = FleetConfig::default();
    // The largest slice any agent may be told to use: the tuner's bound,
    // or the fixed slice size.
    let largest_slice = if tuning.is_active() {
        tuning.slice_size_bounds().1
    } else {
        slicing.slice_size()
    };
    let granule = match f.granule {
        Some(g) => {
            let v = g.bytes();
            if !(MIN_SLICE_SIZE..=MAX_GRANULE).contains(&v) {
                errors.push(ValidationError::SizeOutOfRange {
                    field: "spec.fleet.granule",
                    value: g,
                    min: ByteSize(MIN_SLICE_SIZE),
                    max: ByteSize(MAX_GRANULE),
                });
            } else if !v.is_power_of_two() {
                errors.push(ValidationError::NotPowerOfTwo {
                    field: "spec.fleet.granule",
                    value: g,
                });
            } else if v < largest_slice {
                errors.push(ValidationError::GranuleBelowSlice {
                    field: "spec.fleet.granule",
                    value: g,
                    slice: ByteSize(largest_slice),
                });
            }
            v
        }
        None => DEFAULT_GRANULE.bytes().max(largest_slice),
    };
    let replicas = match f.replicas {
        Some(r) if check_range(errors, "spec.fleet.replicas", i64::from(r), 1, 3) => r,
        _ => defaults.replicas,
    };
    let token_rotation = min_duration(
        errors,
        "spec.fleet.tokenRotation",
        f.token_rotation,
        HumanDuration::secs(24 * 3600),
        HumanDuration::secs(3600),
    );
    Fleet {
        replicas,
        token_rotation,
        mode: f.mode.unwrap_or_default(),
        granule,
        connect_timeout: positive_duration(
            errors,
            "spec.fleet.connectTimeout",
            f.connect_timeout,
            defaults.connect_timeout,
        ),
        first_byte_timeout: positive_duration(
            errors,
            "spec.fleet.firstByteTimeout",
            f.first_byte_timeout,
            defaults.first_byte_timeout,
        ),
    }
}

impl Fleet {
    pub fn mode(&self) -> FleetMode {
        self.mode
    }

    /// Whether the agents form one cache.
    pub fn is_sharded(&self) -> bool {
        self.mode == FleetMode::Shard
    }

    /// Ownership granule in bytes: a power of two at least the largest
    /// slice size the spec allows.
    pub fn granule(&self) -> u64 {
        self.granule
    }

    /// How often the peer token rotates.
    pub fn token_rotation(&self) -> std::time::Duration {
        self.token_rotation.get()
    }

    /// Agents holding each slice.
    pub fn replicas(&self) -> u8 {
        self.replicas
    }
}
