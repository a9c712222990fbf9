//! Dereference: read the SliceCache and everything it refers to.
//!
//! Contract: takes the SliceCache as the watch delivered it and reads each
//! object its spec names (the purge token Secret) and, when its agents must
//! run privileged, the Pod Security level of its namespace, without writing
//! anything. A referent that is missing or lacks the named key is an error
//! for this SliceCache only; it becomes a `Degraded` condition and a Warning
//! Event, and the SliceCache is retried, since the operator does not watch
//! Secrets. Secret values are never kept: only the fact that the key exists.

use super::api_error::describe;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{Api, Client, ResourceExt};
use slicecache_api::{validate::DEFAULT_PURGE_TOKEN_KEY, SliceCache};

/// What a SliceCache refers to, as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dereferenced {
    /// `(secret, key)` of the purge token, when one is configured and present.
    pub purge_token: Option<(String, String)>,
}

/// Why the referents of a SliceCache could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DereferenceError {
    #[error("spec.purgeTokenSecretRef: Secret {namespace}/{name} does not exist")]
    SecretNotFound { namespace: String, name: String },
    #[error("spec.purgeTokenSecretRef: Secret {namespace}/{name} has no key {key:?}")]
    SecretKeyMissing {
        namespace: String,
        name: String,
        key: String,
    },
    #[error(
        "namespace {namespace} enforces Pod Security level {level:?}, which forbids privileged pods, and the \
         agents must run privileged to open the node's raw block devices (spec.cache.disk.devices, deviceFilter \
         or useAllDevices); label the namespace pod-security.kubernetes.io/enforce=privileged, or cache on a \
         hostPathFile, emptyDirFile or volumeClaimTemplate, which run unprivileged"
    )]
    PodSecurity { namespace: String, level: String },
    #[error("reading Secret {namespace}/{name}: {}", describe(source))]
    Kube {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl DereferenceError {
    /// Stable CamelCase reason, for events, conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SecretNotFound { .. } => "PurgeTokenSecretNotFound",
            Self::SecretKeyMissing { .. } => "PurgeTokenKeyMissing",
            Self::PodSecurity { .. } => "PodSecurityForbidsPrivileged",
            Self::Kube { .. } => "SecretReadFailed",
        }
    }

    /// Whether the user has to act (as opposed to a failed API call).
    pub fn is_user_error(&self) -> bool {
        !matches!(self, Self::Kube { .. })
    }
}

/// The label the Pod Security admission enforces a namespace's level by.
const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// Reads what `cache` refers to.
pub async fn dereference(client: &Client, cache: &SliceCache) -> Result<Dereferenced, DereferenceError> {
    check_pod_security(client, cache).await?;
    purge_token(client, cache).await
}

/// Whether the agents' namespace lets them run as they must. Only raw
/// devices need privileged pods; the levels `baseline` and `restricted`
/// forbid them. A namespace that cannot be read is not held against the
/// SliceCache: the apply then says what the API server thinks.
async fn check_pod_security(client: &Client, cache: &SliceCache) -> Result<(), DereferenceError> {
    let raw_devices = cache
        .spec
        .cache
        .as_ref()
        .and_then(|c| c.disk.as_ref())
        .is_some_and(|d| !d.devices.is_empty() || d.device_filter.is_some() || d.use_all_devices == Some(true));
    if !raw_devices {
        return Ok(());
    }
    let namespace = cache.namespace().unwrap_or_default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let level = match namespaces.get_opt(&namespace).await {
        Ok(ns) => ns.and_then(|ns| ns.labels().get(POD_SECURITY_ENFORCE).cloned()),
        Err(e) => {
            tracing::debug!(%namespace, error = %describe(&e), "could not read the namespace's Pod Security level");
            None
        }
    };
    match level {
        Some(level) if level == "baseline" || level == "restricted" => {
            Err(DereferenceError::PodSecurity { namespace, level })
        }
        _ => Ok(()),
    }
}

/// The purge token Secret, when the spec names one.
async fn purge_token(client: &Client, cache: &SliceCache) -> Result<Dereferenced, DereferenceError> {
    let Some(secret_ref) = cache.spec.purge_token_secret_ref.as_ref() else {
        return Ok(Dereferenced { purge_token: None });
    };
    let namespace = cache.namespace().unwrap_or_default();
    let key = secret_ref
        .key
        .clone()
        .unwrap_or_else(|| DEFAULT_PURGE_TOKEN_KEY.to_string());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = secrets
        .get_opt(&secret_ref.name)
        .await
        .map_err(|source| DereferenceError::Kube {
            namespace: namespace.clone(),
            name: secret_ref.name.clone(),
            source,
        })?
        .ok_or_else(|| DereferenceError::SecretNotFound {
            namespace: namespace.clone(),
            name: secret_ref.name.clone(),
        })?;
    let has_key = secret.data.as_ref().is_some_and(|d| d.contains_key(&key))
        || secret.string_data.as_ref().is_some_and(|d| d.contains_key(&key));
    if !has_key {
        return Err(DereferenceError::SecretKeyMissing {
            namespace,
            name: secret_ref.name.clone(),
            key,
        });
    }
    Ok(Dereferenced {
        purge_token: Some((secret_ref.name.clone(), key)),
    })
}
