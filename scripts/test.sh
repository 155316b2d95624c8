#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, starts a real Kafka (KRaft)
# and a real NATS JetStream on 127.0.0.1, runs fmt, clippy and every test, stops the brokers,
# then checks the Helm chart, compose file and Dockerfile (chart-check.sh, with the binary the
# tests built), builds and runs the container image with podman (container-check.sh), runs
# docker-compose.yml's quick start with podman-compose on local stand-in images (compose-check.sh),
# and runs the README's two commands on a fresh Debian machine in a container (fresh-machine-check.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# A full disk shows up as a linker bus error deep in the build: say it plainly up front.
free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
if ((free_kib < 6 * 1024 * 1024)); then
  echo "test.sh: warning: $((free_kib / 1024 / 1024)) GiB free here; a test build needs about 5 GiB" >&2
fi

scripts/setup.sh
# Ports and a run directory of this run's own: two runs on one host do not collide. The ports
# are below the ephemeral range: while a broker is down, a client reconnecting to an ephemeral
# port on loopback can be given that very port and connect to itself.
free_port() {
  python3 - <<'PY'
import random, socket
for port in random.sample(range(20000, 32000), 200):
    try:
        socket.create_server(("127.0.0.1", port)).close()
        print(port)
        break
    except OSError:
        pass
PY
}
export GRAPHBRIDGE_RUN=${GRAPHBRIDGE_RUN:-$(mktemp -d /tmp/graphbridge-brokers.XXXXXX)}
export KAFKA_PORT=${KAFKA_PORT:-$(free_port)} KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$(free_port)}
export KAFKA_SASL_PORT=${KAFKA_SASL_PORT:-$(free_port)} KAFKA_MTLS_PORT=${KAFKA_MTLS_PORT:-$(free_port)}
export NATS_PORT=${NATS_PORT:-$(free_port)} NATS_MON_PORT=${NATS_MON_PORT:-$(free_port)}
export NATS_SECURE_PORT=${NATS_SECURE_PORT:-$(free_port)} NATS_SECURE_MON_PORT=${NATS_SECURE_MON_PORT:-$(free_port)}
trap 'scripts/brokers.sh down; rm -rf "$GRAPHBRIDGE_RUN"' EXIT
# The brokers start while the static checks and clippy run; the tests wait for them.
scripts/brokers.sh up &
brokers=$!
eval "$(scripts/brokers.sh env)"

cargo fmt --check
python3 scripts/config-reference.py --check
python3 scripts/check-cycles.py
scripts/check-features.sh
scripts/deny.sh
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
wait "$brokers"
cargo test --workspace --all-targets --all-features --locked
scripts/chart-check.sh
for v in PORT ADMIN_PORT CONTROLLER_ADMIN_PORT ISSUER_PORT GRAPH_PORT; do
  export "CONTAINER_CHECK_$v=$(free_port)"
done
scripts/container-check.sh target/debug/graphbridge
for v in BRIDGE_PORT ADMIN_PORT NATS_PORT; do
  export "COMPOSE_CHECK_$v=$(free_port)"
done
scripts/compose-check.sh target/debug/graphbridge
# The README's two commands on a fresh Debian machine, a container (fresh-machine-check.sh);
# not again inside that machine's own run of this script.
[ -n "${GRAPHBRIDGE_TEST_IN_FRESH_MACHINE:-}" ] || scripts/fresh-machine-check.sh
echo "== test.sh: every check passed"
