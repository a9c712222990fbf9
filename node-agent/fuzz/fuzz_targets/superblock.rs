//! The superblock decoder and the ownership probe: never panic on arbitrary
//! bytes, and a decoded superblock encodes back to bytes that decode to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slicecache_agent::store::disk::superblock::{probe, Superblock};

fuzz_target!(|data: &[u8]| {
    let _ = probe(data);
    if let Ok(sb) = Superblock::decode(data) {
        assert_eq!(Superblock::decode(&sb.encode()), Ok(sb));
    }
});
