//! What an evaluation leaves behind: `status.tuning.lastDecision` (kept
//! across identical holds), `status.hitRatio`, and the record for the
//! operator's metrics.
//!
//! Contract: pure; the caller supplies the time.

use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use slicecache_api::status::TuningDecisionStatus;

use crate::{
    metrics::TuningEvaluation,
    tuner::{HoldReason, Tunables, TuningDecision},
};

/// What makes two decisions the same for `lastDecision`: a hold's reason
/// (`None` for a change), from and to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecisionKey {
    pub from: Tunables,
    pub to: Tunables,
    pub held_because: Option<HoldReason>,
}

impl DecisionKey {
    pub fn of(decision: &TuningDecision) -> Self {
        Self {
            from: decision.from,
            to: decision.to,
            held_because: decision.held_because,
        }
    }
}

/// The `lastDecision` to report for `decision`: the recorded one when the
/// previous decision had the same key (`previous`) and status still
/// carries it (`recorded`), else `decision` stamped with `now`.
pub fn last_decision(
    decision: &TuningDecision,
    previous: Option<DecisionKey>,
    recorded: Option<&TuningDecisionStatus>,
    now: Time,
) -> TuningDecisionStatus {
    match recorded {
        Some(r) if previous == Some(DecisionKey::of(decision)) => r.clone(),
        _ => decision.to_status(now),
    }
}

/// `status.hitRatio` for a hit ratio between 0 and 1: a percentage with one
/// decimal, `0.934` -> `93.4%`.
pub fn hit_ratio_text(ratio: f64) -> String {
    format!("{:.1}%", ratio.clamp(0.0, 1.0) * 100.0)
}

/// What an evaluation that decided `decision` and reports `TuningActive`
/// with `reason` records in the metrics.
pub fn evaluation_metrics(
    decision: &TuningDecision,
    reason: &str,
    interval: Duration,
    at: SystemTime,
) -> TuningEvaluation {
    TuningEvaluation {
        reason: reason.to_string(),
        change: Some((decision.from, decision.to)),
        held_because: decision.held_because,
        saw_signals: decision.held_because.is_none_or(|h| !h.is_blind()),
        interval,
        at,
    }
}
