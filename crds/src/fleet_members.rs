//! Who is a fleet member, read from an EndpointSlice of the peers Service:
//! the one rule the agents (their ring) and the operator (the SliceCache's
//! status) share.
//!
//! The operator renders the peers Service with `publishNotReadyAddresses`,
//! so the EndpointSlice controller lists every agent Pod, and marks each
//! endpoint `serving` (its readiness probe passes) and `terminating` (it is
//! being deleted); `ready` is always true there and says nothing. A member
//! is an endpoint that is serving and not terminating, named by its node,
//! so an agent that restarts on its node takes back the slices its disk
//! holds.

use std::collections::BTreeMap;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::fleet_config::PEER_PORT_NAME;

/// The label the EndpointSlice controller puts on the slices of a Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Member name → `host:port` of its peer listener.
pub type Members = BTreeMap<String, String>;

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
}
