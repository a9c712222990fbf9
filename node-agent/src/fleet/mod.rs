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
//! Load spreads beyond the owner in two ways ([`load`]): a member whose
//! peer-serving load is over `loadBound` times the fleet's average sheds to
//! the next member in rendezvous order, and a key its owner sees asked more
//! than `hotKeyRate` times a second is spread over up to [`HOT_REPLICAS`]
//! holders (`replicas` holders for every key). A holder other than the
//! owner asks the owner once and keeps a copy in memory; it is the only
//! member that forwards a peer's request, and only to the owner, whose
//! answer is never forwarded again.
//!
//! Peers prove membership with a shared token (`Authorization: Bearer`);
//! the peer port answers 403 to anything else. The client port ignores the
//! hop marker, so a client cannot make an agent skip the owner.

pub mod breaker;
pub mod load;
pub mod membership;
pub mod metrics;
pub mod ring;
pub mod token;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use slicecache_api::fleet_config::FleetConfig;

use crate::origin::{OriginClient, OriginSetupError, OriginTarget, OriginTimeouts};
use crate::store::ObjectId;
use breaker::{Admission, Breaker, BreakerPolicy};
use load::{HotKeys, KnownHot, LoadMeter, PeerLoad};
use metrics::FleetMetrics;
use ring::{OwnershipKey, Ring, RingMember};
use token::PeerTokens;

/// The header that marks a request as sent by a peer (on the peer port);
/// its value is what the asker takes the answering member for ([`Hop`]).
pub const HOP_HEADER: &str = "slicecache-hop";

/// Holders of a hot key (at most the fleet's size).
pub const HOT_REPLICAS: usize = 3;

/// An owner sheds only above this many peer requests a second, so a
/// quiet fleet keeps every key at its owner.
pub const SHED_FLOOR: f64 = 16.0;

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
    /// The load it last reported.
    pub load: PeerLoad,
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
    /// The token presented to peers and those accepted from them; replaced
    /// when the token file changes.
    tokens: ArcSwap<PeerTokens>,
    timeouts: OriginTimeouts,
    /// Holders of every key.
    replicas: usize,
    /// Shed when a holder's load is over this times the fleet's average
    /// (0: never).
    load_bound: f64,
    /// Peer requests this agent serves.
    serving: LoadMeter,
    /// As an owner: the keys peers ask for most.
    hot: HotKeys,
    /// As a member: the keys owners marked hot.
    known_hot: KnownHot,
    /// The zero of peers' load report times.
    epoch: Instant,
    pub metrics: FleetMetrics,
}

/// Where a slice's fill goes.
#[derive(Clone, Debug)]
pub enum Route {
    /// This agent owns the slice (or runs alone): the origin.
    Origin,
    /// Ask a peer first; [`Ask`] says what it is to the slice, and so what
    /// this agent keeps of the answer.
    Peer(Arc<Peer>, Ask),
    /// A member asked for a slice this agent does not own (the asker's ring
    /// differs, or it is handing over): the origin, kept in memory only.
    OriginForPeer,
}

/// What the peer a fill asks is to the slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Its owner; this agent keeps the answer in its hot set only.
    Owner,
    /// Another holder (the key is hot or replicated, or the owner sheds);
    /// kept in the hot set only.
    Holder,
    /// Its owner, for this agent as one of its holders: a copy in memory.
    ForHolder,
    /// Its owner before a recent membership change; this agent owns it
    /// now and keeps the answer in every tier.
    HandOver,
    /// Its owner before a recent change, which still holds it; this agent
    /// does not own it and keeps the answer in its hot set only.
    Previous,
}

impl Ask {
    /// The hop header's value for this ask.
    pub fn hop(self) -> &'static str {
        match self {
            Ask::Owner | Ask::ForHolder => Hop::OWNER,
            Ask::Holder => Hop::HOLDER,
            Ask::HandOver | Ask::Previous => Hop::PREVIOUS,
        }
    }
}

/// What a request on the peer port takes this agent for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    /// The owner: serve from cache or fill from the origin, never forward.
    Owner,
    /// A holder: on a miss ask the owner once (never further).
    Holder,
    /// The previous owner: serve from cache or fill from the origin.
    Previous,
}

impl Hop {
    const OWNER: &'static str = "1";
    const HOLDER: &'static str = "holder";
    const PREVIOUS: &'static str = "previous";

    /// Reads the hop header; any value but the two named ones (agents of
    /// an earlier release send `1`) means the owner.
    pub fn parse(value: Option<&[u8]>) -> Self {
        match value {
            Some(v) if v == Self::HOLDER.as_bytes() => Hop::Holder,
            Some(v) if v == Self::PREVIOUS.as_bytes() => Hop::Previous,
            _ => Hop::Owner,
        }
    }
}

impl Fleet {
    /// A fleet of the static members in `cfg` (this agent's own entry, if
    /// listed, is not dialled). `tokens` says what peers present. Members found
    /// later (the peers Service's EndpointSlices) come through
    /// [`Fleet::set_members`].
    pub fn new(
        cfg: &FleetConfig,
        self_name: String,
        tokens: PeerTokens,
        origin_idle: Duration,
        metrics: FleetMetrics,
    ) -> Result<Self, FleetError> {
        let fleet = Self {
            self_name,
            granule: cfg.granule.bytes(),
            view: ArcSwap::from_pointee(View::default()),
            static_members: cfg.peers.clone(),
            tokens: ArcSwap::from_pointee(tokens),
            timeouts: OriginTimeouts {
                connect: cfg.connect_timeout.get(),
                first_byte: cfg.first_byte_timeout.get(),
                idle: origin_idle,
            },
            replicas: usize::from(cfg.replicas.max(1)),
            load_bound: cfg.load_bound,
            serving: LoadMeter::default(),
            hot: HotKeys::new(cfg.hot_key_rate),
            known_hot: KnownHot::default(),
            epoch: Instant::now(),
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
        Ok(Peer {
            name: name.to_string(),
            addr: addr.to_string(),
            client: OriginClient::new(target, self.timeouts, 64)?,
            breaker: Breaker::new(BreakerPolicy::default()),
            load: PeerLoad::default(),
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

    /// Where the fill of a client's miss on the slice at `offset` of
    /// `object` goes: the origin when this agent owns it, else the member
    /// that holds it (the previous owner during a hand-over; the owner; for
    /// a hot or replicated key, the holder this agent's name picks; while
    /// that one is loaded, the next holder in rendezvous order), unless
    /// that member's breaker is open.
    pub fn route(&self, object: ObjectId, offset: u64) -> Route {
        let key = OwnershipKey::new(object, offset, self.granule);
        let view = self.view.load();
        let ranked = view.ring.ranked(&key);
        let Some(owner) = ranked.first() else {
            return Route::Origin;
        };
        if owner.name == self.self_name {
            return self.hand_over(&view, &key);
        }
        // Moved to its owner by a recent change: its previous owner, still
        // in the fleet, holds it (the new owner would fetch it again).
        if let Some(previous) = self
            .previous_owner(&view, &key)
            .filter(|p| p.name != owner.name)
            .and_then(|p| view.peers.get(&p.name))
        {
            return self.ask(previous, Ask::Previous).unwrap_or(Route::Origin);
        }
        let hot = self.known_hot.contains(&key);
        let holders = if hot {
            self.replicas.max(HOT_REPLICAS)
        } else {
            self.replicas
        };
        let mut pick = self.spread(&key, holders.min(ranked.len()));
        let mut reason = (pick > 0).then_some(if hot { "hot" } else { "replicas" });
        if let Some(next) = self.shed(&view, &ranked, pick) {
            (pick, reason) = (next, Some("load"));
        }
        let owner_peer = view.peers.get(&owner.name);
        let route = if pick == 0 {
            owner_peer.and_then(|p| self.ask(p, Ask::Owner))
        } else if ranked[pick].name == self.self_name {
            // This agent is a holder: a copy of the owner's, in memory.
            owner_peer.and_then(|p| self.ask(p, Ask::ForHolder))
        } else {
            view.peers
                .get(&ranked[pick].name)
                .and_then(|p| self.ask(p, Ask::Holder))
        };
        match (route, reason) {
            (Some(route), Some(reason)) => {
                self.metrics.spills.with_label_values(&[reason]).inc();
                route
            }
            (Some(route), None) => route,
            // The holder picked is failing: the owner, else the origin.
            (None, _) => owner_peer
                .filter(|_| pick != 0)
                .and_then(|p| self.ask(p, Ask::Owner))
                .unwrap_or(Route::Origin),
        }
    }

    /// Where the fill of a peer's request goes, when this agent does not own
    /// the slice: a holder asks the owner once; anything else goes to the
    /// origin (and is kept in memory only). `None` when this agent owns it.
    pub fn route_for_peer(&self, object: ObjectId, offset: u64, hop: Hop) -> Option<Route> {
        let key = OwnershipKey::new(object, offset, self.granule);
        let view = self.view.load();
        let owner = view.ring.owner(&key)?;
        if owner.name == self.self_name {
            return None;
        }
        Some(match hop {
            Hop::Holder => view
                .peers
                .get(&owner.name)
                .and_then(|p| self.ask(p, Ask::ForHolder))
                .unwrap_or(Route::OriginForPeer),
            Hop::Owner => {
                // The asker's ring differs from this agent's.
                self.metrics.disagreements.inc();
                Route::OriginForPeer
            }
            Hop::Previous => Route::OriginForPeer,
        })
    }

    /// Which of the first `holders` members of a key's ranking this agent
    /// asks: fixed per (agent, key), so the members spread over the holders
    /// and each keeps asking the same one.
    fn spread(&self, key: &OwnershipKey, holders: usize) -> usize {
        ring::pick(&self.self_name, key, holders)
    }

    /// When the member at `pick` of `ranked` is over the load bound: the
    /// first member after it that is not (this agent included). Members
    /// whose load is unknown count as not loaded.
    fn shed(&self, view: &View, ranked: &[&RingMember], pick: usize) -> Option<usize> {
        if self.load_bound <= 0.0 || ranked.len() < 2 {
            return None;
        }
        let load_of = |name: &str| {
            if name == self.self_name {
                Some(self.serving.rate())
            } else {
                view.peers.get(name).and_then(|p| p.load.current(self.epoch))
            }
        };
        let known: Vec<f64> = ranked.iter().filter_map(|m| load_of(&m.name)).collect();
        let average = known.iter().sum::<f64>() / known.len().max(1) as f64;
        let bound = (average * self.load_bound).max(SHED_FLOOR);
        let over = |m: &RingMember| load_of(&m.name).is_some_and(|l| l > bound);
        if !over(ranked[pick]) {
            return None;
        }
        (pick + 1..ranked.len()).find(|&i| !over(ranked[i]))
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
        view.peers
            .get(&before.name)
            .and_then(|peer| self.ask(peer, Ask::HandOver))
            .unwrap_or(Route::Origin)
    }

    /// Asking `peer`, unless its breaker is open.
    fn ask(&self, peer: &Arc<Peer>, ask: Ask) -> Option<Route> {
        self.admits(peer).then(|| Route::Peer(peer.clone(), ask))
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

    /// A peer answered about `offset` of `object` with `header`: note the
    /// load it reports and whether the key is hot.
    pub fn peer_reported(&self, peer: &Peer, object: ObjectId, offset: u64, header: &http::HeaderMap) {
        let value = |name: &str| header.get(name).and_then(|v| v.to_str().ok());
        if let Some(load) = value(load::LOAD_HEADER).and_then(|v| v.parse::<f64>().ok()) {
            peer.load.report(load, self.epoch);
        }
        if value(load::HOT_HEADER) == Some("1") {
            self.known_hot.mark(OwnershipKey::new(object, offset, self.granule));
            self.metrics.hot_keys.set(self.known_hot.count() as i64);
        }
    }

    /// A peer's request for `offset` of `object` is being served: count it
    /// and return the headers that tell the asker this agent's load and
    /// whether the key is hot here.
    pub fn serving_peer(&self, object: ObjectId, offset: u64) -> [(&'static str, String); 2] {
        self.serving.record();
        let rate = self.serving.rate();
        self.metrics.serving_rate.set(rate);
        let hot = self.hot.note(OwnershipKey::new(object, offset, self.granule));
        [
            (load::LOAD_HEADER, format!("{rate:.1}")),
            (load::HOT_HEADER, if hot { "1" } else { "0" }.to_string()),
        ]
    }

    /// Replaces the tokens; returns whether they changed.
    pub fn set_tokens(&self, tokens: PeerTokens) -> bool {
        if **self.tokens.load() == tokens {
            return false;
        }
        self.tokens.store(Arc::new(tokens));
        true
    }

    /// The `Authorization` value this agent presents to its peers.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.tokens.load().send)
    }

    /// Whether an `Authorization` header value carries one of the fleet's
    /// tokens. Each comparison takes the same time wherever the first
    /// difference is.
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
        let tokens = self.tokens.load();
        tokens.accept.iter().fold(false, |any, token| {
            let expected = token.as_bytes();
            let same = presented.len() == expected.len()
                && presented.iter().zip(expected).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0;
            any | same
        })
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
            PeerTokens {
                send: "token-0123456789abcdef".into(),
                accept: vec!["token-0123456789abcdef".into()],
            },
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
                Route::Peer(p, Ask::HandOver) => {
                    assert_eq!(owner, "d");
                    assert_eq!(p.name, before.owner(&key).expect("a previous owner").name);
                    handed += 1;
                }
                Route::Peer(p, Ask::Owner) => {
                    assert_eq!(p.name, owner);
                    peer += 1;
                }
                Route::Peer(_, ask) => panic!("key {i}: asked as {ask:?}"),
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
            if let Route::Peer(p, Ask::HandOver) = a.route(object, 0) {
                panic!("key {i} handed over by {}, which left", p.name);
            }
        }
    }

    /// `f` with `names` as members, as if they had been for long.
    fn settled(f: &Fleet, names: &[&str]) -> Arc<View> {
        f.set_members(&members(names)).expect("members");
        let view = f.view.load_full();
        f.view.store(Arc::new(View {
            ring: view.ring.clone(),
            peers: view.peers.clone(),
            previous: None,
        }));
        f.view.load_full()
    }

    fn keys(n: u64) -> impl Iterator<Item = (ObjectId, OwnershipKey)> {
        (0..n).map(|i| {
            let object = ObjectId(u128::from(i) * 0x9E37_79B9 + 1);
            (object, OwnershipKey::new(object, 0, 4 << 20))
        })
    }

    fn names(ring: &Ring, key: &OwnershipKey) -> Vec<String> {
        ring.ranked(key).iter().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn an_owner_over_the_load_bound_sheds_to_the_next_member() {
        let a = fleet("a");
        let view = settled(&a, &["b", "c", "d"]);
        // b serves 100 requests a second, c and d 10, a none: the average is
        // 30, the bound 37.5; only b is over it.
        for (name, load) in [("b", 100.0), ("c", 10.0), ("d", 10.0)] {
            view.peers[name].load.report(load, a.epoch);
        }
        let (mut shed, mut kept) = (0, 0);
        for (object, key) in keys(400) {
            let ranked = names(&view.ring, &key);
            let route = a.route(object, 0);
            match (ranked[0].as_str(), route) {
                ("a", Route::Origin) => {}
                ("b", Route::Peer(p, Ask::Holder)) => {
                    assert_eq!(p.name, ranked[1], "the next member in rendezvous order");
                    shed += 1;
                }
                ("b", Route::Peer(p, Ask::ForHolder)) => {
                    assert_eq!(
                        (p.name.as_str(), ranked[1].as_str()),
                        ("b", "a"),
                        "a holds a copy of b's"
                    );
                    shed += 1;
                }
                (owner, Route::Peer(p, Ask::Owner)) if owner != "b" => {
                    assert_eq!(p.name, owner);
                    kept += 1;
                }
                (owner, route) => panic!("a key of {owner} went to {route:?}"),
            }
        }
        assert!(shed > 60 && kept > 120, "{shed} shed, {kept} kept at their owners");
        assert_eq!(a.metrics.spills.with_label_values(&["load"]).get(), shed);
        // Below the floor nobody sheds, whatever the ratio.
        view.peers["b"].load.report(SHED_FLOOR - 1.0, a.epoch);
        for (name, load) in [("c", 0.0), ("d", 0.0)] {
            view.peers[name].load.report(load, a.epoch);
        }
        for (object, key) in keys(100) {
            if let Route::Peer(p, ask) = a.route(object, 0) {
                assert_eq!(
                    (p.name.as_str(), ask),
                    (names(&view.ring, &key)[0].as_str(), Ask::Owner)
                );
            }
        }
    }

    #[test]
    fn a_hot_key_is_spread_over_three_holders() {
        let a = fleet("a");
        let view = settled(&a, &["b", "c", "d", "e"]);
        let mut at = [0u32; 3];
        for (object, key) in keys(600) {
            let ranked = names(&view.ring, &key);
            if ranked[0] == "a" {
                continue;
            }
            a.known_hot.mark(key);
            match a.route(object, 0) {
                Route::Peer(p, Ask::Owner) => {
                    assert_eq!(p.name, ranked[0]);
                    at[0] += 1;
                }
                Route::Peer(p, Ask::Holder) => {
                    let i = ranked.iter().position(|n| *n == p.name).expect("a member");
                    assert!(i == 1 || i == 2, "holder {} is number {i}", p.name);
                    at[i] += 1;
                }
                Route::Peer(p, Ask::ForHolder) => {
                    assert_eq!(p.name, ranked[0]);
                    let i = ranked.iter().position(|n| n == "a").expect("a itself");
                    assert!(i == 1 || i == 2, "a is holder number {i}");
                    at[i] += 1;
                }
                route => panic!("a hot key went to {route:?}"),
            }
        }
        assert!(at.iter().all(|n| *n > 100), "asks per holder rank: {at:?}");
        let hot = a.metrics.spills.with_label_values(&["hot"]).get();
        assert_eq!(hot, u64::from(at[1] + at[2]));
    }

    #[test]
    fn a_holder_asks_the_owner_and_an_owner_ask_for_a_foreign_key_is_a_disagreement() {
        let a = fleet("a");
        let view = settled(&a, &["b", "c"]);
        for (object, key) in keys(200) {
            let owner = names(&view.ring, &key)[0].clone();
            let as_holder = a.route_for_peer(object, 0, Hop::Holder);
            let as_owner = a.route_for_peer(object, 0, Hop::Owner);
            if owner == "a" {
                assert!(as_holder.is_none() && as_owner.is_none(), "a fills its own keys");
                continue;
            }
            match as_holder {
                Some(Route::Peer(p, Ask::ForHolder)) => assert_eq!(p.name, owner),
                other => panic!("a holder's miss went to {other:?}"),
            }
            assert!(matches!(as_owner, Some(Route::OriginForPeer)));
            assert!(matches!(
                a.route_for_peer(object, 0, Hop::Previous),
                Some(Route::OriginForPeer)
            ));
        }
        assert!(a.metrics.disagreements.get() > 100);
    }

    #[test]
    fn the_hop_marker_reads_as_the_asker_meant_it() {
        assert_eq!(Hop::parse(Some(Ask::Holder.hop().as_bytes())), Hop::Holder);
        assert_eq!(Hop::parse(Some(Ask::HandOver.hop().as_bytes())), Hop::Previous);
        assert_eq!(Hop::parse(Some(Ask::ForHolder.hop().as_bytes())), Hop::Owner);
        assert_eq!(Hop::parse(Some(b"1")), Hop::Owner);
        assert_eq!(Hop::parse(None), Hop::Owner);
    }
}
