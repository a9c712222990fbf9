//! The control law: signals in, one [`TuningDecision`] out, no I/O.
//!
//! [`Tuner`] is a small state machine. Its state is the history the law
//! needs, kept explicit: the change each knob has wanted for how many
//! intervals in a row, when the last change happened, the origin TTFB seen
//! as normal, and a concurrency ceiling learned from origin pressure.
//!
//! **Concurrency** (subrequests per client request) moves
//! additive-increase / multiplicative-decrease, after a slow start:
//! - origin 429/503 above `throttle_max` of subrequests: halve at once,
//!   ignoring hysteresis and cooldown (the origin is asking us to stop);
//! - origin errors (5xx, connect, timeout, io, protocol) above `error_max`:
//!   halve;
//! - origin TTFB p90 above `ttfb_rise` times its normal level, or queue wait
//!   for the agent's origin connections above `queue_wait_max`: minus one.
//!   These are delay signals, early warnings rather than losses, so they
//!   step back gently instead of halving (as delay-based TCP variants do).
//!   During slow start they step back to 3/4, the midpoint between the
//!   level before the last doubling and the current one (that doubling
//!   overshot, but the level before it was fine);
//! - otherwise, when more than `lookahead_wait_min` of the slices fetched
//!   waited for a look-ahead slot (requests span more slices than
//!   concurrency fetches at once, so more would help) and the origin is
//!   healthy: double until the first decrease (slow start, as in TCP), plus
//!   one afterwards. Without such waits more concurrency buys nothing, so
//!   it holds.
//!
//! The normal TTFB is learned anew after each slice size change: a larger
//! slice may take longer to its first byte.
//!
//! Every decrease remembers a ceiling just below the level that caused it;
//! increases stop there until `reprobe_after` has passed. Without it AIMD
//! saws between the knee and half of it forever.
//!
//! **Slice size** moves by powers of two between two costs, as far in one
//! step as a simple model of each cost says:
//! - amplification (origin bytes per client byte on misses) above
//!   `amplification_max`: slices are large for the ranges clients read.
//!   A read of `L` bytes at a random offset fetches about `S + L`, so
//!   amplification minus one grows in proportion to `S`; the slice shrinks
//!   to the largest power of two predicted to bring it within the bound
//!   (at least one halving);
//! - share of fetch time spent before the first byte above `ttfb_share_max`,
//!   requests spanning more than one slice (else larger slices save no
//!   subrequest), and amplification low enough that doubling keeps it under
//!   `amplification_max` with a margin: per-subrequest overhead dominates.
//!   A fetch takes `TTFB + S / bandwidth`, so the share at `2^k S` is
//!   `s / (s + 2^k (1 - s))`; the slice grows by the fewest doublings
//!   predicted to bring it under the bound, but no more than `MAX_UP_STEPS`,
//!   no larger than makes a request one slice, and with predicted
//!   amplification at most half of `amplification_max`.
//!
//! The dead band between the two (doubling needs amplification at most
//! `amplification_max / 2.5`) keeps slice size from flipping.
//!
//! **Hysteresis**: a change must be wanted in `required_intervals`
//! consecutive steps, at least `cooldown` after the previous change, and at
//! most one knob moves one step per interval, so each change is measured
//! before the next. A missing signal holds the knob that needs it.

use std::time::{Duration, Instant};

use slicecache_api::{
    agent_config::{clamp_slice_size, MAX_CONCURRENCY, MAX_SLICE_SIZE, MIN_SLICE_SIZE},
    quantity::format_bytes,
};

use super::{
    decision::{HoldReason, Tunables, TuningDecision},
    prometheus::QueryError,
    signals::Signals,
};

/// Where the tuner may move the tunables (from `spec.tuning`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub min_slice_size: u64,
    pub max_slice_size: u64,
    pub min_concurrency: u32,
    pub max_concurrency: u32,
}

impl Default for Bounds {
    /// The API's limits: every slice size and concurrency it allows.
    fn default() -> Self {
        Self {
            min_slice_size: MIN_SLICE_SIZE,
            max_slice_size: MAX_SLICE_SIZE,
            min_concurrency: 1,
            max_concurrency: MAX_CONCURRENCY,
        }
    }
}

impl Bounds {
    /// `t` moved inside the bounds; a slice size that is no power of two is
    /// rounded down to one.
    pub fn clamp(&self, t: Tunables) -> Tunables {
        Tunables {
            slice_size: clamp_slice_size(t.slice_size, self.min_slice_size, self.max_slice_size),
            concurrency: t
                .concurrency
                .clamp(self.min_concurrency, self.max_concurrency.max(self.min_concurrency)),
        }
    }
}

/// Thresholds and timing of the law.
#[derive(Clone, Debug, PartialEq)]
pub struct LawConfig {
    /// Consecutive intervals a change must be wanted before it happens.
    pub required_intervals: u32,
    /// Least time between two changes (fast back-off excepted).
    pub cooldown: Duration,
    /// Share of origin subrequests answered 429/503 that triggers fast back-off.
    pub throttle_max: f64,
    /// Share of origin subrequests failing (5xx or transport) that halves concurrency.
    pub error_max: f64,
    /// Origin TTFB p90 over its normal level by this factor: concurrency - 1.
    pub ttfb_rise: f64,
    /// Queue wait p90 for an origin connection above this: concurrency - 1.
    pub queue_wait_max: Duration,
    /// Amplification above this halves the slice size.
    pub amplification_max: f64,
    /// TTFB share of fetch time above this doubles the slice size.
    pub ttfb_share_max: f64,
    /// Share of fetched slices that waited for a look-ahead slot above which
    /// concurrency grows.
    pub lookahead_wait_min: f64,
    /// Fewer origin subrequests per second than this: nothing to learn from.
    pub min_request_rate: f64,
    /// How long a concurrency ceiling learned from pressure lasts.
    pub reprobe_after: Duration,
}

impl Default for LawConfig {
    fn default() -> Self {
        Self {
            required_intervals: 2,
            cooldown: slicecache_api::validate::DEFAULT_TUNING_COOLDOWN,
            throttle_max: 0.01,
            error_max: 0.05,
            ttfb_rise: 1.5,
            queue_wait_max: Duration::from_millis(250),
            amplification_max: 3.0,
            ttfb_share_max: 0.5,
            lookahead_wait_min: 0.1,
            min_request_rate: 0.05,
            reprobe_after: Duration::from_secs(3600),
        }
    }
}

/// Doubling needs amplification at most `amplification_max / DOUBLE_MARGIN`.
const DOUBLE_MARGIN: f64 = 2.5;
/// Most doublings of the slice size in one step.
const MAX_UP_STEPS: u32 = 4;
/// Slice size grows only while requests span more slices than this.
const MIN_SPAN_TO_GROW: f64 = 1.2;
/// How fast the normal TTFB follows a higher one, per interval.
const BASELINE_RISE: f64 = 0.05;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Up,
    Down,
}

/// A wanted change of one knob.
#[derive(Clone, Debug)]
struct Want<T> {
    dir: Dir,
    to: T,
    why: String,
}

#[derive(Clone, Copy, Debug, Default)]
struct Streak {
    dir: Option<Dir>,
    count: u32,
}

impl Streak {
    fn observe(&mut self, dir: Option<Dir>) -> u32 {
        if dir.is_some() && dir == self.dir {
            self.count += 1;
        } else {
            self.dir = dir;
            self.count = u32::from(dir.is_some());
        }
        self.count
    }
}

/// The tuner for one SliceCache.
#[derive(Clone, Debug)]
pub struct Tuner {
    config: LawConfig,
    bounds: Bounds,
    slice_streak: Streak,
    concurrency_streak: Streak,
    last_change: Option<Instant>,
    /// Lowest origin TTFB p90 seen, and the concurrency it was seen at.
    ttfb_baseline: Option<(f64, u32)>,
    ceiling: Option<(u32, Instant)>,
    /// Concurrency doubles until the first decrease.
    slow_start: bool,
}

impl Tuner {
    pub fn new(config: LawConfig, bounds: Bounds) -> Self {
        Self {
            config,
            bounds,
            slice_streak: Streak::default(),
            concurrency_streak: Streak::default(),
            last_change: None,
            ttfb_baseline: None,
            ceiling: None,
            slow_start: true,
        }
    }

    pub fn config(&self) -> &LawConfig {
        &self.config
    }

    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// New bounds (the spec changed); the history stays.
    pub fn set_bounds(&mut self, bounds: Bounds) {
        self.bounds = bounds;
    }

    /// One interval: `current` tunables in force, what Prometheus said.
    pub fn step(&mut self, now: Instant, current: Tunables, observed: Result<&Signals, &QueryError>) -> TuningDecision {
        let signals = match observed {
            Ok(s) => s,
            Err(e) => {
                let hold = match e {
                    QueryError::Unreachable(_) => HoldReason::PrometheusUnreachable,
                    QueryError::Timeout(_) => HoldReason::QueryTimeout,
                    _ => HoldReason::PrometheusError,
                };
                self.reset_streaks();
                return hold_decision(current, hold, format!("holding: {e}"), Default::default());
            }
        };
        let metrics = signals.snapshot();
        if signals.is_empty() {
            self.reset_streaks();
            return hold_decision(
                current,
                HoldReason::NoData,
                "holding: no agent series in Prometheus (is anything scraping the agents?)".into(),
                metrics,
            );
        }

        // Bounds first: a spec change may have moved them past the values in force.
        let clamped = self.bounds.clamp(current);
        if clamped != current {
            self.changed(now);
            return TuningDecision {
                from: current,
                to: clamped,
                reason: format!("{current} is outside the bounds: {clamped}"),
                held_because: None,
                metrics,
            };
        }

        if let Some((_, since)) = self.ceiling {
            if now.saturating_duration_since(since) >= self.config.reprobe_after {
                self.ceiling = None;
            }
        }

        let active = signals
            .origin_request_rate
            .is_some_and(|r| r >= self.config.min_request_rate);
        let throttle = signals.throttle_ratio.filter(|r| *r > self.config.throttle_max);

        // Fast back-off: the origin says stop, so no waiting for confirmation or cooldown.
        if let Some(ratio) = throttle {
            if active && current.concurrency > self.bounds.min_concurrency {
                let to = (current.concurrency / 2).max(self.bounds.min_concurrency);
                self.ceiling = Some((current.concurrency - 1, now));
                self.slow_start = false;
                self.changed(now);
                return TuningDecision {
                    from: current,
                    to: Tunables {
                        concurrency: to,
                        ..current
                    },
                    reason: format!(
                        "origin 429/503 at {:.2}%: concurrency {} -> {to}",
                        ratio * 100.0,
                        current.concurrency
                    ),
                    held_because: None,
                    metrics,
                };
            }
        }

        let want_concurrency = if active {
            self.want_concurrency(current.concurrency, signals)
        } else {
            None
        };
        let want_slice = if active {
            self.want_slice(current.slice_size, signals)
        } else {
            None
        };
        self.update_baseline(signals, current.concurrency);

        let c_count = self
            .concurrency_streak
            .observe(want_concurrency.as_ref().map(|w| w.dir));
        let s_count = self.slice_streak.observe(want_slice.as_ref().map(|w| w.dir));

        if !active {
            return hold_decision(
                current,
                HoldReason::Idle,
                format!(
                    "holding: origin subrequests at {}/s, below {}/s",
                    fmt_opt(signals.origin_request_rate, 3),
                    self.config.min_request_rate
                ),
                metrics,
            );
        }

        // One knob per interval: backing off first, then slice size, then growth.
        let candidates = [
            want_concurrency
                .as_ref()
                .filter(|w| w.dir == Dir::Down)
                .map(|w| (Knob::Concurrency, w.why.clone(), c_count)),
            want_slice.as_ref().map(|w| (Knob::Slice, w.why.clone(), s_count)),
            want_concurrency
                .as_ref()
                .filter(|w| w.dir == Dir::Up)
                .map(|w| (Knob::Concurrency, w.why.clone(), c_count)),
        ];
        let Some((knob, why, count)) = candidates.into_iter().flatten().next() else {
            return hold_decision(
                current,
                HoldReason::Steady,
                self.steady_reason(current, signals),
                metrics,
            );
        };
        if count < self.config.required_intervals {
            return hold_decision(
                current,
                HoldReason::Settling,
                format!("{why} (wanted {count} of {} intervals)", self.config.required_intervals),
                metrics,
            );
        }
        if let Some(last) = self.last_change {
            let since = now.saturating_duration_since(last);
            if since < self.config.cooldown {
                return hold_decision(
                    current,
                    HoldReason::Cooldown,
                    format!(
                        "{why} (cooldown: {}s of {}s since the last change)",
                        since.as_secs(),
                        self.config.cooldown.as_secs()
                    ),
                    metrics,
                );
            }
        }
        let to = match knob {
            Knob::Concurrency => {
                let w = want_concurrency.as_ref().map_or(current.concurrency, |w| w.to);
                if w < current.concurrency {
                    self.ceiling = Some((w.max(self.bounds.min_concurrency), now));
                    self.slow_start = false;
                }
                Tunables {
                    concurrency: w,
                    ..current
                }
            }
            Knob::Slice => {
                // A slice's first byte may take longer when the slice is
                // larger: the normal TTFB is learned anew at the new size.
                self.ttfb_baseline = None;
                Tunables {
                    slice_size: want_slice.as_ref().map_or(current.slice_size, |w| w.to),
                    ..current
                }
            }
        };
        self.changed(now);
        TuningDecision {
            from: current,
            to,
            reason: why,
            held_because: None,
            metrics,
        }
    }

    fn want_concurrency(&self, c: u32, s: &Signals) -> Option<Want<u32>> {
        let cfg = &self.config;
        let min = self.bounds.min_concurrency;
        let down = |to: u32, why: &str| {
            let to = to.max(min);
            (c > min).then(|| Want {
                dir: Dir::Down,
                to,
                why: format!("{why}: concurrency {c} -> {to}"),
            })
        };
        if let Some(err) = s.error_ratio.filter(|r| *r > cfg.error_max) {
            return down(c / 2, &format!("origin errors at {:.2}%", err * 100.0));
        }
        // A delay signal steps back by one. In slow start the last doubling
        // overshot, but by less than all of it (the level before it was
        // fine): back to the midpoint, 3/4, and slow start ends there, as
        // TCP's HyStart leaves slow start on rising delay without halving.
        let gentle = if self.slow_start { (c - c / 4).min(c - 1) } else { c - 1 };
        if let (Some(ttfb), Some((base, _))) = (s.origin_ttfb_p90, self.ttfb_baseline) {
            if ttfb > base * cfg.ttfb_rise {
                return down(
                    gentle,
                    &format!(
                        "origin TTFB p90 {:.1}ms is {:.1}x its normal {:.1}ms",
                        ttfb * 1e3,
                        ttfb / base,
                        base * 1e3
                    ),
                );
            }
        }
        if let Some(wait) = s.queue_wait_p90.filter(|w| *w > cfg.queue_wait_max.as_secs_f64()) {
            return down(
                gentle,
                &format!("queue wait p90 {:.0}ms for origin connections", wait * 1e3),
            );
        }
        // Growth needs evidence that it helps and of a healthy origin, not
        // just absent evidence of trouble.
        s.throttle_ratio?;
        s.error_ratio?;
        let waits = s.lookahead_wait_ratio.filter(|r| *r > cfg.lookahead_wait_min)?;
        let limit = match self.ceiling {
            Some((ceiling, _)) => ceiling.min(self.bounds.max_concurrency),
            None => self.bounds.max_concurrency,
        };
        if c >= limit {
            return None;
        }
        let (to, how) = if self.slow_start {
            (c.saturating_mul(2).min(limit), "slow start")
        } else {
            (c + 1, "origin healthy")
        };
        Some(Want {
            dir: Dir::Up,
            to,
            why: format!(
                "{:.0}% of fetched slices waited for a look-ahead slot, {how}: concurrency {c} -> {to}",
                waits * 100.0
            ),
        })
    }

    fn want_slice(&self, size: u64, s: &Signals) -> Option<Want<u64>> {
        let cfg = &self.config;
        let amp = s.amplification?;
        if amp > cfg.amplification_max {
            if size / 2 < self.bounds.min_slice_size {
                return None;
            }
            // Amplification minus one is proportional to the slice size.
            let fits = size as f64 * (cfg.amplification_max - 1.0) / (amp - 1.0);
            let to = pow2_floor(fits).clamp(self.bounds.min_slice_size, size / 2);
            return Some(Want {
                dir: Dir::Down,
                to,
                why: format!(
                    "origin amplification {amp:.2} above {:.2}: slice {} -> {}",
                    cfg.amplification_max,
                    format_bytes(size),
                    format_bytes(to)
                ),
            });
        }
        let share = s.ttfb_share?;
        let spans = s.slices_per_request?;
        if share <= cfg.ttfb_share_max || amp > cfg.amplification_max / DOUBLE_MARGIN || spans <= MIN_SPAN_TO_GROW {
            return None;
        }
        let m = cfg.ttfb_share_max;
        let needed = if share >= 1.0 {
            MAX_UP_STEPS
        } else {
            doublings_to_reach(share * (1.0 - m) / ((1.0 - share) * m))
        };
        let mut k = needed.min(doublings_to_reach(spans)).clamp(1, MAX_UP_STEPS);
        while k > 1 && 1.0 + (amp - 1.0) * f64::from(1u32 << k) > cfg.amplification_max / 2.0 {
            k -= 1;
        }
        while k > 0 && size.saturating_mul(1 << k) > self.bounds.max_slice_size {
            k -= 1;
        }
        if k == 0 {
            return None;
        }
        let to = size << k;
        Some(Want {
            dir: Dir::Up,
            to,
            why: format!(
                "time to first byte is {:.0}% of each slice fetch at amplification {amp:.2}, \
                 {spans:.1} slices per request: slice {} -> {}",
                share * 100.0,
                format_bytes(size),
                format_bytes(to)
            ),
        })
    }

    fn steady_reason(&self, current: Tunables, s: &Signals) -> String {
        let at_ceiling = self
            .ceiling
            .is_some_and(|(c, _)| current.concurrency >= c && c < self.bounds.max_concurrency);
        format!(
            "steady: amplification {}, TTFB share {}, {} slices per request, look-ahead waits {}, \
             origin 429/503 {}, concurrency {}",
            fmt_opt(s.amplification, 2),
            fmt_opt(s.ttfb_share, 2),
            fmt_opt(s.slices_per_request, 1),
            fmt_opt(s.lookahead_wait_ratio, 2),
            fmt_opt(s.throttle_ratio, 4),
            if at_ceiling {
                "at the ceiling learned from origin pressure"
            } else if current.concurrency >= self.bounds.max_concurrency {
                "at its bound"
            } else {
                "has no evidence that more would help"
            }
        )
    }

    /// The normal origin TTFB is the lowest p90 seen, with the concurrency
    /// it was seen at. It rises (slowly) only when observed at that
    /// concurrency or below: then the origin itself got slower. Learning
    /// from higher concurrency would let every re-probe ratchet it up.
    fn update_baseline(&mut self, s: &Signals, concurrency: u32) {
        let Some(ttfb) = s.origin_ttfb_p90.filter(|t| *t > 0.0) else {
            return;
        };
        self.ttfb_baseline = Some(match self.ttfb_baseline {
            Some((base, at)) if ttfb >= base && concurrency <= at => (base + (ttfb - base) * BASELINE_RISE, at),
            Some(kept) if ttfb >= kept.0 => kept,
            _ => (ttfb, concurrency),
        });
    }

    fn changed(&mut self, now: Instant) {
        self.last_change = Some(now);
        self.reset_streaks();
    }

    fn reset_streaks(&mut self) {
        self.slice_streak = Streak::default();
        self.concurrency_streak = Streak::default();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Knob {
    Concurrency,
    Slice,
}

fn hold_decision(
    current: Tunables,
    hold: HoldReason,
    reason: String,
    metrics: std::collections::BTreeMap<String, String>,
) -> TuningDecision {
    TuningDecision {
        from: current,
        to: current,
        reason,
        held_because: Some(hold),
        metrics,
    }
}

/// The largest power of two at most `x` (1 below 1).
fn pow2_floor(x: f64) -> u64 {
    if x < 2.0 {
        1
    } else {
        1u64 << (x.log2().floor() as u32).min(62)
    }
}

/// The fewest doublings that reach a factor of `x` (0 for `x` up to 1).
fn doublings_to_reach(x: f64) -> u32 {
    if x.is_nan() || x <= 1.0 {
        0
    } else {
        x.log2().ceil().min(f64::from(MAX_UP_STEPS * 8)) as u32
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.digits$}"))
}
