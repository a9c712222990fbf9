//! The fetch window of one response: how many slices it looks up ahead of
//! the one it is sending, and the agent-wide budget those slices share.
//!
//! A response starts with `tunables.concurrency` slices ahead (the value the
//! operator's tuner sets). Each slice it streams from a fill then says what
//! bounded that fill: if the origin took longer to send the first byte than
//! the response then took to stream the body, the round trip dominates and
//! the window grows by one slice. Every slice of a window that arrives that
//! way adds one, so the window doubles per round trip, as TCP's congestion
//! window does in slow start, until the slices fetched ahead cover the round
//! trip: then a slice's header arrived long before the response got to it,
//! its "body" time (header to sent) outgrows its first-byte time, and growth
//! stops. A near origin, a slow client, or slices already cached never grow
//! the window. The next responses start from half the window the latest
//! one grew to (never below `concurrency`), as TCP caches a route's slow
//! start threshold; a response that sent a whole window of slices the round
//! trip did not bound halves that hint again. A slice the origin answered only after a retry (a 429, a 5xx,
//! a broken connection) halves it, down to where it started: the origin is
//! pushing back, and the tuner lowers `concurrency` on the same signals.
//!
//! Three bounds hold whatever the window does:
//! - the per-request cap: [`MAX_WINDOW`] slices, the origin-connection limit,
//!   and a quarter of the budget below;
//! - the agent-wide budget ([`WindowBudget`], a quarter of the memory tier):
//!   every slice ahead of the one being sent holds its size from the budget
//!   until it has been sent, so however many responses grow their windows,
//!   the bytes fetched ahead stay within it. A slice the budget cannot cover
//!   is simply not fetched ahead yet; the slice being sent needs no share, so
//!   every response makes progress;
//! - the origin subrequest limit ([`crate::fill::Fills`]' permits), as before.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::fill::Answered;
use crate::metrics::WindowMetrics;

/// Most slices one response fetches ahead.
pub const MAX_WINDOW: usize = 64;

/// Budget shares are counted in KiB, so a semaphore's `u32` permits cover
/// any memory tier.
const UNIT: u64 = 1024;

/// The agent-wide budget for slices fetched ahead of the ones being sent.
#[derive(Debug)]
pub struct WindowBudget {
    permits: Arc<Semaphore>,
    bytes: u64,
    /// The window the latest response that learned something ended with:
    /// where the next ones start from (half of it), as TCP caches a
    /// route's threshold.
    learned: Arc<AtomicUsize>,
    metrics: WindowMetrics,
}

impl WindowBudget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: u64, metrics: WindowMetrics) -> Self {
        let units = (bytes / UNIT).clamp(1, u64::from(u32::MAX >> 3));
        Self {
            permits: Arc::new(Semaphore::new(units as usize)),
            bytes: units * UNIT,
            learned: Arc::new(AtomicUsize::new(0)),
            metrics,
        }
    }

    /// The budget an agent with a memory tier of `memory` bytes gives its
    /// fetch windows.
    pub fn for_memory(memory: u64, metrics: WindowMetrics) -> Self {
        Self::new(memory / 4, metrics)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// A share of `bytes` for one slice fetched ahead, or `None` (counted)
    /// when the budget has not that much left.
    pub fn take(&self, bytes: u64) -> Option<Share> {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).ok()?;
        match self.permits.clone().try_acquire_many_owned(units) {
            Ok(permit) => {
                let bytes = u64::from(units) * UNIT;
                self.metrics.ahead_bytes.add(bytes as i64);
                Some(Share {
                    _permit: permit,
                    bytes,
                    gauge: self.metrics.ahead_bytes.clone(),
                })
            }
            Err(_) => {
                self.metrics.budget_waits.inc();
                None
            }
        }
    }

    /// A window for one response fetching `slice_size` slices, starting at
    /// `start` slices ahead and capped at `cap` (the per-request bounds that
    /// come from elsewhere: the origin-connection limit, or 1 for an origin
    /// that ignores ranges).
    pub fn window(&self, start: usize, cap: usize, slice_size: u64) -> Window {
        let quarter = usize::try_from(self.bytes / 4 / slice_size.max(1)).unwrap_or(usize::MAX);
        let cap = cap.min(MAX_WINDOW).min(quarter).max(1);
        let floor = start.clamp(1, cap);
        let learned = self.learned.load(Ordering::Relaxed) / 2;
        Window {
            size: floor.max(learned.min(cap)),
            floor,
            cap,
            throttled: false,
            grew: false,
            near: 0,
            learned: self.learned.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// A slice's hold on the budget; released when dropped.
#[derive(Debug)]
pub struct Share {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    gauge: IntGauge,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.gauge.sub(self.bytes as i64);
    }
}

/// One response's window.
#[derive(Debug)]
pub struct Window {
    size: usize,
    /// `concurrency` (within the cap): the window never shrinks below it.
    floor: usize,
    cap: usize,
    /// The origin needed a retry: no more growth in this response.
    throttled: bool,
    grew: bool,
    /// Slices from fills that the round trip did not bound.
    near: usize,
    learned: Arc<AtomicUsize>,
    metrics: WindowMetrics,
}

impl Window {
    /// Slices to have in flight, the one being sent included.
    pub fn size(&self) -> usize {
        self.size
    }

    /// A slice from a fill has been sent: `asked` is when the fill asked
    /// the origin, `answered` when its header came, `sent` when the
    /// response finished sending it. Grows the window by one when the round
    /// trip bounded the slice; halves it (not below `concurrency`) and
    /// stops its growth when the origin needed a retry. Returns whether it
    /// grew.
    pub fn slice_sent(&mut self, answer: &Answered, sent: Instant) -> bool {
        if answer.retried {
            self.size = (self.size / 2).max(self.floor);
            self.throttled = true;
            return false;
        }
        let first_byte = answer.at.saturating_duration_since(answer.asked);
        let body = sent.saturating_duration_since(answer.at);
        if !round_trip_bound(first_byte, body) {
            self.near += 1;
            return false;
        }
        if self.size >= self.cap || self.throttled {
            return false;
        }
        self.size += 1;
        self.grew = true;
        self.metrics.grows.inc();
        true
    }
}

impl Drop for Window {
    /// Leaves what this response learned for the next ones: the window it
    /// grew to; the window it was halved to, when the origin pushed back;
    /// or, when a whole window of its slices came from fills the round trip
    /// did not bound, that the origin is near (the hint halves).
    fn drop(&mut self) {
        if self.throttled {
            self.learned.store(self.size, Ordering::Relaxed);
        } else if self.grew {
            self.metrics.slices.observe(self.size as f64);
            self.learned.store(self.size, Ordering::Relaxed);
        } else if self.near >= self.size {
            let _ = self
                .learned
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n / 2));
        }
    }
}

/// Whether waiting for the first byte took longer than the body: more
/// slices in flight would hide that wait.
fn round_trip_bound(first_byte: Duration, body: Duration) -> bool {
    first_byte > body
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Histogram, HistogramOpts, IntCounter};

    fn metrics() -> WindowMetrics {
        WindowMetrics {
            ahead_bytes: IntGauge::new("a", "a").expect("gauge"),
            budget_waits: IntCounter::new("w", "w").expect("counter"),
            grows: IntCounter::new("g", "g").expect("counter"),
            slices: Histogram::with_opts(HistogramOpts::new("s", "s")).expect("histogram"),
        }
    }

    const MIB: u64 = 1 << 20;

    fn answer(asked: Instant, at: Instant) -> Answered {
        Answered {
            asked,
            at,
            retried: false,
        }
    }

    #[test]
    fn a_far_origin_doubles_the_window_each_round_trip_up_to_the_cap() {
        let budget = WindowBudget::new(1024 * MIB, metrics());
        let mut w = budget.window(4, 256, MIB);
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        // One round trip: every slice of the window arrives after 20 ms
        // and streams in 1 ms.
        let mut round = 0;
        while w.size() < MAX_WINDOW {
            let in_flight = w.size();
            for _ in 0..in_flight {
                w.slice_sent(&answer(t0, t0 + ms(20)), t0 + ms(21));
            }
            round += 1;
            assert_eq!(w.size(), (4 << round).min(MAX_WINDOW), "round {round}");
        }
        assert!(
            !w.slice_sent(&answer(t0, t0 + ms(20)), t0 + ms(21)),
            "capped at {MAX_WINDOW}"
        );
        assert_eq!(w.size(), MAX_WINDOW);
    }

    #[test]
    fn the_next_response_starts_from_half_the_window_learned_until_the_origin_is_near() {
        let budget = WindowBudget::new(1024 * MIB, metrics());
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = budget.window(4, 256, MIB);
        for _ in 0..36 {
            w.slice_sent(&answer(t0, t0 + ms(20)), t0 + ms(21));
        }
        assert_eq!(w.size(), 40);
        drop(w);
        let mut w = budget.window(4, 256, MIB);
        assert_eq!(w.size(), 20, "half of what the last response learned");
        // A whole window of slices from a near origin: the hint halves.
        for _ in 0..20 {
            w.slice_sent(&answer(t0, t0 + ms(1)), t0 + ms(3));
        }
        drop(w);
        assert_eq!(budget.window(4, 256, MIB).size(), 10);
        assert_eq!(budget.window(16, 256, MIB).size(), 16, "never below concurrency");
        assert_eq!(budget.window(4, 8, MIB).size(), 8, "nor above the cap");
    }

    #[test]
    fn a_near_origin_or_a_slow_client_leaves_the_window_alone() {
        let budget = WindowBudget::new(1024 * MIB, metrics());
        let mut w = budget.window(4, 256, MIB);
        let t0 = Instant::now();
        let us = Duration::from_micros;
        // Near origin: 200 µs to the first byte, 500 µs of body.
        assert!(!w.slice_sent(&answer(t0, t0 + us(200)), t0 + us(700)));
        // Far origin, but the slice waited 30 ms for a slow client.
        assert!(!w.slice_sent(&answer(t0, t0 + us(20_000)), t0 + us(50_000)));
        assert_eq!(w.size(), 4);
    }

    #[test]
    fn an_origin_that_needs_retries_halves_the_window_and_ends_its_growth() {
        let budget = WindowBudget::new(1024 * MIB, metrics());
        let mut w = budget.window(4, 256, MIB);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        for _ in 0..12 {
            w.slice_sent(&answer(t0, t0 + ms(20)), t0 + ms(21));
        }
        assert_eq!(w.size(), 16);
        let retried = Answered {
            retried: true,
            ..answer(t0, t0 + ms(20))
        };
        assert!(!w.slice_sent(&retried, t0 + ms(21)));
        assert_eq!(w.size(), 8);
        w.slice_sent(&retried, t0 + ms(21));
        w.slice_sent(&retried, t0 + ms(21));
        assert_eq!(w.size(), 4, "never below concurrency");
        assert!(
            !w.slice_sent(&answer(t0, t0 + ms(20)), t0 + ms(21)),
            "no growth after a retry"
        );
        drop(w);
        // The next response starts from concurrency, not from 16 / 2.
        assert_eq!(budget.window(4, 256, MIB).size(), 4);
    }

    #[test]
    fn the_cap_is_the_least_of_the_bounds_and_never_below_one() {
        let budget = WindowBudget::new(1024 * MIB, metrics());
        assert_eq!(budget.window(4, 8, MIB).cap, 8, "origin connections");
        assert_eq!(budget.window(4, 256, MIB).cap, MAX_WINDOW);
        assert_eq!(budget.window(4, 256, 16 * MIB).cap, 16, "a quarter of the budget");
        assert_eq!(budget.window(4, 1, MIB).size(), 1, "an origin that ignores ranges");
        let small = WindowBudget::new(MIB, metrics());
        assert_eq!(small.window(4, 256, 4 * MIB).size(), 1);
    }

    #[test]
    fn shares_never_exceed_the_budget_and_come_back_when_dropped() {
        let m = metrics();
        let budget = WindowBudget::new(4 * MIB, m.clone());
        let shares: Vec<Share> = std::iter::from_fn(|| budget.take(MIB)).take(10).collect();
        assert_eq!(shares.len(), 4);
        assert_eq!(m.ahead_bytes.get() as u64, 4 * MIB);
        assert!(budget.take(1).is_none());
        assert_eq!(m.budget_waits.get(), 2, "the fifth take and the last one");
        drop(shares);
        assert_eq!(m.ahead_bytes.get(), 0);
        assert!(budget.take(4 * MIB).is_some());
    }
}
