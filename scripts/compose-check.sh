#!/usr/bin/env bash
# docker-compose.yml run for real with podman-compose (Debian's, 1.0.3), the quick start's
# services on local stand-ins of their images (deploy/compose/local-images.yml, since no registry
# is reachable here):
#   1. what the stand-ins are built from: a Debian bookworm base image from Debian's packages
#      (scripts/podman-lib.sh, reused while its packages are unchanged and it is less than a week
#      old), Kafka 4.1.0's jars from Maven Central (scripts/kafka.sh fetch), the graphbridge binary;
#   2. `podman-compose up --build --no-start` of kafka, nats, keys, graphbridge, simulate and
#      consumer: the images built, the network, volumes and containers created as the files say;
#   3. the services started in the order docker-compose.yml's depends_on conditions give, which
#      podman-compose 1.0.3 does not follow (it only orders the starts), each waited for: kafka
#      healthy by its own healthcheck (`podman healthcheck run`: podman runs healthchecks from
#      systemd timers, which this machine has not), nats answering with JetStream on, keys exited
#      0, graphbridge's /healthz answering;
#   4. simulate, which plays Microsoft Graph against graphbridge and verifies through Kafka that
#      every acknowledged notification arrived exactly once: its verify line must say PASSED and
#      it must exit 0; the consumer service must have printed the events;
#   5. everything torn down (containers, volumes, network, the two graphbridge images), also on
#      failure. The base and the broker stand-ins stay as the next run's cache.
#
#   scripts/compose-check.sh [BINARY]   (default target/debug/graphbridge; it needs the `sim`
#                                       feature for the simulate service)
# Host ports on 127.0.0.1: COMPOSE_CHECK_BRIDGE_PORT, COMPOSE_CHECK_ADMIN_PORT,
# COMPOSE_CHECK_NATS_PORT. COMPOSE_CHECK_SIM_COUNT / COMPOSE_CHECK_SIM_RATE: the simulator's load
# (default 1000 at 250/s). COMPOSE_CHECK_CPUSET: CPUs for the builds and containers (e.g. 1).
# COMPOSE_CHECK_KEEP=1: leave the stack running when the check passed (it prints how to remove it).
# Needs root (rootful podman, bridge networking; re-runs itself with sudo) and installs Debian's
# podman, podman-compose, runc, catatonit and mmdebstrap when missing.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
as_root "$@"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/podman-lib.sh
source scripts/podman-lib.sh
BINARY=$(readlink -f "${1:-target/debug/graphbridge}")
KAFKA_STANDIN_VERSION=4.1.0 # the version of the image docker-compose.yml names
PROJECT=graphbridge-compose-$$
BUILT_HERE=dev.graphbridge.compose-check=1
export BRIDGE_PORT=${COMPOSE_CHECK_BRIDGE_PORT:-28280}
export BRIDGE_ADMIN_PORT=${COMPOSE_CHECK_ADMIN_PORT:-28290}
export NATS_CLIENT_PORT=${COMPOSE_CHECK_NATS_PORT:-28222}
export SIM_COUNT=${COMPOSE_CHECK_SIM_COUNT:-1000} SIM_RATE=${COMPOSE_CHECK_SIM_RATE:-250}
SERVICES=(kafka nats keys graphbridge simulate consumer)
t0=$SECONDS

step() { echo "== $* ($((SECONDS - t0))s)"; }
die() {
  echo "compose-check: $*" >&2
  exit 1
}
container() { echo "${PROJECT}_$1_1"; }
# podman-compose with both files; its chatter (every podman command, the merged file) goes to
# the log, shown when something fails.
# Every image it builds is labelled, also the multi-stage build's intermediate ones (the
# binary's stage), which teardown removes.
compose() {
  local args=("--podman-build-args=--label=$BUILT_HERE")
  [ -z "${COMPOSE_CHECK_CPUSET:-}" ] ||
    args+=("--podman-build-args=--cpuset-cpus=$COMPOSE_CHECK_CPUSET" "--podman-run-args=--cpuset-cpus=$COMPOSE_CHECK_CPUSET")
  echo "+ podman-compose $*" >>"$WORK/compose.log"
  podman-compose --project-name "$PROJECT" --file docker-compose.yml --file deploy/compose/local-images.yml \
    "${args[@]}" "$@" >>"$WORK/compose.log" 2>&1
}
# until CONDITION (a command) succeeds, at most SECONDS; false when it never did
within() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}
ours() { # KIND: this project's containers, volumes or networks
  local all=()
  [ "$1" != container ] || all=(--all)
  podman "$1" ls "${all[@]}" --quiet --filter "label=io.podman.compose.project=$PROJECT" 2>/dev/null
}
# What went wrong in a service, from its log: the distinct WARN and ERROR messages and exceptions,
# the last 12 (Kafka's last lines are its shutdown, not the cause).
problems() {
  podman logs "$(container "$1")" 2>&1 | grep -E '\b(WARN|ERROR|FATAL)\b|Exception' |
    sed -E 's/^\[[^]]*\] //' | awk '!seen[$0]++' | tail -n 12 || true
}
running() { [ "$(podman inspect --format '{{.State.Status}}' "$(container "$1")" 2>/dev/null)" = running ]; }
healthy() {
  running "$1" || die "$1 exited:"$'\n'"$(problems "$1")"
  podman healthcheck run "$(container "$1")" >/dev/null 2>&1
}
jetstream() { # the INFO line a NATS server greets its clients with
  local info=""
  { exec 3<>"/dev/tcp/127.0.0.1/$NATS_CLIENT_PORT"; } 2>/dev/null || return 1
  read -r -t 2 info <&3 || true
  exec 3<&-
  [[ $info == *'"jetstream":true'* ]]
}
exited() { [ "$(podman inspect --format '{{.State.Status}}' "$(container "$1")" 2>/dev/null)" = exited ]; }
answers() { curl -fsS "http://127.0.0.1:$BRIDGE_ADMIN_PORT/healthz" >/dev/null 2>&1; }
# What a service printed so far, into $WORK/SERVICE.log (grep reads a file: `podman logs | grep -q`
# would fail under pipefail when grep stops reading early).
logs() { podman logs "$(container "$1")" >"$WORK/$1.log" 2>&1; }
printed() { logs consumer && grep -q 'ce_specversion:1.0' "$WORK/consumer.log"; }
verdict() { logs simulate && grep -m1 '^verify ' "$WORK/simulate.log" >"$WORK/verify.txt"; }

[ -x "$BINARY" ] || die "no binary at $BINARY (cargo build first)"
podman_setup podman-compose
# The services reach each other by name (kafka:9092, also Kafka's own controller at kafka:9093;
# graphbridge:8080, simulate:8443): podman's DNS, aardvark-dns, which runs with netavark. On the
# CNI backend Debian's podman has no DNS and Kafka cannot even reach itself.
backend=$(podman info --format '{{.Host.NetworkBackend}}')
[ "$backend" = netavark ] || die "podman's network backend is $backend, not netavark: containers" \
  "would not resolve each other's names. Podman chose it when it first ran, before netavark and" \
  "aardvark-dns were installed; set network_backend = \"netavark\" in [network] of" \
  "/etc/containers/containers.conf (and remove the containers on CNI networks first)"
WORK=$(mktemp -d /tmp/graphbridge-compose.XXXXXX)
teardown() {
  local status=$?
  trap - EXIT
  if ((status != 0)); then
    echo "-- podman-compose's log (its errors, then its tail):" >&2
    grep -E '^Error' "$WORK/compose.log" | tail -n 5 >&2 || true
    tail -n 15 "$WORK/compose.log" >&2 || true
    for service in graphbridge simulate; do
      echo "-- $service's log (tail):" >&2
      podman logs --tail 15 "$(container "$service")" >&2 2>&1 || true
    done
  fi
  step "teardown"
  compose down --volumes || true
  # What podman-compose 1.0.3's down leaves: the network (and anything a failed step left).
  local kind ids service left=""
  for kind in container volume network; do
    mapfile -t ids < <(ours "$kind")
    ((${#ids[@]} == 0)) || podman "$kind" rm --force "${ids[@]}" >/dev/null 2>&1 || true
    left+=$(ours "$kind")
  done
  podman rmi --force graphbridge:local graphbridge-tools:local >/dev/null 2>&1 || true
  mapfile -t ids < <(podman images --quiet --filter dangling=true --filter "label=$BUILT_HERE")
  ((${#ids[@]} == 0)) || podman rmi --force "${ids[@]}" >/dev/null 2>&1 || true
  [ -z "$left" ] || { echo "compose-check: left behind: $left" >&2; status=1; }
  rm -rf "$WORK" target/compose deploy/compose/kafka/libs
  exit "$status"
}
trap teardown EXIT

step "what the images are built from"
graphbridge_base
libs=$(KAFKA_VERSION=$KAFKA_STANDIN_VERSION scripts/kafka.sh fetch)
rm -rf deploy/compose/kafka/libs target/compose
cp -r "$libs" deploy/compose/kafka/libs
mkdir -p target/compose
cp "$BINARY" target/compose/graphbridge

step "podman-compose up --build --no-start ${SERVICES[*]}"
compose up --build --no-start "${SERVICES[@]}"
podman ps --all --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}  {{.Image}}'
# podman-compose 1.0.3 goes on when a build fails (and exits 0): say which.
for service in "${SERVICES[@]}"; do
  podman container exists "$(container "$service")" ||
    die "no container for $service: a build failed"
done

step "kafka and nats"
compose start kafka nats
within 120 healthy kafka || die "kafka not healthy within 120 s:"$'\n'"$(problems kafka)"
echo "kafka healthy: $(podman inspect --format '{{.State.Health.Status}}' "$(container kafka)")"
within 30 jetstream || die "nats did not answer with JetStream on 127.0.0.1:$NATS_CLIENT_PORT"
echo "nats answers on 127.0.0.1:$NATS_CLIENT_PORT with JetStream on"

step "keys, until it completed"
compose start keys
within 60 exited keys || die "keys did not finish"
code=$(podman inspect --format '{{.State.ExitCode}}' "$(container keys)")
[ "$code" = 0 ] || die "keys exited $code: $(podman logs "$(container keys)" 2>&1)"
step "graphbridge and consumer"
compose start graphbridge consumer
within 60 answers || die "graphbridge's /healthz did not answer: $(podman logs --tail 30 "$(container graphbridge)" 2>&1)"
echo "graphbridge answers on 127.0.0.1:$BRIDGE_ADMIN_PORT/healthz"

step "simulate: $SIM_COUNT notifications at $SIM_RATE/s, verified through Kafka"
compose start simulate
within $((SIM_COUNT / SIM_RATE + 120)) verdict ||
  die "simulate gave no verdict"
within 60 exited simulate || die "simulate did not exit"
logs simulate
grep -E '^(sent|acked|rejected|verify) ' "$WORK/simulate.log" || true
code=$(podman inspect --format '{{.State.ExitCode}}' "$(container simulate)")
if ! grep -q 'PASSED' "$WORK/verify.txt" || [ "$code" != 0 ]; then
  die "verification failed (exit code $code)"
fi
within 60 printed || die "the consumer printed no events: $(podman logs --tail 20 "$(container consumer)" 2>&1)"
echo "consumer: $(grep -c 'ce_specversion:1.0' "$WORK/consumer.log") events printed so far, the first" \
  "$(grep -m1 -o 'ce_type:[^,]*' "$WORK/consumer.log")"
curl -fsS "http://127.0.0.1:$BRIDGE_ADMIN_PORT/metrics" >"$WORK/metrics.txt"
grep -E '^graphbridge_(accepted|published|rejected)_total' "$WORK/metrics.txt" || true

step "compose check passed"
if [ "${COMPOSE_CHECK_KEEP:-}" = 1 ]; then
  trap - EXIT
  rm -rf "$WORK"
  echo "left running as project $PROJECT; remove it with:"
  echo "  podman-compose -p $PROJECT -f docker-compose.yml -f deploy/compose/local-images.yml down --volumes" \
    "&& podman network rm ${PROJECT}_default"
fi
