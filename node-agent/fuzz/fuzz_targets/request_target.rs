//! The request-target normaliser: never panics; what it accepts starts with
//! '/', holds no dot segment and no control byte, and normalises to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slicecache_agent::request_target::normalise;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(out) = normalise(target) else {
        return;
    };
    assert!(out.starts_with('/'));
    let path = out.split('?').next().unwrap_or("");
    assert!(path.split('/').all(|seg| seg != "." && seg != ".."), "{out:?}");
    assert!(!out.bytes().any(|b| b < 0x20 || b == 0x7f));
    assert_eq!(normalise(&out).as_deref(), Ok(out.as_str()));
});
