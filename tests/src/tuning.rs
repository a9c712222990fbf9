//! What the tuner end-to-end test and the tuner sweep (`examples/`) share:
//! the origin's objects, the law's pacing and the way settings are printed.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use slicecache_operator::tuner::{LawConfig, Tunables};
use slicecache_testkit::origin::{pattern, OriginObject, TestOrigin};

/// The tuning interval, and the rate window of every query.
pub const INTERVAL: Duration = Duration::from_secs(3);
pub const KI: u64 = 1 << 10;
pub const MI: u64 = 1 << 20;

/// Random reads: 256 objects of 64 MiB at `/r/{i}` (16 GiB to read from,
/// far more than any agent's memory tier here).
pub const RANGE_OBJECTS: usize = 256;
pub const RANGE_OBJECT_SIZE: usize = 64 << 20;
/// Whole downloads: 4000 objects of 16 MiB at `/big/{i}`, each one a miss
/// the first time.
pub const BIG_OBJECTS: usize = 4000;
pub const BIG_OBJECT_SIZE: usize = 16 << 20;

/// Puts the range and download objects on `origin`. Each kind shares one
/// body (the origin keeps one copy); the ETags differ per path. Returns
/// the two bodies, to check responses against.
pub fn put_objects(origin: &TestOrigin) -> (Bytes, Bytes) {
    let range_body = pattern(RANGE_OBJECT_SIZE, 11);
    for i in 0..RANGE_OBJECTS {
        origin.state.put(
            &format!("/r/{i}"),
            OriginObject::new(range_body.clone(), &format!("r{i}")),
        );
    }
    let big_body = pattern(BIG_OBJECT_SIZE, 12);
    for i in 0..BIG_OBJECTS {
        origin.state.put(
            &format!("/big/{i}"),
            OriginObject::new(big_body.clone(), &format!("b{i}")),
        );
    }
    (range_body, big_body)
}

/// One random read of the range workload: a 16-64 KiB range of one of the
/// range objects. Returns the path, the `Range` header and the first and
/// last byte.
pub fn random_range_read(rng: &mut impl Rng) -> (String, String, usize, usize) {
    let object = rng.random_range(0..RANGE_OBJECTS);
    let len = rng.random_range(16 * KI as usize..=64 * KI as usize);
    let first = rng.random_range(0..=RANGE_OBJECT_SIZE - len);
    let last = first + len - 1;
    (format!("/r/{object}"), format!("bytes={first}-{last}"), first, last)
}

/// The operator's law defaults, paced for tests: confirmation over two
/// intervals, a cooldown of one interval.
pub fn law() -> LawConfig {
    LawConfig {
        required_intervals: 2,
        cooldown: INTERVAL,
        ..LawConfig::default()
    }
}

pub fn mib_s(bytes_per_second: f64) -> String {
    format!("{:.1} MiB/s", bytes_per_second / MI as f64)
}

/// `64Ki`, `16Mi`.
pub fn size(s: u64) -> String {
    if s >= MI {
        format!("{}Mi", s / MI)
    } else {
        format!("{}Ki", s / KI)
    }
}

/// `64Ki/c4`.
pub fn show(t: Tunables) -> String {
    format!("{}/c{}", size(t.slice_size), t.concurrency)
}
