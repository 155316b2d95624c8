#!/usr/bin/env bash
# The container image, built and run for real with podman (no Docker daemon, no registry here):
#   1. a Debian bookworm base image from Debian's packages (mmdebstrap --variant=apt, podman
#      import), passed to the Dockerfile as RUNTIME_BASE;
#   2. the image built with the binary CI already built (BINARY_FROM=prebuilt): the builder
#      stage needs a Rust image from a registry, which users have and this machine has not;
#   3. `serve` in the container as uid 10001 with a read-only root filesystem, keys and config
#      mounted read-only, the events on a mounted volume; `graphbridge simulate --verify file`
#      drives Graph's traffic at it (validation tokens on, bad items included) and checks every
#      acknowledged notification landed exactly once;
#   4. the container's `demo`;
#   5. the Helm chart's pods with `podman kube play`: the rendered serve Deployment, ConfigMap and
#      Secrets on this image, driven by `simulate --verify file`; then the subscriptions
#      controller's Deployment, with real subscription items from values, against the Graph
#      stand-in (its subscriptions listed, its /readyz green after a clean reconcile round);
#   6. everything torn down.
#
#   scripts/container-check.sh [BINARY]   (default target/debug/graphbridge: all features, so
#                                         the image also has `demo` and `simulate`)
# Needs root (rootful podman; re-runs itself with sudo) and Debian's podman, runc, catatonit
# and mmdebstrap, which it installs when missing, with the containers.conf this machine class
# needs (runc, no default ulimits: scripts/podman-lib.sh).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Rootful podman (host networking, runc): as root, or again through sudo.
as_root "$@"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/podman-lib.sh
source scripts/podman-lib.sh
BINARY=$(readlink -f "${1:-target/debug/graphbridge}")
IMAGE=localhost/graphbridge:ci
PORT=${CONTAINER_CHECK_PORT:-28180}
ADMIN=${CONTAINER_CHECK_ADMIN_PORT:-28190}
CONTROLLER_ADMIN=${CONTAINER_CHECK_CONTROLLER_ADMIN_PORT:-28191}
ISSUER=${CONTAINER_CHECK_ISSUER_PORT:-28143}
GRAPH=${CONTAINER_CHECK_GRAPH_PORT:-28144}
HELM=${HELM:-$(find "${GRAPHBRIDGE_CACHE:-$HOME/.cache/graphbridge}/bin" -name 'helm-*' -type f 2>/dev/null | sort | tail -1)}
NAME=graphbridge-ci-$$
t0=$SECONDS

step() { echo "== $* ($((SECONDS - t0))s)"; }
die() { echo "container-check: $*" >&2; exit 1; }

[ -x "$BINARY" ] || die "no binary at $BINARY (cargo build first)"
[ -x "$HELM" ] || die "no helm (scripts/chart-check.sh builds it; or set HELM)"
# shellcheck disable=SC2119 # no packages beyond podman's
podman_setup

WORK=$(mktemp -d /tmp/graphbridge-container.XXXXXX)
cleanup() {
  for f in "$WORK"/pods-*.yaml; do
    [ ! -f "$f" ] || podman kube down "$f" >/dev/null 2>&1 || true
  done
  [ -z "${STANDIN_PID:-}" ] || kill "$STANDIN_PID" 2>/dev/null || true
  podman rm -f "$NAME" >/dev/null 2>&1 || true
  podman rmi -f "$IMAGE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

step "base image from Debian packages (mmdebstrap, or the one made this week)"
graphbridge_base

step "image: the Dockerfile with RUNTIME_BASE=$GRAPHBRIDGE_BASE, BINARY_FROM=prebuilt"
mkdir -p "$WORK/context"
cp "$BINARY" "$WORK/context/graphbridge"
podman build --quiet --file Dockerfile --build-arg RUNTIME_BASE="$GRAPHBRIDGE_BASE" --build-arg BINARY_FROM=prebuilt \
  --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --tag "$IMAGE" "$WORK/context" >/dev/null
podman image inspect "$IMAGE" --format 'user {{.Config.User}}, entrypoint {{.Config.Entrypoint}}, {{.Size}} bytes'

step "serve in the container: non-root, read-only root filesystem, keys and config mounted"
mkdir -p "$WORK/keys" "$WORK/config" "$WORK/data"
"$BINARY" keys generate --id ci --out "$WORK/keys" >/dev/null
chmod 0644 "$WORK/keys/"*
# The image's user owns the data volume, as a fsGroup would arrange in Kubernetes.
chown 10001:10001 "$WORK/data"
cat >"$WORK/config/graphbridge.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$ADMIN"
[graph]
client_state = "container-check-state"
app_ids = ["5a9e7c1d-0b3f-4e2a-9c6d-7f8e9a0b1c2d"]
keys_dir = "/etc/graphbridge/keys"
[graph.validation_tokens]
# The simulator on the host plays Microsoft's token service.
openid_config_url = "http://127.0.0.1:$ISSUER/.well-known/openid-configuration"
[sink]
kind = "file"
[sink.file]
path = "/var/lib/graphbridge/events.jsonl"
deadletter_path = "/var/lib/graphbridge/deadletter.jsonl"
[telemetry]
log_format = "json"
EOF
# Host networking: the container's loopback is the host's, where the simulator and its token
# issuer run (the ports stay on 127.0.0.1).
podman run --detach --name "$NAME" --network host --read-only --tmpfs /tmp \
  --cap-drop ALL --security-opt no-new-privileges \
  -v "$WORK/keys:/etc/graphbridge/keys:ro" -v "$WORK/config:/etc/graphbridge/config:ro" \
  -v "$WORK/data:/var/lib/graphbridge" \
  "$IMAGE" --config /etc/graphbridge/config/graphbridge.toml serve >/dev/null
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$ADMIN/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$ADMIN/healthz" >/dev/null || { podman logs "$NAME"; die "serve did not come up"; }
echo "running as uid $(podman exec "$NAME" cat /proc/1/status | awk '/^Uid:/ {print $2}'), root filesystem read-only: $(podman inspect "$NAME" --format '{{.HostConfig.ReadonlyRootfs}}')"

step "simulate --verify file against the container"
# The simulator reads the events from the mounted volume: the same file, seen from the host.
sed -e "s|/var/lib/graphbridge/|$WORK/data/|" -e "s|/etc/graphbridge/keys|$WORK/keys|" \
  "$WORK/config/graphbridge.toml" >"$WORK/host.toml"
"$BINARY" --config "$WORK/host.toml" simulate --target "http://127.0.0.1:$PORT" \
  --cert "$WORK/keys/ci.crt" --cert-id ci --client-state container-check-state \
  --issuer-listen "127.0.0.1:$ISSUER" --count 500 --batch-size 20 --bad-fraction 0.05 \
  --verify file | tee "$WORK/simulate.txt"
grep -q "PASSED" "$WORK/simulate.txt" || { podman logs "$NAME" | tail -20; die "verification failed"; }
podman stop --time 15 "$NAME" >/dev/null
echo "serve stopped: exit code $(podman inspect "$NAME" --format '{{.State.ExitCode}}')"

step "demo in the container"
podman run --rm --network none --read-only --tmpfs /tmp --cap-drop ALL "$IMAGE" demo | tee "$WORK/demo.txt" | tail -3
grep -q "^demo ok" "$WORK/demo.txt" || die "the container's demo failed"

step "the chart's serve pod with podman kube play"
# kube play cannot do what the cluster adds around a pod (Service, Ingress, HPA, PDB, helm test
# hooks): those are left out, and the probes are not run (podman would run them as systemd
# timers, which this machine has not; its complaints go to podman.log). The pod joins the host's network (the Service's job here) and its
# data volume is a host directory, where the simulator reads the events.
# The Secrets as host directories: podman 4.3's kube play mounts a Secret's `data` values
# still base64-encoded (and `stringData` not at all), so each secret volume becomes a hostPath.
mkdir -p "$WORK/secrets/gb-keys" "$WORK/secrets/gb-client-state" "$WORK/secrets/gb-graph-app"
cp "$WORK/keys/ci.pem" "$WORK/keys/ci.crt" "$WORK/secrets/gb-keys/"
echo container-check-state >"$WORK/secrets/gb-client-state/client-state"
printf stand-in-secret >"$WORK/secrets/gb-graph-app/client-secret"
chmod -R a+rX "$WORK/secrets"
cat >"$WORK/values.yaml" <<EOF
image: {repository: localhost/graphbridge, tag: ci, pullPolicy: IfNotPresent}
keys: {existingSecret: gb-keys}
clientState: {existingSecret: gb-client-state}
graphAuth: {existingSecret: gb-graph-app}
autoscaling: {enabled: false}
replicaCount: 1
subscriptions: {enabled: true}
config:
  server: {listen: "127.0.0.1:$PORT", admin_listen: "127.0.0.1:$ADMIN", shutdown_delay_ms: 0}
  graph:
    app_ids: ["5a9e7c1d-0b3f-4e2a-9c6d-7f8e9a0b1c2d"]
    validation_tokens:
      openid_config_url: "http://127.0.0.1:$ISSUER/.well-known/openid-configuration"
    api_base: "http://127.0.0.1:$GRAPH/v1.0"
    auth:
      authority: "http://127.0.0.1:$GRAPH"
      tenant_id: "8afd02d6-ebdd-4270-a515-c749898ea5c5"
      client_id: "11111111-2222-3333-4444-555555555555"
      client_secret_file: /etc/graphbridge/graph-auth/client-secret
  sink:
    kind: file
    file: {path: /var/lib/graphbridge/events.jsonl, deadletter_path: /var/lib/graphbridge/deadletter.jsonl}
  subscriptions:
    items:
      - name: all-chat-messages
        resource: /chats/getAllMessages
        notification_url: "http://127.0.0.1:$PORT/notifications"
        lifecycle_url: "http://127.0.0.1:$PORT/lifecycle"
        certificate_id: ci
      - name: all-channel-messages
        resource: /teams/getAllMessages
        notification_url: "http://127.0.0.1:$PORT/notifications"
        lifecycle_url: "http://127.0.0.1:$PORT/lifecycle"
        certificate_id: ci
EOF
render() { "$HELM" template gb charts/graphbridge --kube-version 1.30.0 -f "$WORK/values.yaml" "$@" >"$WORK/rendered.yaml"; }
render
mkdir -p "$WORK/pod-data"
chown 10001:10001 "$WORK/pod-data"
# pods-DEPLOYMENT.yaml: that Deployment (and its ConfigMap, renamed after it so that two such
# files can run side by side), on the host network, data and Secrets on host directories.
pods() {
  python3 - "$WORK/rendered.yaml" "$1" "$WORK/pod-data" "$WORK/secrets" >"$WORK/pods-$1.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
keep = [d for d in docs if d["kind"] == "ConfigMap" and "graphbridge.toml" in d.get("data", {})]
config = keep[0]["metadata"]["name"]
keep[0]["metadata"]["name"] = f"{sys.argv[2]}-config"
for d in docs:
    if d["kind"] == "Deployment" and d["metadata"]["name"] == sys.argv[2]:
        spec = d["spec"]["template"]["spec"]
        spec["hostNetwork"] = True
        for c in spec["containers"]:
            # On the host network podman refuses port mappings; probes keep using the ports
            # by number.
            ports = {p["name"]: p["containerPort"] for p in c.pop("ports", [])}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                get = c.get(probe, {}).get("httpGet")
                if get and get.get("port") in ports:
                    get["port"] = ports[get["port"]]
        for v in spec["volumes"]:
            if "secret" in v:
                v["hostPath"] = {"path": f"{sys.argv[4]}/{v.pop('secret')['secretName']}", "type": "Directory"}
            if v.get("configMap", {}).get("name") == config:
                v["configMap"]["name"] = f"{sys.argv[2]}-config"
            if v["name"] == "data":
                v.pop("emptyDir", None)
                v["hostPath"] = {"path": sys.argv[3], "type": "Directory"}
        keep.append(d)
assert len(keep) == 2, [d["metadata"]["name"] for d in docs]
yaml.safe_dump_all(keep, sys.stdout)
PY
}
wait_http() { # URL: until it answers 2xx, bounded
  for _ in $(seq 1 150); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}
pods gb-graphbridge
podman kube play --quiet "$WORK/pods-gb-graphbridge.yaml" >/dev/null 2>>"$WORK/podman.log"
pod=$(podman pod ps --format '{{.Name}}' | grep '^gb-graphbridge' | head -1)
wait_http "http://127.0.0.1:$ADMIN/healthz" || { podman pod logs "$pod" | tail -20; die "the serve pod did not come up"; }
podman ps --filter "pod=$pod" --format '{{.Names}} {{.Image}} {{.Status}}'
sed -i "s|$WORK/data/|$WORK/pod-data/|" "$WORK/host.toml"
"$BINARY" --config "$WORK/host.toml" simulate --target "http://127.0.0.1:$PORT" \
  --cert "$WORK/keys/ci.crt" --cert-id ci --client-state container-check-state \
  --issuer-listen "127.0.0.1:$ISSUER" --count 500 --batch-size 20 --bad-fraction 0.05 \
  --verify file | tee "$WORK/pod-simulate.txt"
grep -q "PASSED" "$WORK/pod-simulate.txt" || { podman pod logs "$pod" | tail -20; die "verification against the pod failed"; }

step "the chart's subscriptions controller pod with podman kube play, against the Graph stand-in"
"$BINARY" subscriptions stand-in --listen "127.0.0.1:$GRAPH" >"$WORK/stand-in.log" 2>&1 &
STANDIN_PID=$!
# With a broker, as in a cluster (NATS, the one scripts/test.sh started): lifecycle events
# arrive through it and /readyz is the controller's own, green after a clean reconcile round.
# The serve pod above stays up: it answers the handshakes for the items' URLs.
NATS_URL=${GRAPHBRIDGE_TEST_NATS:?the controller pod needs a NATS: scripts/brokers.sh up, then eval \"\$(scripts/brokers.sh env)\"}
render --set config.sink.kind=nats --set "config.sink.nats.url=$NATS_URL" \
  --set "config.server.admin_listen=127.0.0.1:$CONTROLLER_ADMIN"
pods gb-graphbridge-subscriptions
podman kube play --quiet "$WORK/pods-gb-graphbridge-subscriptions.yaml" >/dev/null 2>>"$WORK/podman.log"
pod=$(podman pod ps --format '{{.Name}}' | grep '^gb-graphbridge-subscriptions' | head -1)
wait_http "http://127.0.0.1:$CONTROLLER_ADMIN/readyz" || { podman pod logs "$pod" | tail -30; die "the controller pod never became ready (no clean reconcile round)"; }
podman ps --filter "pod=$pod" --format '{{.Names}} {{.Image}} {{.Status}}'
echo "controller /readyz: $(curl -fsS "http://127.0.0.1:$CONTROLLER_ADMIN/readyz")"
curl -fsS "http://127.0.0.1:$CONTROLLER_ADMIN/metrics" | grep -E '^graphbridge_subscriptions_(last_reconcile|unhealthy)'
# What the stand-in now holds, as the app sees it: `subscriptions list` with the pod's rendered
# configuration, its Secrets' paths pointed at the host directories.
python3 -c 'import sys, yaml; print(next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ConfigMap")["data"]["graphbridge.toml"])' \
  "$WORK/pods-gb-graphbridge-subscriptions.yaml" >"$WORK/controller.toml"
GRAPHBRIDGE_GRAPH__KEYS_DIR="$WORK/secrets/gb-keys" \
  GRAPHBRIDGE_GRAPH__CLIENT_STATE_FILE="$WORK/secrets/gb-client-state/client-state" \
  GRAPHBRIDGE_GRAPH__AUTH__CLIENT_SECRET_FILE="$WORK/secrets/gb-graph-app/client-secret" \
  "$BINARY" --config "$WORK/controller.toml" subscriptions list | tee "$WORK/subscriptions.txt"
[ "$(grep -c ' item=all-' "$WORK/subscriptions.txt")" = 2 ] || die "the stand-in does not hold the two subscriptions"
podman kube down "$WORK/pods-gb-graphbridge-subscriptions.yaml" >/dev/null 2>>"$WORK/podman.log"
podman kube down "$WORK/pods-gb-graphbridge.yaml" >/dev/null 2>>"$WORK/podman.log"

step "container check passed"
