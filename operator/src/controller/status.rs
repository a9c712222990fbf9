//! Status: what the SliceCache reports, from what was applied and observed.
//!
//! Contract: [`compute`] is pure: it takes the previous status, the
//! generation and what the earlier steps found, and returns the new status.
//! Conditions keep their `lastTransitionTime` unless their status flips (see
//! [`slicecache_api::status::set_condition`]), so an unchanged world computes
//! an equal status, and [`write`] is called only when the status changed. It
//! writes by server-side apply on the `/status` subresource with the
//! operator's one field manager.
//!
//! Condition reasons (documented for users in `docs/operations.md`):
//! - `Ready`: `AllAgentsReady`, `AgentsNotReady`, `NoEligibleNodes`
//!   (DaemonSet), `ScaledToZero` (Deployment), `Reconciling`, or the reason
//!   of an error that stopped reconciling.
//! - `Progressing`: `RollingOut`, `RolloutComplete`, `Paused`,
//!   `CleaningUp`, or an error reason.
//! - `Degraded`: `AsExpected`, `AgentsUnavailable`, or an error reason such
//!   as `InvalidSpec`, `PurgeTokenSecretNotFound`, `ApplyFailed`.
//! - `TuningActive` (from the [`tune`](super::tune) step): `TuningOff`;
//!   True `Tuning` (Auto) or `Recommending` (Recommend) while signals are
//!   usable; False `PrometheusUnreachable`, `QueryTimeout`,
//!   `PrometheusError`, `NoData`, `Idle` while the tuner holds for lack of
//!   them; `PrometheusNotConfigured`.
//!
//! `status.effective` is the slice size and concurrency rendered into the
//! agents' ConfigMap (the tuner's in mode Auto); `status.tuning.lastDecision`
//! is the tune step's record, `status.hitRatio` the hit ratio its last
//! evaluation read. `status.nodes`, `replicas`, `readyReplicas` and
//! `selector` come from the live DaemonSet or Deployment ([`agent_counts`]);
//! the last three serve the scale subresource.

use super::api_error::describe;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    api::{Patch, PatchParams},
    Api, Client, Resource, ResourceExt,
};
use slicecache_api::spec::WorkloadKind;
use slicecache_api::{
    status::{condition, new_condition, EffectiveTunables, FleetStatus, NodesStatus, TuningStatus},
    SliceCache, SliceCacheStatus, ValidatedSliceCache,
};

use super::{
    apply::Applied,
    build::{AgentWorkload, DesiredState, CONFIG_GENERATION, FIELD_MANAGER},
    conditions::ConditionUpdate,
    tune::TuningReport,
};

/// Why the status could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("writing status of SliceCache {name}: {}", describe(source))]
    Write {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl StatusError {
    /// Stable CamelCase reason, for events, conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Write { .. } => "StatusWriteFailed",
        }
    }
}

/// What the reconcile found, as input to [`compute`].
#[derive(Debug)]
pub enum Observed<'a> {
    /// The desired state was applied.
    Applied {
        validated: &'a ValidatedSliceCache,
        desired: &'a DesiredState,
        applied: &'a Applied,
        /// What the tune step reported (`TuningActive`, `lastDecision`).
        tuning: &'a TuningReport,
    },
    /// Reconciling stopped short: `updates` replace their conditions, and
    /// conditions that were never reported yet are added as not holding,
    /// with `fallback_reason`.
    Stopped {
        updates: Vec<ConditionUpdate>,
        fallback_reason: &'a str,
    },
}

/// The new status of a SliceCache at `generation`.
pub fn compute(
    old: Option<&SliceCacheStatus>,
    generation: i64,
    observed: Observed<'_>,
    now: &Time,
) -> SliceCacheStatus {
    let mut status = old.cloned().unwrap_or_default();
    status.observed_generation = Some(generation);
    let mut set = |u: ConditionUpdate| {
        status.set_condition(new_condition(
            u.type_,
            u.holds,
            u.reason,
            u.message,
            Some(generation),
            now.clone(),
        ));
    };
    match observed {
        Observed::Applied {
            validated: _,
            desired,
            applied,
            tuning,
        } => {
            for u in applied_conditions(desired, applied) {
                set(u);
            }
            set(tuning.condition.clone());
            status.hit_ratio = tuning.hit_ratio.clone();
            if let Some(decision) = &tuning.last_decision {
                status.tuning = Some(TuningStatus {
                    last_decision: Some(decision.clone()),
                });
            }
            let counts = agent_counts(&applied.workload);
            let per_node = old
                .and_then(|o| o.nodes.as_ref())
                .map(|n| n.per_node.clone())
                .unwrap_or_default();
            status.nodes = Some(NodesStatus {
                desired: counts.desired,
                ready: counts.ready,
                updated: counts.updated,
                per_node,
            });
            status.replicas = Some(counts.total);
            status.ready_replicas = Some(counts.ready);
            status.selector = desired.workload.selector_string();
            status.fleet = applied.fleet_members.clone().map(FleetStatus::of);
            status.effective = Some(EffectiveTunables {
                slice_size: desired.agent_config.tunables.slice_size,
                concurrency: desired.agent_config.tunables.concurrency,
            });
        }
        Observed::Stopped {
            updates,
            fallback_reason,
        } => {
            let old_types: Vec<String> = old
                .map(|o| o.conditions.iter().map(|c| c.type_.clone()).collect())
                .unwrap_or_default();
            let updated: Vec<&'static str> = updates.iter().map(|u| u.type_).collect();
            for u in updates {
                set(u);
            }
            for type_ in condition::ALL {
                if !updated.contains(&type_) && !old_types.iter().any(|t| t == type_) {
                    set(ConditionUpdate::new(
                        type_,
                        false,
                        fallback_reason,
                        "not determined: reconciling stopped early",
                    ));
                }
            }
        }
    }
    status.conditions.sort_by_key(|c| {
        condition::ALL
            .iter()
            .position(|t| *t == c.type_)
            .unwrap_or(condition::ALL.len())
    });
    status
}

/// Agent counts of a live DaemonSet or Deployment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentCounts {
    /// Whether the workload's controller has observed its current spec.
    pub current: bool,
    /// Agents that should run: the DaemonSet's desired nodes, or the
    /// Deployment's replicas (1 when unset).
    pub desired: i32,
    /// Agents that are ready.
    pub ready: i32,
    /// Agents that run the current pod template.
    pub updated: i32,
    /// Agent pods that exist, old and new.
    pub total: i32,
    /// Pods of an old template that still run (Deployments, which start new
    /// pods before old ones go); 0 for a DaemonSet, whose old pods count
    /// against `updated`.
    pub old: i32,
}

/// What the live workload reports about its agents.
pub fn agent_counts(workload: &AgentWorkload) -> AgentCounts {
    match workload {
        AgentWorkload::DaemonSet(ds) => {
            let st = ds.status.clone().unwrap_or_default();
            AgentCounts {
                current: ds.status.is_some()
                    && st.observed_generation.is_some()
                    && st.observed_generation == ds.metadata.generation,
                desired: st.desired_number_scheduled,
                ready: st.number_ready,
                updated: st.updated_number_scheduled.unwrap_or(0),
                total: st.current_number_scheduled,
                old: 0,
            }
        }
        AgentWorkload::Deployment(deploy) => {
            let st = deploy.status.clone().unwrap_or_default();
            let updated = st.updated_replicas.unwrap_or(0);
            let total = st.replicas.unwrap_or(0);
            AgentCounts {
                current: deploy.status.is_some()
                    && st.observed_generation.is_some()
                    && st.observed_generation == deploy.metadata.generation,
                desired: deploy.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                ready: st.ready_replicas.unwrap_or(0),
                updated,
                total,
                old: (total - updated).max(0),
            }
        }
    }
}

fn applied_conditions(desired: &DesiredState, applied: &Applied) -> Vec<ConditionUpdate> {
    let counts = agent_counts(&applied.workload);
    let kind = applied.workload.kind();
    let current = counts.current;
    let want = counts.desired;
    let ready = counts.ready;
    let updated = counts.updated;
    let config_generation = applied
        .config_map
        .annotations()
        .get(CONFIG_GENERATION)
        .cloned()
        .unwrap_or_else(|| "unknown".into());
    let hash = &desired.pod_template_hash;
    let rolling = !current || updated < want || counts.old > 0;

    let ready_c = if !current {
        ConditionUpdate::new(
            condition::READY,
            false,
            "Reconciling",
            format!(
                "waiting for the {} controller to pick up the current pod template",
                kind.as_str()
            ),
        )
    } else if want == 0 && kind == WorkloadKind::Deployment {
        ConditionUpdate::new(
            condition::READY,
            false,
            "ScaledToZero",
            "the Deployment runs no agents: spec.replicas (or an autoscaler) is 0",
        )
    } else if want == 0 {
        ConditionUpdate::new(
            condition::READY,
            false,
            "NoEligibleNodes",
            "no node matches spec.placement (nodeSelector, affinity, tolerations)",
        )
    } else if ready == want && updated == want {
        ConditionUpdate::new(
            condition::READY,
            true,
            "AllAgentsReady",
            format!("{ready}/{want} agents ready"),
        )
    } else {
        ConditionUpdate::new(
            condition::READY,
            false,
            "AgentsNotReady",
            format!("{ready}/{want} agents ready, {updated}/{want} run the current pod template"),
        )
    };
    let progressing = if rolling {
        ConditionUpdate::new(
            condition::PROGRESSING,
            true,
            "RollingOut",
            format!("{updated}/{want} agents run pod template {hash}; config generation {config_generation}"),
        )
    } else {
        ConditionUpdate::new(
            condition::PROGRESSING,
            false,
            "RolloutComplete",
            format!("all agents run pod template {hash}; config generation {config_generation}"),
        )
    };
    let degraded = if !rolling && ready < want {
        ConditionUpdate::new(
            condition::DEGRADED,
            true,
            "AgentsUnavailable",
            format!("{} of {want} agents are not ready", want - ready),
        )
    } else {
        ConditionUpdate::new(condition::DEGRADED, false, "AsExpected", "")
    };
    vec![ready_c, progressing, degraded]
}

/// The current time as a condition timestamp.
pub fn now() -> Time {
    Time(Timestamp::now())
}

/// Writes `status` by server-side apply on `/status`.
pub async fn write(client: &Client, cache: &SliceCache, status: &SliceCacheStatus) -> Result<(), StatusError> {
    let name = cache.name_any();
    let api: Api<SliceCache> = Api::namespaced(client.clone(), &cache.namespace().unwrap_or_default());
    let body = serde_json::json!({
        "apiVersion": SliceCache::api_version(&()),
        "kind": SliceCache::kind(&()),
        "status": status,
    });
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(|source| StatusError::Write { name, source })?;
    Ok(())
}

/// Writes `new` when it differs from the status `cache` carries.
pub async fn write_if_changed(
    client: &Client,
    cache: &SliceCache,
    new: &SliceCacheStatus,
) -> Result<bool, StatusError> {
    if cache.status.as_ref() == Some(new) {
        return Ok(false);
    }
    write(client, cache, new).await?;
    Ok(true)
}
