#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml): licenses, bans (a second version of a crate
# fails unless deny.toml lists it) and sources (crates.io only), over every feature.
# The advisories check is left out: it downloads the RustSec database, which the build machines
# cannot reach; run `cargo deny check advisories` where the network allows it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VERSION=0.20.2
if [[ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $VERSION" ]]; then
  echo "deny.sh: installing cargo-deny $VERSION (a few minutes, once per machine)" >&2
  cargo install --locked "cargo-deny@$VERSION"
fi
cargo deny --locked check licenses bans sources
