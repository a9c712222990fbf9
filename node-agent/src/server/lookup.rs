//! Where a slice's bytes come from: the cache (L1, then L2), or a fill
//! that this request joins or starts.

use std::sync::Arc;

use bytes::Bytes;

use crate::cache::{Cache, Tier};
use crate::fill::{FillError, FillKey, FillReader, FillSettings, FillSpec, Fills, Joined};
use crate::fleet::Route;
use crate::metrics::Metrics;
use crate::object::ObjectMeta;
use crate::slicer::Slice;
use crate::store::ObjectId;

/// A slice's bytes: ready from the cache, or arriving from a fill.
pub(super) enum SliceSource {
    Cached(Vec<Bytes>),
    Filling(FillReader),
    /// A disk lookup (falling back to a fill) running on its own task, so the
    /// slices ahead are read from the device while this one is written.
    Pending(tokio::task::JoinHandle<SliceSource>),
}

impl SliceSource {
    /// Waits for a pending lookup; other sources are returned as they are.
    pub(super) async fn ready(self) -> Result<SliceSource, FillError> {
        match self {
            SliceSource::Pending(task) => task
                .await
                .map_err(|e| FillError::Origin(format!("slice lookup task failed: {e}"))),
            ready => Ok(ready),
        }
    }
}

/// A slice that is not in L1: look in L2, else join (or start) its fill.
pub(super) struct SliceLookup {
    pub(super) cache: Arc<Cache>,
    pub(super) fills: Arc<Fills>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) object: ObjectId,
    pub(super) path: String,
    pub(super) meta: Arc<ObjectMeta>,
    pub(super) slice: Slice,
    pub(super) slice_size: u64,
    pub(super) settings: FillSettings,
    pub(super) route: Route,
}

impl SliceLookup {
    pub(super) async fn run(self) -> SliceSource {
        let (from, to) = (
            self.slice.offset + self.slice.want.0,
            self.slice.offset + self.slice.want.1,
        );
        for attempt in 1..=MAX_LOOKS {
            if let Some((pieces, tier)) = self.cache.lookup(self.object, &self.meta, from, to).await {
                self.metrics
                    .count_slice("hit", if tier == Tier::Memory { "memory" } else { "disk" });
                return SliceSource::Cached(pieces);
            }
            let spec = FillSpec {
                key: FillKey {
                    object: self.object,
                    offset: self.slice.offset,
                    size: self.slice_size,
                    revalidate: false,
                },
                path: self.path.clone(),
                expected: Some(self.meta.clone()),
                revalidate: false,
                route: self.route.clone(),
            };
            if let Some(reader) = join_fill(&self.fills, &self.metrics, spec, self.settings, attempt < MAX_LOOKS) {
                return SliceSource::Filling(reader);
            }
        }
        unreachable!("the last look joins a fill unconditionally")
    }
}

/// How many times a request looks in the cache for a slice (or the object's
/// metadata) that lands there while it looks, before it joins a fill anyway.
pub(super) const MAX_LOOKS: u32 = 3;

/// Joins (or starts) a fill and counts the slice; `None` when what the caller
/// looked for has landed in the cache since it looked.
pub(super) fn join_fill(
    fills: &Arc<Fills>,
    metrics: &Metrics,
    spec: FillSpec,
    settings: FillSettings,
    recheck: bool,
) -> Option<FillReader> {
    let (reader, result) = match fills.join(spec, settings, recheck) {
        Joined::Started(reader) => (reader, "miss"),
        Joined::Shared(reader) => (reader, "coalesced"),
        Joined::Landed => return None,
    };
    metrics.count_slice(result, "origin");
    Some(reader)
}
