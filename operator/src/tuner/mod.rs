//! The tuner: turns the agents' Prometheus metrics into slice size and
//! concurrency decisions.
//!
//! Every interval it runs the queries of [`signals`] through the
//! [`prometheus`] client, feeds the [`Signals`] to the control law in
//! [`law`], and gets one [`TuningDecision`] back. The law is pure and keeps
//! its history in a [`Tuner`] value, so it is tested on synthetic signal
//! sequences without Prometheus. Whatever goes wrong on the way (Prometheus
//! down, slow, or without the agents' series) becomes a hold with a reason:
//! the tuner never moves blind. What to do with a decision (status only in
//! mode Recommend, the agents' ConfigMap in mode Auto) is the caller's.

pub mod decision;
pub mod law;
pub mod prometheus;
pub mod signals;

use std::time::{Duration, Instant};

use slicecache_api::validate::Tuning;

pub use decision::{HoldReason, Tunables, TuningDecision};
pub use law::{Bounds, LawConfig, Tuner};
pub use prometheus::{PrometheusClient, QueryError};
pub use signals::{Queries, Selector, Signals};

impl From<&Tuning> for Bounds {
    fn from(t: &Tuning) -> Self {
        let (min_slice_size, max_slice_size) = t.slice_size_bounds();
        let (min_concurrency, max_concurrency) = t.concurrency_bounds();
        Self {
            min_slice_size,
            max_slice_size,
            min_concurrency,
            max_concurrency,
        }
    }
}

/// What one evaluation saw and decided.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The signals, or why there are none.
    pub signals: Result<Signals, QueryError>,
    pub decision: TuningDecision,
}

/// One tuning interval against a live Prometheus: collect the signals, then
/// step the law. `current` is the tunables in force; `None` takes them from
/// the agents' own gauges, and without those the step holds with `NoData`.
pub async fn evaluate(
    client: &PrometheusClient,
    queries: &Queries,
    tuner: &mut Tuner,
    now: Instant,
    current: Option<Tunables>,
) -> Evaluation {
    let signals = signals::collect(client, queries).await;
    let current = current.or_else(|| {
        let s = signals.as_ref().ok()?;
        Some(Tunables {
            slice_size: s.slice_size?,
            concurrency: s.concurrency?,
        })
    });
    let decision = match current {
        Some(current) => tuner.step(now, current, signals.as_ref()),
        None => {
            let reason = match &signals {
                Err(e) => format!("holding: {e}"),
                Ok(_) => "holding: the agents report no slice size or concurrency, and none was given".into(),
            };
            let hold = match &signals {
                Err(QueryError::Unreachable(_)) => HoldReason::PrometheusUnreachable,
                Err(QueryError::Timeout(_)) => HoldReason::QueryTimeout,
                Err(_) => HoldReason::PrometheusError,
                Ok(_) => HoldReason::NoData,
            };
            let unknown = Tunables {
                slice_size: 0,
                concurrency: 0,
            };
            TuningDecision {
                from: unknown,
                to: unknown,
                reason,
                held_because: Some(hold),
                metrics: signals.as_ref().map(Signals::snapshot).unwrap_or_default(),
            }
        }
    };
    Evaluation { signals, decision }
}

/// The rate window for an interval: the interval itself, at least 30s so a
/// rate spans several scrapes at common scrape intervals.
pub fn window_for(interval: Duration) -> Duration {
    interval.max(Duration::from_secs(30))
}
