#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (FUZZ_SECONDS each, default 60) on stable
# Rust (`-s none`: coverage-guided libFuzzer without a sanitizer, which would need nightly).
# New corpus entries land in fuzz/corpus/<target>; a crash is written to fuzz/artifacts/<target>
# and the script fails. Commit interesting corpus entries and every crash: tests/it/fuzz_corpus.rs
# replays them on every test run.
#
#   scripts/fuzz.sh                      # all targets, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh decrypt
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT/fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(envelope resource decrypt token)
for t in "${TARGETS[@]}"; do
  echo "== fuzz $t for ${SECONDS_EACH}s" >&2
  mkdir -p "corpus/$t"
  cargo fuzz run -s none -O "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -max_len=65536 -timeout=10 -rss_limit_mb=2048
done
