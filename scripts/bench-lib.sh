# shellcheck shell=bash
# Shared by the benchmarks (sourced, not run): a release build, a working directory, a
# `serve` with a Kafka sink, and the simulator pointed at it. Expects ROOT.

PORT=${BENCH_PORT:-28080}
ISSUER_PORT=${BENCH_ISSUER_PORT:-28443}
ADMIN_PORT=${BENCH_ADMIN_PORT:-29090}
BITS=${BITS:-2048}
BIN=$ROOT/target/release/graphbridge
APP_ID=5a9e7c1d-0b3f-4e2a-9c6d-7f8e9a0b1c2d
BROKER_RUN=${GRAPHBRIDGE_RUN:-/tmp/graphbridge-brokers}

# PIN=1 (the default with 2 or more cores): the bridge gets core 0 to itself; the simulator and
# the brokers share the others. "Per core" then means one core of the bridge's own, as in a
# deployment, instead of a core whose caches and time slices the load generator and Kafka also
# use (which cost the bridge 10-25 % more CPU per item on this 2-core machine). PIN=0 shares.
CORES=$(nproc)
# ON_BRIDGE_CPUS / ON_OTHER_CPUS prefix a command (taskset execs it: $! stays the bridge's pid).
if [ "${PIN:-1}" = 1 ] && ((CORES >= 2)); then
  BRIDGE_CPUS=0
  OTHER_CPUS=1-$((CORES - 1))
  ON_BRIDGE_CPUS=(taskset -c "$BRIDGE_CPUS")
  ON_OTHER_CPUS=(taskset -c "$OTHER_CPUS")
  BRIDGE_CORES=1
else
  BRIDGE_CPUS="" OTHER_CPUS="" ON_BRIDGE_CPUS=() ON_OTHER_CPUS=()
  BRIDGE_CORES=$CORES
fi
export BRIDGE_CORES

# pin_brokers CPUS: moves every thread of the running Kafka and NATS onto CPUS.
pin_brokers() {
  local pidfile pid
  for pidfile in "$BROKER_RUN/kafka/kafka.pid" "$BROKER_RUN/nats/nats.pid"; do
    pid=$(cat "$pidfile" 2>/dev/null) || continue
    taskset -a -p -c "$1" "$pid" >/dev/null 2>&1 || true
  done
}

# bench_start: release build, brokers, a work dir ($WORK) with a key of $BITS bits.
bench_start() {
  scripts/setup.sh
  cargo build --release --quiet --bin graphbridge --example rsa_limit
  scripts/brokers.sh up
  eval "$(scripts/brokers.sh env)"
  WORK=$(mktemp -d /tmp/graphbridge-bench.XXXXXX)
  SERVE_PID=""
  # The brokers outlive the bench (tests reuse them): give them every core back at the end.
  trap 'stop_serve; wait 2>/dev/null || true; [ -z "$OTHER_CPUS" ] || pin_brokers "0-$((CORES - 1))"' EXIT
  if [ -n "$OTHER_CPUS" ]; then
    pin_brokers "$OTHER_CPUS"
    echo "bridge on core $BRIDGE_CPUS; simulator and brokers on cores $OTHER_CPUS (PIN=0 to share)"
  fi
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

# start_serve CONFIG [SERVE_ARGS...]: runs serve in the background (SERVE_PID) and waits for
# /healthz (not /readyz: readiness waits for the token keys, which the simulator serves).
start_serve() {
  "${ON_BRIDGE_CPUS[@]}" "$BIN" --config "$1" serve "${@:2}" 2>>"$WORK/serve.log" &
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
  "${ON_OTHER_CPUS[@]}" "$BIN" --config "$cfg" simulate --target "http://127.0.0.1:$PORT" \
    --cert "$WORK/keys/bench.crt" --cert-id bench --client-state bench-client-state \
    --issuer-listen "127.0.0.1:$ISSUER_PORT" --issuer-key "$WORK/issuer.der" \
    --pid "$SERVE_PID" --json "$@"
}
