//! The admin listener: metrics, health and purge, on a port of its own so
//! that none of it is reachable through the client Service.
//!
//! - `GET /metrics`: Prometheus text.
//! - `GET /healthz`: the process is alive. `GET /readyz`: it serves traffic.
//! - `POST /purge?url=/path` or `POST /purge?prefix=/dir/`: drops objects from
//!   every tier. Needs `Authorization: Bearer <token>`; without a configured
//!   token, purge is disabled (403). The URL and prefix are normalised as
//!   client targets are, so they name the cache keys clients created. Failed
//!   attempts are logged (throttled) and counted.
//!
//! The admin app reads requests itself rather than through Pingora's
//! `HttpServer`, so a request that cannot be read gets a status and a log
//! line of bounded length instead of an echo of whatever the client sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::Response;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use tracing::{debug, info, warn};

use crate::cache::Cache;
use crate::log_throttle::LogThrottle;
use crate::metrics::Metrics;
use crate::request_check::{self, for_log};
use crate::request_target;
use crate::store::ObjectId;

/// Time an admin client has to send its request header.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// State the admin endpoints read.
#[derive(Debug)]
pub struct AdminApp {
    pub cache: Arc<Cache>,
    pub metrics: Arc<Metrics>,
    pub purge_token: Option<String>,
    pub ready: Arc<AtomicBool>,
    /// Throttles the log line for refused purges.
    pub purge_log: LogThrottle,
}

#[async_trait]
impl HttpServerApp for AdminApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match tokio::time::timeout(ADMIN_HEADER_TIMEOUT, session.read_request()).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Err(_) => return None,
            Ok(Err(e)) => {
                let status = request_check::parse_failure_status(&e);
                debug!(error = %for_log(&e.to_string()), status, "unreadable admin request");
                let body = Bytes::from_static(b"the request could not be read\n");
                session.respond_error_with_body(status, body).await.ok();
                return None;
            }
        }
        session.set_keepalive((!*shutdown.borrow()).then_some(60));
        let (parts, body) = self.response(&mut session).await.into_parts();
        let header: ResponseHeader = parts.into();
        if let Err(e) = session.write_response_header(Box::new(header)).await {
            debug!(error = %e, "writing an admin response failed");
            return None;
        }
        if let Err(e) = session.write_response_body(Bytes::from(body), true).await {
            debug!(error = %e, "writing an admin response failed");
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(Some(stream)) => Some(ReusedHttpStream::from_reusable_stream(stream, settings)),
            Ok(None) => None,
            Err(e) => {
                debug!(error = %e, "finishing an admin response failed");
                None
            }
        }
    }
}

impl AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let query = req.uri.query().unwrap_or("").to_string();
        let auth = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match (method.as_str(), path.as_str()) {
            ("GET", "/metrics") => {
                self.metrics.memory_used.set(self.cache.memory().used_bytes() as i64);
                self.metrics
                    .memory_capacity
                    .set(self.cache.memory().capacity_bytes() as i64);
                let spilled = self.cache.memory().arena().map_or(0, |a| a.spilled_extents());
                let counted = self.metrics.memory_spilled.get();
                self.metrics.memory_spilled.inc_by(spilled.saturating_sub(counted));
                respond(200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render())
            }
            ("GET", "/healthz") => text(200, "ok\n"),
            ("GET", "/readyz") if self.ready.load(Ordering::Relaxed) => text(200, "ready\n"),
            ("GET", "/readyz") => text(503, "starting\n"),
            ("POST", "/purge") => self.purge(&query, auth.as_deref()).await,
            (_, "/metrics" | "/healthz" | "/readyz" | "/purge") => text(405, "method not allowed\n"),
            _ => text(404, "not found: try /metrics, /healthz, /readyz or POST /purge\n"),
        }
    }

    async fn purge(&self, query: &str, auth: Option<&str>) -> Response<Vec<u8>> {
        let Some(token) = &self.purge_token else {
            self.refuse_purge("disabled");
            return text(403, "purge is disabled: no purge token is configured\n");
        };
        if !bearer_token(auth).is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
            self.refuse_purge(if auth.is_some() { "bad_token" } else { "no_token" });
            return text(401, "purge needs Authorization: Bearer <token>\n");
        }
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| percent_decode(v))
        };
        let (kind, key) = match (param("url"), param("prefix")) {
            (Some(url), None) => ("url", url),
            (None, Some(prefix)) if !prefix.is_empty() => ("prefix", prefix),
            _ => return text(400, "give exactly one of ?url=/path or ?prefix=/dir/\n"),
        };
        let key = match request_target::normalise(&key) {
            Ok(k) => k,
            Err(e) => return text(400, &format!("{kind}: {e}\n")),
        };
        let objects = match kind {
            "url" => vec![ObjectId::from_cache_key(&key)],
            _ => self.cache.objects_with_prefix(&key),
        };
        let mut purged = 0;
        for object in objects {
            if self.cache.remove(object).await {
                purged += 1;
            }
        }
        self.metrics.purges.with_label_values(&[kind]).inc();
        info!(kind, purged, key = %for_log(&key), "purge");
        respond(
            200,
            "application/json",
            format!("{{\"purged\":{purged}}}\n").into_bytes(),
        )
    }
}

impl AdminApp {
    fn refuse_purge(&self, reason: &'static str) {
        self.metrics.purge_refusals.with_label_values(&[reason]).inc();
        if let Some(held_back) = self.purge_log.allow() {
            warn!(reason, held_back, "purge refused");
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is
/// case-insensitive (RFC 9110 §11.1).
fn bearer_token(auth: Option<&str>) -> Option<&str> {
    let (scheme, token) = auth?.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    respond(status, "text/plain; charset=utf-8", body.as_bytes().to_vec())
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_values() {
        assert_eq!(percent_decode("/a%20b/c"), "/a b/c");
        assert_eq!(percent_decode("%2Fx%3Fy%3D1"), "/x?y=1");
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("BEARER  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearerabc")), None);
        assert_eq!(bearer_token(None), None);
    }

    #[test]
    fn compares_tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
    }
}
