//! Tune: the tuner's turn, between validate and build.
//!
//! Contract: for a SliceCache whose `spec.tuning.mode` is Recommend or Auto,
//! [`TunerRegistry::tune`] runs one tuner evaluation (the Prometheus queries
//! and control law of [`crate::tuner`]) per `spec.tuning.interval` and
//! returns a [`TuningReport`]: the slice size and concurrency the build step
//! renders into the agents' ConfigMap (mode Auto only), the `TuningActive`
//! condition and `status.tuning.lastDecision` for the status step, and when
//! the next evaluation is due. Reconciles in between (watch events, the echo
//! of a status write) query nothing and get the last report again, so a
//! later reconcile never reverts what the tuner applied. Mode Off queries
//! nothing and reports `TuningOff`.
//!
//! The law keeps history (streaks, cooldown, TTFB baseline, concurrency
//! ceiling), so one [`Tuner`] per SliceCache lives in the registry, keyed by
//! namespace/name and started afresh when the uid, mode, bounds, cooldown or
//! the spec's starting values change. The tunables in force survive an
//! operator restart through `status.effective`.
//!
//! `lastDecision` is rewritten only when a decision differs from the one
//! recorded before it in `from`, `to` or kind (a change, or the hold's
//! reason): a run of identical holds keeps the first one's time and metrics,
//! so a steady SliceCache's status is not rewritten every interval. Events
//! ([`tuning_events`]) follow from what the status write changed.
//!
//! `status.hitRatio` (the `Hit%` column) is the hit ratio the evaluation
//! read, as a percentage with one decimal ([`hit_ratio_text`]); unset when
//! it read none (no traffic, Prometheus unusable) and while no tuner runs
//! (mode Off, no Prometheus URL), as a number from an old interval would
//! mislead. Rounded so, it changes status at most once per interval.
//!
//! Each evaluation is also recorded in the operator's metrics
//! ([`Metrics::observe_tuning`]): changes by knob and direction, holds by
//! reason, the values, the `TuningActive` reason and the time of the last
//! evaluation that could read the agents' metrics. Reconciles in between
//! record nothing; mode Off and a missing URL set only the reason.
//!
//! Everything but the registry and the queries is a pure function here.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use slicecache_api::{
    spec::TuningMode,
    status::{condition, EffectiveTunables, TuningDecisionStatus},
    units::HumanDuration,
    validate::Tuning,
    SliceCacheStatus, ValidatedSliceCache,
};

use super::{build::Owner, status::ConditionUpdate};
use crate::{
    metrics::{Metrics, TuningEvaluation},
    tuner::{
        self, prometheus::DEFAULT_QUERY_TIMEOUT, Bounds, HoldReason, LawConfig, PrometheusClient, Queries, Selector,
        Tunables, Tuner, TuningDecision,
    },
};

/// `TuningActive` reason while mode Auto has usable signals.
pub const REASON_TUNING: &str = "Tuning";
/// `TuningActive` reason while mode Recommend has usable signals.
pub const REASON_RECOMMENDING: &str = "Recommending";
/// `TuningActive` reason in mode Off.
pub const REASON_OFF: &str = "TuningOff";
/// `TuningActive` reason when Recommend or Auto has no Prometheus URL.
pub const REASON_NO_PROMETHEUS: &str = "PrometheusNotConfigured";
/// Event reason of a change applied in mode Auto.
pub const EVENT_CHANGED: &str = "TuningChanged";
/// Event reason of a change recommended in mode Recommend.
pub const EVENT_RECOMMENDED: &str = "TuningRecommended";

/// A reconcile this close before the interval is up evaluates anyway, so
/// that a requeue firing a little early does not cost a whole extra wait.
const DUE_TOLERANCE: Duration = Duration::from_secs(1);

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

    fn not_running(reason: &str, message: String) -> Self {
        Self {
            condition: ConditionUpdate::new(condition::TUNING_ACTIVE, false, reason, message),
            ..Self::off()
        }
    }
}

// === pure parts ===

/// The tuner's settings from the spec: a change of any starts a new
/// [`Tuner`].
#[derive(Clone, Debug, PartialEq)]
pub struct TunerSettings {
    pub uid: String,
    pub mode: TuningMode,
    pub bounds: Bounds,
    pub cooldown: Duration,
    /// Which series are the SliceCache's agents: `spec.tuning.prometheus.selector`
    /// or the default. Another selector means other series, so a new history.
    pub selector: Selector,
    /// `spec.slicing.sliceSize` and `concurrency`: where tuning starts.
    pub start: Tunables,
}

impl TunerSettings {
    pub fn of(owner: &Owner, validated: &ValidatedSliceCache) -> Self {
        let tuning = validated.tuning();
        Self {
            uid: owner.uid.clone().unwrap_or_default(),
            mode: tuning.mode(),
            bounds: Bounds::from(tuning),
            cooldown: tuning.cooldown(),
            selector: tuning.prometheus_selector().map_or_else(
                || Selector::for_slicecache(&owner.namespace, &owner.name),
                Selector::custom,
            ),
            start: Tunables {
                slice_size: validated.slicing().slice_size(),
                concurrency: validated.slicing().concurrency(),
            },
        }
    }
}

/// The tunables in force when a new [`Tuner`] starts.
///
/// Recommend changes nothing, so the spec's values are in force. In Auto
/// the tuner's values carry over, moved inside the current bounds: from the
/// previous tuner of the same SliceCache unless the spec's starting values
/// were edited (the user asks for a restart from them), and after an
/// operator restart from `status.effective`.
pub fn starting_point(
    settings: &TunerSettings,
    previous: Option<(&TunerSettings, Tunables)>,
    effective: Option<&EffectiveTunables>,
) -> Tunables {
    if settings.mode != TuningMode::Auto {
        return settings.start;
    }
    let carried = match previous {
        Some((old, in_force)) if old.uid == settings.uid => (old.start == settings.start).then_some(in_force),
        _ => effective.map(|e| Tunables {
            slice_size: e.slice_size.0,
            concurrency: e.concurrency,
        }),
    };
    settings.bounds.clamp(carried.unwrap_or(settings.start))
}

/// Whether an evaluation last made at `last` is due again at `now`.
pub fn is_due(last: Option<Instant>, now: Instant, interval: Duration) -> bool {
    last.is_none_or(|last| now.saturating_duration_since(last) + DUE_TOLERANCE >= interval)
}

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

// === the registry ===

/// One SliceCache's tuner and what it last did.
struct Slot {
    settings: TunerSettings,
    tuner: Tuner,
    /// The Prometheus client, by base URL.
    client: Option<(String, PrometheusClient)>,
    /// Tunables in force: the spec's in Recommend, the tuner's in Auto.
    in_force: Tunables,
    evaluated_at: Option<Instant>,
    /// Key of the last decision.
    last_key: Option<DecisionKey>,
    /// The report of the last evaluation, handed out until the next one.
    report: Option<TuningReport>,
}

impl Slot {
    fn new(settings: TunerSettings, previous: Option<Slot>, effective: Option<&EffectiveTunables>) -> Self {
        let in_force = starting_point(
            &settings,
            previous.as_ref().map(|p| (&p.settings, p.in_force)),
            effective,
        );
        let config = LawConfig {
            cooldown: settings.cooldown,
            ..LawConfig::default()
        };
        Self {
            tuner: Tuner::new(config, settings.bounds),
            settings,
            client: previous.and_then(|p| p.client),
            in_force,
            evaluated_at: None,
            last_key: None,
            report: None,
        }
    }
}

/// The tuners of every SliceCache this operator reconciles, and the
/// operator metrics they report to.
pub struct TunerRegistry {
    slots: Mutex<HashMap<String, Slot>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for TunerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.slots.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("TunerRegistry").field("tuners", &n).finish()
    }
}

impl TunerRegistry {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Drops the tuner of `key` (`namespace/name`) and its metrics: the
    /// SliceCache is gone or its tuner stopped.
    pub fn forget(&self, key: &str) {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
        if let Some((namespace, name)) = key.split_once('/') {
            self.metrics.forget_tuning(namespace, name);
        }
    }

    /// The tune step for the SliceCache `owner`; `status` is its current
    /// status. Queries Prometheus only when an evaluation is due.
    pub async fn tune(
        &self,
        owner: &Owner,
        validated: &ValidatedSliceCache,
        status: Option<&SliceCacheStatus>,
    ) -> TuningReport {
        let (namespace, name) = (owner.namespace.as_str(), owner.name.as_str());
        let key = format!("{namespace}/{name}");
        let tuning = validated.tuning();
        if tuning.mode() == TuningMode::Off {
            self.forget(&key);
            self.metrics.set_tuning_reason(namespace, name, REASON_OFF);
            return TuningReport::off();
        }
        let Some(url) = tuning.prometheus_url().map(|u| u.to_string()) else {
            self.forget(&key);
            self.metrics.set_tuning_reason(namespace, name, REASON_NO_PROMETHEUS);
            return TuningReport::not_running(
                REASON_NO_PROMETHEUS,
                format!(
                    "spec.tuning.mode is {:?} but spec.tuning.prometheus.url is unset: the spec values are in force",
                    tuning.mode()
                ),
            );
        };
        let settings = TunerSettings::of(owner, validated);
        let interval = tuning.interval();
        let now = Instant::now();

        // Reconciles of one object never overlap, so the slot can leave the
        // map while Prometheus answers.
        let previous = self.slots.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
        let mut slot = match previous {
            Some(slot) if slot.settings == settings => slot,
            other => Slot::new(settings, other, status.and_then(|s| s.effective.as_ref())),
        };
        let auto = slot.settings.mode == TuningMode::Auto;

        let report = match (&slot.report, is_due(slot.evaluated_at, now, interval)) {
            (Some(report), false) => {
                let elapsed = slot
                    .evaluated_at
                    .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                TuningReport {
                    next_in: Some(interval.saturating_sub(elapsed).max(DUE_TOLERANCE)),
                    ..report.clone()
                }
            }
            _ => {
                let (report, recorded) = evaluate(&mut slot, (namespace, name), tuning, &url, status, now).await;
                self.metrics.observe_tuning(namespace, name, &recorded);
                slot.evaluated_at = Some(now);
                slot.report = Some(report.clone());
                report
            }
        };
        let report = TuningReport {
            in_force: auto.then_some(slot.in_force),
            ..report
        };
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, slot);
        report
    }
}

/// The current time in whole seconds, as `metav1.Time` travels: a record
/// kept in memory then equals the one read back from the API server.
fn now_in_seconds() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// One evaluation: query, step the law, and report; and what it records
/// in the metrics.
async fn evaluate(
    slot: &mut Slot,
    (namespace, name): (&str, &str),
    tuning: &Tuning,
    url: &str,
    status: Option<&SliceCacheStatus>,
    now: Instant,
) -> (TuningReport, TuningEvaluation) {
    let client = match &slot.client {
        Some((u, c)) if u == url => c.clone(),
        _ => match PrometheusClient::new(url, DEFAULT_QUERY_TIMEOUT) {
            Ok(c) => {
                slot.client = Some((url.to_string(), c.clone()));
                c
            }
            Err(e) => {
                let hold = HoldReason::PrometheusError;
                let report = TuningReport {
                    next_in: Some(tuning.interval()),
                    ..TuningReport::not_running(hold.as_str(), e.to_string())
                };
                let recorded = TuningEvaluation {
                    reason: hold.as_str().to_string(),
                    change: None,
                    held_because: Some(hold),
                    saw_signals: false,
                    interval: tuning.interval(),
                    at: SystemTime::now(),
                };
                return (report, recorded);
            }
        },
    };
    let queries = Queries::new(&slot.settings.selector, tuner::window_for(tuning.interval()));
    let evaluation = tuner::evaluate(&client, &queries, &mut slot.tuner, now, Some(slot.in_force)).await;
    let hit_ratio = evaluation
        .signals
        .as_ref()
        .ok()
        .and_then(|s| s.hit_ratio)
        .map(hit_ratio_text);
    let decision = evaluation.decision;
    if decision.changed() {
        tracing::info!(slicecache = %format!("{namespace}/{name}"), mode = ?tuning.mode(), "tuner: {decision}");
    } else {
        tracing::debug!(slicecache = %format!("{namespace}/{name}"), mode = ?tuning.mode(), "tuner: {decision}");
    }
    if slot.settings.mode == TuningMode::Auto {
        slot.in_force = decision.to;
    }
    let recorded = status
        .and_then(|s| s.tuning.as_ref())
        .and_then(|t| t.last_decision.as_ref());
    let record = last_decision(&decision, slot.last_key, recorded, now_in_seconds());
    slot.last_key = Some(DecisionKey::of(&decision));
    let condition = tuning_condition(tuning, client.base_url(), slot.tuner.config(), &decision);
    let recorded = evaluation_metrics(&decision, &condition.reason, tuning.interval(), SystemTime::now());
    let report = TuningReport {
        in_force: None,
        condition,
        last_decision: Some(record),
        next_in: Some(tuning.interval()),
        hit_ratio,
    };
    (report, recorded)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use slicecache_api::{spec::SliceCacheSpec, status::TuningStatus, units::ByteSize};

    use super::*;

    fn validated(tuning_yaml: &str) -> ValidatedSliceCache {
        let spec: SliceCacheSpec = serde_yaml_ng::from_str(&format!(
            "origin:\n  url: http://origin:8080\nslicing:\n  sliceSize: 1Mi\n  concurrency: 8\ntuning:\n{tuning_yaml}"
        ))
        .unwrap();
        ValidatedSliceCache::new(&spec).unwrap()
    }

    const AUTO: &str = "  mode: Auto\n  prometheus:\n    url: http://prom:9090\n  interval: 30s\n";
    const RECOMMEND: &str = "  mode: Recommend\n  prometheus:\n    url: http://prom:9090\n  interval: 30s\n";

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn t(slice_size: u64, concurrency: u32) -> Tunables {
        Tunables {
            slice_size,
            concurrency,
        }
    }

    fn decision(from: Tunables, to: Tunables, hold: Option<HoldReason>, reason: &str) -> TuningDecision {
        TuningDecision {
            from,
            to,
            reason: reason.into(),
            held_because: hold,
            metrics: BTreeMap::from([("originThrottleRatio".to_string(), "0.2000".to_string())]),
        }
    }

    const MI: u64 = 1 << 20;

    #[test]
    fn settings_come_from_the_validated_spec() {
        let v = validated(&format!(
            "{AUTO}  minConcurrency: 2\n  maxConcurrency: 16\n  cooldown: 5m\n"
        ));
        let s = TunerSettings::of(&owner(), &v);
        assert_eq!(s.mode, TuningMode::Auto);
        assert_eq!(s.start, t(MI, 8));
        assert_eq!((s.bounds.min_concurrency, s.bounds.max_concurrency), (2, 16));
        assert_eq!(s.cooldown, Duration::from_secs(300));
        assert_eq!(s.selector, Selector::for_slicecache("shop", "media"));
        // Matchers of the user's own: other series, so another tuner.
        let custom = TunerSettings::of(
            &owner(),
            &validated(
                "  mode: Auto\n  prometheus:\n    url: http://prom:9090\n    selector: '{job=\"edge\"}'\n  \
                 interval: 30s\n  minConcurrency: 2\n  maxConcurrency: 16\n  cooldown: 5m\n",
            ),
        );
        assert_eq!(custom.selector.as_str(), r#"job="edge""#);
        assert_ne!(custom, s);
    }

    #[test]
    fn starting_point_carries_the_tuners_values_only_in_auto() {
        let auto = TunerSettings::of(&owner(), &validated(AUTO));
        let effective = EffectiveTunables {
            slice_size: ByteSize(256 << 10),
            concurrency: 3,
        };
        // Fresh operator: what status says is in force.
        assert_eq!(starting_point(&auto, None, Some(&effective)), t(256 << 10, 3));
        // New SliceCache: the spec's values.
        assert_eq!(starting_point(&auto, None, None), t(MI, 8));
        // A new tuner for the same SliceCache (bounds changed): the old one's values, inside the new bounds.
        let narrow = TunerSettings {
            bounds: Bounds {
                min_concurrency: 4,
                ..auto.bounds
            },
            ..auto.clone()
        };
        assert_eq!(
            starting_point(&narrow, Some((&auto, t(2 * MI, 2))), Some(&effective)),
            t(2 * MI, 4)
        );
        // The user edited spec.slicing: restart from it.
        let edited = TunerSettings {
            start: t(4 * MI, 8),
            ..auto.clone()
        };
        assert_eq!(starting_point(&edited, Some((&auto, t(2 * MI, 2))), None), t(4 * MI, 8));
        // A SliceCache recreated under the same name: not the old object's values.
        let other = TunerSettings {
            uid: "uid-2".into(),
            ..auto.clone()
        };
        assert_eq!(starting_point(&other, Some((&auto, t(2 * MI, 2))), None), t(MI, 8));
        // Recommend changes nothing: the spec's values are in force.
        let recommend = TunerSettings::of(&owner(), &validated(RECOMMEND));
        assert_eq!(
            starting_point(&recommend, Some((&auto, t(2 * MI, 2))), Some(&effective)),
            t(MI, 8)
        );
    }

    #[test]
    fn evaluations_are_due_once_per_interval() {
        let now = Instant::now();
        let interval = Duration::from_secs(60);
        assert!(is_due(None, now, interval));
        assert!(!is_due(Some(now), now, interval));
        assert!(!is_due(Some(now), now + Duration::from_secs(30), interval));
        assert!(is_due(Some(now), now + Duration::from_millis(59_500), interval));
        assert!(is_due(Some(now), now + Duration::from_secs(61), interval));
    }

    #[test]
    fn identical_holds_keep_the_recorded_decision() {
        let steady = decision(
            t(MI, 8),
            t(MI, 8),
            Some(HoldReason::Steady),
            "steady: amplification 1.02",
        );
        let first = last_decision(&steady, None, None, at(100));
        assert_eq!(first.time, at(100));
        assert_eq!(first.reason, "steady: amplification 1.02");
        // The next interval holds the same way with other numbers: the record stays.
        let again = decision(
            t(MI, 8),
            t(MI, 8),
            Some(HoldReason::Steady),
            "steady: amplification 1.05",
        );
        let kept = last_decision(&again, Some(DecisionKey::of(&steady)), Some(&first), at(160));
        assert_eq!(kept, first);
        // Another kind of hold is recorded.
        let down = decision(
            t(MI, 8),
            t(MI, 8),
            Some(HoldReason::PrometheusUnreachable),
            "holding: down",
        );
        let new = last_decision(&down, Some(DecisionKey::of(&steady)), Some(&first), at(220));
        assert_eq!((new.time, new.reason.as_str()), (at(220), "holding: down"));
        // After a restart the kind of the recorded decision is unknown: recorded again.
        assert_eq!(last_decision(&again, None, Some(&first), at(280)).time, at(280));
        // A change is recorded with its values and metrics.
        let change = decision(t(MI, 8), t(MI, 4), None, "origin 429/503 at 20.00%: concurrency 8 -> 4");
        let r = last_decision(&change, Some(DecisionKey::of(&steady)), Some(&first), at(340));
        assert_eq!(r.from.concurrency, 8);
        assert_eq!(r.to.concurrency, 4);
        assert_eq!(r.to.slice_size, ByteSize(MI));
        assert_eq!(r.metrics["originThrottleRatio"], "0.2000");
    }

    #[test]
    fn tuning_active_says_whether_the_tuner_can_see() {
        let auto = validated(AUTO);
        let recommend = validated(RECOMMEND);
        let law = LawConfig::default();
        let url = "http://prom:9090";
        let cond = |v: &ValidatedSliceCache, d: &TuningDecision| tuning_condition(v.tuning(), url, &law, d);

        let change = decision(t(MI, 8), t(MI, 4), None, "origin 429/503 at 20.00%: concurrency 8 -> 4");
        let c = cond(&auto, &change);
        assert!(c.holds);
        assert_eq!(c.reason, REASON_TUNING);
        assert!(c.message.contains("every 30s"), "{}", c.message);
        assert!(c.message.contains("ConfigMap"), "{}", c.message);
        let c = cond(&recommend, &change);
        assert_eq!((c.holds, c.reason.as_str()), (true, REASON_RECOMMENDING));
        assert!(c.message.contains("spec values stay in force"), "{}", c.message);

        // Holds with usable signals keep it True, with the same message whatever the numbers.
        for hold in [HoldReason::Steady, HoldReason::Settling, HoldReason::Cooldown] {
            let a = cond(
                &auto,
                &decision(t(MI, 8), t(MI, 8), Some(hold), "steady: amplification 1.02"),
            );
            let b = cond(
                &auto,
                &decision(t(MI, 8), t(MI, 8), Some(hold), "steady: amplification 1.07"),
            );
            assert_eq!(a, b);
            assert_eq!(a, cond(&auto, &change));
        }

        for hold in [
            HoldReason::PrometheusUnreachable,
            HoldReason::QueryTimeout,
            HoldReason::PrometheusError,
            HoldReason::NoData,
        ] {
            let reason = format!("holding: because {hold}");
            let c = cond(&recommend, &decision(t(MI, 8), t(MI, 8), Some(hold), &reason));
            assert!(!c.holds);
            assert_eq!(c.reason, hold.as_str());
            assert!(c.message.starts_with(&reason), "{}", c.message);
            assert!(c.message.contains("kept"), "{}", c.message);
        }
        let idle = |rate: &str| {
            cond(
                &auto,
                &decision(
                    t(MI, 8),
                    t(MI, 8),
                    Some(HoldReason::Idle),
                    &format!("holding: at {rate}/s"),
                ),
            )
        };
        assert_eq!((idle("0.010").holds, idle("0.010").reason.as_str()), (false, "Idle"));
        assert_eq!(idle("0.010"), idle("0.020"));
        assert!(idle("0.010").message.contains("0.05"), "{}", idle("0.010").message);

        assert_eq!(TuningReport::off().condition.reason, REASON_OFF);
        assert!(!TuningReport::off().condition.holds);
    }

    #[test]
    fn hit_ratio_is_a_percentage_with_one_decimal() {
        assert_eq!(hit_ratio_text(0.934), "93.4%");
        assert_eq!(hit_ratio_text(0.93449), "93.4%");
        assert_eq!(hit_ratio_text(0.0), "0.0%");
        assert_eq!(hit_ratio_text(1.0), "100.0%");
        // Rate arithmetic can stray past the ends by a rounding error.
        assert_eq!(hit_ratio_text(1.000_001), "100.0%");
        assert_eq!(hit_ratio_text(-0.000_001), "0.0%");
    }

    #[test]
    fn evaluations_record_changes_holds_and_whether_signals_were_seen() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let interval = Duration::from_secs(30);
        let change = decision(t(MI, 8), t(MI, 4), None, "origin 429/503 at 20.00%: concurrency 8 -> 4");
        let e = evaluation_metrics(&change, REASON_TUNING, interval, at);
        assert_eq!(e.change, Some((t(MI, 8), t(MI, 4))));
        assert_eq!((e.held_because, e.saw_signals), (None, true));
        assert_eq!((e.reason.as_str(), e.interval, e.at), (REASON_TUNING, interval, at));
        // Holds with signals are successful evaluations; blind ones are not.
        for (hold, saw) in [
            (HoldReason::Steady, true),
            (HoldReason::Cooldown, true),
            (HoldReason::Idle, true),
            (HoldReason::NoData, false),
            (HoldReason::PrometheusUnreachable, false),
        ] {
            let e = evaluation_metrics(
                &decision(t(MI, 8), t(MI, 8), Some(hold), "holding"),
                hold.as_str(),
                interval,
                at,
            );
            assert_eq!((e.held_because, e.saw_signals), (Some(hold), saw), "{hold}");
            assert_eq!(e.change, Some((t(MI, 8), t(MI, 8))));
        }
    }

    fn owner() -> Owner {
        Owner {
            name: "media".into(),
            namespace: "shop".into(),
            uid: Some("uid-1".into()),
            generation: 1,
        }
    }

    fn tuning_series(metrics: &Metrics) -> Vec<String> {
        metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("slicecache_operator_tuning_"))
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn the_tune_step_reports_to_the_metrics() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let registry = TunerRegistry::new(metrics.clone());
        // A port nothing listens on: Prometheus is down.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let down = validated(&format!(
            "  mode: Auto\n  prometheus:\n    url: http://127.0.0.1:{port}\n  interval: 30s\n"
        ));
        let report = registry.tune(&owner(), &down, None).await;
        assert_eq!(report.condition.reason, "PrometheusUnreachable");
        assert_eq!(report.hit_ratio, None);
        let series = tuning_series(&metrics);
        for line in [
            r#"slicecache_operator_tuning_active{namespace="shop",reason="PrometheusUnreachable",slicecache="media"} 1"#,
            r#"slicecache_operator_tuning_holds_total{namespace="shop",reason="PrometheusUnreachable",slicecache="media"} 1"#,
            r#"slicecache_operator_tuning_value{knob="concurrency",namespace="shop",slicecache="media"} 8"#,
            r#"slicecache_operator_tuning_value{knob="sliceSize",namespace="shop",slicecache="media"} 1048576"#,
            r#"slicecache_operator_tuning_interval_seconds{namespace="shop",slicecache="media"} 30"#,
        ] {
            assert!(series.iter().any(|l| l == line), "no {line} in {series:#?}");
        }
        // Blind: no successful evaluation to report.
        assert!(!series.iter().any(|l| l.contains("last_evaluation")), "{series:#?}");
        // A reconcile before the interval is up records nothing.
        registry.tune(&owner(), &down, None).await;
        assert_eq!(tuning_series(&metrics), series);

        // Mode Off: the tuner's series go; only the reason is left.
        let report = registry.tune(&owner(), &validated("  mode: Off\n"), None).await;
        assert_eq!(report, TuningReport::off());
        assert_eq!(
            tuning_series(&metrics),
            [r#"slicecache_operator_tuning_active{namespace="shop",reason="TuningOff",slicecache="media"} 1"#]
        );
        // Deleted: nothing.
        registry.forget("shop/media");
        assert!(tuning_series(&metrics).is_empty(), "{:#?}", tuning_series(&metrics));
    }

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
