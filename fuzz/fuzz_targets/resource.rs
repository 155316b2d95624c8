//! Resource strings: `teams('…')/channels('…')/messages('…')/replies('…')`, `chats('…')/…`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    graphbridge_core::fuzzing::resource(data);
});
