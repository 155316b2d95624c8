//! The request parser: envelope, limits, every item, and normalization of what parses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    graphbridge_core::fuzzing::envelope(data);
});
