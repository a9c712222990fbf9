//! The objects of `spec.fleet.mode: Shard`: the agents' right to read the
//! peers Service's EndpointSlices (a Role and its RoleBinding, nothing
//! more), and the Secret holding the token the agents present to each
//! other on their peer ports.
//!
//! Contract: pure, like the whole build step. The Secret built here has no
//! data: the apply step creates it with a fresh random token and rotates it
//! in steps the running agents follow (`controller::peer_token`).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::{
    api::{
        core::v1::Secret,
        rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
    ByteString,
};

use super::{
    meta::{metadata, Owner},
    ObjectNames,
};

/// The key of the peer token in its Secret.
pub const PEER_TOKEN_KEY: &str = "token";

/// Everything fleet mode adds.
#[derive(Clone, Debug)]
pub struct FleetObjects {
    pub role: Role,
    pub role_binding: RoleBinding,
    /// Metadata only: the apply step writes the tokens.
    pub peer_token: Secret,
    /// How often the apply step rotates the token.
    pub token_rotation: Duration,
}

pub(super) fn fleet_objects(owner: &Owner, names: &ObjectNames, token_rotation: Duration) -> FleetObjects {
    FleetObjects {
        token_rotation,
        role: Role {
            metadata: metadata(owner, &names.fleet_role, "cache-agent"),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec!["discovery.k8s.io".into()]),
                resources: Some(vec!["endpointslices".into()]),
                verbs: vec!["get".into(), "list".into(), "watch".into()],
                ..PolicyRule::default()
            }]),
        },
        role_binding: RoleBinding {
            metadata: metadata(owner, &names.fleet_role, "cache-agent"),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: names.fleet_role.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: names.service_account.clone(),
                namespace: Some(owner.namespace.clone()),
                ..Subject::default()
            }]),
        },
        peer_token: Secret {
            metadata: metadata(owner, &names.peer_token, "cache-agent"),
            type_: Some("Opaque".into()),
            ..Secret::default()
        },
    }
}

/// The data of a peer token Secret holding `token`.
pub fn peer_token_data(token: &str) -> BTreeMap<String, ByteString> {
    BTreeMap::from([(PEER_TOKEN_KEY.to_string(), ByteString(token.as_bytes().to_vec()))])
}
