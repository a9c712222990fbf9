//! The two Services of a SliceCache: the client Service in front of the
//! agents, and the headless peer Service through which agents find each
//! other and Prometheus finds them.
//!
//! Contract: pure, like the whole build step.

use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};
use slicecache_api::{fleet_config::PEER_PORT_NAME, ValidatedSliceCache};

use super::{
    meta::{metadata, selector_labels, Owner},
    ObjectNames,
};

/// The client Service, of `spec.service`'s type and port.
pub(super) fn client_service(validated: &ValidatedSliceCache, owner: &Owner, names: &ObjectNames) -> Service {
    Service {
        metadata: metadata(owner, &names.client_service, "cache-agent"),
        spec: Some(ServiceSpec {
            type_: Some(validated.service().type_().as_str().to_string()),
            selector: Some(selector_labels(owner)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: i32::from(validated.service().port()),
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The headless peer Service, listing every agent with its client and
/// admin ports, and its peer port in fleet mode: its EndpointSlices are the
/// fleet's member list.
pub(super) fn peer_service(
    owner: &Owner,
    names: &ObjectNames,
    client_port: u16,
    admin_port: u16,
    peer_port: Option<u16>,
) -> Service {
    // Agents find each other (and Prometheus finds them) through the
    // headless Service; unready agents are listed too, since peers and
    // scrapes matter most while an agent warms up.
    Service {
        metadata: metadata(owner, &names.peer_service, "cache-agent"),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(owner)),
            ports: Some(
                [
                    ("http", Some(client_port)),
                    ("admin", Some(admin_port)),
                    (PEER_PORT_NAME, peer_port),
                ]
                .into_iter()
                .filter_map(|(name, port)| port.map(|port| named_port(name, port)))
                .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A TCP Service port that targets the container port of the same name.
fn named_port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}
