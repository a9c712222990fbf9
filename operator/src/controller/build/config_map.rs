//! The ConfigMap that holds the agent config file. The agents hot-reload
//! its tunables, so a change of slice size or concurrency reaches only this
//! object and never the pod template.
//!
//! Contract: pure, like the whole build step: the same config and owner
//! give the same ConfigMap and hash.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use slicecache_api::agent_config::AgentConfig;

use super::{
    meta::{annotate, hash_hex, metadata, Owner, CONFIG_GENERATION, CONFIG_HASH},
    BuildError, ObjectNames,
};

/// Key of the agent config file in the ConfigMap.
pub const CONFIG_FILE_KEY: &str = "agent.yaml";
/// Directory the ConfigMap is mounted at. The whole directory is mounted
/// (no `subPath`) so that the kubelet updates the file in place and the agent
/// hot-reloads it.
pub const CONFIG_DIR: &str = "/etc/slicecache";
/// The config file as the agent sees it.
pub const CONFIG_PATH: &str = "/etc/slicecache/agent.yaml";

/// The agents' ConfigMap with `agent_config` as YAML, and the hash of that
/// file (the value of [`CONFIG_HASH`]).
pub(super) fn config_map(
    owner: &Owner,
    names: &ObjectNames,
    agent_config: &AgentConfig,
) -> Result<(ConfigMap, String), BuildError> {
    let config_yaml = serde_yaml_ng::to_string(agent_config).map_err(BuildError::ConfigSerialization)?;
    let config_hash = hash_hex(&config_yaml)?;

    let mut config_map = ConfigMap {
        metadata: metadata(owner, &names.config_map, "config"),
        data: Some(BTreeMap::from([(CONFIG_FILE_KEY.to_string(), config_yaml)])),
        ..ConfigMap::default()
    };
    annotate(&mut config_map.metadata, CONFIG_HASH, &config_hash);
    annotate(
        &mut config_map.metadata,
        CONFIG_GENERATION,
        &owner.generation.to_string(),
    );
    Ok((config_map, config_hash))
}
