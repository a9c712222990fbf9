//! A small range-capable HTTP/1.1 origin: the real TCP origin the tests run
//! the agent against.
//!
//! It serves objects from memory with `ETag`, `Last-Modified`, single-range
//! `Range`, `If-Match`, `If-None-Match` and keep-alive, and records every
//! request so tests can assert what the origin saw. Knobs let a test replace
//! an object, turn range support off, add latency to every request, answer
//! the next requests with 429, or rate-limit: answer 429 to requests beyond
//! a number in flight at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One object the origin serves.
#[derive(Clone, Debug)]
pub struct OriginObject {
    pub body: Bytes,
    pub etag: String,
    pub last_modified: String,
    pub cache_control: Option<String>,
}

impl OriginObject {
    pub fn new(body: Bytes, etag: &str) -> Self {
        Self {
            body,
            etag: format!("\"{etag}\""),
            last_modified: "Sun, 01 Nov 2026 00:00:00 GMT".into(),
            cache_control: None,
        }
    }
}

/// One request as the origin saw it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub path: String,
    pub range: Option<String>,
    pub if_match: Option<String>,
    pub status: u16,
    pub body_bytes: u64,
}

/// Shared origin state and knobs.
#[derive(Debug, Default)]
pub struct OriginState {
    objects: Mutex<HashMap<String, OriginObject>>,
    seen: Mutex<Vec<SeenRequest>>,
    pub ignore_ranges: AtomicBool,
    /// Delay before answering each request (429s included), in ms.
    pub latency_ms: AtomicU64,
    /// Answer this many next requests with 429.
    pub fail_next: AtomicU32,
    /// Rate limit: a request arriving while this many are already in flight
    /// (being delayed or answered) gets 429 instead. 0: no limit.
    pub max_in_flight: AtomicU32,
    /// Requests in flight right now (for `max_in_flight`).
    in_flight: AtomicU32,
    /// The most requests that were in flight at once.
    pub peak_in_flight: AtomicU32,
    pub body_bytes: AtomicU64,
}

/// Counts one request in flight until dropped.
struct InFlight<'a>(&'a AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl OriginState {
    pub fn put(&self, path: &str, object: OriginObject) {
        lock(&self.objects).insert(path.to_string(), object);
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        lock(&self.seen).clone()
    }

    pub fn clear_seen(&self) {
        lock(&self.seen).clear();
        self.body_bytes.store(0, Ordering::Relaxed);
        self.peak_in_flight.store(0, Ordering::Relaxed);
    }
}

/// A running origin; stops when dropped.
#[derive(Debug)]
pub struct TestOrigin {
    pub addr: SocketAddr,
    pub state: Arc<OriginState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestOrigin {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> std::io::Result<Self> {
        Self::bind("127.0.0.1:0").await
    }

    pub async fn bind(addr: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(OriginState::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve_connection(stream, st).await;
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// What the origin has seen, once it has finished recording: it records a
/// request (and counts its body bytes) only after writing the response, so
/// a client can hold every byte a moment before that.
pub async fn settled(origin: &TestOrigin) -> Vec<SeenRequest> {
    let mut last = origin.state.seen().len();
    let mut stable = 0;
    while stable < 3 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let now = origin.state.seen().len();
        if now == last {
            stable += 1;
        } else {
            (last, stable) = (now, 0);
        }
    }
    origin.state.seen()
}

/// Deterministic pseudo-random bytes, so a checker can regenerate them.
pub fn pattern(len: usize, seed: u64) -> Bytes {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

async fn serve_connection(stream: TcpStream, state: Arc<OriginState>) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Read one request header.
        loop {
            let mut byte = [0u8; 1];
            if reader.read(&mut byte).await? == 0 {
                return Ok(());
            }
            buf.push(byte[0]);
            if buf.ends_with(b"\r\n\r\n") {
                break;
            }
            if buf.len() > 64 << 10 {
                return Ok(());
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or("/").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let already = state.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(&state.in_flight);
        state.peak_in_flight.fetch_max(already + 1, Ordering::Relaxed);
        let limit = state.max_in_flight.load(Ordering::Relaxed);
        let over_limit = limit > 0 && already >= limit;
        let latency = state.latency_ms.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let (status, head, body) = respond(&state, &method, &path, &header, over_limit);
        let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
        for (k, v) in &head {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        write.write_all(&out).await?;
        if method != "HEAD" {
            for chunk in body.chunks(256 << 10) {
                write.write_all(chunk).await?;
            }
        }
        state.body_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        lock(&state.seen).push(SeenRequest {
            path,
            range: header("range"),
            if_match: header("if-match"),
            status,
            body_bytes: body.len() as u64,
        });
    }
}

type Head = Vec<(&'static str, String)>;

fn respond(
    state: &OriginState,
    method: &str,
    path: &str,
    header: &dyn Fn(&str) -> Option<String>,
    over_limit: bool,
) -> (u16, Head, Bytes) {
    if method != "GET" && method != "HEAD" {
        return (405, vec![], Bytes::new());
    }
    if over_limit
        || state
            .fail_next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    {
        return (429, vec![("Retry-After", "1".into())], Bytes::new());
    }
    let Some(obj) = lock(&state.objects).get(path).cloned() else {
        return (404, vec![], Bytes::from_static(b"not found\n"));
    };
    let mut head: Head = vec![
        ("ETag", obj.etag.clone()),
        ("Last-Modified", obj.last_modified.clone()),
        ("Content-Type", "application/octet-stream".into()),
    ];
    if let Some(cc) = &obj.cache_control {
        head.push(("Cache-Control", cc.clone()));
    }
    if header("if-match").is_some_and(|m| m != obj.etag && m != "*") {
        return (412, vec![], Bytes::new());
    }
    if header("if-none-match").is_some_and(|m| m == obj.etag) {
        return (304, head, Bytes::new());
    }
    let len = obj.body.len() as u64;
    let range = header("range").filter(|_| !state.ignore_ranges.load(Ordering::Relaxed));
    if let Some(range) = range {
        head.push(("Accept-Ranges", "bytes".into()));
        let spec = range.strip_prefix("bytes=").and_then(|r| r.split_once('-'));
        let parsed = spec.and_then(|(a, b)| {
            let first: u64 = a.parse().ok()?;
            let last: u64 = if b.is_empty() {
                len.saturating_sub(1)
            } else {
                b.parse().ok()?
            };
            Some((first, last.min(len.saturating_sub(1))))
        });
        return match parsed {
            Some((first, last)) if first < len && first <= last => {
                head.push(("Content-Range", format!("bytes {first}-{last}/{len}")));
                (206, head, obj.body.slice(first as usize..=last as usize))
            }
            _ => (416, vec![("Content-Range", format!("bytes */{len}"))], Bytes::new()),
        };
    }
    (200, head, obj.body)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        404 => "Not Found",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::client::HttpClient;

    #[tokio::test]
    async fn answers_429_beyond_max_in_flight() {
        let origin = TestOrigin::start().await.unwrap();
        origin.state.put("/o", OriginObject::new(pattern(1000, 1), "o"));
        origin.state.latency_ms.store(200, Ordering::Relaxed);
        origin.state.max_in_flight.store(2, Ordering::Relaxed);
        let get = || async {
            let mut client = HttpClient::new(origin.addr);
            client.get("/o", &[]).await.unwrap().status
        };
        let (a, b, c) = tokio::join!(get(), get(), get());
        let mut statuses = vec![a, b, c];
        statuses.sort_unstable();
        assert_eq!(statuses, vec![200, 200, 429]);
        // Below the limit again once those are done.
        assert_eq!(get().await, 200);
    }
}
