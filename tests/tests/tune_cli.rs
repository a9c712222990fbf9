//! `slicecache-operator tune` against a real Prometheus scraping a real
//! agent: the signals the tuner reads come back through PromQL, under the
//! labels Kubernetes service discovery would attach to an agent pod.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use slicecache_api::units::ByteSize;
use slicecache_e2e::{install::operator_binary, Agent, Prometheus, Target};
use slicecache_operator::tuner::Tunables;
use slicecache_testkit::client::HttpClient;
use slicecache_testkit::origin::{pattern, OriginObject, TestOrigin};

const OBJECTS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_reads_a_real_prometheus_scraping_a_real_agent() {
    let dir = tempfile::tempdir().unwrap();
    let origin = TestOrigin::start().await.unwrap();
    for i in 0..OBJECTS {
        let mut object = OriginObject::new(pattern(4 << 20, i), "v1");
        object.cache_control = Some("max-age=3600".into());
        origin.state.put(&format!("/obj/{i}"), object);
    }
    let start = Tunables {
        slice_size: 256 << 10,
        concurrency: 4,
    };
    let agent = Agent::start(dir.path(), "agent", &origin.url(), ByteSize::mib(64), start).await;

    // The labels Kubernetes service discovery would attach to an agent pod:
    // of a DaemonSet (cache), and of a Deployment (deploy; the same agent).
    let targets = [
        Target::new(agent.admin)
            .label("namespace", "e2e")
            .label("pod", "cache-agent-x7k2p"),
        Target::new(agent.admin)
            .label("namespace", "e2e")
            .label("pod", "deploy-agent-7d9f8b6c5d-q4m2z"),
    ];
    let prometheus = Prometheus::start(dir.path(), "agents", &targets).await;
    let prometheus_url = prometheus.url.clone();
    let operator = operator_binary();
    let tune = |name: &str| {
        let out = Command::new(&operator)
            .args([
                "tune",
                "--prometheus",
                &prometheus_url,
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
    let mut client = HttpClient::new(agent.listen);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0u64;
    let output = loop {
        for _ in 0..4 {
            n += 1;
            let path = format!("/obj/{}", (n / 2) % OBJECTS);
            let resp = client.get(&path, &[("Range", "bytes=100000-299999")]).await.unwrap();
            assert_eq!(resp.status, 206, "{path}");
            assert!(resp.body == pattern(4 << 20, (n / 2) % OBJECTS).slice(100_000..300_000));
        }
        let out = tune("cache");
        let has = |name: &str| {
            out.lines()
                .any(|l| l.trim_start().starts_with(name) && !l.ends_with("n/a"))
        };
        // Every signal asserted below: under load, Prometheus may have some
        // series for two scrapes (what `rate` needs) before others.
        if [
            "hitRatio",
            "originAmplification",
            "originTtfbP90Seconds",
            "originThrottleRatio",
            "sliceSizeBytes",
        ]
        .iter()
        .all(|s| has(s))
        {
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
}
