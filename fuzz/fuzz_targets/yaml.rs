//! Fuzzes `mailplug::config::yaml::parse`: any UTF-8 input must either
//! load or fail with a located error, never panic, overflow the stack or
//! exhaust memory (the loader's limits apply as in production).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailplug::config::yaml::{Limits, parse};

fuzz_target!(|data: &[u8]| {
    // Configuration files that are not UTF-8 are refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = parse(text, Limits::default()) {
        assert!(e.pos.line >= 1 && e.pos.col >= 1, "unlocated error: {e:?}");
    }
});
