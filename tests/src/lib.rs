//! Harness for the end-to-end tests in `tests/`: real processes on
//! 127.0.0.1 (the `slicecache-agent` binary, a Prometheus server), each
//! killed when its guard drops, and readers for the agents' own metrics.
//!
//! Nothing here is a mock. Kubernetes is real too where a test needs it: a
//! local control plane (`slicecache-cluster`, built from the Go module in
//! `tests/cluster`) with the [`node_shim`] as its kubelet, which runs the
//! agent binary for each agent Pod. Tests that need no cluster rewrite the
//! agents' config files directly, which the agents hot-reload the same way
//! as a mounted ConfigMap (they poll the file's content).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use slicecache_api::{
    agent_config::{AgentConfig, Tunables as AgentTunables},
    units::ByteSize,
};
use slicecache_operator::tuner::{PrometheusClient, Tunables};
pub use slicecache_testkit::{
    client::HttpClient,
    metrics::metric_sum,
    net::free_addr,
    process::{agent_binary, is_current, which, Proc},
    prometheus::{Prometheus, Target},
    wait::poll,
};

pub mod control_plane;
pub mod install;
pub mod local_volumes;
pub mod metrics_adapter;
pub mod node_shim;
pub mod pod_network;
pub mod scene;
pub mod tuning;

/// One `slicecache-agent run --config FILE` process.
#[derive(Debug)]
pub struct Agent {
    pub name: String,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    config_path: PathBuf,
    config: AgentConfig,
    proc: Proc,
}

impl Agent {
    /// Writes a config file for `origin` in `dir` and starts the agent
    /// with it (memory tier only), waiting until `/readyz` answers 200.
    pub async fn start(dir: &Path, name: &str, origin: &str, memory: ByteSize, tunables: Tunables) -> Self {
        let (listen, admin) = (free_addr(), free_addr());
        let mut config = AgentConfig::for_origin(origin);
        config.listen = listen.to_string();
        config.admin_listen = admin.to_string();
        config.cache.memory = memory;
        set_tunables(&mut config.tunables, tunables);
        let config_path = dir.join(format!("{name}.yaml"));
        write_config(&config_path, &config);
        let mut cmd = Command::new(agent_binary());
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .env_remove("SLICECACHE_PURGE_TOKEN")
            .env_remove("SLICECACHE_LOG_JSON")
            .env("RUST_LOG", "info");
        let proc = Proc::spawn(name, cmd, dir.join(format!("{name}.log")));
        let mut agent = Self {
            name: name.to_string(),
            listen,
            admin,
            config_path,
            config,
            proc,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            agent.proc.assert_alive();
            if let Ok(resp) = HttpClient::new(admin).get("/readyz", &[]).await {
                if resp.status == 200 && tokio::net::TcpStream::connect(listen).await.is_ok() {
                    return agent;
                }
            }
            assert!(
                Instant::now() < deadline,
                "agent {name} not ready within 30s; its log:\n{}",
                agent.proc.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Rewrites the config file with new tunables, atomically (a rename,
    /// as Kubernetes swaps a mounted ConfigMap's symlink).
    pub fn write_tunables(&mut self, t: Tunables) {
        set_tunables(&mut self.config.tunables, t);
        write_config(&self.config_path, &self.config);
    }

    /// The Prometheus text of the agent's `/metrics`.
    pub async fn metrics(&self) -> String {
        let resp = HttpClient::new(self.admin)
            .get("/metrics", &[])
            .await
            .unwrap_or_else(|e| panic!("GET /metrics of {}: {e}", self.name));
        assert_eq!(resp.status, 200, "GET /metrics of {}", self.name);
        String::from_utf8_lossy(&resp.body).into_owned()
    }

    /// The tunables the agent reports in force (its gauges).
    pub async fn tunables(&self) -> Tunables {
        let text = self.metrics().await;
        Tunables {
            slice_size: metric_sum(&text, "slicecache_slice_size_bytes", &[]) as u64,
            concurrency: metric_sum(&text, "slicecache_concurrency", &[]) as u32,
        }
    }

    /// Waits until the agent has reloaded `want` (its gauges show it).
    pub async fn wait_tunables(&mut self, want: Tunables, limit: Duration) {
        self.proc.assert_alive();
        let agent = &*self;
        poll(&format!("{} to reload {want}", self.name), limit, || async move {
            (agent.tunables().await == want).then_some(())
        })
        .await;
    }

    pub fn assert_alive(&mut self) {
        self.proc.assert_alive();
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }
}

fn set_tunables(t: &mut AgentTunables, new: Tunables) {
    t.slice_size = ByteSize(new.slice_size);
    t.concurrency = new.concurrency;
}

fn write_config(path: &Path, config: &AgentConfig) {
    let yaml = serde_yaml_ng::to_string(config).expect("serialising the agent config");
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, yaml).expect("writing the agent config");
    std::fs::rename(&tmp, path).expect("replacing the agent config");
}

/// The SHA-256 of `bytes` in hex, by `sha256sum` (coreutils), to compare
/// bodies by digest.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running sha256sum");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(bytes).expect("feeding sha256sum");
    }
    let out = child.wait_with_output().expect("sha256sum's output");
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The operator's Prometheus client for a test's Prometheus server.
pub fn prometheus_client(prometheus: &Prometheus) -> PrometheusClient {
    PrometheusClient::new(&prometheus.url, Duration::from_secs(5)).expect("a valid Prometheus URL")
}

/// The agents' counters the tuning tests judge by, summed over agents.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    pub at: Option<Instant>,
    pub client_bytes: f64,
    pub origin_bytes: f64,
    pub slices: f64,
    pub slice_misses: f64,
    pub origin_requests: f64,
    pub origin_429: f64,
}

impl Counters {
    /// Reads every agent's `/metrics` now.
    pub async fn read(agents: &[Agent]) -> Self {
        let mut c = Self {
            at: Some(Instant::now()),
            ..Self::default()
        };
        for agent in agents {
            let text = agent.metrics().await;
            c.client_bytes += metric_sum(&text, "slicecache_client_bytes_total", &[]);
            c.origin_bytes += metric_sum(&text, "slicecache_origin_bytes_total", &[]);
            c.slices += metric_sum(&text, "slicecache_slices_total", &[]);
            c.slice_misses += metric_sum(&text, "slicecache_slices_total", &[("result", "miss")]);
            c.origin_requests += metric_sum(&text, "slicecache_origin_requests_total", &[]);
            c.origin_429 += metric_sum(&text, "slicecache_origin_requests_total", &[("status", "429")]);
        }
        c
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Delta {
        let seconds = match (self.at, earlier.at) {
            (Some(a), Some(b)) => a.saturating_duration_since(b).as_secs_f64(),
            _ => 0.0,
        };
        Delta {
            seconds,
            client_bytes: self.client_bytes - earlier.client_bytes,
            origin_bytes: self.origin_bytes - earlier.origin_bytes,
            slices: self.slices - earlier.slices,
            slice_misses: self.slice_misses - earlier.slice_misses,
            origin_requests: self.origin_requests - earlier.origin_requests,
            origin_429: self.origin_429 - earlier.origin_429,
        }
    }
}

/// Counter increases over a period.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Delta {
    pub seconds: f64,
    pub client_bytes: f64,
    pub origin_bytes: f64,
    pub slices: f64,
    pub slice_misses: f64,
    pub origin_requests: f64,
    pub origin_429: f64,
}

impl Delta {
    /// Origin bytes per client byte served from misses, the tuner's
    /// definition: client bytes times the miss share of slices stands in
    /// for "client bytes served from misses". `None` without misses.
    pub fn amplification(&self) -> Option<f64> {
        let served_from_misses = self.client_bytes * (self.slice_misses / self.slices);
        (self.slice_misses > 0.0 && served_from_misses > 0.0).then(|| self.origin_bytes / served_from_misses)
    }

    /// Client bytes per second.
    pub fn client_throughput(&self) -> f64 {
        if self.seconds > 0.0 {
            self.client_bytes / self.seconds
        } else {
            0.0
        }
    }

    /// Share of origin subrequests answered 429.
    pub fn throttle_ratio(&self) -> f64 {
        if self.origin_requests > 0.0 {
            self.origin_429 / self.origin_requests
        } else {
            0.0
        }
    }
}
