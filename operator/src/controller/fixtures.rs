//! Test fixtures shared by the unit tests of the controller's steps: times,
//! tunables and tuner decisions, written once so the tests of `events` and
//! `tune` build them the same way.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::tuner::{HoldReason, Tunables, TuningDecision};

pub(crate) const MI: u64 = 1 << 20;

/// A timestamp `secs` after the epoch.
pub(crate) fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

pub(crate) fn t(slice_size: u64, concurrency: u32) -> Tunables {
    Tunables {
        slice_size,
        concurrency,
    }
}

/// A decision from `from` to `to` with one metric in its snapshot.
pub(crate) fn decision(from: Tunables, to: Tunables, hold: Option<HoldReason>, reason: &str) -> TuningDecision {
    TuningDecision {
        from,
        to,
        reason: reason.into(),
        held_because: hold,
        metrics: BTreeMap::from([("originThrottleRatio".to_string(), "0.2000".to_string())]),
    }
}
