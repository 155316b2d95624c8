//! The validation token verifier with arbitrary tokens against the synthetic JWKS.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    graphbridge_core::fuzzing::token(data);
});
