//! The control law against a simulated cache and origin.
//!
//! The plant: clients read ranges of `range` bytes (huge for sequential
//! reads), so amplification is `max(1, slice / range)` and a request spans
//! `n = 1 + range / slice` slices. A request keeps `e = min(c, n)`
//! subrequests in flight, and the share `(n - c) / n` of its slices waits
//! for a look-ahead slot. One origin subrequest waits
//! `ttfb0 * max(1, (e / knee)^2)` for its first byte and then moves
//! `bandwidth * min(1, knee / e)` bytes per second: past the knee the
//! origin is saturated. Above `throttle_above` subrequests in flight it
//! answers 5% of them with 429.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use slicecache_operator::tuner::{Bounds, HoldReason, LawConfig, QueryError, Signals, Tunables, Tuner, TuningDecision};

const KI: u64 = 1 << 10;
const MI: u64 = 1 << 20;
const INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
struct Plant {
    range: f64,
    knee: f64,
    ttfb0: f64,
    bandwidth: f64,
    throttle_above: u32,
    noise: f64,
    seed: u64,
}

impl Plant {
    fn sequential() -> Self {
        Self {
            range: 1e12,
            knee: 8.0,
            ttfb0: 0.020,
            bandwidth: 10e6,
            throttle_above: 16,
            noise: 0.0,
            seed: 0x5eed,
        }
    }

    fn random_64k() -> Self {
        Self {
            range: 64.0 * 1024.0,
            ..Self::sequential()
        }
    }

    /// Uniform in [1 - noise, 1 + noise], from a fixed-seed xorshift.
    fn jitter(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let u = (self.seed >> 11) as f64 / (1u64 << 53) as f64;
        1.0 + self.noise * (2.0 * u - 1.0)
    }

    fn signals(&mut self, t: Tunables) -> Signals {
        let c = f64::from(t.concurrency);
        let size = t.slice_size as f64;
        let spans = 1.0 + self.range / size;
        let e = c.min(spans);
        let ttfb = self.ttfb0 * (e / self.knee).powi(2).max(1.0) * self.jitter();
        let per_sub = self.bandwidth * (self.knee / e).min(1.0) * self.jitter();
        let fetch = ttfb + size / per_sub;
        let throttle = if e > f64::from(self.throttle_above) { 0.05 } else { 0.0 };
        Signals {
            hit_ratio: Some(0.5),
            amplification: Some((size / self.range).max(1.0) * self.jitter()),
            origin_ttfb_p50: Some(ttfb * 0.7),
            origin_ttfb_p90: Some(ttfb),
            subrequest_throughput: Some(size / fetch),
            ttfb_share: Some((ttfb / fetch * self.jitter()).min(1.0)),
            slices_per_request: Some(spans * self.jitter()),
            lookahead_wait_ratio: Some(((spans - c) / spans).max(0.0) * self.jitter()),
            queue_wait_p90: Some(0.001 * self.jitter()),
            throttle_ratio: Some(throttle),
            error_ratio: Some(0.0),
            origin_request_rate: Some(100.0 * self.jitter()),
            client_ttfb_p90: Some(ttfb * 2.0),
            slice_size: Some(t.slice_size),
            concurrency: Some(t.concurrency),
        }
    }
}

fn fast_config() -> LawConfig {
    LawConfig {
        cooldown: INTERVAL,
        ..LawConfig::default()
    }
}

/// Runs `intervals` steps, applying every decision; returns the trajectory.
fn run(tuner: &mut Tuner, plant: &mut Plant, start: Tunables, intervals: usize) -> Vec<TuningDecision> {
    let t0 = Instant::now();
    let mut current = start;
    let mut out = Vec::new();
    for i in 0..intervals {
        let now = t0 + INTERVAL * (i as u32 + 1);
        let signals = plant.signals(current);
        let d = tuner.step(now, current, Ok(&signals));
        assert_eq!(d.changed(), d.held_because.is_none(), "{d}");
        if std::env::var_os("TUNER_TRACE").is_some() {
            eprintln!("{i:3} {d}");
        }
        current = d.to;
        out.push(d);
    }
    out
}

/// Index of the first decision after which the tunables never change again.
fn settled_at(trajectory: &[TuningDecision]) -> usize {
    trajectory
        .iter()
        .rposition(TuningDecision::changed)
        .map_or(0, |i| i + 1)
}

fn direction_changes(values: impl Iterator<Item = f64>) -> usize {
    let values: Vec<f64> = values.collect();
    let mut last_dir = 0.0;
    let mut changes = 0;
    for w in values.windows(2) {
        // Not signum: it calls 0.0 positive.
        let d = if w[1] > w[0] {
            1.0
        } else if w[1] < w[0] {
            -1.0
        } else {
            0.0
        };
        if d != 0.0 {
            if last_dir != 0.0 && d != last_dir {
                changes += 1;
            }
            last_dir = d;
        }
    }
    changes
}

fn t(slice_size: u64, concurrency: u32) -> Tunables {
    Tunables {
        slice_size,
        concurrency,
    }
}

#[test]
fn converges_from_too_small_values() {
    let mut tuner = Tuner::new(fast_config(), Bounds::default());
    // 60 intervals: before the hourly re-probe of the ceiling.
    let trajectory = run(&mut tuner, &mut Plant::sequential(), t(64 * KI, 1), 60);
    let last = trajectory.last().unwrap().to;
    // Sequential reads: slices grow until the first byte takes under half of
    // a fetch (256Ki at 10 MB/s and 20 ms), in one step of x4 (TTFB share
    // 75%: the model asks for two doublings), confirmed in the 2nd interval.
    assert_eq!(trajectory[0].held_because, Some(HoldReason::Settling));
    assert_eq!(trajectory[1].to, t(256 * KI, 1), "{}", trajectory[1]);
    // Concurrency doubles (slow start) past the knee of 8, where the TTFB
    // quadruples; it steps back to 3/4 (12), ending slow start, then by one
    // while the TTFB stays above 1.5 times its normal level: at 9 it is
    // 1.27 times.
    assert_eq!(last, t(256 * KI, 9), "{trajectory:#?}");
    let path: Vec<u32> = trajectory
        .iter()
        .filter(|d| d.changed())
        .map(|d| d.to.concurrency)
        .collect();
    assert_eq!(path, [1, 2, 4, 8, 16, 12, 11, 10, 9], "{trajectory:#?}");
    let settled = settled_at(&trajectory);
    assert!(settled <= 18, "settled after {settled} intervals");
}

#[test]
fn converges_from_too_large_values() {
    // 64 KiB random reads through 64Mi slices: amplification 1024 asks for
    // slices 512 times smaller, and gets them in one step, confirmed in the
    // 2nd interval: the largest power of two with amplification at most 3
    // (128Ki gives 2). Concurrency has nothing to do: a request spans 1.5
    // slices, none waits for a look-ahead slot, and the origin sees no more
    // than 1.5 subrequests per request however high concurrency is.
    let mut tuner = Tuner::new(fast_config(), Bounds::default());
    let trajectory = run(&mut tuner, &mut Plant::random_64k(), t(64 * MI, 64), 40);
    assert_eq!(trajectory[1].to, t(128 * KI, 64), "{}", trajectory[1]);
    assert_eq!(settled_at(&trajectory), 2, "{trajectory:#?}");

    // Sequential reads at concurrency 64, far past the knee: the 429s halve
    // it at once, twice; then it finds the knee.
    let mut tuner = Tuner::new(fast_config(), Bounds::default());
    let trajectory = run(&mut tuner, &mut Plant::sequential(), t(256 * KI, 64), 60);
    assert_eq!(trajectory[0].to.concurrency, 32);
    assert_eq!(trajectory[1].to.concurrency, 16);
    let last = trajectory.last().unwrap().to;
    assert!((8..=9).contains(&last.concurrency), "{trajectory:#?}");
    let settled = settled_at(&trajectory);
    assert!(settled <= 30, "settled after {settled} intervals");
}

#[test]
fn no_oscillation_under_noisy_signals() {
    for seed in [1u64, 2, 3, 0xdead_beef] {
        for (plant, start) in [
            (Plant::sequential(), t(64 * KI, 1)),
            (Plant::random_64k(), t(64 * MI, 4)),
        ] {
            let mut plant = Plant {
                noise: 0.15,
                seed,
                ..plant
            };
            let sequential = plant.range > 1e9;
            let mut tuner = Tuner::new(fast_config(), Bounds::default());
            let trajectory = run(&mut tuner, &mut plant, start, 300);
            let slice = direction_changes(trajectory.iter().map(|d| d.to.slice_size as f64));
            assert!(slice <= 1, "seed {seed}: slice size turned {slice} times");
            if !sequential {
                // Random 64 KiB reads span 1.5 slices: concurrency 4 already
                // fetches them all at once, and never moves.
                assert!(trajectory.iter().all(|d| d.to.concurrency == 4), "seed {seed}");
                continue;
            }
            // Concurrency settles next to the knee (8) and stays there: the only
            // moves left are the hourly re-probes of the ceiling and their
            // step back. Plain AIMD would saw between 16 and 8 all along.
            let late = &trajectory[200..];
            for d in late {
                assert!((7..=11).contains(&d.to.concurrency), "seed {seed}: {d}");
            }
            let late_changes = late.iter().filter(|d| d.changed()).count();
            assert!(
                late_changes <= 8,
                "seed {seed}: {late_changes} changes in the last 100 intervals"
            );
        }
    }
}

#[test]
fn bounds_are_respected() {
    let bounds = Bounds {
        min_slice_size: 256 * KI,
        max_slice_size: MI,
        min_concurrency: 2,
        max_concurrency: 6,
    };
    for (plant, start) in [
        (Plant::sequential(), t(256 * KI, 2)),
        (Plant::random_64k(), t(MI, 6)),
        (
            Plant {
                bandwidth: 1e9,
                ..Plant::sequential()
            },
            t(256 * KI, 2),
        ),
    ] {
        let mut tuner = Tuner::new(fast_config(), bounds);
        let mut plant = Plant { noise: 0.1, ..plant };
        for d in run(&mut tuner, &mut plant, start, 100) {
            assert!((256 * KI..=MI).contains(&d.to.slice_size), "{d}");
            assert!((2..=6).contains(&d.to.concurrency), "{d}");
            assert!(d.to.slice_size.is_power_of_two());
        }
    }
    // Values in force outside the bounds move inside at once.
    let mut tuner = Tuner::new(fast_config(), bounds);
    let d = tuner.step(
        Instant::now(),
        t(8 * MI, 32),
        Ok(&Plant::sequential().signals(t(8 * MI, 32))),
    );
    assert_eq!(d.to, t(MI, 6));
}

#[test]
fn fast_back_off_on_429_and_503() {
    let mut tuner = Tuner::new(LawConfig::default(), Bounds::default());
    let mut plant = Plant::sequential();
    let start = Instant::now();
    let current = t(MI, 8);
    // Healthy for a while at the knee: nothing to do, or growth pending.
    let d = tuner.step(start, current, Ok(&plant.signals(current)));
    assert!(!d.changed());
    // The origin starts throttling (5% 429/503): the very next interval halves,
    // although the default 10 minute cooldown has not passed since...
    let mut throttled = plant.signals(current);
    throttled.throttle_ratio = Some(0.05);
    let d = tuner.step(start + INTERVAL, current, Ok(&throttled));
    assert_eq!(d.to, t(MI, 4), "{d}");
    assert!(d.reason.contains("429/503"), "{}", d.reason);
    // ...and still throttled one interval later, right after that change: halve again.
    let d = tuner.step(start + INTERVAL * 2, d.to, Ok(&throttled));
    assert_eq!(d.to, t(MI, 2), "{d}");
    // Throttling gone: growth waits for the cooldown.
    let healthy = plant.signals(t(MI, 2));
    let d = tuner.step(start + INTERVAL * 3, t(MI, 2), Ok(&healthy));
    assert_eq!(d.held_because, Some(HoldReason::Settling));
    let d = tuner.step(start + INTERVAL * 4, t(MI, 2), Ok(&healthy));
    assert_eq!(d.held_because, Some(HoldReason::Cooldown), "{d}");
    let d = tuner.step(start + INTERVAL * 13, t(MI, 2), Ok(&healthy));
    assert_eq!(d.to, t(MI, 3), "{d}");
}

#[test]
fn errors_halve_after_confirmation() {
    let mut tuner = Tuner::new(fast_config(), Bounds::default());
    let mut plant = Plant::sequential();
    let now = Instant::now();
    let mut s = plant.signals(t(MI, 8));
    s.error_ratio = Some(0.2);
    let d = tuner.step(now, t(MI, 8), Ok(&s));
    assert_eq!(d.held_because, Some(HoldReason::Settling), "{d}");
    let d = tuner.step(now + INTERVAL, t(MI, 8), Ok(&s));
    assert_eq!(d.to, t(MI, 4), "{d}");
}

#[test]
fn one_noisy_interval_changes_nothing() {
    let bounds = Bounds {
        max_concurrency: 8,
        ..Bounds::default()
    };
    let mut tuner = Tuner::new(fast_config(), bounds);
    let mut plant = Plant::random_64k();
    let current = t(128 * KI, 8);
    let now = Instant::now();
    let mut spike = plant.signals(current);
    spike.amplification = Some(10.0);
    let d = tuner.step(now, current, Ok(&spike));
    assert_eq!(d.held_because, Some(HoldReason::Settling));
    let normal = plant.signals(current);
    let d = tuner.step(now + INTERVAL, current, Ok(&normal));
    assert!(!d.changed(), "{d}");
    let d = tuner.step(now + INTERVAL * 2, current, Ok(&spike));
    assert!(!d.changed(), "{d}");
    let d = tuner.step(now + INTERVAL * 3, current, Ok(&spike));
    assert_eq!(d.to, t(64 * KI, 8), "{d}");
}

#[test]
fn holds_when_signals_are_missing() {
    let mut tuner = Tuner::new(fast_config(), Bounds::default());
    let current = t(MI, 4);
    let now = Instant::now();
    let cases = [
        (
            Err(QueryError::Unreachable("connection refused".into())),
            HoldReason::PrometheusUnreachable,
        ),
        (
            Err(QueryError::Timeout(Duration::from_secs(10))),
            HoldReason::QueryTimeout,
        ),
        (
            Err(QueryError::Http {
                status: 503,
                message: "down".into(),
            }),
            HoldReason::PrometheusError,
        ),
        (Ok(Signals::default()), HoldReason::NoData),
        (
            Ok(Signals {
                origin_request_rate: Some(0.0),
                throttle_ratio: None,
                ..Plant::sequential().signals(current)
            }),
            HoldReason::Idle,
        ),
    ];
    for (i, (observed, hold)) in cases.iter().enumerate() {
        // Each case twice: a streak of holds never adds up to a change.
        for k in 0..2 {
            let d = tuner.step(now + INTERVAL * (2 * i + k) as u32, current, observed.as_ref());
            assert_eq!(d.to, current);
            assert_eq!(d.held_because, Some(*hold), "{d}");
        }
    }
    // Amplification unknown (no misses): slice size holds, concurrency may move.
    let mut s = Plant::sequential().signals(t(64 * KI, 4));
    s.amplification = None;
    let mut tuner = Tuner::new(fast_config(), Bounds::default());
    let mut current = t(64 * KI, 4);
    for i in 0..10 {
        current = tuner.step(now + INTERVAL * i, current, Ok(&s)).to;
    }
    assert_eq!(current.slice_size, 64 * KI);
    assert!(current.concurrency > 4);
}

#[test]
fn decisions_fill_the_status_record() {
    let mut tuner = Tuner::new(fast_config(), Bounds::default());
    let mut s = Plant::sequential().signals(t(MI, 8));
    s.throttle_ratio = Some(0.031);
    let d = tuner.step(Instant::now(), t(MI, 8), Ok(&s));
    let status = d.to_status(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()));
    assert_eq!(status.from.concurrency, 8);
    assert_eq!(status.to.concurrency, 4);
    assert_eq!(status.reason, "origin 429/503 at 3.10%: concurrency 8 -> 4");
    assert_eq!(
        status.metrics.get("originThrottleRatio").map(String::as_str),
        Some("0.0310")
    );
    assert_eq!(
        status.metrics.get("sliceSizeBytes").map(String::as_str),
        Some("1048576")
    );
}

/// Signals of whole downloads of 16 MiB objects at `slice` and `c`, from an
/// origin 20 ms away that sends 1 GB/s per subrequest.
fn downloads_16m(slice: u64, c: u32) -> Signals {
    let spans = (16.0 * MI as f64 / slice as f64).max(1.0);
    let ttfb = 0.020;
    let fetch = ttfb + slice as f64 / 1e9;
    Signals {
        amplification: Some(1.0),
        ttfb_share: Some(ttfb / fetch),
        slices_per_request: Some(spans),
        lookahead_wait_ratio: Some(((spans - f64::from(c)) / spans).max(0.0)),
        ..Plant::sequential().signals(t(slice, c))
    }
}

#[test]
fn slices_grow_in_large_steps_up_to_the_request_size() {
    let mut tuner = Tuner::new(fast_config(), Bounds::default());
    let t0 = Instant::now();
    // 256Ki: the first byte is 99% of each fetch; the model asks for 7
    // doublings, a step takes at most 4 (x16). Two intervals confirm it.
    let at_256k = downloads_16m(256 * KI, 1);
    let d = tuner.step(t0, t(256 * KI, 1), Ok(&at_256k));
    assert_eq!(d.held_because, Some(HoldReason::Settling), "{d}");
    let d = tuner.step(t0 + INTERVAL, t(256 * KI, 1), Ok(&at_256k));
    assert_eq!(d.to, t(4 * MI, 1), "{d}");
    // 4Mi: 80%; 4 slices per request, so x4 makes a request one slice.
    let at_4m = downloads_16m(4 * MI, 1);
    let d = tuner.step(t0 + INTERVAL * 2, t(4 * MI, 1), Ok(&at_4m));
    assert_eq!(d.held_because, Some(HoldReason::Settling), "{d}");
    let d = tuner.step(t0 + INTERVAL * 3, t(4 * MI, 1), Ok(&at_4m));
    assert_eq!(d.to, t(16 * MI, 1), "{d}");
    // 16Mi: the first byte is still over half of each fetch, but a request
    // is one slice: a larger one saves no subrequest. Nor does concurrency
    // help: nothing waits for a look-ahead slot.
    for i in 4..8 {
        let d = tuner.step(t0 + INTERVAL * i, t(16 * MI, 1), Ok(&downloads_16m(16 * MI, 1)));
        assert_eq!(d.held_because, Some(HoldReason::Steady), "{d}");
        assert!(d.reason.contains("1.0 slices per request"), "{d}");
    }
}

#[test]
fn the_normal_ttfb_is_learned_anew_after_a_slice_change() {
    let mut tuner = Tuner::new(fast_config(), Bounds::default());
    let t0 = Instant::now();
    // 20 ms at 256Ki is the normal TTFB; the slice grows to 4Mi.
    tuner.step(t0, t(256 * KI, 2), Ok(&downloads_16m(256 * KI, 2)));
    let d = tuner.step(t0 + INTERVAL, t(256 * KI, 2), Ok(&downloads_16m(256 * KI, 2)));
    assert_eq!(d.to, t(4 * MI, 2), "{d}");
    // At 4Mi the first byte takes 45 ms (2.25x): that is the new normal,
    // not a loaded origin, so concurrency grows instead of stepping back.
    let mut at_4m = downloads_16m(4 * MI, 2);
    at_4m.origin_ttfb_p90 = Some(0.045);
    at_4m.ttfb_share = Some(0.4);
    for i in 2..4 {
        let d = tuner.step(t0 + INTERVAL * i, t(4 * MI, 2), Ok(&at_4m));
        assert!(d.to.concurrency >= 2, "{d}");
        if d.changed() {
            assert_eq!(d.to, t(4 * MI, 4), "{d}");
            return;
        }
    }
    panic!("concurrency did not grow at 4Mi");
}
