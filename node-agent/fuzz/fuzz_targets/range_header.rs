//! The client `Range` header parser and resolver: never panics, and every
//! resolved range lies inside the object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slicecache_agent::range::{parse_range_header, resolve, RangeOutcome};

fuzz_target!(|data: &[u8]| {
    let (len, header) = match data.split_first_chunk::<8>() {
        Some((len, rest)) => (u64::from_le_bytes(*len) >> (len[0] % 64), rest),
        None => (1000, data),
    };
    let Some(specs) = parse_range_header(header) else {
        return;
    };
    match resolve(&specs, len) {
        RangeOutcome::Single(r) => assert!(r.first <= r.last && r.last < len),
        RangeOutcome::Multi(rs) => {
            for r in rs {
                assert!(r.first <= r.last && r.last < len);
            }
        }
        RangeOutcome::Full | RangeOutcome::NotSatisfiable => {}
    }
});
