//! Autoscaling on the agents' own metrics, as a user sets it up: a real
//! Prometheus scraping every agent Pod the API server lists, and prometheus-adapter (built by `scripts/build-go-tools.sh adapter`
//! from the Go module in `tests/metrics-adapter`) serving the custom
//! metrics API from it, registered with the local control plane as an
//! APIService. The HPA controller of the control plane then reads `Pods`
//! metrics through the aggregation layer like in any cluster.
//!
//! The adapter runs as a local process on 127.0.0.1. The API server reaches
//! it through a Service of type ExternalName (`localhost`), which the
//! aggregator resolves without kube-proxy; the APIService skips verifying
//! the adapter's self-signed serving certificate (`insecureSkipTLSVerify`),
//! and the adapter authenticates the API server's proxied requests by the
//! front-proxy client certificate the control plane configures.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::control_plane::go_tool;
use crate::install::{condition, get_json, kubectl};
use crate::{free_addr, poll, Proc};

/// The APIService the adapter serves.
pub const CUSTOM_METRICS_API: &str = "v1beta1.custom.metrics.k8s.io";

/// A Prometheus scrape job (an item of `scrape_configs`) for the agent
/// Pods that [`discover_agent_pods`] lists in `targets`, with the
/// `namespace` and `pod` labels that the adapter's rule in `docs/tuning.md`
/// maps to resources.
pub fn agent_pods_scrape_job(targets: &Path) -> String {
    format!(
        "  - job_name: slicecache-agents\n    file_sd_configs:\n      - files: ['{}']\n        refresh_interval: 1s\n",
        targets.display()
    )
}

/// Keeps `targets` (a Prometheus file_sd file) listing the `admin` address
/// of every agent Pod of `namespace` with an IP, labelled `namespace` and
/// `pod`, as Kubernetes service discovery would (Debian's Prometheus is
/// built without it): lists the Pods every second until aborted.
pub fn discover_agent_pods(client: kube::Client, namespace: &str, targets: PathBuf) -> JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let params = ListParams::default().labels("app.kubernetes.io/component=cache-agent");
    tokio::spawn(async move {
        let mut written = None;
        loop {
            if let Ok(list) = pods.list(&params).await {
                let groups: Vec<Value> = list.items.iter().filter_map(scrape_target).collect();
                let text = Value::Array(groups).to_string();
                if written.as_ref() != Some(&text) {
                    let tmp = targets.with_extension("tmp");
                    if std::fs::write(&tmp, &text)
                        .and_then(|()| std::fs::rename(&tmp, &targets))
                        .is_ok()
                    {
                        written = Some(text);
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// One file_sd target group: the Pod's admin address and labels.
fn scrape_target(pod: &Pod) -> Option<Value> {
    let ip = pod.status.as_ref()?.pod_ip.as_deref()?;
    let port = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("admin"))?
        .container_port;
    Some(json!({
        "targets": [format!("{ip}:{port}")],
        "labels": {
            "namespace": pod.metadata.namespace.as_deref()?,
            "pod": pod.metadata.name.as_deref()?,
        },
    }))
}

/// prometheus-adapter, registered as [`CUSTOM_METRICS_API`]; killed when
/// dropped (the APIService stays, unavailable, until the cluster stops).
#[derive(Debug)]
pub struct MetricsAdapter {
    proc: Proc,
}

impl MetricsAdapter {
    /// Starts the adapter with `rules` (the YAML of its config file) in
    /// front of the Prometheus at `prometheus_url`, registers it with the
    /// API server of `admin` (a kubeconfig), and waits until the APIService
    /// is Available. Panics with the reason (a missing build names the
    /// command that makes it).
    pub async fn start(dir: &Path, admin: &Path, prometheus_url: &str, rules: &str) -> Self {
        let bin = go_tool("PROMETHEUS_ADAPTER_BIN", "adapter")
            .unwrap_or_else(|why| panic!("prometheus-adapter is not built: {why}"));
        let config = dir.join("adapter-rules.yaml");
        std::fs::write(&config, rules).expect("writing the adapter's rules");
        let addr = free_addr();
        let admin_arg = |flag: &str| format!("--{flag}={}", admin.display());
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--secure-port={}", addr.port()))
            .arg(format!("--bind-address={}", addr.ip()))
            .arg(format!("--cert-dir={}", dir.join("adapter-certs").display()))
            .arg(admin_arg("lister-kubeconfig"))
            .arg(admin_arg("authentication-kubeconfig"))
            .arg(admin_arg("authorization-kubeconfig"))
            .arg(format!("--prometheus-url={prometheus_url}"))
            .arg(format!("--config={}", config.display()))
            // Series are found again every few seconds, so metrics of
            // Pods that start during a test are served without a wait.
            .arg("--metrics-relist-interval=5s")
            .arg("--metrics-max-age=1m")
            .arg("--v=2");
        let mut proc = Proc::spawn("prometheus-adapter", cmd, dir.join("prometheus-adapter.log"));
        let manifest = dir.join("adapter-apiservice.yaml");
        std::fs::write(&manifest, registration(addr.port())).expect("writing the APIService");
        kubectl(admin, &["apply", "-f", &manifest.to_string_lossy()]).unwrap_or_else(|e| panic!("{e}"));
        let admin: PathBuf = admin.to_path_buf();
        poll(
            &format!("APIService {CUSTOM_METRICS_API} to be Available"),
            Duration::from_secs(90),
            || {
                proc.assert_alive();
                let available = get_json(&admin, &["apiservice", CUSTOM_METRICS_API])
                    .filter(|s| condition(s, "Available").is_some_and(|c| c["status"] == "True"));
                async move { available.map(|_| ()) }
            },
        )
        .await;
        Self { proc }
    }

    pub fn assert_alive(&mut self) {
        self.proc.assert_alive();
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }
}

/// The Service and APIService that route `custom.metrics.k8s.io` to the
/// adapter on `localhost:port`.
fn registration(port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: monitoring\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: prometheus-adapter\n  namespace: monitoring\n\
         spec:\n  type: ExternalName\n  externalName: localhost\n  ports:\n    - name: https\n      port: {port}\n---\n\
         apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: {CUSTOM_METRICS_API}\n\
         spec:\n  group: custom.metrics.k8s.io\n  version: v1beta1\n  groupPriorityMinimum: 100\n  versionPriority: 100\n  \
         insecureSkipTLSVerify: true\n  service:\n    name: prometheus-adapter\n    namespace: monitoring\n    port: {port}\n"
    )
}
