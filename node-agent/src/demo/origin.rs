//! The demo's origin: generated objects served over HTTP/1.1 with `ETag`,
//! `Last-Modified` and `Range`, on Pingora's server session and the agent's
//! own range parser. It records nothing and injects no failures; the
//! origin the tests use for that lives in the workspace's test-support
//! crate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use tokio::net::{TcpListener, TcpStream};

use crate::range::{parse_range_header, resolve, RangeOutcome};

const LAST_MODIFIED: &str = "Sun, 01 Nov 2026 00:00:00 GMT";

/// A running origin; stops accepting when dropped.
#[derive(Debug)]
pub struct DemoOrigin {
    pub addr: SocketAddr,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DemoOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DemoOrigin {
    /// Serves `objects` (path, body) on a free loopback port; each body's
    /// `ETag` is its index.
    pub async fn start(objects: &[(&str, Bytes)]) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let objects: Arc<HashMap<String, (Bytes, String)>> = Arc::new(
            objects
                .iter()
                .enumerate()
                .map(|(i, (path, body))| (path.to_string(), (body.clone(), format!("\"v{i}\""))))
                .collect(),
        );
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, objects.clone(), counter.clone()));
            }
        });
        Ok(Self { addr, sent, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Body bytes sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

async fn serve(stream: TcpStream, objects: Arc<HashMap<String, (Bytes, String)>>, sent: Arc<AtomicU64>) {
    let _ = stream.set_nodelay(true);
    let mut stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(stream));
    loop {
        let mut session = ServerSession::new_http1(stream);
        if !matches!(session.read_request().await, Ok(true)) {
            return;
        }
        let found = objects.get(session.req_header().uri.path());
        let (header, body) = respond(&session, found);
        let is_head = session.req_header().method == http::Method::HEAD;
        if session.write_response_header(Box::new(header)).await.is_err() {
            return;
        }
        let len = if is_head { 0 } else { body.len() as u64 };
        if session.write_response_body(body, true).await.is_err() {
            return;
        }
        sent.fetch_add(len, Ordering::Relaxed);
        // Keep the connection unless a request was pipelined behind this one.
        stream = match session.finish().await {
            Ok(Some(reusable)) => match reusable.into_parts() {
                (stream, None) => stream,
                (stream, Some(prefix)) if prefix.is_empty() => stream,
                _ => return,
            },
            _ => return,
        };
    }
}

fn respond(session: &ServerSession, found: Option<&(Bytes, String)>) -> (ResponseHeader, Bytes) {
    let method = &session.req_header().method;
    if method != http::Method::GET && method != http::Method::HEAD {
        return (header(405, 0), Bytes::new());
    }
    let Some((body, etag)) = found else {
        return (header(404, 0), Bytes::new());
    };
    let len = body.len() as u64;
    let outcome = session
        .get_header(http::header::RANGE)
        .and_then(|v| parse_range_header(v.as_bytes()))
        .map_or(RangeOutcome::Full, |specs| resolve(&specs, len));
    let (mut resp, body) = match outcome {
        RangeOutcome::Single(r) => {
            let mut resp = header(206, r.len());
            resp.insert_header(http::header::CONTENT_RANGE, r.content_range(len))
                .ok();
            (resp, body.slice(r.first as usize..=r.last as usize))
        }
        RangeOutcome::NotSatisfiable => {
            let mut resp = header(416, 0);
            resp.insert_header(http::header::CONTENT_RANGE, format!("bytes */{len}"))
                .ok();
            return (resp, Bytes::new());
        }
        // The agent asks for one slice at a time; several ranges get the whole.
        RangeOutcome::Full | RangeOutcome::Multi(_) => (header(200, len), body.clone()),
    };
    for (name, value) in [
        (http::header::ETAG, etag.as_str()),
        (http::header::LAST_MODIFIED, LAST_MODIFIED),
        (http::header::ACCEPT_RANGES, "bytes"),
        (http::header::CONTENT_TYPE, "application/octet-stream"),
    ] {
        resp.insert_header(name, value).ok();
    }
    (resp, body)
}

fn header(status: u16, content_length: u64) -> ResponseHeader {
    let mut resp = crate::response::response_header(status);
    resp.insert_header(http::header::CONTENT_LENGTH, content_length.to_string())
        .ok();
    resp
}
