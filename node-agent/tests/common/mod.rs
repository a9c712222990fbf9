//! The agent's integration tests on top of the workspace's test-support
//! crate: starting the real `slicecache-agent` binary in front of the
//! recording test origin, and checkers of HTTP responses that several
//! tests share.
#![allow(dead_code, unused_imports, clippy::unwrap_used)] // each test binary uses a subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
pub use slicecache_testkit::client::{header, raw_get, ClientResponse, HttpClient};
pub use slicecache_testkit::metrics::metric_sum;
pub use slicecache_testkit::net::free_addrs;
pub use slicecache_testkit::origin::{settled, SeenRequest};
use slicecache_testkit::process::Proc;
pub use slicecache_testkit::wait::wait_for;

/// The slice size the tests run with unless they say otherwise.
pub const S: u64 = 64 << 10;

/// How to start one agent.
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    /// A program (and its arguments) the agent is started through, such as
    /// `prlimit --nofile=1024:1024 --`; it must exec the agent.
    wrapper: Vec<String>,
    flags: Vec<(String, String)>,
    env: Vec<(String, String)>,
    config: Option<(PathBuf, SocketAddr, SocketAddr)>,
}

impl AgentBuilder {
    /// An agent for `origin` configured by flags only: 64Mi memory, 64Ki
    /// slices, concurrency 4, no purge token.
    pub fn new(origin: &str) -> Self {
        Self {
            wrapper: Vec::new(),
            flags: vec![
                ("--origin".into(), origin.into()),
                ("--memory-cache".into(), "64Mi".into()),
                ("--slice-size".into(), "64Ki".into()),
                ("--concurrency".into(), "4".into()),
            ],
            env: Vec::new(),
            config: None,
        }
    }

    /// An agent configured by `--config file` alone; the file must name
    /// `listen` and `admin` as its listeners.
    pub fn with_config(file: &Path, listen: SocketAddr, admin: SocketAddr) -> Self {
        Self {
            wrapper: Vec::new(),
            flags: Vec::new(),
            env: Vec::new(),
            config: Some((file.to_path_buf(), listen, admin)),
        }
    }

    /// Sets (or replaces) a command-line flag.
    pub fn flag(mut self, name: &str, value: &str) -> Self {
        self.flags.retain(|(k, _)| k != name);
        self.flags.push((name.into(), value.into()));
        self
    }

    /// Starts the agent through `argv` (which must exec it, keeping its pid).
    pub fn wrapper(mut self, argv: &[&str]) -> Self {
        self.wrapper = argv.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Starts the agent and waits until `/readyz` answers 200. Retries with
    /// new ports if another process took the picked ones meanwhile.
    pub async fn start(self) -> AgentProc {
        let mut last_log = String::new();
        for _ in 0..3 {
            match self.try_start().await {
                Ok(agent) => return agent,
                Err(log) => {
                    if self.config.is_some() || !log.contains("in use") {
                        panic!("the agent did not become ready; its log:\n{log}");
                    }
                    last_log = log;
                }
            }
        }
        panic!("the agent could not bind its ports; its log:\n{last_log}");
    }

    async fn try_start(&self) -> Result<AgentProc, String> {
        let dir = tempfile::tempdir().expect("scratch directory");
        let agent = env!("CARGO_BIN_EXE_slicecache-agent");
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(agent);
                c
            }
            None => Command::new(agent),
        };
        cmd.arg("run");
        let (listen, admin) = match &self.config {
            Some((file, listen, admin)) => {
                cmd.arg("--config").arg(file);
                (*listen, *admin)
            }
            None => {
                let (listen, admin) = free_addrs();
                cmd.args(["--listen", &listen.to_string(), "--admin-listen", &admin.to_string()]);
                (listen, admin)
            }
        };
        for (k, v) in &self.flags {
            cmd.args([k, v]);
        }
        cmd.env_remove("SLICECACHE_PURGE_TOKEN")
            .env_remove("SLICECACHE_LOG_JSON")
            .env("RUST_LOG", "info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut agent = AgentProc {
            proc: Proc::spawn("the agent", cmd, dir.path().join("agent.log")),
            listen,
            admin,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = agent.proc.exited() {
                return Err(format!("(exited with {status})\n{}", agent.log()));
            }
            if let Ok(resp) = HttpClient::new(admin).get("/readyz", &[]).await {
                if resp.status == 200 {
                    // The proxy listener starts with the admin one; make sure.
                    if tokio::net::TcpStream::connect(listen).await.is_ok() {
                        return Ok(agent);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("(not ready after 30 s)\n{}", agent.log()))
    }
}

/// A running agent; killed when dropped.
#[derive(Debug)]
pub struct AgentProc {
    proc: Proc,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl AgentProc {
    /// A new keep-alive client of the proxy port.
    pub fn client(&self) -> HttpClient {
        HttpClient::new(self.listen)
    }

    /// A client of the admin port.
    pub fn admin_client(&self) -> HttpClient {
        HttpClient::new(self.admin)
    }

    /// The agent's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Panics (with the log) unless the process is still running.
    pub fn assert_alive(&mut self) {
        self.proc.assert_alive();
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        self.proc.signal(signal);
    }

    /// SIGTERM, then waits for a clean exit; the log.
    pub fn stop(mut self) -> String {
        match self.proc.terminate(Duration::from_secs(30)) {
            Some(status) => assert!(status.success(), "the agent exited with {status}:\n{}", self.log()),
            None => panic!("the agent did not stop within 30 s:\n{}", self.log()),
        }
        self.log()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let resp = self.admin_client().get("/metrics", &[]).await.expect("GET /metrics");
        assert_eq!(resp.status, 200, "GET /metrics");
        String::from_utf8(resp.body.to_vec()).expect("metrics are UTF-8")
    }

    /// The sum of samples of metric `name` carrying all of `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics().await, name, labels)
    }
}

/// Parses an origin-side `Range: bytes=a-b` value.
pub fn parse_bytes_range(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Asserts every request the origin saw asked for exactly one whole aligned
/// slice of `slice` bytes: `bytes=k*S-((k+1)*S-1)`.
pub fn assert_aligned(seen: &[SeenRequest], slice: u64) {
    assert!(!seen.is_empty(), "expected the origin to see requests");
    for r in seen {
        let range = r
            .range
            .as_deref()
            .unwrap_or_else(|| panic!("origin request without Range: {r:?}"));
        let (a, b) = parse_bytes_range(range).unwrap_or_else(|| panic!("unexpected Range {range:?}: {r:?}"));
        assert_eq!(
            a % slice,
            0,
            "origin range {range} does not start on a {slice}-byte boundary"
        );
        assert_eq!(
            (b + 1) % slice,
            0,
            "origin range {range} does not end on a {slice}-byte boundary"
        );
        assert_eq!(b + 1 - a, slice, "origin range {range} is not exactly one slice");
    }
}

/// Checks a 206 single-range response: status, `Content-Range`,
/// `Content-Length` and the bytes.
pub fn assert_partial(resp: &ClientResponse, full: &Bytes, first: u64, last: u64, what: &str) {
    let len = full.len() as u64;
    assert_eq!(resp.status, 206, "{what}: status");
    assert_eq!(
        resp.header("content-range"),
        Some(format!("bytes {first}-{last}/{len}").as_str()),
        "{what}: Content-Range"
    );
    assert_eq!(
        resp.header("content-length"),
        Some((last - first + 1).to_string().as_str()),
        "{what}: Content-Length"
    );
    assert_bytes(&resp.body, &full.slice(first as usize..=last as usize), what);
}

/// Compares bodies, reporting the first differing offset instead of dumping
/// megabytes.
pub fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first_diff = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: body differs: got {} bytes, want {} bytes, first difference at {:?}",
        got.len(),
        want.len(),
        first_diff
    );
}

/// One part of a `multipart/byteranges` body.
#[derive(Debug)]
pub struct Part {
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Part {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a `multipart/byteranges` body strictly (RFC 9110 §14.6 and RFC
/// 2046): each part's length comes from its `Content-Range`, and the body
/// must end with the close delimiter and nothing else.
pub fn parse_multipart(body: &Bytes, boundary: &str) -> Vec<Part> {
    let delim = format!("--{boundary}");
    let mut pos = 0usize;
    let mut parts = Vec::new();
    let rest = |pos: usize| &body[pos..];
    // An optional leading CRLF before the first delimiter is allowed.
    if rest(pos).starts_with(b"\r\n") {
        pos += 2;
    }
    assert!(
        rest(pos).starts_with(delim.as_bytes()),
        "multipart body must start with the delimiter"
    );
    pos += delim.len();
    loop {
        if rest(pos).starts_with(b"--") {
            pos += 2;
            assert!(
                rest(pos) == b"\r\n" || rest(pos).is_empty(),
                "bytes after the close delimiter: {:?}",
                String::from_utf8_lossy(rest(pos))
            );
            return parts;
        }
        assert!(rest(pos).starts_with(b"\r\n"), "CRLF after the delimiter");
        pos += 2;
        let head_end = rest(pos)
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("part header ends with CRLFCRLF");
        let head = String::from_utf8_lossy(&rest(pos)[..head_end]).into_owned();
        pos += head_end + 4;
        let headers: Vec<(String, String)> = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let cr = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-range"))
            .map(|(_, v)| v.clone())
            .expect("every part has a Content-Range");
        let (a, b) = cr
            .strip_prefix("bytes ")
            .and_then(|r| r.split_once('/'))
            .and_then(|(r, _)| r.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
            .unwrap_or_else(|| panic!("bad part Content-Range {cr:?}"));
        let len = b - a + 1;
        assert!(rest(pos).len() >= len, "part body shorter than its Content-Range");
        let part_body = body.slice(pos..pos + len);
        pos += len;
        parts.push(Part {
            headers,
            body: part_body,
        });
        assert!(rest(pos).starts_with(b"\r\n"), "CRLF before the next delimiter");
        pos += 2;
        assert!(rest(pos).starts_with(delim.as_bytes()), "delimiter after a part");
        pos += delim.len();
    }
}
