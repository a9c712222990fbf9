//! A per-peer circuit breaker: after a run of failures, stop asking the
//! peer for a while and go to the origin directly; then let one probe
//! through, and close again when it succeeds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When the breaker opens and how long it stays open.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerPolicy {
    /// Failures within `window` that open the breaker.
    pub failures: u32,
    pub window: Duration,
    /// Time open before one probe is let through.
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failures: 5,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe is out; everyone else stays away until it reports, or
    /// until `until`: a probe may never report (the route that carried it
    /// found the slice cached, joined another fill, or its client went
    /// away), and a lost probe must not keep the peer out for good.
    HalfOpen {
        until: Instant,
    },
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Failure times within the window, oldest first.
    recent: Vec<Instant>,
}

/// What [`Breaker::admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Ask the peer.
    Allowed,
    /// Ask the peer: this request is the half-open probe.
    Probe,
    /// Do not ask the peer.
    Open,
}

/// The breaker of one peer.
#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            inner: Mutex::new(Inner {
                state: State::Closed,
                recent: Vec::new(),
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a request may go to the peer now.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut inner = self.inner();
        match inner.state {
            State::Closed => Admission::Allowed,
            State::Open { until } | State::HalfOpen { until } if now >= until => {
                inner.state = State::HalfOpen {
                    until: now + self.policy.open_for,
                };
                Admission::Probe
            }
            State::Open { .. } | State::HalfOpen { .. } => Admission::Open,
        }
    }

    /// The peer answered.
    pub fn success(&self) {
        let mut inner = self.inner();
        inner.state = State::Closed;
        inner.recent.clear();
    }

    /// The peer failed (refused, timed out, broke off, answered 5xx).
    /// Returns true when this failure opened the breaker.
    pub fn failure(&self, now: Instant) -> bool {
        let policy = self.policy;
        let mut inner = self.inner();
        if matches!(inner.state, State::HalfOpen { .. }) {
            inner.state = State::Open {
                until: now + policy.open_for,
            };
            return true;
        }
        inner.recent.retain(|t| now.duration_since(*t) < policy.window);
        inner.recent.push(now);
        if inner.state == State::Closed && inner.recent.len() >= policy.failures as usize {
            inner.state = State::Open {
                until: now + policy.open_for,
            };
            inner.recent.clear();
            return true;
        }
        false
    }

    /// Whether the breaker is open (or probing) now.
    pub fn is_open(&self) -> bool {
        self.inner().state != State::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_five_failures_in_the_window_then_probes() {
        let b = Breaker::new(BreakerPolicy::default());
        let t0 = Instant::now();
        for i in 0..4 {
            assert!(!b.failure(t0 + Duration::from_secs(i)));
            assert_eq!(b.admit(t0 + Duration::from_secs(i)), Admission::Allowed);
        }
        assert!(b.failure(t0 + Duration::from_secs(4)));
        assert_eq!(b.admit(t0 + Duration::from_secs(5)), Admission::Open);
        // After open_for, exactly one probe goes through.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.admit(later), Admission::Probe);
        assert_eq!(b.admit(later), Admission::Open);
        // A failed probe opens it again; a good one closes it.
        assert!(b.failure(later));
        assert_eq!(b.admit(later + Duration::from_secs(1)), Admission::Open);
        assert_eq!(b.admit(later + Duration::from_secs(6)), Admission::Probe);
        b.success();
        assert_eq!(b.admit(later + Duration::from_secs(6)), Admission::Allowed);
        assert!(!b.is_open());
    }

    #[test]
    fn a_probe_that_never_reports_is_followed_by_another() {
        let b = Breaker::new(BreakerPolicy::default());
        let t0 = Instant::now();
        for _ in 0..5 {
            b.failure(t0);
        }
        let probe = t0 + Duration::from_secs(5);
        assert_eq!(b.admit(probe), Admission::Probe);
        // The probe's route was dropped unused: no success, no failure.
        assert_eq!(b.admit(probe + Duration::from_secs(4)), Admission::Open);
        assert_eq!(b.admit(probe + Duration::from_secs(5)), Admission::Probe);
        b.success();
        assert_eq!(b.admit(probe + Duration::from_secs(5)), Admission::Allowed);
    }

    #[test]
    fn failures_spread_wider_than_the_window_do_not_open_it() {
        let b = Breaker::new(BreakerPolicy::default());
        let t0 = Instant::now();
        for i in 0..20 {
            assert!(!b.failure(t0 + Duration::from_secs(3 * i)));
        }
        assert_eq!(b.admit(t0 + Duration::from_secs(61)), Admission::Allowed);
    }
}
