"""A private Apache Kafka broker for one run: one node in KRaft mode (broker and controller) on loopback, at
the version of kafka.version, its jars from Maven Central (scripts/install-kafka.sh), on Java.

Readiness is a Metadata request on Kafka's wire protocol (:func:`kafka_metadata`, a few lines of ``struct``),
so that neither devstack nor the tests need a Kafka client library; Kafka's own tools run on the same jars
(:func:`kafka_java`).
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import struct
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from devstack.brokers import ROOT, Broker, ensure_debian_package, private_file
from devstack.processes import Process, StackError, free_port, port_open, wait_until

KAFKA_HEAP = ["-Xms128m", "-Xmx512m"]  # a one-node test broker; Kafka's own scripts default to 1 GB


def kafka_version() -> str:
    return (ROOT / "kafka.version").read_text().strip()


def kafka_home(version: str | None = None) -> Path:
    """Where scripts/install-kafka.sh puts the broker's jars (``libs/``) and its log settings."""
    version = version or kafka_version()
    return Path(os.environ.get("KAFKA_HOME") or Path.home() / ".cache" / "power-usage" / "kafka" / version)


def ensure_kafka() -> Path:
    """Kafka's jars at the pinned version, installed by scripts/install-kafka.sh (Maven Central) when missing."""
    home = kafka_home()
    if (home / "VERSION").exists() and (home / "libs").is_dir():
        return home
    ensure_debian_package("java", "openjdk-17-jdk-headless")
    ensure_debian_package("mvn", "maven")
    print(f"[devstack] installing Apache Kafka {kafka_version()} from Maven Central", flush=True)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "install-kafka.sh")], capture_output=True, text=True)
    if done.returncode != 0 or not (home / "libs").is_dir():
        raise StackError(f"scripts/install-kafka.sh failed: {done.stderr.strip()[-800:]}")
    return home


def kafka_java(main_class: str, *args: str, tool: bool = True) -> list[str]:
    """The command line of one of Kafka's classes on the installed jars: a tool (``kafka.tools.StorageTool``,
    ``org.apache.kafka.tools.TopicCommand``, ``org.apache.kafka.tools.ConsoleProducer``,
    ``org.apache.kafka.tools.consumer.ConsoleConsumer``; warnings on stderr) or, ``tool=False``, the broker."""
    home = kafka_home()
    java = shutil.which("java") or "java"
    logging = home / ("tools-log4j2.properties" if tool else "log4j2.properties")
    heap = ["-Xmx256m"] if tool else KAFKA_HEAP
    return [java, *heap, "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={logging}"] + [
        "-cp",
        str(home / "libs" / "*"),
        main_class,
        *args,
    ]


def kafka_cluster_id() -> str:
    """A random cluster id as Kafka writes one (16 random bytes, URL-safe base64 without padding)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # Kafka's Uuid.randomUuid avoids these (they read as options)
            return text


@dataclass
class KafkaMetadata:
    """What a Metadata request answered: the brokers (node id -> host:port) and each topic's partition count."""

    cluster_id: str | None
    brokers: dict[int, str]
    partitions: dict[str, int]


def _string(data: bytes, at: int) -> tuple[str | None, int]:
    (length,) = struct.unpack_from(">h", data, at)
    at += 2
    if length < 0:
        return None, at
    return data[at : at + length].decode(), at + length


def kafka_metadata(port: int, topics: list[str] | None = None, host: str = "127.0.0.1") -> KafkaMetadata:
    """A Metadata request (version 4, the oldest Kafka 4 still answers) of ``topics`` (None: all of them) on
    Kafka's wire protocol, without creating any; OSError or ValueError when the broker does not answer so."""
    body = struct.pack(">i", -1) if topics is None else struct.pack(">i", len(topics))
    for topic in topics or []:
        body += struct.pack(">h", len(topic)) + topic.encode()
    body += b"\x00"  # allow_auto_topic_creation: false
    client = b"devstack"
    request = struct.pack(">hhih", 3, 4, 1, len(client)) + client + body
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _receive(sock, 4))
        data = _receive(sock, size)
    correlation, _throttle, count = struct.unpack_from(">iii", data, 0)
    if correlation != 1:
        raise ValueError(f"kafka answered correlation id {correlation}, not 1")
    at = 12
    brokers = {}
    for _ in range(count):
        (node,) = struct.unpack_from(">i", data, at)
        name, at = _string(data, at + 4)
        (broker_port,) = struct.unpack_from(">i", data, at)
        _rack, at = _string(data, at + 4)
        brokers[node] = f"{name}:{broker_port}"
    cluster_id, at = _string(data, at)
    _controller, topic_count = struct.unpack_from(">ii", data, at)
    at += 8
    partitions = {}
    for _ in range(topic_count):
        (error,) = struct.unpack_from(">h", data, at)
        name, at = _string(data, at + 2)
        (partition_count,) = struct.unpack_from(">i", data, at + 1)  # after is_internal
        at += 5
        for _ in range(partition_count):
            at += 2 + 4 + 4  # error_code, partition_index, leader_id
            for _ in range(2):  # replica_nodes, isr_nodes
                (nodes,) = struct.unpack_from(">i", data, at)
                at += 4 + 4 * max(nodes, 0)
        if error == 0 and name is not None:
            partitions[name] = partition_count
    return KafkaMetadata(cluster_id, brokers, partitions)


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("kafka closed the connection")
        data += chunk
    return data


def _kafka_answers(port: int) -> bool:
    if not port_open(port):
        return False
    try:
        return 1 in kafka_metadata(port).brokers
    except (OSError, ValueError, struct.error):
        return False


def start_kafka(run_dir: Path, partitions: int = 3) -> Broker:
    """A private Apache Kafka broker in KRaft mode (one node, broker and controller) on loopback, its data in
    ``run_dir/kafka``, its log in ``run_dir/logs/kafka.log``. Topics are created on first use with
    ``partitions`` partitions (Dapr publishes to topics it has not created). No authentication: it listens
    on 127.0.0.1 only. Ready once a Metadata request names this broker."""
    home = ensure_kafka()
    ensure_debian_package("java", "openjdk-17-jdk-headless")
    port, controller_port = free_port(), free_port()
    data = run_dir / "kafka"
    logs = run_dir / "logs"
    config = private_file(
        data / "server.properties",
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                "controller.listener.names=CONTROLLER",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
                f"log.dirs={data / 'data'}",
                f"num.partitions={partitions}",
                "auto.create.topics.enable=true",
                "default.replication.factor=1",
                "min.insync.replicas=1",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
            ]
        )
        + "\n",
    )
    # KRaft: the storage is formatted first, with a cluster id, this node the one controller (--standalone)
    format_log = logs / "kafka-format.log"
    logs.mkdir(parents=True, exist_ok=True)
    argv = kafka_java("kafka.tools.StorageTool", "format", "-t", kafka_cluster_id(), "-c", str(config), "--standalone")
    with open(format_log, "wb") as log:
        done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=120)
    if done.returncode != 0:
        tail = format_log.read_text(errors="replace").strip()[-800:]
        raise StackError(f"kafka: formatting its storage failed (code {done.returncode}), {format_log}:\n{tail}")
    process = Process("kafka", kafka_java("kafka.Kafka", str(config), tool=False), logs / "kafka.log", cwd=data).start()
    try:
        wait_until(
            lambda: _kafka_answers(port),
            90,
            f"kafka {kafka_version()} ({home}) answering a Metadata request on 127.0.0.1:{port}",
            interval=0.25,
            alive=process.death,
        )
    except StackError:
        process.stop()
        raise
    address = f"127.0.0.1:{port}"
    return Broker(process, "127.0.0.1", port, address, {"KAFKA_BROKERS": address})
