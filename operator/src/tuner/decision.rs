//! What one tuning step decided, and why.
//!
//! A [`TuningDecision`] is the tuner's whole output: the tunables before and
//! after, a sentence for humans, and, when nothing moved, a stable reason
//! ([`HoldReason`]) for conditions, events and metrics. It converts into the
//! `status.tuning.lastDecision` shape of the API.

use std::{collections::BTreeMap, fmt};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use slicecache_api::{
    quantity::format_bytes,
    status::{EffectiveTunables, TuningDecisionStatus},
    units::ByteSize,
};

/// The two knobs the tuner turns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunables {
    /// Bytes, a power of two.
    pub slice_size: u64,
    /// Origin subrequests in flight per client request.
    pub concurrency: u32,
}

impl fmt::Display for Tunables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "slice {} concurrency {}",
            format_bytes(self.slice_size),
            self.concurrency
        )
    }
}

impl From<Tunables> for EffectiveTunables {
    fn from(t: Tunables) -> Self {
        Self {
            slice_size: ByteSize(t.slice_size),
            concurrency: t.concurrency,
        }
    }
}

/// Why a step left the tunables as they were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldReason {
    /// Prometheus could not be reached.
    PrometheusUnreachable,
    /// A query took longer than the timeout.
    QueryTimeout,
    /// Prometheus answered with an error or something unreadable.
    PrometheusError,
    /// No series matched: nothing scrapes the agents, or the selector is wrong.
    NoData,
    /// Series exist but there was no origin traffic to learn from.
    Idle,
    /// A change is wanted but has not been seen for enough intervals yet.
    Settling,
    /// A change is wanted and confirmed, but the last change is too recent.
    Cooldown,
    /// The wanted change would leave the bounds.
    AtBound,
    /// Every signal is within its band.
    Steady,
}

impl HoldReason {
    /// Stable CamelCase name for status, conditions, events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PrometheusUnreachable => "PrometheusUnreachable",
            Self::QueryTimeout => "QueryTimeout",
            Self::PrometheusError => "PrometheusError",
            Self::NoData => "NoData",
            Self::Idle => "Idle",
            Self::Settling => "Settling",
            Self::Cooldown => "Cooldown",
            Self::AtBound => "AtBound",
            Self::Steady => "Steady",
        }
    }

    /// True when the tuner could not see the agents at all.
    pub fn is_blind(self) -> bool {
        matches!(
            self,
            Self::PrometheusUnreachable | Self::QueryTimeout | Self::PrometheusError | Self::NoData
        )
    }
}

impl fmt::Display for HoldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one tuning step.
#[derive(Clone, Debug, PartialEq)]
pub struct TuningDecision {
    pub from: Tunables,
    pub to: Tunables,
    /// A sentence, e.g. `origin 429/503 at 3.10%: concurrency 8 -> 4`.
    pub reason: String,
    /// Set exactly when `to == from`.
    pub held_because: Option<HoldReason>,
    /// The signals the decision saw, as text by name.
    pub metrics: BTreeMap<String, String>,
}

impl TuningDecision {
    pub fn changed(&self) -> bool {
        self.from != self.to
    }

    /// The `status.tuning.lastDecision` record, stamped with `time`.
    pub fn to_status(&self, time: Time) -> TuningDecisionStatus {
        TuningDecisionStatus {
            time,
            from: self.from.into(),
            to: self.to.into(),
            reason: self.reason.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl fmt::Display for TuningDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.held_because {
            Some(hold) => write!(f, "hold {} ({hold}): {}", self.from, self.reason),
            None => write!(f, "{} -> {}: {}", self.from, self.to, self.reason),
        }
    }
}
