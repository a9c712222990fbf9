//! Tuner sweep: for a few workload shapes, the best static slice size and
//! concurrency, found by measuring a grid of settings, next to where the
//! operator's tuner converges from a poor start and from the agent's
//! defaults, how many intervals it takes, and the throughput there. `docs/tuning.md` shows its table.
//!
//! A benchmark, not a test: `bench/tuning-sweep.sh` builds it in release and
//! runs it. The parts are the end-to-end tests' (see `tests/tuning.rs`):
//! two real `slicecache-agent` processes in front of the demo origin over
//! TCP, a real Prometheus scraping them every second, and the operator's
//! tuner library (queries, law) with 3 s intervals and a one-interval
//! cooldown. A decision is applied by rewriting both agents' config files,
//! as the test does in place of the ConfigMap.
//!
//! Every setting, static or where the tuner stopped, is measured the same
//! way: put in force on both agents, a warm-up, then a fixed window.
//! Throughput is bytes of response bodies the clients checked byte for
//! byte, per second; a response that straddles a window edge counts for
//! the share of its duration inside the window. Origin amplification is
//! the tuner's own definition, from the agents' counters. Each setting is
//! measured in two passes (the second over the grid in reverse order) and
//! reported as their mean, with the spread between passes: on a small,
//! shared machine that spread is the noise every comparison sits in.
//!
//! The markdown report goes to stdout, progress to stderr. Environment:
//! `SWEEP_WARMUP` and `SWEEP_MEASURE` (seconds, 2 and 4), `SWEEP_PASSES`
//! (measurements of each setting, 2),
//! `SWEEP_MAX_INTERVALS` (tuner intervals before giving up, 20),
//! `SWEEP_WORKLOADS` (comma-separated names, default all).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use rand::SeedableRng;
use slicecache_api::units::ByteSize;
use slicecache_e2e::{
    poll, prometheus_client,
    tuning::{law, mib_s, put_objects, random_range_read, show, size, BIG_OBJECTS, INTERVAL, KI, MI},
    Agent, Counters, Prometheus, Target,
};
use slicecache_operator::tuner::{
    self, signals, Bounds, HoldReason, PrometheusClient, Queries, Selector, Tunables, Tuner,
};
use slicecache_testkit::{client::HttpClient, origin::TestOrigin};

const JOB: &str = "slicecache-sweep";
/// Memory tier of each agent: far below every working set here.
const MEMORY: ByteSize = ByteSize::mib(64);

/// One workload shape, its grid, and where the tuner starts.
#[derive(Clone, Debug)]
struct Shape {
    name: &'static str,
    what: &'static str,
    origin_latency_ms: u64,
    range_readers_per_agent: usize,
    downloaders_per_agent: usize,
    slices: &'static [u64],
    concurrencies: &'static [u32],
    /// A deliberately poor setting the tuner starts from; it also starts
    /// from the agent's defaults ([`DEFAULTS`]).
    start: Tunables,
}

/// The agent's own defaults: where a fresh install starts.
const DEFAULTS: Tunables = Tunables {
    slice_size: MI,
    concurrency: 4,
};

fn shapes() -> Vec<Shape> {
    vec![
        Shape {
            name: "ranges",
            what: "random 16-64 KiB reads over 16 GiB (2 readers per agent), origin without added latency",
            origin_latency_ms: 0,
            range_readers_per_agent: 2,
            downloaders_per_agent: 0,
            slices: &[64 * KI, 128 * KI, 256 * KI, 512 * KI, MI, 8 * MI],
            concurrencies: &[1, 4],
            start: Tunables {
                slice_size: 8 * MI,
                concurrency: 1,
            },
        },
        Shape {
            name: "downloads",
            what: "whole 16 MiB objects, every one a miss (2 downloaders per agent), origin 20 ms away",
            origin_latency_ms: 20,
            range_readers_per_agent: 0,
            downloaders_per_agent: 2,
            slices: &[256 * KI, MI, 4 * MI, 16 * MI],
            concurrencies: &[1, 2, 4, 8],
            start: Tunables {
                slice_size: 256 * KI,
                concurrency: 1,
            },
        },
        Shape {
            name: "mixed",
            what: "per agent 2 random-range readers and 1 downloader as above, origin 10 ms away",
            origin_latency_ms: 10,
            range_readers_per_agent: 2,
            downloaders_per_agent: 1,
            slices: &[64 * KI, 256 * KI, MI, 4 * MI, 8 * MI],
            concurrencies: &[1, 4],
            start: Tunables {
                slice_size: 8 * MI,
                concurrency: 1,
            },
        },
    ]
}

// === impl Meter ===

/// One checked response: when it started and ended (ns since the meter's
/// base) and its body bytes.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u64,
    end: u64,
    bytes: u64,
}

/// What the clients did, kept per response so that any window can be
/// measured after the fact.
#[derive(Debug)]
struct Meter {
    base: Instant,
    spans: Mutex<Vec<Span>>,
    /// Per client: 1 + start (ns) of the request in flight, 0 when idle.
    busy: Vec<AtomicU64>,
    /// Transport errors and unexpected statuses.
    errors: AtomicU64,
    /// Right status, wrong bytes.
    wrong: AtomicU64,
}

impl Meter {
    fn new(clients: usize) -> Self {
        Self {
            base: Instant::now(),
            spans: Mutex::new(Vec::new()),
            busy: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            errors: AtomicU64::new(0),
            wrong: AtomicU64::new(0),
        }
    }

    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }

    fn begin(&self, client: usize) -> u64 {
        let start = self.ns(Instant::now());
        self.busy[client].store(start + 1, Ordering::Relaxed);
        start
    }

    /// Ends client `client`'s request started at `start`; `ok` bytes when
    /// the status and every byte were right.
    fn end(&self, client: usize, start: u64, ok: Option<u64>) {
        if let Some(bytes) = ok {
            let end = self.ns(Instant::now());
            self.spans
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Span { start, end, bytes });
        }
        self.busy[client].store(0, Ordering::Relaxed);
    }

    /// Waits until no request that started before `t` is still running, so
    /// that every response overlapping a window ending at `t` is in.
    async fn wait_past(&self, t: Instant) {
        let t = self.ns(t);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.busy.iter().any(|b| {
            let v = b.load(Ordering::Relaxed);
            v != 0 && v - 1 < t
        }) {
            if Instant::now() > deadline {
                eprintln!("warning: a request is still running 60 s after a window ended");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Checked body bytes inside `[t0, t1]`, each response spread evenly
    /// over its duration; forgets responses that ended before `t1`.
    fn bytes_in(&self, t0: Instant, t1: Instant) -> f64 {
        let (t0, t1) = (self.ns(t0), self.ns(t1));
        let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        let mut sum = 0.0;
        for s in spans.iter() {
            if s.end <= s.start {
                if (t0..=t1).contains(&s.end) {
                    sum += s.bytes as f64;
                }
                continue;
            }
            let overlap = s.end.min(t1).saturating_sub(s.start.max(t0));
            sum += s.bytes as f64 * overlap as f64 / (s.end - s.start) as f64;
        }
        spans.retain(|s| s.end > t1);
        sum
    }
}

// === impl Workload ===

/// Client tasks running until stopped; aborted when dropped.
#[derive(Debug)]
struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    meter: Arc<Meter>,
}

impl Workload {
    fn start(shape: &Shape, agents: &[Agent], range_body: &Bytes, big_body: &Bytes) -> Self {
        let per_agent = shape.range_readers_per_agent + shape.downloaders_per_agent;
        let meter = Arc::new(Meter::new(per_agent * agents.len()));
        let stop = Arc::new(AtomicBool::new(false));
        let next_download = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for (a, agent) in agents.iter().enumerate() {
            for i in 0..per_agent {
                let client_id = a * per_agent + i;
                let (stop, meter) = (stop.clone(), meter.clone());
                let client = HttpClient::new(agent.listen);
                tasks.push(if i < shape.range_readers_per_agent {
                    let rng = rand::rngs::StdRng::seed_from_u64(client_id as u64 + 1);
                    tokio::spawn(read_ranges(client, client_id, rng, range_body.clone(), stop, meter))
                } else {
                    tokio::spawn(download(
                        client,
                        client_id,
                        next_download.clone(),
                        big_body.clone(),
                        stop,
                        meter,
                    ))
                });
            }
        }
        Self { stop, tasks, meter }
    }

    async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// After an error, pause briefly so a failing agent is not hammered.
async fn failed(meter: &Meter) {
    meter.errors.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Reads 16-64 KiB at random offsets of random objects, checking every byte.
async fn read_ranges(
    mut client: HttpClient,
    id: usize,
    mut rng: rand::rngs::StdRng,
    body: Bytes,
    stop: Arc<AtomicBool>,
    meter: Arc<Meter>,
) {
    while !stop.load(Ordering::Relaxed) {
        let (path, range, first, last) = random_range_read(&mut rng);
        let start = meter.begin(id);
        match client.get(&path, &[("Range", &range)]).await {
            Ok(resp) if resp.status == 206 => {
                let right = resp.body[..] == body[first..=last];
                if !right {
                    meter.wrong.fetch_add(1, Ordering::Relaxed);
                }
                meter.end(id, start, right.then_some((last + 1 - first) as u64));
            }
            _ => {
                meter.end(id, start, None);
                failed(&meter).await;
            }
        }
    }
}

/// Downloads whole objects one after another, each one nobody read before
/// (the shared counter wraps long after the memory tier has forgotten it).
async fn download(
    mut client: HttpClient,
    id: usize,
    next: Arc<AtomicU64>,
    body: Bytes,
    stop: Arc<AtomicBool>,
    meter: Arc<Meter>,
) {
    while !stop.load(Ordering::Relaxed) {
        let n = next.fetch_add(1, Ordering::Relaxed) as usize % BIG_OBJECTS;
        let start = meter.begin(id);
        match client.get(&format!("/big/{n}"), &[]).await {
            Ok(resp) if resp.status == 200 => {
                let right = resp.body == body;
                if !right {
                    meter.wrong.fetch_add(1, Ordering::Relaxed);
                }
                meter.end(id, start, right.then_some(body.len() as u64));
            }
            _ => {
                meter.end(id, start, None);
                failed(&meter).await;
            }
        }
    }
}

// === impl Bench ===

/// One setting measured.
#[derive(Clone, Copy, Debug)]
struct Point {
    tunables: Tunables,
    /// Checked client bytes per second.
    throughput: f64,
    amplification: Option<f64>,
    errors: u64,
}

/// The tuner's run from a start.
#[derive(Clone, Debug)]
struct TunerRun {
    start: Tunables,
    /// The interval at which each change took effect, and the tunables then.
    path: Vec<(u32, Tunables)>,
    /// Intervals evaluated.
    evaluated: u32,
    /// True when the last two intervals or more changed nothing.
    settled: bool,
    /// Where it stopped, measured like a static point.
    at_end: Point,
}

impl TunerRun {
    fn end(&self) -> Tunables {
        self.path.last().map_or(self.start, |(_, t)| *t)
    }

    /// The interval of the last change; 0 when nothing changed.
    fn last_change(&self) -> u32 {
        self.path.last().map_or(0, |(i, _)| *i)
    }
}

#[derive(Debug)]
struct Bench {
    agents: Vec<Agent>,
    prometheus: Prometheus,
    client: PrometheusClient,
    queries: Queries,
    warmup: Duration,
    measure: Duration,
    max_intervals: u32,
    started: Instant,
}

impl Bench {
    fn log(&self, msg: impl std::fmt::Display) {
        eprintln!("[{:6.1}s] {msg}", self.started.elapsed().as_secs_f64());
    }

    /// Puts `t` in force on both agents and waits until both report it.
    async fn apply(&mut self, t: Tunables) {
        for agent in &mut self.agents {
            agent.write_tunables(t);
        }
        for agent in &mut self.agents {
            agent.wait_tunables(t, Duration::from_secs(10)).await;
        }
    }

    /// The tunables in force, measured: warm-up, then one window.
    async fn measure_current(&mut self, t: Tunables, meter: &Meter) -> Point {
        tokio::time::sleep(self.warmup).await;
        let errors0 = meter.errors.load(Ordering::Relaxed);
        let (c0, t0) = (Counters::read(&self.agents).await, Instant::now());
        tokio::time::sleep(self.measure).await;
        let (c1, t1) = (Counters::read(&self.agents).await, Instant::now());
        meter.wait_past(t1).await;
        let bytes = meter.bytes_in(t0, t1);
        let point = Point {
            tunables: t,
            throughput: bytes / t1.duration_since(t0).as_secs_f64(),
            amplification: c1.since(&c0).amplification(),
            errors: meter.errors.load(Ordering::Relaxed) - errors0,
        };
        for agent in &mut self.agents {
            agent.assert_alive();
        }
        self.log(format_args!(
            "{}: {} amplification {}{}",
            show(t),
            mib_s(point.throughput),
            amp(point.amplification),
            if point.errors > 0 {
                format!(", {} errors", point.errors)
            } else {
                String::new()
            }
        ));
        point
    }

    async fn measure(&mut self, t: Tunables, meter: &Meter) -> Point {
        self.apply(t).await;
        self.measure_current(t, meter).await
    }

    /// The operator's loop in mode Auto from `start`, until the tuner holds
    /// (two holds in a row with nothing wanted, or three of any kind) or
    /// `max_intervals` have passed; then measures where it stopped. While
    /// the origin looks healthy the law keeps probing concurrency upwards,
    /// one step per two intervals, so the cap may end a run that has not
    /// come to rest.
    async fn run_tuner(&mut self, name: &str, start: Tunables, meter: &Meter) -> TunerRun {
        self.apply(start).await;
        // Prometheus has scraped the start setting on both agents, with
        // origin traffic under it, before the first interval begins.
        let (client, queries) = (self.client.clone(), self.queries.clone());
        poll(
            "Prometheus to see the start setting with origin traffic",
            Duration::from_secs(30),
            || {
                let (client, queries) = (&client, &queries);
                async move {
                    let s = signals::collect(client, queries).await.ok()?;
                    (s.slice_size == Some(start.slice_size)
                        && s.concurrency == Some(start.concurrency)
                        && s.origin_request_rate.is_some_and(|r| r > 0.0))
                    .then_some(())
                }
            },
        )
        .await;
        let mut tuner = Tuner::new(law(), Bounds::default());
        let mut current = start;
        let mut path = Vec::new();
        let mut holds = 0;
        let mut evaluated = 0;
        let mut next_tick = Instant::now() + INTERVAL;
        for i in 1..=self.max_intervals {
            tokio::time::sleep_until(next_tick.into()).await;
            self.prometheus.assert_alive();
            let eval = tuner::evaluate(&client, &queries, &mut tuner, Instant::now(), Some(current)).await;
            evaluated = i;
            let d = &eval.decision;
            let m = |k: &str| d.metrics.get(k).map_or("n/a", String::as_str).to_string();
            self.log(format_args!(
                "{name} tuner #{i:<2} {d}\n           amp {} ttfbShare {} ttfbP90 {} queueWaitP90 {} req/s {}",
                m("originAmplification"),
                m("ttfbShare"),
                m("originTtfbP90Seconds"),
                m("queueWaitP90Seconds"),
                m("originRequestsPerSecond"),
            ));
            if d.changed() {
                let to = d.to;
                self.apply(to).await;
                current = to;
                path.push((i, to));
                holds = 0;
            } else {
                holds += 1;
            }
            next_tick = Instant::now() + INTERVAL;
            let steady = d.held_because == Some(HoldReason::Steady);
            if holds >= 2 && (steady || holds >= 3) {
                break;
            }
        }
        let settled = holds >= 2;
        let at_end = self.measure_current(current, meter).await;
        TunerRun {
            start,
            path,
            evaluated,
            settled,
            at_end,
        }
    }
}

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
}

fn amp(a: Option<f64>) -> String {
    a.map_or_else(|| "n/a".into(), |a| format!("{a:.2}"))
}

/// Every measurement of one setting.
#[derive(Clone, Debug)]
struct Setting {
    tunables: Tunables,
    samples: Vec<Point>,
}

impl Setting {
    fn throughput(&self) -> f64 {
        self.samples.iter().map(|p| p.throughput).sum::<f64>() / self.samples.len() as f64
    }

    fn amplification(&self) -> Option<f64> {
        let amps: Vec<f64> = self.samples.iter().filter_map(|p| p.amplification).collect();
        (!amps.is_empty()).then(|| amps.iter().sum::<f64>() / amps.len() as f64)
    }

    /// Highest minus lowest throughput over their mean; `None` for one sample.
    fn spread(&self) -> Option<f64> {
        let (lo, hi) = self.samples.iter().fold((f64::MAX, 0.0f64), |(lo, hi), p| {
            (lo.min(p.throughput), hi.max(p.throughput))
        });
        (self.samples.len() > 1).then(|| (hi - lo) / self.throughput())
    }
}

/// One workload's results.
#[derive(Debug)]
struct Outcome {
    shape: Shape,
    /// Every measurement, the grid's and those of the tuner's path.
    points: Vec<Point>,
    /// From the shape's poor start, then from the defaults.
    runs: Vec<TunerRun>,
    errors: u64,
    wrong: u64,
}

impl Outcome {
    fn settings(&self) -> BTreeMap<(u64, u32), Setting> {
        let mut by: BTreeMap<(u64, u32), Setting> = BTreeMap::new();
        for p in &self.points {
            by.entry((p.tunables.slice_size, p.tunables.concurrency))
                .or_insert_with(|| Setting {
                    tunables: p.tunables,
                    samples: Vec::new(),
                })
                .samples
                .push(*p);
        }
        by
    }

    fn setting(&self, t: Tunables) -> Option<Setting> {
        self.settings().remove(&(t.slice_size, t.concurrency))
    }

    fn best(&self) -> Setting {
        self.settings()
            .into_values()
            .max_by(|a, b| a.throughput().total_cmp(&b.throughput()))
            .expect("at least one measured setting")
    }

    /// After which interval of `run` the setting in force was first one
    /// whose throughput is within 10% of the best (interval 0: the start).
    fn within_10_percent(&self, run: &TunerRun) -> String {
        let best = self.best().throughput();
        let mut steps = vec![(0, run.start)];
        steps.extend(run.path.iter().copied());
        for (i, t) in steps {
            match self.setting(t) {
                Some(s) if s.throughput() >= 0.9 * best => return format!("after interval {i}"),
                Some(_) => {}
                None => return format!("unknown: {} was not measured", show(t)),
            }
        }
        "never".into()
    }

    /// Median and largest spread between samples of one setting.
    fn noise(&self) -> Option<(f64, f64)> {
        let mut spreads: Vec<f64> = self.settings().values().filter_map(Setting::spread).collect();
        spreads.sort_by(f64::total_cmp);
        Some((*spreads.get(spreads.len() / 2)?, *spreads.last()?))
    }
}

fn report(outcomes: &[Outcome], warmup: Duration, measure: Duration, passes: u32, max_intervals: u32) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Each setting: {}s warm-up, then {}s measured, in {passes} passes over the grid (the second in \
         reverse order); a throughput is the mean of a setting's measurements. Tuner: operator law \
         defaults with {}s intervals and rate windows, 1s scrapes, confirmation over 2 intervals, \
         cooldown 1 interval, bounds 64Ki-64Mi and 1-64, at most {max_intervals} intervals. Two agents \
         with {} of memory each.\n",
        warmup.as_secs(),
        measure.as_secs(),
        INTERVAL.as_secs(),
        size(MEMORY.bytes()),
    );
    let _ = writeln!(
        out,
        "| workload | best static | its throughput | tuner start → end | intervals to last change | \
         throughput at end | end / best | first within 10% of best | spread between passes (median, max) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        let best = o.best();
        let noise = o.noise().map_or_else(
            || "n/a".into(),
            |(median, max)| format!("{:.0}%, {:.0}%", median * 100.0, max * 100.0),
        );
        for run in &o.runs {
            let end = o.setting(run.end()).expect("the end setting was measured");
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} → {} | {}{} | {} | {:.2} | {} | {noise} |",
                o.shape.name,
                show(best.tunables),
                mib_s(best.throughput()),
                show(run.start),
                show(run.end()),
                run.last_change(),
                if run.settled {
                    String::new()
                } else {
                    format!(" (still moving at the cap of {})", run.evaluated)
                },
                mib_s(end.throughput()),
                end.throughput() / best.throughput(),
                o.within_10_percent(run),
            );
        }
    }
    for o in outcomes {
        let _ = writeln!(out, "\n**{}**: {}.\n", o.shape.name, o.shape.what);
        let by = o.settings();
        let slices: BTreeSet<u64> = by.keys().map(|(s, _)| *s).collect();
        let concurrencies: BTreeSet<u32> = by.keys().map(|(_, c)| *c).collect();
        let _ = write!(out, "| slice \\ concurrency |");
        for c in &concurrencies {
            let _ = write!(out, " {c} |");
        }
        let _ = write!(out, "\n|---|");
        for _ in &concurrencies {
            let _ = write!(out, "---|");
        }
        out.push('\n');
        for s in &slices {
            let _ = write!(out, "| {} |", size(*s));
            for c in &concurrencies {
                match by.get(&(*s, *c)) {
                    Some(p) => {
                        let _ = write!(out, " {} (amp {}) |", mib_s(p.throughput()), amp(p.amplification()));
                    }
                    None => out.push_str(" |"),
                }
            }
            out.push('\n');
        }
        for run in &o.runs {
            let mut path = vec![format!("{} (start)", show(run.start))];
            path.extend(run.path.iter().map(|(i, t)| format!("{} (#{i})", show(*t))));
            let _ = writeln!(
                out,
                "\nTuner path: {}; {} intervals evaluated, {}. Measured right after the run: {} (amp {}).",
                path.join(" → "),
                run.evaluated,
                if run.settled {
                    "then held"
                } else {
                    "still changing at the cap"
                },
                mib_s(run.at_end.throughput),
                amp(run.at_end.amplification),
            );
        }
        let _ = writeln!(out, "\nClient errors {}, wrong bodies {}.", o.errors, o.wrong);
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let started = Instant::now();
    let warmup = env_secs("SWEEP_WARMUP", 2);
    let measure = env_secs("SWEEP_MEASURE", 4);
    let passes = std::env::var("SWEEP_PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2u32)
        .max(1);
    let max_intervals = std::env::var("SWEEP_MAX_INTERVALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let wanted = std::env::var("SWEEP_WORKLOADS").unwrap_or_default();
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).filter(|w| !w.is_empty()).collect();
    let shapes: Vec<Shape> = shapes()
        .into_iter()
        .filter(|s| wanted.is_empty() || wanted.contains(&s.name))
        .collect();
    assert!(
        !shapes.is_empty(),
        "SWEEP_WORKLOADS names none of ranges, downloads, mixed"
    );

    let dir = tempfile::tempdir().expect("a temporary directory");
    let origin = TestOrigin::start().await.expect("starting the demo origin");
    let (range_body, big_body) = put_objects(&origin);
    let mut agents = Vec::new();
    for name in ["agent-a", "agent-b"] {
        agents.push(Agent::start(dir.path(), name, &origin.url(), MEMORY, shapes[0].start).await);
    }
    let targets: Vec<_> = agents.iter().map(|a| Target::new(a.admin)).collect();
    let prometheus = Prometheus::start(dir.path(), JOB, &targets).await;
    let client = prometheus_client(&prometheus);
    let queries = Queries::new(&Selector::custom(&format!(r#"job="{JOB}""#)), INTERVAL);
    let mut bench = Bench {
        agents,
        prometheus,
        client,
        queries,
        warmup,
        measure,
        max_intervals,
        started,
    };
    bench.log("origin, two agents and Prometheus are up");

    let mut outcomes = Vec::new();
    for shape in shapes {
        origin
            .state
            .latency_ms
            .store(shape.origin_latency_ms, Ordering::Relaxed);
        let work = Workload::start(&shape, &bench.agents, &range_body, &big_body);
        let meter = work.meter.clone();
        bench.log(format_args!("{}: {}", shape.name, shape.what));
        let mut grid = Vec::new();
        for &slice_size in shape.slices {
            for &concurrency in shape.concurrencies {
                grid.push(Tunables {
                    slice_size,
                    concurrency,
                });
            }
        }
        let mut points = Vec::new();
        for pass in 0..passes {
            if pass % 2 == 1 {
                grid.reverse();
            }
            for &t in &grid {
                origin.state.clear_seen();
                points.push(bench.measure(t, &meter).await);
            }
        }
        let mut runs = Vec::new();
        for start in [shape.start, DEFAULTS] {
            origin.state.clear_seen();
            let run = bench.run_tuner(shape.name, start, &meter).await;
            // Every setting the tuner passed through is measured like the
            // grid, so that the table can say when it first came within
            // 10%; the measurement right after the run counts for the end
            // setting.
            points.push(run.at_end);
            for t in std::iter::once(run.start).chain(run.path.iter().map(|(_, t)| *t)) {
                let measured = points.iter().filter(|p| p.tunables == t).count() as u32;
                for _ in measured..passes {
                    origin.state.clear_seen();
                    points.push(bench.measure(t, &meter).await);
                }
            }
            runs.push(run);
        }
        work.stop().await;
        origin.state.clear_seen();
        let (errors, wrong) = (
            meter.errors.load(Ordering::Relaxed),
            meter.wrong.load(Ordering::Relaxed),
        );
        assert_eq!(wrong, 0, "{}: responses with wrong bytes", shape.name);
        outcomes.push(Outcome {
            shape,
            points,
            runs,
            errors,
            wrong,
        });
    }
    bench.prometheus.assert_alive();
    bench.log("done");
    print!("{}", report(&outcomes, warmup, measure, passes, max_intervals));
}
