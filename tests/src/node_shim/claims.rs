//! Raw block claims: a Pod's volume → its PersistentVolumeClaim → the
//! PersistentVolume bound to it → the device on the node, which the shim
//! hands to the container at its `volumeDevices` path.
//!
//! A generic ephemeral volume's claim is named `POD-VOLUME` (the ephemeral
//! volume controller creates it with the Pod); a `persistentVolumeClaim`
//! volume names its claim. As with the kubelet and the scheduler's volume
//! binding, a Pod with an unbound claim waits: the shim binds it to no Node
//! and starts no container for it until kube-controller-manager's binder
//! has bound the claim, and then only on a Node the volume's node affinity
//! allows. The device of a `local` (or `hostPath`) volume is a host path of
//! the node, so it lives in the node's host directory like every host path
//! ([`super::volumes::PodDirs::host_path`]); whoever provides the volumes
//! puts a device there (the e2e harness: loop devices).
//!
//! Claims in Filesystem mode stay scratch directories of the Pod.

use std::{collections::BTreeMap, path::PathBuf};

use k8s_openapi::api::core::v1::{NodeSelector, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::runtime::reflector::{ObjectRef, Store};

use super::volumes::{claim_name, PodDirs, VolumeError};

/// The shim's caches of claims and volumes (all namespaces).
#[derive(Clone, Debug)]
pub struct ClaimStores {
    pub claims: Store<PersistentVolumeClaim>,
    pub volumes: Store<PersistentVolume>,
}

/// Where a Pod's Block claims stand.
#[derive(Clone, Debug, PartialEq)]
pub enum ClaimState {
    /// Every Block claim is bound: each volume's device as a host path of
    /// the node, and the node affinity of every bound volume.
    Bound {
        devices: BTreeMap<String, String>,
        node_affinity: Vec<NodeSelector>,
    },
    /// Some claim is missing or not bound yet (the reason).
    Waiting(String),
}

/// Resolves every Block-mode claim of `pod` through `stores`.
pub fn resolve(pod: &Pod, stores: &ClaimStores) -> ClaimState {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut devices = BTreeMap::new();
    let mut node_affinity = Vec::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(claim_name) = claim_name(pod, volume) else {
            continue;
        };
        let Some(claim) = stores.claims.get(&ObjectRef::new(&claim_name).within(namespace)) else {
            return ClaimState::Waiting(format!("PersistentVolumeClaim {claim_name:?} not found"));
        };
        let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
        let bound_to = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
        let (Some("Bound"), Some(pv_name)) = (phase, bound_to) else {
            return ClaimState::Waiting(format!("PersistentVolumeClaim {claim_name:?} is not bound"));
        };
        let Some(pv) = stores.volumes.get(&ObjectRef::new(pv_name)) else {
            return ClaimState::Waiting(format!("PersistentVolume {pv_name:?} not found"));
        };
        let spec = pv.spec.clone().unwrap_or_default();
        if let Some(affinity) = spec.node_affinity.and_then(|a| a.required) {
            node_affinity.push(affinity);
        }
        let block = claim.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) == Some("Block");
        if !block {
            continue;
        }
        let path = spec.local.map(|l| l.path).or_else(|| spec.host_path.map(|h| h.path));
        match path {
            Some(path) => {
                devices.insert(volume.name.clone(), path);
            }
            None => {
                return ClaimState::Waiting(format!(
                    "PersistentVolume {pv_name:?} is neither local nor hostPath; the node shim cannot attach it"
                ))
            }
        }
    }
    ClaimState::Bound { devices, node_affinity }
}

/// The local device of every Block claim of the Pod, by volume name, or
/// why the container must wait.
pub fn local_devices(
    pod: &Pod,
    stores: &ClaimStores,
    dirs: &PodDirs,
) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
    match resolve(pod, stores) {
        ClaimState::Bound { devices, .. } => Ok(devices
            .into_iter()
            .map(|(volume, path)| (volume, dirs.host_path(&path)))
            .collect()),
        ClaimState::Waiting(why) => Err(VolumeError::ClaimNotBound(why)),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{
            EphemeralVolumeSource, LocalVolumeSource, NodeSelectorRequirement, NodeSelectorTerm,
            PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, PersistentVolumeClaimTemplate,
            PersistentVolumeSpec, PodSpec, Volume, VolumeNodeAffinity,
        },
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };
    use kube::runtime::{reflector::store::Writer, watcher};

    use super::*;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("agent-1".into()),
                namespace: Some("ml".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                volumes: Some(vec![Volume {
                    name: "cache-volume".into(),
                    ephemeral: Some(EphemeralVolumeSource {
                        volume_claim_template: Some(PersistentVolumeClaimTemplate {
                            metadata: None,
                            spec: PersistentVolumeClaimSpec {
                                volume_mode: Some("Block".into()),
                                ..PersistentVolumeClaimSpec::default()
                            },
                        }),
                    }),
                    ..Volume::default()
                }]),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    fn stores(claim_bound: bool) -> ClaimStores {
        let mut claims = Writer::<PersistentVolumeClaim>::default();
        claims.apply_watcher_event(&watcher::Event::Apply(PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("agent-1-cache-volume".into()),
                namespace: Some("ml".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                volume_mode: Some("Block".into()),
                volume_name: claim_bound.then(|| "pv-1".into()),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some(if claim_bound { "Bound" } else { "Pending" }.into()),
                ..PersistentVolumeClaimStatus::default()
            }),
        }));
        let mut volumes = Writer::<PersistentVolume>::default();
        volumes.apply_watcher_event(&watcher::Event::Apply(PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pv-1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                local: Some(LocalVolumeSource {
                    path: "/dev/e2e/pv-1".into(),
                    fs_type: None,
                }),
                node_affinity: Some(VolumeNodeAffinity {
                    required: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: "kubernetes.io/hostname".into(),
                                operator: "In".into(),
                                values: Some(vec!["shim-node-2".into()]),
                            }]),
                            match_fields: None,
                        }],
                    }),
                }),
                ..PersistentVolumeSpec::default()
            }),
            status: None,
        }));
        ClaimStores {
            claims: claims.as_reader(),
            volumes: volumes.as_reader(),
        }
    }

    #[test]
    fn a_bound_ephemeral_claim_resolves_to_its_volumes_device_and_node() {
        let p = pod();
        match resolve(&p, &stores(true)) {
            ClaimState::Bound { devices, node_affinity } => {
                assert_eq!(devices.get("cache-volume").map(String::as_str), Some("/dev/e2e/pv-1"));
                assert_eq!(node_affinity.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        let dirs = PodDirs::new(std::path::Path::new("/r"), &p, "shim-node-2");
        let local = local_devices(&p, &stores(true), &dirs).expect("bound");
        assert_eq!(
            local.get("cache-volume"),
            Some(&PathBuf::from("/r/nodes/shim-node-2/host/dev/e2e/pv-1"))
        );
    }

    #[test]
    fn an_unbound_claim_waits() {
        assert!(matches!(resolve(&pod(), &stores(false)), ClaimState::Waiting(_)));
        let other_pod = Pod {
            metadata: ObjectMeta {
                name: Some("agent-2".into()),
                ..pod().metadata
            },
            ..pod()
        };
        assert!(matches!(resolve(&other_pod, &stores(true)), ClaimState::Waiting(_)));
    }
}
