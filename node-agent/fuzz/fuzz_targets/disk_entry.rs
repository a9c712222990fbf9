//! On-disk entries: header decoding, entry verification and region scans
//! never panic on arbitrary bytes, and a scan never claims bytes past the
//! image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slicecache_agent::object::ObjectMeta;
use slicecache_agent::store::disk::entry::{scan_region, verify_entry, EntryHeader, EntryKey};
use slicecache_agent::store::ObjectId;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = EntryHeader::decode(data) {
        let _ = verify_entry(data, &header.key);
    }
    let _ = verify_entry(data, &EntryKey::meta(ObjectId::from_cache_key("/fuzz")));
    let nonce = data.first().copied().map_or(0, u64::from);
    let _ = scan_region(data, nonce);
    let _ = ObjectMeta::decode(data);
});
