//! Load and hot keys: what lets the fleet spread work beyond one owner.
//!
//! Every member measures how many peer requests it serves per second
//! ([`LoadMeter`]) and reports it in each answer to a peer
//! (`slicecache-load`), so each member knows the others' load without a
//! round trip of its own ([`PeerLoad`]). An owner also counts the peer
//! requests of each key ([`HotKeys`]); a key asked more often than the hot
//! line is marked in its answers (`slicecache-hot: 1`), and the members
//! that read the mark spread that key over more holders ([`KnownHot`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ring::OwnershipKey;

/// Response header: the answering member's peer-serving load, in requests
/// per second.
pub const LOAD_HEADER: &str = "slicecache-load";
/// Response header: `1` when the owner counts the key as hot.
pub const HOT_HEADER: &str = "slicecache-hot";

/// A report older than this says nothing about a member's load now.
pub const LOAD_REPORT_TTL: Duration = Duration::from_secs(10);
/// How long a key stays hot after its rate fell below the line.
pub const HOT_FOR: Duration = Duration::from_secs(30);
/// How quickly the load meter forgets: the weight of a second-old rate
/// falls to 1/e after this long.
const LOAD_HALF_LIFE: Duration = Duration::from_secs(2);
/// Keys counted per second at most, so a scan cannot grow the counter.
const COUNTED_KEYS: usize = 1 << 16;
/// Hot keys a member remembers at most.
const KNOWN_HOT_KEYS: usize = 4096;

/// A decaying rate of events per second.
#[derive(Debug)]
pub struct LoadMeter {
    count: AtomicU64,
    state: Mutex<MeterState>,
}

#[derive(Debug)]
struct MeterState {
    at: Instant,
    counted: u64,
    rate: f64,
}

impl Default for LoadMeter {
    fn default() -> Self {
        Self {
            count: AtomicU64::new(0),
            state: Mutex::new(MeterState {
                at: Instant::now(),
                counted: 0,
                rate: 0.0,
            }),
        }
    }
}

impl LoadMeter {
    pub fn record(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Events per second, averaged with an exponential decay.
    pub fn rate(&self) -> f64 {
        self.rate_at(Instant::now())
    }

    fn rate_at(&self, now: Instant) -> f64 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.at);
        if elapsed < Duration::from_millis(250) {
            return s.rate;
        }
        let count = self.count.load(Ordering::Relaxed);
        let recent = (count - s.counted) as f64 / elapsed.as_secs_f64();
        let keep = (-elapsed.as_secs_f64() / LOAD_HALF_LIFE.as_secs_f64()).exp();
        s.rate = s.rate * keep + recent * (1.0 - keep);
        s.at = now;
        s.counted = count;
        s.rate
    }
}

/// The last load a peer reported.
#[derive(Debug, Default)]
pub struct PeerLoad {
    /// Requests per second, as f64 bits.
    rate: AtomicU64,
    /// When it was reported, in milliseconds after `epoch`.
    at_ms: AtomicU64,
}

impl PeerLoad {
    pub fn report(&self, rate: f64, epoch: Instant) {
        self.rate.store(rate.max(0.0).to_bits(), Ordering::Relaxed);
        self.at_ms
            .store(epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
    }

    /// The reported rate, unless there is none or it is too old to count.
    pub fn current(&self, epoch: Instant) -> Option<f64> {
        let at = self.at_ms.load(Ordering::Relaxed);
        let age = (epoch.elapsed().as_millis() as u64 + 1).saturating_sub(at);
        (at > 0 && age < LOAD_REPORT_TTL.as_millis() as u64).then(|| f64::from_bits(self.rate.load(Ordering::Relaxed)))
    }
}

/// The owner's side: peer requests per key and second; keys at or over the
/// line are hot for [`HOT_FOR`].
#[derive(Debug)]
pub struct HotKeys {
    line: u32,
    state: Mutex<HotState>,
}

#[derive(Debug)]
struct HotState {
    window: Instant,
    counts: HashMap<OwnershipKey, u32>,
    hot: HashMap<OwnershipKey, Instant>,
}

impl HotKeys {
    /// Keys asked `line` times or more in one second are hot; 0 turns the
    /// detection off.
    pub fn new(line: u32) -> Self {
        Self {
            line,
            state: Mutex::new(HotState {
                window: Instant::now(),
                counts: HashMap::new(),
                hot: HashMap::new(),
            }),
        }
    }

    /// Counts one peer request for `key`; returns whether `key` is hot.
    pub fn note(&self, key: OwnershipKey) -> bool {
        self.note_at(key, Instant::now())
    }

    fn note_at(&self, key: OwnershipKey, now: Instant) -> bool {
        if self.line == 0 {
            return false;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(s.window) >= Duration::from_secs(1) {
            let line = self.line;
            let HotState { counts, hot, .. } = &mut *s;
            for (k, _) in counts.drain().filter(|(_, n)| *n >= line) {
                hot.insert(k, now + HOT_FOR);
            }
            hot.retain(|_, until| *until > now);
            s.window = now;
        }
        if s.counts.len() < COUNTED_KEYS || s.counts.contains_key(&key) {
            let n = s.counts.entry(key).or_insert(0);
            *n = n.saturating_add(1);
            // Hot at once within the window, not only from the next one.
            if *n >= self.line {
                s.hot.insert(key, now + HOT_FOR);
            }
        }
        s.hot.get(&key).is_some_and(|until| *until > now)
    }
}

/// A member's side: the keys owners marked hot, until the mark expires.
#[derive(Debug, Default)]
pub struct KnownHot {
    keys: Mutex<HashMap<OwnershipKey, Instant>>,
}

impl KnownHot {
    /// Remembers the owner's mark on `key` for [`HOT_FOR`]. A mark is not
    /// taken back by a later answer without it: a member that spreads a key
    /// no longer asks its owner, whose count of it falls.
    pub fn mark(&self, key: OwnershipKey) {
        let now = Instant::now();
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= KNOWN_HOT_KEYS && !keys.contains_key(&key) {
            keys.retain(|_, until| *until > now);
            if keys.len() >= KNOWN_HOT_KEYS {
                return;
            }
        }
        keys.insert(key, now + HOT_FOR);
    }

    pub fn contains(&self, key: &OwnershipKey) -> bool {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.get(key).is_some_and(|until| *until > Instant::now())
    }

    /// Keys marked hot now.
    pub fn count(&self) -> usize {
        let now = Instant::now();
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.values().filter(|until| **until > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectId;

    fn key(i: u64) -> OwnershipKey {
        OwnershipKey::new(ObjectId(7), i << 22, 4 << 20)
    }

    #[test]
    fn the_meter_follows_the_rate_and_forgets_it() {
        let meter = LoadMeter::default();
        let start = Instant::now();
        for second in 1..=10 {
            for _ in 0..100 {
                meter.record();
            }
            meter.rate_at(start + Duration::from_secs(second));
        }
        let busy = meter.rate_at(start + Duration::from_secs(10));
        assert!((80.0..=100.0).contains(&busy), "after 10 s of 100/s: {busy}");
        let idle = meter.rate_at(start + Duration::from_secs(20));
        assert!(idle < 1.0, "10 s idle later: {idle}");
    }

    #[test]
    fn a_key_over_the_line_is_hot_and_cools_down() {
        let hot = HotKeys::new(10);
        let start = Instant::now();
        assert!(!hot.note_at(key(1), start));
        for _ in 0..8 {
            hot.note_at(key(1), start);
        }
        assert!(
            hot.note_at(key(1), start),
            "the tenth request in a second crosses the line"
        );
        assert!(!hot.note_at(key(2), start), "another key stays cold");
        let later = start + HOT_FOR + Duration::from_secs(2);
        hot.note_at(key(2), start + Duration::from_secs(1));
        assert!(
            !hot.note_at(key(1), later),
            "cold again once the line was not crossed for {HOT_FOR:?}"
        );
        assert!(!HotKeys::new(0).note(key(1)), "line 0: never hot");
    }

    #[test]
    fn old_load_reports_do_not_count() {
        let epoch = Instant::now() - Duration::from_secs(60);
        let load = PeerLoad::default();
        assert_eq!(load.current(epoch), None);
        load.report(42.0, epoch);
        assert_eq!(load.current(epoch), Some(42.0));
        load.at_ms.store(1, Ordering::Relaxed);
        assert_eq!(load.current(epoch), None, "a report from a minute ago");
    }

    #[test]
    fn marks_are_remembered_until_they_expire() {
        let known = KnownHot::default();
        known.mark(key(1));
        assert!(known.contains(&key(1)));
        assert!(!known.contains(&key(2)));
        assert_eq!(known.count(), 1);
        known.keys.lock().expect("lock").insert(key(1), Instant::now());
        assert!(!known.contains(&key(1)), "expired");
        assert_eq!(known.count(), 0);
    }
}
