//! One cache per fleet: the agents of a SliceCache share the key space.
//!
//! Each slice has an owner among the members ([`ring`]): the owner fills it
//! from the origin and keeps it; any other member that misses asks the
//! owner's peer port instead of the origin, and keeps nothing of what it
//! got (so the fleet's capacity is the sum of its members'). A request that
//! arrives on the peer port is never forwarded again: its agent serves it
//! from cache or fills from the origin, whatever its own view of the ring.
//! When a peer fails (refused, slow, broken off, 5xx) the fill goes to the
//! origin directly, never to a second peer, and a per-peer [`breaker`] stops
//! asking a failing peer for a while.
//!
//! Peers prove membership with a shared token (`Authorization: Bearer`);
//! the peer port answers 403 to anything else. The client port ignores the
//! hop marker, so a client cannot make an agent skip the owner.

pub mod breaker;
pub mod membership;
pub mod metrics;
pub mod ring;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use slicecache_api::fleet_config::FleetConfig;

use crate::origin::{OriginClient, OriginSetupError, OriginTarget, OriginTimeouts};
use crate::store::ObjectId;
use breaker::{Admission, Breaker, BreakerPolicy};
use metrics::FleetMetrics;
use ring::{OwnershipKey, Ring, RingMember};

/// The header that marks a request as sent by a peer (on the peer port).
pub const HOP_HEADER: &str = "slicecache-hop";

/// Why the fleet could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("fleet.peers: member {name:?} has address {addr:?}, which is not host:port")]
    PeerAddress { name: String, addr: String },
    #[error("fleet.peers: {0}")]
    PeerClient(#[from] OriginSetupError),
    #[error("fleet.nodeName: no name given, $NODE_NAME is unset and the host name is unreadable; set fleet.nodeName or --node-name")]
    NoName,
}

/// Another member, as this agent reaches it.
#[derive(Debug)]
pub struct Peer {
    pub name: String,
    /// `host:port` of its peer listener.
    pub addr: String,
    pub client: Arc<OriginClient>,
    pub breaker: Breaker,
}

/// The members as this agent sees them at one moment. Replaced whole when
/// membership changes; a request keeps the view it started with.
#[derive(Debug, Default)]
struct View {
    ring: Ring,
    peers: BTreeMap<String, Arc<Peer>>,
}

/// This agent's view of its fleet.
#[derive(Debug)]
pub struct Fleet {
    self_name: String,
    granule: u64,
    view: ArcSwap<View>,
    /// Members from the config file or `--peers`; kept through every
    /// membership change.
    static_members: BTreeMap<String, String>,
    token: String,
    timeouts: OriginTimeouts,
    pub metrics: FleetMetrics,
}

/// Where a slice's fill goes.
#[derive(Clone, Debug)]
pub enum Route {
    /// This agent owns the slice (or runs alone): the origin.
    Origin,
    /// Another member owns it: ask it first.
    Peer(Arc<Peer>),
}

impl Fleet {
    /// A fleet of the static members in `cfg` (this agent's own entry, if
    /// listed, is not dialled). `token` is what peers present. Members found
    /// later (the peers Service's EndpointSlices) come through
    /// [`Fleet::set_members`].
    pub fn new(
        cfg: &FleetConfig,
        self_name: String,
        token: String,
        origin_idle: Duration,
        metrics: FleetMetrics,
    ) -> Result<Self, FleetError> {
        let fleet = Self {
            self_name,
            granule: cfg.granule.bytes(),
            view: ArcSwap::from_pointee(View::default()),
            static_members: cfg.peers.clone(),
            token,
            timeouts: OriginTimeouts {
                connect: cfg.connect_timeout.get(),
                first_byte: cfg.first_byte_timeout.get(),
                idle: origin_idle,
            },
            metrics,
        };
        fleet.set_members(&BTreeMap::new())?;
        Ok(fleet)
    }

    /// Replaces the discovered members (name → `host:port` of the peer
    /// listener) and rebuilds the ring from them, the static members and
    /// this agent. A member whose address is unchanged keeps its
    /// connections and its breaker. Returns whether the ring changed.
    pub fn set_members(&self, discovered: &BTreeMap<String, String>) -> Result<bool, FleetError> {
        let old = self.view.load_full();
        let mut all = self.static_members.clone();
        all.extend(discovered.iter().map(|(n, a)| (n.clone(), a.clone())));
        let mut members = vec![RingMember::new(&self.self_name, 1.0)];
        let mut peers = BTreeMap::new();
        for (name, addr) in &all {
            members.push(RingMember::new(name, 1.0));
            if *name == self.self_name {
                continue;
            }
            let peer = match old.peers.get(name) {
                Some(peer) if peer.addr == *addr => peer.clone(),
                _ => Arc::new(self.dial(name, addr)?),
            };
            peers.insert(name.clone(), peer);
        }
        let ring = Ring::new(members);
        let changed = ring != old.ring || peers.keys().ne(old.peers.keys());
        for gone in old.peers.keys().filter(|n| !peers.contains_key(*n)) {
            let _ = self.metrics.circuit_open.remove_label_values(&[gone]);
        }
        self.metrics.members.set(ring.len() as i64);
        self.metrics.owned_fraction.set(ring.owned_fraction(&self.self_name));
        self.view.store(Arc::new(View { ring, peers }));
        Ok(changed)
    }

    /// A client for the peer listener of `name` at `addr`.
    fn dial(&self, name: &str, addr: &str) -> Result<Peer, FleetError> {
        if addr
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            return Err(FleetError::PeerAddress {
                name: name.to_string(),
                addr: addr.to_string(),
            });
        }
        let target = OriginTarget::parse(&format!("http://{addr}"), Some(name))?;
        let headers = vec![
            (http::header::AUTHORIZATION, format!("Bearer {}", self.token)),
            (http::HeaderName::from_static(HOP_HEADER), "1".into()),
        ];
        Ok(Peer {
            name: name.to_string(),
            addr: addr.to_string(),
            client: OriginClient::with_headers(target, self.timeouts, 64, headers)?,
            breaker: Breaker::new(BreakerPolicy::default()),
        })
    }

    /// The names of the members in the ring now, this agent included.
    pub fn member_names(&self) -> Vec<String> {
        self.view.load().ring.members().iter().map(|m| m.name.clone()).collect()
    }

    /// This agent's member name: the configured one, `$NODE_NAME`, or the
    /// host name.
    pub fn member_name(cfg: &FleetConfig) -> Result<String, FleetError> {
        if let Some(name) = cfg.node_name.clone().filter(|n| !n.is_empty()) {
            return Ok(name);
        }
        if let Some(name) = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()) {
            return Ok(name);
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .ok_or(FleetError::NoName)
    }

    pub fn self_name(&self) -> &str {
        &self.self_name
    }

    /// Where the fill of the slice at `offset` of `object` goes: the
    /// owner's peer port, unless this agent owns it or the owner's breaker
    /// is open.
    pub fn route(&self, object: ObjectId, offset: u64) -> Route {
        let key = OwnershipKey::new(object, offset, self.granule);
        let view = self.view.load();
        let Some(owner) = view.ring.owner(&key) else {
            return Route::Origin;
        };
        let Some(peer) = view.peers.get(&owner.name) else {
            return Route::Origin;
        };
        match peer.breaker.admit(Instant::now()) {
            Admission::Allowed | Admission::Probe => Route::Peer(peer.clone()),
            Admission::Open => {
                self.metrics.count("client", "circuit_open");
                Route::Origin
            }
        }
    }

    /// A peer request failed: count it and feed the breaker.
    pub fn peer_failed(&self, peer: &Peer, result: &str) {
        self.metrics.count("client", result);
        if peer.breaker.failure(Instant::now()) {
            tracing::warn!(peer = %peer.name, "peer failing; going to the origin directly for a while");
        }
        self.metrics
            .circuit_open
            .with_label_values(&[&peer.name])
            .set(i64::from(peer.breaker.is_open()));
    }

    /// A peer answered.
    pub fn peer_answered(&self, peer: &Peer) {
        self.metrics.count("client", "ok");
        if peer.breaker.is_open() {
            tracing::info!(peer = %peer.name, "peer answering again");
        }
        peer.breaker.success();
        self.metrics.circuit_open.with_label_values(&[&peer.name]).set(0);
    }

    /// Whether an `Authorization` header value carries the fleet's token.
    /// The comparison takes the same time wherever the first difference is.
    pub fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some(presented) = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|_| &value[7..])
        else {
            return false;
        };
        let expected = self.token.as_bytes();
        presented.len() == expected.len()
            && presented.iter().zip(expected).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}
