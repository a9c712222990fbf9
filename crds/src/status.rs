//! `SliceCache` status: what the operator observed and decided.
//!
//! Written only by the operator (server-side apply on `/status`). Conditions
//! follow the Kubernetes convention (`metav1.Condition`, one entry per type,
//! `lastTransitionTime` moves only when `status` changes); [`set_condition`]
//! keeps that rule in one place.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::ByteSize;

/// Condition types a `SliceCache` reports.
pub mod condition {
    /// Every desired node agent runs the current configuration and is ready.
    pub const READY: &str = "Ready";
    /// A rollout or configuration change is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// Something is wrong: invalid spec, failing agents, missing devices.
    pub const DEGRADED: &str = "Degraded";
    /// The tuner is running (mode Recommend or Auto) and has metrics to work with.
    pub const TUNING_ACTIVE: &str = "TuningActive";

    /// All condition types, in the order they are reported.
    pub const ALL: [&str; 4] = [READY, PROGRESSING, DEGRADED, TUNING_ACTIVE];

    /// `status` of a condition that holds.
    pub const TRUE: &str = "True";
    /// `status` of a condition that does not hold.
    pub const FALSE: &str = "False";
    /// `status` of a condition that could not be determined.
    pub const UNKNOWN: &str = "Unknown";
}

/// Observed state of a SliceCache.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceCacheStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Progressing, Degraded and TuningActive, each with the
    /// generation it was computed from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Node agents: how many should run, how many are ready and up to date, and per node detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodesStatus>,

    /// Agent pods the workload (DaemonSet or Deployment) runs, old and new;
    /// the scale subresource's `status.replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Agent pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// Label selector of the agent pods as a string, e.g.
    /// `app.kubernetes.io/instance=media,app.kubernetes.io/name=slicecache-agent`;
    /// the scale subresource's selector, by which an HPA finds the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Tunables in force on the agents (the spec values, or the tuner's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<EffectiveTunables>,

    /// What the tuner decided last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<TuningStatus>,

    /// Cache hit ratio (slices served from memory or disk) over the last
    /// tuning interval as a percentage, e.g. `93.4%`, as the tuner read it
    /// in mode Recommend or Auto. Unset in mode Off and while the tuner reads
    /// no hit ratio (no traffic, Prometheus unusable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit_ratio: Option<String>,

    /// One cache per fleet (`spec.fleet.mode: Shard`): the members as the
    /// agents see them. Unset in mode Off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
}

/// The fleet's members: the agents whose endpoint in the peers Service is
/// serving and not terminating.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatus {
    /// How many members there are.
    pub members: i32,
    /// The members' names (their nodes), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_names: Vec<String>,
    /// The share of the keys each member owns, e.g. `33.3%` (members have
    /// equal weight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_fraction: Option<String>,
}

impl FleetStatus {
    /// The status of a fleet of `names`.
    pub fn of(names: Vec<String>) -> Self {
        let members = i32::try_from(names.len()).unwrap_or(i32::MAX);
        Self {
            members,
            owned_fraction: (members > 0).then(|| format!("{:.1}%", 100.0 / f64::from(members))),
            member_names: names,
        }
    }
}

/// Node agent counts and per node detail.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodesStatus {
    /// Nodes that should run an agent.
    #[serde(default)]
    pub desired: i32,
    /// Agents that are ready to serve.
    #[serde(default)]
    pub ready: i32,
    /// Agents that run the current pod template.
    #[serde(default)]
    pub updated: i32,
    /// One entry per node that runs an agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["node".into()]))]
    pub per_node: Vec<NodeAgentStatus>,
}

/// One node's agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeAgentStatus {
    /// Node name.
    pub node: String,
    /// Generation of the agent configuration the agent reports as loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_generation: Option<i64>,
    /// L2 devices the agent uses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceStatus>,
}

/// One L2 device of one agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    /// Device or file path as configured.
    pub path: String,
    /// Bytes of the device the cache uses.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub capacity_bytes: i64,
}

/// Tunables in force.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveTunables {
    /// Slice size in force, e.g. `1Mi`.
    pub slice_size: ByteSize,
    /// Origin subrequests per client request in force.
    pub concurrency: u32,
}

/// The tuner's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TuningStatus {
    /// The most recent decision (applied in mode Auto, recommended in mode Recommend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<TuningDecisionStatus>,
}

/// One tuning decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TuningDecisionStatus {
    /// When the decision was made.
    pub time: Time,
    /// Tunables before the decision.
    pub from: EffectiveTunables,
    /// Tunables the decision chose.
    pub to: EffectiveTunables,
    /// Why, in a sentence, e.g. `origin 429s at 3.1%: concurrency 8 -> 4`.
    pub reason: String,
    /// Metric values the decision was based on, by name, formatted as text
    /// (e.g. `hitRatio: "0.934"`, `originAmplification: "1.07"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, String>,
}

// === impl SliceCacheStatus ===

impl SliceCacheStatus {
    /// The condition of type `type_`, if reported.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Whether the condition of type `type_` is reported with status `True`.
    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == condition::TRUE)
    }

    /// Sets or replaces a condition; see [`set_condition`].
    pub fn set_condition(&mut self, new: Condition) {
        set_condition(&mut self.conditions, new);
    }
}

/// Builds a condition of type `type_` that holds (`status` true) or not.
///
/// `reason` should be CamelCase (see [`crate::validate::ValidationError::reason`]).
pub fn new_condition(
    type_: &str,
    status: bool,
    reason: impl Into<String>,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { condition::TRUE } else { condition::FALSE }.to_string(),
        reason: reason.into(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// Sets `new` in `conditions`, replacing the entry of the same type.
///
/// When the status of that type does not change, the old
/// `lastTransitionTime` is kept: it records when the condition last flipped,
/// not when it was last written. Reason, message and generation are always
/// taken from `new`. A new type is appended.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn set_condition_appends_new_types() {
        let mut status = SliceCacheStatus::default();
        status.set_condition(new_condition(
            condition::READY,
            false,
            "Rolling",
            "0/3",
            Some(1),
            at(10),
        ));
        status.set_condition(new_condition(
            condition::DEGRADED,
            false,
            "AsExpected",
            "",
            Some(1),
            at(10),
        ));
        assert_eq!(status.conditions.len(), 2);
        assert!(!status.is_true(condition::READY));
    }

    #[test]
    fn set_condition_keeps_transition_time_when_status_is_unchanged() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            new_condition(condition::READY, false, "Rolling", "0/3", Some(1), at(10)),
        );
        set_condition(
            &mut conditions,
            new_condition(condition::READY, false, "Rolling", "2/3", Some(2), at(20)),
        );
        assert_eq!(conditions.len(), 1);
        let c = &conditions[0];
        assert_eq!(c.last_transition_time, at(10));
        assert_eq!(c.message, "2/3");
        assert_eq!(c.observed_generation, Some(2));
    }

    #[test]
    fn set_condition_moves_transition_time_when_status_flips() {
        let mut status = SliceCacheStatus::default();
        status.set_condition(new_condition(condition::READY, false, "Rolling", "", Some(1), at(10)));
        status.set_condition(new_condition(
            condition::READY,
            true,
            "AllAgentsReady",
            "",
            Some(1),
            at(30),
        ));
        let c = status.condition(condition::READY).expect("ready condition");
        assert_eq!(c.status, condition::TRUE);
        assert_eq!(c.last_transition_time, at(30));
        assert!(status.is_true(condition::READY));
    }
}
