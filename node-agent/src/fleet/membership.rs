//! Fleet membership in Kubernetes: the EndpointSlices of the peers Service.
//!
//! The operator renders a headless `NAME-peers` Service over the agent
//! Pods with `publishNotReadyAddresses`, so the EndpointSlice controller
//! lists every agent and marks each endpoint `serving` (its readiness probe
//! passes) and `terminating` (it is being deleted); `ready` is always true
//! there and says nothing. A member is an endpoint that is serving and not
//! terminating, named by its node, so an agent that restarts on its node
//! takes back the slices its disk holds.
//!
//! The watch feeds the latest member set into a channel; a second loop
//! applies it to the [`Fleet`] once the set has been quiet for the debounce
//! time, so a rollout that replaces Pods one by one does not rebuild the
//! ring for every endpoint update. While the API cannot be reached the ring
//! keeps the members it had (at first: this agent alone, which then fills
//! everything from the origin).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use pingora::server::ShutdownWatch;
use slicecache_api::fleet_config::PEER_PORT_NAME;
use tokio::sync::watch;
use tracing::{info, warn};

use super::Fleet;

/// The label the EndpointSlice controller puts on the slices of a Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// How long the member set must stay unchanged before the ring is rebuilt.
pub const DEBOUNCE: Duration = Duration::from_secs(1);
/// Pause between attempts to build an API client.
const CLIENT_RETRY: Duration = Duration::from_secs(5);

/// Member name → `host:port` of its peer listener.
pub type Members = BTreeMap<String, String>;

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

/// The members one EndpointSlice lists: its endpoints that are serving and
/// not terminating and carry a node name and an address. A missing
/// condition counts as its default (serving, not terminating), as the
/// EndpointSlice API says.
pub fn slice_members(slice: &EndpointSlice, default_port: u16) -> Members {
    let port = slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(PEER_PORT_NAME))
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(default_port);
    let mut members = Members::new();
    for endpoint in &slice.endpoints {
        let conditions = endpoint.conditions.as_ref();
        let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
        let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
        if !serving || terminating {
            continue;
        }
        let Some(name) = endpoint.node_name.as_ref().filter(|n| !n.is_empty()) else {
            continue;
        };
        let Some(address) = endpoint.addresses.first() else {
            continue;
        };
        let host = if address.contains(':') {
            format!("[{address}]")
        } else {
            address.clone()
        };
        members.insert(name.clone(), format!("{host}:{port}"));
    }
    members
}

/// The union of the members of `slices` (a member listed twice keeps the
/// address of the slice whose name sorts last).
fn union(slices: &BTreeMap<String, Members>) -> Members {
    slices.values().flat_map(|m| m.clone()).collect()
}

/// Watches the peers Service and keeps `fleet`'s members in step until
/// `shutdown`.
pub async fn run(fleet: Arc<Fleet>, service: PeersService, mut shutdown: ShutdownWatch) {
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
        _ = apply_members(fleet, rx) => {}
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
async fn apply_members(fleet: Arc<Fleet>, mut rx: watch::Receiver<Option<Members>>) {
    while rx.changed().await.is_ok() {
        // Let a burst of endpoint updates settle: every further change
        // restarts the wait.
        while tokio::time::timeout(DEBOUNCE, rx.changed())
            .await
            .is_ok_and(|r| r.is_ok())
        {}
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    fn endpoint(node: &str, ip: &str, serving: Option<bool>, terminating: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.to_string()],
            node_name: Some(node.to_string()),
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving,
                terminating,
            }),
            ..Endpoint::default()
        }
    }

    fn slice(endpoints: Vec<Endpoint>, peer_port: Option<i32>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(vec![
                EndpointPort {
                    name: Some("http".into()),
                    port: Some(8080),
                    ..EndpointPort::default()
                },
                EndpointPort {
                    name: Some(PEER_PORT_NAME.into()),
                    port: peer_port,
                    ..EndpointPort::default()
                },
            ]),
            ..EndpointSlice::default()
        }
    }

    #[test]
    fn serving_endpoints_that_are_not_terminating_are_members() {
        let s = slice(
            vec![
                endpoint("node-a", "10.0.0.1", Some(true), Some(false)),
                endpoint("node-b", "10.0.0.2", None, None),
                endpoint("node-c", "10.0.0.3", Some(false), Some(false)),
                endpoint("node-d", "10.0.0.4", Some(true), Some(true)),
                endpoint("node-e", "fd00::5", Some(true), None),
            ],
            Some(8081),
        );
        let members = slice_members(&s, 9999);
        assert_eq!(
            members,
            Members::from([
                ("node-a".to_string(), "10.0.0.1:8081".to_string()),
                ("node-b".to_string(), "10.0.0.2:8081".to_string()),
                ("node-e".to_string(), "[fd00::5]:8081".to_string()),
            ])
        );
    }

    #[test]
    fn endpoints_without_a_node_or_address_are_skipped_and_the_port_defaults() {
        let mut nameless = endpoint("x", "10.0.0.9", None, None);
        nameless.node_name = None;
        let mut addressless = endpoint("node-y", "10.0.0.9", None, None);
        addressless.addresses.clear();
        let s = slice(
            vec![nameless, addressless, endpoint("node-z", "10.0.0.7", None, None)],
            None,
        );
        assert_eq!(
            slice_members(&s, 8081),
            Members::from([("node-z".to_string(), "10.0.0.7:8081".to_string())])
        );
    }

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
