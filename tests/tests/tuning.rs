//! Autotuning end to end: the operator's real tuner (Prometheus client,
//! PromQL queries, control law) steering two real `slicecache-agent`
//! processes through a real Prometheus server, in front of a real TCP
//! origin with latency and a rate limit.
//!
//! Kubernetes is the one part missing: in mode Auto the operator writes
//! each decision into the agents' ConfigMap, which the kubelet swaps into
//! the agents' pods, and the agents hot-reload it. Here the test applies
//! each decision by rewriting both agents' config files the same way
//! (atomically), then waits until both agents' own gauges show the new
//! tunables. Everything else is what runs in a cluster.
//!
//! Intervals are shortened (3 s, with the same rate window and a 1 s scrape
//! interval) and the cooldown is one interval; the law otherwise runs with
//! the operator's defaults, including confirmation over two intervals.
//!
//! Scenarios, each judged by the agents' own counters:
//! 1. small random reads through slices that are far too large: the tuner
//!    lowers the slice size (by as many powers of two at once as the
//!    amplification asks for) until origin amplification is low;
//! 2. large sequential downloads at concurrency 1 from an origin 20 ms
//!    away: the tuner raises concurrency (the responses' fetch windows,
//!    which grow by themselves, already run well beyond one slice per
//!    round trip at concurrency 1, and the raise costs nothing);
//! 3. the origin starts answering 429 beyond a number of requests in
//!    flight: concurrency backs off within two intervals.

#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use rand::SeedableRng;
use slicecache_api::units::ByteSize;
use slicecache_e2e::{
    poll, prometheus_client,
    tuning::{law, mib_s, put_objects, random_range_read, show, size, BIG_OBJECTS, INTERVAL, KI, MI},
    Agent, Counters, Delta, Prometheus, Target,
};
use slicecache_operator::tuner::{
    self, signals, Bounds, PrometheusClient, Queries, Selector, Signals, Tunables, Tuner, TuningDecision,
};
use slicecache_testkit::{
    client::{ClientResponse, HttpClient},
    origin::TestOrigin,
};

const JOB: &str = "slicecache-e2e";

// Scenario 1 reads 16-64 KiB at random from the range objects of
// `put_objects` (against 64 MiB of memory cache per agent: nearly every read
// misses); scenarios 2 and 3 download its 16 MiB objects, each a new one.
const ORIGIN_LATENCY_MS: u64 = 20;
/// Download clients per agent in scenarios 2 and 3.
const DOWNLOADERS_PER_AGENT: u32 = 2;

/// What a workload did, counted by the clients themselves.
#[derive(Debug, Default)]
struct WorkStats {
    responses: AtomicU64,
    bytes: AtomicU64,
    /// Transport errors and unexpected statuses.
    errors: AtomicU64,
    /// Responses with the right status and the wrong bytes.
    wrong: AtomicU64,
}

impl WorkStats {
    /// Counts one response against the status and bytes it should have;
    /// after an error, pauses briefly so a failing agent is not hammered.
    async fn record(&self, got: std::io::Result<ClientResponse>, status: u16, want: &[u8]) {
        match got {
            Ok(resp) if resp.status == status => {
                self.responses.fetch_add(1, Ordering::Relaxed);
                if resp.body[..] == *want {
                    self.bytes.fetch_add(want.len() as u64, Ordering::Relaxed);
                } else {
                    self.wrong.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Client tasks running until stopped; aborted when dropped.
struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stats: Arc<WorkStats>,
}

impl Workload {
    async fn stop(mut self) -> Arc<WorkStats> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
        self.stats.clone()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// `per_agent` clients per agent, each reading 16-64 KiB at random offsets
/// of random objects and checking every byte.
fn random_ranges(agents: &[Agent], per_agent: usize, body: Bytes) -> Workload {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(WorkStats::default());
    let mut tasks = Vec::new();
    for (a, agent) in agents.iter().enumerate() {
        for i in 0..per_agent {
            let (stop, stats, body) = (stop.clone(), stats.clone(), body.clone());
            let mut client = HttpClient::new(agent.listen);
            let mut rng = rand::rngs::StdRng::seed_from_u64((a * 100 + i) as u64 + 1);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (path, range, first, last) = random_range_read(&mut rng);
                    let got = client.get(&path, &[("Range", &range)]).await;
                    stats.record(got, 206, &body[first..=last]).await;
                }
            }));
        }
    }
    Workload { stop, tasks, stats }
}

/// `per_agent` clients per agent, each downloading whole objects one after
/// another, every one an object nobody read before, checking every byte.
fn downloads(agents: &[Agent], per_agent: usize, body: Bytes) -> Workload {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(WorkStats::default());
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for agent in agents {
        for _ in 0..per_agent {
            let (stop, stats, body, next) = (stop.clone(), stats.clone(), body.clone(), next.clone());
            let mut client = HttpClient::new(agent.listen);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize % BIG_OBJECTS;
                    let got = client.get(&format!("/big/{n}"), &[]).await;
                    stats.record(got, 200, &body).await;
                }
            }));
        }
    }
    Workload { stop, tasks, stats }
}

/// A period with one set of tunables in force on both agents, and what
/// the agents' counters did meanwhile.
#[derive(Clone, Copy, Debug)]
struct Epoch {
    tunables: Tunables,
    delta: Delta,
}

/// Sums the epochs `pick` selects.
fn total(epochs: &[Epoch], pick: impl Fn(&Tunables) -> bool) -> Delta {
    let mut sum = Delta::default();
    for e in epochs.iter().filter(|e| pick(&e.tunables)) {
        let d = e.delta;
        sum.seconds += d.seconds;
        sum.client_bytes += d.client_bytes;
        sum.origin_bytes += d.origin_bytes;
        sum.slices += d.slices;
        sum.slice_misses += d.slice_misses;
        sum.origin_requests += d.origin_requests;
        sum.origin_429 += d.origin_429;
    }
    sum
}

/// One interval as the tuner saw it.
#[derive(Clone, Debug)]
struct Step {
    decision: TuningDecision,
    signals: Option<Signals>,
}

/// The operator's tuning loop for one SliceCache in mode Auto, with the
/// ConfigMap write replaced by rewriting the agents' config files.
struct AutoLoop {
    prometheus: PrometheusClient,
    queries: Queries,
    agents: Vec<Agent>,
    current: Tunables,
    next_tick: Instant,
    epoch_start: Counters,
    epochs: Vec<Epoch>,
    intervals: u32,
    started: Instant,
}

impl AutoLoop {
    /// Puts `t` in force on every agent (the user edited `spec.slicing`),
    /// starting a fresh record of epochs; the first interval starts now.
    async fn begin(&mut self, t: Tunables) {
        self.apply(t).await;
        self.epochs.clear();
        self.next_tick = Instant::now() + INTERVAL;
    }

    /// Writes `t` into both agents' config files and waits until both
    /// agents report it; a new epoch starts then (the reload itself belongs
    /// to no epoch).
    async fn apply(&mut self, t: Tunables) {
        for agent in &mut self.agents {
            agent.write_tunables(t);
        }
        for agent in &mut self.agents {
            agent.wait_tunables(t, Duration::from_secs(5)).await;
        }
        self.epoch_start = Counters::read(&self.agents).await;
        self.current = t;
    }

    /// Ends the running epoch now (at a scenario's end, or before a change).
    async fn finish_epoch(&mut self) {
        let now = Counters::read(&self.agents).await;
        self.epochs.push(Epoch {
            tunables: self.current,
            delta: now.since(&self.epoch_start),
        });
        self.epoch_start = now;
    }

    /// Waits for the next interval (the workload runs meanwhile), evaluates
    /// once, and applies a change. The next interval starts once a change
    /// is in force on both agents, so its rate window sees the new
    /// tunables only.
    async fn step(&mut self, scenario: &str, tuner: &mut Tuner) -> Step {
        tokio::time::sleep_until(self.next_tick.into()).await;
        for agent in &mut self.agents {
            agent.assert_alive();
        }
        let eval = tuner::evaluate(
            &self.prometheus,
            &self.queries,
            tuner,
            Instant::now(),
            Some(self.current),
        )
        .await;
        self.intervals += 1;
        let d = &eval.decision;
        let m = |k: &str| d.metrics.get(k).map_or("n/a", String::as_str).to_string();
        println!(
            "[{:6.1}s] {scenario} #{:<2} {d}\n           amp {} ttfbShare {} ttfbP90 {} throttle {} req/s {}",
            self.started.elapsed().as_secs_f64(),
            self.intervals,
            m("originAmplification"),
            m("ttfbShare"),
            m("originTtfbP90Seconds"),
            m("originThrottleRatio"),
            m("originRequestsPerSecond"),
        );
        if d.changed() {
            self.finish_epoch().await;
            let to = d.to;
            self.apply(to).await;
        }
        self.next_tick = Instant::now() + INTERVAL;
        Step {
            decision: eval.decision.clone(),
            signals: eval.signals.ok(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuner_steers_two_real_agents_through_a_real_prometheus() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();

    // The origin: one 64 MiB body behind many paths for random reads, one
    // 16 MiB body behind many paths for downloads (shared bytes).
    let origin = TestOrigin::start().await.unwrap();
    let (range_body, big_body) = put_objects(&origin);

    // Scenario 1 starts from slices far too large for the reads.
    let start1 = Tunables {
        slice_size: 8 * MI,
        concurrency: 1,
    };
    let mut agents = Vec::new();
    for name in ["agent-a", "agent-b"] {
        agents.push(Agent::start(dir.path(), name, &origin.url(), ByteSize::mib(64), start1).await);
    }
    let targets: Vec<_> = agents.iter().map(|a| Target::new(a.admin)).collect();
    let mut prometheus = Prometheus::start(dir.path(), JOB, &targets).await;
    let client = prometheus_client(&prometheus);
    let selector = Selector::custom(&format!(r#"job="{JOB}""#));
    let queries = Queries::new(&selector, INTERVAL);
    println!(
        "[{:6.1}s] origin, two agents and Prometheus are up",
        started.elapsed().as_secs_f64()
    );

    // ===== Scenario 1: small random reads, slice size far too large =====
    let work = random_ranges(&agents, 2, range_body.clone());
    // Both agents scraped, and the rates there (a target is queryable a few
    // seconds after the first scrape).
    let up = format!(r#"count(up{{job="{JOB}"}} == 1)"#);
    poll(
        "Prometheus to scrape both agents and see misses",
        Duration::from_secs(30),
        || {
            let (client, queries, up) = (&client, &queries, &up);
            async move {
                let targets = client.query_value(up).await.ok().flatten()?;
                let s = signals::collect(client, queries).await.ok()?;
                (targets == 2.0 && s.amplification.is_some() && s.slice_size == Some(8 * MI)).then_some(())
            }
        },
    )
    .await;
    prometheus.assert_alive();

    let mut auto = AutoLoop {
        prometheus: client.clone(),
        queries,
        current: start1,
        next_tick: Instant::now(),
        epoch_start: Counters::read(&agents).await,
        agents,
        epochs: Vec::new(),
        intervals: 0,
        started,
    };
    auto.begin(start1).await;
    let mut tuner1 = Tuner::new(law(), Bounds::default());
    let mut slice_path = vec![start1.slice_size];
    let mut unchanged = 0;
    let first_interval = auto.intervals;
    let mut last_signals = None;
    for _ in 0..26 {
        let step = auto.step("ranges", &mut tuner1).await;
        last_signals = step.signals.clone();
        if step.decision.to.slice_size != step.decision.from.slice_size {
            let (from, to) = (step.decision.from.slice_size, step.decision.to.slice_size);
            assert!(
                to < from && to.is_power_of_two(),
                "slice size moves down by powers of two here: {}",
                step.decision
            );
            slice_path.push(step.decision.to.slice_size);
            unchanged = 0;
        } else {
            unchanged += 1;
        }
        // Two intervals without a slice change after one: the law no longer
        // wants one (it would have confirmed it by now).
        if slice_path.len() > 1 && unchanged >= 2 {
            break;
        }
    }
    auto.finish_epoch().await;
    let intervals1 = auto.intervals - first_interval;
    let stats1 = work.stop().await;
    let final_slice = auto.current.slice_size;
    let before = total(&auto.epochs, |t| t.slice_size == start1.slice_size);
    let after = total(&auto.epochs, |t| t.slice_size == final_slice);
    let amp_before = before.amplification().unwrap();
    let amp_after = after.amplification().unwrap();
    let path1: Vec<String> = slice_path.iter().map(|s| size(*s)).collect();
    println!(
        "scenario 1: slice path {} in {intervals1} intervals; amplification {amp_before:.1} at {} ({:.0}s) -> \
         {amp_after:.2} at {} ({:.0}s); per epoch: {}; client reads {} ok, {} errors, {} wrong",
        path1.join(" -> "),
        show(start1),
        before.seconds,
        show(auto.current),
        after.seconds,
        auto.epochs
            .iter()
            .map(|e| format!(
                "{} amp {:.2}",
                show(e.tunables),
                e.delta.amplification().unwrap_or(f64::NAN)
            ))
            .collect::<Vec<_>>()
            .join(", "),
        stats1.responses.load(Ordering::Relaxed),
        stats1.errors.load(Ordering::Relaxed),
        stats1.wrong.load(Ordering::Relaxed),
    );
    assert_eq!(
        stats1.wrong.load(Ordering::Relaxed),
        0,
        "a range read returned wrong bytes"
    );
    assert_eq!(stats1.errors.load(Ordering::Relaxed), 0, "range reads failed");
    assert!(
        amp_before > 20.0,
        "8Mi slices for 16-64 KiB reads should amplify a lot: {amp_before:.2}"
    );
    assert!(
        final_slice <= 256 * KI,
        "the tuner should have lowered the slice size to 256Ki or less: path {path1:?}"
    );
    assert!(
        amp_after <= 4.0 && amp_after * 10.0 < amp_before,
        "amplification should fall from {amp_before:.2} to 4 or less, got {amp_after:.2}"
    );
    // Prometheus saw the agents' gauges at the final slice size, too.
    let seen = last_signals.expect("signals in the last interval");
    assert_eq!(seen.slice_size, Some(final_slice), "{seen:?}");

    // ===== Scenario 2: large downloads, concurrency far too low =====
    // The user pins slice size (bounds 256Ki..256Ki) so that concurrency is
    // the knob under test: with TTFB ~95% of each 256Ki fetch the law would
    // otherwise double the slice size first, which also helps, but is
    // scenario 1's knob. Concurrency may grow to 8.
    origin.state.latency_ms.store(ORIGIN_LATENCY_MS, Ordering::Relaxed);
    let start2 = Tunables {
        slice_size: 256 * KI,
        concurrency: 1,
    };
    auto.begin(start2).await;
    let work = downloads(&auto.agents, DOWNLOADERS_PER_AGENT as usize, big_body.clone());
    let bounds2 = Bounds {
        min_slice_size: 256 * KI,
        max_slice_size: 256 * KI,
        min_concurrency: 1,
        max_concurrency: 8,
    };
    let mut tuner2 = Tuner::new(law(), bounds2);
    let mut concurrency_path = vec![start2.concurrency];
    let first_interval = auto.intervals;
    let mut unchanged = 0;
    for _ in 0..24 {
        let step = auto.step("downloads", &mut tuner2).await;
        let d = &step.decision;
        assert_eq!(d.to.slice_size, 256 * KI, "{d}");
        // The origin is healthy: a step back may only come from the delay
        // signals (TTFB, queue wait) on a busy machine, never from 429s or
        // errors.
        if d.to.concurrency < d.from.concurrency {
            assert!(d.reason.contains("TTFB") || d.reason.contains("queue wait"), "{d}");
        }
        if d.changed() {
            concurrency_path.push(d.to.concurrency);
            unchanged = 0;
        } else {
            unchanged += 1;
        }
        // At the bound after one full interval measured there, or the law
        // holds (a change would be confirmed within two intervals).
        let at_max = auto.current.concurrency == bounds2.max_concurrency;
        if (at_max && unchanged >= 1) || unchanged >= 3 {
            break;
        }
    }
    auto.finish_epoch().await;
    let intervals2 = auto.intervals - first_interval;
    let errors2 = work.stats.errors.load(Ordering::Relaxed);
    let low = total(&auto.epochs, |t| t.concurrency == 1);
    let top_concurrency = auto.current.concurrency;
    let high = total(&auto.epochs, |t| t.concurrency == top_concurrency);
    println!(
        "scenario 2: concurrency path {:?} in {intervals2} intervals; client throughput {} at c1 ({:.0}s) -> {} at \
         c{top_concurrency} ({:.0}s); per epoch: {}; downloads {} ok, {} errors, {} wrong",
        concurrency_path,
        mib_s(low.client_throughput()),
        low.seconds,
        mib_s(high.client_throughput()),
        high.seconds,
        auto.epochs
            .iter()
            .map(|e| format!("c{} {}", e.tunables.concurrency, mib_s(e.delta.client_throughput())))
            .collect::<Vec<_>>()
            .join(", "),
        work.stats.responses.load(Ordering::Relaxed),
        work.stats.errors.load(Ordering::Relaxed),
        work.stats.wrong.load(Ordering::Relaxed),
    );
    assert_eq!(errors2, 0, "downloads failed against a healthy origin");
    assert_eq!(
        work.stats.wrong.load(Ordering::Relaxed),
        0,
        "a download returned wrong bytes"
    );
    // The raise is what this scenario is about; a later step back on a delay
    // signal (allowed above: the whole suite shares this machine) does not
    // undo it.
    let highest = concurrency_path.iter().copied().max().unwrap_or(0);
    assert!(
        highest >= 4,
        "the tuner should have raised concurrency to 4 or more: {concurrency_path:?}"
    );
    // One slice per round trip per download is what concurrency 1 gave
    // before each response's fetch window grew by itself; now the window
    // does that at any concurrency, and the tuner's raise must not cost.
    let downloads_at_once = 2.0 * f64::from(DOWNLOADERS_PER_AGENT);
    let slice_per_round_trip = downloads_at_once * (256 * KI) as f64 / (ORIGIN_LATENCY_MS as f64 / 1000.0);
    assert!(
        low.client_throughput() > 2.5 * slice_per_round_trip,
        "at concurrency 1 the fetch windows should go well beyond one slice per round trip ({}): {}",
        mib_s(slice_per_round_trip),
        mib_s(low.client_throughput())
    );
    assert!(
        high.client_throughput() > 0.8 * low.client_throughput(),
        "raising concurrency to {top_concurrency} should not cost throughput: {} -> {}",
        mib_s(low.client_throughput()),
        mib_s(high.client_throughput())
    );

    // ===== Scenario 3: the origin starts answering 429 =====
    // Downloads keep running; the tuner keeps its history from scenario 2.
    // The limit lets through a third of what the downloads now keep in
    // flight (4 clients x concurrency 8 = 32 -> 10). It starts right after
    // an evaluation, so the next rate window is all throttled.
    let before429 = auto.current;
    let limit = (2 * DOWNLOADERS_PER_AGENT * before429.concurrency / 3).max(1);
    auto.epochs.clear();
    origin.state.max_in_flight.store(limit, Ordering::Relaxed);
    let limited_at = Counters::read(&auto.agents).await;
    auto.epoch_start = limited_at;
    let first_interval = auto.intervals;
    let mut backed_off_after = None;
    let mut path3 = vec![before429.concurrency];
    for i in 1..=6u32 {
        let step = auto.step("429", &mut tuner2).await;
        if step.decision.changed() {
            path3.push(step.decision.to.concurrency);
        }
        if backed_off_after.is_none() && step.decision.to.concurrency < before429.concurrency {
            assert!(step.decision.reason.contains("429"), "{}", step.decision);
            backed_off_after = Some(i);
        }
        if backed_off_after.is_none() && i >= 2 {
            break;
        }
    }
    auto.finish_epoch().await;
    let stats2 = work.stop().await;
    let intervals3 = auto.intervals - first_interval;
    let throttled = Counters::read(&auto.agents).await.since(&limited_at);
    println!(
        "scenario 3: origin limit {limit} in flight; concurrency path {path3:?} in {intervals3} intervals, backed \
         off after {backed_off_after:?}; \
         per epoch: {}; origin 429s {} of {} subrequests; downloads so far {} ok, {} errors, {} wrong",
        auto.epochs
            .iter()
            .map(|e| format!(
                "c{} 429 {:.1}% {}",
                e.tunables.concurrency,
                e.delta.throttle_ratio() * 100.0,
                mib_s(e.delta.client_throughput())
            ))
            .collect::<Vec<_>>()
            .join(", "),
        throttled.origin_429,
        throttled.origin_requests,
        stats2.responses.load(Ordering::Relaxed),
        stats2.errors.load(Ordering::Relaxed),
        stats2.wrong.load(Ordering::Relaxed),
    );
    assert!(throttled.origin_429 > 0.0, "the agents counted no 429s");
    let after = backed_off_after.unwrap_or_else(|| panic!("no back-off within two intervals: {path3:?}"));
    assert!(after <= 2, "backed off only after {after} intervals");
    assert!(auto.current.concurrency < before429.concurrency);
    let first = auto.epochs.first().unwrap();
    let last = auto.epochs.last().unwrap();
    assert!(
        last.delta.throttle_ratio() < first.delta.throttle_ratio(),
        "backing off should lower the 429 share: {:.3} at c{} -> {:.3} at c{}",
        first.delta.throttle_ratio(),
        first.tunables.concurrency,
        last.delta.throttle_ratio(),
        last.tunables.concurrency
    );
    assert_eq!(
        stats2.wrong.load(Ordering::Relaxed),
        0,
        "a download returned wrong bytes"
    );

    println!(
        "total: {} intervals, {:.0}s",
        auto.intervals,
        started.elapsed().as_secs_f64()
    );
    prometheus.assert_alive();
}
