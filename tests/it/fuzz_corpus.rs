//! Replays every committed fuzz input (seeds and any crash found) through the fuzz entry
//! points, so a regression fails `cargo test` without running the fuzzer.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in ["corpus", "artifacts"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz")
            .join(dir)
            .join(target);
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            // (A running fuzzer may delete entries while we read.)
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            f(&bytes);
            n += 1;
        }
    }
    n
}

#[test]
fn envelope_corpus() {
    assert!(replay("envelope", graphbridge_core::fuzzing::envelope) > 0);
}

#[test]
fn resource_corpus() {
    assert!(replay("resource", graphbridge_core::fuzzing::resource) > 0);
}

#[test]
fn decrypt_corpus() {
    assert!(replay("decrypt", graphbridge_core::fuzzing::decrypt_content) > 0);
}

#[test]
fn token_corpus() {
    assert!(replay("token", graphbridge_core::fuzzing::token) > 0);
}
