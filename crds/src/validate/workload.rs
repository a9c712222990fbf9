//! `spec.workload` and `spec.replicas`: a DaemonSet (one agent per selected
//! node, any storage) or a Deployment (replicas, storage of the pod only).

use super::{cache::node_storage_fields, checks::check_range, error::ValidationError, model::Cache};
use crate::spec::{SliceCacheSpec, WorkloadKind};

pub(super) fn validate(spec: &SliceCacheSpec, cache: &Cache, errors: &mut Vec<ValidationError>) -> WorkloadKind {
    let workload = spec.workload.unwrap_or_default();
    match workload {
        WorkloadKind::DaemonSet => {
            if spec.replicas.is_some() {
                errors.push(ValidationError::ReplicasNeedDeployment { field: "spec.replicas" });
            }
        }
        WorkloadKind::Deployment => {
            if let Some(replicas) = spec.replicas {
                check_range(errors, "spec.replicas", i64::from(replicas), 0, i64::from(i32::MAX));
            }
            if cache.has_node_storage() {
                let disk = spec.cache.as_ref().and_then(|c| c.disk.clone()).unwrap_or_default();
                for (field, _) in node_storage_fields(&disk) {
                    errors.push(ValidationError::NodeStorageWithDeployment { field });
                }
            }
        }
    }
    workload
}
