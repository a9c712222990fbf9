//! A container's environment as the kubelet would resolve it: literal
//! values, `valueFrom` (fieldRef, configMapKeyRef, secretKeyRef), `envFrom`,
//! and `$(VAR)` references in values, command and arguments.
//!
//! Pure: ConfigMaps and Secrets come from an [`ObjectData`] lookup, so the
//! rules are unit-tested without a cluster and the runtime reads them from
//! its watch caches.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

/// Reads the `data` (and `binaryData`) of ConfigMaps and Secrets in the
/// Pod's namespace.
pub trait ObjectData {
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
    fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
}

/// What a fieldRef can refer to beyond the Pod object itself.
#[derive(Clone, Debug)]
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub node_name: &'a str,
    pub pod_ip: String,
    pub host_ip: String,
}

/// Why a container's environment could not be built; the kubelet reports
/// these as `CreateContainerConfigError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{kind} {name:?} not found")]
    MissingObject { kind: &'static str, name: String },
    #[error("couldn't find key {key} in {kind} {name:?}")]
    MissingKey {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("env {var}: field {field:?} is not supported by the node shim")]
    UnsupportedField { var: String, field: String },
    #[error("env {var}: value of {kind} {name:?} key {key} is not UTF-8")]
    NotUtf8 {
        var: String,
        kind: &'static str,
        name: String,
        key: String,
    },
}

/// The environment of `container`, in order (later entries win, as in the
/// kubelet: `envFrom` first, then `env`).
pub fn resolve_env(
    container: &Container,
    facts: &PodFacts<'_>,
    objects: &dyn ObjectData,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, name: String, value: String| {
        vars.retain(|(n, _)| *n != name);
        vars.push((name, value));
    };
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let (kind, name, optional, data) = if let Some(cm) = &source.config_map_ref {
            ("ConfigMap", cm.name.clone(), cm.optional, objects.config_map(&cm.name))
        } else if let Some(secret) = &source.secret_ref {
            (
                "Secret",
                secret.name.clone(),
                secret.optional,
                objects.secret(&secret.name),
            )
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (key, value) in data {
                    // Keys that are not valid variable names are skipped, as
                    // the kubelet does (it records an event).
                    if let Ok(value) = String::from_utf8(value) {
                        set(&mut vars, format!("{prefix}{key}"), value);
                    }
                }
            }
            None if optional.unwrap_or(false) => {}
            None => return Err(EnvError::MissingObject { kind, name }),
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    field_value(&var.name, &field.field_path, facts)?
                } else if let Some(key) = &from.config_map_key_ref {
                    match key_value(&var.name, "ConfigMap", &key.name, &key.key, key.optional, objects)? {
                        Some(v) => v,
                        None => continue,
                    }
                } else if let Some(key) = &from.secret_key_ref {
                    match key_value(&var.name, "Secret", &key.name, &key.key, key.optional, objects)? {
                        Some(v) => v,
                        None => continue,
                    }
                } else {
                    return Err(EnvError::UnsupportedField {
                        var: var.name.clone(),
                        field: "resourceFieldRef/fileKeyRef".into(),
                    });
                }
            }
            (Some(value), None) => expand(value, &vars),
            (None, None) => String::new(),
        };
        set(&mut vars, var.name.clone(), value);
    }
    Ok(vars)
}

fn key_value(
    var: &str,
    kind: &'static str,
    name: &str,
    key: &str,
    optional: Option<bool>,
    objects: &dyn ObjectData,
) -> Result<Option<String>, EnvError> {
    let optional = optional.unwrap_or(false);
    let data = match kind {
        "Secret" => objects.secret(name),
        _ => objects.config_map(name),
    };
    let Some(data) = data else {
        return if optional {
            Ok(None)
        } else {
            Err(EnvError::MissingObject {
                kind,
                name: name.to_string(),
            })
        };
    };
    match data.get(key) {
        Some(bytes) => String::from_utf8(bytes.clone())
            .map(Some)
            .map_err(|_| EnvError::NotUtf8 {
                var: var.to_string(),
                kind,
                name: name.to_string(),
                key: key.to_string(),
            }),
        None if optional => Ok(None),
        None => Err(EnvError::MissingKey {
            kind,
            name: name.to_string(),
            key: key.to_string(),
        }),
    }
}

/// The value of a downward-API `fieldPath`.
pub fn field_value(var: &str, path: &str, facts: &PodFacts<'_>) -> Result<String, EnvError> {
    let meta = &facts.pod.metadata;
    let spec = facts.pod.spec.as_ref();
    let map_key =
        |prefix: &str| -> Option<String> { path.strip_prefix(prefix)?.strip_suffix("']").map(str::to_string) };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => facts.node_name.to_string(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        _ => {
            if let Some(key) = map_key("metadata.labels['") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&key))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(key) = map_key("metadata.annotations['") {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(&key))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(EnvError::UnsupportedField {
                    var: var.to_string(),
                    field: path.to_string(),
                });
            }
        }
    })
}

/// Expands `$(NAME)` from `vars` (unknown names stay as written) and
/// `$$` to `$`, as the kubelet does for env values, command and args.
pub fn expand(input: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.iter().rev().find(|(n, _)| n == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{
            ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector,
            PodSpec, SecretKeySelector,
        },
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    use super::*;

    struct Objects;

    impl ObjectData for Objects {
        fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            (name == "cm").then(|| {
                BTreeMap::from([
                    ("LEVEL".to_string(), b"debug".to_vec()),
                    ("origin".to_string(), b"http://o".to_vec()),
                ])
            })
        }
        fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            (name == "s").then(|| BTreeMap::from([("token".to_string(), b"t0k3n".to_vec())]))
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("agent-abc".into()),
                namespace: Some("caches".into()),
                labels: Some(BTreeMap::from([("app".to_string(), "slicecache".to_string())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec::default()),
            status: None,
        }
    }

    fn var(name: &str, value: Option<&str>, from: Option<EnvVarSource>) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.map(str::to_string),
            value_from: from,
        }
    }

    fn field(path: &str) -> Option<EnvVarSource> {
        Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        })
    }

    #[test]
    fn env_resolves_literals_fields_references_and_env_from() -> Result<(), EnvError> {
        let pod = pod();
        let facts = PodFacts {
            pod: &pod,
            node_name: "shim-node-2",
            pod_ip: "127.0.0.3".into(),
            host_ip: "127.0.0.1".into(),
        };
        let container = Container {
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cm".into(),
                    optional: None,
                }),
                prefix: Some("CM_".into()),
                secret_ref: None,
            }]),
            env: Some(vec![
                var("NODE", None, field("spec.nodeName")),
                var("POD", None, field("metadata.name")),
                var("IP", None, field("status.podIP")),
                var("APP", None, field("metadata.labels['app']")),
                var("ADDR", Some("$(IP):8080 $$(IP) $(NOPE)"), None),
                var(
                    "TOKEN",
                    None,
                    Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "s".into(),
                            key: "token".into(),
                            optional: None,
                        }),
                        ..EnvVarSource::default()
                    }),
                ),
                var(
                    "ABSENT",
                    None,
                    Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "gone".into(),
                            key: "k".into(),
                            optional: Some(true),
                        }),
                        ..EnvVarSource::default()
                    }),
                ),
                var("CM_LEVEL", Some("info"), None),
            ]),
            ..Container::default()
        };
        let env = resolve_env(&container, &facts, &Objects)?;
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("NODE"), Some("shim-node-2"));
        assert_eq!(get("POD"), Some("agent-abc"));
        assert_eq!(get("IP"), Some("127.0.0.3"));
        assert_eq!(get("APP"), Some("slicecache"));
        assert_eq!(get("ADDR"), Some("127.0.0.3:8080 $(IP) $(NOPE)"));
        assert_eq!(get("TOKEN"), Some("t0k3n"));
        assert_eq!(get("ABSENT"), None);
        assert_eq!(get("CM_origin"), Some("http://o"));
        assert_eq!(get("CM_LEVEL"), Some("info"), "env wins over envFrom");
        Ok(())
    }

    #[test]
    fn missing_objects_and_unknown_fields_are_errors() {
        let pod = pod();
        let facts = PodFacts {
            pod: &pod,
            node_name: "n",
            pod_ip: String::new(),
            host_ip: String::new(),
        };
        let missing_key = Container {
            env: Some(vec![var(
                "T",
                None,
                Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "s".into(),
                        key: "nope".into(),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                }),
            )]),
            ..Container::default()
        };
        assert!(matches!(
            resolve_env(&missing_key, &facts, &Objects),
            Err(EnvError::MissingKey { kind: "Secret", .. })
        ));
        let unknown = Container {
            env: Some(vec![var("X", None, field("spec.nope"))]),
            ..Container::default()
        };
        assert!(matches!(
            resolve_env(&unknown, &facts, &Objects),
            Err(EnvError::UnsupportedField { .. })
        ));
    }

    #[test]
    fn expand_handles_edge_cases() {
        let vars = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("$(A)$(A)", &vars), "11");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("cost $5", &vars), "cost $5");
        assert_eq!(expand("$", &vars), "$");
    }
}
