#!/usr/bin/env bash
# The README's first command: installs what the build needs when it is missing (Debian packages:
# a C toolchain, cmake, pkg-config and the OpenSSL, curl and zlib headers that librdkafka and
# openssl-sys are built against; see setup.sh --build), then runs `graphbridge demo`: `serve`
# in-process with a fresh key and the file sink, Graph's handshake and notifications, no broker.
# Arguments go to `demo`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh --build
exec cargo run --release --locked -- demo "$@"
