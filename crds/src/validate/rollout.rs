//! `spec.rollout`: how many agents may be down at once and how long a new
//! one must be ready before the rollout moves on.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    error::ValidationError,
    model::{MaxUnavailable, Rollout},
};
use crate::spec::SliceCacheSpec;

pub(super) fn validate(spec: &SliceCacheSpec, errors: &mut Vec<ValidationError>) -> Rollout {
    let r = spec.rollout.clone().unwrap_or_default();
    let max_unavailable = match &r.max_unavailable {
        None => MaxUnavailable::Count(1),
        Some(v) => parse_max_unavailable(v).unwrap_or_else(|| {
            errors.push(ValidationError::InvalidMaxUnavailable {
                field: "spec.rollout.maxUnavailable",
                value: match v {
                    IntOrString::Int(n) => n.to_string(),
                    IntOrString::String(s) => s.clone(),
                },
            });
            MaxUnavailable::Count(1)
        }),
    };
    Rollout {
        max_unavailable,
        pause_between_nodes: r.pause_between_nodes.unwrap_or_default(),
    }
}

fn parse_max_unavailable(v: &IntOrString) -> Option<MaxUnavailable> {
    match v {
        IntOrString::Int(n) => u32::try_from(*n).ok().filter(|n| *n >= 1).map(MaxUnavailable::Count),
        IntOrString::String(s) => {
            let digits = s.strip_suffix('%')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
                return None;
            }
            digits
                .parse::<u8>()
                .ok()
                .filter(|p| (1..=100).contains(p))
                .map(MaxUnavailable::Percent)
        }
    }
}
