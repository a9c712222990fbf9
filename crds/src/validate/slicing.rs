//! `spec.slicing`: slice size, concurrency, the size below which objects
//! are cached whole, and retries; unwritten starting points follow the
//! tuning bounds.

use super::{
    checks::{check_range, slice_size},
    error::ValidationError,
    model::{Slicing, Tuning},
};
use crate::{
    agent_config::{clamp_slice_size, Tunables, MAX_CONCURRENCY, MAX_SLICE_SIZE},
    quantity::format_bytes,
    spec::SliceCacheSpec,
    units::ByteSize,
};

/// Largest `minObjectSize`: larger whole objects would defeat slicing.
pub const MAX_MIN_OBJECT_SIZE: u64 = MAX_SLICE_SIZE;
/// Most retries per slice fetch.
pub const MAX_RETRIES: u32 = 10;

pub(super) fn validate(spec: &SliceCacheSpec, tuning: &Tuning, errors: &mut Vec<ValidationError>) -> Slicing {
    let s = spec.slicing.clone().unwrap_or_default();
    let defaults = Tunables::default();
    let active = Some(tuning).filter(|t| t.is_active());

    let slice_size = match s.slice_size {
        Some(size) => {
            let checked = slice_size(errors, "spec.slicing.sliceSize", size);
            if let (Some(v), Some(t)) = (checked, active) {
                if v < t.min_slice_size || v > t.max_slice_size {
                    errors.push(ValidationError::OutsideTuningBounds {
                        field: "spec.slicing.sliceSize",
                        value: format_bytes(v),
                        min: format_bytes(t.min_slice_size),
                        max: format_bytes(t.max_slice_size),
                    });
                }
            }
            checked.unwrap_or(defaults.slice_size.bytes())
        }
        // An unwritten starting point follows the bounds instead of failing them.
        None => {
            let d = defaults.slice_size.bytes();
            active.map_or(d, |t| clamp_slice_size(d, t.min_slice_size, t.max_slice_size))
        }
    };

    let concurrency = match s.concurrency {
        Some(c) => {
            let ok = check_range(
                errors,
                "spec.slicing.concurrency",
                i64::from(c),
                1,
                i64::from(MAX_CONCURRENCY),
            );
            if let (true, Some(t)) = (ok, active) {
                if c < t.min_concurrency || c > t.max_concurrency {
                    errors.push(ValidationError::OutsideTuningBounds {
                        field: "spec.slicing.concurrency",
                        value: c.to_string(),
                        min: t.min_concurrency.to_string(),
                        max: t.max_concurrency.to_string(),
                    });
                }
            }
            c
        }
        None => {
            let d = defaults.concurrency;
            active.map_or(d, |t| {
                d.clamp(t.min_concurrency, t.max_concurrency.max(t.min_concurrency))
            })
        }
    };

    let min_object_size = s.min_object_size.unwrap_or(defaults.min_object_size);
    if min_object_size.bytes() > MAX_MIN_OBJECT_SIZE {
        errors.push(ValidationError::SizeOutOfRange {
            field: "spec.slicing.minObjectSize",
            value: min_object_size,
            min: ByteSize(0),
            max: ByteSize(MAX_MIN_OBJECT_SIZE),
        });
    }

    let retries = s.retries.unwrap_or(defaults.retries);
    check_range(
        errors,
        "spec.slicing.retries",
        i64::from(retries),
        0,
        i64::from(MAX_RETRIES),
    );

    Slicing {
        slice_size,
        concurrency,
        min_object_size: min_object_size.bytes(),
        retries,
    }
}
