//! Validate: from the SliceCache as written, and what the dereference step
//! found, to a [`ValidatedSliceCache`].
//!
//! Contract: pure. Takes the SliceCache and the dereference step's
//! [`Dereferenced`]; uses the API crate's validation layer (which resolves
//! every default and reports every problem at once), checks the metadata
//! the later steps need, and checks that every referent the validated spec
//! uses is one dereference found, so that the steps after this one only
//! ever see a spec whose referents were read. An error here is the user's
//! to fix: the controller turns it into `Degraded` with reason `InvalidSpec`
//! and a Warning Event, writes nothing else, and waits for the next spec
//! change.

use kube::ResourceExt;
use slicecache_api::{SliceCache, ValidatedSliceCache, ValidationErrors};

use super::dereference::Dereferenced;

/// Why a SliceCache cannot be reconciled as written.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("invalid spec: {0}")]
    InvalidSpec(#[source] ValidationErrors),
    #[error("the SliceCache has no {field}")]
    MissingMetadata { field: &'static str },
    #[error("{field}: the referent was not read before validation")]
    ReferentNotRead { field: &'static str },
}

impl ValidateError {
    /// Stable CamelCase reason, for events, conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::MissingMetadata { .. } => "MissingMetadata",
            Self::ReferentNotRead { .. } => "ReferentNotRead",
        }
    }
}

/// Validates `cache` for reconciling: spec, name, namespace and uid, and
/// the referents `dereferenced` found for it.
pub fn validate(cache: &SliceCache, dereferenced: &Dereferenced) -> Result<ValidatedSliceCache, ValidateError> {
    if cache.metadata.name.is_none() {
        return Err(ValidateError::MissingMetadata { field: "metadata.name" });
    }
    if cache.namespace().is_none() {
        return Err(ValidateError::MissingMetadata {
            field: "metadata.namespace",
        });
    }
    if cache.uid().is_none() {
        return Err(ValidateError::MissingMetadata { field: "metadata.uid" });
    }
    let validated = validate_spec(cache)?;
    let purge_token = validated.purge_token().map(|t| (t.name(), t.key()));
    let found = dereferenced.purge_token.as_ref().map(|(n, k)| (n.as_str(), k.as_str()));
    if purge_token != found {
        return Err(ValidateError::ReferentNotRead {
            field: "spec.purgeTokenSecretRef",
        });
    }
    Ok(validated)
}

/// Validates only the spec, for offline rendering.
pub fn validate_spec(cache: &SliceCache) -> Result<ValidatedSliceCache, ValidateError> {
    ValidatedSliceCache::new(&cache.spec).map_err(ValidateError::InvalidSpec)
}
