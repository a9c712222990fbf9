//! The operator's own metrics and its health endpoints.
//!
//! `/metrics` serves Prometheus text: reconciles by result, reconcile
//! duration, errors by reason (the same reasons as Events and conditions).
//! `/healthz` answers while the process runs; `/readyz` once this replica
//! leads and its controller runs. The server is a few lines over a TCP
//! listener: three fixed GET routes need no HTTP framework.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounterVec,
    duration: HistogramVec,
    errors: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "slicecache_operator_reconciliations_total",
                "SliceCache reconciles by result (ok or error)",
            ),
            &["result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "slicecache_operator_reconcile_duration_seconds",
                "Time one SliceCache reconcile took",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &[],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "slicecache_operator_reconcile_errors_total",
                "Failed SliceCache reconciles by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        Ok(Self {
            registry,
            reconciliations,
            duration,
            errors,
        })
    }

    /// Records one reconcile; `error` is the reason of a failure.
    pub fn observe_reconcile(&self, elapsed: Duration, error: Option<&str>) {
        self.duration
            .with_label_values::<&str>(&[])
            .observe(elapsed.as_secs_f64());
        match error {
            None => self.reconciliations.with_label_values(&["ok"]).inc(),
            Some(reason) => {
                self.reconciliations.with_label_values(&["error"]).inc();
                self.errors.with_label_values(&[reason]).inc();
            }
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics and health listening");
    loop {
        let (mut stream, _) = listener.accept().await?;
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let mut parts = request.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (code, content_type, body) = respond(method, path, &metrics, ready.load(Ordering::Relaxed));
            let response = format!(
                "HTTP/1.1 {code}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Status line, content type and body for one request.
pub fn respond(method: &str, path: &str, metrics: &Metrics, ready: bool) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render()),
        ("GET", "/healthz") => ("200 OK", TEXT, "ok\n".into()),
        ("GET", "/readyz") if ready => ("200 OK", TEXT, "ready\n".into()),
        ("GET", "/readyz") => ("503 Service Unavailable", TEXT, "not leading\n".into()),
        (_, "/metrics" | "/healthz" | "/readyz") => ("405 Method Not Allowed", TEXT, "method not allowed\n".into()),
        _ => (
            "404 Not Found",
            TEXT,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn routes_and_metric_names() {
        let metrics = Metrics::new().unwrap();
        metrics.observe_reconcile(Duration::from_millis(20), None);
        metrics.observe_reconcile(Duration::from_millis(20), Some("ApplyFailed"));
        let (code, _, body) = respond("GET", "/metrics", &metrics, false);
        assert_eq!(code, "200 OK");
        assert!(
            body.contains("slicecache_operator_reconciliations_total{result=\"ok\"} 1"),
            "{body}"
        );
        assert!(body.contains("slicecache_operator_reconcile_errors_total{reason=\"ApplyFailed\"} 1"));
        assert!(body.contains("slicecache_operator_reconcile_duration_seconds_count 2"));
        assert_eq!(respond("GET", "/healthz", &metrics, false).0, "200 OK");
        assert_eq!(respond("GET", "/readyz", &metrics, false).0, "503 Service Unavailable");
        assert_eq!(respond("GET", "/readyz", &metrics, true).0, "200 OK");
        assert_eq!(respond("POST", "/metrics", &metrics, true).0, "405 Method Not Allowed");
        assert_eq!(respond("GET", "/", &metrics, true).0, "404 Not Found");
    }
}
