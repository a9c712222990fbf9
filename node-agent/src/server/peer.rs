//! What the agent does differently for the fleet's peers: the token check,
//! the hop marker, where their misses go, the load and hot-key headers of
//! its answers, and which counters their traffic goes to.

use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;

use super::{Agent, Listener};
use crate::fleet::{Hop, Route, HOP_HEADER};
use crate::store::ObjectId;

/// The headers a peer's answer carries (none for a client's).
pub(super) type PeerHeaders = Option<[(&'static str, String); 2]>;

impl Agent {
    /// What a request takes this agent for: `None` for a client's (the
    /// client port ignores the hop marker, so a client cannot make an
    /// agent skip the owner).
    pub(super) fn hop(&self, session: &ServerSession) -> Option<Hop> {
        (self.listener == Listener::Peer).then(|| Hop::parse(session.get_header(HOP_HEADER).map(|v| v.as_bytes())))
    }

    /// Counts a peer's request for `offset` of `object` and returns what
    /// its answer tells the peer: this agent's load, whether the key is hot.
    pub(super) fn serving_peer(&self, object: ObjectId, offset: u64) -> PeerHeaders {
        match (&self.fleet, self.listener) {
            (Some(fleet), Listener::Peer) => Some(fleet.serving_peer(object, offset)),
            _ => None,
        }
    }

    /// Where a miss at `offset` of `object` goes: for a client's request in
    /// a fleet, the member holding it or the origin ([`Fleet::route`]); for
    /// a peer's, the origin when this agent owns the slice, else as
    /// [`Fleet::route_for_peer`] says (never kept on disk).
    ///
    /// [`Fleet::route`]: crate::fleet::Fleet::route
    /// [`Fleet::route_for_peer`]: crate::fleet::Fleet::route_for_peer
    pub(super) fn route(&self, object: ObjectId, offset: u64, hop: Option<Hop>) -> Route {
        match (&self.fleet, hop) {
            (Some(fleet), None) => fleet.route(object, offset),
            (Some(fleet), Some(hop)) => fleet.route_for_peer(object, offset, hop).unwrap_or(Route::Origin),
            (None, _) => Route::Origin,
        }
    }

    /// Whether a request on the peer port carries the fleet's token; a
    /// refusal is counted.
    pub(super) fn peer_authorized(&self, session: &ServerSession) -> bool {
        let Some(fleet) = &self.fleet else {
            return false;
        };
        let presented = session.get_header(http::header::AUTHORIZATION).map(|v| v.as_bytes());
        if fleet.authorized(presented) {
            return true;
        }
        fleet.metrics.count("server", "refused");
        false
    }

    /// Counts body bytes sent: to clients, or to peers on the peer port (so
    /// the fleet's client bytes count each byte once).
    pub(super) fn count_sent(&self, len: u64) {
        match (&self.fleet, self.listener) {
            (Some(fleet), Listener::Peer) => fleet.metrics.peer_bytes.with_label_values(&["out"]).inc_by(len),
            _ => self.metrics.client_bytes.inc_by(len),
        }
    }

    /// Counts a response: a client request, or a peer's request served.
    pub(super) fn count_request(&self, method: &http::Method, status: u16) {
        match (&self.fleet, self.listener) {
            (Some(fleet), Listener::Peer) => fleet.metrics.count("server", if status < 500 { "ok" } else { "error" }),
            _ => self
                .metrics
                .requests
                .with_label_values(&[method.as_str(), &status.to_string()])
                .inc(),
        }
    }
}

/// Adds the peer headers of an answer to `resp`.
pub(super) fn add_peer_headers(resp: &mut ResponseHeader, headers: &PeerHeaders) {
    for (name, value) in headers.iter().flatten() {
        resp.insert_header(*name, value.as_str()).ok();
    }
}
