//! `spec.service`: the client Service's type and port.

use super::{checks::check_range, error::ValidationError, model::Service};
use crate::spec::SliceCacheSpec;

/// Default client Service port.
pub const DEFAULT_SERVICE_PORT: u16 = 80;

pub(super) fn validate(spec: &SliceCacheSpec, errors: &mut Vec<ValidationError>) -> Service {
    let s = spec.service.clone().unwrap_or_default();
    let port = s.port.unwrap_or(DEFAULT_SERVICE_PORT);
    check_range(errors, "spec.service.port", i64::from(port), 1, 65535);
    Service {
        type_: s.type_.unwrap_or_default(),
        port,
    }
}
