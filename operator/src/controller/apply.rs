//! Apply: make the cluster hold the built objects.
//!
//! Contract: read the live objects, all at once ([`LiveObjects`]); write
//! each built object by server-side apply (one field manager,
//! [`FIELD_MANAGER`], with `force`) only when its [`DESIRED_HASH`]
//! annotation differs from the built one, so a reconcile that changes
//! nothing makes no writes and waits for one round of reads. Objects that are no
//! longer wanted are deleted when they are ours. An object of the same name
//! that another controller owns is never taken over. Returns what was
//! written and the live workload, for the status step.
//!
//! The agents run in a DaemonSet or a Deployment of the same name; after
//! applying the one the spec asks for, the other kind is deleted when it
//! is ours, so switching `spec.workload` replaces the agents (the new ones
//! start before the old ones go).
//!
//! A live object whose managed fields were edited by hand but whose hash
//! annotation was kept is repaired on the next change of the SliceCache.

use super::api_error::describe;
use std::fmt::Debug;

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment},
        core::v1::{ConfigMap, PodTemplateSpec, Secret, Service, ServiceAccount},
        discovery::v1::EndpointSlice,
        policy::v1::PodDisruptionBudget,
        rbac::v1::{Role, RoleBinding},
    },
    NamespaceResourceScope,
};
use kube::{
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    Api, Client, Resource, ResourceExt,
};
use serde::{de::DeserializeOwned, Serialize};

use slicecache_api::{
    fleet_config::PEER_PORT_NAME,
    fleet_members::{slice_members, SERVICE_NAME_LABEL},
};

use super::build::{peer_token_data, FleetObjects, PEER_TOKEN_KEY};
use super::build::{template_hash, AgentWorkload, DesiredState, ObjectNames, DESIRED_HASH, FIELD_MANAGER};
use super::peer_token;
use k8s_openapi::jiff::Timestamp;

/// Why the built objects could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("reading {kind} {name}: {}", describe(source))]
    Read {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying {kind} {name}: {}", describe(source))]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {name}: {}", describe(source))]
    Delete {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {name} exists and is not controlled by this SliceCache; delete or rename it")]
    NotOwned { kind: &'static str, name: String },
}

impl ApplyError {
    /// Stable CamelCase reason, for events, conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Read { .. } => "ReadFailed",
            Self::Apply { .. } => "ApplyFailed",
            Self::Delete { .. } => "DeleteFailed",
            Self::NotOwned { .. } => "ObjectNotOwned",
        }
    }
}

/// What one object's apply did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
    Deleted,
}

/// What applying the desired state did.
#[derive(Clone, Debug)]
pub struct Applied {
    /// `(kind, name, change)` for every object that was written or deleted.
    pub changes: Vec<(&'static str, String, Change)>,
    /// The DaemonSet or Deployment as the API server returned it.
    pub workload: AgentWorkload,
    /// The ConfigMap as the API server returned it.
    pub config_map: ConfigMap,
    /// The pod template hash the live workload had before this apply, when
    /// it existed and differed: a rollout starts.
    pub rollout_from: Option<String>,
    /// In fleet mode, the members listed by the peers Service's
    /// EndpointSlices, sorted.
    pub fleet_members: Option<Vec<String>>,
}

impl Applied {
    pub fn created(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.changes
            .iter()
            .filter(|(_, _, c)| *c == Change::Created)
            .map(|(k, n, _)| (*k, n.as_str()))
    }

    pub fn deleted(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.changes
            .iter()
            .filter(|(_, _, c)| *c == Change::Deleted)
            .map(|(k, n, _)| (*k, n.as_str()))
    }

    pub fn change_of(&self, kind: &str) -> Change {
        self.changes
            .iter()
            .find(|(k, _, _)| *k == kind)
            .map_or(Change::Unchanged, |(_, _, c)| *c)
    }

    /// Whether anything was written.
    pub fn wrote(&self) -> bool {
        !self.changes.is_empty()
    }
}

/// The live objects every SliceCache has (or had), as one apply starts.
/// They are read concurrently: the writes that follow depend on what was
/// read, never on each other's results, and a settled reconcile then waits
/// for one round trip to the API server instead of seven in a row (with
/// 1,000 SliceCaches on a busy control plane, the sequential reads made
/// most of a reconcile's time).
#[derive(Debug, Default)]
pub struct LiveObjects {
    pub service_account: Option<ServiceAccount>,
    pub config_map: Option<ConfigMap>,
    pub client_service: Option<Service>,
    pub peer_service: Option<Service>,
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    pub daemon_set: Option<DaemonSet>,
    pub deployment: Option<Deployment>,
}

impl LiveObjects {
    /// Reads the objects `names` names in `namespace`, concurrently. The
    /// requests are sent in field order.
    pub async fn read(client: &Client, namespace: &str, names: &ObjectNames) -> Result<Self, ApplyError> {
        let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
        let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        let (service_account, config_map, client_service, peer_service, pod_disruption_budget, daemon_set, deployment) =
            futures::try_join!(
                read(&service_accounts, &names.service_account),
                read(&config_maps, &names.config_map),
                read(&services, &names.client_service),
                read(&services, &names.peer_service),
                read(&pdbs, &names.pod_disruption_budget),
                read(&daemon_sets, &names.daemon_set),
                read(&deployments, &names.deployment),
            )?;
        Ok(Self {
            service_account,
            config_map,
            client_service,
            peer_service,
            pod_disruption_budget,
            daemon_set,
            deployment,
        })
    }
}

/// Applies `desired` in `namespace`; `owner_uid` is the SliceCache's uid.
pub async fn apply(
    client: &Client,
    namespace: &str,
    owner_uid: &str,
    desired: &DesiredState,
) -> Result<Applied, ApplyError> {
    let mut changes = Vec::new();
    let mut record = |kind: &'static str, name: &str, change: Change| {
        if change != Change::Unchanged {
            changes.push((kind, name.to_string(), change));
        }
    };

    let live = LiveObjects::read(client, namespace, &desired.names).await?;
    // Fleet mode was on when the live peer Service has a peer port.
    let was_sharded = live.peer_service.as_ref().is_some_and(has_peer_port);
    // What the workload refers to is written first, and concurrently: the
    // writes depend only on what was read, so a new SliceCache waits for
    // one round trip here instead of five in a row. The requests are sent
    // in this order.
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
    let live_pdb = live.pod_disruption_budget;
    let pdb = async {
        match &desired.pod_disruption_budget {
            Some(pdb) => apply_with(&pdbs, live_pdb, owner_uid, pdb).await.map(|(_, c)| c),
            None => delete_live_if_owned(&pdbs, live_pdb, owner_uid, &desired.names.pod_disruption_budget).await,
        }
    };
    let ((_, service_account), (config_map, config_map_change), (_, client_service), (_, peer_service), pdb) = futures::try_join!(
        apply_with(
            &service_accounts,
            live.service_account,
            owner_uid,
            &desired.service_account
        ),
        apply_with(&config_maps, live.config_map, owner_uid, &desired.config_map),
        apply_with(&services, live.client_service, owner_uid, &desired.client_service),
        apply_with(&services, live.peer_service, owner_uid, &desired.peer_service),
        pdb,
    )?;
    record("ServiceAccount", &desired.names.service_account, service_account);
    record("ConfigMap", &desired.names.config_map, config_map_change);
    record("Service", &desired.names.client_service, client_service);
    record("Service", &desired.names.peer_service, peer_service);
    record("PodDisruptionBudget", &desired.names.pod_disruption_budget, pdb);

    let names = &desired.names;
    match &desired.fleet {
        Some(fleet) => {
            let (_, c) = apply_one(client, namespace, owner_uid, &fleet.role).await?;
            record("Role", &names.fleet_role, c);
            let (_, c) = apply_one(client, namespace, owner_uid, &fleet.role_binding).await?;
            record("RoleBinding", &names.fleet_role, c);
            let c = ensure_peer_token(client, namespace, owner_uid, fleet).await?;
            record("Secret", &names.peer_token, c);
        }
        None if was_sharded => {
            let c = delete_if_owned::<RoleBinding>(client, namespace, owner_uid, &names.fleet_role).await?;
            record("RoleBinding", &names.fleet_role, c);
            let c = delete_if_owned::<Role>(client, namespace, owner_uid, &names.fleet_role).await?;
            record("Role", &names.fleet_role, c);
            let c = delete_if_owned::<Secret>(client, namespace, owner_uid, &names.peer_token).await?;
            record("Secret", &names.peer_token, c);
        }
        None => {}
    }

    let (workload, rollout_from) = match &desired.workload {
        AgentWorkload::DaemonSet(ds) => {
            let (applied, from, c, removed) = apply_workload(
                client,
                namespace,
                owner_uid,
                desired,
                (ds, live.daemon_set),
                (&names.deployment, live.deployment),
                |ds| ds.spec.as_ref().map(|s| &s.template),
            )
            .await?;
            record("DaemonSet", &names.daemon_set, c);
            record("Deployment", &names.deployment, removed);
            (AgentWorkload::DaemonSet(applied), from)
        }
        AgentWorkload::Deployment(deploy) => {
            let (applied, from, c, removed) = apply_workload(
                client,
                namespace,
                owner_uid,
                desired,
                (deploy, live.deployment),
                (&names.daemon_set, live.daemon_set),
                |d| d.spec.as_ref().map(|s| &s.template),
            )
            .await?;
            record("Deployment", &names.deployment, c);
            record("DaemonSet", &names.daemon_set, removed);
            (AgentWorkload::Deployment(applied), from)
        }
    };

    let fleet_members = match &desired.fleet {
        Some(_) => Some(fleet_members(client, namespace, &names.peer_service).await?),
        None => None,
    };

    Ok(Applied {
        changes,
        workload,
        config_map,
        rollout_from,
        fleet_members,
    })
}

/// The live pod template's hash, when it differs from the desired one.
/// Applies the agents' workload `object` (kind `K`, found as `live`), then
/// deletes the workload of the other kind (`other`: its name and what was
/// found) if this SliceCache left one from a switch. Returns the applied
/// object, the live pod template hash when the template changes (a rollout
/// starts), and both changes.
async fn apply_workload<K, Other>(
    client: &Client,
    namespace: &str,
    owner_uid: &str,
    desired: &DesiredState,
    (object, live): (&K, Option<K>),
    (other, other_live): (&str, Option<Other>),
    template: fn(&K) -> Option<&PodTemplateSpec>,
) -> Result<(K, Option<String>, Change, Change), ApplyError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
    Other: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let from = changed_template(live.as_ref().and_then(template), desired);
    let (applied, change) = apply_with(&api, live, owner_uid, object).await?;
    let other_api: Api<Other> = Api::namespaced(client.clone(), namespace);
    let removed = delete_live_if_owned(&other_api, other_live, owner_uid, other).await?;
    Ok((applied, from, change, removed))
}

fn changed_template(live: Option<&PodTemplateSpec>, desired: &DesiredState) -> Option<String> {
    live.and_then(template_hash)
        .filter(|h| *h != desired.pod_template_hash)
        .map(str::to_string)
}

async fn apply_one<K>(client: &Client, namespace: &str, owner_uid: &str, desired: &K) -> Result<(K, Change), ApplyError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let live = read(&api, &desired.name_any()).await?;
    apply_with(&api, live, owner_uid, desired).await
}

async fn read<K>(api: &Api<K>, name: &str) -> Result<Option<K>, ApplyError>
where
    K: Resource<DynamicType = ()> + k8s_openapi::Resource + Clone + Debug + DeserializeOwned,
{
    api.get_opt(name).await.map_err(|source| ApplyError::Read {
        kind: kind_of::<K>(),
        name: name.to_string(),
        source,
    })
}

async fn apply_with<K>(api: &Api<K>, live: Option<K>, owner_uid: &str, desired: &K) -> Result<(K, Change), ApplyError>
where
    K: Resource<DynamicType = ()> + k8s_openapi::Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = desired.name_any();
    let change = match &live {
        Some(live) if !controlled_by(live, owner_uid) => {
            return Err(ApplyError::NotOwned {
                kind: kind_of::<K>(),
                name,
            })
        }
        Some(live) if live.annotations().get(DESIRED_HASH) == desired.annotations().get(DESIRED_HASH) => {
            return Ok((live.clone(), Change::Unchanged));
        }
        Some(_) => Change::Updated,
        None => Change::Created,
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = api
        .patch(&name, &params, &Patch::Apply(desired))
        .await
        .map_err(|source| ApplyError::Apply {
            kind: kind_of::<K>(),
            name: name.clone(),
            source,
        })?;
    tracing::info!(kind = kind_of::<K>(), %name, ?change, "applied");
    Ok((applied, change))
}

/// The members the EndpointSlices of the peers Service `service` list
/// (the agents' own rule: serving, not terminating, named by node).
async fn fleet_members(client: &Client, namespace: &str, service: &str) -> Result<Vec<String>, ApplyError> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={service}"));
    let slices = api.list(&params).await.map_err(|source| ApplyError::Read {
        kind: "EndpointSlice",
        name: format!("of Service {service}"),
        source,
    })?;
    let mut names: Vec<String> = slices
        .items
        .iter()
        .flat_map(|slice| slice_members(slice, 0).into_keys())
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Whether a peer Service carries the fleet's peer port.
fn has_peer_port(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|ports| ports.iter().any(|p| p.name.as_deref() == Some(PEER_PORT_NAME)))
}

/// Creates the peer token Secret with a fresh random token when it does
/// not exist, and takes the next step of its rotation when one is due
/// ([`peer_token::next_step`]); otherwise it is left as it is, since the
/// running agents hold its tokens. A Secret of that name that this
/// SliceCache does not control is never taken over.
async fn ensure_peer_token(
    client: &Client,
    namespace: &str,
    owner_uid: &str,
    fleet: &FleetObjects,
) -> Result<Change, ApplyError> {
    let desired = &fleet.peer_token;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let name = desired.name_any();
    match read(&api, &name).await? {
        Some(live) if controlled_by(&live, owner_uid) => rotate_peer_token(&api, &live, fleet.token_rotation).await,
        Some(_) => Err(ApplyError::NotOwned { kind: "Secret", name }),
        None => {
            let token = random_token();
            let mut secret = desired.clone();
            secret.data = Some(peer_token_data(&token));
            api.create(&PostParams::default(), &secret)
                .await
                .map_err(|source| ApplyError::Apply {
                    kind: "Secret",
                    name: name.clone(),
                    source,
                })?;
            tracing::info!(kind = "Secret", %name, "created the fleet's peer token");
            Ok(Change::Created)
        }
    }
}

/// Writes the next rotation step of the live peer token Secret, if one is
/// due.
async fn rotate_peer_token(
    api: &Api<Secret>,
    live: &Secret,
    period: std::time::Duration,
) -> Result<Change, ApplyError> {
    let name = live.name_any();
    let annotations = live.metadata.annotations.clone().unwrap_or_default();
    let text = live
        .data
        .as_ref()
        .and_then(|d| d.get(PEER_TOKEN_KEY))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default();
    let written = annotations
        .get(peer_token::WRITTEN_ANNOTATION)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .or_else(|| live.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or_else(Timestamp::now);
    let step = annotations.get(peer_token::STEP_ANNOTATION).map(String::as_str);
    let now = Timestamp::now();
    let Some(write) = peer_token::next_step(&text, step, written, now, period, random_token) else {
        return Ok(Change::Unchanged);
    };
    let annotations = peer_token::annotations_after(annotations, &write, now);
    // A merge patch: annotations given as null are removed.
    let mut meta = serde_json::Map::new();
    for key in [peer_token::STEP_ANNOTATION, peer_token::WRITTEN_ANNOTATION] {
        meta.insert(
            key.into(),
            annotations
                .get(key)
                .map_or(serde_json::Value::Null, |v| v.as_str().into()),
        );
    }
    let patch = serde_json::json!({
        "metadata": { "annotations": meta },
        "data": peer_token_data(&write.text),
    });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| ApplyError::Apply {
            kind: "Secret",
            name: name.clone(),
            source,
        })?;
    tracing::info!(kind = "Secret", %name, step = write.step.unwrap_or("done"), "rotated the fleet's peer token one step");
    Ok(Change::Updated)
}

/// 32 random bytes, hex-encoded: the fleet's peer token.
fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deletes `name` when it exists and this SliceCache controls it.
async fn delete_if_owned<K>(client: &Client, namespace: &str, owner_uid: &str, name: &str) -> Result<Change, ApplyError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let live = read(&api, name).await?;
    delete_live_if_owned(&api, live, owner_uid, name).await
}

/// Deletes `name`, found as `live`, when it exists and this SliceCache
/// controls it.
async fn delete_live_if_owned<K>(
    api: &Api<K>,
    live: Option<K>,
    owner_uid: &str,
    name: &str,
) -> Result<Change, ApplyError>
where
    K: Resource<DynamicType = ()> + k8s_openapi::Resource + Clone + Debug + DeserializeOwned,
{
    match live {
        Some(live) if controlled_by(&live, owner_uid) && live.meta().deletion_timestamp.is_none() => {
            api.delete(name, &DeleteParams::background())
                .await
                .map_err(|source| ApplyError::Delete {
                    kind: kind_of::<K>(),
                    name: name.to_string(),
                    source,
                })?;
            tracing::info!(kind = kind_of::<K>(), %name, "deleted");
            Ok(Change::Deleted)
        }
        _ => Ok(Change::Unchanged),
    }
}

/// Whether `object`'s controller owner reference points at `owner_uid`.
pub fn controlled_by<K: Resource>(object: &K, owner_uid: &str) -> bool {
    object
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && r.uid == owner_uid)
}

fn kind_of<K: k8s_openapi::Resource>() -> &'static str {
    K::KIND
}
