//! Rewriting what a container would see into what a local process needs:
//! mount paths to the Pod's directories (through a [`PathMap`]) and
//! listen addresses to the Pod's own loopback address.
//!
//! Every agent Pod asks for the same ports (`0.0.0.0:8080`, `0.0.0.0:9090`).
//! In a cluster each Pod has a network namespace of its own; here each Pod
//! gets an address of its own in 127.0.0.0/8 and every listener is bound to
//! it, which keeps the container ports, and with them the Service and
//! EndpointSlice ports, exactly as the operator rendered them.

use std::net::IpAddr;

use serde_yaml_ng::Value;
use slicecache_api::agent_config::{DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN};

use super::volumes::PathMap;

/// Command-line flags whose value is a listen address.
const LISTEN_FLAGS: &[&str] = &["--listen", "--admin-listen", "--peer-listen"];

/// `addr` (`host:port`, `[v6]:port` or `:port`) with its host replaced by
/// `ip`; `addr` unchanged when it has no port.
pub fn rewrite_listen(addr: &str, ip: IpAddr) -> String {
    match addr.rsplit_once(':') {
        Some((_, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => match ip {
            IpAddr::V4(v4) => format!("{v4}:{port}"),
            IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        },
        _ => addr.to_string(),
    }
}

/// The container's arguments for a local process: paths mapped, and the
/// values of `--listen`-like flags (`--flag V` or `--flag=V`) bound to `ip`.
pub fn rewrite_args(args: &[String], paths: &PathMap, ip: IpAddr) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut listen_value_next = false;
    for arg in args {
        if listen_value_next {
            out.push(rewrite_listen(arg, ip));
            listen_value_next = false;
            continue;
        }
        if LISTEN_FLAGS.contains(&arg.as_str()) {
            listen_value_next = true;
            out.push(arg.clone());
            continue;
        }
        if let Some((flag, value)) = arg.split_once('=') {
            if LISTEN_FLAGS.contains(&flag) {
                out.push(format!("{flag}={}", rewrite_listen(value, ip)));
                continue;
            }
        }
        out.push(paths.rewrite(arg));
    }
    out
}

/// A YAML config file for a local process: every string under a key that
/// ends in `listen` (any case) bound to `ip`, every other string's mounted
/// paths mapped. `None` when `content` is not a YAML mapping, which is then
/// written as it is.
///
/// An agent config (a mapping with an `origin`) that leaves `listen` or
/// `adminListen` to the agent's defaults gets them written out on `ip`:
/// the defaults bind 0.0.0.0, which every agent of the machine would share.
pub fn rewrite_yaml(content: &[u8], paths: &PathMap, ip: IpAddr) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(content).ok()?;
    let mut value: Value = serde_yaml_ng::from_str(text).ok()?;
    let map = value.as_mapping_mut()?;
    if map.contains_key("origin") {
        for (key, default) in [("listen", DEFAULT_LISTEN), ("adminListen", DEFAULT_ADMIN_LISTEN)] {
            if !map.contains_key(key) {
                map.insert(Value::String(key.into()), Value::String(default.into()));
            }
        }
    }
    rewrite_value(&mut value, paths, ip, false);
    serde_yaml_ng::to_string(&value).ok().map(String::into_bytes)
}

fn rewrite_value(value: &mut Value, paths: &PathMap, ip: IpAddr, listen_key: bool) {
    match value {
        Value::String(s) if listen_key => *s = rewrite_listen(s, ip),
        Value::String(s) => *s = paths.rewrite(s),
        Value::Sequence(items) => {
            for item in items {
                rewrite_value(item, paths, ip, listen_key);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let listen = key.as_str().is_some_and(|k| k.to_ascii_lowercase().ends_with("listen"));
                rewrite_value(item, paths, ip, listen);
            }
        }
        Value::Tagged(tagged) => rewrite_value(&mut tagged.value, paths, ip, listen_key),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, path::PathBuf};

    use slicecache_api::agent_config::{AgentConfig, DeviceConfig};

    use super::*;

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));

    fn paths() -> PathMap {
        let mut m = PathMap::default();
        m.insert("/etc/slicecache", PathBuf::from("/shim/p/volumes/config"));
        m.insert(
            "/var/lib/slicecache",
            PathBuf::from("/shim/nodes/n1/host/var/lib/slicecache"),
        );
        m.insert(
            "/var/run/secrets/slicecache",
            PathBuf::from("/shim/p/volumes/purge-token"),
        );
        m
    }

    #[test]
    fn listen_addresses_keep_their_port() {
        assert_eq!(rewrite_listen("0.0.0.0:8080", IP), "127.0.0.7:8080");
        assert_eq!(rewrite_listen("[::]:9090", IP), "127.0.0.7:9090");
        assert_eq!(rewrite_listen(":7000", IP), "127.0.0.7:7000");
        assert_eq!(rewrite_listen("no-port", IP), "no-port");
        assert_eq!(rewrite_listen("[::1]:1", "::2".parse().unwrap_or(IP)), "[::2]:1");
    }

    #[test]
    fn args_get_paths_and_listeners_rewritten() {
        let args: Vec<String> = [
            "run",
            "--config",
            "/etc/slicecache/agent.yaml",
            "--listen",
            "0.0.0.0:8080",
            "--admin-listen=0.0.0.0:9090",
            "--origin",
            "http://origin:80/etc/slicecache",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            rewrite_args(&args, &paths(), IP),
            [
                "run",
                "--config",
                "/shim/p/volumes/config/agent.yaml",
                "--listen",
                "127.0.0.7:8080",
                "--admin-listen=127.0.0.7:9090",
                "--origin",
                "http://origin:80/etc/slicecache",
            ]
        );
    }

    #[test]
    fn the_agent_config_gets_its_listeners_and_paths_rewritten_and_stays_valid() {
        let mut config = AgentConfig::for_origin("http://127.0.0.1:1234/base");
        config.cache.devices.push(DeviceConfig {
            path: "/var/lib/slicecache/cache.img".into(),
            size: None,
            format: Default::default(),
        });
        config.admin.purge_token_file = Some("/var/run/secrets/slicecache/purge-token".into());
        let yaml = serde_yaml_ng::to_string(&config).unwrap_or_default();
        let out = rewrite_yaml(yaml.as_bytes(), &paths(), IP).unwrap_or_default();
        let parsed: AgentConfig =
            serde_yaml_ng::from_slice(&out).unwrap_or_else(|e| panic!("rewritten config does not parse: {e}"));
        assert_eq!(parsed.listen, "127.0.0.7:8080");
        assert_eq!(parsed.admin_listen, "127.0.0.7:9090");
        assert_eq!(parsed.origin.url, "http://127.0.0.1:1234/base");
        assert_eq!(
            parsed.cache.devices[0].path,
            "/shim/nodes/n1/host/var/lib/slicecache/cache.img"
        );
        assert_eq!(
            parsed.admin.purge_token_file.as_deref(),
            Some("/shim/p/volumes/purge-token/purge-token")
        );
        assert_eq!(parsed.tunables, config.tunables);
    }

    #[test]
    fn an_agent_config_without_listeners_gets_them_on_the_pod_address() {
        let out = rewrite_yaml(b"origin: {url: 'http://o'}\n", &paths(), IP).unwrap_or_default();
        let parsed: AgentConfig =
            serde_yaml_ng::from_slice(&out).unwrap_or_else(|e| panic!("rewritten config does not parse: {e}"));
        assert_eq!(parsed.listen, "127.0.0.7:8080");
        assert_eq!(parsed.admin_listen, "127.0.0.7:9090");
        // Other YAML files get no listeners.
        let other = rewrite_yaml(b"a: 1\n", &paths(), IP).unwrap_or_default();
        assert_eq!(String::from_utf8_lossy(&other), "a: 1\n");
    }

    #[test]
    fn non_mapping_files_are_left_alone() {
        assert_eq!(rewrite_yaml(b"just a token\n", &paths(), IP), None);
        assert_eq!(rewrite_yaml(&[0xff, 0xfe], &paths(), IP), None);
    }
}
