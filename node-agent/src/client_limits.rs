//! What a client may hold of the agent: connections, and time.
//!
//! A cache on a node's network is reachable by anything that can open a
//! socket, and without limits a few thousand half-sent headers (slowloris)
//! use up the process's descriptors until every request times out and the
//! accept loop spins on `EMFILE`. So the agent caps connections globally
//! (below the descriptor limit, keeping a reserve for the origin, the
//! devices and the admin port, which stays reachable) and per client
//! address, gives a new connection a deadline for its whole first header,
//! and cuts clients that stop reading. Each cut is counted by reason.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge};
use slicecache_api::agent_config::ClientConfig;

/// Descriptors kept back from client connections, besides the origin's.
const DESCRIPTOR_RESERVE: u64 = 128;

/// The limits in force, resolved against the process's descriptor limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub send_timeout: Duration,
    /// Bytes per second; 0 is off.
    pub min_send_rate: u64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl ClientLimits {
    /// Resolves the automatic caps: `descriptors` is the soft descriptor
    /// limit, `origin_connections` what the origin pool may open.
    pub fn resolve(cfg: &ClientConfig, descriptors: u64, origin_connections: u32) -> Self {
        let reserve = DESCRIPTOR_RESERVE + 2 * u64::from(origin_connections);
        let auto = descriptors.saturating_sub(reserve).max(16);
        let max_connections = match cfg.max_connections {
            0 => auto,
            n => u64::from(n).min(auto),
        };
        let max_connections_per_ip = match cfg.max_connections_per_ip {
            0 => (max_connections / 2).max(1),
            n => u64::from(n).min(max_connections),
        };
        Self {
            header_timeout: cfg.header_timeout.get(),
            keepalive_timeout: cfg.keepalive_timeout.get(),
            send_timeout: cfg.send_timeout.get(),
            min_send_rate: cfg.min_send_rate.bytes(),
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            max_connections_per_ip: usize::try_from(max_connections_per_ip).unwrap_or(usize::MAX),
        }
    }
}

/// Raises the soft descriptor limit to the hard one (as nginx's
/// `worker_rlimit_nofile` would) and returns the soft limit in force.
pub fn raise_descriptor_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.maximum.is_some() && limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::info!(error = %e, "could not raise the descriptor limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Why a connection was closed by the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Over `maxConnections`.
    GlobalLimit,
    /// Over `maxConnectionsPerIp`.
    PerIpLimit,
    /// The first header did not arrive in `headerTimeout`.
    HeaderTimeout,
    /// An idle keep-alive connection sent nothing more in time.
    IdleTimeout,
    /// The client stopped reading the response.
    SendTimeout,
}

impl Cut {
    pub fn label(self) -> &'static str {
        match self {
            Cut::GlobalLimit => "global_limit",
            Cut::PerIpLimit => "per_ip_limit",
            Cut::HeaderTimeout => "header_timeout",
            Cut::IdleTimeout => "idle_timeout",
            Cut::SendTimeout => "send_timeout",
        }
    }
}

/// Counts open client connections, overall and per address.
#[derive(Debug)]
pub struct ConnectionGate {
    limits: ClientLimits,
    open: Mutex<Counts>,
    gauge: IntGauge,
    cuts: IntCounterVec,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl ConnectionGate {
    pub fn new(limits: ClientLimits, gauge: IntGauge, cuts: IntCounterVec) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::new(Counts::default()),
            gauge,
            cuts,
        })
    }

    pub fn limits(&self) -> &ClientLimits {
        &self.limits
    }

    /// Admits a new connection from `ip` (`None` for a peer without an IP
    /// address, such as a Unix socket: counted only globally).
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnectionPermit, Cut> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.limits.max_connections {
            drop(open);
            self.count(Cut::GlobalLimit);
            return Err(Cut::GlobalLimit);
        }
        if let Some(ip) = ip {
            let held = open.per_ip.entry(ip).or_insert(0);
            if *held >= self.limits.max_connections_per_ip {
                drop(open);
                self.count(Cut::PerIpLimit);
                return Err(Cut::PerIpLimit);
            }
            *held += 1;
        }
        open.total += 1;
        self.gauge.set(i64::try_from(open.total).unwrap_or(i64::MAX));
        Ok(ConnectionPermit { gate: self.clone(), ip })
    }

    /// Counts a connection the agent closed.
    pub fn count(&self, cut: Cut) {
        self.cuts.with_label_values(&[cut.label()]).inc();
    }

    fn release(&self, ip: Option<IpAddr>) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = ip {
            if let Some(held) = open.per_ip.get_mut(&ip) {
                *held -= 1;
                if *held == 0 {
                    open.per_ip.remove(&ip);
                }
            }
        }
        self.gauge.set(i64::try_from(open.total).unwrap_or(i64::MAX));
    }
}

/// One admitted connection; dropping it frees its place. It travels with
/// the connection from request to request (Pingora's per-connection user
/// context), so a keep-alive connection is counted once.
#[derive(Debug)]
pub struct ConnectionPermit {
    gate: Arc<ConnectionGate>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.gate.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;
    use slicecache_api::units::HumanDuration;

    fn gate(max: u32, per_ip: u32) -> Arc<ConnectionGate> {
        let cfg = ClientConfig {
            max_connections: max,
            max_connections_per_ip: per_ip,
            ..ClientConfig::default()
        };
        let limits = ClientLimits::resolve(&cfg, 1 << 20, 16);
        let gauge = IntGauge::new("g", "g").expect("gauge");
        let cuts = IntCounterVec::new(Opts::new("c", "c"), &["reason"]).expect("counter");
        ConnectionGate::new(limits, gauge, cuts)
    }

    #[test]
    fn caps_per_address_and_overall_and_frees_on_drop() {
        let g = gate(3, 2);
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let b: IpAddr = "127.0.0.3".parse().expect("ip");
        let p1 = g.admit(Some(a)).expect("first");
        let _p2 = g.admit(Some(a)).expect("second");
        assert_eq!(g.admit(Some(a)).err(), Some(Cut::PerIpLimit));
        let _p3 = g.admit(Some(b)).expect("other address");
        assert_eq!(g.admit(Some(b)).err(), Some(Cut::GlobalLimit));
        drop(p1);
        assert_eq!(g.gauge.get(), 2);
        g.admit(Some(b)).expect("a place was freed");
        assert_eq!(g.cuts.with_label_values(&["per_ip_limit"]).get(), 1);
        assert_eq!(g.cuts.with_label_values(&["global_limit"]).get(), 1);
    }

    #[test]
    fn automatic_caps_stay_below_the_descriptor_limit() {
        let cfg = ClientConfig::default();
        let l = ClientLimits::resolve(&cfg, 1024, 256);
        assert_eq!(l.max_connections, 1024 - 128 - 512);
        assert_eq!(l.max_connections_per_ip, (1024 - 128 - 512) / 2);
        let cfg = ClientConfig {
            max_connections: 100_000,
            header_timeout: HumanDuration::secs(3),
            ..ClientConfig::default()
        };
        let l = ClientLimits::resolve(&cfg, 4096, 16);
        assert_eq!(
            l.max_connections,
            4096 - 128 - 32,
            "a configured cap never passes the descriptors"
        );
        assert_eq!(l.header_timeout, Duration::from_secs(3));
    }
}
