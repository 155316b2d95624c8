# shellcheck shell=bash
# Shared by the scripts (sourced, not run): the broker scripts' stop (kafka.sh and nats.sh, each
# defining running_pid, log, PIDFILE and STOP_TIMEOUT) and the container scripts' rootful podman
# (container-check.sh, fresh-machine-check.sh).

# Stops the service if it runs; idempotent.
stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$PIDFILE"
    log "not running"
    return 0
  fi
  log "stopping pid $pid"
  stop_pid "$pid" "$STOP_TIMEOUT"
  rm -f "$PIDFILE"
  log "stopped"
}

# stop_pid PID TIMEOUT_S: TERM, then KILL after TIMEOUT_S; waits (bounded) until it is gone so
# the port is free when this returns.
stop_pid() {
  local pid=$1 deadline
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "still alive after ${2}s, sending KILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  fi
}

# One start/stop at a time per run dir (parallel test jobs may all call `start`); the broker
# itself is started with fd 8 closed so it never holds this lock. Read-only verbs take none.
lock_for() {
  case "$1" in start | stop | restart | wipe)
    mkdir -p "${RUN%/*}"
    exec 8>"$RUN.lock"
    flock -w 1200 8 || die "timed out waiting for another $0 to finish"
  esac
}

# as_root ARGS...: the calling script again as root through sudo, unless it is root already.
# The environment is kept, PATH too (sudo's secure_path would drop ~/.cargo/bin and Go), with
# the sbin directories root has and an ordinary user's PATH leaves out (iptables for podman).
as_root() {
  [ "$(id -u)" = 0 ] || exec sudo --preserve-env env "PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin" "$0" "$@"
}

# podman_ready: Debian's podman, runc, catatonit and mmdebstrap, installed when missing (run from
# the repository's root). RLIMIT_NPROC may not be set here: `default_ulimits = []`.
podman_ready() {
  scripts/setup.sh podman runc catatonit mmdebstrap
  local conf=/etc/containers/containers.conf
  if ! grep -q '^default_ulimits' "$conf" 2>/dev/null; then
    mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = []\n' >>"$conf"
  fi
}

# crun fails here ("cgroups in hybrid mode not supported"): runc.
podman() { command podman --runtime runc "$@"; }

# debian_image IMAGE TAR [MMDEBSTRAP-ARGS...]: a Debian bookworm image from Debian's packages, no
# registry: mmdebstrap --variant=apt into TAR (removed afterwards), then podman import.
debian_image() {
  local image=$1 tar=$2
  shift 2
  mmdebstrap --quiet --variant=apt "$@" bookworm "$tar"
  podman import --quiet "$tar" "$image" >/dev/null
  rm -f "$tar"
}
