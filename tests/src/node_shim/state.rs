//! What the shim knows about its Pods, shared between the Pod workers and
//! the test-facing API: each agent Pod's address, process id, readiness
//! and restarts; the timeline of how many agent Pods were unready; the
//! loopback addresses in use; and the ids of live processes, which a
//! dropped shim kills synchronously.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, TcpListener},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// A Pod of the shim, as tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    /// Its loopback address, once allocated.
    pub ip: Option<IpAddr>,
    /// The running process, if any.
    pub pid: Option<u32>,
    pub ready: bool,
    pub restarts: i32,
    /// Whether the shim runs it (it asks for the agent image).
    pub runs_agent: bool,
    /// The container's log file.
    pub log: std::path::PathBuf,
}

/// One moment of the unready timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelinePoint {
    /// Time since the shim started.
    pub at: Duration,
    /// Agent Pods on the shim's nodes, terminating ones included.
    pub agent_pods: usize,
    /// Those of them not ready.
    pub unready: usize,
}

#[derive(Debug, Default)]
struct Inner {
    pods: BTreeMap<String, PodInfo>,
    timeline: Vec<TimelinePoint>,
    ips: BTreeSet<Ipv4Addr>,
    next_ip: Option<Ipv4Addr>,
    live_pids: BTreeSet<u32>,
}

/// The shared state; every method takes the one lock briefly.
#[derive(Debug)]
pub struct ShimState {
    started: Instant,
    first_ip: Ipv4Addr,
    last_ip: Ipv4Addr,
    inner: Mutex<Inner>,
}

impl ShimState {
    /// Pod addresses come from `first_ip..=last_ip`.
    pub fn new(first_ip: Ipv4Addr, last_ip: Ipv4Addr) -> Self {
        Self {
            started: Instant::now(),
            first_ip,
            last_ip,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking worker must not take the shim's bookkeeping with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or changes the Pod keyed by its uid and records the timeline.
    pub fn update_pod(&self, info: PodInfo) {
        let mut inner = self.lock();
        if inner.pods.get(&info.uid) == Some(&info) {
            return;
        }
        inner.pods.insert(info.uid.clone(), info);
        self.record(&mut inner);
    }

    pub fn remove_pod(&self, uid: &str) {
        let mut inner = self.lock();
        if inner.pods.remove(uid).is_some() {
            self.record(&mut inner);
        }
    }

    fn record(&self, inner: &mut Inner) {
        let agents = inner.pods.values().filter(|p| p.runs_agent);
        let (mut agent_pods, mut unready) = (0, 0);
        for p in agents {
            agent_pods += 1;
            unready += usize::from(!p.ready);
        }
        let last = inner.timeline.last();
        if last.is_none_or(|l| l.agent_pods != agent_pods || l.unready != unready) {
            inner.timeline.push(TimelinePoint {
                at: self.started.elapsed(),
                agent_pods,
                unready,
            });
        }
    }

    pub fn pods(&self) -> Vec<PodInfo> {
        self.lock().pods.values().cloned().collect()
    }

    /// Pods per node (for spreading unscheduled Pods).
    pub fn load(&self) -> BTreeMap<String, usize> {
        let mut load = BTreeMap::new();
        for p in self.lock().pods.values() {
            *load.entry(p.node.clone()).or_insert(0) += 1;
        }
        load
    }

    pub fn timeline(&self) -> Vec<TimelinePoint> {
        self.lock().timeline.clone()
    }

    /// Starts the timeline afresh from the current picture.
    pub fn reset_timeline(&self) {
        let mut inner = self.lock();
        inner.timeline.clear();
        self.record(&mut inner);
    }

    /// A free loopback address on which every port in `ports` can be bound,
    /// after the last one handed out (so a new Pod does not inherit a
    /// just-deleted Pod's address), wrapping around within the range.
    pub fn allocate_ip(&self, ports: &[u16]) -> Option<Ipv4Addr> {
        let mut inner = self.lock();
        let first = u32::from(self.first_ip);
        let last = u32::from(self.last_ip);
        let span = last.checked_sub(first)? + 1;
        let start = inner.next_ip.map_or(first, u32::from);
        // A bounded scan: a port held on 0.0.0.0 makes every address fail.
        for step in 0..span.min(1024) {
            let candidate = Ipv4Addr::from(first + (start - first + step) % span);
            if inner.ips.contains(&candidate) || !bindable(candidate, ports) {
                continue;
            }
            inner.ips.insert(candidate);
            inner.next_ip = Some(Ipv4Addr::from(first + (u32::from(candidate) - first + 1) % span));
            return Some(candidate);
        }
        None
    }

    pub fn release_ip(&self, ip: Ipv4Addr) {
        self.lock().ips.remove(&ip);
    }

    pub fn add_pid(&self, pid: u32) {
        self.lock().live_pids.insert(pid);
    }

    pub fn remove_pid(&self, pid: u32) {
        self.lock().live_pids.remove(&pid);
    }

    /// SIGKILLs every process still registered (the shim is being dropped
    /// without a shutdown).
    pub fn kill_all(&self) {
        let pids: Vec<u32> = std::mem::take(&mut self.lock().live_pids).into_iter().collect();
        for pid in pids {
            if let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

fn bindable(ip: Ipv4Addr, ports: &[u16]) -> bool {
    ports.iter().all(|&port| TcpListener::bind((ip, port)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(uid: &str, ready: bool, runs_agent: bool) -> PodInfo {
        PodInfo {
            namespace: "ns".into(),
            name: uid.into(),
            uid: uid.into(),
            node: "shim-node-1".into(),
            ip: None,
            pid: None,
            ready,
            restarts: 0,
            runs_agent,
            log: "x".into(),
        }
    }

    #[test]
    fn the_timeline_counts_unready_agent_pods_on_change_only() {
        let s = ShimState::new(Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 255, 254));
        s.update_pod(info("a", false, true));
        s.update_pod(info("b", false, true));
        s.update_pod(info("c", false, false));
        s.update_pod(info("a", true, true));
        s.update_pod(info("a", true, true));
        s.update_pod(info("b", true, true));
        s.remove_pod("a");
        let points: Vec<(usize, usize)> = s.timeline().iter().map(|p| (p.agent_pods, p.unready)).collect();
        assert_eq!(points, [(1, 1), (2, 2), (2, 1), (2, 0), (1, 0)]);
        s.reset_timeline();
        assert_eq!(s.timeline().len(), 1);
    }

    #[test]
    fn addresses_are_not_reused_right_away_and_skip_taken_ports() -> std::io::Result<()> {
        let s = ShimState::new(Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 255, 254));
        // No ports to check: pure allocation order.
        let a = s.allocate_ip(&[]);
        let b = s.allocate_ip(&[]);
        assert_eq!(a, Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(b, Some(Ipv4Addr::new(127, 0, 0, 3)));
        if let Some(a) = a {
            s.release_ip(a);
        }
        assert_eq!(s.allocate_ip(&[]), Some(Ipv4Addr::new(127, 0, 0, 4)));
        // A port held on the next address makes the allocator skip it.
        let held = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 5), 0))?;
        let port = held.local_addr()?.port();
        assert_eq!(s.allocate_ip(&[port]), Some(Ipv4Addr::new(127, 0, 0, 6)));
        Ok(())
    }
}
