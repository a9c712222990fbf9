//! The agents' ServiceAccount: one of their own, with no API token mounted,
//! as the agent never talks to the Kubernetes API.
//!
//! Contract: pure, like the whole build step.

use k8s_openapi::api::core::v1::ServiceAccount;

use super::{
    meta::{metadata, Owner},
    ObjectNames,
};

pub(super) fn service_account(owner: &Owner, names: &ObjectNames) -> ServiceAccount {
    ServiceAccount {
        metadata: metadata(owner, &names.service_account, "cache-agent"),
        // The agent never talks to the Kubernetes API.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}
