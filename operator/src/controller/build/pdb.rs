//! The agents' PodDisruptionBudget: voluntary evictions (node drains) take
//! down no more agents at once than `spec.rollout.maxUnavailable`, the same
//! bound rollouts keep.
//!
//! Contract: pure, like the whole build step.

use k8s_openapi::{
    api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use slicecache_api::{validate::MaxUnavailable, ValidatedSliceCache};

use super::{
    meta::{metadata, selector_labels, Owner},
    ObjectNames,
};

/// The PDB, or `None` when none is wanted (`maxUnavailable: 100%`): the
/// apply step then deletes one left from before.
pub(super) fn pod_disruption_budget(
    validated: &ValidatedSliceCache,
    owner: &Owner,
    names: &ObjectNames,
) -> Option<PodDisruptionBudget> {
    let max_unavailable = validated.rollout().max_unavailable();
    (max_unavailable != MaxUnavailable::Percent(100)).then(|| PodDisruptionBudget {
        metadata: metadata(owner, &names.pod_disruption_budget, "cache-agent"),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(max_unavailable.to_int_or_string()),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(owner)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
