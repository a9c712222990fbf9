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
    /// The ring before the last change, and when it changed: for
    /// [`HAND_OVER`] after a change, a slice this agent now owns is first
    /// asked of its previous owner.
    previous: Option<(Ring, Instant)>,
}

/// How long after a membership change a new owner asks the previous one.
pub const HAND_OVER: Duration = Duration::from_secs(180);

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
    /// This agent owns it since a recent membership change: ask the
    /// previous owner first, and keep what it sends as an owner does.
    HandOver(Arc<Peer>),
    /// A member asked for a slice this agent does not own (the asker's ring
    /// differs, or it is handing over): the origin, kept in memory only.
    OriginForPeer,
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
        // Static members are the fleet from the start: nothing to hand over.
        let start = fleet.view.load_full();
        fleet.view.store(Arc::new(View {
            ring: start.ring.clone(),
            peers: start.peers.clone(),
            previous: None,
        }));
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
        let previous = if ring == old.ring {
            old.previous.clone()
        } else if old.ring.len() <= 1 {
            // This agent knew only itself (it just started): while it was
            // away the others held its keys among themselves.
            let others = Ring::new(
                ring.members()
                    .iter()
                    .filter(|m| m.name != self.self_name)
                    .cloned()
                    .collect(),
            );
            (!others.is_empty()).then(|| (others, Instant::now()))
        } else {
            Some((old.ring.clone(), Instant::now()))
        };
        for gone in old.peers.keys().filter(|n| !peers.contains_key(*n)) {
            let _ = self.metrics.circuit_open.remove_label_values(&[gone]);
        }
        self.metrics.members.set(ring.len() as i64);
        self.metrics.owned_fraction.set(ring.owned_fraction(&self.self_name));
        self.view.store(Arc::new(View { ring, peers, previous }));
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
        if owner.name == self.self_name {
            return self.hand_over(&view, &key);
        }
        // Moved to its owner by a recent change: its previous owner, still
        // in the fleet, holds it (the new owner would fetch it again).
        let holder = self
            .previous_owner(&view, &key)
            .filter(|p| p.name != owner.name)
            .and_then(|p| view.peers.get(&p.name))
            .or_else(|| view.peers.get(&owner.name));
        let Some(peer) = holder else {
            return Route::Origin;
        };
        if self.admits(peer) {
            Route::Peer(peer.clone())
        } else {
            Route::Origin
        }
    }

    /// Whether this agent owns the slice at `offset` of `object` now.
    pub fn owns(&self, object: ObjectId, offset: u64) -> bool {
        let key = OwnershipKey::new(object, offset, self.granule);
        self.view
            .load()
            .ring
            .owner(&key)
            .is_none_or(|owner| owner.name == self.self_name)
    }

    /// The owner of `key` before the last change, while that change is
    /// recent, when it was another member.
    fn previous_owner<'v>(&self, view: &'v View, key: &OwnershipKey) -> Option<&'v RingMember> {
        let (previous, _) = view.previous.as_ref().filter(|(_, t)| t.elapsed() < HAND_OVER)?;
        previous.owner(key).filter(|m| m.name != self.self_name)
    }

    /// A key this agent owns: its previous owner, while a recent change
    /// moved it here and that member is still in the fleet; else the origin.
    fn hand_over(&self, view: &View, key: &OwnershipKey) -> Route {
        let Some(before) = self.previous_owner(view, key) else {
            return Route::Origin;
        };
        match view.peers.get(&before.name) {
            Some(peer) if self.admits(peer) => Route::HandOver(peer.clone()),
            _ => Route::Origin,
        }
    }

    /// Whether `peer`'s breaker lets a request through (counted when not).
    fn admits(&self, peer: &Peer) -> bool {
        match peer.breaker.admit(Instant::now()) {
            Admission::Allowed | Admission::Probe => true,
            Admission::Open => {
                self.metrics.count("client", "circuit_open");
                false
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

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Registry;

    fn fleet(name: &str) -> Fleet {
        let metrics = FleetMetrics::new(&Registry::new()).expect("metrics");
        Fleet::new(
            &FleetConfig::default(),
            name.to_string(),
            "token-0123456789abcdef".into(),
            Duration::from_secs(30),
            metrics,
        )
        .expect("a fleet")
    }

    fn members(names: &[&str]) -> BTreeMap<String, String> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), format!("127.0.0.{}:8081", i + 2)))
            .collect()
    }

    #[test]
    fn a_joining_member_asks_the_previous_owners_of_its_new_keys() {
        let d = fleet("d");
        assert!(d.set_members(&members(&["a", "b", "c", "d"])).expect("members"));
        let ring = Ring::new(["a", "b", "c", "d"].iter().map(|n| RingMember::new(n, 1.0)).collect());
        let before = Ring::new(["a", "b", "c"].iter().map(|n| RingMember::new(n, 1.0)).collect());
        let (mut handed, mut peer) = (0, 0);
        for i in 0..400u64 {
            let object = ObjectId(u128::from(i) * 0x9E37_79B9);
            let key = OwnershipKey::new(object, 0, 4 << 20);
            let owner = ring.owner(&key).expect("an owner").name.clone();
            match d.route(object, 0) {
                Route::HandOver(p) => {
                    assert_eq!(owner, "d");
                    assert_eq!(p.name, before.owner(&key).expect("a previous owner").name);
                    handed += 1;
                }
                Route::Peer(p) => {
                    assert_eq!(p.name, owner);
                    peer += 1;
                }
                Route::Origin | Route::OriginForPeer => {
                    panic!("key {i}: d knows every member, so no key goes to the origin")
                }
            }
        }
        assert!(
            handed > 60 && peer > 240,
            "{handed} handed over, {peer} to their owners"
        );
    }

    #[test]
    fn a_member_that_left_hands_nothing_over() {
        let a = fleet("a");
        a.set_members(&members(&["a", "b", "c"])).expect("members");
        // Before: {a, b} for this agent's first view; now b leaves: a's new
        // keys were b's, and b is gone, so they go to the origin.
        a.set_members(&members(&["a", "c"])).expect("members");
        for i in 0..200u64 {
            let object = ObjectId(u128::from(i) * 0x0051_ED27);
            if let Route::HandOver(p) = a.route(object, 0) {
                panic!("key {i} handed over by {}, which left", p.name);
            }
        }
    }
}
