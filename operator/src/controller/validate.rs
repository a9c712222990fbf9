//! Validate: from the SliceCache as written to a [`ValidatedSliceCache`].
//!
//! Contract: pure. Uses the API crate's validation layer (which resolves
//! every default and reports every problem at once) and checks the metadata
//! the later steps need. An error here is the user's to fix: the controller
//! turns it into `Degraded` with reason `InvalidSpec` and a Warning Event,
//! writes nothing else, and waits for the next spec change.

use kube::ResourceExt;
use slicecache_api::{SliceCache, ValidatedSliceCache, ValidationErrors};

/// Why a SliceCache cannot be reconciled as written.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("invalid spec: {0}")]
    InvalidSpec(#[source] ValidationErrors),
    #[error("the SliceCache has no {field}")]
    MissingMetadata { field: &'static str },
}

impl ValidateError {
    /// Stable CamelCase reason, for events, conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::MissingMetadata { .. } => "MissingMetadata",
        }
    }
}

/// Validates `cache` for reconciling: spec, name, namespace and uid.
pub fn validate(cache: &SliceCache) -> Result<ValidatedSliceCache, ValidateError> {
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
    validate_spec(cache)
}

/// Validates only the spec, for offline rendering.
pub fn validate_spec(cache: &SliceCache) -> Result<ValidatedSliceCache, ValidateError> {
    ValidatedSliceCache::new(&cache.spec).map_err(ValidateError::InvalidSpec)
}
