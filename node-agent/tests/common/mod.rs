//! Shared harness for the agent's integration tests: runs the real
//! `slicecache-agent` binary as a child process in front of the library's
//! real TCP test origin, and offers small checkers used by several tests.
#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a subset

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use slicecache_agent::demo::client::{ClientResponse, HttpClient};
use slicecache_agent::demo::origin::{DemoOrigin, SeenRequest};

/// The slice size the tests run with unless they say otherwise.
pub const S: u64 = 64 << 10;

/// Two distinct free loopback addresses (bound together, then released for
/// the agent to take).
pub fn free_addrs() -> (SocketAddr, SocketAddr) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    let (a, b) = (bind(), bind());
    (
        a.local_addr().expect("local address"),
        b.local_addr().expect("local address"),
    )
}

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
        let log_path = dir.path().join("agent.log");
        let log = std::fs::File::create(&log_path).expect("log file");
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
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning slicecache-agent");
        let mut agent = AgentProc {
            child,
            listen,
            admin,
            log_path,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = agent.child.try_wait() {
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
    child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

    /// The agent's log so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Panics (with the log) unless the process is still running.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the agent exited with {status}; its log:\n{}", self.log());
        }
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let resp = self.admin_client().get("/metrics", &[]).await.expect("GET /metrics");
        assert_eq!(resp.status, 200, "GET /metrics");
        String::from_utf8(resp.body.to_vec()).expect("metrics are UTF-8")
    }

    /// The sum of samples of metric `name` carrying all of `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics().await, name, labels)
    }
}

/// Sums the samples of `name` (exact metric name) that carry every label pair
/// in `labels`; 0 when there is none.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let have: Vec<(&str, &str)> = label_text
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
            .collect();
        if labels.iter().all(|want| have.contains(want)) {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the origin has seen, once it has finished recording: the origin
/// records a request (and counts its body bytes) only after writing the
/// response, so a client can hold every byte a moment before that.
pub async fn settled(origin: &DemoOrigin) -> Vec<SeenRequest> {
    let mut last = origin.state.seen().len();
    let mut stable = 0;
    while stable < 3 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let now = origin.state.seen().len();
        if now == last {
            stable += 1;
        } else {
            (last, stable) = (now, 0);
        }
    }
    origin.state.seen()
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

/// Sends one raw request with `Connection: close` and returns the response
/// head (status, headers) and every body byte received until the agent
/// closed the connection, however the response ended.
pub async fn raw_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("send request");
    let mut buf = Vec::new();
    // A reset after a partial body is an acceptable way to end it.
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no end of response from the agent within 20 s"),
        }
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response header")
        + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect::<Vec<_>>();
    (status, headers, buf[end..].to_vec())
}

/// The first value of `name` in a raw header list.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
