#!/usr/bin/env bash
# Obtain Apache Kafka's broker (KRaft mode) at the version pinned in kafka.version, from Maven Central.
#
# Apache's release tarball cannot be downloaded here, so the broker's jars come from Maven Central through
# Maven (a throwaway pom in a temporary directory, `mvn dependency:copy-dependencies`, runtime scope):
#   org.apache.kafka:kafka_2.13    the broker (kafka.Kafka) and the storage tool (kafka.tools.StorageTool)
#   org.apache.kafka:kafka-tools   the command-line tools (TopicCommand, ConsoleProducer, ConsoleConsumer)
#                                  (without connect-runtime, which only Kafka Connect's tools need)
#   org.apache.logging.log4j:log4j-slf4j2-impl and org.slf4j:slf4j-api 2  the logging binding to Log4j 2
#                                  (which kafka-server brings), so that it logs; config in log4j2.properties
# into $KAFKA_HOME (default ~/.cache/power-usage/kafka/<version>)/libs, with a VERSION file beside it;
# nothing to do when that VERSION file is there. Run it as
#   java -Dlog4j2.configurationFile="$KAFKA_HOME/log4j2.properties" -cp "$KAFKA_HOME/libs/*" kafka.Kafka server.properties
# Maven checks each artifact against the checksum Maven Central publishes and caches them in ~/.m2
# (set MAVEN_REPO_LOCAL to use another local repository). Needs Maven and Java 17 or newer.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
version="${KAFKA_VERSION:-$(cat "$here/kafka.version")}"
dest="${KAFKA_HOME:-$HOME/.cache/power-usage/kafka/$version}"
say() { printf '[install-kafka] %s\n' "$*" >&2; }

if [ -f "$dest/VERSION" ] && grep -qx "kafka $version" "$dest/VERSION" && [ -d "$dest/libs" ]; then
  exit 0
fi
command -v mvn >/dev/null || { say "Maven is not installed (apt-get install maven): cannot fetch Kafka $version"; exit 1; }
command -v java >/dev/null || { say "Java is not installed (apt-get install openjdk-17-jre-headless): Kafka $version needs it"; exit 1; }

slf4j_version=2.0.17
log4j_version=2.25.5  # the Log4j 2 that kafka-server depends on
work="$(mktemp -d)"
mkdir -p "$(dirname "$dest")"
staging="$(mktemp -d "$dest.XXXXXX")"
trap 'rm -rf "$work" "$staging"' EXIT
cat >"$work/pom.xml" <<POM
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>power-usage</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>$version</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$version</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$version</version>
      <exclusions><exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion></exclusions>
    </dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$slf4j_version</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$log4j_version</version></dependency>
  </dependencies>
</project>
POM

say "fetching Apache Kafka $version (kafka_2.13, kafka-tools and their runtime dependencies, about 45 MB) from Maven Central with Maven"
mvn_args=(-B -q -C -f "$work/pom.xml" -Dmaven.repo.local="${MAVEN_REPO_LOCAL:-$HOME/.m2/repository}")
if ! mvn "${mvn_args[@]}" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$staging/libs" \
  >"$work/mvn.log" 2>&1; then
  say "mvn dependency:copy-dependencies failed for Kafka $version; its last lines:"
  tail -n 30 "$work/mvn.log" >&2
  exit 1
fi
[ -f "$staging/libs/kafka_2.13-$version.jar" ] || { say "no kafka_2.13-$version.jar among the jars Maven copied"; exit 1; }
cat >"$staging/log4j2.properties" <<'LOG'
# what the broker and tools log (-Dlog4j2.configurationFile=<this file>): INFO and up to stdout, which
# devstack keeps in the broker's log file
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
LOG
cat >"$staging/tools-log4j2.properties" <<'LOG'
# what the command-line tools (StorageTool, TopicCommand, the console producer and consumer) log: warnings
# and errors, to stderr, so that their stdout is only what they print
status = warn
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
LOG
printf 'kafka %s\njars %s\n' "$version" "$(ls "$staging/libs" | wc -l)" >"$staging/VERSION"
chmod -R a+rX "$staging"
rm -rf "$dest"
mv "$staging" "$dest"
trap 'rm -rf "$work"' EXIT
say "installed Apache Kafka $version ($(ls "$dest/libs" | wc -l) jars, $(du -sh "$dest/libs" | cut -f1)) at $dest"
