//! A real Prometheus server on loopback, scraping the targets a test names.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::client::HttpClient;
use crate::net::free_addr;
use crate::process::{which, Proc};
use crate::wait::poll;

/// One scrape target and the labels Prometheus attaches to its series (as
/// Kubernetes service discovery would: `namespace`, `pod`).
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub labels: Vec<(String, String)>,
}

impl Target {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            labels: Vec::new(),
        }
    }

    pub fn label(mut self, name: &str, value: &str) -> Self {
        self.labels.push((name.into(), value.into()));
        self
    }
}

/// A Prometheus server with its own storage under a test's directory,
/// scraping every second; killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    pub url: String,
    pub addr: SocketAddr,
    proc: Proc,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` as job `job` and waits until
    /// `/-/ready` answers 200.
    pub async fn start(dir: &Path, job: &str, targets: &[Target]) -> Self {
        Self::start_at(dir, free_addr(), job, targets).await
    }

    /// [`Prometheus::start`] listening on `addr`, for a test that has
    /// named the address (in a manifest) before the targets existed.
    pub async fn start_at(dir: &Path, addr: SocketAddr, job: &str, targets: &[Target]) -> Self {
        let mut text = format!("  - job_name: {job}\n    static_configs:\n");
        for t in targets {
            text.push_str(&format!("      - targets: ['{}']\n", t.addr));
            if !t.labels.is_empty() {
                text.push_str("        labels:\n");
                for (k, v) in &t.labels {
                    text.push_str(&format!("          {k}: '{v}'\n"));
                }
            }
        }
        Self::start_with_scrape_configs(dir, addr, &text).await
    }

    /// Starts Prometheus on `addr` with `scrape_configs` (the YAML list
    /// under `scrape_configs:`, its items indented by two spaces), for a
    /// test that discovers its targets (Kubernetes service discovery).
    pub async fn start_with_scrape_configs(dir: &Path, addr: SocketAddr, scrape_configs: &str) -> Self {
        let bin = which("prometheus").expect("prometheus is not installed (scripts/install-deps.sh installs it)");
        let config = dir.join("prometheus.yml");
        let text = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n{scrape_configs}"
        );
        std::fs::write(&config, text).expect("writing prometheus.yml");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()))
            .arg(format!("--web.listen-address={addr}"));
        let mut proc = Proc::spawn("prometheus", cmd, dir.join("prometheus.log"));
        poll("Prometheus to be ready", Duration::from_secs(20), || {
            proc.assert_alive();
            async move {
                let ready = HttpClient::new(addr).get("/-/ready", &[]).await;
                ready.ok().filter(|r| r.status == 200).map(|_| ())
            }
        })
        .await;
        Self {
            url: format!("http://{addr}"),
            addr,
            proc,
        }
    }

    pub fn assert_alive(&mut self) {
        self.proc.assert_alive();
    }
}
