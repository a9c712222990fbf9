//! Checks that several spec sections share: slice sizes, number ranges,
//! durations and http(s) URLs ([`super::url`]), each pushing a [`ValidationError`] naming
//! the field it was given.

use http::Uri;

use super::{error::ValidationError, url::check_http_url};
use crate::{
    agent_config::{MAX_SLICE_SIZE, MIN_SLICE_SIZE},
    units::{ByteSize, HumanDuration},
};

/// A slice size: a power of two within [MIN_SLICE_SIZE, MAX_SLICE_SIZE].
pub(super) fn slice_size(errors: &mut Vec<ValidationError>, field: &'static str, size: ByteSize) -> Option<u64> {
    let v = size.bytes();
    if !(MIN_SLICE_SIZE..=MAX_SLICE_SIZE).contains(&v) {
        errors.push(ValidationError::SizeOutOfRange {
            field,
            value: size,
            min: ByteSize(MIN_SLICE_SIZE),
            max: ByteSize(MAX_SLICE_SIZE),
        });
        return None;
    }
    if !v.is_power_of_two() {
        errors.push(ValidationError::NotPowerOfTwo { field, value: size });
        return None;
    }
    Some(v)
}

pub(super) fn check_range(
    errors: &mut Vec<ValidationError>,
    field: &'static str,
    value: i64,
    min: i64,
    max: i64,
) -> bool {
    if (min..=max).contains(&value) {
        return true;
    }
    errors.push(ValidationError::NumberOutOfRange { field, value, min, max });
    false
}

pub(super) fn positive_duration(
    errors: &mut Vec<ValidationError>,
    field: &'static str,
    value: Option<HumanDuration>,
    default: HumanDuration,
) -> HumanDuration {
    min_duration(errors, field, value, default, HumanDuration::millis(1))
}

/// `value` (else `default`), which must be at least `min`.
pub(super) fn min_duration(
    errors: &mut Vec<ValidationError>,
    field: &'static str,
    value: Option<HumanDuration>,
    default: HumanDuration,
    min: HumanDuration,
) -> HumanDuration {
    let d = value.unwrap_or(default);
    if d.get() < min.get() {
        errors.push(ValidationError::DurationTooShort { field, value: d, min });
    }
    d
}

pub(super) fn parse_http_url(errors: &mut Vec<ValidationError>, field: &'static str, value: &str) -> Option<Uri> {
    match check_http_url(value) {
        Ok(uri) => Some(uri),
        Err(problem) => {
            errors.push(ValidationError::InvalidUrl {
                field,
                value: value.to_string(),
                problem,
            });
            None
        }
    }
}
