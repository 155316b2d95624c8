#!/usr/bin/env bash
# The crate boundaries and feature sets that the workspace promises, checked from the
# dependency graph (cargo tree) and by compiling the reduced builds (cargo clippy):
# - graphbridge-event (what downstream consumers depend on) pulls in no broker client, no
#   crypto provider and no async runtime;
# - the production feature set (the container image's) links no simulator, token issuer or
#   Graph stand-in;
# - a build without default features (file sink only, no librdkafka) and the production build
#   compile without warnings.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fail=0

event_tree=$(cargo tree --locked -p graphbridge-event -e normal --prefix none)
echo "check-features: graphbridge-event depends on $(wc -l <<<"$event_tree") crates (cargo tree lines)"
for banned in rdkafka async-nats aws-lc-rs aws-lc-sys ring tokio mio reqwest hyper; do
  if grep -qE "^$banned v" <<<"$event_tree"; then
    echo "check-features: graphbridge-event pulls in $banned" >&2
    fail=1
  fi
done

prod_tree=$(cargo tree --locked -p graphbridge --no-default-features --features production -e normal --prefix none)
if grep -qE "^graphbridge-sim v" <<<"$prod_tree"; then
  echo "check-features: the production feature set links graphbridge-sim" >&2
  fail=1
fi
bare_tree=$(cargo tree --locked -p graphbridge --no-default-features -e normal --prefix none)
for banned in rdkafka rdkafka-sys async-nats opentelemetry graphbridge-sim; do
  if grep -qE "^$banned v" <<<"$bare_tree"; then
    echo "check-features: --no-default-features still pulls in $banned" >&2
    fail=1
  fi
done
((fail == 0)) || exit 1

cargo clippy --locked -p graphbridge --no-default-features -- -D warnings
cargo clippy --locked -p graphbridge --no-default-features --features production -- -D warnings
echo "check-features: ok"
