//! Prometheus metrics of the fleet: peer traffic by role and result, the
//! ring, and the breakers. The fleet's headline number, origin bytes per
//! client byte, comes from `slicecache_origin_bytes_total` and
//! `slicecache_client_bytes_total` summed over the members.

use prometheus::{
    exponential_buckets, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

/// Metric handles; clones share the underlying values.
#[derive(Clone, Debug)]
pub struct FleetMetrics {
    /// role = client (this agent asked a peer) | server (a peer asked this
    /// agent); result = ok | error | timeout | circuit_open | refused.
    pub peer_requests: IntCounterVec,
    /// direction = in (bytes from peers) | out (bytes served to peers).
    pub peer_bytes: IntCounterVec,
    /// Time from a peer request to its response header (client role).
    pub peer_ttfb: Histogram,
    pub members: IntGauge,
    /// Membership changes applied to the ring.
    pub ring_changes: IntCounter,
    pub owned_fraction: Gauge,
    /// 1 while the breaker of `peer` is open or probing.
    pub circuit_open: IntGaugeVec,
    /// Misses sent to a holder other than the owner, by reason: load (the
    /// owner was over the bound), hot (a hot key), replicas.
    pub spills: IntCounterVec,
    /// Peer requests for a key this agent does not own, from a member
    /// that took it for the owner (their rings differ).
    pub disagreements: IntCounter,
    /// Peer requests this agent serves per second (decaying average).
    pub serving_rate: Gauge,
    /// Keys owners marked hot that this agent knows of.
    pub hot_keys: IntGauge,
}

impl FleetMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            peer_requests: IntCounterVec::new(
                Opts::new("slicecache_peer_requests_total", "Peer requests by role and result."),
                &["role", "result"],
            )?,
            peer_bytes: IntCounterVec::new(
                Opts::new(
                    "slicecache_peer_bytes_total",
                    "Body bytes exchanged with peers, by direction.",
                ),
                &["direction"],
            )?,
            peer_ttfb: Histogram::with_opts(
                HistogramOpts::new(
                    "slicecache_peer_ttfb_seconds",
                    "Time from a request to a peer to its response header.",
                )
                .buckets(exponential_buckets(0.0001, 2.0, 16)?),
            )?,
            members: IntGauge::new(
                "slicecache_fleet_members",
                "Members of the fleet this agent sees, itself included.",
            )?,
            ring_changes: IntCounter::new(
                "slicecache_fleet_ring_changes_total",
                "Membership changes applied to the ownership ring.",
            )?,
            owned_fraction: Gauge::new(
                "slicecache_fleet_owned_fraction",
                "Share of the fleet's keys this agent owns.",
            )?,
            circuit_open: IntGaugeVec::new(
                Opts::new(
                    "slicecache_peer_circuit_open",
                    "1 while the circuit breaker of a peer is open.",
                ),
                &["peer"],
            )?,
            spills: IntCounterVec::new(
                Opts::new(
                    "slicecache_fleet_spills_total",
                    "Misses sent to a holder other than the slice's owner, by reason (load, hot, replicas).",
                ),
                &["reason"],
            )?,
            disagreements: IntCounter::new(
                "slicecache_fleet_disagreements_total",
                "Peer requests for a slice this agent does not own from a member whose ring says it does.",
            )?,
            serving_rate: Gauge::new(
                "slicecache_fleet_peer_load",
                "Peer requests this agent serves per second (decaying average), as it reports to peers.",
            )?,
            hot_keys: IntGauge::new(
                "slicecache_fleet_hot_keys",
                "Keys their owners marked hot that this agent spreads over several holders.",
            )?,
        };
        // Every reason from the start, so a fleet that never spilled shows 0.
        for reason in ["load", "hot", "replicas"] {
            m.spills.with_label_values(&[reason]);
        }
        registry.register(Box::new(m.peer_requests.clone()))?;
        registry.register(Box::new(m.peer_bytes.clone()))?;
        registry.register(Box::new(m.peer_ttfb.clone()))?;
        registry.register(Box::new(m.members.clone()))?;
        registry.register(Box::new(m.ring_changes.clone()))?;
        registry.register(Box::new(m.owned_fraction.clone()))?;
        registry.register(Box::new(m.circuit_open.clone()))?;
        registry.register(Box::new(m.spills.clone()))?;
        registry.register(Box::new(m.disagreements.clone()))?;
        registry.register(Box::new(m.serving_rate.clone()))?;
        registry.register(Box::new(m.hot_keys.clone()))?;
        Ok(m)
    }

    pub fn count(&self, role: &str, result: &str) {
        self.peer_requests.with_label_values(&[role, result]).inc();
    }
}
