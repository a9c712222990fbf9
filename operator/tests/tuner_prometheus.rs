//! The tuner against real servers: a Prometheus that is down, slow or
//! empty, and a real Prometheus scraping a real agent, queried through
//! `slicecache-operator tune`.
//!
//! The agent binary is a sibling of this test's target directory: `cargo
//! test --workspace` (scripts/test.sh) builds it before any test runs.

#![allow(clippy::unwrap_used)]

use std::{
    io::Write as _,
    net::{SocketAddr, TcpListener as StdListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use slicecache_operator::tuner::{
    self, Bounds, HoldReason, LawConfig, PrometheusClient, Queries, QueryError, Selector, Tunables, Tuner,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

fn free_addr() -> SocketAddr {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A server that answers every request with `body` (or never, if `None`).
async fn fake_prometheus(body: Option<&'static str>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = sock.read(&mut buf).await;
                match body {
                    Some(body) => {
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(resp.as_bytes()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    addr
}

async fn evaluate_once(url: &str, timeout: Duration) -> tuner::Evaluation {
    let client = PrometheusClient::new(url, timeout).unwrap();
    let queries = Queries::new(&Selector::for_slicecache("ns", "c"), Duration::from_secs(60));
    let mut law = Tuner::new(LawConfig::default(), Bounds::default());
    let current = Tunables {
        slice_size: 1 << 20,
        concurrency: 4,
    };
    tuner::evaluate(&client, &queries, &mut law, Instant::now(), Some(current)).await
}

#[tokio::test]
async fn holds_when_prometheus_is_down_slow_or_empty() {
    // Down: nothing listens.
    let down = format!("http://{}", free_addr());
    let eval = evaluate_once(&down, Duration::from_secs(5)).await;
    assert!(
        matches!(eval.signals, Err(QueryError::Unreachable(_))),
        "{:?}",
        eval.signals
    );
    assert_eq!(eval.decision.held_because, Some(HoldReason::PrometheusUnreachable));
    assert!(!eval.decision.changed());

    // Slow: accepts and never answers.
    let slow = fake_prometheus(None).await;
    let started = Instant::now();
    let eval = evaluate_once(&format!("http://{slow}"), Duration::from_millis(300)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        eval.decision.held_because,
        Some(HoldReason::QueryTimeout),
        "{}",
        eval.decision
    );

    // Empty: a Prometheus that scrapes nothing of ours.
    let empty = fake_prometheus(Some(
        r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
    ))
    .await;
    let eval = evaluate_once(&format!("http://{empty}"), Duration::from_secs(5)).await;
    assert_eq!(
        eval.decision.held_because,
        Some(HoldReason::NoData),
        "{}",
        eval.decision
    );
    assert!(eval.signals.unwrap().is_empty());

    // Not Prometheus at all.
    let other = fake_prometheus(Some("<html>hello</html>")).await;
    let eval = evaluate_once(&format!("http://{other}"), Duration::from_secs(5)).await;
    assert_eq!(
        eval.decision.held_because,
        Some(HoldReason::PrometheusError),
        "{}",
        eval.decision
    );
}

// === a real Prometheus scraping a real agent ===

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent_binary() -> PathBuf {
    // target/debug/deps/tuner_prometheus-HASH -> target/debug/slicecache-agent
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|p| p.parent()).unwrap();
    let agent = dir.join(format!("slicecache-agent{}", std::env::consts::EXE_SUFFIX));
    assert!(
        agent.exists(),
        "{} is missing: build the workspace first (`cargo build -p slicecache-agent`, or run \
         `cargo test --workspace` as scripts/test.sh does)",
        agent.display()
    );
    agent
}

/// A range-capable origin serving one 4 MiB object at every path.
async fn origin() -> SocketAddr {
    const SIZE: u64 = 4 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        buf.drain(..end + 4);
                        let range = head
                            .lines()
                            .find_map(|l| l.strip_prefix("range: bytes="))
                            .and_then(|r| r.split_once('-'))
                            .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok())));
                        let (status, first, last) = match range {
                            Some((a, b)) if a < SIZE => ("206 Partial Content", a, b.unwrap_or(SIZE - 1).min(SIZE - 1)),
                            _ => ("200 OK", 0, SIZE - 1),
                        };
                        let len = last - first + 1;
                        let mut resp = format!(
                            "HTTP/1.1 {status}\r\ncontent-length: {len}\r\naccept-ranges: bytes\r\netag: \"v1\"\r\n\
                             last-modified: Mon, 01 Jan 2024 00:00:00 GMT\r\ncache-control: max-age=3600\r\n"
                        );
                        if status.starts_with("206") {
                            resp.push_str(&format!("content-range: bytes {first}-{last}/{SIZE}\r\n"));
                        }
                        resp.push_str("\r\n");
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                        let body: Vec<u8> = (first..=last).map(|i| (i % 251) as u8).collect();
                        if sock.write_all(&body).await.is_err() {
                            return;
                        }
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// One GET through the agent, read to the end (`connection: close`).
async fn get(agent: SocketAddr, path: &str, range: &str) {
    let Ok(mut sock) = tokio::net::TcpStream::connect(agent).await else {
        return;
    };
    let req = format!("GET {path} HTTP/1.1\r\nhost: cache\r\nrange: bytes={range}\r\nconnection: close\r\n\r\n");
    if sock.write_all(req.as_bytes()).await.is_ok() {
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut sink)).await;
    }
}

async fn wait_ready(url: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let addr = url.trim_start_matches("http://").split('/').next().unwrap().to_string();
    while Instant::now() < deadline {
        if let Ok(mut sock) = tokio::net::TcpStream::connect(&addr).await {
            let path = url.splitn(4, '/').nth(3).unwrap_or("");
            let req = format!("GET /{path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            let mut out = Vec::new();
            if sock.write_all(req.as_bytes()).await.is_ok()
                && sock.read_to_end(&mut out).await.is_ok()
                && out.starts_with(b"HTTP/1.1 200")
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} not ready within {limit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_reads_a_real_prometheus_scraping_a_real_agent() {
    let prometheus_bin =
        which("prometheus").expect("prometheus is not installed (scripts/install-deps.sh installs it)");
    let origin = origin().await;
    let (listen, admin, prom) = (free_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();

    let agent = Kill(
        Command::new(agent_binary())
            .args(["run", "--origin", &format!("http://{origin}")])
            .args(["--listen", &listen.to_string(), "--admin-listen", &admin.to_string()])
            .args(["--memory-cache", "64Mi", "--slice-size", "256Ki", "--concurrency", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("http://{admin}/readyz"), Duration::from_secs(20)).await;

    // The labels Kubernetes service discovery would attach to an agent pod:
    // of a DaemonSet (cache), and of a Deployment (deploy; the same agent).
    let config = dir.path().join("prometheus.yml");
    let mut f = std::fs::File::create(&config).unwrap();
    write!(
        f,
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: agents\n    \
         static_configs:\n      - targets: ['{admin}']\n        labels:\n          namespace: e2e\n          \
         pod: cache-agent-x7k2p\n      - targets: ['{admin}']\n        labels:\n          namespace: e2e\n          \
         pod: deploy-agent-7d9f8b6c5d-q4m2z\n"
    )
    .unwrap();
    drop(f);
    let _prometheus = Kill(
        Command::new(prometheus_bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("http://{prom}/-/ready"), Duration::from_secs(20)).await;

    let tune = |name: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_slicecache-operator"))
            .args([
                "tune",
                "--prometheus",
                &format!("http://{prom}"),
                "--namespace",
                "e2e",
                "--name",
                name,
            ])
            .args(["--window", "10s", "--timeout", "5s"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };

    // Traffic until the rates show up (a 1s scrape makes a target queryable
    // after ~6s): every object is read twice, a miss and then a hit.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0u64;
    let output = loop {
        for _ in 0..4 {
            n += 1;
            get(listen, &format!("/obj/{}", n / 2), "100000-299999").await;
        }
        let out = tune("cache");
        let has = |name: &str| {
            out.lines()
                .any(|l| l.trim_start().starts_with(name) && !l.ends_with("n/a"))
        };
        if has("hitRatio") && has("originAmplification") && has("originTtfbP90Seconds") {
            break out;
        }
        assert!(Instant::now() < deadline, "no signals within 30s:\n{out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let value = |name: &str| -> String {
        output
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("n/a")
            .to_string()
    };
    // The gauges of the agent, read back through Prometheus.
    assert_eq!(value("sliceSizeBytes"), "262144", "{output}");
    assert_eq!(value("concurrency"), "4", "{output}");
    let hit: f64 = value("hitRatio").parse().unwrap();
    assert!((0.0..=1.0).contains(&hit), "{output}");
    let amp: f64 = value("originAmplification").parse().unwrap();
    assert!(amp >= 0.5, "{output}");
    assert_eq!(value("originThrottleRatio"), "0.0000", "{output}");
    assert!(output.contains("\ndecision: "), "{output}");
    assert!(output.contains("\nreason:   "), "{output}");

    // The default selector also finds the pods of a Deployment.
    let deploy = tune("deploy");
    assert!(
        deploy
            .lines()
            .any(|l| l.trim_start().starts_with("sliceSizeBytes") && l.contains("262144")),
        "{deploy}"
    );

    // Another SliceCache's selector matches no series: hold, NoData.
    let other = tune("other");
    assert!(other.contains("decision: hold (NoData)"), "{other}");
    drop(agent);
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}
