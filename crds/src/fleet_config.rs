//! The `fleet:` section of the agent's configuration file: how the agents of
//! one SliceCache form one cache. Each slice has an owner among the members,
//! and only the owner fetches it from the origin; the others ask the owner's
//! peer port. With no members listed and no peers Service named, the agent
//! is a cache of its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, HumanDuration};

/// Default peer listener.
pub const DEFAULT_PEER_LISTEN: &str = "0.0.0.0:8081";
/// Default fleet granule: slices of one aligned 4 MiB span share an owner.
pub const DEFAULT_GRANULE: ByteSize = ByteSize::mib(4);
/// Largest fleet granule.
pub const MAX_GRANULE: u64 = 1 << 30;
/// The peer Service port's name, which the agents look for in the
/// EndpointSlices of the peers Service.
pub const PEER_PORT_NAME: &str = "peer";

/// Fleet membership, ownership and peer settings. Restart to change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetConfig {
    /// This agent's member name; in Kubernetes, the node name, so that an
    /// agent that restarts on its node owns what its disk holds again.
    /// Defaults to `$NODE_NAME`, then the host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Address the peer listener binds (only fleet members may use it).
    #[serde(default = "default_peer_listen")]
    pub peer_listen: String,
    /// Static members: name → `host:port` of its peer listener. This
    /// agent's own name may be in the list. Non-empty turns fleet mode on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peers: BTreeMap<String, String>,
    /// Kubernetes membership: the headless Service whose EndpointSlices
    /// list the members (endpoints that are serving and not terminating;
    /// member name = the endpoint's node). Set, it turns fleet mode on and
    /// the agent watches the slices; `peers` may still add static members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers_service: Option<String>,
    /// Namespace of `peersService`. Defaults to `$POD_NAMESPACE`, then the
    /// namespace of the Pod's service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// File holding the shared token peers present to each other. Required
    /// in fleet mode: the peer port refuses requests without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_token_file: Option<String>,
    /// Ownership granule: a power of two that the slice size divides, so a
    /// slice-size change never moves ownership.
    #[serde(default = "default_granule")]
    pub granule: ByteSize,
    /// Time to connect to a peer before going to the origin instead.
    #[serde(default = "default_peer_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Time for a peer's first response byte before going to the origin.
    #[serde(default = "default_peer_first_byte_timeout")]
    pub first_byte_timeout: HumanDuration,
    /// Members that hold each slice: the owner fills it from the origin,
    /// the others copy it from the owner into memory, and each member asks
    /// the holder its name picks. 1 to 3.
    #[serde(default = "default_replicas", skip_serializing_if = "is_default_replicas")]
    pub replicas: u8,
    /// Peer requests a second for one granule at which its owner marks it
    /// hot: the members then spread it over 3 holders. 0 turns it off.
    #[serde(default = "default_hot_key_rate", skip_serializing_if = "is_default_hot_key_rate")]
    pub hot_key_rate: u32,
    /// A holder whose peer-serving load is over this times the fleet's
    /// average is skipped for the next one in rendezvous order. 0 turns
    /// shedding off.
    #[serde(default = "default_load_bound", skip_serializing_if = "is_default_load_bound")]
    pub load_bound: f64,
}

impl FleetConfig {
    /// Whether every field has its default (such a section is not rendered).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the agent runs as a member of a fleet.
    pub fn enabled(&self) -> bool {
        !self.peers.is_empty() || self.peers_service.is_some()
    }
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            node_name: None,
            peer_listen: default_peer_listen(),
            peers: BTreeMap::new(),
            peers_service: None,
            namespace: None,
            peer_token_file: None,
            granule: default_granule(),
            connect_timeout: default_peer_connect_timeout(),
            first_byte_timeout: default_peer_first_byte_timeout(),
            replicas: default_replicas(),
            hot_key_rate: default_hot_key_rate(),
            load_bound: default_load_bound(),
        }
    }
}

fn default_peer_listen() -> String {
    DEFAULT_PEER_LISTEN.to_string()
}
fn default_granule() -> ByteSize {
    DEFAULT_GRANULE
}
fn default_peer_connect_timeout() -> HumanDuration {
    HumanDuration::millis(200)
}
fn default_peer_first_byte_timeout() -> HumanDuration {
    HumanDuration::secs(1)
}
// Defaults are not rendered, so an operator upgrade that adds a setting
// leaves the agents' configuration (and their pods) as they were.
fn is_default_replicas(v: &u8) -> bool {
    *v == default_replicas()
}
fn is_default_hot_key_rate(v: &u32) -> bool {
    *v == default_hot_key_rate()
}
fn is_default_load_bound(v: &f64) -> bool {
    *v == default_load_bound()
}
fn default_replicas() -> u8 {
    1
}
fn default_hot_key_rate() -> u32 {
    64
}
fn default_load_bound() -> f64 {
    1.25
}
