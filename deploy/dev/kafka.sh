#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, combined broker+controller) for development and CI,
# run straight from the Maven Central jars: no release tarball, no Docker.
#
# Usage: deploy/dev/kafka.sh <command> [args]
#   fetch                 download the broker + tool jars into $KAFKA_LIBS (skipped if present)
#   start                 fresh cluster: wipe data, format, start, wait until the port accepts
#                         connections; prints "Kafka <version> ready on 127.0.0.1:<port>".
#                         KAFKA_KEEP_DATA=1 keeps existing data. No-op if already running.
#   stop                  SIGTERM, wait up to $KAFKA_STOP_TIMEOUT s, then SIGKILL (idempotent)
#   restart               stop + start, KEEPING the data (broker-restart tests)
#   status                exit 0 if running and accepting connections, 3 if not running
#   version               the broker's version (asks the broker jar: kafka.Kafka --version)
#   bootstrap             print the bootstrap address (127.0.0.1:<port>)
#   logs [-f] [N]         last N (100) lines of the broker log; -f follows
#   topics ARGS...        TopicCommand --bootstrap-server <this broker> ARGS
#   groups ARGS...        ConsumerGroupCommand --bootstrap-server <this broker> ARGS
#   produce TOPIC ARGS... ConsoleProducer (records from stdin)
#   consume TOPIC ARGS... ConsoleConsumer (e.g. --from-beginning --max-messages 10)
#   tool CLASS ARGS...    any class on the Kafka classpath; a bare name means
#                         org.apache.kafka.tools.CLASS (e.g. DeleteRecordsCommand, GetOffsetShell)
#   cluster CMD ARGS...   a 3-node cluster (RF 3, min ISR 2) for failure tests: start, stop,
#                         kill N, start-node N, rolling-restart, leader, coordinator, ...
#                         (deploy/dev/kafka-cluster.sh help)
#
# Environment (defaults):
#   KAFKA_PORT (9092)  KAFKA_CONTROLLER_PORT (9093)  KAFKA_HOST (127.0.0.1)
#   KAFKA_STATE_DIR ($REPO/target/kafka)   server.properties, data/, logs/server.log, kafka.pid
#   KAFKA_LIBS ($REPO/target/kafka-libs)   jars gathered by fetch
#   KAFKA_KEEP_DATA (0)  KAFKA_START_TIMEOUT (90)  KAFKA_STOP_TIMEOUT (30)
#   KAFKA_HEAP_OPTS (-Xms256m -Xmx512m)  KAFKA_CLUSTER_ID (random)
#   KAFKA_EXTRA_PROPERTIES   extra server.properties lines (newline separated)
#   KAFKA_MVN (mvn)  KAFKA_MVN_ARGS   e.g. "-Dmaven.repo.local=/tmp/m2"
#   KAFKA_TOOLS_LOG_LEVEL (WARN)  JAVA_HOME / JAVA
#
# Secured mode: KAFKA_SECURITY=sasl_ssl (default: plaintext) makes the client port a SASL_SSL
# listener (SCRAM-SHA-512 over TLS). `start` then also makes, with the JDK's keytool, a CA and a
# broker certificate signed by it (SAN: IP 127.0.0.1, DNS localhost) under $KAFKA_STATE_DIR/tls,
# and a SCRAM user `dlq` with a random password, created at format time (`--add-scram`).
# The broker's own identity (inter-broker, and this script's tools) is a PLAINTEXT listener
# on $KAFKA_INTERNAL_PORT (default: client port + 2), bound to loopback like everything here.
# What a client needs is written to $KAFKA_STATE_DIR/client.properties (librdkafka properties,
# mode 0600, the password included); `client-properties` prints its path.
# The state dir defaults to $REPO/target/kafka-secure, so a secured broker and a plain one
# run side by side; give the same KAFKA_SECURITY to `stop`, `status`, `bootstrap`, ...
#   client-properties     print the path of client.properties (secured mode)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)

POM=$SCRIPT_DIR/kafka-pom.xml
BROKER_LOG4J=$SCRIPT_DIR/log4j2-broker.properties
TOOLS_LOG4J=$SCRIPT_DIR/log4j2-tools.properties
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

KAFKA_LIBS=${KAFKA_LIBS:-$REPO/target/kafka-libs}
KAFKA_SECURITY=${KAFKA_SECURITY:-plaintext}
case $KAFKA_SECURITY in
  plaintext) KAFKA_STATE_DIR=${KAFKA_STATE_DIR:-$REPO/target/kafka} ;;
  sasl_ssl) KAFKA_STATE_DIR=${KAFKA_STATE_DIR:-$REPO/target/kafka-secure} ;;
  *)
    printf '[kafka.sh] ERROR: KAFKA_SECURITY must be plaintext or sasl_ssl, not %s\n' "$KAFKA_SECURITY" >&2
    exit 1
    ;;
esac
# SCRAM user of the secured mode.
KAFKA_SCRAM_USER=${KAFKA_SCRAM_USER:-dlq}
KAFKA_HOST=${KAFKA_HOST:-127.0.0.1}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
KAFKA_STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
KAFKA_KEEP_DATA=${KAFKA_KEEP_DATA:-0}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
KAFKA_MVN=${KAFKA_MVN:-mvn}
KAFKA_MVN_ARGS=${KAFKA_MVN_ARGS:-}
KAFKA_EXTRA_PROPERTIES=${KAFKA_EXTRA_PROPERTIES:-}

DATA_DIR=$KAFKA_STATE_DIR/data
LOG_DIR=$KAFKA_STATE_DIR/logs
LOG_FILE=$LOG_DIR/server.log
PROPS=$KAFKA_STATE_DIR/server.properties
PID_FILE=$KAFKA_STATE_DIR/kafka.pid
TLS_DIR=$KAFKA_STATE_DIR/tls
CLIENT_PROPS=$KAFKA_STATE_DIR/client.properties

if [[ -n ${JAVA:-} ]]; then
  :
elif [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
  JAVA=$JAVA_HOME/bin/java
else
  JAVA=java
fi

# Things the EXIT trap cleans up if a command fails half-way.
FETCH_TMP=""
PENDING_PID=""

log() { printf '[kafka.sh] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH"; }

now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'; }

on_exit() {
  local rc=$?
  if [[ -n $FETCH_TMP ]]; then rm -rf "$FETCH_TMP"; fi
  if [[ -n $PENDING_PID ]]; then
    log "aborting: stopping the half-started broker (pid $PENDING_PID)"
    kill -KILL "$PENDING_PID" 2>/dev/null || true
    rm -f "$PID_FILE"
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# ports

# Port settings: explicit env wins; otherwise (for everything but a fresh `start`) reuse the
# ports of the last generated server.properties, so `restart`/`status`/tools follow the broker.
props_value() { [[ -f $PROPS ]] && sed -n "s/^$1=//p" "$PROPS" | tail -n 1; }
resolve_ports() { # $1 = reuse|default
  local listeners=""
  if [[ $1 == reuse ]]; then listeners=$(props_value listeners || true); fi
  if [[ -z ${KAFKA_PORT:-} ]]; then
    # the client listener: PLAINTEXT:// (plain mode) or SASL_SSL:// (secured mode)
    KAFKA_PORT=$(sed -n 's#\(.*,\)\{0,1\}\(PLAINTEXT\|SASL_SSL\)://[^,]*:\([0-9][0-9]*\).*#\3#p' <<<"$listeners")
    KAFKA_PORT=${KAFKA_PORT:-9092}
  fi
  if [[ -z ${KAFKA_INTERNAL_PORT:-} ]]; then
    KAFKA_INTERNAL_PORT=$(sed -n 's#.*INTERNAL://[^,]*:\([0-9][0-9]*\).*#\1#p' <<<"$listeners")
    KAFKA_INTERNAL_PORT=${KAFKA_INTERNAL_PORT:-$((KAFKA_PORT + 2))}
  fi
  if [[ -z ${KAFKA_CONTROLLER_PORT:-} ]]; then
    KAFKA_CONTROLLER_PORT=$(sed -n 's#.*CONTROLLER://[^,]*:\([0-9][0-9]*\).*#\1#p' <<<"$listeners")
    KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
  fi
}
bootstrap() { printf '%s:%s' "$KAFKA_HOST" "$KAFKA_PORT"; }
secured() { [[ $KAFKA_SECURITY == sasl_ssl ]]; }
# The address this script's own tools (topics, groups, ...) use: in secured mode the broker's
# PLAINTEXT identity, so they need no credentials.
tools_bootstrap() {
  if secured; then printf '%s:%s' "$KAFKA_HOST" "$KAFKA_INTERNAL_PORT"; else bootstrap; fi
}

port_open() { # host port: does a TCP connect succeed?
  if command -v timeout >/dev/null 2>&1; then
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
  else
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
  fi
}

# ---------------------------------------------------------------------------------------------
# processes

alive() { # pid: running and not a zombie (no forks: this runs in polling loops)
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  if [[ -r /proc/$1/stat ]] && read -r stat <"/proc/$1/stat" 2>/dev/null; then
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
  fi
}

is_our_broker() { # pid: a live `java ... kafka.Kafka $PROPS` process
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  if [[ -r /proc/$1/cmdline ]]; then
    local -a argv=()
    local i
    mapfile -d '' argv <"/proc/$1/cmdline" 2>/dev/null || return 1
    for ((i = 0; i + 1 < ${#argv[@]}; i++)); do
      if [[ ${argv[i]} == kafka.Kafka && ${argv[i + 1]} == "$PROPS" ]]; then
        alive "$1"
        return
      fi
    done
    return 1
  fi
  alive "$1" # no /proc: trust the pid file
}

running_pid() { # prints the pid of our broker; fails if not running
  local pid d
  if [[ -f $PID_FILE ]]; then
    pid=$(<"$PID_FILE")
    if is_our_broker "$pid"; then
      echo "$pid"
      return 0
    fi
  fi
  # pid file lost or stale: look for a broker started with our server.properties
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    if [[ -r $d/cmdline ]] && is_our_broker "$pid"; then
      echo "$pid" >"$PID_FILE"
      echo "$pid"
      return 0
    fi
  done
  return 1
}

# ---------------------------------------------------------------------------------------------
# jars

pom_sum() { sha256sum <"$POM" | cut -d' ' -f1; }
libs_ready() { # fetched, complete, and from the current pom
  [[ -f $KAFKA_LIBS/.fetched && -f $KAFKA_LIBS/.storage-tool-class ]] &&
    [[ $(<"$KAFKA_LIBS/.fetched") == "$(pom_sum)" ]] &&
    compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null
}

jar_entries() { # jar: list of entry names
  if command -v unzip >/dev/null 2>&1; then unzip -Z1 "$1"; else jar tf "$1"; fi
}

# The storage tool is the Scala object kafka.tools.StorageTool in kafka_2.13 (still so in 4.4.0);
# a later release may move it to org.apache.kafka.tools.StorageTool in kafka-tools.
detect_storage_tool() { # libs dir
  local jar
  for jar in "$1"/kafka_2.13-*.jar; do
    if jar_entries "$jar" | grep -Fx 'kafka/tools/StorageTool.class' >/dev/null; then
      echo kafka.tools.StorageTool
      return 0
    fi
  done
  for jar in "$1"/kafka-tools-*.jar "$1"/kafka-*.jar; do
    [[ -f $jar ]] || continue
    if jar_entries "$jar" | grep -Fx 'org/apache/kafka/tools/StorageTool.class' >/dev/null; then
      echo org.apache.kafka.tools.StorageTool
      return 0
    fi
  done
  return 1
}

cmd_fetch() {
  if libs_ready; then
    log "jars already in $KAFKA_LIBS (fetch skipped)"
    return 0
  fi
  need "$KAFKA_MVN"
  mkdir -p "$(dirname "$KAFKA_LIBS")"
  # Serialise concurrent fetches (parallel CI jobs on one machine).
  local locked=0
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$KAFKA_LIBS.lock"
    flock 9
    locked=1
    if libs_ready; then
      exec 9>&-
      log "jars already in $KAFKA_LIBS (fetched by a concurrent run)"
      return 0
    fi
  fi
  local t0 n storage_tool mvn_args=()
  t0=$(now)
  log "fetching Kafka jars from Maven Central ($POM) into $KAFKA_LIBS ..."
  FETCH_TMP=$KAFKA_LIBS.tmp.$$
  rm -rf "$FETCH_TMP"
  # shellcheck disable=SC2206 # KAFKA_MVN_ARGS is deliberately word-split
  mvn_args=(-B -q -ntp -Dstyle.color=never -f "$POM" $KAFKA_MVN_ARGS
    "$DEP_PLUGIN:copy-dependencies" -DincludeScope=runtime -DoutputDirectory="$FETCH_TMP")
  # (Debian's Maven 3.8 prints bare ANSI resets even in batch mode: strip them)
  "$KAFKA_MVN" "${mvn_args[@]}" 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2 ||
    die "maven fetch failed (re-run without -q for details: $KAFKA_MVN ${mvn_args[*]/-q/})"
  compgen -G "$FETCH_TMP/kafka_2.13-*.jar" >/dev/null || die "no kafka_2.13 jar after fetch"
  storage_tool=$(detect_storage_tool "$FETCH_TMP") || die "StorageTool class not found in the jars"
  echo "$storage_tool" >"$FETCH_TMP/.storage-tool-class"
  pom_sum >"$FETCH_TMP/.fetched"
  rm -rf "$KAFKA_LIBS"
  mv "$FETCH_TMP" "$KAFKA_LIBS"
  FETCH_TMP=""
  if ((locked)); then exec 9>&-; fi
  n=$(find "$KAFKA_LIBS" -name '*.jar' | wc -l)
  log "fetched $n jars ($(du -sh "$KAFKA_LIBS" | cut -f1)); storage tool: $storage_tool"
  log "fetch done in $(since "$t0")s"
}

jar_version() { # version from the kafka_2.13-<version>.jar file name
  local jar
  for jar in "$KAFKA_LIBS"/kafka_2.13-*.jar; do
    jar=${jar##*/kafka_2.13-}
    echo "${jar%.jar}"
    return 0
  done
  return 1
}

# ---------------------------------------------------------------------------------------------
# java

tool_java() { # CLASS ARGS...: run a Kafka CLI class with fast-start flags, logging on stderr
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$KAFKA_LIBS/*" "$@" 9>&-
}

gen_cluster_id() { # like Uuid.randomUuid(): 16 random bytes, base64url, no padding, no leading '-'
  local id=""
  while [[ ${#id} -ne 22 || $id == -* ]]; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
  done
  echo "$id"
}

write_props() {
  mkdir -p "$KAFKA_STATE_DIR" "$LOG_DIR"
  cat >"$PROPS" <<EOF
# Generated by deploy/dev/kafka.sh on every start: edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
$(listener_props)
log.dirs=$DATA_DIR

# one node: every internal topic has a single replica
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
# a dead producer's open transaction is aborted within 1 s of its timeout (default: 10 s), so
# read_committed readers behind it move on sooner (RELIABILITY.md, "Failover")
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000

# small machine
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.enable=true
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608

# quick compaction / retention for tests
log.cleaner.backoff.ms=15000
log.retention.check.interval.ms=15000
log.initial.task.delay.ms=5000

auto.create.topics.enable=false
delete.topic.enable=true
# A deleted topic's files go within a second (default: a minute later). dlq-bench deletes each
# scenario's topics (up to 1.4 GB) when it ends; with the default delay the broker's
# kafka-scheduler freed their pages a minute later (perf: block_invalidate_folio, ~10% of a
# core), in whatever scenario of dlq-bench all was running by then (no backticks: this
# heredoc is unquoted, and the shell ran them).
file.delete.delay.ms=1000
EOF
  if [[ -n $KAFKA_EXTRA_PROPERTIES ]]; then
    printf '\n# KAFKA_EXTRA_PROPERTIES\n%s\n' "$KAFKA_EXTRA_PROPERTIES" >>"$PROPS"
  fi
}

listener_props() { # the listener section of server.properties, by KAFKA_SECURITY
  if ! secured; then
    cat <<EOF
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
EOF
    return
  fi
  local pw
  pw=$(<"$TLS_DIR/store.password")
  cat <<EOF
# KAFKA_SECURITY=sasl_ssl: clients on SASL_SSL (SCRAM-SHA-512); the broker itself, and this
# script's tools, on the loopback PLAINTEXT listener INTERNAL; the controller on PLAINTEXT.
listeners=SASL_SSL://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT,INTERNAL://$KAFKA_HOST:$KAFKA_INTERNAL_PORT
advertised.listeners=SASL_SSL://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT,INTERNAL://$KAFKA_HOST:$KAFKA_INTERNAL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/broker.p12
ssl.keystore.password=$pw
ssl.key.password=$pw
ssl.client.auth=none
EOF
}

kt() { # keytool, with the fast-start JVM flags of the tools
  keytool -J-XX:+UseSerialGC -J-XX:TieredStopAtLevel=1 "$@" 9>&-
}

# Secured mode: a CA, and a broker certificate signed by it for 127.0.0.1 / localhost, all with
# the JDK's keytool (no openssl needed); the CA as PEM for librdkafka's ssl.ca.location.
# Made fresh on every fresh start (kept with KAFKA_KEEP_DATA=1), valid for 30 days.
make_certs() {
  local t0 pw
  if [[ $KAFKA_KEEP_DATA == 1 && -f $TLS_DIR/broker.p12 && -f $TLS_DIR/ca.pem ]]; then
    log "keeping the certificates in $TLS_DIR"
    return 0
  fi
  need keytool
  t0=$(now)
  rm -rf "$TLS_DIR"
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  pw=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
  echo "$pw" >"$TLS_DIR/store.password"
  log "making a CA and a broker certificate with keytool in $TLS_DIR"
  kt -genkeypair -alias ca -keyalg RSA -keysize 2048 -validity 30 -dname 'CN=workflow-dlq dev CA' \
    -ext bc:c=ca:true -ext KU=keyCertSign,cRLSign \
    -keystore "$TLS_DIR/ca.p12" -storetype PKCS12 -storepass "$pw" >&2 || die "keytool: CA key"
  kt -exportcert -rfc -alias ca -keystore "$TLS_DIR/ca.p12" -storepass "$pw" \
    -file "$TLS_DIR/ca.pem" >&2 || die "keytool: CA export"
  kt -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 30 -dname 'CN=localhost' \
    -keystore "$TLS_DIR/broker.p12" -storetype PKCS12 -storepass "$pw" >&2 || die "keytool: broker key"
  kt -certreq -alias broker -keystore "$TLS_DIR/broker.p12" -storepass "$pw" \
    -file "$TLS_DIR/broker.csr" >&2 || die "keytool: broker CSR"
  kt -gencert -alias ca -keystore "$TLS_DIR/ca.p12" -storepass "$pw" -infile "$TLS_DIR/broker.csr" \
    -outfile "$TLS_DIR/broker.pem" -rfc -validity 30 -ext SAN=ip:127.0.0.1,dns:localhost \
    -ext KU=digitalSignature,keyEncipherment -ext EKU=serverAuth >&2 || die "keytool: signing"
  # the chain goes in over the broker's key entry: CA first, so the reply can be verified
  kt -importcert -noprompt -alias ca -file "$TLS_DIR/ca.pem" -keystore "$TLS_DIR/broker.p12" \
    -storepass "$pw" >&2 || die "keytool: CA import"
  kt -importcert -noprompt -alias broker -file "$TLS_DIR/broker.pem" -keystore "$TLS_DIR/broker.p12" \
    -storepass "$pw" >&2 || die "keytool: certificate reply import"
  log "certificates done in $(since "$t0")s (CA: $TLS_DIR/ca.pem)"
}

# Secured mode: the SCRAM password (made with the certificates' data: a fresh cluster gets a
# fresh one) and the file a client reads.
scram_password() {
  [[ -f $TLS_DIR/scram.password ]] || head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$TLS_DIR/scram.password"
  cat "$TLS_DIR/scram.password"
}
write_client_props() {
  (
    umask 077
    cat >"$CLIENT_PROPS" <<EOF
# librdkafka properties for the secured broker (deploy/dev/kafka.sh, KAFKA_SECURITY=sasl_ssl)
bootstrap.servers=$(bootstrap)
security.protocol=SASL_SSL
sasl.mechanisms=SCRAM-SHA-512
sasl.username=$KAFKA_SCRAM_USER
sasl.password=$(scram_password)
ssl.ca.location=$TLS_DIR/ca.pem
EOF
  )
}

format_storage() {
  local t0 cluster_id storage_tool
  t0=$(now)
  storage_tool=$(<"$KAFKA_LIBS/.storage-tool-class")
  cluster_id=${KAFKA_CLUSTER_ID:-$(gen_cluster_id)}
  log "formatting $DATA_DIR (cluster id $cluster_id) with $storage_tool"
  local scram=()
  if secured; then
    # KRaft keeps SCRAM credentials in the metadata log: the user exists from the first record.
    scram=(--add-scram "SCRAM-SHA-512=[name=$KAFKA_SCRAM_USER,password=$(scram_password)]")
    log "with SCRAM-SHA-512 user '$KAFKA_SCRAM_USER'"
  fi
  tool_java "$storage_tool" format --standalone --cluster-id "$cluster_id" --config "$PROPS" \
    "${scram[@]}" >&2 || die "storage format failed"
  log "format done in $(since "$t0")s"
}

log_version() { # version the running broker logged ("Kafka version: X")
  [[ -f $LOG_FILE ]] && sed -n 's/.*Kafka version: \([^ ]*\).*/\1/p' "$LOG_FILE" | head -n 1
}

fail_start() {
  log "ERROR: $*"
  log "---- last 60 lines of $LOG_FILE ----"
  tail -n 60 "$LOG_FILE" >&2 || true
  log "----"
  exit 1
}

print_ready() {
  local v=""
  local i
  for i in 1 2 3 4 5 6 7 8 9 10; do
    v=$(log_version || true)
    [[ -n $v ]] && break
    sleep 0.2
  done
  if [[ -z $v ]]; then
    v=$(jar_version) # log line missing (logging misconfigured?): fall back to the jar name
    log "warning: no 'Kafka version:' line in $LOG_FILE; version taken from the jar name"
  fi
  if secured; then
    echo "Kafka $v ready on $(bootstrap) (SASL_SSL, SCRAM-SHA-512; client settings: $CLIENT_PROPS)"
  else
    echo "Kafka $v ready on $(bootstrap)"
  fi
}

cmd_start() {
  local pid t0
  cmd_fetch
  if pid=$(running_pid); then
    resolve_ports reuse
    log "already running (pid $pid); data kept. Use 'stop' then 'start' for a fresh cluster."
    port_open "$KAFKA_HOST" "$KAFKA_PORT" || die "broker pid $pid is running but $(bootstrap) does not accept connections"
    print_ready
    return 0
  fi
  need "$JAVA"
  local p ports=("$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT")
  if secured; then ports+=("$KAFKA_INTERNAL_PORT"); fi
  for p in "${ports[@]}"; do
    if port_open "$KAFKA_HOST" "$p"; then
      die "$KAFKA_HOST:$p is already in use by another process (set KAFKA_PORT / KAFKA_CONTROLLER_PORT / KAFKA_INTERNAL_PORT)"
    fi
  done
  mkdir -p "$KAFKA_STATE_DIR" "$LOG_DIR"
  if [[ $KAFKA_KEEP_DATA == 1 ]]; then
    log "keeping data in $DATA_DIR"
  elif [[ -e $DATA_DIR ]]; then
    log "wiping old data in $DATA_DIR (KAFKA_KEEP_DATA=1 keeps it)"
    rm -rf "$DATA_DIR"
  fi
  if secured; then
    make_certs
    write_client_props
  fi
  write_props
  if [[ ! -f $DATA_DIR/meta.properties ]]; then
    format_storage
  fi

  if [[ -f $LOG_FILE ]]; then mv -f "$LOG_FILE" "$LOG_FILE.prev"; fi
  t0=$(now)
  log "starting broker on $(bootstrap) (controller $KAFKA_HOST:$KAFKA_CONTROLLER_PORT), log: $LOG_FILE"
  # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS is deliberately word-split
  nohup "$JAVA" $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dkafka.logs.dir="$LOG_DIR" -Dlog4j2.configurationFile="$BROKER_LOG4J" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$PROPS" >"$LOG_FILE" 2>&1 </dev/null 9>&- &
  pid=$!
  PENDING_PID=$pid
  echo "$pid" >"$PID_FILE"

  # In KRaft the client port opens once the broker is unfenced, so a TCP connect means ready.
  local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  until port_open "$KAFKA_HOST" "$KAFKA_PORT"; do
    if ! alive "$pid"; then
      local rc=0
      wait "$pid" 2>/dev/null || rc=$?
      PENDING_PID=""
      rm -f "$PID_FILE"
      fail_start "broker (pid $pid) exited with status $rc during startup"
    fi
    if ((SECONDS >= deadline)); then
      PENDING_PID=""
      stop_pid "$pid" 10 || true
      rm -f "$PID_FILE"
      fail_start "broker did not accept connections on $(bootstrap) within ${KAFKA_START_TIMEOUT}s (stopped it)"
    fi
    sleep 0.25
  done
  alive "$pid" || fail_start "port $(bootstrap) opened but the broker (pid $pid) is gone: another process owns the port?"
  PENDING_PID=""
  log "broker pid $pid; start done in $(since "$t0")s"
  print_ready
}

stop_pid() { # pid timeout_s
  local pid=$1 timeout=$2 deadline
  kill -TERM "$pid" 2>/dev/null || return 0
  deadline=$((SECONDS + timeout))
  while alive "$pid"; do
    if ((SECONDS >= deadline)); then
      log "broker (pid $pid) still running after ${timeout}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.25
  done
  while alive "$pid"; do sleep 0.1; done
}

cmd_stop() {
  local pid t0
  if ! pid=$(running_pid); then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  t0=$(now)
  log "stopping broker (pid $pid) ..."
  stop_pid "$pid" "$KAFKA_STOP_TIMEOUT"
  rm -f "$PID_FILE"
  log "stop done in $(since "$t0")s"
}

cmd_status() {
  local pid
  if ! pid=$(running_pid); then
    echo "Kafka not running"
    return 3
  fi
  if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    echo "Kafka $(log_version || true) running (pid $pid) on $(bootstrap)"
  else
    echo "Kafka process $pid is running but $(bootstrap) does not accept connections (starting or stopping?)"
    return 1
  fi
}

cmd_version() {
  libs_ready || cmd_fetch
  tool_java kafka.Kafka --version
}

cmd_logs() {
  local follow=0 lines=100
  while (($#)); do
    case $1 in
      -f | --follow) follow=1 ;;
      *) lines=$1 ;;
    esac
    shift
  done
  [[ -f $LOG_FILE ]] || die "no log at $LOG_FILE"
  if ((follow)); then exec tail -n "$lines" -F "$LOG_FILE"; fi
  tail -n "$lines" "$LOG_FILE"
}

cmd_tool() {
  (($#)) || die "usage: kafka.sh tool CLASS [ARGS...]"
  local class=$1
  shift
  [[ $class == *.* ]] || class=org.apache.kafka.tools.$class # bare name: a kafka-tools class
  libs_ready || cmd_fetch
  tool_java "$class" "$@"
}

main() {
  local cmd=${1:-help}
  (($#)) && shift
  case $cmd in
    start)
      resolve_ports default
      cmd_start
      ;;
    restart)
      resolve_ports reuse
      cmd_stop
      KAFKA_KEEP_DATA=1
      cmd_start
      ;;
    fetch) cmd_fetch ;;
    stop)
      resolve_ports reuse
      cmd_stop
      ;;
    status)
      resolve_ports reuse
      cmd_status
      ;;
    version) cmd_version ;;
    bootstrap)
      resolve_ports reuse
      bootstrap
      echo
      ;;
    logs) cmd_logs "$@" ;;
    client-properties)
      secured || die "client-properties is for KAFKA_SECURITY=sasl_ssl"
      [[ -f $CLIENT_PROPS ]] || die "no $CLIENT_PROPS: start the secured broker first"
      echo "$CLIENT_PROPS"
      ;;
    topics)
      resolve_ports reuse
      cmd_tool TopicCommand --bootstrap-server "$(tools_bootstrap)" "$@"
      ;;
    groups)
      resolve_ports reuse
      cmd_tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server "$(tools_bootstrap)" "$@"
      ;;
    produce)
      (($#)) || die "usage: kafka.sh produce TOPIC [ARGS...]"
      resolve_ports reuse
      local topic=$1
      shift
      cmd_tool ConsoleProducer --bootstrap-server "$(tools_bootstrap)" --topic "$topic" "$@"
      ;;
    consume)
      (($#)) || die "usage: kafka.sh consume TOPIC [ARGS...]"
      resolve_ports reuse
      local topic=$1
      shift
      cmd_tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$(tools_bootstrap)" --topic "$topic" "$@"
      ;;
    tool)
      cmd_tool "$@"
      ;;
    cluster) exec "$SCRIPT_DIR/kafka-cluster.sh" "$@" ;;
    help | -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
    *) die "unknown command '$cmd' (try: kafka.sh help)" ;;
  esac
}

main "$@"
