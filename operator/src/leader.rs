//! Leader election on a `coordination.k8s.io/v1` Lease, through the
//! maintained `kube-lease-manager` crate rather than a Lease loop of our own.
//!
//! Contract: only the leader reconciles. [`LeaderElector::acquire`] returns
//! a [`Leadership`] once this replica holds the Lease; a standby takes the
//! Lease when it is free or its holder has not renewed it within
//! `leaseDurationSeconds`, never while it is live. The crate writes the
//! Lease with PATCH (server-side apply to take it, so of two standbys racing
//! for a free Lease exactly one wins; strategic merge to renew and release),
//! which is why the Role grants `get`, `create` and `patch` on leases.
//! [`Leadership::hold`] renews the Lease `grace` before it expires and
//! returns as soon as this replica may no longer assume it leads: another
//! replica holds the Lease, or a renewal failed. A failed renewal already
//! falls within the last `grace` of the Lease, so the leader stops at once
//! instead of retrying into a window where a standby may lead; the Lease's
//! API client has request timeouts of half the grace
//! ([`LeaseTiming::client_config`]), so a hanging request fails in time too.

use std::time::Duration;

use kube::{Client, Config};
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseManagerError, LeaseParams};

/// How long a Lease lasts and how early its holder renews it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    duration_secs: u64,
    grace_secs: u64,
}

impl LeaseTiming {
    /// 15 s Lease, renewed 5 s before it expires (every 10 s): a standby
    /// takes over at most 15 s after the leader's last renewal.
    pub const DEFAULT: Self = Self {
        duration_secs: 15,
        grace_secs: 5,
    };

    /// Checks that both are whole seconds, `grace` ≥ 1 s and shorter than
    /// `duration` (the Lease API counts whole seconds, and a holder must
    /// renew before its own Lease expires).
    pub fn new(duration: Duration, grace: Duration) -> Result<Self, LeaderError> {
        let invalid = LeaderError::InvalidTiming { duration, grace };
        if duration.subsec_nanos() != 0 || grace.subsec_nanos() != 0 {
            return Err(invalid);
        }
        let (duration_secs, grace_secs) = (duration.as_secs(), grace.as_secs());
        if grace_secs == 0 || grace_secs >= duration_secs || i32::try_from(duration_secs).is_err() {
            return Err(invalid);
        }
        Ok(Self {
            duration_secs,
            grace_secs,
        })
    }

    /// `leaseDurationSeconds`.
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }

    /// How long before expiry the holder renews.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_secs)
    }

    /// Timeout of each Lease request: a renewal starts `grace` before the
    /// Lease expires, so its PATCH must fail within half of that for the
    /// leader to stop while the Lease is still its own.
    pub fn request_timeout(&self) -> Duration {
        self.grace() / 2
    }

    /// `config` with [`Self::request_timeout`] on connect, read and write,
    /// for the Client the elector uses (the controller keeps its own).
    pub fn client_config(&self, mut config: Config) -> Config {
        let timeout = Some(self.request_timeout());
        config.connect_timeout = timeout;
        config.read_timeout = timeout;
        config.write_timeout = timeout;
        config
    }
}

/// Why leader election could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "lease timing {duration:?} / grace {grace:?}: both must be whole seconds, the grace at least 1 s and shorter than the duration"
    )]
    InvalidTiming { duration: Duration, grace: Duration },
    #[error("lease {lease}: {source}")]
    Lease {
        lease: String,
        #[source]
        source: LeaseManagerError,
    },
}

impl LeaderError {
    /// Stable CamelCase reason, for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidTiming { .. } => "InvalidLeaseTiming",
            Self::Lease { .. } => "LeaseRequestFailed",
        }
    }
}

/// Why a leader stopped leading.
#[derive(Debug, thiserror::Error)]
pub enum LostLeadership {
    #[error("another replica holds the lease")]
    TakenOver,
    #[error("renewing the lease failed, so it may expire before the next try: {0}")]
    RenewFailed(#[source] LeaderError),
}

impl LostLeadership {
    /// Stable CamelCase reason, for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TakenOver => "LeaseTakenOver",
            Self::RenewFailed(_) => "LeaseRenewFailed",
        }
    }
}

/// Competes for one Lease as one identity.
pub struct LeaderElector {
    client: Client,
    namespace: String,
    name: String,
    identity: String,
    timing: LeaseTiming,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("identity", &self.identity)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl LeaderElector {
    /// Elects on Lease `namespace/name` as `identity` (e.g. the pod name).
    /// Give it a Client built from [`LeaseTiming::client_config`].
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, timing: LeaseTiming) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
        }
    }

    /// Waits until this replica leads; API errors are logged and retried
    /// after `grace`.
    pub async fn acquire(&self) -> Leadership {
        loop {
            match self.try_acquire().await {
                Ok(leadership) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    return leadership;
                }
                Err(e) => {
                    tracing::warn!(error = %e, reason = e.reason(), lease = %self.name, "leader election");
                    tokio::time::sleep(self.timing.grace()).await;
                }
            }
        }
    }

    /// One attempt: creates the Lease when it is missing, then waits until
    /// this replica holds it.
    pub async fn try_acquire(&self) -> Result<Leadership, LeaderError> {
        let params = LeaseParams::new(self.identity.clone(), self.timing.duration_secs, self.timing.grace_secs);
        let manager = LeaseManager::new(
            self.client.clone(),
            self.name.clone(),
            self.namespace.clone(),
            params,
            LeaseCreateMode::AutoCreate,
        )
        .await
        .map_err(|source| self.error(source))?;
        // `changed` resolves when this replica's lock state changes; from
        // "not leader" that is only ever to "leader".
        while !manager.changed().await.map_err(|source| self.error(source))? {}
        Ok(Leadership {
            manager,
            lease: self.name.clone(),
        })
    }

    fn error(&self, source: LeaseManagerError) -> LeaderError {
        LeaderError::Lease {
            lease: format!("{}/{}", self.namespace, self.name),
            source,
        }
    }
}

/// This replica holds the Lease.
pub struct Leadership {
    manager: LeaseManager,
    lease: String,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Leadership {
    /// Renews the Lease until leadership is lost; then returns why. The
    /// caller must stop reconciling when this returns.
    pub async fn hold(&self) -> LostLeadership {
        loop {
            match self.manager.changed().await {
                Ok(true) => continue,
                Ok(false) => {
                    tracing::error!(lease = %self.lease, "another replica took the lease");
                    return LostLeadership::TakenOver;
                }
                Err(source) => {
                    tracing::error!(error = %source, lease = %self.lease, "could not renew the lease");
                    return LostLeadership::RenewFailed(LeaderError::Lease {
                        lease: self.lease.clone(),
                        source,
                    });
                }
            }
        }
    }

    /// Gives the Lease up so that a standby takes over at once.
    pub async fn release(self) {
        match self.manager.release().await {
            Ok(()) => tracing::info!(lease = %self.lease, "released the lease"),
            Err(e) => tracing::warn!(error = %e, lease = %self.lease, "releasing the lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_is_checked() {
        let s = Duration::from_secs;
        assert_eq!(LeaseTiming::new(s(15), s(5)).ok(), Some(LeaseTiming::DEFAULT));
        assert!(LeaseTiming::new(s(5), s(5)).is_err(), "grace must be shorter");
        assert!(LeaseTiming::new(s(5), s(0)).is_err(), "grace of zero");
        assert!(
            LeaseTiming::new(Duration::from_millis(1500), s(1)).is_err(),
            "fractions"
        );
        assert!(
            LeaseTiming::new(s(1 << 40), s(1)).is_err(),
            "beyond leaseDurationSeconds"
        );
    }

    #[test]
    fn lease_client_times_out_within_the_grace() {
        let timing = LeaseTiming::DEFAULT;
        let config = timing.client_config(Config::new("http://127.0.0.1:9".parse().expect("uri")));
        for t in [config.connect_timeout, config.read_timeout, config.write_timeout] {
            assert_eq!(t, Some(Duration::from_millis(2500)));
        }
        assert!(timing.request_timeout() < timing.grace());
    }
}
