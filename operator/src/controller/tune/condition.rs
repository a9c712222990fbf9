//! The `TuningActive` condition an evaluation reports: whether the tuner
//! can see (usable signals) and what it does with what it sees.
//!
//! Contract: pure. From the validated tuning settings, the law and one
//! decision to the condition; no clock, no I/O.

use slicecache_api::{spec::TuningMode, status::condition, units::HumanDuration, validate::Tuning};

use crate::{
    controller::conditions::{ConditionUpdate, REASON_RECOMMENDING, REASON_TUNING},
    tuner::{HoldReason, LawConfig, TuningDecision},
};

/// The `TuningActive` condition after `decision`.
///
/// True while the tuner sees usable signals (it may still hold: settling,
/// cooldown, steady). False when it holds because of Prometheus or the
/// traffic: the reason is the hold's (`PrometheusUnreachable`,
/// `QueryTimeout`, `PrometheusError`, `NoData`, `Idle`) and the message
/// says why. Messages carry no per-interval numbers, so an unchanged state
/// computes an unchanged condition.
pub fn tuning_condition(
    tuning: &Tuning,
    prometheus: &str,
    law: &LawConfig,
    decision: &TuningDecision,
) -> ConditionUpdate {
    let interval = HumanDuration(tuning.interval());
    let kept = "the tunables in force are kept";
    match decision.held_because {
        Some(hold) if hold.is_blind() => ConditionUpdate::new(
            condition::TUNING_ACTIVE,
            false,
            hold.as_str(),
            format!("{}; {kept}", decision.reason),
        ),
        Some(HoldReason::Idle) => ConditionUpdate::new(
            condition::TUNING_ACTIVE,
            false,
            HoldReason::Idle.as_str(),
            format!(
                "fewer than {} origin subrequests/s across the agents: too little traffic to learn from; {kept}",
                law.min_request_rate
            ),
        ),
        _ if tuning.mode() == TuningMode::Auto => ConditionUpdate::new(
            condition::TUNING_ACTIVE,
            true,
            REASON_TUNING,
            format!(
                "every {interval} the tuner reads {prometheus} and writes its decisions into the agents' ConfigMap; the last one is in status.tuning.lastDecision"
            ),
        ),
        _ => ConditionUpdate::new(
            condition::TUNING_ACTIVE,
            true,
            REASON_RECOMMENDING,
            format!(
                "every {interval} the tuner reads {prometheus} and writes what it would change to status.tuning.lastDecision; the spec values stay in force"
            ),
        ),
    }
}
