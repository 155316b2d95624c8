#!/usr/bin/env bash
# Local NATS server with JetStream for integration tests.
#
#   scripts/nats.sh start|stop|restart|status|wipe
#
# Uses Debian's nats-server binary, run by hand in the background (never the distro's
# systemd unit). JetStream data lives under $GRAPHBRIDGE_RUN/nats and survives restarts.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUN=${GRAPHBRIDGE_RUN:-/tmp/graphbridge-brokers}/nats
PORT=${NATS_PORT:-14222}
MON_PORT=${NATS_MON_PORT:-18222}
START_TIMEOUT=${NATS_START_TIMEOUT:-30}
STOP_TIMEOUT=${NATS_STOP_TIMEOUT:-15}
PIDFILE=$RUN/nats.pid
LOG=$RUN/nats.log
MON=http://127.0.0.1:$MON_PORT

log() { echo "nats.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ensure_installed() {
  command -v nats-server >/dev/null && return 0
  command -v curl >/dev/null || die "curl is missing too (apt-get install -y curl)"
  log "installing nats-server from Debian (apt output in $RUN/apt.log)"
  export DEBIAN_FRONTEND=noninteractive
  # Try without `apt-get update` first (fast when lists are fresh); refresh once if that fails.
  { timeout 300 apt-get install -y -q nats-server ||
      { timeout 300 apt-get update -q && timeout 300 apt-get install -y -q nats-server; }
  } >"$RUN/apt.log" 2>&1 || { tail -n 20 "$RUN/apt.log" >&2; die "could not install nats-server"; }
}

# Our server's pid, only if alive and really nats-server (guards against pid reuse).
running_pid() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ -n $pid ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q nats-server || return 1
  echo "$pid"
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# Debian's 2.9.10 answers ok on /healthz?js-enabled-only=true even with JetStream off, so
# also require /jsz to report a store_dir (it says "disabled": true without JetStream).
healthy() {
  curl -fsS --max-time 2 "$MON/healthz?js-enabled-only=true" 2>/dev/null | grep -q '"ok"' &&
    curl -fsS --max-time 2 "$MON/jsz" 2>/dev/null | grep -q '"store_dir"'
}

start() {
  local pid deadline t0=$SECONDS
  mkdir -p "$RUN"
  if pid=$(running_pid); then
    healthy && { log "already running (pid $pid)"; return 0; }
    log "running (pid $pid) but not healthy yet, waiting"
  else
    ensure_installed
    for p in "$PORT" "$MON_PORT"; do
      port_open "$p" && die "port $p is already in use by another process"
    done
    echo "=== start $(date -Is) ===" >>"$LOG"
    # The monitoring listener binds to the -a host too (nats-server has no separate flag),
    # so everything stays on 127.0.0.1. JetStream keeps its data in $RUN/jetstream.
    # setsid+nohup and all fds to the log: see kafka.sh.
    setsid nohup nats-server -js -a 127.0.0.1 -p "$PORT" -m "$MON_PORT" --store_dir "$RUN" \
      </dev/null 8>&- >>"$LOG" 2>&1 &
    pid=$!
    echo "$pid" >"$PIDFILE"
    log "started pid $pid, waiting up to ${START_TIMEOUT}s for $MON/healthz"
  fi
  deadline=$((SECONDS + START_TIMEOUT))
  until healthy; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "nats-server died during startup; last log lines:"
      tail -n 30 "$LOG" >&2 || true
      rm -f "$PIDFILE"
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      log "not healthy after ${START_TIMEOUT}s; last log lines:"
      tail -n 30 "$LOG" >&2 || true
      exit 1
    fi
    sleep 0.3
  done
  log "ready on nats://127.0.0.1:$PORT after $((SECONDS - t0))s"
}

status() {
  local pid
  if ! pid=$(running_pid); then
    log "stopped"
    return 3
  fi
  if healthy; then
    log "running (pid $pid), healthy on nats://127.0.0.1:$PORT"
  else
    log "running (pid $pid) but $MON/healthz is not ok"
    return 1
  fi
}

lock_for "${1:-}"

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop && start ;;
  status) status ;;
  wipe) stop && rm -rf "$RUN" && log "wiped $RUN" ;;
  *) echo "usage: $0 start|stop|restart|status|wipe" >&2; exit 2 ;;
esac
