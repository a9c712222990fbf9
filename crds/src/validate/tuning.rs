//! `spec.tuning`: the tuner's mode, Prometheus, interval, cooldown and the
//! bounds it may move slice size and concurrency within.

use std::time::Duration;

use super::{
    checks::{check_range, parse_http_url, slice_size},
    error::ValidationError,
    matchers::label_matchers,
    model::Tuning,
};
use crate::{
    agent_config::{MAX_CONCURRENCY, MAX_SLICE_SIZE, MIN_SLICE_SIZE},
    quantity::format_bytes,
    spec::{SliceCacheSpec, TuningMode},
    units::HumanDuration,
};

/// Shortest tuning interval: Prometheus needs a few scrapes per interval.
pub const MIN_TUNING_INTERVAL: Duration = Duration::from_secs(10);
/// Default tuning interval.
pub const DEFAULT_TUNING_INTERVAL: Duration = Duration::from_secs(60);
/// Default tuning cooldown.
pub const DEFAULT_TUNING_COOLDOWN: Duration = Duration::from_secs(600);

pub(super) fn validate(spec: &SliceCacheSpec, errors: &mut Vec<ValidationError>) -> Tuning {
    let t = spec.tuning.clone().unwrap_or_default();
    let mode = t.mode.unwrap_or_default();

    let prometheus_url = match (&t.prometheus, mode) {
        (Some(p), _) => parse_http_url(errors, "spec.tuning.prometheus.url", &p.url),
        (None, TuningMode::Off) => None,
        (None, mode) => {
            errors.push(ValidationError::PrometheusRequired {
                field: "spec.tuning.prometheus.url",
                mode,
            });
            None
        }
    };

    let prometheus_selector = t
        .prometheus
        .as_ref()
        .and_then(|p| p.selector.as_deref())
        .and_then(|text| match label_matchers(text) {
            Ok(m) => Some(m),
            Err(problem) => {
                errors.push(ValidationError::InvalidSelector {
                    field: "spec.tuning.prometheus.selector",
                    value: text.to_string(),
                    problem,
                });
                None
            }
        });

    let interval = t.interval.unwrap_or(HumanDuration(DEFAULT_TUNING_INTERVAL));
    if interval.get() < MIN_TUNING_INTERVAL {
        errors.push(ValidationError::DurationTooShort {
            field: "spec.tuning.interval",
            value: interval,
            min: HumanDuration(MIN_TUNING_INTERVAL),
        });
    }

    let min_slice = t
        .min_slice_size
        .map(|s| slice_size(errors, "spec.tuning.minSliceSize", s));
    let max_slice = t
        .max_slice_size
        .map(|s| slice_size(errors, "spec.tuning.maxSliceSize", s));
    let min_slice_size = min_slice.flatten().unwrap_or(MIN_SLICE_SIZE);
    let max_slice_size = max_slice.flatten().unwrap_or(MAX_SLICE_SIZE);
    if min_slice_size > max_slice_size {
        errors.push(ValidationError::BoundsInverted {
            field: "spec.tuning.minSliceSize",
            value: format_bytes(min_slice_size),
            max_field: "spec.tuning.maxSliceSize",
            max: format_bytes(max_slice_size),
        });
    }

    let max_c = i64::from(MAX_CONCURRENCY);
    let min_concurrency = t.min_concurrency.unwrap_or(1);
    let max_concurrency = t.max_concurrency.unwrap_or(MAX_CONCURRENCY);
    let min_ok = check_range(
        errors,
        "spec.tuning.minConcurrency",
        i64::from(min_concurrency),
        1,
        max_c,
    );
    let max_ok = check_range(
        errors,
        "spec.tuning.maxConcurrency",
        i64::from(max_concurrency),
        1,
        max_c,
    );
    if min_ok && max_ok && min_concurrency > max_concurrency {
        errors.push(ValidationError::BoundsInverted {
            field: "spec.tuning.minConcurrency",
            value: min_concurrency.to_string(),
            max_field: "spec.tuning.maxConcurrency",
            max: max_concurrency.to_string(),
        });
    }

    let cooldown = t.cooldown.unwrap_or(HumanDuration(DEFAULT_TUNING_COOLDOWN));
    Tuning {
        mode,
        prometheus_url,
        prometheus_selector,
        interval,
        min_slice_size,
        max_slice_size,
        min_concurrency,
        max_concurrency,
        cooldown,
    }
}
