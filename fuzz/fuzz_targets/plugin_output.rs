//! Fuzzes the plugin-output converter through
//! `mailplug::runtime::fuzz::plugin_output`: any bytes, decoded into what a
//! hostile guest could return (events with spans into a request body, SMTP
//! settings, plugin info), must be accepted or refused with a message,
//! never panic; every accepted event is free of control characters. The
//! same entry point runs in `cargo test --lib runtime::fuzz` (property test
//! and the seed corpus), so this code path is checked by normal builds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailplug::runtime::fuzz::{accepted_events_are_clean, plugin_output};

fuzz_target!(|data: &[u8]| {
    let out = plugin_output(data);
    if let Ok(events) = &out.events {
        assert!(accepted_events_are_clean(events), "{events:?}");
    }
});
