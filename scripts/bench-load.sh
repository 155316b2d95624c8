#!/usr/bin/env bash
# The load benchmark: `serve` (release build, Kafka sink) driven by `graphbridge simulate` on
# this machine, next to the machine's own RSA limit measured in the same run.
#
#   scripts/bench-load.sh                 # defaults: BITS=2048 COUNT=20000
#   BITS=4096 COUNT=5000 scripts/bench-load.sh
#
# Phases:
#   1. RSA limit: RSA-OAEP private-key ops/s per core with every core busy (aws-lc-rs, the
#      bridge's own primitive) and `openssl speed` for reference.
#   2. Saturation: unique keys, as fast as the bridge takes them; notifications per bridge
#      CPU-second (= per fully used core) and its ratio to the RSA limit per core.
#   3. Latency: 70 % of the saturated rate for DURATION seconds; ack-latency percentiles.
#   4. Pass-through: one reused wrapped key (the unwrapped-key cache answers): the cost of
#      everything except RSA.
# Every phase verifies in Kafka that each acked item arrived exactly once.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BITS=${BITS:-2048}
COUNT=${COUNT:-20000}
DURATION=${DURATION:-20}
CONCURRENCY=${CONCURRENCY:-8}
BATCH=${BATCH:-50}
# The latency phase uses smaller batches, closer to what Graph sends per POST.
LAT_BATCH=${LAT_BATCH:-10}
PORT=${BENCH_PORT:-28080}
ISSUER_PORT=${BENCH_ISSUER_PORT:-28443}
ADMIN_PORT=${BENCH_ADMIN_PORT:-29090}

scripts/setup.sh
cargo build --release --quiet --bin graphbridge --example rsa_limit
BIN=$ROOT/target/release/graphbridge
scripts/brokers.sh up
eval "$(scripts/brokers.sh env)"

WORK=$(mktemp -d /tmp/graphbridge-bench.XXXXXX)
SERVE_PID=""
cleanup() { [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BIN" keys generate --id bench --bits "$BITS" --out "$WORK/keys" >/dev/null
PREFIX="bench-$(date +%s)"
cat >"$WORK/graphbridge.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
[graph]
client_state = "bench-client-state"
app_ids = ["5a9e7c1d-0b3f-4e2a-9c6d-7f8e9a0b1c2d"]
keys_dir = "$WORK/keys"
[graph.validation_tokens]
# The simulator plays Microsoft's token service on this port.
openid_config_url = "http://127.0.0.1:$ISSUER_PORT/.well-known/openid-configuration"
[sink]
kind = "kafka"
[sink.kafka]
brokers = "$GRAPHBRIDGE_TEST_KAFKA"
[sink.kafka.topics]
channel_messages = "$PREFIX.channel"
chat_messages = "$PREFIX.chat"
lifecycle = "$PREFIX.lifecycle"
deadletter = "$PREFIX.deadletter"
[telemetry]
log_level = "warn"
EOF

echo "== RSA limit ($BITS bits)"
RSA=$("$ROOT/target/release/examples/rsa_limit" "$BITS" 3)
echo "aws-lc-rs: $RSA"
openssl speed -seconds 3 "rsa$BITS" 2>/dev/null | grep -E "^rsa *$BITS" | awk '{print "openssl speed (one core): " $6 " private ops/s"}' || true
RSA_PER_CORE=$(echo "$RSA" | python3 -c 'import json,sys; print(json.load(sys.stdin)["per_core_ops_per_s"])')

"$BIN" --config "$WORK/graphbridge.toml" serve 2>"$WORK/serve.log" &
SERVE_PID=$!
for _ in $(seq 1 100); do
  # healthz, not readyz: readiness waits for the token keys, served by the simulator below.
  curl -fsS "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null || { cat "$WORK/serve.log"; exit 1; }

sim() {
  "$BIN" --config "$WORK/graphbridge.toml" simulate --target "http://127.0.0.1:$PORT" \
    --cert "$WORK/keys/bench.crt" --cert-id bench --client-state bench-client-state \
    --issuer-listen "127.0.0.1:$ISSUER_PORT" --issuer-key "$WORK/issuer.der" \
    --pid "$SERVE_PID" --verify kafka --json "$@"
}

echo "== saturation: $COUNT notifications, unique keys"
sim --count "$COUNT" --seed 1 --concurrency "$CONCURRENCY" --batch-size "$BATCH" >"$WORK/saturation.json"
echo "== latency at 70 % of the saturated rate for ${DURATION}s, batches of $LAT_BATCH"
RATE=$(python3 -c 'import json,sys; print(round(0.7 * json.load(open(sys.argv[1]))["throughput_items_per_s"]))' "$WORK/saturation.json")
sim --rate "$RATE" --duration "$DURATION" --seed 2 --concurrency "$CONCURRENCY" --batch-size "$LAT_BATCH" >"$WORK/latency.json"
echo "== pass-through: $COUNT notifications, one reused wrapped key"
sim --count "$COUNT" --seed 3 --reuse-key --concurrency "$CONCURRENCY" --batch-size "$BATCH" >"$WORK/passthrough.json"

python3 - "$WORK" "$RSA_PER_CORE" "$RATE" <<'PY'
import json, os, sys
work, rsa, rate = sys.argv[1], float(sys.argv[2]), sys.argv[3]
cores = os.cpu_count()
def load(name): return json.load(open(os.path.join(work, name + ".json")))
for name in ("saturation", "latency", "passthrough"):
    r = load(name)
    v = r["verification"]; b = r["bridge"] or {}; l = r["ack_latency"]
    print(f"{name:12} {r['throughput_items_per_s']:8.0f} items/s total, {r['throughput_items_per_s']/cores:7.0f}/s per core, "
          f"{r['items_per_cpu_second'] or 0:7.0f} per bridge CPU-second | p50 {l['p50_ms']:.1f} p90 {l['p90_ms']:.1f} "
          f"p99 {l['p99_ms']:.1f} p99.9 {l['p999_ms']:.1f} max {l['max_ms']:.1f} ms | peak RSS {b.get('peak_rss_mib', 0):.1f} MiB | "
          f"verify {'PASSED' if v['passed'] else 'FAILED'} ({v['found']}/{v['expected']})")
sat = load("saturation")
print(f"RSA-{os.environ.get('BITS', '2048')} limit per core: {rsa:.0f} ops/s on {cores} cores")
print(f"ratio (notifications per bridge CPU-second / RSA ops per core-second): {(sat['items_per_cpu_second'] or 0) / rsa:.2f}")
print(f"ratio (notifications/s per core, simulator sharing the machine / RSA ops per core-second): {sat['throughput_items_per_s'] / cores / rsa:.2f}")
print(f"latency phase ran at {rate} items/s")
ok = all(load(n)["verification"]["passed"] for n in ("saturation", "latency", "passthrough"))
sys.exit(0 if ok else 1)
PY
