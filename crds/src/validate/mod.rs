//! From an unchecked [`SliceCacheSpec`] to a [`ValidatedSliceCache`].
//!
//! The CRD schema rejects what OpenAPI and CEL can express; this module
//! checks the rest (powers of two, quantity bounds, URL structure, regex
//! syntax, bounds between quantity fields) and resolves every default. It
//! also re-checks what the schema checks, because objects reach the operator
//! from older CRD versions and from tests as well as from the apiserver.
//!
//! A [`ValidatedSliceCache`] can only be built here, so code that holds one
//! never re-validates and never sees an `Option` for a defaulted field.
//! Validation reports every problem at once, each naming its field path.
//!
//! The layout follows the work: [`error`] holds what validation reports,
//! [`model`] the validated types, one module per spec section checks that
//! section ([`origin`], [`slicing`], [`cache`], [`workload`], [`service`],
//! [`tuning`], [`rollout`], [`cleanup`], [`purge_token`], [`fleet`]) with the shared
//! [`checks`], [`url`] and the PromQL [`matchers`], and [`render`] turns the result
//! into the agent config file, pointing at the mount [`paths`].

mod cache;
mod checks;
mod cleanup;
mod error;
mod fleet;
mod matchers;
mod model;
mod origin;
mod paths;
mod purge_token;
mod render;
mod rollout;
mod service;
mod slicing;
mod tuning;
mod url;
mod workload;

#[cfg(test)]
mod tests;

pub use cache::MIN_HOST_PATH_FILE_SIZE;
pub use error::{ValidationError, ValidationErrors};
pub use matchers::{label_matchers, MatcherError};
pub use model::{
    BlockVolume, Cache, DeviceSelection, Fleet, HostPathFile, MaxUnavailable, Origin, Placement, PurgeTokenRef,
    Rollout, Service, Slicing, Tuning, ValidatedSliceCache,
};
pub use paths::{BLOCK_VOLUME_PATH, EMPTY_DIR_FILE_DIR, EMPTY_DIR_FILE_PATH, PEER_TOKEN_FILE, PURGE_TOKEN_FILE};
pub use purge_token::DEFAULT_PURGE_TOKEN_KEY;
pub use service::DEFAULT_SERVICE_PORT;
pub use slicing::{MAX_MIN_OBJECT_SIZE, MAX_RETRIES};
pub use tuning::{DEFAULT_TUNING_COOLDOWN, DEFAULT_TUNING_INTERVAL, MIN_TUNING_INTERVAL};
pub use url::UrlProblem;

use crate::spec::SliceCacheSpec;

// === impl ValidatedSliceCache ===

impl ValidatedSliceCache {
    /// Checks `spec` and resolves its defaults, or lists every problem.
    pub fn new(spec: &SliceCacheSpec) -> Result<Self, ValidationErrors> {
        let mut errors = Vec::new();
        let origin = origin::validate(spec, &mut errors);
        let tuning = tuning::validate(spec, &mut errors);
        let slicing = slicing::validate(spec, &tuning, &mut errors);
        let cache = cache::validate(spec, &slicing, &tuning, &mut errors);
        let service = service::validate(spec, &mut errors);
        let rollout = rollout::validate(spec, &mut errors);
        let wipe_devices_on_delete = cleanup::validate(spec, &mut errors);
        let purge_token = purge_token::validate(spec, &mut errors);
        let workload = workload::validate(spec, &cache, &mut errors);
        let fleet = fleet::validate(spec, &slicing, &tuning, &mut errors);
        if spec.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
            errors.push(ValidationError::Empty { field: "spec.image" });
        }
        let placement = spec
            .placement
            .clone()
            .map(|p| Placement {
                node_selector: p.node_selector.unwrap_or_default(),
                tolerations: p.tolerations.unwrap_or_default(),
                affinity: p.affinity,
            })
            .unwrap_or_default();

        match origin {
            Some(origin) if errors.is_empty() => Ok(Self {
                origin,
                slicing,
                cache,
                placement,
                resources: spec.resources.clone(),
                image: spec.image.clone(),
                service,
                tuning,
                rollout,
                paused: spec.paused.unwrap_or(false),
                wipe_devices_on_delete,
                workload,
                replicas: spec.replicas,
                purge_token,
                fleet,
            }),
            _ => Err(ValidationErrors(errors)),
        }
    }
}

impl TryFrom<&SliceCacheSpec> for ValidatedSliceCache {
    type Error = ValidationErrors;

    fn try_from(spec: &SliceCacheSpec) -> Result<Self, Self::Error> {
        Self::new(spec)
    }
}
