//! What the tune step hands to build and status: the tunables in force, the
//! `TuningActive` condition, `status.tuning.lastDecision`, `status.hitRatio`
//! and when the next evaluation is due.
//!
//! Contract: a plain value; the status step reads it and never calls back
//! into the tune step.

use std::time::Duration;

use slicecache_api::status::{condition, TuningDecisionStatus};

use crate::{
    controller::conditions::{ConditionUpdate, REASON_OFF},
    tuner::Tunables,
};

/// What the tune step hands to build and status.
#[derive(Clone, Debug, PartialEq)]
pub struct TuningReport {
    /// Slice size and concurrency that replace the spec's in the agent
    /// config (mode Auto); `None`: the spec's are in force.
    pub in_force: Option<Tunables>,
    /// The `TuningActive` condition.
    pub condition: ConditionUpdate,
    /// `status.tuning.lastDecision`; `None` leaves the status's as it is.
    pub last_decision: Option<TuningDecisionStatus>,
    /// Time until the next evaluation; `None` when the tuner does not run.
    pub next_in: Option<Duration>,
    /// `status.hitRatio`: the hit ratio the last evaluation read, e.g.
    /// `93.4%`; `None` unsets it.
    pub hit_ratio: Option<String>,
}

impl TuningReport {
    /// Mode Off: nothing runs, the spec values are in force.
    pub fn off() -> Self {
        Self {
            in_force: None,
            condition: ConditionUpdate::new(
                condition::TUNING_ACTIVE,
                false,
                REASON_OFF,
                "spec.tuning.mode is Off: the spec values are in force",
            ),
            last_decision: None,
            next_in: None,
            hit_ratio: None,
        }
    }

    pub(super) fn not_running(reason: &str, message: String) -> Self {
        Self {
            condition: ConditionUpdate::new(condition::TUNING_ACTIVE, false, reason, message),
            ..Self::off()
        }
    }
}
