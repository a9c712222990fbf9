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
//! An evaluation runs as a task of its own; the reconcile that starts it
//! waits for it up to [`EVALUATION_WAIT`]. A slower Prometheus (a query may
//! take [`DEFAULT_QUERY_TIMEOUT`]) does not hold the reconcile: it goes on
//! with the last report (before the first, `WaitingForPrometheus`), due
//! again after [`EVALUATION_POLL`], and a later reconcile takes the
//! evaluation's report once the task has ended. The operator reconciles
//! few SliceCaches at once, so no reconcile may wait on Prometheus.
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
//! ([`super::events`]) follow from what the status write changed.
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
//! Everything but the registry and the queries (this module) is a pure
//! function, in the modules beside it:
//! [`settings`] (which tuner, where it starts), [`condition`]
//! (`TuningActive`), [`record`] (`lastDecision`, `hitRatio`, metrics) and
//! [`report`] (what the step returns).

pub mod condition;
pub mod record;
pub mod report;
pub mod settings;

#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use futures::FutureExt;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use slicecache_api::{
    spec::TuningMode, status::EffectiveTunables, validate::Tuning, SliceCacheStatus, ValidatedSliceCache,
};
use tokio::task::JoinHandle;

pub use condition::tuning_condition;
pub use record::{evaluation_metrics, hit_ratio_text, last_decision, DecisionKey};
pub use report::TuningReport;
pub use settings::{is_due, starting_point, TunerSettings};

use super::{
    build::Owner,
    conditions::{REASON_FAILED, REASON_NO_PROMETHEUS, REASON_OFF, REASON_WAITING},
};
use crate::{
    metrics::{Metrics, TuningEvaluation},
    tuner::{
        self, prometheus::DEFAULT_QUERY_TIMEOUT, HoldReason, LawConfig, PrometheusClient, Queries, Tunables, Tuner,
    },
};
use settings::DUE_TOLERANCE;

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
    slots: Mutex<HashMap<String, Entry>>,
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
        let entry = self.slots.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
        // An evaluation still running would record metrics of a tuner
        // that is gone.
        if let Some(Entry::Evaluating(running)) = entry {
            running.task.abort();
        }
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
        let previous = match previous {
            None => None,
            Some(Entry::Idle(slot)) => Some(*slot),
            Some(Entry::Evaluating(running)) if running.task.is_finished() => (*running).finished(),
            Some(Entry::Evaluating(running)) if running.settings == settings => {
                // Still waiting for Prometheus: the last report until then.
                let report = running.meanwhile();
                self.put(key, Entry::Evaluating(running));
                return report;
            }
            Some(Entry::Evaluating(running)) => {
                // The settings changed: a new tuner starts from the status.
                running.task.abort();
                None
            }
        };
        let slot = match previous {
            Some(slot) if slot.settings == settings => slot,
            other => Slot::new(settings, other, status.and_then(|s| s.effective.as_ref())),
        };
        let auto = slot.settings.mode == TuningMode::Auto;

        let slot = match (&slot.report, is_due(slot.evaluated_at, now, interval)) {
            (Some(_), false) => slot,
            _ => {
                let job = EvaluationJob {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    tuning: tuning.clone(),
                    url,
                    status: status.cloned(),
                    now,
                };
                match self.evaluate_in_background(slot, job).await {
                    Ok(slot) => slot,
                    Err(running) => {
                        let report = running.meanwhile();
                        self.put(key, Entry::Evaluating(Box::new(running)));
                        return report;
                    }
                }
            }
        };
        let report = match &slot.report {
            Some(report) if slot.evaluated_at == Some(now) => report.clone(),
            Some(report) => {
                let elapsed = slot
                    .evaluated_at
                    .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                TuningReport {
                    next_in: Some(interval.saturating_sub(elapsed).max(DUE_TOLERANCE)),
                    ..report.clone()
                }
            }
            None => TuningReport::off(),
        };
        let report = TuningReport {
            in_force: auto.then_some(slot.in_force),
            ..report
        };
        self.put(key, Entry::Idle(Box::new(slot)));
        report
    }

    fn put(&self, key: String, entry: Entry) {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, entry);
    }

    /// Runs one evaluation of `slot` as a task of its own and waits for it
    /// up to [`EVALUATION_WAIT`]: the slot with its new report, or the
    /// evaluation still running (Prometheus is slow or hangs), so that the
    /// reconcile goes on without it.
    async fn evaluate_in_background(&self, mut slot: Slot, job: EvaluationJob) -> Result<Slot, Evaluating> {
        let settings = slot.settings.clone();
        let in_force = slot.in_force;
        let last = slot.report.clone();
        let auto = settings.mode == TuningMode::Auto;
        let (now, interval) = (job.now, job.tuning.interval());
        let metrics = self.metrics.clone();
        let mut task = tokio::spawn(async move {
            let EvaluationJob {
                namespace,
                name,
                tuning,
                url,
                status,
                now,
            } = job;
            let (report, recorded) =
                evaluate(&mut slot, (&namespace, &name), &tuning, &url, status.as_ref(), now).await;
            metrics.observe_tuning(&namespace, &name, &recorded);
            slot.evaluated_at = Some(now);
            slot.report = Some(report);
            slot
        });
        match tokio::time::timeout(EVALUATION_WAIT, &mut task).await {
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(e)) => {
                // A bug, not Prometheus: a new tuner, tried again next interval.
                tracing::error!(error = %e, "tuner evaluation failed");
                let mut slot = Slot::new(settings, None, None);
                slot.evaluated_at = Some(now);
                slot.report = Some(TuningReport {
                    next_in: Some(interval),
                    ..TuningReport::not_running(
                        REASON_FAILED,
                        "the tuner's evaluation failed (see the operator's log): it runs again next interval".into(),
                    )
                });
                Ok(slot)
            }
            Err(_) => Err(Evaluating {
                settings,
                in_force,
                last,
                auto,
                task,
            }),
        }
    }
}

/// How long a reconcile waits for the evaluation it started. Prometheus
/// answers in milliseconds when it is well; when it is slow or hangs (up to
/// [`DEFAULT_QUERY_TIMEOUT`] per query), the reconcile goes on with the last
/// report, so a SliceCache's tuner never holds the operator's reconcile
/// slots (`--max-concurrent-reconciles`) for long.
const EVALUATION_WAIT: Duration = Duration::from_millis(250);

/// While an evaluation runs on, its SliceCache is reconciled again this
/// often to pick up the result.
const EVALUATION_POLL: Duration = Duration::from_secs(1);

/// What one evaluation needs, owned, for its task.
struct EvaluationJob {
    namespace: String,
    name: String,
    tuning: Tuning,
    url: String,
    status: Option<SliceCacheStatus>,
    now: Instant,
}

/// A SliceCache's registry entry.
enum Entry {
    /// No evaluation runs.
    Idle(Box<Slot>),
    /// An evaluation runs on past [`EVALUATION_WAIT`].
    Evaluating(Box<Evaluating>),
}

/// An evaluation that runs on, and what its SliceCache's reconciles use
/// meanwhile.
struct Evaluating {
    settings: TunerSettings,
    in_force: Tunables,
    /// The report of the evaluation before it.
    last: Option<TuningReport>,
    auto: bool,
    task: JoinHandle<Slot>,
}

impl Evaluating {
    /// The report until the evaluation ends: the last one (or, before the
    /// first, that the tuner waits for Prometheus), due again soon.
    fn meanwhile(&self) -> TuningReport {
        let report = self.last.clone().unwrap_or_else(|| {
            TuningReport::not_running(
                REASON_WAITING,
                "the tuner's first evaluation waits for Prometheus; the values in force stay".to_string(),
            )
        });
        TuningReport {
            in_force: self.auto.then_some(self.in_force),
            next_in: Some(EVALUATION_POLL),
            ..report
        }
    }

    /// The slot of a finished evaluation; `None` when it failed.
    fn finished(self) -> Option<Slot> {
        match self.task.now_or_never() {
            Some(Ok(slot)) => Some(slot),
            _ => None,
        }
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
