"""Tests against a real Apache Kafka broker (fixture ``kafka_broker`` from fixtures_kafka)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from fixtures_kafka import SCRIPT


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def consume(bootstrap: str, topic: str, group: str, n: int, timeout: float = 30,
            **conf) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, **conf})
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            got.append(msg)
        if got:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return got


def test_produce_and_consume_with_group_commit(kafka_broker):
    topic = kafka_broker.create_topic(unique("roundtrip"), partitions=3)
    n = 500
    delivered, errors = [], []

    def on_delivery(err, msg):
        (errors if err else delivered).append(err or (msg.partition(), msg.offset()))

    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5})
    for i in range(n):
        producer.produce(topic, key=f"user-{i % 17}", value=f"event-{i}", on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []
    assert len(delivered) == n
    assert {p for p, _ in delivered} == {0, 1, 2}

    group = unique("group")
    msgs = consume(kafka_broker.bootstrap, topic, group, n)
    assert sorted(m.value().decode() for m in msgs) == sorted(f"event-{i}" for i in range(n))

    # Offsets were committed for the group: they add up to n across partitions.
    checker = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": group})
    try:
        committed = checker.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    finally:
        checker.close()
    assert sum(tp.offset for tp in committed) == n

    # A second member of the same group resumes after the commit: nothing left to read.
    assert consume(kafka_broker.bootstrap, topic, group, 1, timeout=3) == []


def test_missing_topic_is_an_error(kafka_broker):
    """auto.create.topics.enable=false: an unknown topic stays unknown."""
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    md = admin.list_topics(topic="no-such-topic", timeout=10)
    assert md.topics["no-such-topic"].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert "no-such-topic" not in admin.list_topics(timeout=10).topics


def test_script_status_reports_running(kafka_broker):
    proc = subprocess.run([sys.executable, str(SCRIPT), "status", "--dir", str(kafka_broker.dir)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f'"bootstrap": "{kafka_broker.bootstrap}"' in proc.stdout
    assert '"ready": true' in proc.stdout


def test_broker_restart_keeps_data(kafka_broker):
    topic = kafka_broker.create_topic(unique("restart"))
    bootstrap = kafka_broker.bootstrap
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "message.timeout.ms": 60000})
    producer.produce(topic, value=b"before-restart")
    assert producer.flush(30) == 0

    kafka_broker.stop()
    assert not kafka_broker.is_running()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", kafka_broker.port), timeout=1).close()
    kafka_broker.start()
    assert kafka_broker.bootstrap == bootstrap  # same port, same data dir

    # The producer created before the restart reconnects and delivers.
    delivered = []
    producer.produce(topic, value=b"after-restart",
                     on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(60) == 0
    assert delivered == [None]

    msgs = consume(bootstrap, topic, unique("group"), 2)
    assert [m.value() for m in msgs] == [b"before-restart", b"after-restart"]


def test_closed_port_raises():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "socket.timeout.ms": 1000})
    t0 = time.monotonic()
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=2)
    assert time.monotonic() - t0 < 10
