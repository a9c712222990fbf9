//! API access for Pods, as the kubelet gives it.
//!
//! When a Pod's service account token is mounted (the API server's
//! ServiceAccount admission adds a projected volume with a
//! `serviceAccountToken` source when `automountServiceAccountToken` is in
//! effect), the kubelet fetches a token bound to the Pod through the
//! TokenRequest API. The shim does the same, but a local process cannot
//! reach the `kubernetes` Service's cluster IP, so instead of the in-cluster
//! files it writes a kubeconfig with the API server's real address and CA
//! and the Pod's token, and points `KUBECONFIG` at it (kube clients read a
//! kubeconfig before the in-cluster files). RBAC then judges every request
//! of the Pod as its ServiceAccount's.

use std::path::Path;

use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{Pod, ServiceAccount},
};
use kube::{api::PostParams, Api, Client};

/// Lifetime of a Pod's token; the shim does not refresh it.
const TOKEN_SECONDS: i64 = 6 * 3600;

/// Whether the API server mounted a service account token into `pod`.
pub fn mounts_token(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .any(|s| s.service_account_token.is_some())
}

/// Writes to `out` a kubeconfig for `pod`: the cluster (server, CA) of the
/// `admin` kubeconfig and a token of the Pod's ServiceAccount bound to it.
pub async fn write_pod_kubeconfig(client: &Client, admin: &Path, pod: &Pod, out: &Path) -> Result<(), String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(TOKEN_SECONDS),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let token = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("requesting a token for ServiceAccount {namespace}/{account}: {e}"))?
        .status
        .map(|s| s.token)
        .ok_or_else(|| format!("the token request for ServiceAccount {namespace}/{account} returned no token"))?;
    let text = kubeconfig_with_token(admin, &namespace, &account, &token)?;
    std::fs::write(out, text).map_err(|e| format!("writing {}: {e}", out.display()))
}

/// The `admin` kubeconfig's clusters with one user, `user`, holding
/// `token`, and every context using it in `namespace`.
pub fn kubeconfig_with_token(admin: &Path, namespace: &str, user: &str, token: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(admin).map_err(|e| format!("reading {}: {e}", admin.display()))?;
    let mut config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(|e| e.to_string())?;
    config["users"] = serde_yaml_ng::to_value(serde_json::json!([
        { "name": user, "user": { "token": token.trim() } }
    ]))
    .map_err(|e| e.to_string())?;
    if let Some(contexts) = config["contexts"].as_sequence_mut() {
        for context in contexts {
            context["context"]["user"] = user.into();
            context["context"]["namespace"] = namespace.into();
        }
    }
    serde_yaml_ng::to_string(&config).map_err(|e| e.to_string())
}
