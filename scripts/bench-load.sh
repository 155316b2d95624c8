#!/usr/bin/env bash
# The load benchmark: `serve` (release build, Kafka sink) driven by `graphbridge simulate` on
# this machine, next to the machine's own RSA limit measured in the same run.
#
#   scripts/bench-load.sh                 # defaults: BITS=2048 COUNT=20000
#   BITS=4096 COUNT=5000 scripts/bench-load.sh
#   SOURCE=eventhubs scripts/bench-load.sh   # `serve --source eventhubs` reading a hub instead
#
# SOURCE=eventhubs: the simulator writes Graph's collections to a hub topic on the test Kafka's
# SASL_SSL listener (PLAIN, `$ConnectionString`, as Event Hubs' Kafka endpoint) and the bridge
# reads it; the bridge's CPU and the wall-clock time count until every item is verified in the
# output topics. There is no ack, so no latency phase.
#
# Phases:
#   1. RSA limit: RSA-OAEP private-key ops/s per core with every core busy (aws-lc-rs, the
#      bridge's own primitive) and `openssl speed` for reference; measured again after the
#      load, and the ratio uses the mean of both (the machine's speed drifts).
#   2. Saturation: unique keys, as fast as the bridge takes them; notifications per bridge
#      CPU-second (= per fully used core) and its ratio to the RSA limit per core.
#   3. Latency: 70 % of the saturated rate for DURATION seconds; ack-latency percentiles.
#   4. Pass-through: one reused wrapped key (the unwrapped-key cache answers): the cost of
#      everything except RSA. The simulator builds every batch first (--pregenerate): making
#      an item costs it about what handling one costs the bridge, so otherwise the generator,
#      not the bridge, sets the pace, and a half-idle bridge pays more per item.
# Every phase verifies in Kafka that each acked item arrived exactly once.
# With 2 or more cores the bridge runs on core 0 alone, the simulator and brokers on the rest
# (PIN=0: all share every core); see bench-lib.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

COUNT=${COUNT:-20000}
DURATION=${DURATION:-20}
CONCURRENCY=${CONCURRENCY:-8}
BATCH=${BATCH:-50}
# The latency phase uses smaller batches, closer to what Graph sends per POST.
LAT_BATCH=${LAT_BATCH:-10}
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

SOURCE=${SOURCE:-webhook}
bench_start
if [ "$SOURCE" = eventhubs ]; then
  SECURE_DIR=$(scripts/secure.sh dir)
  write_config "$WORK/graphbridge.toml" "$GRAPHBRIDGE_TEST_KAFKA" "[eventhubs]
brokers = \"$GRAPHBRIDGE_TEST_KAFKA_SASL_SSL\"
topic = \"$PREFIX.hub\"
consumer_group = \"$PREFIX-group\"
connection_string_file = \"$SECURE_DIR/eventhub.connection-string\"
[eventhubs.properties]
\"ssl.ca.location\" = \"$SECURE_DIR/ca.pem\""
  SERVE_ARGS=(--source eventhubs)
  SIM_ARGS=(--to-hub)
  PHASES=(saturation passthrough)
else
  write_config "$WORK/graphbridge.toml" "$GRAPHBRIDGE_TEST_KAFKA"
  SERVE_ARGS=() SIM_ARGS=()
  PHASES=(saturation latency passthrough)
fi

echo "== RSA limit ($BITS bits)"
RSA=$("$ROOT/target/release/examples/rsa_limit" "$BITS" 3)
echo "aws-lc-rs: $RSA"
# OpenSSL's figure on one core (the bridge's core when pinned), for the ratio beside aws-lc's.
OPENSSL=$("${ON_BRIDGE_CPUS[@]}" openssl speed -seconds 3 "rsa$BITS" 2>/dev/null | awk -v b="$BITS" '$1 == "rsa" && $2 == b && $3 == "bits" { print $6 }' | head -1)
echo "openssl speed (one core): ${OPENSSL:-?} private ops/s"

start_serve "$WORK/graphbridge.toml" "${SERVE_ARGS[@]}"
echo "== saturation ($SOURCE): $COUNT notifications, unique keys"
sim "$WORK/graphbridge.toml" "${SIM_ARGS[@]}" --verify kafka --count "$COUNT" --seed 1 --concurrency "$CONCURRENCY" --batch-size "$BATCH" >"$WORK/saturation.json"
RATE=$(python3 -c 'import json,sys; print(round(0.7 * json.load(open(sys.argv[1]))["throughput_items_per_s"]))' "$WORK/saturation.json")
if [ "$SOURCE" != eventhubs ]; then
  echo "== latency at 70 % of the saturated rate for ${DURATION}s, batches of $LAT_BATCH"
  sim "$WORK/graphbridge.toml" --verify kafka --rate "$RATE" --duration "$DURATION" --seed 2 --concurrency "$CONCURRENCY" --batch-size "$LAT_BATCH" >"$WORK/latency.json"
fi
echo "== pass-through ($SOURCE): $COUNT notifications, one reused wrapped key"
sim "$WORK/graphbridge.toml" "${SIM_ARGS[@]}" --verify kafka --count "$COUNT" --seed 3 --reuse-key --pregenerate --concurrency "$CONCURRENCY" --batch-size "$BATCH" >"$WORK/passthrough.json"

# The machine's speed drifts (shared cores, frequency scaling): measure the limit again after the
# load and use the mean of both, so the ratio compares like with like.
echo "== RSA limit again ($BITS bits)"
RSA_AFTER=$("$ROOT/target/release/examples/rsa_limit" "$BITS" 3)
echo "aws-lc-rs: $RSA_AFTER"

PHASES="${PHASES[*]}" OPENSSL="${OPENSSL:-0}" python3 - "$WORK" "$RSA" "$RSA_AFTER" "$RATE" <<'PY'
import json, os, sys
work, before, after, rate = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
phases = os.environ["PHASES"].split()
openssl = float(os.environ["OPENSSL"])
rsa = (before["per_core_ops_per_s"] + after["per_core_ops_per_s"]) / 2
cores = os.cpu_count()
bridge_cores = int(os.environ["BRIDGE_CORES"])  # 1 when pinned
def load(name): return json.load(open(os.path.join(work, name + ".json")))
for name in phases:
    r = load(name)
    v = r["verification"]; b = r["bridge"] or {}; l = r["ack_latency"]
    print(f"{name:12} {r['throughput_items_per_s']:8.0f} items/s total, {r['throughput_items_per_s']/bridge_cores:7.0f}/s per bridge core, "
          f"{r['items_per_cpu_second'] or 0:7.0f} per bridge CPU-second | p50 {l['p50_ms']:.1f} p90 {l['p90_ms']:.1f} "
          f"p99 {l['p99_ms']:.1f} p99.9 {l['p999_ms']:.1f} max {l['max_ms']:.1f} ms | peak RSS {b.get('peak_rss_mib', 0):.1f} MiB | "
          f"verify {'PASSED' if v['passed'] else 'FAILED'} ({v['found']}/{v['expected']})")
sat = load("saturation")
print(f"RSA-{os.environ.get('BITS', '2048')} limit per core: {rsa:.0f} ops/s on {cores} cores "
      f"(mean of {before['per_core_ops_per_s']} before and {after['per_core_ops_per_s']} after the load)")
print(f"ratio (notifications per bridge CPU-second / RSA ops per core-second): {(sat['items_per_cpu_second'] or 0) / rsa:.2f}")
if openssl:
    print(f"ratio to openssl speed rsa{os.environ.get('BITS', '2048')} ({openssl:.0f} ops/s, one core): {(sat['items_per_cpu_second'] or 0) / openssl:.2f}")
print(f"ratio (notifications/s per bridge core, wall clock / RSA ops per core-second): {sat['throughput_items_per_s'] / bridge_cores / rsa:.2f}"
      + (" (the simulator and brokers share the bridge's cores)" if bridge_cores == cores else ""))
if "latency" in phases:
    print(f"latency phase ran at {rate} items/s")
ok = all(load(n)["verification"]["passed"] for n in phases)
sys.exit(0 if ok else 1)
PY
