//! The decryptor with arbitrary `encryptedContent` against a real key.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    graphbridge_core::fuzzing::decrypt_content(data);
});
