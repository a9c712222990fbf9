//! Cleanup: what happens when a SliceCache is deleted.
//!
//! Contract: runs under the `slicecache.io/cleanup` finalizer. The objects
//! the SliceCache owns go by garbage collection once the finalizer is
//! removed, so by default cleanup only records an Event and lets go; cache
//! devices keep their data. Storage of the pod (`emptyDirFile`,
//! `volumeClaimTemplate`) goes with the pods and is never wiped; storage
//! of the node only exists with a DaemonSet. Devices are wiped only when
//! `cleanup.wipeDevicesOnDelete` is true AND `cleanup.confirmation` is
//! exactly `yes-really-wipe-cache-devices` AND the spec is valid: the agents
//! are stopped first (their DaemonSet is deleted, so no agent holds a
//! device), then one Job per eligible node erases the superblocks. Until
//! every Job succeeded, cleanup returns a [`CleanupError`] that says why it
//! waits; the controller reports it in status and the finalizer stays.
//! While `spec.paused` is true, cleanup does nothing and waits.

use super::api_error::describe;
use k8s_openapi::api::{apps::v1::DaemonSet, batch::v1::Job, core::v1::Node};
use kube::{
    api::{DeleteParams, ListParams, Patch, PatchParams},
    Api, Client, ResourceExt,
};
use slicecache_api::{spec::WIPE_CONFIRMATION, SliceCache, ValidatedSliceCache};

use super::build::{self, BuildDefaults, Owner, FIELD_MANAGER, WIPE_NODE};

/// Why cleanup has not finished.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("spec.paused is true: cleanup waits until it is false")]
    Paused,
    #[error("waiting for the agents of DaemonSet {daemon_set} to stop before wiping devices")]
    AgentsStopping { daemon_set: String },
    #[error("wiping devices: {done}/{total} node Jobs succeeded")]
    WipeInProgress { done: usize, total: usize },
    #[error("wiping devices failed on node(s) {}: see the Jobs' pods; delete a failed Job to retry it", .nodes.join(", "))]
    WipeFailed { nodes: Vec<String> },
    #[error("building wipe Job: {0}")]
    Build(#[source] build::BuildError),
    #[error("{action} during cleanup: {}", describe(source))]
    Kube {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
}

impl CleanupError {
    /// Stable CamelCase reason, for events, conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Paused => "Paused",
            Self::AgentsStopping { .. } => "WaitingForAgentsToStop",
            Self::WipeInProgress { .. } => "WipeInProgress",
            Self::WipeFailed { .. } => "WipeFailed",
            Self::Build(e) => e.reason(),
            Self::Kube { .. } => "CleanupApiFailed",
        }
    }

    /// Whether this is expected waiting rather than a failure.
    pub fn is_waiting(&self) -> bool {
        matches!(
            self,
            Self::Paused | Self::AgentsStopping { .. } | Self::WipeInProgress { .. }
        )
    }
}

/// What cleanup will do with the devices.
#[derive(Debug)]
pub enum Plan {
    /// Devices keep their data; `why` says why in a sentence.
    KeepDevices { why: String },
    /// Wipe the devices of this spec.
    Wipe(Box<ValidatedSliceCache>),
}

/// Decides from the spec alone whether devices are wiped.
pub fn plan(cache: &SliceCache) -> Plan {
    let cleanup = cache.spec.cleanup.clone().unwrap_or_default();
    if cleanup.wipe_devices_on_delete != Some(true) {
        return Plan::KeepDevices {
            why: "cleanup.wipeDevicesOnDelete is not set: cache devices keep their data".into(),
        };
    }
    if cleanup.confirmation.as_deref() != Some(WIPE_CONFIRMATION) {
        return Plan::KeepDevices {
            why: format!(
                "cleanup.wipeDevicesOnDelete is set but cleanup.confirmation is not {WIPE_CONFIRMATION:?}: cache devices keep their data"
            ),
        };
    }
    match ValidatedSliceCache::new(&cache.spec) {
        Ok(v) if v.cache().has_node_storage() => Plan::Wipe(Box::new(v)),
        Ok(v) if v.cache().has_disk() => Plan::KeepDevices {
            why: "the SliceCache has storage of the pod only, which goes with its pods: nothing to wipe".into(),
        },
        Ok(_) => Plan::KeepDevices {
            why: "the SliceCache has no disk: nothing to wipe".into(),
        },
        Err(e) => Plan::KeepDevices {
            why: format!("the spec is invalid ({e}): devices are not wiped"),
        },
    }
}

/// Stops the agents and runs the wipe Jobs; `Ok` once every Job succeeded
/// (or no node needs one).
pub async fn wipe(
    client: &Client,
    validated: &ValidatedSliceCache,
    owner: &Owner,
    defaults: &BuildDefaults,
) -> Result<usize, CleanupError> {
    let names = build::ObjectNames::for_cache(&owner.name);
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &owner.namespace);
    let kube = |action| move |source| CleanupError::Kube { action, source };
    if let Some(ds) = daemon_sets
        .get_opt(&names.daemon_set)
        .await
        .map_err(kube("reading the agent DaemonSet"))?
    {
        if ds.metadata.deletion_timestamp.is_none() {
            daemon_sets
                .delete(&names.daemon_set, &DeleteParams::foreground())
                .await
                .map_err(kube("deleting the agent DaemonSet"))?;
        }
        return Err(CleanupError::AgentsStopping {
            daemon_set: names.daemon_set,
        });
    }

    let jobs: Api<Job> = Api::namespaced(client.clone(), &owner.namespace);
    let existing = jobs
        .list(&ListParams::default().labels(&build::wipe_job_selector(owner)))
        .await
        .map_err(kube("listing wipe Jobs"))?
        .items;
    if existing.is_empty() {
        let nodes: Api<Node> = Api::all(client.clone());
        let selector = validated
            .placement()
            .node_selector()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = nodes
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube("listing nodes"))?
            .items;
        if nodes.is_empty() {
            return Ok(0);
        }
        for node in &nodes {
            let job = build::wipe_job(validated, owner, defaults, &node.name_any()).map_err(CleanupError::Build)?;
            jobs.patch(
                &job.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&job),
            )
            .await
            .map_err(kube("creating a wipe Job"))?;
        }
        return Err(CleanupError::WipeInProgress {
            done: 0,
            total: nodes.len(),
        });
    }

    let failed: Vec<String> = existing
        .iter()
        .filter(|j| job_failed(j))
        .map(|j| j.annotations().get(WIPE_NODE).cloned().unwrap_or_else(|| j.name_any()))
        .collect();
    if !failed.is_empty() {
        return Err(CleanupError::WipeFailed { nodes: failed });
    }
    let done = existing
        .iter()
        .filter(|j| j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0)
        .count();
    if done < existing.len() {
        return Err(CleanupError::WipeInProgress {
            done,
            total: existing.len(),
        });
    }
    Ok(done)
}

fn job_failed(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
}
