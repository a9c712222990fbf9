//! Where the operator mounts things in the agent container, and so where the
//! rendered agent config points: the contract between the two.

/// Where the operator mounts the purge token Secret key in the agent
/// container; [`crate::ValidatedSliceCache::agent_config`] points the agent at it.
pub const PURGE_TOKEN_FILE: &str = "/var/run/secrets/slicecache/purge-token";
/// Where the operator mounts the emptyDir of `cache.disk.emptyDirFile` in
/// the agent container.
pub const EMPTY_DIR_FILE_DIR: &str = "/var/cache/slicecache";
/// The file of `cache.disk.emptyDirFile` as the agent sees it.
pub const EMPTY_DIR_FILE_PATH: &str = "/var/cache/slicecache/cache.img";
/// Where the operator attaches the raw block volume of
/// `cache.disk.volumeClaimTemplate` in the agent container.
pub const BLOCK_VOLUME_PATH: &str = "/dev/slicecache-volume";
/// Where the operator mounts the fleet's peer token Secret in the agent
/// container.
pub const PEER_TOKEN_FILE: &str = "/var/run/secrets/slicecache-peer/peer-token";
