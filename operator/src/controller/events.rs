//! Events the tuner's outcome calls for, derived from what the status write
//! changed, so that a reconcile between intervals, which changes nothing,
//! sends nothing.
//!
//! Contract: pure. From the tuning mode and the status before and after the
//! write to the Events to publish; the controller publishes them.

use slicecache_api::{
    spec::TuningMode,
    status::{condition, EffectiveTunables},
    SliceCacheStatus,
};

use crate::tuner::{HoldReason, Tunables};

/// Event reason of a change applied in mode Auto.
pub const EVENT_CHANGED: &str = "TuningChanged";
/// Event reason of a change recommended in mode Recommend.
pub const EVENT_RECOMMENDED: &str = "TuningRecommended";

/// An Event the tune step's outcome calls for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TuningEvent {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// Events for what the status write changed: a new `lastDecision` that
/// changes values (Normal `TuningChanged` in Auto, `TuningRecommended` in
/// Recommend), and `TuningActive` turning False with a new hold reason
/// (Warning, the hold's reason; Normal for `Idle`). Identical holds change
/// nothing and send nothing.
pub fn tuning_events(mode: TuningMode, old: Option<&SliceCacheStatus>, new: &SliceCacheStatus) -> Vec<TuningEvent> {
    let mut events = Vec::new();
    let decision = |s: &SliceCacheStatus| s.tuning.as_ref().and_then(|t| t.last_decision.clone());
    if let Some(d) = decision(new) {
        if d.from != d.to && old.and_then(decision).as_ref() != Some(&d) {
            let (from, to) = (tunables_of(&d.from), tunables_of(&d.to));
            let (reason, note) = match mode {
                TuningMode::Auto => (
                    EVENT_CHANGED,
                    format!("{from} -> {to}: {}; agents hot-reload, caches stay warm", d.reason),
                ),
                _ => (
                    EVENT_RECOMMENDED,
                    format!(
                        "{from} -> {to}: {}; mode Recommend: the spec values stay in force",
                        d.reason
                    ),
                ),
            };
            events.push(TuningEvent {
                warning: false,
                reason: reason.into(),
                note,
            });
        }
    }
    let active = |s: &SliceCacheStatus| s.condition(condition::TUNING_ACTIVE).cloned();
    if let Some(c) = active(new) {
        let was = old.and_then(active);
        let holds = [
            HoldReason::PrometheusUnreachable,
            HoldReason::QueryTimeout,
            HoldReason::PrometheusError,
            HoldReason::NoData,
            HoldReason::Idle,
        ];
        if c.status == condition::FALSE
            && was.is_none_or(|w| w.reason != c.reason)
            && holds.iter().any(|h| h.as_str() == c.reason)
        {
            events.push(TuningEvent {
                warning: c.reason != HoldReason::Idle.as_str(),
                reason: c.reason.clone(),
                note: c.message.clone(),
            });
        }
    }
    events
}

fn tunables_of(e: &EffectiveTunables) -> Tunables {
    Tunables {
        slice_size: e.slice_size.0,
        concurrency: e.concurrency,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use slicecache_api::status::{TuningDecisionStatus, TuningStatus};

    use super::*;
    use crate::controller::conditions::{REASON_OFF, REASON_TUNING};
    use crate::controller::fixtures::{at, decision, t, MI};

    fn status_with(decision: Option<TuningDecisionStatus>, active: Option<(bool, &str)>) -> SliceCacheStatus {
        let mut s = SliceCacheStatus {
            tuning: decision.map(|d| TuningStatus { last_decision: Some(d) }),
            ..SliceCacheStatus::default()
        };
        if let Some((holds, reason)) = active {
            s.set_condition(slicecache_api::status::new_condition(
                condition::TUNING_ACTIVE,
                holds,
                reason,
                format!("because {reason}"),
                Some(1),
                at(1),
            ));
        }
        s
    }

    #[test]
    fn events_follow_what_the_status_write_changed() {
        let change =
            decision(t(MI, 8), t(MI, 4), None, "origin 429/503 at 20.00%: concurrency 8 -> 4").to_status(at(10));
        let hold = decision(t(MI, 4), t(MI, 4), Some(HoldReason::Steady), "steady").to_status(at(70));
        let old = status_with(None, Some((false, REASON_OFF)));
        let new = status_with(Some(change.clone()), Some((true, REASON_TUNING)));

        let events = tuning_events(TuningMode::Auto, Some(&old), &new);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].reason, EVENT_CHANGED);
        assert!(!events[0].warning);
        assert!(
            events[0]
                .note
                .starts_with("slice 1Mi concurrency 8 -> slice 1Mi concurrency 4: origin 429/503"),
            "{}",
            events[0].note
        );
        let events = tuning_events(TuningMode::Recommend, Some(&old), &new);
        assert_eq!(events[0].reason, EVENT_RECOMMENDED);
        assert!(events[0].note.contains("spec values stay in force"));

        // The same record again (a reconcile between intervals): nothing.
        assert!(tuning_events(TuningMode::Auto, Some(&new), &new).is_empty());
        // A hold replaces the change: recorded in status, no event.
        let held = status_with(Some(hold), Some((true, REASON_TUNING)));
        assert!(tuning_events(TuningMode::Auto, Some(&new), &held).is_empty());

        // Prometheus goes away: one Warning with the hold's reason, then quiet.
        let blind = status_with(None, Some((false, "PrometheusUnreachable")));
        let events = tuning_events(TuningMode::Auto, Some(&held), &blind);
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].warning);
        assert_eq!(events[0].reason, "PrometheusUnreachable");
        assert_eq!(events[0].note, "because PrometheusUnreachable");
        assert!(tuning_events(TuningMode::Auto, Some(&blind), &blind).is_empty());
        // Idle is news, not a warning; mode Off is neither.
        let idle = status_with(None, Some((false, "Idle")));
        assert!(!tuning_events(TuningMode::Auto, Some(&blind), &idle)[0].warning);
        let off = status_with(None, Some((false, REASON_OFF)));
        assert!(tuning_events(TuningMode::Off, Some(&held), &off).is_empty());
    }
}
