//! The DaemonSet or Deployment that runs the agents ([`AgentWorkload`]),
//! both wrapping the one pod template of [`super::pod_template`]. A
//! Deployment carries `replicas` only when the spec sets them: unset, the
//! field is left out of the applied object, so under server-side apply the
//! operator does not own it and never resets what an autoscaler wrote.
//!
//! Contract: pure, like the whole build step.

use k8s_openapi::{
    api::{
        apps::v1::{
            DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec, DeploymentStrategy,
            RollingUpdateDaemonSet, RollingUpdateDeployment,
        },
        core::v1::PodTemplateSpec,
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use slicecache_api::{spec::WorkloadKind, ValidatedSliceCache};

use super::{
    meta::{metadata, selector_labels, Owner, POD_TEMPLATE_HASH},
    ObjectNames,
};

/// What runs the agents: a DaemonSet or a Deployment around the same pod
/// template. The apply step returns the live object in the same form.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentWorkload {
    DaemonSet(DaemonSet),
    Deployment(Deployment),
}

impl AgentWorkload {
    pub fn kind(&self) -> WorkloadKind {
        match self {
            Self::DaemonSet(_) => WorkloadKind::DaemonSet,
            Self::Deployment(_) => WorkloadKind::Deployment,
        }
    }

    pub fn daemon_set(&self) -> Option<&DaemonSet> {
        match self {
            Self::DaemonSet(ds) => Some(ds),
            Self::Deployment(_) => None,
        }
    }

    pub fn deployment(&self) -> Option<&Deployment> {
        match self {
            Self::Deployment(deploy) => Some(deploy),
            Self::DaemonSet(_) => None,
        }
    }

    /// The agents' pod template.
    pub fn pod_template(&self) -> Option<&PodTemplateSpec> {
        match self {
            Self::DaemonSet(ds) => ds.spec.as_ref().map(|s| &s.template),
            Self::Deployment(deploy) => deploy.spec.as_ref().map(|s| &s.template),
        }
    }

    /// The workload's pod selector as a string (`k=v,k=v`), as the scale
    /// subresource reports it in `status.selector`.
    pub fn selector_string(&self) -> Option<String> {
        let selector = match self {
            Self::DaemonSet(ds) => &ds.spec.as_ref()?.selector,
            Self::Deployment(deploy) => &deploy.spec.as_ref()?.selector,
        };
        let labels = selector.match_labels.as_ref()?;
        Some(
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        )
    }

    /// The value of [`POD_TEMPLATE_HASH`] on the pod template.
    pub fn pod_template_hash(&self) -> Option<&str> {
        template_hash(self.pod_template()?)
    }
}

/// The value of [`POD_TEMPLATE_HASH`] on a pod template.
pub fn template_hash(template: &PodTemplateSpec) -> Option<&str> {
    template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(POD_TEMPLATE_HASH)
        .map(String::as_str)
}

/// The DaemonSet or Deployment around `template`.
pub(super) fn agent_workload(
    validated: &ValidatedSliceCache,
    owner: &Owner,
    names: &ObjectNames,
    template: PodTemplateSpec,
) -> AgentWorkload {
    let selector = LabelSelector {
        match_labels: Some(selector_labels(owner)),
        ..LabelSelector::default()
    };
    let max_unavailable = Some(validated.rollout().max_unavailable().to_int_or_string());
    // pauseBetweenNodes: a new agent counts as available (and the rollout
    // moves on) only after it has been ready this long.
    let min_ready_seconds =
        Some(i32::try_from(validated.rollout().pause_between_nodes().as_secs()).unwrap_or(i32::MAX));
    match validated.workload() {
        WorkloadKind::DaemonSet => AgentWorkload::DaemonSet(DaemonSet {
            metadata: metadata(owner, &names.daemon_set, "cache-agent"),
            spec: Some(DaemonSetSpec {
                selector,
                template,
                update_strategy: Some(DaemonSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDaemonSet {
                        max_unavailable,
                        // Two agents must never open the same device at once.
                        max_surge: Some(IntOrString::Int(0)),
                    }),
                }),
                min_ready_seconds,
                revision_history_limit: Some(5),
            }),
            ..DaemonSet::default()
        }),
        WorkloadKind::Deployment => AgentWorkload::Deployment(Deployment {
            metadata: metadata(owner, &names.deployment, "cache-agent"),
            spec: Some(DeploymentSpec {
                // None leaves the field, and its ownership, to whoever scales
                // the Deployment.
                replicas: validated.replicas(),
                selector,
                template,
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_unavailable,
                        // Each pod has storage of its own, so a new agent
                        // may start before an old one stops.
                        max_surge: Some(IntOrString::Int(1)),
                    }),
                }),
                min_ready_seconds,
                revision_history_limit: Some(5),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }),
    }
}
