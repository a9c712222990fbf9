//! Build: from a [`ValidatedSliceCache`] to the Kubernetes objects that run
//! its agents.
//!
//! Contract: pure functions, no client, no clock. The same validated spec,
//! [`Owner`] and tunables in force (the tuner's, in mode Auto: see
//! [`build_tuned`]) always give the same objects, byte for byte, so the step is
//! unit-tested on YAML fixtures and `slicecache-operator render` prints
//! exactly what the controller would apply. Every object carries the
//! `app.kubernetes.io/*` labels, an owner reference to the SliceCache (when
//! its uid is known) and a [`DESIRED_HASH`] annotation that the apply step
//! compares with the live object to skip writes that would change nothing.
//!
//! Changes are classified here. The agents hot-reload the tunables of their
//! config file (slice size, concurrency, retries, TTLs), so those reach only
//! the ConfigMap. Everything else (image, devices, ports, resources,
//! placement, and the config fields that are read once at start) goes into
//! the pod template hash ([`POD_TEMPLATE_HASH`]), and a changed hash rolls
//! the agents within `spec.rollout`.
//!
//! The agents run in a DaemonSet or, with `spec.workload: Deployment`, in a
//! Deployment ([`AgentWorkload`]); both wrap the one pod template that
//! [`pod_template`] builds. A Deployment carries `replicas` only when the
//! spec sets them: unset, the field is left out of the applied object, so
//! under server-side apply the operator does not own it and never resets
//! what an autoscaler wrote.
//!
//! One module per object kind: [`config_map`], [`service_account`],
//! [`service`] (client and peer), [`pdb`], [`fleet`] (the Role, RoleBinding
//! and peer token Secret of fleet mode), [`workload`] (DaemonSet or
//! Deployment) around the [`pod_template`], and the device [`wipe_job`];
//! [`meta`] holds the labels, metadata, annotation keys and hashes they all
//! use. This module puts them together into a [`DesiredState`].

pub mod config_map;
pub mod fleet;
pub mod meta;
pub mod pdb;
pub mod pod_template;
pub mod service;
pub mod service_account;
pub mod wipe_job;
pub mod workload;

use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Service, ServiceAccount},
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use slicecache_api::{agent_config::AgentConfig, status::EffectiveTunables, ValidatedSliceCache};

pub use config_map::{CONFIG_DIR, CONFIG_FILE_KEY, CONFIG_PATH};
pub use fleet::{peer_token_data, FleetObjects, PEER_TOKEN_KEY};
pub use meta::{
    desired_hash, labels, metadata, selector_labels, Owner, APP_NAME, CONFIG_GENERATION, CONFIG_HASH, DESIRED_HASH,
    FIELD_MANAGER, POD_TEMPLATE_HASH,
};
pub use pod_template::{Privilege, AGENT_CONTAINER, DEFAULT_AGENT_IMAGE, NON_ROOT_UID};
pub use wipe_job::{wipe_job, wipe_job_selector, WIPE_COMPONENT, WIPE_NODE};
pub use workload::{template_hash, AgentWorkload};

use meta::{annotate, stamp};

/// Why objects could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the agent config could not be rendered as YAML: {0}")]
    ConfigSerialization(#[source] serde_yaml_ng::Error),
    #[error("agent config {field}: {value:?} has no port (expected host:port)")]
    InvalidListenAddress { field: &'static str, value: String },
    #[error("an object could not be serialised for hashing: {0}")]
    Hash(#[source] serde_json::Error),
}

impl BuildError {
    /// Stable CamelCase reason, for events, conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ConfigSerialization(_) => "ConfigSerialization",
            Self::InvalidListenAddress { .. } => "InvalidListenAddress",
            Self::Hash(_) => "HashFailed",
        }
    }
}

/// Operator-wide settings the build uses.
#[derive(Clone, Debug)]
pub struct BuildDefaults {
    /// Agent image when `spec.image` is unset.
    pub agent_image: String,
}

impl Default for BuildDefaults {
    fn default() -> Self {
        Self {
            agent_image: DEFAULT_AGENT_IMAGE.to_string(),
        }
    }
}

/// Names of the objects built for one SliceCache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectNames {
    pub service_account: String,
    pub config_map: String,
    pub daemon_set: String,
    /// The Deployment of workload Deployment; the same name as the DaemonSet.
    pub deployment: String,
    pub client_service: String,
    pub peer_service: String,
    pub pod_disruption_budget: String,
    /// The Role and RoleBinding of fleet mode (EndpointSlices).
    pub fleet_role: String,
    /// The Secret with the token the agents present to each other.
    pub peer_token: String,
}

impl ObjectNames {
    pub fn for_cache(name: &str) -> Self {
        Self {
            service_account: format!("{name}-agent"),
            config_map: format!("{name}-agent-config"),
            daemon_set: format!("{name}-agent"),
            deployment: format!("{name}-agent"),
            client_service: name.to_string(),
            peer_service: format!("{name}-peers"),
            pod_disruption_budget: format!("{name}-agent"),
            fleet_role: format!("{name}-agent-peers"),
            peer_token: format!("{name}-peer-token"),
        }
    }
}

/// Everything one SliceCache should have in the cluster.
#[derive(Clone, Debug)]
pub struct DesiredState {
    pub names: ObjectNames,
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    pub client_service: Service,
    pub peer_service: Service,
    /// `None` when no PDB is wanted (`rollout.maxUnavailable: 100%`): the
    /// apply step then deletes one left from before.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    /// The DaemonSet or Deployment that runs the agents.
    pub workload: AgentWorkload,
    /// `Some` with `spec.fleet.mode: Shard`; `None` makes the apply step
    /// delete the ones left from before.
    pub fleet: Option<FleetObjects>,
    /// The agent config rendered into the ConfigMap.
    pub agent_config: AgentConfig,
    /// Value of [`POD_TEMPLATE_HASH`] on the pod template.
    pub pod_template_hash: String,
    /// Value of [`CONFIG_HASH`] on the ConfigMap.
    pub config_hash: String,
}

impl DesiredState {
    /// The objects in apply order (the workload last, so that its pods find
    /// their ServiceAccount and ConfigMap), as JSON values for printing.
    pub fn to_values(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        let mut out = vec![
            serde_json::to_value(&self.service_account)?,
            serde_json::to_value(&self.config_map)?,
            serde_json::to_value(&self.client_service)?,
            serde_json::to_value(&self.peer_service)?,
        ];
        if let Some(pdb) = &self.pod_disruption_budget {
            out.push(serde_json::to_value(pdb)?);
        }
        if let Some(fleet) = &self.fleet {
            out.push(serde_json::to_value(&fleet.role)?);
            out.push(serde_json::to_value(&fleet.role_binding)?);
        }
        out.push(match &self.workload {
            AgentWorkload::DaemonSet(ds) => serde_json::to_value(ds)?,
            AgentWorkload::Deployment(deploy) => serde_json::to_value(deploy)?,
        });
        Ok(out)
    }
}

// === builders ===

/// Builds every object for `validated`, with the spec's slice size and
/// concurrency.
pub fn build(
    validated: &ValidatedSliceCache,
    owner: &Owner,
    defaults: &BuildDefaults,
) -> Result<DesiredState, BuildError> {
    build_tuned(validated, owner, defaults, None)
}

/// Builds every object for `validated`; `in_force`, when given, replaces the
/// spec's slice size and concurrency in the agent config (mode Auto: the
/// tuner's values). They are tunables, so they change the ConfigMap and
/// never the pod template hash.
pub fn build_tuned(
    validated: &ValidatedSliceCache,
    owner: &Owner,
    defaults: &BuildDefaults,
    in_force: Option<crate::tuner::Tunables>,
) -> Result<DesiredState, BuildError> {
    let names = ObjectNames::for_cache(&owner.name);
    let in_force = in_force.map(EffectiveTunables::from);
    let mut agent_config = validated.agent_config_tuned(in_force.as_ref());
    let fleet = validated.fleet().is_sharded().then(|| {
        agent_config.fleet.peers_service = Some(names.peer_service.clone());
        fleet::fleet_objects(owner, &names, validated.fleet().token_rotation())
    });
    let peer_port = fleet
        .as_ref()
        .map(|_| listen_port("fleet.peerListen", &agent_config.fleet.peer_listen))
        .transpose()?;
    let client_port = listen_port("listen", &agent_config.listen)?;
    let admin_port = listen_port("adminListen", &agent_config.admin_listen)?;

    let (config_map, config_hash) = config_map::config_map(owner, &names, &agent_config)?;
    let service_account = service_account::service_account(owner, &names);
    let client_service = service::client_service(validated, owner, &names);
    let peer_service = service::peer_service(owner, &names, client_port, admin_port, peer_port);
    let pod_disruption_budget = pdb::pod_disruption_budget(validated, owner, &names);

    let ports = pod_template::Ports {
        client: client_port,
        admin: admin_port,
        peer: peer_port,
    };
    let mut template = pod_template::pod_template(validated, owner, defaults, &names, ports);
    let pod_template_hash = pod_template::pod_template_hash(&template, &agent_config, validated.cache().devices())?;
    annotate(
        template.metadata.get_or_insert_with(ObjectMeta::default),
        POD_TEMPLATE_HASH,
        &pod_template_hash,
    );

    let workload = workload::agent_workload(validated, owner, &names, template);

    let mut state = DesiredState {
        names,
        service_account,
        config_map,
        client_service,
        peer_service,
        pod_disruption_budget,
        workload,
        agent_config,
        pod_template_hash,
        config_hash,
        fleet,
    };
    stamp(&mut state.service_account)?;
    stamp(&mut state.config_map)?;
    stamp(&mut state.client_service)?;
    stamp(&mut state.peer_service)?;
    if let Some(pdb) = state.pod_disruption_budget.as_mut() {
        stamp(pdb)?;
    }
    if let Some(fleet) = state.fleet.as_mut() {
        stamp(&mut fleet.role)?;
        stamp(&mut fleet.role_binding)?;
    }
    match &mut state.workload {
        AgentWorkload::DaemonSet(ds) => stamp(ds)?,
        AgentWorkload::Deployment(deploy) => stamp(deploy)?,
    }
    Ok(state)
}

/// The port of a `host:port` listen address.
fn listen_port(field: &'static str, listen: &str) -> Result<u16, BuildError> {
    listen
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .ok_or_else(|| BuildError::InvalidListenAddress {
            field,
            value: listen.to_string(),
        })
}
