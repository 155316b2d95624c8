# shellcheck shell=bash
# Shared by kafka.sh and nats.sh (sourced, not run). Each defines running_pid, log, PIDFILE
# and STOP_TIMEOUT.

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
