//! The headers every object response starts from, and the conditional
//! request check that picks a 304.

use pingora::http::ResponseHeader;

use super::peer::{add_peer_headers, PeerHeaders};
use super::{Agent, Listener};
use crate::object::{unix_now, ObjectMeta};
use crate::response::response_header;

impl Agent {
    /// [`base_response`], and on the peer port the freshness this agent
    /// has left for the object: the member that asked caches the object's
    /// metadata (and hot-set slices) no longer than the owner may, so an
    /// origin change reaches non-owners as soon as it reaches the owner.
    /// `peer` holds the load and hot-key headers of a peer's answer.
    pub(super) fn base_response(&self, status: u16, meta: &ObjectMeta, peer: &PeerHeaders) -> ResponseHeader {
        let mut resp = base_response(status, meta);
        add_peer_headers(&mut resp, peer);
        if self.listener == Listener::Peer {
            let value = if meta.no_store {
                "no-store".to_string()
            } else {
                format!("max-age={}", meta.fresh_until.saturating_sub(unix_now()))
            };
            resp.insert_header(http::header::CACHE_CONTROL, value).ok();
        }
        resp
    }
}

fn base_response(status: u16, meta: &ObjectMeta) -> ResponseHeader {
    let mut resp = response_header(status);
    resp.insert_header(http::header::ACCEPT_RANGES, "bytes").ok();
    resp.insert_header(http::header::CONTENT_LENGTH, meta.size.to_string())
        .ok();
    let ct = meta.content_type.as_deref().unwrap_or("application/octet-stream");
    resp.insert_header(http::header::CONTENT_TYPE, ct).ok();
    if let Some(etag) = &meta.etag {
        resp.insert_header(http::header::ETAG, etag.as_str()).ok();
    }
    if let Some(lm) = &meta.last_modified {
        resp.insert_header(http::header::LAST_MODIFIED, lm.as_str()).ok();
    }
    resp
}

pub(super) fn simple_response(status: u16, body: &str) -> ResponseHeader {
    let mut resp = response_header(status);
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .ok();
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())
        .ok();
    resp
}

pub(super) fn not_modified_since(ims: &[u8], last_modified: Option<&str>) -> bool {
    let (Some(lm), Ok(ims)) = (last_modified, std::str::from_utf8(ims)) else {
        return false;
    };
    match (httpdate::parse_http_date(lm), httpdate::parse_http_date(ims.trim())) {
        (Ok(lm), Ok(ims)) => lm <= ims,
        _ => false,
    }
}
