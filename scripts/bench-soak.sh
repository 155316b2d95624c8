#!/usr/bin/env bash
# The soak benchmark: `serve` (release, Kafka sink, RSA-2048, tokens on) under steady load for
# DURATION seconds, its resident memory sampled every INTERVAL seconds. Memory is flat when the
# last third of the samples is no higher than the middle third (allocator noise aside).
#
#   scripts/bench-soak.sh                    # defaults: DURATION=600 RATE=400 INTERVAL=10
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-600}
RATE=${RATE:-400}
INTERVAL=${INTERVAL:-10}
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

bench_start
write_config "$WORK/graphbridge.toml" "$GRAPHBRIDGE_TEST_KAFKA"
start_serve "$WORK/graphbridge.toml"

echo "== soak: $RATE items/s for ${DURATION}s, RSS every ${INTERVAL}s"
sim "$WORK/graphbridge.toml" --verify kafka --rate "$RATE" --duration "$DURATION" --batch-size 10 \
  --concurrency 8 --bad-fraction 0.02 >"$WORK/soak.json" &
SIM_PID=$!
: >"$WORK/rss.txt"
while kill -0 "$SIM_PID" 2>/dev/null; do
  awk '/^VmRSS/ { print $2 }' "/proc/$SERVE_PID/status" >>"$WORK/rss.txt"
  sleep "$INTERVAL"
done
wait "$SIM_PID"

python3 - "$WORK/soak.json" "$WORK/rss.txt" "$INTERVAL" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rss = [int(x) / 1024 for x in open(sys.argv[2]).read().split()]
step = int(sys.argv[3])
print("RSS MiB every", step, "s:", " ".join(f"{x:.1f}" for x in rss))
third = max(1, len(rss) // 3)
mid, last = rss[third:2 * third], rss[-third:]
l, v, b = r["ack_latency"], r["verification"], r["bridge"] or {}
print(f"soak         {r['items_acked']} items acked at {r['throughput_items_per_s']:.0f}/s | ack p50 {l['p50_ms']:.1f} "
      f"p99 {l['p99_ms']:.1f} max {l['max_ms']:.1f} ms | verify {'PASSED' if v['passed'] else 'FAILED'} ({v['found']}/{v['expected']})")
print(f"memory       start {rss[0]:.1f} MiB, middle third max {max(mid):.1f}, last third max {max(last):.1f}, "
      f"peak RSS {b.get('peak_rss_mib', 0):.1f} MiB")
flat = max(last) <= max(mid) * 1.05 + 1
print("memory flat" if flat else "memory GROWING")
sys.exit(0 if v["passed"] and flat else 1)
PY
