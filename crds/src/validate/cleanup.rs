//! `spec.cleanup`: whether deleting the SliceCache wipes its devices, which
//! acts only with the confirmation string.

use super::error::ValidationError;
use crate::spec::{SliceCacheSpec, WIPE_CONFIRMATION};

pub(super) fn validate(spec: &SliceCacheSpec, errors: &mut Vec<ValidationError>) -> bool {
    let c = spec.cleanup.clone().unwrap_or_default();
    if c.wipe_devices_on_delete != Some(true) {
        return false;
    }
    if c.confirmation.as_deref() != Some(WIPE_CONFIRMATION) {
        errors.push(ValidationError::WipeNotConfirmed {
            field: "spec.cleanup.confirmation",
        });
        return false;
    }
    true
}
