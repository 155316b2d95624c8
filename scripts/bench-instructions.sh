#!/usr/bin/env bash
# Instructions per pass-through notification in Pipeline::process (envelope parse to records,
# one reused wrapped key, no broker), counted by valgrind's callgrind on the criterion bench
# `batch/pass_through_cpu`. Unlike CPU time on a shared 2-core machine, which drifts by 10-30 %
# between runs, the count is repeatable: use it to compare two builds.
#
# SHA-256 (HMAC, key-cache fingerprint, event id) is printed apart: under valgrind aws-lc runs
# its AVX code, several times the instructions of the SHA extensions it uses natively.
#
#   scripts/bench-instructions.sh            # prints Ir per item, SHA-256 and the rest
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

scripts/setup.sh valgrind

bench=$(cargo bench --bench pipeline --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))/\1/p' | tail -1)
out=$(mktemp /tmp/graphbridge-callgrind.XXXXXX)
trap 'rm -f "$out"' EXIT
# Only the pipeline is counted: the batch's stages (deliver) and the envelope parse.
valgrind --tool=callgrind --callgrind-out-file="$out" \
  --toggle-collect='graphbridge_core::pipeline::Pipeline::deliver*' \
  --toggle-collect='graphbridge_core::graph::envelope::Envelope::parse_limited*' \
  "$bench" --bench pass_through_cpu --profile-time 3 >/dev/null 2>&1
sha=$(callgrind_annotate "$out" 2>/dev/null | awk '/sha256_block_data_order/ { gsub(",", "", $1); s += $1 } END { print s + 0 }')

python3 - "$out" "$sha" <<'PY'
import re, sys

path, sha = sys.argv[1], int(sys.argv[2])
names, total, items, callee = {}, 0, 0, ""
for line in open(path):
    if line.startswith(("summary:", "totals:")):
        total = int(line.split()[1])
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3).strip()
        if m.group(1) == "cfn":
            callee = names.get(m.group(2), "")
        continue
    # Every item becomes one message record: count the calls to Record::message.
    if line.startswith("calls=") and callee.endswith("Record::message"):
        items += int(line[6:].split()[0])
if not items:
    sys.exit("no items counted: was the bench built with debug symbols?")
print(f"{items} items; instructions per item: {total / items:,.0f} "
      f"(SHA-256 {sha / items:,.0f}, the rest {(total - sha) / items:,.0f})")
PY
