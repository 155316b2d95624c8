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
# Debian installs nats-server in /usr/sbin, which an ordinary user's PATH leaves out.
PATH=$PATH:/usr/sbin

RUN=${GRAPHBRIDGE_RUN:-/tmp/graphbridge-brokers}/nats
PORT=${NATS_PORT:-14222}
MON_PORT=${NATS_MON_PORT:-18222}
START_TIMEOUT=${NATS_START_TIMEOUT:-30}
STOP_TIMEOUT=${NATS_STOP_TIMEOUT:-15}
PIDFILE=$RUN/nats.pid
LOG=$RUN/nats.log
MON=http://127.0.0.1:$MON_PORT
# A second server, secured (credentials from scripts/secure.sh): TLS that requires a client
# certificate, and either a user with a password or an NKey user. JetStream data of its own.
SECURE_PORT=${NATS_SECURE_PORT:-14223}
SECURE_MON_PORT=${NATS_SECURE_MON_PORT:-18223}
SECURE_PIDFILE=$RUN/nats-secure.pid
SECURE_CONF=$RUN/nats-secure.conf
SECURE=$(dirname "${BASH_SOURCE[0]}")/secure.sh

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
  pid=$(cat "${1:-$PIDFILE}" 2>/dev/null) || return 1
  [[ -n $pid ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q nats-server || return 1
  echo "$pid"
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# Debian's 2.9.10 answers ok on /healthz?js-enabled-only=true even with JetStream off, so
# also require /jsz to report a store_dir (it says "disabled": true without JetStream).
healthy() {
  local mon=${1:-$MON}
  curl -fsS --max-time 2 "$mon/healthz?js-enabled-only=true" 2>/dev/null | grep -q '"ok"' &&
    curl -fsS --max-time 2 "$mon/jsz" 2>/dev/null | grep -q '"store_dir"'
}

write_secure_config() {
  local sec
  "$SECURE" make
  sec=$("$SECURE" dir)
  cat >"$SECURE_CONF" <<EOF
listen: 127.0.0.1:$SECURE_PORT
http: 127.0.0.1:$SECURE_MON_PORT
jetstream { store_dir: "$RUN/secure" }
tls {
  cert_file: "$sec/server.pem"
  key_file: "$sec/server.key"
  ca_file: "$sec/ca.pem"
  verify: true
  timeout: 5
}
authorization {
  users: [
    { user: graphbridge, password: "$(cat "$sec/nats.password")" }
    { nkey: $(cat "$sec/nats-user.pub") }
  ]
}
EOF
}

# launch PIDFILE ARGS...: nats-server in the background, outliving this script.
launch() {
  local pidfile=$1
  shift
  echo "=== start $(date -Is) $* ===" >>"$LOG"
  # setsid+nohup and all fds to the log: see kafka.sh.
  setsid nohup nats-server "$@" </dev/null 8>&- >>"$LOG" 2>&1 &
  echo $! >"$pidfile"
}

# wait_healthy PID MON: until the server at MON is healthy, or fail with its log.
wait_healthy() {
  local pid=$1 mon=$2 deadline=$((SECONDS + START_TIMEOUT))
  until healthy "$mon"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "nats-server died during startup; last log lines:"
      tail -n 30 "$LOG" >&2 || true
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      log "not healthy after ${START_TIMEOUT}s; last log lines:"
      tail -n 30 "$LOG" >&2 || true
      exit 1
    fi
    sleep 0.3
  done
}

start() {
  local pid spid t0=$SECONDS
  mkdir -p "$RUN"
  pid=$(running_pid) || pid=""
  spid=$(running_pid "$SECURE_PIDFILE") || spid=""
  [[ -n $pid && -n $spid ]] || ensure_installed
  if [[ -z $pid ]]; then
    for p in "$PORT" "$MON_PORT"; do
      port_open "$p" && die "port $p is already in use by another process"
    done
    # The monitoring listener binds to the -a host too (nats-server has no separate flag),
    # so everything stays on 127.0.0.1. JetStream keeps its data in $RUN/jetstream.
    launch "$PIDFILE" -js -a 127.0.0.1 -p "$PORT" -m "$MON_PORT" --store_dir "$RUN"
    pid=$(cat "$PIDFILE")
    log "started pid $pid, waiting up to ${START_TIMEOUT}s for $MON/healthz"
  fi
  if [[ -z $spid ]]; then
    for p in "$SECURE_PORT" "$SECURE_MON_PORT"; do
      port_open "$p" && die "port $p is already in use by another process"
    done
    write_secure_config
    launch "$SECURE_PIDFILE" -c "$SECURE_CONF"
    spid=$(cat "$SECURE_PIDFILE")
    log "started the secured server, pid $spid"
  fi
  wait_healthy "$pid" "$MON"
  wait_healthy "$spid" "http://127.0.0.1:$SECURE_MON_PORT"
  log "ready on nats://127.0.0.1:$PORT and tls://127.0.0.1:$SECURE_PORT after $((SECONDS - t0))s"
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

# The secured server stops with the plain one (lib.sh's stop handles $PIDFILE only).
stop_secure() {
  local pid
  if pid=$(running_pid "$SECURE_PIDFILE"); then
    log "stopping the secured server, pid $pid"
    stop_pid "$pid" "$STOP_TIMEOUT"
  fi
  rm -f "$SECURE_PIDFILE"
}

lock_for "${1:-}"

case "${1:-}" in
  start) start ;;
  stop) stop && stop_secure ;;
  restart) stop && stop_secure && start ;;
  status) status ;;
  wipe) stop && stop_secure && rm -rf "$RUN" && log "wiped $RUN" ;;
  *) echo "usage: $0 start|stop|restart|status|wipe" >&2; exit 2 ;;
esac
