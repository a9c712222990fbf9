//! The agent's config file: parsing and validating arbitrary text never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slicecache_agent::config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(cfg) = config::parse(&text) {
        let _ = config::validate(&cfg);
    }
});
