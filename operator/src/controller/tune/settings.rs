//! Which tuner a SliceCache gets and where it starts: the settings whose
//! change starts a new [`Tuner`], the tunables in force when one starts,
//! and when an evaluation is due.
//!
//! Contract: pure; the caller supplies the clock readings.

use std::time::{Duration, Instant};

use slicecache_api::{spec::TuningMode, status::EffectiveTunables, ValidatedSliceCache};

#[cfg(doc)]
use crate::tuner::Tuner;
use crate::{
    controller::build::Owner,
    tuner::{Bounds, Selector, Tunables},
};

/// A reconcile this close before the interval is up evaluates anyway, so
/// that a requeue firing a little early does not cost a whole extra wait.
pub(super) const DUE_TOLERANCE: Duration = Duration::from_secs(1);

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
