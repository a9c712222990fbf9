//! The storage seam between the slicing proxy and its cache tiers.
//!
//! Everything the proxy caches is an *extent*: a run of bytes of one version of
//! one object, starting at a byte offset. Extents are keyed by object, version
//! and offset rather than by slice number, so data cached under an old slice
//! size keeps serving after the tuner changes it.
//!
//! Tiers (L1 memory, L2 raw block device) implement [`ExtentStore`]; the
//! [`tiered`] module composes them.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

pub mod arena;
pub mod disk;
pub mod memory;
pub mod sharded;
mod tmpfs;

/// Stable 128-bit identity of a cached object (a hash of its cache key).
///
/// The hash is part of the on-disk format, so its algorithm must never change
/// without a format version bump.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub u128);

impl ObjectId {
    /// Hashes a cache key (the request path and query) into an object id.
    pub fn from_cache_key(key: &str) -> Self {
        Self(xxhash_rust::xxh3::xxh3_128(key.as_bytes()))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Names one cached run of bytes: `len` bytes of `object` at `version`,
/// starting at byte `offset`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ExtentKey {
    pub object: ObjectId,
    /// Hash of the object's validators (ETag, Last-Modified, size). A changed
    /// object gets a new version, so its old extents can never be mixed in.
    pub version: u64,
    pub offset: u64,
    pub len: u32,
}

/// A cache tier that stores extents and per-object metadata.
///
/// Object metadata is opaque to the store (`Bytes` produced by the proxy);
/// a persistent tier must keep it alongside the extents so that a restarted
/// agent can serve what it has on disk.
#[async_trait]
pub trait ExtentStore: Send + Sync + fmt::Debug {
    /// Returns the extent's bytes, or `None` on a miss. A tier must never
    /// return bytes it cannot vouch for (a failed checksum is a miss).
    async fn get(&self, key: &ExtentKey) -> Option<Bytes>;

    /// Stores an extent. May complete in the background; callers never wait
    /// for durability.
    async fn put(&self, key: ExtentKey, data: Bytes);

    /// Returns the metadata blob stored for `object`, if any.
    async fn get_meta(&self, object: ObjectId) -> Option<Bytes>;

    /// Stores the metadata blob for `object`, replacing any previous one.
    async fn put_meta(&self, object: ObjectId, meta: Bytes);

    /// Forgets `object`: its metadata and every extent of every version.
    async fn remove_object(&self, object: ObjectId);
}
