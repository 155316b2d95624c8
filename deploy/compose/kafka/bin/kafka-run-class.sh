#!/usr/bin/env bash
# /opt/kafka/bin of the apache/kafka image as far as the stand-in goes: `kafka-run-class.sh CLASS
# [ARGS...]`, and the tools linked to this script by their upstream names. It reads what upstream's
# scripts read: KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_LOG4J_OPTS, KAFKA_OPTS.
set -o nounset -o errexit
heap=-Xmx256M
log4j=tools-log4j2.yaml
case "$(basename "$0")" in
  kafka-server-start.sh) class=kafka.Kafka heap="-Xmx1G -Xms1G" log4j=log4j2.yaml ;;
  kafka-storage.sh) class=kafka.tools.StorageTool ;;
  kafka-broker-api-versions.sh) class=org.apache.kafka.tools.BrokerApiVersionsCommand ;;
  kafka-console-consumer.sh) class=org.apache.kafka.tools.consumer.ConsoleConsumer heap=-Xmx512M ;;
  kafka-console-producer.sh) class=org.apache.kafka.tools.ConsoleProducer heap=-Xmx512M ;;
  kafka-topics.sh) class=org.apache.kafka.tools.TopicCommand ;;
  *)
    class=${1:?usage: kafka-run-class.sh CLASS [ARGS...]}
    shift
    ;;
esac
# shellcheck disable=SC2086 # the *_OPTS are lists of options
exec java ${KAFKA_HEAP_OPTS:-$heap} \
  ${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true} \
  ${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=/opt/kafka/config/$log4j} ${KAFKA_OPTS:-} \
  -cp "/opt/kafka/libs/*" "$class" "$@"
