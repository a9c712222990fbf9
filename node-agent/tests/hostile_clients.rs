//! Hostile clients and absurd settings against the real agent binary, on
//! loopback only: path traversal, slowloris under a small descriptor limit,
//! pipelining, oversized requests, a missing Host, duplicate Range headers,
//! purge auth, and a memory tier larger than the host. Each test asserts
//! statuses, bytes, what the origin saw and the agent's metrics.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{free_addrs, AgentBuilder, AgentProc};
use slicecache_testkit::origin::{pattern, OriginObject, TestOrigin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Writes `raw` as it is and reads until the agent closes the connection or
/// `limit` passes; returns every byte received.
async fn exchange(addr: SocketAddr, raw: &[u8], limit: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw).await.expect("send");
    read_until_close(&mut s, limit).await
}

async fn read_until_close(s: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(&response[..response.len().min(64)]).into_owned();
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// Splits a byte stream of several HTTP/1.1 responses with Content-Length
/// bodies into (status, body) pairs.
fn split_responses(mut bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let status = status_of(head.as_bytes());
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let body_start = end + 4;
        let body_end = (body_start + len).min(bytes.len());
        out.push((status, bytes[body_start..body_end].to_vec()));
        bytes = &bytes[body_end..];
    }
    out
}

/// Runs a command to its end, killing it (and failing the test) if it is
/// still running after `limit`.
async fn output_within(mut cmd: std::process::Command, limit: Duration) -> std::process::Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let waiter = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(limit, waiter).await {
        Ok(out) => out.expect("join").expect("wait"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
            panic!("still running after {limit:?}: the agent accepted what it should refuse");
        }
    }
}

async fn origin_with(objects: &[(&str, usize)]) -> TestOrigin {
    let origin = TestOrigin::start().await.expect("origin");
    for (i, (path, len)) in objects.iter().enumerate() {
        origin
            .state
            .put(path, OriginObject::new(pattern(*len, i as u64 + 1), &format!("v{i}")));
    }
    origin
}

/// An agent configured by a file (for the `client` section), with `extra`
/// appended to the file.
async fn agent_with_config(origin: &str, extra: &str) -> (AgentProc, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("config dir");
    let file = dir.path().join("agent.yaml");
    let (listen, admin) = free_addrs();
    std::fs::write(
        &file,
        format!(
            "listen: {listen}\nadminListen: {admin}\norigin:\n  url: {origin}\ntunables:\n  sliceSize: 64Ki\ncache:\n  memory: 64Mi\n{extra}"
        ),
    )
    .expect("write config");
    (AgentBuilder::with_config(&file, listen, admin).start().await, dir)
}

#[tokio::test]
async fn dot_segments_never_leave_the_origins_base_path() {
    let origin = origin_with(&[
        ("/base/ok.bin", 100_000),
        ("/secret/passwd", 1000),
        ("/base/a/b.bin", 10),
    ])
    .await;
    let agent = AgentBuilder::new(&format!("{}/base", origin.url())).start().await;
    for target in [
        "/../secret/passwd",
        "/%2e%2e/secret/passwd",
        "/%2E%2E/%2E%2E/etc/passwd",
        "/a/../../secret/passwd",
        "/a/..%2f..%2fsecret/passwd",
        "/a/%252e%252e/x",
        "/ok.bin%00.txt",
        "/a%0d%0aX-Injected:%20yes",
    ] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let resp = exchange(agent.listen, raw.as_bytes(), Duration::from_secs(10)).await;
        assert_eq!(status_of(&resp), 400, "{target}: {}", String::from_utf8_lossy(&resp));
    }
    let seen = origin.state.seen();
    assert!(seen.is_empty(), "the origin saw refused requests: {seen:?}");

    // Dot segments that stay inside the tree resolve to one cache key.
    let want = pattern(100_000, 1);
    for target in ["/ok.bin", "/a/../ok.bin", "/./a/%2e%2e/ok.bin", "/%6Fk.bin"] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let resp = exchange(agent.listen, raw.as_bytes(), Duration::from_secs(10)).await;
        let parts = split_responses(&resp);
        assert_eq!(parts.len(), 1, "{target}");
        assert_eq!(parts[0].0, 200, "{target}");
        assert!(parts[0].1 == want[..], "{target}: wrong bytes");
    }
    let seen = origin.state.seen();
    assert!(!seen.is_empty());
    for r in &seen {
        assert_eq!(r.path, "/base/ok.bin", "the origin got {:?}", r.path);
    }
    assert!(agent.metric("slicecache_client_requests_rejected_total", &[]).await >= 8.0);
}

#[tokio::test]
async fn pipelined_requests_are_all_answered_in_order() {
    let origin = origin_with(&[("/one", 70_000), ("/two", 5), ("/three", 200_000)]).await;
    let agent = AgentBuilder::new(&origin.url()).start().await;
    let mut raw = Vec::new();
    for (path, extra) in [
        ("/one", ""),
        ("/two", ""),
        ("/three", "Range: bytes=10-19\r\n"),
        ("/one", ""),
    ] {
        raw.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: a\r\n{extra}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"HEAD /two HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let resp = exchange(agent.listen, &raw, Duration::from_secs(20)).await;
    let parts = split_responses(&resp);
    let statuses: Vec<u16> = parts.iter().map(|p| p.0).collect();
    assert_eq!(
        statuses,
        [200, 200, 206, 200, 200],
        "{}",
        String::from_utf8_lossy(&resp[..resp.len().min(2000)])
    );
    assert!(parts[0].1 == pattern(70_000, 1)[..]);
    assert!(parts[1].1 == pattern(5, 2)[..]);
    assert!(parts[2].1 == pattern(200_000, 3)[10..20]);
    assert!(parts[3].1 == pattern(70_000, 1)[..]);
    assert!(parts[4].1.is_empty(), "HEAD has no body");
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_a_status() {
    let origin = origin_with(&[("/obj", 300_000)]).await;
    let agent = AgentBuilder::new(&origin.url()).start().await;
    let long_target = format!("/{}", "a".repeat(64 << 10));
    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!("GET {long_target} HTTP/1.1\r\nHost: a\r\n\r\n"),
            414,
            "64 KiB URL",
        ),
        (
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "b".repeat(9 << 10)),
            414,
            "9 KiB URL",
        ),
        (
            format!(
                "GET /obj HTTP/1.1\r\nHost: a\r\n{}\r\n",
                (0..30)
                    .map(|i| format!("X-Filler-{i}: {}\r\n", "v".repeat(7000)))
                    .collect::<String>()
            ),
            431,
            "210 KB header block",
        ),
        (
            format!(
                "GET /obj HTTP/1.1\r\nHost: a\r\n{}\r\n",
                (0..300).map(|i| format!("X-{i}: v\r\n")).collect::<String>()
            ),
            431,
            "300 headers",
        ),
        ("GET /obj HTTP/1.1\r\n\r\n".to_string(), 400, "HTTP/1.1 without Host"),
        (
            "GET /obj HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_string(),
            400,
            "two Hosts",
        ),
        ("GARBAGE\r\n\r\n".to_string(), 400, "not HTTP"),
    ];
    for (raw, want, what) in cases {
        let resp = exchange(agent.listen, raw.as_bytes(), Duration::from_secs(10)).await;
        assert!(!resp.is_empty(), "{what}: the connection closed with no status");
        assert_eq!(status_of(&resp), want, "{what}");
    }
    // HTTP/1.0 needs no Host.
    let resp = exchange(agent.listen, b"GET /obj HTTP/1.0\r\n\r\n", Duration::from_secs(10)).await;
    assert_eq!(status_of(&resp), 200);

    // Two Range headers: both ignored, the whole object served.
    let raw = "GET /obj HTTP/1.1\r\nHost: a\r\nRange: bytes=0-9\r\nRange: bytes=20-29\r\nConnection: close\r\n\r\n";
    let parts = split_responses(&exchange(agent.listen, raw.as_bytes(), Duration::from_secs(10)).await);
    assert_eq!(parts[0].0, 200);
    assert!(parts[0].1 == pattern(300_000, 1)[..]);

    // The admin port answers a huge URL with a status, and the log line
    // about it stays short.
    let raw = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "m".repeat(64 << 10));
    let resp = exchange(agent.admin, raw.as_bytes(), Duration::from_secs(10)).await;
    assert!(!resp.is_empty(), "admin: no status for a 64 KiB URL");
    let longest = agent.log().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2000, "a log line of {longest} characters");
    let mut agent = agent;
    agent.assert_alive();
}

#[tokio::test]
async fn purge_accepts_any_case_of_bearer_and_logs_refusals() {
    let origin = origin_with(&[("/p", 1000)]).await;
    let agent = AgentBuilder::new(&origin.url())
        .env("SLICECACHE_PURGE_TOKEN", "s3cret")
        .start()
        .await;
    let mut admin = agent.admin_client();
    let resp = admin
        .request("POST", "/purge?url=/p", &[("Authorization", "bearer s3cret")])
        .await
        .expect("purge");
    assert_eq!(resp.status, 200);
    let resp = admin
        .request("POST", "/purge?url=/p", &[("Authorization", "Bearer nope")])
        .await
        .expect("purge");
    assert_eq!(resp.status, 401);
    assert!(agent.log().contains("purge refused"), "{}", agent.log());
    assert_eq!(
        agent
            .metric("slicecache_purge_refusals_total", &[("reason", "bad_token")])
            .await,
        1.0
    );
}

/// Opens a connection from `source` (a loopback address) that sends half a
/// request header and then nothing.
async fn half_open(source: &str, agent: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(format!("{source}:0").parse().ok()?).ok()?;
    let mut s = socket.connect(agent).await.ok()?;
    s.write_all(b"GET /obj HTTP/1.1\r\nHost: a\r\nX-Slow: ").await.ok()?;
    Some(s)
}

#[tokio::test]
async fn a_slowloris_flood_under_1024_descriptors_leaves_real_clients_served() {
    // This test opens 2,000 connections itself.
    let mut limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit.current = limit.maximum;
    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).ok();

    let origin = origin_with(&[("/obj", 256 << 10)]).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("agent.yaml");
    let (listen, admin) = free_addrs();
    std::fs::write(
        &file,
        format!(
            "listen: {listen}\nadminListen: {admin}\norigin:\n  url: {}\ntunables:\n  sliceSize: 64Ki\ncache:\n  memory: 64Mi\nclient:\n  headerTimeout: 6s\n",
            origin.url()
        ),
    )
    .expect("config");
    // The agent runs with a hard limit of 1,024 descriptors.
    let agent = AgentBuilder::with_config(&file, listen, admin)
        .wrapper(&["prlimit", "--nofile=1024:1024", "--"])
        .start()
        .await;

    let flood_started = Instant::now();
    let mut flood = Vec::new();
    for _ in 0..2000 {
        if let Some(s) = half_open("127.0.0.2", agent.listen).await {
            flood.push(s);
        }
    }
    assert!(flood.len() >= 1500, "only {} flood connections opened", flood.len());

    // Legitimate clients from another address keep being served meanwhile.
    let want = pattern(256 << 10, 1);
    let mut latencies = Vec::new();
    for i in 0..100 {
        let started = Instant::now();
        let raw = format!(
            "GET /obj HTTP/1.1\r\nHost: a\r\nRange: bytes={i}-{}\r\nConnection: close\r\n\r\n",
            i + 999
        );
        let resp = exchange(agent.listen, raw.as_bytes(), Duration::from_secs(10)).await;
        latencies.push(started.elapsed());
        let parts = split_responses(&resp);
        assert_eq!(parts.first().map(|p| p.0), Some(206), "request {i} during the flood");
        assert!(parts[0].1 == want[i..i + 1000]);
    }
    assert!(
        flood_started.elapsed() < Duration::from_secs(6),
        "the legitimate requests took until the header timeout: {:?}",
        flood_started.elapsed()
    );
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    println!(
        "legitimate requests during a 2,000-connection slowloris flood: p50 {:?}, p99 {p99:?}",
        latencies[50]
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");

    // The half-open connections are closed by the header timeout (or were
    // refused at once over the per-address cap).
    tokio::time::sleep_until((flood_started + Duration::from_secs(8)).into()).await;
    let mut still_open = 0;
    for s in &mut flood {
        let mut b = [0u8; 1];
        if let Err(_) | Ok(Ok(1..)) = tokio::time::timeout(Duration::from_millis(5), s.read(&mut b)).await {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "half-open connections left after the header timeout");
    let cut = |reason: &'static str| {
        let agent = &agent;
        async move {
            agent
                .metric("slicecache_client_connections_closed_total", &[("reason", reason)])
                .await
        }
    };
    let (timed_out, refused) = (cut("header_timeout").await, cut("per_ip_limit").await);
    assert!(timed_out >= 100.0, "header timeouts counted: {timed_out}");
    assert!(timed_out + refused >= flood.len() as f64, "{timed_out} + {refused}");
    assert!(!agent.log().contains("Too many open files"), "{}", agent.log());
}

#[tokio::test]
async fn memory_tiers_beyond_the_host_are_refused_before_allocating() {
    let origin = origin_with(&[]).await;
    for (size, force) in [("1Ei", false), ("1Pi", false), ("1Ei", true)] {
        let (listen, admin) = free_addrs();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_slicecache-agent"));
        cmd.args(["run", "--origin", &origin.url(), "--memory-cache", size])
            .args(["--listen", &listen.to_string(), "--admin-listen", &admin.to_string()]);
        if force {
            cmd.arg("--force-memory-cache");
        }
        let started = Instant::now();
        let out = output_within(cmd, Duration::from_secs(20)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{size}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(5), "{size}");
        assert!(
            stderr.contains("cache.memory") && stderr.contains(size),
            "{size}: {stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("memory allocation"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn a_device_with_metadata_past_its_start_is_not_formatted() {
    use std::os::unix::fs::FileExt;
    let origin = origin_with(&[]).await;
    let dir = tempfile::tempdir().expect("dir");
    let size: u64 = 256 << 20;
    for (name, at, bytes) in [
        ("gpt-backup.img", size - 512, &b"EFI PART"[..]),
        ("data-at-68k.img", 68 << 10, &b"precious"[..]),
    ] {
        let path = dir.path().join(name);
        let f = std::fs::File::create(&path).expect("create");
        f.set_len(size).expect("size");
        f.write_all_at(bytes, at).expect("write");
        drop(f);
        let (listen, admin) = free_addrs();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_slicecache-agent"));
        cmd.args(["run", "--origin", &origin.url(), "--memory-cache", "64Mi"])
            .args(["--listen", &listen.to_string(), "--admin-listen", &admin.to_string()])
            .args(["--device", path.to_str().expect("utf-8 path")]);
        // An agent that accepted the device would run on: give up after 20 s.
        let out = output_within(cmd, Duration::from_secs(20)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains("refusing to format"), "{name}: {stderr}");
        let mut back = vec![0u8; bytes.len()];
        std::fs::File::open(&path)
            .expect("open")
            .read_exact_at(&mut back, at)
            .expect("read");
        assert_eq!(back, bytes, "{name}: the data was overwritten");
        let mut head = vec![0u8; 8];
        std::fs::File::open(&path)
            .expect("open")
            .read_exact_at(&mut head, 0)
            .expect("read");
        assert_eq!(head, [0u8; 8], "{name}: a superblock was written");
    }
}

#[tokio::test]
async fn clients_that_stop_reading_are_cut_by_the_send_timeout() {
    let origin = origin_with(&[("/big", 32 << 20)]).await;
    let (agent, _dir) = agent_with_config(&origin.url(), "client:\n  sendTimeout: 1s\n  minSendRate: 0\n").await;
    // Warm the object so the reply comes from memory as fast as it can go.
    let raw = "GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let whole = exchange(agent.listen, raw.as_bytes(), Duration::from_secs(30)).await;
    assert_eq!(status_of(&whole), 200);
    // Ask again and never read: the agent gives up after the send timeout.
    let mut s = TcpStream::connect(agent.listen).await.expect("connect");
    s.write_all(raw.as_bytes()).await.expect("send");
    common::wait_for("the send timeout to be counted", Duration::from_secs(15), || async {
        agent
            .metric(
                "slicecache_client_connections_closed_total",
                &[("reason", "send_timeout")],
            )
            .await
            >= 1.0
    })
    .await;
    drop(s);
}
