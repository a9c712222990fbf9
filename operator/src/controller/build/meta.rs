//! What every built object carries: the [`Owner`] it belongs to, the
//! `app.kubernetes.io/*` labels, metadata with the owner reference, the
//! annotation keys the operator uses, and the stable hashes behind
//! [`DESIRED_HASH`] and [`POD_TEMPLATE_HASH`]. A leaf: every object kind's
//! builder uses it.
//!
//! Contract: pure; reads only the owner facts and the objects it is given.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use slicecache_api::SliceCache;

use super::BuildError;

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "slicecache-operator";
/// Pod template annotation: hash of everything that needs an agent restart.
pub const POD_TEMPLATE_HASH: &str = "slicecache.io/pod-template-hash";
/// ConfigMap annotation: the SliceCache generation whose spec last changed
/// the agent config.
pub const CONFIG_GENERATION: &str = "slicecache.io/config-generation";
/// ConfigMap annotation: hash of the agent config file.
pub const CONFIG_HASH: &str = "slicecache.io/config-hash";
/// Annotation on every built object: hash of the object as built, without
/// this annotation and without [`CONFIG_GENERATION`].
pub const DESIRED_HASH: &str = "slicecache.io/desired-hash";

/// `app.kubernetes.io/name` of everything the operator builds.
pub const APP_NAME: &str = "slicecache-agent";

/// The SliceCache the objects belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    /// `None` only when rendering offline; the objects then carry no owner reference.
    pub uid: Option<String>,
    pub generation: i64,
}

impl Owner {
    /// The owner facts of `cache`; `default_namespace` fills in a missing namespace.
    pub fn of(cache: &SliceCache, default_namespace: &str) -> Self {
        Self {
            name: cache.name_any(),
            namespace: cache.namespace().unwrap_or_else(|| default_namespace.to_string()),
            uid: cache.uid(),
            generation: cache.metadata.generation.unwrap_or(0),
        }
    }

    fn owner_reference(&self) -> Option<OwnerReference> {
        self.uid.as_ref().map(|uid| OwnerReference {
            api_version: SliceCache::api_version(&()).into_owned(),
            kind: SliceCache::kind(&()).into_owned(),
            name: self.name.clone(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        })
    }
}

// === labels, metadata, hashes ===

/// Labels that select one SliceCache's agent pods; never change them, as a
/// DaemonSet's and a Deployment's selector are immutable.
pub fn selector_labels(owner: &Owner) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        ("app.kubernetes.io/instance".to_string(), owner.name.clone()),
    ])
}

/// The `app.kubernetes.io/*` labels of every built object.
pub fn labels(owner: &Owner, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(owner);
    labels.insert("app.kubernetes.io/component".into(), component.into());
    labels.insert("app.kubernetes.io/part-of".into(), "slicecache".into());
    labels.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    labels
}

/// Metadata with name, namespace, labels and owner reference.
pub fn metadata(owner: &Owner, name: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(owner.namespace.clone()),
        labels: Some(labels(owner, component)),
        owner_references: owner.owner_reference().map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

pub(super) fn annotate(meta: &mut ObjectMeta, key: &str, value: &str) {
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_string(), value.to_string());
}

/// Sets [`DESIRED_HASH`] on `object`, leaving [`CONFIG_GENERATION`] out of
/// the hash so that a generation bump alone causes no write.
pub(super) fn stamp<K: Resource + Serialize + Clone>(object: &mut K) -> Result<(), BuildError> {
    let hash = desired_hash(object)?;
    annotate(object.meta_mut(), DESIRED_HASH, &hash);
    Ok(())
}

/// The [`DESIRED_HASH`] of an object as built.
pub fn desired_hash<K: Resource + Serialize + Clone>(object: &K) -> Result<String, BuildError> {
    let mut copy = object.clone();
    if let Some(annotations) = copy.meta_mut().annotations.as_mut() {
        annotations.remove(DESIRED_HASH);
        annotations.remove(CONFIG_GENERATION);
    }
    hash_hex(&copy)
}

/// A stable 64-bit hash of a value's JSON form, as 16 hex digits.
/// Struct fields serialise in declaration order and maps are ordered, so
/// the JSON, and the hash, depend only on the value.
pub(super) fn hash_hex<T: Serialize + ?Sized>(value: &T) -> Result<String, BuildError> {
    let bytes = serde_json::to_vec(value).map_err(BuildError::Hash)?;
    Ok(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)))
}
