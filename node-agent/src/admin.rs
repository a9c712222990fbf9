//! The admin listener: metrics, health and purge, on a port of its own so
//! that none of it is reachable through the client Service.
//!
//! - `GET /metrics`: Prometheus text.
//! - `GET /healthz`: the process is alive. `GET /readyz`: it serves traffic.
//! - `POST /purge?url=/path` or `POST /purge?prefix=/dir/`: drops objects from
//!   every tier. Needs `Authorization: Bearer <token>`; without a configured
//!   token, purge is disabled (403).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use tracing::info;

use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::store::ObjectId;

/// State the admin endpoints read.
#[derive(Debug)]
pub struct AdminApp {
    pub cache: Arc<Cache>,
    pub metrics: Arc<Metrics>,
    pub purge_token: Option<String>,
    pub ready: Arc<AtomicBool>,
}

#[async_trait]
impl ServeHttp for AdminApp {
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
}

impl AdminApp {
    async fn purge(&self, query: &str, auth: Option<&str>) -> Response<Vec<u8>> {
        let Some(token) = &self.purge_token else {
            return text(403, "purge is disabled: no purge token is configured\n");
        };
        let presented = auth.and_then(|a| a.strip_prefix("Bearer ")).map(str::trim);
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
            return text(401, "purge needs Authorization: Bearer <token>\n");
        }
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| percent_decode(v))
        };
        let (kind, objects) = match (param("url"), param("prefix")) {
            (Some(url), None) => ("url", vec![ObjectId::from_cache_key(&url)]),
            (None, Some(prefix)) if !prefix.is_empty() => ("prefix", self.cache.objects_with_prefix(&prefix)),
            _ => return text(400, "give exactly one of ?url=/path or ?prefix=/dir/\n"),
        };
        let mut purged = 0;
        for object in objects {
            if self.cache.remove(object).await {
                purged += 1;
            }
        }
        self.metrics.purges.with_label_values(&[kind]).inc();
        info!(kind, purged, query, "purge");
        respond(
            200,
            "application/json",
            format!("{{\"purged\":{purged}}}\n").into_bytes(),
        )
    }
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
    fn compares_tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
    }
}
