#!/usr/bin/env bash
# The spool benchmark: what Graph sees while the broker is down, and how fast the backlog
# drains once it is back. Release build, RSA-2048, validation tokens on.
#
#   scripts/bench-spool.sh                   # defaults: RATE=500 DURATION=60
#
# Phases:
#   1. Spooling: `serve` with the spool on and a Kafka address nothing listens on; the
#      simulator sends RATE items/s for DURATION s. Every batch is fsynced to the spool and
#      acknowledged: ack-latency percentiles.
#   2. Drain: `serve` restarted on the same spool with the real Kafka; the backlog's items
#      per second from start to an empty spool (decrypt, normalize, publish, cursor fsync).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RATE=${RATE:-500}
DURATION=${DURATION:-60}
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

bench_start
SPOOL="[spool]
enabled = true
dir = \"$WORK/spool\""
DEAD=127.0.0.1:$((PORT + 7)) # nothing listens here: the broker is down
write_config "$WORK/down.toml" "$DEAD" "$SPOOL"
write_config "$WORK/up.toml" "$GRAPHBRIDGE_TEST_KAFKA" "$SPOOL"

echo "== spooling: broker down, $RATE items/s for ${DURATION}s, batches of 10"
start_serve "$WORK/down.toml"
sim "$WORK/down.toml" --rate "$RATE" --duration "$DURATION" --batch-size 10 --concurrency 8 >"$WORK/spooling.json"
SPOOLED=$(metric graphbridge_spool_depth_items)
stop_serve

echo "== drain: broker up, $SPOOLED items waiting"
t0=$(date +%s.%N)
start_serve "$WORK/up.toml"
deadline=$((SECONDS + 600))
while [ "$(metric graphbridge_spool_depth_items)" != "0" ]; do
  ((SECONDS < deadline)) || { echo "spool not drained in 600 s" >&2; exit 1; }
  sleep 0.2
done
t1=$(date +%s.%N)
DRAINED=$(metric graphbridge_spool_drained_items_total)
stop_serve

python3 - "$WORK/spooling.json" "$DRAINED" "$t0" "$t1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
drained, t0, t1 = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
l = r["ack_latency"]
print(f"spooling     {r['items_acked']} items acked ({r['items_spooled']} spooled) at {r['throughput_items_per_s']:.0f}/s, "
      f"{r['items_failed']} given up | ack p50 {l['p50_ms']:.1f} p90 {l['p90_ms']:.1f} p99 {l['p99_ms']:.1f} "
      f"p99.9 {l['p999_ms']:.1f} max {l['max_ms']:.1f} ms")
print(f"drain        {drained:.0f} items in {t1 - t0:.1f} s (from start, incl. start-up): {drained / (t1 - t0):.0f} items/s")
sys.exit(0 if r["items_failed"] == 0 and r["items_acked"] == r["items_spooled"] == drained else 1)
PY
