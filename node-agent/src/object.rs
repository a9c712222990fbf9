//! What the agent knows about one origin object: its size, validators,
//! content type and freshness.
//!
//! The first slice fetched from the origin teaches all of it; every later
//! slice must agree, or the object has changed under us. The metadata is
//! stored next to the extents (as a small JSON blob) so a persistent tier can
//! serve after a restart.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pingora::http::ResponseHeader;
use serde::{Deserialize, Serialize};

use crate::range::is_strong;

/// Metadata of one version of one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// The cache key (path and query) the object was fetched under.
    pub key: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// False when the origin answered a range request with the whole object.
    pub accepts_ranges: bool,
    /// Unix seconds until which the object is fresh.
    pub fresh_until: u64,
    /// The origin forbade storing it (`no-store`, `private`).
    #[serde(default)]
    pub no_store: bool,
    /// Extent sizes this version has been cached under; probed in order on a
    /// lookup so data cached before a slice-size change keeps serving.
    #[serde(default)]
    pub extent_sizes: Vec<u64>,
}

/// Freshness policy for responses (the hot-reloadable part of it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FreshnessPolicy {
    pub default_ttl: Duration,
    pub honor_origin: bool,
}

impl ObjectMeta {
    /// Builds metadata from an origin response header.
    ///
    /// `size` comes from `Content-Range` (206) or `Content-Length` (200); the
    /// caller parses those because it also checks them against the request.
    pub fn from_response(
        key: &str,
        resp: &ResponseHeader,
        size: u64,
        accepts_ranges: bool,
        policy: FreshnessPolicy,
    ) -> Self {
        let header = |name: http::HeaderName| {
            resp.headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.trim().to_string())
        };
        let cache_control = CacheControl::parse(resp);
        let ttl = freshness_lifetime(&cache_control, resp, policy);
        Self {
            key: key.to_string(),
            size,
            etag: header(http::header::ETAG),
            last_modified: header(http::header::LAST_MODIFIED),
            content_type: header(http::header::CONTENT_TYPE),
            accepts_ranges,
            fresh_until: unix_now().saturating_add(ttl.as_secs()),
            no_store: policy.honor_origin && (cache_control.no_store || cache_control.private),
            extent_sizes: Vec::new(),
        }
    }

    /// A hash of the validators: two responses with the same version are the
    /// same bytes. Without any validator the size is all we can compare.
    pub fn version(&self) -> u64 {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&self.size.to_le_bytes());
        for v in [&self.etag, &self.last_modified] {
            buf.push(0);
            if let Some(v) = v {
                buf.extend_from_slice(v.as_bytes());
            }
        }
        xxhash_rust::xxh3::xxh3_64(&buf)
    }

    /// The strong ETag, if the origin gave one: only a strong tag can guard
    /// byte ranges with `If-Match`.
    pub fn strong_etag(&self) -> Option<&str> {
        self.etag.as_deref().filter(|e| is_strong(e))
    }

    pub fn is_fresh(&self) -> bool {
        unix_now() < self.fresh_until
    }

    /// Extends freshness after a successful revalidation (a 304).
    pub fn refresh(&mut self, resp: &ResponseHeader, policy: FreshnessPolicy) {
        let ttl = freshness_lifetime(&CacheControl::parse(resp), resp, policy);
        self.fresh_until = unix_now().saturating_add(ttl.as_secs());
    }

    /// True when `other` describes the same bytes as `self`.
    pub fn same_version(&self, other: &ObjectMeta) -> bool {
        self.version() == other.version()
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

#[derive(Debug, Default)]
struct CacheControl {
    max_age: Option<u64>,
    s_maxage: Option<u64>,
    no_store: bool,
    no_cache: bool,
    private: bool,
}

impl CacheControl {
    fn parse(resp: &ResponseHeader) -> Self {
        let mut cc = Self::default();
        for value in resp.headers.get_all(http::header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for directive in value.split(',') {
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let secs = arg.and_then(|a| a.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "max-age" => cc.max_age = secs,
                    "s-maxage" => cc.s_maxage = secs,
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    _ => {}
                }
            }
        }
        cc
    }
}

/// RFC 9111 §4.2.1, for a shared cache: `s-maxage`, then `max-age`, then
/// `Expires` minus `Date`; `no-cache` means "revalidate every time".
fn freshness_lifetime(cc: &CacheControl, resp: &ResponseHeader, policy: FreshnessPolicy) -> Duration {
    if !policy.honor_origin {
        return policy.default_ttl;
    }
    if cc.no_cache || cc.no_store {
        return Duration::ZERO;
    }
    if let Some(secs) = cc.s_maxage.or(cc.max_age) {
        return Duration::from_secs(secs);
    }
    let date = |name: http::HeaderName| {
        resp.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    if let Some(expires) = resp.headers.get(http::header::EXPIRES) {
        // An invalid Expires (often "0") means already expired.
        let Some(expires) = expires.to_str().ok().and_then(|v| httpdate::parse_http_date(v).ok()) else {
            return Duration::ZERO;
        };
        let now = date(http::header::DATE).unwrap_or_else(SystemTime::now);
        return expires.duration_since(now).unwrap_or(Duration::ZERO);
    }
    policy.default_ttl
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).expect("header");
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("append");
        }
        r
    }

    const POLICY: FreshnessPolicy = FreshnessPolicy {
        default_ttl: Duration::from_secs(60),
        honor_origin: true,
    };

    #[test]
    fn freshness_follows_cache_control_then_expires_then_default() {
        let lifetime = |h: &[(&str, &str)], p| freshness_lifetime(&CacheControl::parse(&resp(h)), &resp(h), p);
        assert_eq!(
            lifetime(&[("cache-control", "public, max-age=10")], POLICY),
            Duration::from_secs(10)
        );
        assert_eq!(
            lifetime(&[("cache-control", "max-age=10, s-maxage=20")], POLICY),
            Duration::from_secs(20)
        );
        assert_eq!(lifetime(&[("cache-control", "no-cache")], POLICY), Duration::ZERO);
        assert_eq!(lifetime(&[("expires", "0")], POLICY), Duration::ZERO);
        assert_eq!(
            lifetime(
                &[
                    ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                    ("expires", "Sun, 06 Nov 1994 08:50:37 GMT")
                ],
                POLICY
            ),
            Duration::from_secs(60)
        );
        assert_eq!(lifetime(&[], POLICY), Duration::from_secs(60));
        let ignore = FreshnessPolicy {
            honor_origin: false,
            ..POLICY
        };
        assert_eq!(
            lifetime(&[("cache-control", "max-age=5")], ignore),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn version_changes_with_validators_and_meta_round_trips() {
        let a = ObjectMeta::from_response("/a", &resp(&[("etag", "\"1\"")]), 10, true, POLICY);
        let b = ObjectMeta::from_response("/a", &resp(&[("etag", "\"2\"")]), 10, true, POLICY);
        let c = ObjectMeta::from_response("/a", &resp(&[("etag", "\"1\"")]), 11, true, POLICY);
        assert_ne!(a.version(), b.version());
        assert_ne!(a.version(), c.version());
        assert_eq!(ObjectMeta::decode(&a.encode()), Some(a.clone()));
        assert_eq!(a.strong_etag(), Some("\"1\""));
        assert!(ObjectMeta::decode(b"not json").is_none());
    }

    #[test]
    fn private_and_no_store_are_not_stored() {
        let m = ObjectMeta::from_response("/a", &resp(&[("cache-control", "private")]), 1, true, POLICY);
        assert!(m.no_store);
    }
}
