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
pub mod metrics;
pub mod ring;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    pub client: Arc<OriginClient>,
    pub breaker: Breaker,
}

/// This agent's view of its fleet.
#[derive(Debug)]
pub struct Fleet {
    self_name: String,
    granule: u64,
    ring: Ring,
    peers: BTreeMap<String, Arc<Peer>>,
    token: String,
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
    /// listed, is not dialled). `token` is what peers present.
    pub fn new(
        cfg: &FleetConfig,
        self_name: String,
        token: String,
        origin_idle: Duration,
        metrics: FleetMetrics,
    ) -> Result<Self, FleetError> {
        let timeouts = OriginTimeouts {
            connect: cfg.connect_timeout.get(),
            first_byte: cfg.first_byte_timeout.get(),
            idle: origin_idle,
        };
        let mut members = vec![RingMember::new(&self_name, 1.0)];
        let mut peers = BTreeMap::new();
        for (name, addr) in &cfg.peers {
            members.push(RingMember::new(name, 1.0));
            if *name == self_name {
                continue;
            }
            if addr
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            {
                return Err(FleetError::PeerAddress {
                    name: name.clone(),
                    addr: addr.clone(),
                });
            }
            let target = OriginTarget::parse(&format!("http://{addr}"), Some(name))?;
            let headers = vec![
                (http::header::AUTHORIZATION, format!("Bearer {token}")),
                (http::HeaderName::from_static(HOP_HEADER), "1".into()),
            ];
            let client = OriginClient::with_headers(target, timeouts, 64, headers)?;
            peers.insert(
                name.clone(),
                Arc::new(Peer {
                    name: name.clone(),
                    client,
                    breaker: Breaker::new(BreakerPolicy::default()),
                }),
            );
        }
        let ring = Ring::new(members);
        metrics.members.set(ring.len() as i64);
        metrics.owned_fraction.set(ring.owned_fraction(&self_name));
        Ok(Self {
            self_name,
            granule: cfg.granule.bytes(),
            ring,
            peers,
            token,
            metrics,
        })
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

    pub fn peers(&self) -> impl Iterator<Item = &Arc<Peer>> {
        self.peers.values()
    }

    /// Where the fill of the slice at `offset` of `object` goes: the
    /// owner's peer port, unless this agent owns it or the owner's breaker
    /// is open.
    pub fn route(&self, object: ObjectId, offset: u64) -> Route {
        let key = OwnershipKey::new(object, offset, self.granule);
        let Some(owner) = self.ring.owner(&key) else {
            return Route::Origin;
        };
        let Some(peer) = self.peers.get(&owner.name) else {
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
