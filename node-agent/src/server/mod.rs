//! The client-facing HTTP service: turns each request into a slice plan and
//! streams the answer from the cache and from slice fills.
//!
//! A request first settles which version of the object it serves (cached
//! fresh metadata, a revalidation, or the first slice's response header), then
//! answers 200/206/304/416 or `multipart/byteranges` for that version only.
//! Body bytes stream slice by slice while later slices are fetched ahead:
//! `concurrency` of them at first, more when the origin is far (see
//! [`crate::window`]). If the object changes mid-response the connection is closed:
//! a truncated body is detectable, mixed bytes would not be.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::apps::{HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use tracing::{debug, info, warn};

use crate::cache::Cache;
use crate::client_limits::{ConnectionGate, ConnectionPermit, Cut};
use crate::config::{LiveTunables, RuntimeTunables};
use crate::fill::{Answered, FillError, FillHead, FillKey, FillReader, FillSpec, Fills};
use crate::fleet::{Fleet, Hop};
use crate::log_throttle::LogThrottle;
use crate::metrics::Metrics;
use crate::object::ObjectMeta;
use crate::range::{self, ByteRange, RangeOutcome, RangeSpec, Validators};
use crate::request_check::{self, Rejection};
use crate::sendfile::SocketWriter;
use crate::slicer::{Slice, SlicePlan};
use crate::store::ObjectId;
use crate::window::{Share, WindowBudget};

mod headers;
mod lookup;
mod peer;

use headers::{not_modified_since, simple_response};
use lookup::{join_fill, SliceLookup, SliceSource, MAX_LOOKS};

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct Agent {
    pub cache: Arc<Cache>,
    pub fills: Arc<Fills>,
    pub tunables: Arc<LiveTunables>,
    pub metrics: Arc<Metrics>,
    /// Responses being written now, and the proxy's worker threads: when
    /// there are more responses than workers, writers take turns.
    pub active: std::sync::atomic::AtomicUsize,
    pub workers: usize,
    /// Client connection caps and timeouts.
    pub gate: Arc<ConnectionGate>,
    /// Throttles the log line for refused connections.
    pub refusal_log: LogThrottle,
    /// The fleet this agent is a member of, if any.
    pub fleet: Option<Arc<Fleet>>,
    /// What the responses' fetch windows share.
    pub fetch_ahead: Arc<WindowBudget>,
    /// Which listener this instance serves.
    pub listener: Listener,
}

/// The listener an [`Agent`] serves: clients, or the fleet's peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// Clients (behind the client Service): misses go to the slice's owner.
    Client,
    /// Fleet peers, with the fleet's token: never forwarded again; misses
    /// go to the origin, whatever this agent's view of the ring.
    Peer,
}

/// Why a response ended early; the connection is closed.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error("client went away: {0}")]
    Client(String),
    #[error(transparent)]
    Fill(#[from] FillError),
    #[error("slice {offset} ended after {got} of {want} bytes")]
    Short { offset: u64, got: u64, want: u64 },
}

/// Pingora application wrapper for [`Agent`].
#[derive(Debug)]
pub struct ProxyApp(pub Arc<Agent>);

#[async_trait]
impl HttpServerApp for ProxyApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let gate = &self.0.gate;
        let limits = *gate.limits();
        // A permit travels with its connection from request to request.
        let reused = session
            .take_connection_user_context()
            .and_then(|c| c.downcast::<ConnectionPermit>().ok());
        let (permit, wait, cut) = match reused {
            Some(permit) => (
                *permit,
                limits.keepalive_timeout + limits.header_timeout,
                Cut::IdleTimeout,
            ),
            None => {
                let ip = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
                match gate.admit(ip) {
                    Ok(permit) => (permit, limits.header_timeout, Cut::HeaderTimeout),
                    Err(cut) => {
                        if let Some(held_back) = self.0.refusal_log.allow() {
                            warn!(reason = cut.label(), client = ?ip, held_back, max = limits.max_connections,
                                  per_ip = limits.max_connections_per_ip, "client connection refused: too many connections");
                        }
                        return None;
                    }
                }
            }
        };
        session.set_pipelining_enabled(true);
        session.set_write_timeout(Some(limits.send_timeout));
        if limits.min_send_rate > 0 {
            session.set_min_send_rate(Some(usize::try_from(limits.min_send_rate).unwrap_or(usize::MAX)));
        }
        match tokio::time::timeout(wait, session.read_request()).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return None,
            Ok(Err(e)) => {
                let status = request_check::parse_failure_status(&e);
                debug!(error = %request_check::for_log(&e.to_string()), status, "unreadable client request");
                self.0
                    .count_rejected(if status == 400 { "malformed" } else { "too_large" });
                let body = Bytes::from_static(b"the request could not be read\n");
                if let Err(e) = session.respond_error_with_body(status, body).await {
                    debug!(error = %e, "answering an unreadable request failed");
                }
                return None;
            }
            Err(_) => {
                gate.count(cut);
                return None;
            }
        }
        let keepalive = (!*shutdown.borrow()).then(|| limits.keepalive_timeout.as_secs().max(1));
        session.set_keepalive(keepalive);
        let _active = ActiveResponse::start(&self.0.active);
        let served = self.0.serve_once(&mut session, true).await;
        let mut settings = pingora::apps::HttpPersistentSettings::for_session(&session);
        settings.set_user_context(Box::new(permit));
        match served {
            Ok(Served::Done) => {}
            Ok(Served::FromArena(hit)) => return self.0.send_arena_hit(session, hit, settings).await,
            Err(ServeError::Client(e)) if e.contains("Timedout") => {
                gate.count(Cut::SendTimeout);
                debug!(request = %request_check::for_log(&session.request_summary()), error = %e, "client stopped reading");
                return None;
            }
            Err(e) => {
                info!(request = %request_check::for_log(&session.request_summary()), error = %e, "response aborted");
                return None;
            }
        }
        reusable(session.finish().await, settings)
    }
}

/// The connection back for Pingora's next request, when the finished
/// response left it reusable.
fn reusable(
    finished: pingora::Result<Option<pingora::protocols::http::ReusableHttpStream>>,
    settings: pingora::apps::HttpPersistentSettings,
) -> Option<ReusedHttpStream> {
    match finished {
        Ok(Some(stream)) => Some(ReusedHttpStream::from_reusable_stream(stream, settings)),
        Ok(None) => None,
        Err(e) => {
            debug!(error = %e, "finishing response failed");
            None
        }
    }
}

/// A slice source prepared before the response header, keyed by the slice's
/// offset and size.
type Prepared = Option<((u64, u64), SliceSource)>;

/// A slice of a response's fetch window, with its hold on the budget.
struct Ahead {
    slice: Slice,
    source: SliceSource,
    _share: Option<Share>,
}

/// What every step of one response needs to know about the object it
/// serves: which one, under which path, at which version, and with the
/// tunables in force when the request started.
#[derive(Clone, Copy)]
struct ObjectRequest<'a> {
    object: ObjectId,
    /// What a peer's request takes this agent for (`None`: a client's).
    hop: Option<Hop>,
    path: &'a str,
    meta: &'a Arc<ObjectMeta>,
    tunables: &'a RuntimeTunables,
}

/// How a request was answered by [`Agent::serve_once`].
enum Served {
    /// The response is complete.
    Done,
    /// Every body byte is in L1's arena: the caller, which owns the session,
    /// sends the header and then the body with `sendfile`.
    FromArena(Box<ArenaHit>),
}

/// A response ready to go out of L1's arena with `sendfile`.
struct ArenaHit {
    resp: ResponseHeader,
    method: http::Method,
    started: Instant,
    /// The body, in order; every piece views the arena.
    pieces: Vec<Bytes>,
}

/// Counts a response as in progress while it lives.
struct ActiveResponse<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> ActiveResponse<'a> {
    fn start(active: &'a std::sync::atomic::AtomicUsize) -> Self {
        active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(active)
    }
}

impl Drop for ActiveResponse<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Agent {
    /// Serves one request. When the object turns out to have changed before
    /// any byte was sent, starts over once with the new version.
    async fn serve_once(&self, session: &mut ServerSession, may_retry: bool) -> Result<Served, ServeError> {
        let started = Instant::now();
        if self.listener == Listener::Peer && !self.peer_authorized(session) {
            let body = "the peer port serves fleet members only: present the fleet's token\n";
            return self
                .send_simple(session, simple_response(403, body), body, started)
                .await
                .map(|()| Served::Done);
        }
        let admitted = match request_check::admit(session.req_header()) {
            Ok(a) => a,
            Err(rejection) => return self.reject(session, rejection, started).await.map(|()| Served::Done),
        };
        let req = session.req_header();
        let method = req.method.clone();
        let is_head = method == http::Method::HEAD;
        if method != http::Method::GET && !is_head {
            let mut resp = simple_response(405, "only GET and HEAD are served\n");
            resp.insert_header(http::header::ALLOW, "GET, HEAD").ok();
            return self
                .send_simple(session, resp, "only GET and HEAD are served\n", started)
                .await
                .map(|()| Served::Done);
        }
        let path = admitted.target;
        let header = |name: http::HeaderName| req.headers.get(name).map(|v| v.as_bytes().to_vec());
        let range_specs = admitted.range.as_deref().and_then(range::parse_range_header);
        let if_range = header(http::header::IF_RANGE);
        let if_none_match = header(http::header::IF_NONE_MATCH);
        let if_modified_since = header(http::header::IF_MODIFIED_SINCE);

        let tunables = self.tunables.get();
        let object = ObjectId::from_cache_key(&path);
        let hint = match range_specs.as_deref() {
            Some([RangeSpec::Bounded { first, .. } | RangeSpec::From { first }, ..]) => *first,
            _ => 0,
        };
        let hop = self.hop(session);
        let peer_headers = self.serving_peer(object, hint);
        let (meta, mut learned) = match self.settle_version(object, &path, hint, hop, &tunables).await {
            Ok(v) => v,
            // The fill this request joined was guarded by a version that has
            // just been replaced at the origin: ask again for the new one.
            Err(FillError::Changed) if may_retry => {
                debug!(%path, "object changed while its version was being learned; asking again");
                return Box::pin(self.serve_once(session, false)).await;
            }
            Err(e) => return self.send_fill_error(session, e, started).await.map(|()| Served::Done),
        };

        // Client conditionals (RFC 9110 §13.2.2 order: If-None-Match, then
        // If-Modified-Since only without it).
        let not_modified = match (&if_none_match, &if_modified_since) {
            (Some(inm), _) => range::if_none_match_matches(inm, meta.etag.as_deref()),
            (None, Some(ims)) => not_modified_since(ims, meta.last_modified.as_deref()),
            _ => false,
        };
        if not_modified {
            let mut resp = self.base_response(304, &meta, &peer_headers);
            resp.remove_header(&http::header::CONTENT_LENGTH);
            resp.remove_header(&http::header::CONTENT_TYPE);
            return self
                .send_header_only(session, resp, started)
                .await
                .map(|()| Served::Done);
        }

        let validators = Validators {
            etag: meta.etag.as_deref(),
            last_modified: meta.last_modified.as_deref(),
        };
        let outcome = match (&range_specs, &if_range) {
            (Some(specs), Some(ir)) if range::if_range_holds(ir, validators) => range::resolve(specs, meta.size),
            (Some(_), Some(_)) => RangeOutcome::Full,
            (Some(specs), None) => range::resolve(specs, meta.size),
            (None, _) => RangeOutcome::Full,
        };

        let boundary = format!("{:016x}", rand::random::<u64>());
        let content_type = meta
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        let (resp, parts) = match &outcome {
            RangeOutcome::Full => {
                let resp = self.base_response(200, &meta, &peer_headers);
                // Lazily: `meta.size - 1` would underflow for an empty object.
                let whole = (meta.size > 0).then(|| ByteRange {
                    first: 0,
                    last: meta.size - 1,
                });
                (resp, whole.into_iter().map(|r| (Bytes::new(), r)).collect::<Vec<_>>())
            }
            RangeOutcome::Single(r) => {
                let mut resp = self.base_response(206, &meta, &peer_headers);
                resp.insert_header(http::header::CONTENT_RANGE, r.content_range(meta.size))
                    .ok();
                resp.insert_header(http::header::CONTENT_LENGTH, r.len().to_string())
                    .ok();
                (resp, vec![(Bytes::new(), *r)])
            }
            RangeOutcome::Multi(ranges) => {
                let mut resp = self.base_response(206, &meta, &peer_headers);
                let parts: Vec<(Bytes, ByteRange)> = ranges
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let lead = if i == 0 { "" } else { "\r\n" };
                        let head = format!(
                            "{lead}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {}\r\n\r\n",
                            r.content_range(meta.size)
                        );
                        (Bytes::from(head), *r)
                    })
                    .collect();
                let trailer_len = format!("\r\n--{boundary}--\r\n").len() as u64;
                let len: u64 = parts.iter().map(|(h, r)| h.len() as u64 + r.len()).sum::<u64>() + trailer_len;
                resp.insert_header(
                    http::header::CONTENT_TYPE,
                    format!("multipart/byteranges; boundary={boundary}"),
                )
                .ok();
                resp.insert_header(http::header::CONTENT_LENGTH, len.to_string()).ok();
                (resp, parts)
            }
            RangeOutcome::NotSatisfiable => {
                let mut resp = self.base_response(416, &meta, &peer_headers);
                resp.insert_header(http::header::CONTENT_RANGE, format!("bytes */{}", meta.size))
                    .ok();
                resp.insert_header(http::header::CONTENT_LENGTH, "0").ok();
                return self
                    .send_header_only(session, resp, started)
                    .await
                    .map(|()| Served::Done);
            }
        };
        let request = ObjectRequest {
            object,
            hop,
            path: &path,
            meta: &meta,
            tunables: &tunables,
        };
        if !is_head {
            if let Some((_, first)) = parts.first() {
                match self.prepare_first_slice(request, *first, &mut learned).await {
                    Ok(()) => {}
                    Err(FillError::Changed) if may_retry => {
                        debug!(%path, "object changed before the response started; serving the new version");
                        return Box::pin(self.serve_once(session, false)).await;
                    }
                    Err(e) => return self.send_fill_error(session, e, started).await.map(|()| Served::Done),
                }
            }
        }
        if let (false, RangeOutcome::Full | RangeOutcome::Single(_), Some((_, range))) =
            (is_head, &outcome, parts.first())
        {
            if let Some(pieces) = self
                .arena_body(session, object, &meta, *range, &tunables, &mut learned)
                .await
            {
                return Ok(Served::FromArena(Box::new(ArenaHit {
                    resp,
                    method,
                    started,
                    pieces,
                })));
            }
        }
        let status = resp.status.as_u16();
        self.write_header(session, resp, is_head).await?;
        self.metrics.client_ttfb.observe(started.elapsed().as_secs_f64());
        self.count_request(&method, status);
        if is_head {
            return Ok(Served::Done);
        }
        for (part_header, r) in &parts {
            if !part_header.is_empty() {
                self.write_body(session, part_header.clone()).await?;
            }
            self.stream_range(session, request, *r, &mut learned).await?;
        }
        if matches!(outcome, RangeOutcome::Multi(_)) {
            self.write_body(session, Bytes::from(format!("\r\n--{boundary}--\r\n")))
                .await?;
        }
        session
            .finish_body()
            .await
            .map_err(|e| ServeError::Client(e.to_string()))?;
        Ok(Served::Done)
    }

    /// Decides which version of the object this response serves. Returns the
    /// metadata and, when the origin had to be asked, the reader of the slice
    /// that taught it (so its bytes are not fetched twice).
    async fn settle_version(
        &self,
        object: ObjectId,
        path: &str,
        hint: u64,
        hop: Option<Hop>,
        tunables: &RuntimeTunables,
    ) -> Result<(Arc<ObjectMeta>, Prepared), FillError> {
        for attempt in 1..=MAX_LOOKS {
            let cached = self.cache.meta(object).await;
            if let Some(meta) = &cached {
                if meta.is_fresh() {
                    return Ok((meta.clone(), None));
                }
            }
            let size = match &cached {
                Some(meta) if meta.size <= tunables.min_object_size => meta.size.max(1),
                _ => tunables.slice_size,
            };
            let revalidate = cached.is_some();
            let key = FillKey {
                object,
                offset: hint / size * size,
                size,
                revalidate,
            };
            let spec = FillSpec {
                key,
                path: path.to_string(),
                revalidate,
                expected: cached,
                route: self.route(object, key.offset, hop),
            };
            let Some(mut reader) = join_fill(&self.fills, &self.metrics, spec, tunables.fill, attempt < MAX_LOOKS)
            else {
                // Another request learned the version meanwhile.
                continue;
            };
            return match reader.head().await? {
                FillHead::NotModified(meta) => Ok((meta, None)),
                FillHead::Body(meta) => {
                    if meta.size <= tunables.min_object_size && meta.size > size {
                        // Small object: fetched whole from now on.
                        return Ok((meta, None));
                    }
                    Ok((meta, Some(((key.offset, key.size), SliceSource::Filling(reader)))))
                }
            };
        }
        unreachable!("the last look joins a fill unconditionally")
    }

    /// Streams `range` of the object, slice by slice, fetching ahead as far
    /// as the response's fetch window (see [`crate::window`]) reaches.
    async fn stream_range(
        &self,
        session: &mut ServerSession,
        request: ObjectRequest<'_>,
        range: ByteRange,
        learned: &mut Prepared,
    ) -> Result<(), ServeError> {
        let ObjectRequest { meta, tunables, .. } = request;
        let slice_size = slice_size_for(meta, tunables);
        // An origin that ignores ranges sends the whole object for any slice;
        // fetch one at a time so the first fill caches the rest.
        let cap = if meta.accepts_ranges {
            self.fills.max_subrequests()
        } else {
            1
        };
        let mut window = self.fetch_ahead.window(tunables.concurrency, cap, slice_size);
        let mut plan = SlicePlan::new(range, meta.size, slice_size).peekable();
        let mut pending: VecDeque<Ahead> = VecDeque::new();
        // Slices looked up after the first window waited for a slot; the
        // tuner grows concurrency when many that were not in memory did.
        let mut first_window = true;
        loop {
            while pending.len() < window.size() && plan.peek().is_some() {
                // The slice to send next needs no share of the budget, so
                // every response makes progress; the ones ahead of it do.
                let share = if pending.is_empty() {
                    None
                } else {
                    let Some(share) = self.fetch_ahead.take(slice_size) else {
                        break;
                    };
                    Some(share)
                };
                let Some(slice) = plan.next() else { break };
                let source = self.source_for(request, slice, slice_size, learned).await;
                let cached = matches!(source, SliceSource::Cached(_));
                if !first_window && !cached {
                    self.metrics.lookahead_waits.inc();
                }
                // A slice already in memory costs nothing more ahead.
                let share = if cached { None } else { share };
                pending.push_back(Ahead {
                    slice,
                    source,
                    _share: share,
                });
            }
            first_window = false;
            let Some(Ahead { slice, source, _share }) = pending.pop_front() else {
                return Ok(());
            };
            match source.ready().await? {
                SliceSource::Cached(pieces) => {
                    for piece in pieces {
                        self.write_body(session, piece).await?;
                    }
                }
                SliceSource::Filling(reader) => {
                    let answered = self.stream_fill(session, meta, slice, reader).await?;
                    if let Some(answer) = answered {
                        window.slice_sent(&answer, Instant::now());
                    }
                }
                SliceSource::Pending(_) => {
                    return Err(FillError::Origin("a slice lookup did not resolve".into()).into());
                }
            }
        }
    }

    async fn source_for(
        &self,
        request: ObjectRequest<'_>,
        slice: Slice,
        slice_size: u64,
        learned: &mut Prepared,
    ) -> SliceSource {
        let ObjectRequest {
            object,
            hop,
            path,
            meta,
            tunables,
        } = request;
        if learned.as_ref().is_some_and(|(k, _)| *k == (slice.offset, slice_size)) {
            if let Some((_, source)) = learned.take() {
                return source;
            }
        }
        let (from, to) = (slice.offset + slice.want.0, slice.offset + slice.want.1);
        if let Some(pieces) = self.cache.lookup_memory(object, meta, from, to).await {
            self.metrics.count_slice("hit", "memory");
            return SliceSource::Cached(pieces);
        }
        let lookup = SliceLookup {
            cache: self.cache.clone(),
            fills: self.fills.clone(),
            metrics: self.metrics.clone(),
            object,
            path: path.to_string(),
            meta: meta.clone(),
            slice,
            slice_size,
            settings: tunables.fill,
            route: self.route(object, slice.offset, hop),
        };
        if self.cache.has_disk() {
            SliceSource::Pending(tokio::spawn(lookup.run()))
        } else {
            lookup.run().await
        }
    }

    /// The whole body of `range` as arena pieces, when every slice is in L1
    /// and the connection can take `sendfile` (plain HTTP/1 over TCP; a TLS
    /// stream must be written through its encryption). `None` leaves
    /// `learned` as it was, for the streaming path.
    async fn arena_body(
        &self,
        session: &ServerSession,
        object: ObjectId,
        meta: &ObjectMeta,
        range: ByteRange,
        tunables: &RuntimeTunables,
        learned: &mut Prepared,
    ) -> Option<Vec<Bytes>> {
        let arena = self.cache.memory().arena()?;
        let plain_h1 = session.as_http1().is_some() && session.digest().is_some_and(|d| d.ssl_digest.is_none());
        if range.len() < ARENA_SEND_MIN || !plain_h1 {
            return None;
        }
        let slice_size = slice_size_for(meta, tunables);
        let mut pieces = Vec::new();
        let mut looked_up = 0;
        for slice in SlicePlan::new(range, meta.size, slice_size) {
            match learned {
                Some((key, SliceSource::Cached(prepared))) if *key == (slice.offset, slice_size) => {
                    pieces.extend(prepared.iter().cloned());
                }
                Some((key, _)) if *key == (slice.offset, slice_size) => return None,
                _ => {
                    let (from, to) = (slice.offset + slice.want.0, slice.offset + slice.want.1);
                    pieces.extend(self.cache.lookup_memory(object, meta, from, to).await?);
                    looked_up += 1;
                }
            }
        }
        if !pieces.iter().all(|p| arena.locate(p).is_some()) {
            return None;
        }
        for _ in 0..looked_up {
            self.metrics.count_slice("hit", "memory");
        }
        *learned = None;
        Some(pieces)
    }

    /// Sends a response whose body is all in L1's arena: Pingora writes the
    /// header, `sendfile` the body, and the connection goes back to Pingora
    /// for the next request.
    async fn send_arena_hit(
        &self,
        session: ServerSession,
        hit: Box<ArenaHit>,
        settings: pingora::apps::HttpPersistentSettings,
    ) -> Option<ReusedHttpStream> {
        let summary = request_check::for_log(&session.request_summary());
        let ServerSession::H1(mut h1) = session else {
            return None; // `arena_body` only chooses HTTP/1
        };
        let status = hit.resp.status.as_u16();
        if let Err(e) = h1.write_response_header(Box::new(hit.resp)).await {
            debug!(error = %e, "writing the response header failed");
            return None;
        }
        // Pingora counts the body bytes it writes, and these go around it:
        // the first `finish_body` marks the body complete (reporting the
        // bytes it did not see), the second flushes the header out of its
        // buffer, so nothing of Pingora's can follow the body.
        let _ = h1.finish_body().await;
        if let Err(e) = h1.finish_body().await {
            debug!(error = %e, "flushing the response header failed");
            return None;
        }
        self.metrics.client_ttfb.observe(hit.started.elapsed().as_secs_f64());
        self.count_request(&hit.method, status);
        if let Err(e) = self.send_pieces(h1.stream(), &hit.pieces).await {
            if e.kind() == std::io::ErrorKind::TimedOut {
                self.gate.count(Cut::SendTimeout);
                debug!(request = %summary, error = %e, "client stopped reading");
            } else {
                info!(request = %summary, error = %e, "response aborted");
            }
            return None;
        }
        reusable(h1.reuse().await, settings)
    }

    async fn send_pieces(&self, stream: &pingora::protocols::Stream, pieces: &[Bytes]) -> std::io::Result<()> {
        let Some(arena) = self.cache.memory().arena() else {
            return Err(std::io::Error::other("no memory arena"));
        };
        let writer = SocketWriter::for_stream(stream);
        // Extents filled in order usually sit back to back in the arena, so
        // one call can send several.
        let mut runs: Vec<(&std::fs::File, u64, usize)> = Vec::new();
        for piece in pieces {
            let (file, offset) = arena
                .locate(piece)
                .ok_or_else(|| std::io::Error::other("a piece is outside the memory arena"))?;
            match runs.last_mut() {
                Some((f, start, len)) if std::ptr::eq(*f, file) && *start + *len as u64 == offset => {
                    *len += piece.len();
                }
                _ => runs.push((file, offset, piece.len())),
            }
        }
        // No explicit turn-taking here, unlike `write_body`: each `sendfile`
        // counts against the runtime's cooperative budget (see the
        // sendfile module), so a sender on a socket that never fills still
        // yields regularly.
        for (file, offset, len) in runs {
            let mut sent = 0;
            while sent < len {
                let chunk = (len - sent).min(SENDFILE_CHUNK);
                let send = writer.send(file, offset + sent as u64, chunk);
                tokio::time::timeout(self.send_deadline(chunk), send)
                    .await
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
                self.count_sent(chunk as u64);
                self.metrics.client_sendfile_bytes.inc_by(chunk as u64);
                sent += chunk;
            }
        }
        if writer.waited() {
            self.metrics.client_sendfile_waits.inc();
        }
        Ok(())
    }

    /// Lets other responses write when there are more of them than workers
    /// (see [`Self::write_body`]).
    async fn take_turns(&self) {
        if self.active.load(std::sync::atomic::Ordering::Relaxed) > self.workers {
            tokio::task::yield_now().await;
        }
    }

    /// Makes sure the response's first slice is of `meta`'s version before
    /// the header goes out, so a changed object can still be served cleanly.
    async fn prepare_first_slice(
        &self,
        request: ObjectRequest<'_>,
        range: ByteRange,
        learned: &mut Prepared,
    ) -> Result<(), FillError> {
        let ObjectRequest { meta, tunables, .. } = request;
        let slice_size = slice_size_for(meta, tunables);
        let Some(slice) = SlicePlan::new(range, meta.size, slice_size).next() else {
            return Ok(());
        };
        let source = self.source_for(request, slice, slice_size, learned).await;
        let source = match source.ready().await? {
            SliceSource::Filling(mut reader) => match reader.head().await? {
                FillHead::Body(got) if got.same_version(meta) => SliceSource::Filling(reader),
                _ => return Err(FillError::Changed),
            },
            cached => cached,
        };
        *learned = Some(((slice.offset, slice_size), source));
        Ok(())
    }

    /// Sends the wanted part of a slice as its fill receives it; returns
    /// when the fill asked and was answered, for the fetch window.
    async fn stream_fill(
        &self,
        session: &mut ServerSession,
        meta: &ObjectMeta,
        slice: Slice,
        mut reader: FillReader,
    ) -> Result<Option<Answered>, ServeError> {
        match reader.head().await? {
            FillHead::Body(got) if got.same_version(meta) => {}
            _ => return Err(FillError::Changed.into()),
        }
        let answered = reader.answered();
        let (want_from, want_to) = slice.want;
        let mut pos = 0u64;
        while let Some(chunk) = reader.chunk().await? {
            let end = pos + chunk.len() as u64;
            let lo = want_from.max(pos);
            let hi = want_to.min(end);
            if lo < hi {
                self.write_body(session, chunk.slice((lo - pos) as usize..(hi - pos) as usize))
                    .await?;
            }
            pos = end;
            if pos >= want_to {
                // This client has its bytes; let the fill finish for the
                // cache. (An aborted client never gets here, so its fill is
                // cancelled when nobody else reads it.)
                tokio::spawn(async move { while let Ok(Some(_)) = reader.chunk().await {} });
                return Ok(answered);
            }
        }
        if pos < want_to {
            return Err(ServeError::Short {
                offset: slice.offset,
                got: pos,
                want: want_to,
            });
        }
        Ok(answered)
    }

    async fn write_header(
        &self,
        session: &mut ServerSession,
        resp: ResponseHeader,
        _is_head: bool,
    ) -> Result<(), ServeError> {
        session
            .write_response_header(Box::new(resp))
            .await
            .map_err(|e| ServeError::Client(e.to_string()))
    }

    /// Writes body bytes in pieces of at most [`WRITE_PIECE`]. When more
    /// responses are in progress than there are workers, it takes turns after
    /// each piece: a loopback socket rarely pushes back, so without the yield one
    /// large hit would hold its worker until the whole range is written while
    /// other connections wait (a p99 problem). Uncontended, it never yields.
    async fn write_body(&self, session: &mut ServerSession, mut data: Bytes) -> Result<(), ServeError> {
        while !data.is_empty() {
            let piece = data.split_to(data.len().min(WRITE_PIECE));
            let len = piece.len();
            session
                .write_response_body(piece, false)
                .await
                .map_err(|e| ServeError::Client(e.to_string()))?;
            self.count_sent(len as u64);
            self.take_turns().await;
        }
        Ok(())
    }

    async fn send_header_only(
        &self,
        session: &mut ServerSession,
        resp: ResponseHeader,
        started: Instant,
    ) -> Result<(), ServeError> {
        self.send_simple(session, resp, "", started).await
    }

    async fn send_simple(
        &self,
        session: &mut ServerSession,
        resp: ResponseHeader,
        body: &str,
        started: Instant,
    ) -> Result<(), ServeError> {
        let status = resp.status.as_u16();
        let method = session.req_header().method.clone();
        self.write_header(session, resp, false).await?;
        self.metrics.client_ttfb.observe(started.elapsed().as_secs_f64());
        self.count_request(&method, status);
        if method != http::Method::HEAD {
            self.write_body(session, Bytes::copy_from_slice(body.as_bytes()))
                .await?;
        }
        session
            .finish_body()
            .await
            .map_err(|e| ServeError::Client(e.to_string()))
    }

    /// Answers a request whose version could not be settled.
    async fn send_fill_error(
        &self,
        session: &mut ServerSession,
        e: FillError,
        started: Instant,
    ) -> Result<(), ServeError> {
        let (status, body) = match &e {
            FillError::Status(s) => (*s, format!("origin answered {s}\n")),
            FillError::Changed => (
                502,
                "the object changed at the origin while it was being fetched; retry\n".into(),
            ),
            FillError::Origin(m) => (502, format!("origin failure: {m}\n")),
            FillError::Cancelled => (503, "fetch cancelled\n".into()),
        };
        if status >= 500 {
            warn!(path = %request_check::for_log(&session.req_header().uri.to_string()), error = %e, "answering {status}");
        }
        let resp = simple_response(status, &body);
        self.send_simple(session, resp, &body, started).await
    }

    /// Answers a request refused before any cache work, and closes the
    /// connection after it (what follows a malformed request is suspect).
    async fn reject(
        &self,
        session: &mut ServerSession,
        rejection: Rejection,
        started: Instant,
    ) -> Result<(), ServeError> {
        debug!(target = %request_check::for_log(&session.req_header().uri.to_string()), %rejection, "request refused");
        self.count_rejected(rejection.reason());
        session.set_keepalive(None);
        let body = format!("{rejection}\n");
        let resp = simple_response(rejection.status(), &body);
        self.send_simple(session, resp, &body, started).await
    }

    fn count_rejected(&self, reason: &str) {
        self.metrics.rejected_requests.with_label_values(&[reason]).inc();
    }

    /// Time one body write may take: `sendTimeout`, or longer for a large
    /// write when `minSendRate` allows it (as Pingora computes it).
    fn send_deadline(&self, len: usize) -> std::time::Duration {
        let limits = self.gate.limits();
        match limits.min_send_rate {
            0 => limits.send_timeout,
            rate => limits
                .send_timeout
                .max(std::time::Duration::from_secs((len as u64 / rate).max(1))),
        }
    }
}

/// Largest single write to a client socket.
const WRITE_PIECE: usize = 256 << 10;

/// Largest single `sendfile` call (nginx's `sendfile_max_chunk` default),
/// so metrics move while a long body goes out.
const SENDFILE_CHUNK: usize = 2 << 20;

/// Bodies shorter than this are written, not sent with `sendfile`: the
/// copy is cheaper than the extra system calls.
const ARENA_SEND_MIN: u64 = 64 << 10;

/// Small objects (up to `minObjectSize`) are one slice.
fn slice_size_for(meta: &ObjectMeta, tunables: &RuntimeTunables) -> u64 {
    if meta.size <= tunables.min_object_size {
        meta.size.max(1)
    } else {
        tunables.slice_size
    }
}
