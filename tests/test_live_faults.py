"""Faults on the live path, for real: ``pulse run`` consuming a real Kafka topic while
events are still being produced to it, then kill -9 of its process group, a stop and
start of the broker, or a stop of redis-server. Each run ends with the same keys and the
same counts (every profile, ``pulse:meta``'s events_processed and users, global
and per-category trending) as an uninterrupted run over the same topic content: every event reflected once, nothing lost,
nothing counted twice. No mocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import orjson
import pytest
import redis

from conftest import RedisServer, dump_redis
from pulse.flows.config import Settings
from pulse.flows.generate import generate, write_log
from pulse.flows.live import produce, run_live

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EVENTS = 5000
TOTAL = EVENTS + 100  # records on each topic
HEAD = 500  # produced before the run starts; the rest while it consumes


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    lines, _ = generate(users=200, items=200, events=EVENTS, seed=17, malformed=0.02, days=1)
    base = tmp_path_factory.mktemp("faults")
    head, rest = base / "head.jsonl", base / "rest.jsonl"
    write_log(str(head), lines[:HEAD])
    write_log(str(rest), lines[HEAD:])
    assert len(lines) == EVENTS + 100  # (generate adds its malformed lines)
    return head, rest


def pulse_run(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pulse", "run", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 180) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]
    return orjson.loads(out.decode().strip().splitlines()[-1])


def processed(url: str) -> int:
    try:
        return int(redis.Redis.from_url(url, socket_timeout=2).hget("pulse:meta", "events_processed") or 0)
    except redis.ConnectionError:
        return -1


def wait_for(condition, timeout: float = 90, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"pulse run ended early: {proc.communicate()[1].decode()[-3000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class PacedProducer(threading.Thread):
    """Produces ``path`` to ``topic`` at ``rate`` events/s in the background."""

    def __init__(self, path, bootstrap: str, topic: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.args = (path, "native", bootstrap, topic, rate)
        self.result: dict = {}

    def run(self) -> None:
        self.result = produce(*self.args, connect_timeout_s=60)


def counted(dump: dict) -> dict:
    """The keys that count events and users: every profile (its counts per event type,
    engagement, categories), ``pulse:meta``'s events_processed, users, last event time and
    items, global and per-category trending. An event lost or applied twice, or a user's
    state lost and made again, changes them. (Co-visitation, the River segments and what
    follows from them, per-segment trending and ``pulse:meta``'s anomalies_flagged, of a
    run over several partitions depend on how the partitions interleave: two
    uninterrupted runs differ there too.)"""
    out = {k: v for k, v in dump.items()
           if k.endswith("}:profile") or k == "pulse:trending" or k.startswith("pulse:trending:category:")}
    out["pulse:meta"] = [(f, v) for f, v in dump["pulse:meta"][1] if f not in (b"anomalies_flagged",)]
    return out


def key_kinds(dump: dict) -> set:
    return {k for k in dump if not k.startswith("pulse:trending:segment:")}


def uninterrupted(bootstrap: str, topic: str, url: str) -> tuple[dict, dict]:
    """An uninterrupted run over the whole topic, once everything is produced."""
    redis.Redis.from_url(url).flushdb()
    s = run_live(bootstrap, topic, Settings(), url, max_events=TOTAL, idle_exit_s=30, handle_signals=False)
    assert s["events_in"] == TOTAL and s["lag_at_exit"] == 0
    return s, dump_redis(url)


def assert_reflected_once(url: str, reference: tuple[dict, dict]) -> None:
    summary, expected = reference
    got = dump_redis(url)
    assert int(redis.Redis.from_url(url).hget("pulse:meta", "events_processed")) == summary["events_ok"]
    profiles = [k for k in expected if k.endswith("}:profile")]
    assert len(profiles) == summary["users"] > 50
    assert counted(got) == counted(expected)
    assert key_kinds(got) == key_kinds(expected)  # every user's and item's keys, the global keys


def test_kill_9_of_a_live_run_mid_stream_then_a_restart_reflects_every_event_once(kafka_broker, redis_server, log, tmp_path):
    head, rest = log
    topic = kafka_broker.create_topic(unique("kill"), partitions=2)
    url = redis_server.url(44)
    redis.Redis.from_url(url).flushdb()
    store = tmp_path / "recovery"
    assert produce(head, "native", kafka_broker.bootstrap, topic)["failed"] == 0
    args = ("--brokers", kafka_broker.bootstrap, "--topic", topic, "--redis", url, "--recovery", store, "--snapshot-s", "0.5")
    proc = pulse_run(*args)
    wait_for(lambda: processed(url) > 0, proc=proc)
    producer = PacedProducer(rest, kafka_broker.bootstrap, topic, rate=1000)
    producer.start()
    wait_for(lambda: processed(url) >= 2000, proc=proc)
    at_kill = processed(url)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert producer.is_alive(), "the topic was still being written when the run was killed"
    producer.join(60)
    assert producer.result["failed"] == 0
    time.sleep(1)
    assert processed(url) == at_kill  # nothing else consumes the topic into this db
    resumed = finish(pulse_run(*args, "--idle-exit", "3"))
    # the restart resumed from the last snapshot: it did not read the topic from the start
    assert 0 < resumed["events_in"] < TOTAL and resumed["lag_at_exit"] == 0
    assert_reflected_once(url, uninterrupted(kafka_broker.bootstrap, topic, redis_server.url(45)))


def test_a_broker_restart_mid_stream_reflects_every_event_once(kafka_broker, redis_server, log):
    head, rest = log
    topic = kafka_broker.create_topic(unique("restart"), partitions=2)
    dlq = kafka_broker.create_topic(unique("restart.dlq"))
    url = redis_server.url(46)
    redis.Redis.from_url(url).flushdb()
    assert produce(head, "native", kafka_broker.bootstrap, topic)["failed"] == 0
    proc = pulse_run("--brokers", kafka_broker.bootstrap, "--topic", topic, "--dlq-topic", dlq, "--redis", url,
                     "--max-events", TOTAL)
    wait_for(lambda: processed(url) > 0, proc=proc)
    kafka_broker.stop()
    assert not kafka_broker.is_running()
    time.sleep(2)
    assert proc.poll() is None, "pulse run must wait for the broker, not give up"
    kafka_broker.start()
    producer = PacedProducer(rest, kafka_broker.bootstrap, topic, rate=2000)
    producer.run()
    assert producer.result["failed"] == 0
    s = finish(proc)
    assert s["stopped_by"] == "max_events" and s["events_in"] == TOTAL and s["lag_at_exit"] == 0
    assert s["dlq_delivered"] == s["events_dlq"] and s["dlq_failed"] == 0
    assert_reflected_once(url, uninterrupted(kafka_broker.bootstrap, topic, redis_server.url(47)))


def test_redis_down_mid_stream_of_a_live_run_loses_nothing(kafka_broker, redis_server, log, tmp_path):
    head, rest = log
    topic = kafka_broker.create_topic(unique("redis-down"), partitions=2)
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    try:
        url = server.url(0)
        assert produce(head, "native", kafka_broker.bootstrap, topic)["failed"] == 0
        proc = pulse_run("--brokers", kafka_broker.bootstrap, "--topic", topic, "--redis", url, "--max-events", TOTAL)
        wait_for(lambda: processed(url) > 0, proc=proc)
        server.stop()
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        producer = PacedProducer(rest, kafka_broker.bootstrap, topic, rate=2000)
        producer.run()  # the rest is produced while Redis is down (about 2 s)
        assert producer.result["failed"] == 0
        time.sleep(3)
        assert proc.poll() is None, "pulse run must wait for Redis, not give up"
        server.start()
        s = finish(proc)
        assert s["events_in"] == TOTAL and s["lag_at_exit"] == 0
        assert_reflected_once(url, uninterrupted(kafka_broker.bootstrap, topic, redis_server.url(48)))
    finally:
        server.stop()
