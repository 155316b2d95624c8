#!/usr/bin/env bash
# Start/stop the Kafka and NATS brokers used by the integration tests.
#
#   scripts/brokers.sh up|down|status|env
#   eval "$(scripts/brokers.sh env)"   # sets GRAPHBRIDGE_TEST_KAFKA / GRAPHBRIDGE_TEST_NATS and
#                                      # the secured listeners' GRAPHBRIDGE_TEST_*_SECURE, _TLS_DIR
set -euo pipefail

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

case "${1:-}" in
  up)
    # The test CA, certificates and passwords both secured servers use.
    "$DIR/secure.sh" make
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
    # The same Kafka's SASL_SSL (SCRAM-SHA-512, PLAIN) and mTLS listeners; the secured NATS.
    echo "export GRAPHBRIDGE_TEST_KAFKA_SASL_SSL=127.0.0.1:${KAFKA_SASL_PORT:-19094}"
    echo "export GRAPHBRIDGE_TEST_KAFKA_MTLS=127.0.0.1:${KAFKA_MTLS_PORT:-19095}"
    echo "export GRAPHBRIDGE_TEST_NATS_SECURE=tls://127.0.0.1:${NATS_SECURE_PORT:-14223}"
    echo "export GRAPHBRIDGE_TEST_TLS_DIR=$("$DIR/secure.sh" dir)"
    ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
