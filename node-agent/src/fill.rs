//! Slice fills: one origin subrequest per missing slice, shared by everyone
//! who wants that slice while it is in flight.
//!
//! A fill is a spawned task that fetches one aligned slice, publishes its
//! bytes to readers as they arrive, and caches the slice when it completes.
//! Readers that join late replay the chunks already received. When the last
//! reader goes away the fill stops, so a client abort cancels origin work
//! nobody else is waiting for. Failures retry with exponential backoff and
//! jitter; a slice that breaks midway resumes from the byte it reached, guarded
//! by `If-Match` so the bytes before and after the break are one version.
//!
//! In a fleet, a fill whose slice another member owns asks that member's
//! peer port first ([`Route::Peer`]). If the peer fails, the fill goes to
//! the origin at once (never to a second peer), resuming from the byte it
//! reached. What a peer sent is not kept (the owner keeps it); what the
//! origin sent in its place is kept in memory only, never on disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::Rng;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

use crate::cache::{Cache, Keep};
pub use crate::config::FillSettings;
use crate::fleet::{Ask, Fleet, Route, HOP_HEADER};
use crate::metrics::Metrics;
use crate::object::ObjectMeta;
use crate::origin::{content_length, parse_content_range, OriginClient, OriginRequest, OriginResponse};
use crate::range::ByteRange;
use crate::store::ObjectId;

/// Why a fill produced no (or not all) bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    /// The object changed at the origin: the bytes fetched so far belong to a
    /// version other than the one the response started with.
    #[error("the object changed at the origin")]
    Changed,
    /// The origin answered with a status that is the client's answer too.
    #[error("origin answered {0}")]
    Status(u16),
    /// The origin failed (after retries) or sent something invalid.
    #[error("origin failure: {0}")]
    Origin(String),
    /// Every reader left (client aborts), so the fetch was stopped.
    #[error("fill cancelled")]
    Cancelled,
}

/// What a fill learned from the origin's response header.
#[derive(Clone, Debug)]
pub enum FillHead {
    /// Bytes follow; the metadata describes the object they belong to.
    Body(Arc<ObjectMeta>),
    /// A revalidation answered 304: the cached version is still current.
    NotModified(Arc<ObjectMeta>),
}

#[derive(Clone, Debug, Default)]
struct FillState {
    head: Option<FillHead>,
    /// When the attempt that produced `head` asked, and when it answered.
    answered: Option<Answered>,
    received: u64,
    done: Option<Result<(), FillError>>,
}

/// When a fill asked for its slice and when the answer's header came: what
/// a response's fetch window learns the origin's round trip from.
#[derive(Clone, Copy, Debug)]
pub struct Answered {
    pub asked: Instant,
    pub at: Instant,
    /// The origin failed an earlier attempt (a 429, 5xx or broken
    /// connection) before this answer.
    pub retried: bool,
}

/// Identity of an in-flight fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FillKey {
    pub object: ObjectId,
    pub offset: u64,
    /// Nominal slice size: the fill covers `[offset, offset + size)`.
    pub size: u64,
    /// Revalidations may answer 304 without bytes, so they are never shared
    /// with plain slice fetches.
    pub revalidate: bool,
}

/// What to fetch.
#[derive(Clone, Debug)]
pub struct FillSpec {
    pub key: FillKey,
    /// Origin path and query.
    pub path: String,
    /// The version the requester expects; the fill guards with its validators.
    pub expected: Option<Arc<ObjectMeta>>,
    /// Ask the origin `If-None-Match`/`If-Modified-Since` on `expected`.
    pub revalidate: bool,
    /// The slice's owner, when another fleet member owns it.
    pub route: Route,
}

#[derive(Debug)]
struct Fill {
    chunks: Mutex<Vec<Bytes>>,
    state: watch::Sender<FillState>,
    /// Version of the object the fill is guarded by (`If-Match`), if any.
    guard: Option<u64>,
}

impl Fill {
    fn chunks(&self) -> MutexGuard<'_, Vec<Bytes>> {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What [`Fills::join`] did.
#[derive(Debug)]
pub enum Joined {
    /// Started a new fill; the caller is its first reader.
    Started(FillReader),
    /// Joined a fill already in flight.
    Shared(FillReader),
    /// Nothing in flight, but what the caller looked for in the cache has
    /// landed there since it looked: look again.
    Landed,
}

/// A reader of one fill.
#[derive(Debug)]
pub struct FillReader {
    fill: Arc<Fill>,
    rx: watch::Receiver<FillState>,
    next_chunk: usize,
}

impl FillReader {
    /// Waits for the response header.
    pub async fn head(&mut self) -> Result<FillHead, FillError> {
        loop {
            let state = self.rx.borrow_and_update().clone();
            if let Some(head) = state.head {
                return Ok(head);
            }
            if let Some(Err(e)) = state.done {
                return Err(e);
            }
            if state.done.is_some() {
                return Err(FillError::Origin("fill ended without a response".into()));
            }
            if self.rx.changed().await.is_err() {
                return Err(FillError::Cancelled);
            }
        }
    }

    /// When the fill asked and was answered, once its header has come.
    pub fn answered(&self) -> Option<Answered> {
        self.rx.borrow().answered
    }

    /// The next chunk of the slice body; `None` once it is complete.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, FillError> {
        loop {
            if let Some(chunk) = self.fill.chunks().get(self.next_chunk).cloned() {
                self.next_chunk += 1;
                return Ok(Some(chunk));
            }
            let done = self.rx.borrow_and_update().done.clone();
            match done {
                Some(Ok(())) => {
                    // Chunks are pushed before `done` is published.
                    if self.fill.chunks().len() > self.next_chunk {
                        continue;
                    }
                    return Ok(None);
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
            if self.rx.changed().await.is_err() {
                return Err(FillError::Cancelled);
            }
        }
    }
}

/// The registry of in-flight fills and what they share.
pub struct Fills {
    inflight: Mutex<HashMap<FillKey, Arc<Fill>>>,
    origin: Arc<OriginClient>,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    /// Bounds origin (and peer) subrequests across the whole agent.
    permits: Arc<Semaphore>,
    max_subrequests: usize,
    fleet: Option<Arc<Fleet>>,
}

impl std::fmt::Debug for Fills {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fills")
            .field("inflight", &self.inflight().len())
            .finish()
    }
}

impl Fills {
    pub fn new(
        origin: Arc<OriginClient>,
        cache: Arc<Cache>,
        metrics: Arc<Metrics>,
        max_subrequests: usize,
        fleet: Option<Arc<Fleet>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            inflight: Mutex::new(HashMap::new()),
            origin,
            cache,
            metrics,
            permits: Arc::new(Semaphore::new(max_subrequests.max(1))),
            max_subrequests: max_subrequests.max(1),
            fleet,
        })
    }

    /// Origin (and peer) subrequests the agent has in flight at most.
    pub fn max_subrequests(&self) -> usize {
        self.max_subrequests
    }

    fn inflight(&self) -> MutexGuard<'_, HashMap<FillKey, Arc<Fill>>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the fill for `spec.key`, starting one if none is in flight.
    ///
    /// A caller looks in the cache before it joins, and a fill caches its
    /// slice before it leaves the registry; so a caller finding no fill here
    /// checks again, under the registry lock, whether what it wanted landed
    /// in the meantime ([`Joined::Landed`]: look again) rather than fetch it
    /// a second time. A caller that has looked again already, and lost the
    /// race to eviction, passes `recheck: false`.
    pub fn join(self: &Arc<Self>, spec: FillSpec, settings: FillSettings, recheck: bool) -> Joined {
        let mut inflight = self.inflight();
        let guard = spec.expected.as_ref().map(|m| m.version());
        // A fill guarded by another version than the one this reader serves
        // ends in a 412: start a fresh one instead (it replaces the entry;
        // the old fill goes on for its own readers). A reader that knows no
        // version yet takes whichever version the fill gets.
        if let Some(fill) = inflight
            .get(&spec.key)
            .filter(|f| guard.is_none() || f.guard.is_none() || f.guard == guard)
        {
            let rx = fill.state.subscribe();
            return Joined::Shared(FillReader {
                fill: fill.clone(),
                rx,
                next_chunk: 0,
            });
        }
        if recheck && self.landed(&spec) {
            return Joined::Landed;
        }
        let (tx, rx) = watch::channel(FillState::default());
        let fill = Arc::new(Fill {
            chunks: Mutex::new(Vec::new()),
            state: tx,
            guard,
        });
        inflight.insert(spec.key, fill.clone());
        drop(inflight);
        let reader = FillReader {
            fill: fill.clone(),
            rx,
            next_chunk: 0,
        };
        let fills = self.clone();
        tokio::spawn(async move {
            let key = spec.key;
            let started = Instant::now();
            let result = fills.run(&fill, spec, settings).await;
            fills
                .metrics
                .slice_fetch_duration
                .observe(started.elapsed().as_secs_f64());
            if let Err(e) = &result {
                debug!(?key, error = %e, "slice fill failed");
            }
            // Cache first, then leave the registry, so a newcomer either joins
            // this fill or finds the slice cached.
            {
                let mut inflight = fills.inflight();
                if inflight.get(&key).is_some_and(|f| Arc::ptr_eq(f, &fill)) {
                    inflight.remove(&key);
                }
            }
            fill.state.send_modify(|s| s.done = Some(result));
        });
        Joined::Started(reader)
    }

    /// Whether what a joiner looked for in the cache is there now: the slice
    /// (in L1) for a reader that knows the version, the object's metadata
    /// for one that is learning it.
    fn landed(&self, spec: &FillSpec) -> bool {
        if spec.revalidate {
            return false;
        }
        let FillKey {
            object, offset, size, ..
        } = spec.key;
        match &spec.expected {
            Some(meta) => {
                let end = (offset + size).min(meta.size);
                offset < end && self.cache.in_memory(object, meta, offset, end)
            }
            None => self.cache.knows(object),
        }
    }

    async fn run(&self, fill: &Fill, spec: FillSpec, settings: FillSettings) -> Result<(), FillError> {
        let mut attempt = 0u32;
        let mut fetched = FillProgress::default();
        loop {
            match self.attempt(fill, &spec, settings, &mut fetched).await {
                Ok(()) => return Ok(()),
                Err(AttemptError::Final(e)) => return Err(e),
                // A peer that broke off mid-body: the origin, at once.
                Err(AttemptError::Retry(e)) if fetched.asking_peer() => {
                    debug!(path = %spec.path, offset = spec.key.offset, error = %e, "peer broke off; going to the origin");
                    self.peer_failed(&spec, &mut fetched, "error");
                }
                Err(AttemptError::PeerFailed) => {}
                Err(AttemptError::Retry(e)) if attempt < settings.retries => {
                    attempt += 1;
                    fetched.retried = true;
                    self.metrics.origin_retries.inc();
                    let backoff = backoff(attempt);
                    warn!(path = %spec.path, offset = spec.key.offset, attempt, error = %e, ?backoff, "retrying slice fetch");
                    tokio::time::sleep(backoff).await;
                }
                Err(AttemptError::Retry(e)) => return Err(FillError::Origin(e)),
            }
        }
    }

    async fn attempt(
        &self,
        fill: &Fill,
        spec: &FillSpec,
        settings: FillSettings,
        progress: &mut FillProgress,
    ) -> Result<(), AttemptError> {
        if fill.state.receiver_count() == 0 {
            return Err(AttemptError::Final(FillError::Cancelled));
        }
        let queued = Instant::now();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AttemptError::Final(FillError::Cancelled))?;
        self.metrics.queue_wait.observe(queued.elapsed().as_secs_f64());
        self.metrics.subrequests_in_flight.inc();
        let _in_flight = scopeguard::guard((), |()| self.metrics.subrequests_in_flight.dec());

        let guard = progress.meta.clone().or_else(|| spec.expected.clone());
        let start = spec.key.offset + progress.received;
        let mut req = OriginRequest {
            path: spec.path.clone(),
            range: Some(ByteRange {
                first: start,
                last: spec.key.offset + spec.key.size - 1,
            }),
            ..OriginRequest::default()
        };
        if let Some(meta) = &guard {
            if spec.revalidate && progress.meta.is_none() {
                req.if_none_match = meta.etag.clone();
                req.if_modified_since = meta.last_modified.clone();
            } else if let Some(etag) = meta.strong_etag() {
                req.if_match = Some(etag.to_string());
            } else if let Some(lm) = &meta.last_modified {
                req.if_unmodified_since = Some(lm.clone());
            }
        }
        let sent = Instant::now();
        progress.asked = Some(sent);
        let peer = match (&spec.route, progress.peer) {
            (Route::Peer(peer, ask), PeerUse::NotYet | PeerUse::Asking) => {
                if let Some(fleet) = &self.fleet {
                    req.extra_headers = vec![
                        ("authorization", fleet.authorization()),
                        (HOP_HEADER, ask.hop().to_string()),
                    ];
                }
                Some(peer.clone())
            }
            _ => None,
        };
        progress.peer = match (&peer, progress.peer) {
            (Some(_), _) => PeerUse::Asking,
            (None, PeerUse::NotYet) => PeerUse::NotYet,
            (None, _) => PeerUse::Failed,
        };
        let client = peer.as_ref().map_or(&self.origin, |p| &p.client);
        let resp = match client.send(&req).await {
            Ok(resp) => resp,
            Err(e) if peer.is_some() => {
                let result = if e.kind() == "timeout" { "timeout" } else { "error" };
                debug!(path = %spec.path, offset = spec.key.offset, error = %e, "peer unreachable; going to the origin");
                self.peer_failed(spec, progress, result);
                return Err(AttemptError::PeerFailed);
            }
            Err(e) => {
                self.metrics.origin_requests.with_label_values(&[e.kind()]).inc();
                return Err(AttemptError::Retry(e.to_string()));
            }
        };
        let status = resp.status();
        if let (Some(peer), Some(fleet)) = (&peer, &self.fleet) {
            fleet.metrics.peer_ttfb.observe(sent.elapsed().as_secs_f64());
            // The peer could not serve it (overloaded, refusing our token,
            // or its own origin fetch failed): the origin, at once.
            if status == 403 || status == 429 || status >= 500 {
                resp.release().await;
                debug!(path = %spec.path, peer = %peer.name, status, "peer could not serve; going to the origin");
                self.peer_failed(spec, progress, "error");
                return Err(AttemptError::PeerFailed);
            }
            fleet.peer_answered(peer);
            fleet.peer_reported(peer, spec.key.object, spec.key.offset, &resp.header.headers);
        } else {
            self.metrics.origin_ttfb.observe(sent.elapsed().as_secs_f64());
            self.metrics
                .origin_requests
                .with_label_values(&[status_class(status)])
                .inc();
        }
        match status {
            206 => self.read_partial(fill, spec, settings, progress, resp, guard).await,
            200 => self.read_whole(fill, spec, settings, progress, resp, guard).await,
            304 if spec.revalidate => {
                let Some(old) = guard else {
                    return Err(AttemptError::Final(FillError::Origin(
                        "304 without a cached version".into(),
                    )));
                };
                let mut meta = (*old).clone();
                meta.refresh(&resp.header, settings.freshness);
                let meta = self
                    .cache
                    .refresh(spec.key.object, meta.clone())
                    .unwrap_or_else(|| Arc::new(meta));
                resp.release().await;
                fill.state.send_modify(|s| s.head = Some(FillHead::NotModified(meta)));
                Ok(())
            }
            412 => {
                resp.release().await;
                // The If-Match guard failed: the object changed at the origin.
                self.metrics.object_changes.inc();
                // Drop the cached object only if it is still the version this
                // fetch was guarded by, not a newer one learned meanwhile.
                let current = self.cache.meta(spec.key.object).await;
                if current.is_some_and(|m| guard.as_ref().is_none_or(|g| g.same_version(&m))) {
                    self.cache.remove(spec.key.object).await;
                    self.metrics.object_invalidations.inc();
                }
                Err(AttemptError::Final(FillError::Changed))
            }
            416 => self.unsatisfiable(fill, spec, settings, progress, resp, guard).await,
            429 | 500 | 502 | 503 | 504 => {
                resp.release().await;
                Err(AttemptError::Retry(format!("origin answered {status}")))
            }
            _ => {
                resp.release().await;
                Err(AttemptError::Final(FillError::Status(status)))
            }
        }
    }

    /// A 206: check it is the range we asked for, of the version we expect.
    async fn read_partial(
        &self,
        fill: &Fill,
        spec: &FillSpec,
        settings: FillSettings,
        progress: &mut FillProgress,
        resp: OriginResponse,
        guard: Option<Arc<ObjectMeta>>,
    ) -> Result<(), AttemptError> {
        let cr = content_range(&resp).and_then(parse_content_range);
        let Some((range, Some(total))) = cr else {
            resp.release().await;
            return Err(AttemptError::Retry("206 without a valid Content-Range".into()));
        };
        let start = spec.key.offset + progress.received;
        let end = (spec.key.offset + spec.key.size).min(total);
        if range.first != start || range.last + 1 != end {
            resp.release().await;
            return Err(AttemptError::Retry(format!(
                "asked for bytes {start}-{} and got {range}/{total}",
                end.saturating_sub(1)
            )));
        }
        let meta = ObjectMeta::from_response(&spec.path, &resp.header, total, true, settings.freshness);
        self.accept_head(fill, spec, progress, meta, guard).await?;
        self.stream_body(fill, progress, resp, end - start).await?;
        self.complete(fill, spec, progress).await;
        Ok(())
    }

    /// A 200 to a range request: the origin ignores ranges. Take the slice we
    /// wanted out of the whole body and cache the rest as aligned extents too.
    async fn read_whole(
        &self,
        fill: &Fill,
        spec: &FillSpec,
        settings: FillSettings,
        progress: &mut FillProgress,
        mut resp: OriginResponse,
        guard: Option<Arc<ObjectMeta>>,
    ) -> Result<(), AttemptError> {
        let Some(total) = content_length(&resp.header) else {
            resp.release().await;
            return Err(AttemptError::Final(FillError::Origin(
                "origin sent a 200 without Content-Length; slicecache needs the object size".into(),
            )));
        };
        let meta = ObjectMeta::from_response(&spec.path, &resp.header, total, false, settings.freshness);
        let meta = self.accept_head(fill, spec, progress, meta, guard).await?;
        let want_from = spec.key.offset + progress.received;
        let want_to = (spec.key.offset + spec.key.size).min(total);
        let mut pos = 0u64;
        let mut extent = BytesMut::new();
        let mut extent_start = 0u64;
        let size = spec.key.size;
        while let Some(chunk) = resp.chunk().await.map_err(|e| AttemptError::Retry(e.to_string()))? {
            self.count_received(progress, chunk.len());
            let chunk_end = pos + chunk.len() as u64;
            if chunk_end > total {
                return Err(AttemptError::Final(FillError::Origin(
                    "origin sent more bytes than Content-Length".into(),
                )));
            }
            // The wanted part goes to readers as it arrives.
            let lo = want_from.max(pos);
            let hi = want_to.min(chunk_end);
            if lo < hi {
                let piece = chunk.slice((lo - pos) as usize..(hi - pos) as usize);
                progress.received += piece.len() as u64;
                fill.chunks().push(piece);
                fill.state.send_modify(|s| s.received = progress.received);
            }
            // Everything is cut into aligned extents for the cache.
            let mut rest = chunk;
            while !rest.is_empty() {
                let room = (extent_start + size - (extent_start + extent.len() as u64)) as usize;
                let take = room.min(rest.len());
                extent.extend_from_slice(&rest.split_to(take));
                if extent.len() as u64 == size || extent_start + extent.len() as u64 == total {
                    let data = std::mem::take(&mut extent).freeze();
                    if extent_start != spec.key.offset {
                        self.keep(progress, spec, &meta, (extent_start, size), data);
                    }
                    extent_start += size;
                }
            }
            pos = chunk_end;
            if fill.state.receiver_count() == 0 {
                resp.release().await;
                return Err(AttemptError::Final(FillError::Cancelled));
            }
        }
        resp.release().await;
        if pos != total {
            return Err(AttemptError::Retry(format!(
                "origin body ended at {pos} of {total} bytes"
            )));
        }
        self.complete(fill, spec, progress).await;
        Ok(())
    }

    /// A 416 tells us the object's size (`bytes */len`), e.g. an empty object.
    async fn unsatisfiable(
        &self,
        fill: &Fill,
        spec: &FillSpec,
        settings: FillSettings,
        progress: &mut FillProgress,
        resp: OriginResponse,
        guard: Option<Arc<ObjectMeta>>,
    ) -> Result<(), AttemptError> {
        let total = content_range(&resp)
            .and_then(|v| v.trim().strip_prefix("bytes */"))
            .and_then(|t| t.trim().parse::<u64>().ok());
        resp.release().await;
        match total {
            Some(total) if total <= spec.key.offset => {
                let meta = ObjectMeta::from_response(&spec.path, &resp_header_stub(), total, true, settings.freshness);
                self.accept_head(fill, spec, progress, meta, guard).await?;
                self.complete(fill, spec, progress).await;
                Ok(())
            }
            _ => Err(AttemptError::Final(FillError::Status(416))),
        }
    }

    /// Publishes the response metadata, or fails if it is not the version
    /// this fill (or its requester) already committed to.
    async fn accept_head(
        &self,
        fill: &Fill,
        spec: &FillSpec,
        progress: &mut FillProgress,
        meta: ObjectMeta,
        guard: Option<Arc<ObjectMeta>>,
    ) -> Result<Arc<ObjectMeta>, AttemptError> {
        if let Some(expected) = &guard {
            if !expected.same_version(&meta) && (progress.meta.is_some() || !spec.revalidate) {
                // Bytes of another version must never be stitched in. Learn
                // the new version so the next request starts clean.
                self.metrics.object_changes.inc();
                self.cache.set_meta(spec.key.object, meta).await;
                return Err(AttemptError::Final(FillError::Changed));
            }
        }
        if let Some(meta) = &progress.meta {
            return Ok(meta.clone());
        }
        let meta = match guard {
            // The version the requester already knows: nothing new to record.
            Some(expected) if expected.same_version(&meta) && !spec.revalidate => expected,
            _ => self.cache.set_meta(spec.key.object, meta).await,
        };
        progress.meta = Some(meta.clone());
        let head = FillHead::Body(meta.clone());
        let at = Instant::now();
        let answered = Answered {
            asked: progress.asked.unwrap_or(at),
            at,
            retried: progress.retried,
        };
        fill.state.send_modify(|s| {
            s.head = Some(head);
            s.answered = Some(answered);
        });
        Ok(meta)
    }

    async fn stream_body(
        &self,
        fill: &Fill,
        progress: &mut FillProgress,
        mut resp: OriginResponse,
        expected: u64,
    ) -> Result<(), AttemptError> {
        let mut got = 0u64;
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => return Err(AttemptError::Retry(e.to_string())),
            };
            self.count_received(progress, chunk.len());
            got += chunk.len() as u64;
            if got > expected {
                return Err(AttemptError::Final(FillError::Origin(format!(
                    "origin sent more than the {expected} bytes its Content-Range announced"
                ))));
            }
            progress.received += chunk.len() as u64;
            fill.chunks().push(chunk);
            fill.state.send_modify(|s| s.received = progress.received);
            if fill.state.receiver_count() == 0 {
                return Err(AttemptError::Final(FillError::Cancelled));
            }
            // Let the responses on this worker send what just arrived. A
            // loopback origin has a whole slice ready at once, and without
            // this a fill read all of it (16 chunks) in one go while the
            // response waiting to write its first slice's first chunk, and
            // so to get its header out, sat behind the fills of the slices
            // ahead of it (seen with strace; it cost a cold miss most of
            // its time to first byte).
            tokio::task::yield_now().await;
        }
        resp.release().await;
        if got != expected {
            return Err(AttemptError::Retry(format!(
                "origin body ended after {got} of {expected} bytes"
            )));
        }
        Ok(())
    }

    /// Caches the completed slice. A slice that came in several chunks is
    /// written into the memory arena on a blocking thread (a single chunk
    /// is still copied there by the memory tier's insert, on this task): a
    /// new arena block may first need its pages allocated and cleared
    /// (2 MiB at a time with huge pages), which took milliseconds on a host
    /// short of free memory, and a runtime worker stalled that long stops
    /// every response it carries. Readers are not waiting for this: they
    /// have had every chunk already.
    async fn complete(&self, fill: &Fill, spec: &FillSpec, progress: &FillProgress) {
        let Some(meta) = &progress.meta else { return };
        let parts = fill.chunks().clone();
        let data = match parts.as_slice() {
            [] | [_] => self.cache.join_parts(&parts),
            _ => {
                let cache = self.cache.clone();
                match tokio::task::spawn_blocking(move || cache.join_parts(&parts)).await {
                    Ok(data) => data,
                    Err(e) => {
                        warn!(error = %e, "storing a filled slice failed; it is not cached");
                        return;
                    }
                }
            }
        };
        self.keep(progress, spec, meta, (spec.key.offset, spec.key.size), data);
    }

    /// Caches a filled extent of `spec`'s object as its source allows:
    /// the owner's copy is the fleet's, so bytes from a peer that owns the
    /// slice go only to the hot set (whose gate keeps the ones asked for
    /// again), and bytes the origin sent in a failed owner's place stay in
    /// memory only. A slice this agent owns (handed over by its previous
    /// owner, or not) goes to every tier.
    fn keep(&self, progress: &FillProgress, spec: &FillSpec, meta: &ObjectMeta, extent: (u64, u64), data: Bytes) {
        let keep = match (&spec.route, progress.peer) {
            (Route::Peer(_, Ask::HandOver), _) => Keep::AllTiers,
            (Route::Peer(_, Ask::ForHolder), _) => Keep::MemoryOnly,
            (Route::Peer(..), PeerUse::Asking) => Keep::Hot,
            (Route::Peer(..), PeerUse::Failed) | (Route::OriginForPeer, _) => Keep::MemoryOnly,
            _ => Keep::AllTiers,
        };
        let (offset, size) = extent;
        self.cache.insert_to(keep, spec.key.object, meta, offset, size, data);
    }

    /// Counts body bytes by where they came from.
    fn count_received(&self, progress: &FillProgress, len: usize) {
        match (&self.fleet, progress.peer) {
            (Some(fleet), PeerUse::Asking) => fleet.metrics.peer_bytes.with_label_values(&["in"]).inc_by(len as u64),
            _ => self.metrics.origin_bytes.inc_by(len as u64),
        }
    }

    /// The slice's owner failed this fill: count it, feed its breaker, and
    /// send the rest of the fill to the origin.
    fn peer_failed(&self, spec: &FillSpec, progress: &mut FillProgress, result: &str) {
        if let (Route::Peer(peer, _), Some(fleet)) = (&spec.route, &self.fleet) {
            fleet.peer_failed(peer, result);
        }
        progress.peer = PeerUse::Failed;
    }
}

#[derive(Default)]
struct FillProgress {
    received: u64,
    /// When the latest attempt sent its request.
    asked: Option<Instant>,
    /// Whether an attempt failed and was retried.
    retried: bool,
    meta: Option<Arc<ObjectMeta>>,
    peer: PeerUse,
}

impl FillProgress {
    fn asking_peer(&self) -> bool {
        self.peer == PeerUse::Asking
    }
}

/// Whether this fill's bytes come from the slice's owner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum PeerUse {
    /// No peer asked: the origin (this agent owns the slice, or runs alone).
    #[default]
    NotYet,
    /// The owner's peer port is sending the slice.
    Asking,
    /// The owner failed; the origin sends the rest.
    Failed,
}

enum AttemptError {
    Retry(String),
    Final(FillError),
    /// The owner failed before sending a byte: the origin, at once.
    PeerFailed,
}

fn content_range(resp: &OriginResponse) -> Option<&str> {
    resp.header.headers.get(http::header::CONTENT_RANGE)?.to_str().ok()
}

fn backoff(attempt: u32) -> Duration {
    let base = 50u64 << attempt.min(6);
    let jitter = rand::rng().random_range(0..=base / 2);
    Duration::from_millis(base + jitter)
}

fn status_class(status: u16) -> &'static str {
    match status {
        200 => "200",
        206 => "206",
        304 => "304",
        412 => "412",
        416 => "416",
        429 => "429",
        503 => "503",
        s if s >= 500 => "5xx",
        s if s >= 400 => "4xx",
        _ => "other",
    }
}

fn resp_header_stub() -> pingora::http::ResponseHeader {
    crate::response::response_header(416)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::object::FreshnessPolicy;
    use crate::origin::OriginTarget;
    use slicecache_testkit::origin::{pattern, OriginObject, TestOrigin};
    use std::sync::atomic::Ordering;

    const S: u64 = 64 << 10;

    async fn fills_for(origin: &TestOrigin) -> Arc<Fills> {
        let metrics = Arc::new(Metrics::new().unwrap());
        let target = OriginTarget::parse(&origin.url(), None).unwrap();
        let timeouts = crate::origin::OriginTimeouts {
            connect: Duration::from_secs(2),
            first_byte: Duration::from_secs(5),
            idle: Duration::from_secs(5),
        };
        let client = OriginClient::new(target, timeouts, 8).unwrap();
        let cache = Arc::new(Cache::new(64 << 20, None, metrics.clone()));
        Fills::new(client, cache, metrics, 8, None)
    }

    fn settings() -> FillSettings {
        FillSettings {
            retries: 0,
            freshness: FreshnessPolicy {
                default_ttl: Duration::from_secs(60),
                honor_origin: true,
            },
        }
    }

    /// Joins with the second look, expecting a reader; true if it was shared.
    fn join(fills: &Arc<Fills>, spec: FillSpec) -> (FillReader, bool) {
        match fills.join(spec, settings(), true) {
            Joined::Started(reader) => (reader, false),
            Joined::Shared(reader) => (reader, true),
            Joined::Landed => panic!("nothing should have landed"),
        }
    }

    fn spec(offset: u64, expected: Option<Arc<ObjectMeta>>) -> FillSpec {
        FillSpec {
            key: FillKey {
                object: ObjectId::from_cache_key("/o"),
                offset,
                size: S,
                revalidate: false,
            },
            path: "/o".into(),
            expected,
            revalidate: false,
            route: Route::Origin,
        }
    }

    async fn body(mut reader: FillReader) -> Result<Vec<u8>, FillError> {
        reader.head().await?;
        let mut out = Vec::new();
        while let Some(chunk) = reader.chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// An origin holding `/o` (4 slices of pattern `seed`, ETag `v1`), the
    /// fills in front of it, and the version a first fill of slice 0 learned.
    async fn learned(seed: u64) -> (TestOrigin, Arc<Fills>, Bytes, Arc<ObjectMeta>) {
        let origin = TestOrigin::start().await.unwrap();
        let data = pattern(4 * S as usize, seed);
        origin.state.put("/o", OriginObject::new(data.clone(), "v1"));
        let fills = fills_for(&origin).await;
        let (mut first, _) = join(&fills, spec(0, None));
        let FillHead::Body(meta) = first.head().await.unwrap() else {
            panic!("expected a body")
        };
        (origin, fills, data, meta)
    }

    /// A request that has not learned the object's version yet joins a
    /// slice fill another request started guarded by the version it knows:
    /// the slice is fetched once.
    #[tokio::test]
    async fn a_reader_without_a_version_joins_a_guarded_fill() {
        let (origin, fills, data, meta) = learned(3).await;
        origin.state.latency_ms.store(200, Ordering::Relaxed);
        let (guarded, joined) = join(&fills, spec(S, Some(meta)));
        assert!(!joined);
        let (unguarded, joined) = join(&fills, spec(S, None));
        assert!(joined, "the reader without a version joins the guarded fill");
        let want = &data[S as usize..2 * S as usize];
        assert_eq!(body(guarded).await.unwrap(), want);
        assert_eq!(body(unguarded).await.unwrap(), want);
        let fetches = origin
            .state
            .seen()
            .iter()
            .filter(|r| r.range.as_deref() == Some("bytes=65536-131071"))
            .count();
        assert_eq!(fetches, 1);
    }

    /// The joined fill was guarded by a version the origin has replaced: the
    /// reader without a version learns that the object changed (the server
    /// then asks again) and never gets bytes of the new version under the
    /// old one's fill.
    #[tokio::test]
    async fn a_reader_without_a_version_sees_a_guarded_fill_fail_on_change() {
        let (origin, fills, _, meta) = learned(1).await;
        origin
            .state
            .put("/o", OriginObject::new(pattern(4 * S as usize, 2), "v2"));
        origin.state.latency_ms.store(200, Ordering::Relaxed);
        let (guarded, _) = join(&fills, spec(S, Some(meta)));
        let (unguarded, joined) = join(&fills, spec(S, None));
        assert!(joined);
        assert_eq!(body(guarded).await, Err(FillError::Changed));
        assert_eq!(body(unguarded).await, Err(FillError::Changed));
    }

    /// A request that found no slice in the cache, and then no fill either
    /// because the fill cached its slice and left meanwhile, is told to look
    /// again rather than fetch the slice a second time; likewise a request
    /// learning the version when another one has learned it.
    #[tokio::test]
    async fn a_joiner_that_lost_the_race_to_a_finished_fill_looks_again() {
        let (_origin, fills, data, meta) = learned(5).await;
        let (second, _) = join(&fills, spec(S, Some(meta.clone())));
        assert_eq!(body(second).await.unwrap(), &data[S as usize..2 * S as usize]);
        // The fill left the registry before it published its end.
        assert!(fills.inflight().is_empty());

        assert!(matches!(
            fills.join(spec(S, Some(meta.clone())), settings(), true),
            Joined::Landed
        ));
        assert!(matches!(fills.join(spec(0, None), settings(), true), Joined::Landed));
        // A slice that is not cached is fetched.
        assert!(matches!(
            fills.join(spec(2 * S, Some(meta.clone())), settings(), true),
            Joined::Started(_)
        ));
        // Without the second look the joiner fetches (it has looked already).
        assert!(matches!(
            fills.join(spec(S, Some(meta)), settings(), false),
            Joined::Started(_)
        ));
    }
}
