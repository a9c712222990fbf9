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
    collections::BTreeMap,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use slicecache_agent::demo::client::HttpClient;
use slicecache_api::{
    agent_config::{AgentConfig, Tunables as AgentTunables},
    units::ByteSize,
};
use slicecache_operator::tuner::{PrometheusClient, Tunables};

pub mod control_plane;
pub mod install;
pub mod node_shim;
pub mod tuning;

/// A free loopback address (bound, then released for a child to take).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral loopback port")
}

/// A child process, killed and reaped when dropped; stderr and stdout go
/// to a log file that failures print.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).expect("creating a log file");
        let err = out.try_clone().expect("cloning the log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Self {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Panics with the log unless the process still runs.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}; its log:\n{}", self.name, self.log_tail(40));
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits up to `grace` for the process to exit (the
    /// guard's drop kills it if it has not).
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(pid) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `slicecache-agent` binary cargo built next to this test binary
/// (`target/<profile>/deps/TEST-HASH` -> `target/<profile>/slicecache-agent`).
/// `cargo test --workspace` (the project's test command) builds it, because
/// the agent's own integration tests need it; `cargo test -p slicecache-e2e`
/// alone does not, so a missing or stale binary (older than the agent's
/// sources or the config types it is built with) stops the test with the
/// command that fixes it.
pub fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let agent = dir.join(format!("slicecache-agent{}", std::env::consts::EXE_SUFFIX));
    if let Err(why) = is_current(&agent, &["node-agent/src", "crds/src"]) {
        let release = if dir.file_name().is_some_and(|n| n == "release") {
            " --release"
        } else {
            ""
        };
        panic!("{why}: run `cargo build -p slicecache-agent{release}` first, or `cargo test --workspace`");
    }
    agent
}

/// Whether `binary` exists and is newer than every file under `sources`
/// (paths from the repository root, files or directories).
pub fn is_current(binary: &Path, sources: &[&str]) -> Result<(), String> {
    let built = std::fs::metadata(binary)
        .and_then(|m| m.modified())
        .map_err(|_| format!("{} is missing", binary.display()))?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for sources in sources {
        let path = root.join(sources);
        let newest = if path.is_file() {
            std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, path))
        } else {
            newest_file(&path)
        };
        if let Some((newest, path)) = newest {
            if newest > built {
                return Err(format!("{} is older than {}", binary.display(), path.display()));
            }
        }
    }
    Ok(())
}

fn newest_file(dir: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let found = if path.is_dir() {
            newest_file(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok().map(|t| (t, path))
        };
        if let Some(found) = found {
            if newest.as_ref().is_none_or(|n| found.0 > n.0) {
                newest = Some(found);
            }
        }
    }
    newest
}

/// Finds `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Polls `cond` every 100 ms until it returns `Some`; panics with `what`
/// after `limit`.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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

/// A Prometheus server on 127.0.0.1 with its own storage directory,
/// scraping `targets` every second as job `job`.
#[derive(Debug)]
pub struct Prometheus {
    pub url: String,
    proc: Proc,
}

impl Prometheus {
    pub async fn start(dir: &Path, job: &str, targets: &[SocketAddr]) -> Self {
        let bin = which("prometheus").expect("prometheus is not installed (scripts/install-deps.sh installs it)");
        let addr = free_addr();
        let config = dir.join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .expect("writing prometheus.yml");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()))
            .arg(format!("--web.listen-address={addr}"));
        let mut proc = Proc::spawn("prometheus", cmd, dir.join("prometheus.log"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            proc.assert_alive();
            if let Ok(resp) = HttpClient::new(addr).get("/-/ready", &[]).await {
                if resp.status == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready within 20s; its log:\n{}",
                proc.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            url: format!("http://{addr}"),
            proc,
        }
    }

    pub fn client(&self) -> PrometheusClient {
        PrometheusClient::new(&self.url, Duration::from_secs(5)).expect("a valid Prometheus URL")
    }

    pub fn assert_alive(&mut self) {
        self.proc.assert_alive();
    }
}

/// Sums the samples of metric `name` carrying every label pair in
/// `labels`; 0 when there are none.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let have: BTreeMap<&str, &str> = label_text
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
            .collect();
        if labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
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
