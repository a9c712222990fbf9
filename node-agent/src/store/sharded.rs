//! Several L2 devices behind one [`ExtentStore`].
//!
//! An object lives wholly on one device, chosen by its id, so its metadata
//! and extents are found together and a purge touches one device.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::disk::DiskStore;
use super::{ExtentKey, ExtentStore, ObjectId};

/// The agent's disk tier: one [`DiskStore`] per device.
#[derive(Debug)]
pub struct ShardedStore {
    shards: Vec<Arc<DiskStore>>,
}

impl ShardedStore {
    /// `None` when there are no devices.
    pub fn new(shards: Vec<Arc<DiskStore>>) -> Option<Self> {
        (!shards.is_empty()).then_some(Self { shards })
    }

    fn shard(&self, object: ObjectId) -> &DiskStore {
        // The low bits of a 128-bit hash are uniform; `len` is at least 1.
        let i = (object.0 % self.shards.len() as u128) as usize;
        &self.shards[i]
    }

    /// Flushes every device and writes its index checkpoint.
    pub async fn close(&self) {
        for shard in &self.shards {
            if let Err(e) = shard.close().await {
                tracing::error!(error = %e, "closing cache device failed; the next start will scan it");
            }
        }
    }
}

#[async_trait]
impl ExtentStore for ShardedStore {
    async fn get(&self, key: &ExtentKey) -> Option<Bytes> {
        self.shard(key.object).get(key).await
    }

    async fn put(&self, key: ExtentKey, data: Bytes) {
        self.shard(key.object).put(key, data).await;
    }

    async fn get_meta(&self, object: ObjectId) -> Option<Bytes> {
        self.shard(object).get_meta(object).await
    }

    async fn put_meta(&self, object: ObjectId, meta: Bytes) {
        self.shard(object).put_meta(object, meta).await;
    }

    async fn remove_object(&self, object: ObjectId) {
        self.shard(object).remove_object(object).await;
    }
}
