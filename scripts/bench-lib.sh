# shellcheck shell=bash
# Shared by the benchmarks (sourced, not run): a release build, a working directory, a
# `serve` with a Kafka sink, and the simulator pointed at it. Expects ROOT.

PORT=${BENCH_PORT:-28080}
ISSUER_PORT=${BENCH_ISSUER_PORT:-28443}
ADMIN_PORT=${BENCH_ADMIN_PORT:-29090}
BITS=${BITS:-2048}
BIN=$ROOT/target/release/graphbridge
APP_ID=5a9e7c1d-0b3f-4e2a-9c6d-7f8e9a0b1c2d

# bench_start: release build, brokers, a work dir ($WORK) with a key of $BITS bits.
bench_start() {
  scripts/setup.sh
  cargo build --release --quiet --bin graphbridge --example rsa_limit
  scripts/brokers.sh up
  eval "$(scripts/brokers.sh env)"
  WORK=$(mktemp -d /tmp/graphbridge-bench.XXXXXX)
  SERVE_PID=""
  trap 'stop_serve; wait 2>/dev/null || true' EXIT
  "$BIN" keys generate --id bench --bits "$BITS" --out "$WORK/keys" >/dev/null
  PREFIX="bench-$(date +%s)"
}

# write_config FILE BROKERS [EXTRA_TOML]: tokens on (the simulator is the issuer), Kafka sink.
write_config() {
  cat >"$1" <<TOML
[server]
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
[graph]
client_state = "bench-client-state"
app_ids = ["$APP_ID"]
keys_dir = "$WORK/keys"
[graph.validation_tokens]
# The simulator plays Microsoft's token service on this port.
openid_config_url = "http://127.0.0.1:$ISSUER_PORT/.well-known/openid-configuration"
[sink]
kind = "kafka"
[sink.kafka]
brokers = "$2"
[sink.kafka.topics]
channel_messages = "$PREFIX.channel"
chat_messages = "$PREFIX.chat"
lifecycle = "$PREFIX.lifecycle"
deadletter = "$PREFIX.deadletter"
[telemetry]
log_level = "${LOG_LEVEL:-warn}"
${3:-}
TOML
}

# start_serve CONFIG: runs serve in the background (SERVE_PID) and waits for /healthz (not
# /readyz: readiness waits for the token keys, which the simulator serves).
start_serve() {
  "$BIN" --config "$1" serve 2>>"$WORK/serve.log" &
  SERVE_PID=$!
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  cat "$WORK/serve.log"
  return 1
}

# stop_serve: SIGTERM and wait (a clean drain).
stop_serve() {
  if [ -n "${SERVE_PID:-}" ]; then
    kill "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=""
  fi
}

# metric NAME: an unlabelled metric's value from the admin port.
metric() {
  curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}

# sim CONFIG [ARGS...]: the simulator against the running serve, JSON report on stdout.
sim() {
  local cfg=$1
  shift
  "$BIN" --config "$cfg" simulate --target "http://127.0.0.1:$PORT" \
    --cert "$WORK/keys/bench.crt" --cert-id bench --client-state bench-client-state \
    --issuer-listen "127.0.0.1:$ISSUER_PORT" --issuer-key "$WORK/issuer.der" \
    --pid "$SERVE_PID" --json "$@"
}
