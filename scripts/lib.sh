# shellcheck shell=bash
# Shared by the scripts (sourced, not run): the broker scripts' stop (kafka.sh and nats.sh, each
# defining running_pid, log, PIDFILE and STOP_TIMEOUT) and the container scripts' as_root
# (rootful podman: container-check.sh, compose-check.sh, fresh-machine-check.sh).

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
