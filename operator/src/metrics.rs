//! The operator's own metrics and its health endpoints.
//!
//! `/metrics` serves Prometheus text: reconciles by result, reconcile
//! duration, errors by reason (the same reasons as Events and conditions);
//! per SliceCache the agents desired and ready (from the DaemonSet status,
//! as `status.nodes` reports them) and what the tuner does
//! ([`TuningEvaluation`]). Per SliceCache series carry only the labels
//! `namespace` and `slicecache` plus a label from a fixed set of values
//! (`knob`, `direction`, `reason`), and go when the SliceCache is deleted
//! ([`Metrics::forget_slicecache`]).
//! `/healthz` answers while the process runs; `/readyz` once this replica
//! leads and its controller runs. The server is a few lines over a TCP
//! listener: three fixed GET routes need no HTTP framework.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::tuner::{HoldReason, Tunables};

/// `knob` label values: the two tunables.
pub const KNOB_SLICE_SIZE: &str = "sliceSize";
pub const KNOB_CONCURRENCY: &str = "concurrency";
const KNOBS: [&str; 2] = [KNOB_SLICE_SIZE, KNOB_CONCURRENCY];
const DIRECTIONS: [&str; 2] = ["up", "down"];

/// Upper bounds of the reconcile duration histogram, in seconds. A settled
/// reconcile takes a few milliseconds, so the buckets are fine below
/// 100 ms, where the target (p99 under 100 ms) is: a quantile is read from
/// them to within a bucket's width.
pub const RECONCILE_BUCKETS: [f64; 20] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// What one tuner evaluation of one SliceCache amounts to, for the metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct TuningEvaluation {
    /// The `TuningActive` reason after the evaluation.
    pub reason: String,
    /// The tunables before and after the decision (equal on a hold): in
    /// mode Auto the values applied, in Recommend the ones recommended.
    /// `None` when no decision was made at all.
    pub change: Option<(Tunables, Tunables)>,
    /// The hold's reason when nothing moved.
    pub held_because: Option<HoldReason>,
    /// The tuner could read the agents' metrics (the hold, if any, is not
    /// for lack of them): this is a successful evaluation.
    pub saw_signals: bool,
    pub interval: Duration,
    pub at: SystemTime,
}

/// Label values in use per SliceCache whose set is open, so that
/// [`Metrics::forget_tuning`] can remove exactly those series.
#[derive(Debug, Default)]
struct SeriesLabels {
    active_reason: Option<String>,
    hold_reasons: BTreeSet<String>,
}

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounterVec,
    duration: HistogramVec,
    errors: IntCounterVec,
    agents_desired: IntGaugeVec,
    agents_ready: IntGaugeVec,
    tuning_decisions: IntCounterVec,
    tuning_holds: IntCounterVec,
    tuning_value: IntGaugeVec,
    tuning_active: IntGaugeVec,
    tuning_last_evaluation: GaugeVec,
    tuning_interval: GaugeVec,
    /// By (namespace, slicecache).
    labels: Mutex<HashMap<(String, String), SeriesLabels>>,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "slicecache_operator_reconciliations_total",
                "SliceCache reconciles by result (ok or error)",
            ),
            &["result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "slicecache_operator_reconcile_duration_seconds",
                "Time one SliceCache reconcile took",
            )
            .buckets(RECONCILE_BUCKETS.to_vec()),
            &[],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "slicecache_operator_reconcile_errors_total",
                "Failed SliceCache reconciles by reason",
            ),
            &["reason"],
        )?;
        const CACHE: [&str; 2] = ["namespace", "slicecache"];
        let agents_desired = IntGaugeVec::new(
            Opts::new(
                "slicecache_operator_agents_desired",
                "Nodes that should run an agent of the SliceCache (its DaemonSet's desiredNumberScheduled)",
            ),
            &CACHE,
        )?;
        let agents_ready = IntGaugeVec::new(
            Opts::new(
                "slicecache_operator_agents_ready",
                "Agents of the SliceCache that are ready (its DaemonSet's numberReady)",
            ),
            &CACHE,
        )?;
        let tuning_decisions = IntCounterVec::new(
            Opts::new(
                "slicecache_operator_tuning_decisions_total",
                "Tuner changes by knob (sliceSize, concurrency) and direction (up, down): applied in mode Auto, recommended in mode Recommend",
            ),
            &["namespace", "slicecache", "knob", "direction"],
        )?;
        let tuning_holds = IntCounterVec::new(
            Opts::new(
                "slicecache_operator_tuning_holds_total",
                "Tuner evaluations that changed nothing, by the hold's reason",
            ),
            &["namespace", "slicecache", "reason"],
        )?;
        let tuning_value = IntGaugeVec::new(
            Opts::new(
                "slicecache_operator_tuning_value",
                "The tuner's value of a knob after its last evaluation (sliceSize in bytes, concurrency): in force in mode Auto, recommended in mode Recommend",
            ),
            &["namespace", "slicecache", "knob"],
        )?;
        let tuning_active = IntGaugeVec::new(
            Opts::new(
                "slicecache_operator_tuning_active",
                "1 for the current reason of the SliceCache's TuningActive condition",
            ),
            &["namespace", "slicecache", "reason"],
        )?;
        let tuning_last_evaluation = GaugeVec::new(
            Opts::new(
                "slicecache_operator_tuning_last_evaluation_timestamp_seconds",
                "Unix time of the tuner's last evaluation that could read the agents' metrics",
            ),
            &CACHE,
        )?;
        let tuning_interval = GaugeVec::new(
            Opts::new(
                "slicecache_operator_tuning_interval_seconds",
                "spec.tuning.interval of the SliceCache while its tuner runs",
            ),
            &CACHE,
        )?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(agents_desired.clone()))?;
        registry.register(Box::new(agents_ready.clone()))?;
        registry.register(Box::new(tuning_decisions.clone()))?;
        registry.register(Box::new(tuning_holds.clone()))?;
        registry.register(Box::new(tuning_value.clone()))?;
        registry.register(Box::new(tuning_active.clone()))?;
        registry.register(Box::new(tuning_last_evaluation.clone()))?;
        registry.register(Box::new(tuning_interval.clone()))?;
        Ok(Self {
            registry,
            reconciliations,
            duration,
            errors,
            agents_desired,
            agents_ready,
            tuning_decisions,
            tuning_holds,
            tuning_value,
            tuning_active,
            tuning_last_evaluation,
            tuning_interval,
            labels: Mutex::new(HashMap::new()),
        })
    }

    /// Records one reconcile; `error` is the reason of a failure.
    pub fn observe_reconcile(&self, elapsed: Duration, error: Option<&str>) {
        self.duration
            .with_label_values::<&str>(&[])
            .observe(elapsed.as_secs_f64());
        match error {
            None => self.reconciliations.with_label_values(&["ok"]).inc(),
            Some(reason) => {
                self.reconciliations.with_label_values(&["error"]).inc();
                self.errors.with_label_values(&[reason]).inc();
            }
        }
    }

    /// Records the agent counts of one SliceCache.
    pub fn observe_agents(&self, namespace: &str, name: &str, desired: i32, ready: i32) {
        self.agents_desired
            .with_label_values(&[namespace, name])
            .set(i64::from(desired));
        self.agents_ready
            .with_label_values(&[namespace, name])
            .set(i64::from(ready));
    }

    /// Sets the current `TuningActive` reason of one SliceCache: its series
    /// is 1, the previous reason's goes.
    pub fn set_tuning_reason(&self, namespace: &str, name: &str, reason: &str) {
        let mut labels = self.labels.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = labels.entry((namespace.to_string(), name.to_string())).or_default();
        if let Some(old) = entry.active_reason.replace(reason.to_string()) {
            if old != reason {
                let _ = self.tuning_active.remove_label_values(&[namespace, name, &old]);
            }
        }
        self.tuning_active.with_label_values(&[namespace, name, reason]).set(1);
    }

    /// Records one tuner evaluation of one SliceCache.
    pub fn observe_tuning(&self, namespace: &str, name: &str, evaluation: &TuningEvaluation) {
        self.set_tuning_reason(namespace, name, &evaluation.reason);
        let cache = [namespace, name];
        if let Some((from, to)) = evaluation.change {
            for (knob, from, to) in [
                (KNOB_SLICE_SIZE, from.slice_size, to.slice_size),
                (KNOB_CONCURRENCY, u64::from(from.concurrency), u64::from(to.concurrency)),
            ] {
                if to != from {
                    let direction = if to > from { "up" } else { "down" };
                    self.tuning_decisions
                        .with_label_values(&[namespace, name, knob, direction])
                        .inc();
                }
                self.tuning_value
                    .with_label_values(&[namespace, name, knob])
                    .set(i64::try_from(to).unwrap_or(i64::MAX));
            }
        }
        if let Some(hold) = evaluation.held_because.map(HoldReason::as_str) {
            self.labels
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry((namespace.to_string(), name.to_string()))
                .or_default()
                .hold_reasons
                .insert(hold.to_string());
            self.tuning_holds.with_label_values(&[namespace, name, hold]).inc();
        }
        if evaluation.saw_signals {
            let at = evaluation.at.duration_since(UNIX_EPOCH).unwrap_or_default();
            self.tuning_last_evaluation
                .with_label_values(&cache)
                .set(at.as_secs_f64());
        }
        self.tuning_interval
            .with_label_values(&cache)
            .set(evaluation.interval.as_secs_f64());
    }

    /// Removes the tuner's series of one SliceCache (its tuner stopped or
    /// the SliceCache is gone).
    pub fn forget_tuning(&self, namespace: &str, name: &str) {
        let labels = self
            .labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(namespace.to_string(), name.to_string()))
            .unwrap_or_default();
        // Removing a series that does not exist is an error to ignore.
        if let Some(reason) = labels.active_reason {
            let _ = self.tuning_active.remove_label_values(&[namespace, name, &reason]);
        }
        for reason in &labels.hold_reasons {
            let _ = self.tuning_holds.remove_label_values(&[namespace, name, reason]);
        }
        for knob in KNOBS {
            let _ = self.tuning_value.remove_label_values(&[namespace, name, knob]);
            for direction in DIRECTIONS {
                let _ = self
                    .tuning_decisions
                    .remove_label_values(&[namespace, name, knob, direction]);
            }
        }
        let _ = self.tuning_last_evaluation.remove_label_values(&[namespace, name]);
        let _ = self.tuning_interval.remove_label_values(&[namespace, name]);
    }

    /// Removes every series of one SliceCache: it is deleted.
    pub fn forget_slicecache(&self, namespace: &str, name: &str) {
        self.forget_tuning(namespace, name);
        let _ = self.agents_desired.remove_label_values(&[namespace, name]);
        let _ = self.agents_ready.remove_label_values(&[namespace, name]);
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics and health listening");
    loop {
        let (mut stream, _) = listener.accept().await?;
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let mut parts = request.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (code, content_type, body) = respond(method, path, &metrics, ready.load(Ordering::Relaxed));
            let response = format!(
                "HTTP/1.1 {code}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Status line, content type and body for one request.
pub fn respond(method: &str, path: &str, metrics: &Metrics, ready: bool) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render()),
        ("GET", "/healthz") => ("200 OK", TEXT, "ok\n".into()),
        ("GET", "/readyz") if ready => ("200 OK", TEXT, "ready\n".into()),
        ("GET", "/readyz") => ("503 Service Unavailable", TEXT, "not leading\n".into()),
        (_, "/metrics" | "/healthz" | "/readyz") => ("405 Method Not Allowed", TEXT, "method not allowed\n".into()),
        _ => (
            "404 Not Found",
            TEXT,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn routes_and_metric_names() {
        let metrics = Metrics::new().unwrap();
        metrics.observe_reconcile(Duration::from_millis(20), None);
        metrics.observe_reconcile(Duration::from_millis(20), Some("ApplyFailed"));
        let (code, _, body) = respond("GET", "/metrics", &metrics, false);
        assert_eq!(code, "200 OK");
        assert!(
            body.contains("slicecache_operator_reconciliations_total{result=\"ok\"} 1"),
            "{body}"
        );
        assert!(body.contains("slicecache_operator_reconcile_errors_total{reason=\"ApplyFailed\"} 1"));
        assert!(body.contains("slicecache_operator_reconcile_duration_seconds_count 2"));
        assert_eq!(respond("GET", "/healthz", &metrics, false).0, "200 OK");
        assert_eq!(respond("GET", "/readyz", &metrics, false).0, "503 Service Unavailable");
        assert_eq!(respond("GET", "/readyz", &metrics, true).0, "200 OK");
        assert_eq!(respond("POST", "/metrics", &metrics, true).0, "405 Method Not Allowed");
        assert_eq!(respond("GET", "/", &metrics, true).0, "404 Not Found");
    }

    #[test]
    fn reconcile_buckets_resolve_milliseconds_below_the_target() {
        assert!(RECONCILE_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        // Quantiles under 100 ms are read to within a few milliseconds.
        let below: Vec<f64> = RECONCILE_BUCKETS.iter().copied().filter(|b| *b <= 0.1).collect();
        assert!(below.len() >= 12, "{below:?}");
        assert!(below.windows(2).all(|w| w[1] - w[0] < 0.03), "{below:?}");
        let metrics = Metrics::new().unwrap();
        metrics.observe_reconcile(Duration::from_micros(2500), None);
        let body = metrics.render();
        assert!(
            body.contains(r#"slicecache_operator_reconcile_duration_seconds_bucket{le="0.002"} 0"#),
            "{body}"
        );
        assert!(
            body.contains(r#"slicecache_operator_reconcile_duration_seconds_bucket{le="0.003"} 1"#),
            "{body}"
        );
    }

    fn evaluation(
        reason: &str,
        ((from_slice, from_conc), (to_slice, to_conc)): ((u64, u32), (u64, u32)),
        held_because: Option<HoldReason>,
        saw_signals: bool,
        at_secs: u64,
    ) -> TuningEvaluation {
        let t = |slice_size, concurrency| Tunables {
            slice_size,
            concurrency,
        };
        TuningEvaluation {
            reason: reason.into(),
            change: Some((t(from_slice, from_conc), t(to_slice, to_conc))),
            held_because,
            saw_signals,
            interval: Duration::from_secs(60),
            at: UNIX_EPOCH + Duration::from_secs(at_secs),
        }
    }

    /// The series of one SliceCache in the rendered text, without comments.
    fn series(metrics: &Metrics, name: &str) -> Vec<String> {
        metrics
            .render()
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(&format!("slicecache=\"{name}\"")))
            .map(str::to_string)
            .collect()
    }

    const MI: u64 = 1 << 20;

    #[test]
    fn tuning_decisions_holds_values_and_reason() {
        let m = Metrics::new().unwrap();
        // A change: concurrency 8 -> 4 (Auto, usable signals).
        m.observe_tuning(
            "shop",
            "media",
            &evaluation("Tuning", ((MI, 8), (MI, 4)), None, true, 1_700_000_000),
        );
        // Then a slice size doubling, a steady hold, and Prometheus down.
        m.observe_tuning(
            "shop",
            "media",
            &evaluation("Tuning", ((MI, 4), (2 * MI, 4)), None, true, 1_700_000_060),
        );
        m.observe_tuning(
            "shop",
            "media",
            &evaluation(
                "Tuning",
                ((2 * MI, 4), (2 * MI, 4)),
                Some(HoldReason::Steady),
                true,
                1_700_000_120,
            ),
        );
        m.observe_tuning(
            "shop",
            "media",
            &evaluation(
                "PrometheusUnreachable",
                ((2 * MI, 4), (2 * MI, 4)),
                Some(HoldReason::PrometheusUnreachable),
                false,
                1_700_000_180,
            ),
        );
        let body = m.render();
        let has = |line: &str| assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
        has(
            r#"slicecache_operator_tuning_decisions_total{direction="down",knob="concurrency",namespace="shop",slicecache="media"} 1"#,
        );
        has(
            r#"slicecache_operator_tuning_decisions_total{direction="up",knob="sliceSize",namespace="shop",slicecache="media"} 1"#,
        );
        has(r#"slicecache_operator_tuning_value{knob="sliceSize",namespace="shop",slicecache="media"} 2097152"#);
        has(r#"slicecache_operator_tuning_value{knob="concurrency",namespace="shop",slicecache="media"} 4"#);
        has(r#"slicecache_operator_tuning_holds_total{namespace="shop",reason="Steady",slicecache="media"} 1"#);
        has(
            r#"slicecache_operator_tuning_holds_total{namespace="shop",reason="PrometheusUnreachable",slicecache="media"} 1"#,
        );
        // Only the current reason has a series.
        has(
            r#"slicecache_operator_tuning_active{namespace="shop",reason="PrometheusUnreachable",slicecache="media"} 1"#,
        );
        assert!(!body.contains(r#"reason="Tuning""#), "{body}");
        // The last evaluation that saw signals, not the blind one.
        has(
            r#"slicecache_operator_tuning_last_evaluation_timestamp_seconds{namespace="shop",slicecache="media"} 1700000120"#,
        );
        has(r#"slicecache_operator_tuning_interval_seconds{namespace="shop",slicecache="media"} 60"#);
        // No direction was counted that did not happen.
        assert!(!body.contains(r#"direction="up",knob="concurrency""#), "{body}");
        assert!(!body.contains(r#"direction="down",knob="sliceSize""#), "{body}");
    }

    #[test]
    fn a_deleted_slicecache_leaves_no_series() {
        let m = Metrics::new().unwrap();
        m.observe_agents("shop", "media", 3, 2);
        m.observe_agents("shop", "other", 1, 1);
        m.observe_tuning(
            "shop",
            "media",
            &evaluation("Recommending", ((MI, 8), (MI, 4)), None, true, 10),
        );
        m.observe_tuning(
            "shop",
            "media",
            &evaluation("Idle", ((MI, 8), (MI, 8)), Some(HoldReason::Idle), true, 70),
        );
        m.set_tuning_reason("shop", "other", "TuningOff");
        let body = m.render();
        assert!(
            body.contains(r#"slicecache_operator_agents_desired{namespace="shop",slicecache="media"} 3"#),
            "{body}"
        );
        assert!(
            body.contains(r#"slicecache_operator_agents_ready{namespace="shop",slicecache="media"} 2"#),
            "{body}"
        );
        // Agents 2, decisions 1, values 2, holds 1, reason 1, last evaluation 1, interval 1.
        assert_eq!(series(&m, "media").len(), 9, "{:#?}", series(&m, "media"));

        // The tuner stops (mode Off): its series go, the agent counts stay.
        m.forget_tuning("shop", "media");
        m.set_tuning_reason("shop", "media", "TuningOff");
        let left = series(&m, "media");
        assert_eq!(left.len(), 3, "{left:#?}");
        assert!(left
            .iter()
            .any(|l| l.starts_with("slicecache_operator_tuning_active{") && l.contains("TuningOff")));

        m.forget_slicecache("shop", "media");
        assert!(series(&m, "media").is_empty(), "{:#?}", series(&m, "media"));
        // Other SliceCaches keep theirs.
        assert_eq!(series(&m, "other").len(), 3, "{:#?}", series(&m, "other"));
    }
}
