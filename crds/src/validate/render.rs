//! Rendering: the agent configuration file a validated spec becomes, which
//! the operator writes into the agents' ConfigMap.

use super::{
    model::DeviceSelection,
    paths::{BLOCK_VOLUME_PATH, EMPTY_DIR_FILE_PATH, PEER_TOKEN_FILE, PURGE_TOKEN_FILE},
    ValidatedSliceCache,
};
use crate::{
    agent_config::{AdminConfig, AgentConfig, CacheConfig, DeviceConfig, OriginConfig, Tunables},
    fleet_config::FleetConfig,
    status::EffectiveTunables,
    units::ByteSize,
};

impl ValidatedSliceCache {
    /// The agent configuration file for this spec with the spec's slice
    /// size and concurrency: [`Self::agent_config_tuned`] with none in force.
    pub fn agent_config(&self) -> AgentConfig {
        self.agent_config_tuned(None)
    }

    /// The agent configuration file for this spec, as the operator renders
    /// it into the agents' ConfigMap.
    ///
    /// Tunables carry the spec's values, except slice size and concurrency
    /// when `in_force` gives others (the tuner's, in tuning mode Auto; the
    /// tuner keeps them within `spec.tuning`'s bounds). Devices found by
    /// `deviceFilter` or `useAllDevices` differ per node and are not listed
    /// here (see [`super::Cache::devices`]); explicit paths and the
    /// file-backed device are. Host paths are used unchanged: the operator
    /// mounts them at the same path in the agent container, and the purge
    /// token at [`PURGE_TOKEN_FILE`].
    pub fn agent_config_tuned(&self, in_force: Option<&EffectiveTunables>) -> AgentConfig {
        let mut config = AgentConfig::for_origin(self.origin.url_text.clone());
        config.origin = OriginConfig {
            url: self.origin.url_text.clone(),
            host_header: self.origin.host_header.clone(),
            connect_timeout: self.origin.connect_timeout,
            first_byte_timeout: self.origin.first_byte_timeout,
            idle_timeout: self.origin.idle_timeout,
            max_connections: self.origin.max_connections_per_agent,
        };
        let (slice_size, concurrency) = match in_force {
            Some(t) => (t.slice_size, t.concurrency),
            None => (ByteSize(self.slicing.slice_size), self.slicing.concurrency),
        };
        config.tunables = Tunables {
            slice_size,
            concurrency,
            min_object_size: ByteSize(self.slicing.min_object_size),
            retries: self.slicing.retries,
            default_ttl: self.cache.default_ttl,
            honor_origin_cache_control: self.cache.honor_origin_cache_control,
        };
        let format = self.cache.format;
        let mut devices: Vec<DeviceConfig> = match &self.cache.devices {
            DeviceSelection::Paths(paths) => paths
                .iter()
                .map(|path| DeviceConfig {
                    path: path.clone(),
                    size: None,
                    format,
                })
                .collect(),
            DeviceSelection::None | DeviceSelection::Filter(_) | DeviceSelection::All => Vec::new(),
        };
        if let Some(file) = &self.cache.host_path_file {
            devices.push(DeviceConfig {
                path: file.path.clone(),
                size: Some(ByteSize(file.size)),
                format,
            });
        }
        if let Some(size) = self.cache.empty_dir_file {
            devices.push(DeviceConfig {
                path: EMPTY_DIR_FILE_PATH.to_string(),
                size: Some(ByteSize(size)),
                format,
            });
        }
        if self.cache.block_volume.is_some() {
            devices.push(DeviceConfig {
                path: BLOCK_VOLUME_PATH.to_string(),
                size: None,
                format,
            });
        }
        config.cache = CacheConfig {
            memory: ByteSize(self.cache.memory),
            devices,
            // Discovered devices differ per node: each agent finds its own.
            device_filter: match &self.cache.devices {
                DeviceSelection::Filter(re) => Some(re.as_str().to_string()),
                _ => None,
            },
            use_all_devices: matches!(self.cache.devices, DeviceSelection::All),
            discovered_format: format,
            force_memory: false,
        };
        config.admin = AdminConfig {
            purge_token_file: self.purge_token.as_ref().map(|_| PURGE_TOKEN_FILE.to_string()),
        };
        if self.fleet.is_sharded() {
            // Members come from the peers Service, which only the operator
            // names: it sets `peers_service` (see the operator's build).
            config.fleet = FleetConfig {
                peer_token_file: Some(PEER_TOKEN_FILE.to_string()),
                granule: ByteSize(self.fleet.granule),
                connect_timeout: self.fleet.connect_timeout,
                first_byte_timeout: self.fleet.first_byte_timeout,
                replicas: self.fleet.replicas,
                ..FleetConfig::default()
            };
        }
        config
    }
}
