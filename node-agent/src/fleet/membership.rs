//! Fleet membership in Kubernetes: a watch on the EndpointSlices of the
//! peers Service, whose serving endpoints are the members (the rule is
//! [`slicecache_api::fleet_members`], shared with the operator's status).
//!
//! The watch feeds the latest member set into a channel; a second loop
//! applies it to the [`Fleet`] once the set has been quiet for the debounce
//! time, so a rollout that replaces Pods one by one does not rebuild the
//! ring for every endpoint update. While the API cannot be reached the ring
//! keeps the members it had (at first: this agent alone, which then fills
//! everything from the origin).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use pingora::server::ShutdownWatch;
use slicecache_api::fleet_members::{slice_members, Members, SERVICE_NAME_LABEL};
use tokio::sync::watch;
use tracing::{info, warn};

use super::Fleet;

/// How long the member set must stay unchanged before the ring is rebuilt.
pub const DEBOUNCE: Duration = Duration::from_secs(1);
/// Pause between attempts to build an API client.
const CLIENT_RETRY: Duration = Duration::from_secs(5);

/// Where the members are listed.
#[derive(Clone, Debug)]
pub struct PeersService {
    pub name: String,
    /// `None`: `$POD_NAMESPACE`, then the client's default namespace (the
    /// service account's, in a Pod).
    pub namespace: Option<String>,
    /// The port used when a slice names no `peer` port.
    pub default_port: u16,
}

/// The union of the members of `slices` (a member listed twice keeps the
/// address of the slice whose name sorts last).
fn union(slices: &BTreeMap<String, Members>) -> Members {
    slices.values().flat_map(|m| m.clone()).collect()
}

/// Watches the peers Service and keeps `fleet`'s members in step until
/// `shutdown`.
/// `ready` is set once the first member list is applied.
pub async fn run(fleet: Arc<Fleet>, service: PeersService, ready: Arc<AtomicBool>, mut shutdown: ShutdownWatch) {
    let client = loop {
        match Client::try_default().await {
            Ok(client) => break client,
            Err(e) => {
                warn!(error = %e, service = %service.name,
                      "fleet.peersService: cannot build a Kubernetes API client; the fleet has only this member until it can");
                tokio::select! {
                    _ = tokio::time::sleep(CLIENT_RETRY) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    let namespace = service
        .namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| client.default_namespace().to_string());
    info!(service = %service.name, %namespace, "fleet members come from the peers Service's EndpointSlices");
    let (tx, rx) = watch::channel(None::<Members>);
    tokio::select! {
        _ = watch_slices(client, &namespace, &service, tx) => {}
        _ = apply_members(fleet, rx, ready) => {}
        _ = shutdown.changed() => {}
    }
}

/// Sends the member set after every change of the slices.
async fn watch_slices(client: Client, namespace: &str, service: &PeersService, tx: watch::Sender<Option<Members>>) {
    let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={}", service.name));
    let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut slices: BTreeMap<String, Members> = BTreeMap::new();
    let mut relisting: BTreeMap<String, Members> = BTreeMap::new();
    while let Some(event) = events.next().await {
        let name = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
        match event {
            Ok(Event::Init) => relisting.clear(),
            Ok(Event::InitApply(slice)) => {
                relisting.insert(name(&slice), slice_members(&slice, service.default_port));
            }
            Ok(Event::InitDone) => slices = std::mem::take(&mut relisting),
            Ok(Event::Apply(slice)) => {
                slices.insert(name(&slice), slice_members(&slice, service.default_port));
            }
            Ok(Event::Delete(slice)) => {
                slices.remove(&name(&slice));
            }
            Err(e) => {
                warn!(error = %e, service = %service.name, %namespace,
                      "watching the peers Service's EndpointSlices failed; keeping the members known so far and retrying");
                continue;
            }
        }
        let members = union(&slices);
        tx.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&members);
            if changed {
                *current = Some(members);
            }
            changed
        });
    }
}

/// Applies the member set to the fleet once it has been quiet for
/// [`DEBOUNCE`].
async fn apply_members(fleet: Arc<Fleet>, mut rx: watch::Receiver<Option<Members>>, ready: Arc<AtomicBool>) {
    while rx.changed().await.is_ok() {
        // Let a burst of endpoint updates settle: every further change
        // restarts the wait. The first list is applied at once: until it
        // is, this agent is not ready.
        if ready.load(Ordering::Relaxed) {
            while tokio::time::timeout(DEBOUNCE, rx.changed())
                .await
                .is_ok_and(|r| r.is_ok())
            {}
        }
        let Some(members) = rx.borrow_and_update().clone() else {
            continue;
        };
        match fleet.set_members(&members) {
            Ok(true) => {
                fleet.metrics.ring_changes.inc();
                info!(members = ?fleet.member_names(), "fleet membership changed");
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "a member of the peers Service could not be used; the ring is unchanged"),
        }
        if !ready.swap(true, Ordering::Relaxed) {
            info!(members = ?fleet.member_names(), "fleet members known; ready");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_union_covers_every_slice() {
        let slices = BTreeMap::from([
            (
                "a".to_string(),
                Members::from([("n1".to_string(), "10.0.0.1:8081".to_string())]),
            ),
            (
                "b".to_string(),
                Members::from([("n2".to_string(), "10.0.0.2:8081".to_string())]),
            ),
        ]);
        assert_eq!(union(&slices).len(), 2);
    }
}
