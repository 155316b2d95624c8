#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, combined broker+controller) for integration tests.
#
#   scripts/kafka.sh start|stop|restart|status|wipe
#   scripts/kafka.sh class <main.Class> [args...]   # run any class from the Kafka jars
#   scripts/kafka.sh fetch                          # only fetch the jars; prints their directory
#
# Jars come from Maven Central (the only place we can reach), resolved once with Maven
# and cached outside the work tree. Data lives under $GRAPHBRIDGE_RUN/kafka and survives
# stop/restart (tests use that to simulate outages); only `wipe` deletes it.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Pinned rather than "latest" so test runs are reproducible. 4.3.1 is the newest release
# whose kafka-tools jar (console producer/consumer, admin CLIs) is on Central; 4.4.0 and
# 4.2.2 publish the broker but no kafka-tools. 3.9.x also works with this script.
KAFKA_VERSION=${KAFKA_VERSION:-4.3.1}
LOG4J_VERSION=${LOG4J_VERSION:-2.25.4}   # the log4j2 Kafka 4.3 itself builds against
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

CACHE=${GRAPHBRIDGE_CACHE:-$HOME/.cache/graphbridge}
LIBS=$CACHE/kafka-$KAFKA_VERSION/libs
RUN=${GRAPHBRIDGE_RUN:-/tmp/graphbridge-brokers}/kafka
DATA=$RUN/data
PORT=${KAFKA_PORT:-19092}
CPORT=${KAFKA_CONTROLLER_PORT:-19093}
# The secured listeners (credentials from scripts/secure.sh): SASL_SSL with SCRAM-SHA-512 and
# PLAIN (the PLAIN user `$ConnectionString` plays an Azure event hub's Kafka endpoint), and SSL
# that requires a client certificate.
SASL_PORT=${KAFKA_SASL_PORT:-19094}
MTLS_PORT=${KAFKA_MTLS_PORT:-19095}
SECURE=$(dirname "${BASH_SOURCE[0]}")/secure.sh
SCRAM_USER=graphbridge
START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
FETCH_TIMEOUT=${KAFKA_FETCH_TIMEOUT:-900}
PIDFILE=$RUN/kafka.pid
LOG=$RUN/kafka.log
BOOTSTRAP=127.0.0.1:$PORT
BROKER_LOG_OPTS=(-Dlog4j2.configurationFile="$RUN/log4j2-broker.properties" -Dlog4j.configuration="file:$RUN/log4j-broker.properties")
TOOLS_LOG_OPTS=(-Dlog4j2.configurationFile="$RUN/log4j2-tools.properties" -Dlog4j.configuration="file:$RUN/log4j-tools.properties")

log() { echo "kafka.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- fetching --------------------------------------------------------------------------

# Resolve kafka_2.13 + kafka-tools (+ a logging backend) into $LIBS via a throwaway pom.
# Runs in a subshell so the lock fd is closed afterwards (the broker must not inherit it).
fetch() (
  [[ -f $LIBS/.complete ]] && exit 0
  command -v mvn >/dev/null || die "mvn not found (apt-get install -y maven)"
  mkdir -p "$CACHE"
  # A lock so parallel test jobs don't download into the same directory at once.
  exec 9>"$CACHE/kafka-$KAFKA_VERSION.lock"
  flock -w "$FETCH_TIMEOUT" 9 || die "timed out waiting for another fetch of Kafka $KAFKA_VERSION"
  [[ -f $LIBS/.complete ]] && exit 0

  local tmp t0=$SECONDS logdeps=""
  tmp=$(mktemp -d)
  # Kafka 4 depends only on slf4j-api 1.7: without a binding the broker logs nothing, so add
  # log4j2's. Kafka 3 already brings slf4j-reload4j (log4j 1); a second binding would clash.
  [[ $KAFKA_VERSION == 3.* ]] || logdeps="
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>"
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central (one-off, cached in $LIBS)"
  cat >"$tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>graphbridge</groupId><artifactId>kafka-libs</artifactId><version>0</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version>
      <!-- connect-runtime (jetty, jersey, ...) is only for the Connect plugin-path tool -->
      <exclusions>
        <exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion>
        <exclusion><groupId>com.fasterxml.jackson.jakarta.rs</groupId><artifactId>*</artifactId></exclusion>
      </exclusions>
    </dependency>$logdeps
  </dependencies>
</project>
EOF
  rm -rf "$LIBS.tmp"
  if ! timeout "$FETCH_TIMEOUT" mvn -B -U -f "$tmp/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$LIBS.tmp" >"$tmp/mvn.log" 2>&1; then
    grep -E '^\[ERROR\] \S' "$tmp/mvn.log" | head -n 1 >&2 || true
    rm -rf "$tmp" "$LIBS.tmp"
    # e.g. 4.4.0 and 4.2.2 have no kafka-tools jar on Central
    die "Maven could not resolve Kafka $KAFKA_VERSION (try the default, or KAFKA_VERSION=3.9.1)"
  fi
  rm -rf "$tmp" "$LIBS"
  mv "$LIBS.tmp" "$LIBS"   # publish atomically: a half-done fetch is never reused
  touch "$LIBS/.complete"
  log "fetched $(find "$LIBS" -name "*.jar" | wc -l) jars in $((SECONDS - t0))s"
)

# --- config ----------------------------------------------------------------------------

write_config() {
  mkdir -p "$DATA"
  local sec
  "$SECURE" make
  sec=$("$SECURE" dir)
  cat >"$RUN/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT,SASL_SSL://127.0.0.1:$SASL_PORT,SSL://127.0.0.1:$MTLS_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,SASL_SSL://127.0.0.1:$SASL_PORT,SSL://127.0.0.1:$MTLS_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SCRAM_USER="$(cat "$sec/kafka-plain.password")" user_\$ConnectionString="$(cat "$sec/eventhub.connection-string")";
ssl.keystore.type=PKCS12
ssl.keystore.location=$sec/server.p12
ssl.keystore.password=$(cat "$sec/keystore.password")
ssl.truststore.type=PEM
ssl.truststore.location=$sec/ca.pem
listener.name.ssl.ssl.client.auth=required
log.dirs=$DATA
# Single node: every internal topic must be happy with one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
num.partitions=3
auto.create.topics.enable=true
group.initial.rebalance.delay.ms=0
# After a kill -9 the controller rejects the new incarnation until the old broker session
# expires (default 9 s); tests that simulate crashes restart faster with a shorter one.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
# Default 128 MiB cleaner buffer is a quarter of our heap; tests never need it.
log.cleaner.dedupe.buffer.size=16777216
# Load benchmarks write gigabytes over a machine's life and the data survives restarts; cap
# each partition so the disk the builds need is not eaten (one bench run stays well below).
log.retention.bytes=268435456
log.segment.bytes=67108864
EOF
  # Broker logs INFO to stdout (redirected to $LOG); CLI tools only WARN, on stderr.
  log_config broker INFO OUT out
  log_config tools WARN ERR err
  # Short client timeouts so a readiness probe fails fast instead of retrying for 60 s.
  printf 'request.timeout.ms=5000\ndefault.api.timeout.ms=10000\n' >"$RUN/admin.properties"
}

# Kafka 4 logs through log4j2, Kafka 3 through reload4j (log4j 1): write a config for both.
# Args: name level log4j2-target log4j1-target
log_config() {
  cat >"$RUN/log4j2-$1.properties" <<EOF
appender.c.type = Console
appender.c.name = C
appender.c.target = SYSTEM_$3
appender.c.layout.type = PatternLayout
appender.c.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = $2
rootLogger.appenderRef.c.ref = C
EOF
  cat >"$RUN/log4j-$1.properties" <<EOF
log4j.rootLogger=$2, c
log4j.appender.c=org.apache.log4j.ConsoleAppender
log4j.appender.c.Target=System.$4
log4j.appender.c.layout=org.apache.log4j.PatternLayout
log4j.appender.c.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
}

# --- process helpers -------------------------------------------------------------------

# Our broker's pid, only if it is alive and really is kafka.Kafka (guards against pid reuse).
running_pid() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ -n $pid ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
  echo "$pid"
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# Run a class from the Kafka jars with a small heap and quiet logging.
run_class() {
  java -Xmx256m "${TOOLS_LOG_OPTS[@]}" -cp "$LIBS/*" "$@"
}

# Healthy = the admin client can list topics (metadata served over the PLAINTEXT port).
healthy() {
  port_open "$PORT" &&
    timeout 20 java -Xmx128m -XX:TieredStopAtLevel=1 "${TOOLS_LOG_OPTS[@]}" \
      -cp "$LIBS/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
      --command-config "$RUN/admin.properties" --list >/dev/null 2>&1
}

wait_ready() {
  local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "broker process $pid died during startup; last log lines:"
      tail -n 40 "$LOG" >&2 || true
      rm -f "$PIDFILE"
      exit 1
    fi
    # healthy() polls the port first and only then launches the (JVM) admin probe.
    if healthy; then return 0; fi
    sleep 1
  done
  log "broker not ready after ${START_TIMEOUT}s; last log lines of $LOG:"
  tail -n 40 "$LOG" >&2 || true
  log "pid $pid left running for inspection; '$0 stop' kills it"
  exit 1
}

# --- commands --------------------------------------------------------------------------

start() {
  local pid t0=$SECONDS
  mkdir -p "$RUN"
  if pid=$(running_pid); then
    log "already running (pid $pid), checking it is ready"
    wait_ready "$pid"
    log "ready on $BOOTSTRAP"
    return 0
  fi
  command -v java >/dev/null || die "java not found (apt-get install -y openjdk-17-jre-headless)"
  for p in "$PORT" "$CPORT" "$SASL_PORT" "$MTLS_PORT"; do
    port_open "$p" && die "port $p is already in use by another process"
  done
  fetch
  write_config

  # Format once; later starts reuse the data so restarts keep topics and messages.
  if [[ ! -f $DATA/meta.properties ]]; then
    local id
    # Cluster id = 16 random bytes, base64url without padding (Kafka's Uuid format). A leading
    # '-' would be parsed as an option, so draw again.
    while id=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '='); [[ $id == -* ]]; do :; done
    log "formatting storage in $DATA (cluster id $id)"
    run_class kafka.tools.StorageTool format -t "$id" -c "$RUN/server.properties" \
      --add-scram "SCRAM-SHA-512=[name=$SCRAM_USER,password=$(cat "$("$SECURE" dir)/kafka-scram.password")]" \
      >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "storage format failed"; }
    touch "$DATA/.scram-user"
  fi

  echo "=== start $(date -Is) ===" >>"$LOG"
  # setsid+nohup: the broker must outlive this script and the caller's process group;
  # all fds go to the log so `$(kafka.sh start)` in a caller never blocks on our stdout.
  setsid nohup java -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    "${BROKER_LOG_OPTS[@]}" -Dkafka.logs.dir="$RUN" \
    -cp "$LIBS/*" kafka.Kafka "$RUN/server.properties" </dev/null 8>&- >>"$LOG" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"
  log "started pid $pid (Kafka $KAFKA_VERSION), waiting up to ${START_TIMEOUT}s for $BOOTSTRAP"
  wait_ready "$pid"
  add_scram_user
  log "ready on $BOOTSTRAP (SASL_SSL on $SASL_PORT, mTLS on $MTLS_PORT) after $((SECONDS - t0))s"
}

# Data formatted by an older kafka.sh has no SCRAM user yet: add it once.
add_scram_user() {
  [[ -f $DATA/.scram-user ]] && return 0
  run_class kafka.admin.ConfigCommand --bootstrap-server "$BOOTSTRAP" --alter --entity-type users \
    --entity-name "$SCRAM_USER" \
    --add-config "SCRAM-SHA-512=[password=$(cat "$("$SECURE" dir)/kafka-scram.password")]" >/dev/null ||
    die "could not add the SCRAM user"
  touch "$DATA/.scram-user"
}

status() {
  local pid
  if ! pid=$(running_pid); then
    log "stopped"
    return 3
  fi
  if healthy; then
    log "running (pid $pid), ready on $BOOTSTRAP"
  else
    log "running (pid $pid) but NOT answering on $BOOTSTRAP"
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
  class)
    shift
    [[ $# -ge 1 ]] || die "usage: $0 class <main.Class> [args...]"
    fetch
    [[ -f $RUN/log4j-tools.properties ]] || write_config
    run_class "$@"
    ;;
  fetch) fetch && echo "$LIBS" ;;
  *) echo "usage: $0 start|stop|restart|status|wipe|fetch|class <main.Class> [args...]" >&2; exit 2 ;;
esac
