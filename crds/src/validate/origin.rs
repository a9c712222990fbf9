//! `spec.origin`: the URL misses go to, its Host header, timeouts and the
//! connections each agent may open.

use super::{
    checks::{check_range, parse_http_url, positive_duration},
    error::ValidationError,
    model::Origin,
};
use crate::{agent_config::OriginConfig, spec::SliceCacheSpec};

pub(super) fn validate(spec: &SliceCacheSpec, errors: &mut Vec<ValidationError>) -> Option<Origin> {
    let o = &spec.origin;
    let defaults = OriginConfig::new("");
    let url = parse_http_url(errors, "spec.origin.url", &o.url);
    if let Some(host) = &o.host_header {
        if !is_host(host) {
            errors.push(ValidationError::InvalidHostHeader {
                field: "spec.origin.hostHeader",
                value: host.clone(),
            });
        }
    }
    let timeouts = o.timeouts.clone().unwrap_or_default();
    let connect_timeout = positive_duration(
        errors,
        "spec.origin.timeouts.connect",
        timeouts.connect,
        defaults.connect_timeout,
    );
    let first_byte_timeout = positive_duration(
        errors,
        "spec.origin.timeouts.firstByte",
        timeouts.first_byte,
        defaults.first_byte_timeout,
    );
    let idle_timeout = positive_duration(
        errors,
        "spec.origin.timeouts.idle",
        timeouts.idle,
        defaults.idle_timeout,
    );
    let max_connections_per_agent = o.max_connections_per_agent.unwrap_or(defaults.max_connections);
    check_range(
        errors,
        "spec.origin.maxConnectionsPerAgent",
        i64::from(max_connections_per_agent),
        1,
        65535,
    );
    Some(Origin {
        url: url?,
        url_text: o.url.clone(),
        host_header: o.host_header.clone(),
        connect_timeout,
        first_byte_timeout,
        idle_timeout,
        max_connections_per_agent,
    })
}

/// A host name or IP literal, optionally with a port.
fn is_host(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        && value.parse::<http::uri::Authority>().is_ok()
}
