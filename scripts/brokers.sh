#!/usr/bin/env bash
# Start/stop the Kafka and NATS brokers used by the integration tests.
#
#   scripts/brokers.sh up|down|status|env
#   eval "$(scripts/brokers.sh env)"   # sets GRAPHBRIDGE_TEST_KAFKA / GRAPHBRIDGE_TEST_NATS
set -euo pipefail

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

case "${1:-}" in
  up)
    # In parallel: NATS is ready in about a second, Kafka takes several (more on a cold cache).
    "$DIR/nats.sh" start &
    nats_pid=$!
    kafka_rc=0 nats_rc=0
    "$DIR/kafka.sh" start || kafka_rc=$?
    wait "$nats_pid" || nats_rc=$?
    if ((kafka_rc || nats_rc)); then
      echo "brokers.sh: failed (kafka rc=$kafka_rc, nats rc=$nats_rc)" >&2
      exit 1
    fi
    ;;
  down)
    rc=0
    "$DIR/kafka.sh" stop || rc=1
    "$DIR/nats.sh" stop || rc=1
    exit "$rc"
    ;;
  status)
    rc=0
    "$DIR/kafka.sh" status || rc=$?
    "$DIR/nats.sh" status || rc=$?
    exit "$rc"
    ;;
  env)
    echo "export GRAPHBRIDGE_TEST_KAFKA=127.0.0.1:${KAFKA_PORT:-19092}"
    echo "export GRAPHBRIDGE_TEST_NATS=nats://127.0.0.1:${NATS_PORT:-14222}"
    ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
