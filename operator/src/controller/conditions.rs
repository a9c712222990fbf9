//! The vocabulary of conditions the pipeline steps report: a
//! [`ConditionUpdate`] (type, holds, reason, message) and the reasons of
//! `TuningActive`. A leaf: steps that produce conditions (tune) and the step
//! that writes them (status) both import it, and neither imports the other
//! for it. The condition types themselves are the API's
//! ([`slicecache_api::status::condition`]).
//!
//! Contract: plain values and constants; imports no pipeline step.

/// One condition to report: type, holds, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate {
    pub type_: &'static str,
    pub holds: bool,
    pub reason: String,
    pub message: String,
}

impl ConditionUpdate {
    pub fn new(type_: &'static str, holds: bool, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            type_,
            holds,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// `TuningActive` reason while mode Auto has usable signals.
pub const REASON_TUNING: &str = "Tuning";
/// `TuningActive` reason while mode Recommend has usable signals.
pub const REASON_RECOMMENDING: &str = "Recommending";
/// `TuningActive` reason in mode Off.
pub const REASON_OFF: &str = "TuningOff";
/// `TuningActive` reason when Recommend or Auto has no Prometheus URL.
pub const REASON_NO_PROMETHEUS: &str = "PrometheusNotConfigured";
/// TuningActive False: the first evaluation still waits for Prometheus.
pub const REASON_WAITING: &str = "WaitingForPrometheus";
/// TuningActive False: an evaluation failed inside the operator.
pub const REASON_FAILED: &str = "TunerFailed";
