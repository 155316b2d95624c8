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
#   5. everything torn down.
#
#   scripts/container-check.sh [BINARY]   (default target/debug/graphbridge: all features, so
#                                         the image also has `demo` and `simulate`)
# Needs root (rootful podman) and Debian's podman, runc, catatonit and mmdebstrap, which it
# installs when missing. crun fails here ("cgroups in hybrid mode"), hence --runtime runc;
# RLIMIT_NPROC may not be set here, hence `default_ulimits = []` in containers.conf.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BINARY=$(readlink -f "${1:-target/debug/graphbridge}")
IMAGE=localhost/graphbridge:ci
BASE=localhost/graphbridge-base:bookworm
PORT=${CONTAINER_CHECK_PORT:-28180}
ADMIN=${CONTAINER_CHECK_ADMIN_PORT:-28190}
ISSUER=${CONTAINER_CHECK_ISSUER_PORT:-28143}
NAME=graphbridge-ci-$$
t0=$SECONDS

step() { echo "== $* ($((SECONDS - t0))s)"; }
die() { echo "container-check: $*" >&2; exit 1; }
podman() { command podman --runtime runc "$@"; }

[ -x "$BINARY" ] || die "no binary at $BINARY (cargo build first)"
scripts/setup.sh podman runc catatonit mmdebstrap
conf=/etc/containers/containers.conf
if ! grep -q '^default_ulimits' "$conf" 2>/dev/null; then
  mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = []\n' >>"$conf"
fi

WORK=$(mktemp -d /tmp/graphbridge-container.XXXXXX)
cleanup() {
  podman rm -f "$NAME" >/dev/null 2>&1 || true
  podman rmi -f "$IMAGE" "$BASE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

step "base image from Debian packages (mmdebstrap)"
# What the Dockerfile's runtime stage installs (ca-certificates, libssl3) comes preinstalled;
# passwd for its useradd.
mmdebstrap --quiet --variant=apt --include=ca-certificates,libssl3,passwd bookworm "$WORK/rootfs.tar"
podman import --quiet "$WORK/rootfs.tar" "$BASE" >/dev/null
rm -f "$WORK/rootfs.tar"

step "image: the Dockerfile with RUNTIME_BASE=$BASE, BINARY_FROM=prebuilt"
mkdir -p "$WORK/context"
cp "$BINARY" "$WORK/context/graphbridge"
podman build --quiet --file Dockerfile --build-arg RUNTIME_BASE="$BASE" --build-arg BINARY_FROM=prebuilt \
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

step "container check passed"
