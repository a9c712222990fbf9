//! `spec.purgeTokenSecretRef`: the Secret key holding the token purge
//! requests must carry.

use super::{error::ValidationError, model::PurgeTokenRef};
use crate::spec::SliceCacheSpec;

/// Secret key used when `purgeTokenSecretRef.key` is unset.
pub const DEFAULT_PURGE_TOKEN_KEY: &str = "token";

pub(super) fn validate(spec: &SliceCacheSpec, errors: &mut Vec<ValidationError>) -> Option<PurgeTokenRef> {
    let r = spec.purge_token_secret_ref.as_ref()?;
    if r.name.trim().is_empty() {
        errors.push(ValidationError::Empty {
            field: "spec.purgeTokenSecretRef.name",
        });
    }
    if r.key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        errors.push(ValidationError::Empty {
            field: "spec.purgeTokenSecretRef.key",
        });
    }
    Some(PurgeTokenRef {
        name: r.name.clone(),
        key: r.key.clone().unwrap_or_else(|| DEFAULT_PURGE_TOKEN_KEY.to_string()),
    })
}
