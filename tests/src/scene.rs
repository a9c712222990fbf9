//! The world most control-plane tests need: the chart installed with its
//! operator ([`Installation`]), the node shim as three kubelets running the
//! real agent binary (Pods on a local non-loopback range, so EndpointSlices
//! list them, and with API access through their ServiceAccount), a
//! recording origin, and a namespace to apply SliceCaches in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use slicecache_testkit::origin::TestOrigin;

use crate::install::{kubectl, Installation};
use crate::node_shim::{NodeShim, ShimOptions};
use crate::pod_network::local_pod_range;
use crate::{agent_binary, poll};

/// A control plane with the operator, three nodes, an origin and a
/// namespace.
#[derive(Debug)]
pub struct Scene {
    pub install: Installation,
    pub shim: NodeShim,
    pub origin: TestOrigin,
    pub namespace: String,
    dir: PathBuf,
}

impl Scene {
    /// Starts everything with its files under `dir`, and creates `namespace`.
    pub async fn start(dir: &Path, namespace: &str) -> Self {
        Self::with_nodes(dir, namespace, 3).await
    }

    /// [`Scene::start`] with `nodes` Nodes.
    pub async fn with_nodes(dir: &Path, namespace: &str, nodes: usize) -> Self {
        let agent_bin = agent_binary();
        let install = Installation::start(dir).await;
        let client = install.control_plane.client().await;
        let mut options = ShimOptions::new(agent_bin, dir.join("shim"));
        options.nodes = nodes;
        options.api_kubeconfig = Some(install.admin.clone());
        // Pod addresses the EndpointSlice controller can publish.
        match local_pod_range() {
            Ok((first, last)) => (options.first_ip, options.last_ip) = (first, last),
            Err(why) => eprintln!("scene: Pods get loopback addresses, so EndpointSlices stay empty: {why}"),
        }
        let shim = NodeShim::start(client, options).await.expect("starting the node shim");
        let origin = TestOrigin::start().await.expect("starting the origin");
        kubectl(&install.admin, &["create", "namespace", namespace]).unwrap_or_else(|e| panic!("{e}"));
        Self {
            install,
            shim,
            origin,
            namespace: namespace.to_string(),
            dir: dir.to_path_buf(),
        }
    }

    /// The admin kubeconfig.
    pub fn admin(&self) -> &Path {
        &self.install.admin
    }

    /// `kubectl apply` of SliceCache `name` in the scene's namespace, its
    /// origin the scene's, with `spec` (YAML under `spec:`, indented by two
    /// spaces) for the rest.
    pub fn apply(&self, name: &str, spec: &str) {
        let manifest = self.dir.join(format!("{name}.yaml"));
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: slicecache.io/v1alpha1\nkind: SliceCache\nmetadata:\n  name: {name}\n  namespace: {}\n\
                 spec:\n  origin:\n    url: {}\n{spec}",
                self.namespace,
                self.origin.url()
            ),
        )
        .expect("writing the manifest");
        kubectl(self.admin(), &["apply", "-f", &manifest.to_string_lossy()]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// SliceCache `name` as JSON.
    pub fn cache(&self, name: &str) -> Option<Value> {
        self.install.get_json(&["slicecache", name, "-n", &self.namespace])
    }

    /// Polls SliceCache `name` until `accept` holds, checking the operator
    /// stays healthy; the SliceCache then.
    pub async fn wait_for_cache(
        &mut self,
        name: &str,
        what: &str,
        limit: Duration,
        accept: impl Fn(&Value) -> bool,
    ) -> Value {
        let namespace = self.namespace.clone();
        self.wait_for_cache_in(&namespace, name, what, limit, accept).await
    }

    /// [`Scene::wait_for_cache`] for a SliceCache in `namespace`.
    pub async fn wait_for_cache_in(
        &mut self,
        namespace: &str,
        name: &str,
        what: &str,
        limit: Duration,
        accept: impl Fn(&Value) -> bool,
    ) -> Value {
        poll(&format!("SliceCache {namespace}/{name}: {what}"), limit, || {
            self.install.operator.assert_healthy();
            let cache = self
                .install
                .get_json(&["slicecache", name, "-n", namespace])
                .filter(|c| accept(c));
            async move { cache }
        })
        .await
    }

    /// The agent Pods of SliceCache `name`, as JSON.
    pub fn agent_pods(&self, name: &str) -> Vec<Value> {
        let selector = format!("app.kubernetes.io/instance={name}");
        self.install
            .get_json(&["pods", "-n", &self.namespace, "-l", &selector])
            .and_then(|p| p["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Stops the agents and the shim's watches (the control plane stops when
    /// the scene drops).
    pub async fn shutdown(self) {
        self.shim.shutdown().await;
    }
}
