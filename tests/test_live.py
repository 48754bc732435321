"""Live runs against a real Apache Kafka broker and a real Redis: produce → run → Redis,
dead letters on a DLQ topic, record → replay equivalence, and
the errors a user sees when the broker or topic is missing. No mocks."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter

import orjson
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from conftest import dump_redis, free_port
from pulse.flows.config import Settings
from pulse.flows.generate import CRAWLER_AGENT, generate, write_log
from pulse.flows.live import produce, record, run_live
from pulse.flows.replay import replay
from pulse.state.keys import KeySchema

pytestmark = pytest.mark.kafka

HEADERS = ("pulse-reason", "pulse-field", "pulse-detail", "pulse-source", "pulse-position")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def read_topic(bootstrap: str, topic: str, n: int, timeout: float = 30) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("check"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    got: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                assert msg.error() is None, msg.error()
                got.append(msg)
        # nothing more than n
        got.extend(m for m in consumer.consume(1000, 1.0) if m.error() is None)
    finally:
        consumer.close()
    return got


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pulse", *args], capture_output=True, text=True, timeout=timeout)


def last_json(out: subprocess.CompletedProcess) -> dict:
    return orjson.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def live(kafka_broker, redis_server, tmp_path_factory):
    """One live run over a 3-partition topic with 4% malformed lines of every kind,
    dead letters to a DLQ topic."""
    lines, truth = generate(users=200, items=200, events=3000, seed=11, malformed=0.04, days=1)
    path = tmp_path_factory.mktemp("live") / "events.jsonl"
    write_log(str(path), lines)
    topic = kafka_broker.create_topic(unique("events"), partitions=3)
    dlq = kafka_broker.create_topic(unique("events.dlq"), partitions=1)
    produced = produce(path, "native", kafka_broker.bootstrap, topic)
    url = redis_server.url(40)
    redis.Redis.from_url(url).flushdb()
    group = unique("pulse")
    s = run_live(kafka_broker.bootstrap, topic, Settings(), url, dlq_topic=dlq,
                 max_events=len(lines), idle_exit_s=30, group_id=group)
    return dict(summary=s, produced=produced, url=url, lines=lines, truth=truth, topic=topic, dlq=dlq, group=group)


def test_produce_confirms_every_delivery(live):
    p = live["produced"]
    assert p["events"] == len(live["lines"]) and p["failed"] == 0
    # lines that are not JSON objects with a user_id go without a key
    assert 0 < p["keyless"] < len(live["lines"]) * 0.04


def test_every_message_is_processed_or_dead_lettered(live):
    s = live["summary"]
    assert s["stopped_by"] == "max_events"
    assert s["events_in"] == len(live["lines"])
    assert s["events_ok"] + s["events_dlq"] == s["events_in"]
    assert s["events_ok"] > 0 and s["lag_at_exit"] == 0


def test_redis_has_the_documented_keys(live):
    s, url = live["summary"], live["url"]
    r = redis.Redis.from_url(url)
    keys = KeySchema()
    profiles = list(r.scan_iter(match="pulse:user:*:profile"))
    assert len(profiles) == s["users"] > 10
    user = profiles[0].decode().split("{")[1].split("}")[0]
    recs = orjson.loads(r.get(keys.recs(user)))
    assert set(recs) == {"recomm_id", "generated_at", "segment", "items"}
    assert recs["items"]
    profile = orjson.loads(r.get(keys.profile(user)))
    assert {"counts", "last_seen", "engagement", "categories", "rule_segments"} <= set(profile)
    verdict = orjson.loads(r.get(keys.verdict(user)))
    assert set(verdict) == {"segment", "anomaly"}
    assert set(verdict["anomaly"]) >= {"score", "flagged"}
    assert r.zcard(keys.trending) > 0
    assert int(r.hget(keys.meta, "events_processed")) == s["events_ok"]


def test_dead_letters_land_on_the_dlq_topic_with_reasons_in_headers(live, kafka_broker):
    s, lines, truth = live["summary"], live["lines"], live["truth"]
    crawler = sum(1 for line in lines if CRAWLER_AGENT.encode() in line)
    assert s["dlq_by_reason"] == {**truth["malformed"], "bot_user_agent": crawler}
    assert s["dlq_delivered"] == s["events_dlq"] and s["dlq_failed"] == 0
    msgs = read_topic(kafka_broker.bootstrap, live["dlq"], s["events_dlq"])
    assert len(msgs) == s["events_dlq"]
    heads = [dict((k, v.decode()) for k, v in m.headers()) for m in msgs]
    assert all(set(HEADERS) <= set(h) for h in heads)
    assert Counter(h["pulse-reason"] for h in heads) == Counter(s["dlq_by_reason"])
    originals = set(lines)
    for m, h in zip(msgs, heads):
        assert h["pulse-detail"]
        if h["pulse-reason"] == "duplicate_event":
            continue  # dead-lettered by the user step, after parsing (see the report)
        assert m.value() in originals  # the payload, untouched
        topic, _, partition = h["pulse-source"].rpartition("/")
        assert topic == live["topic"] and int(partition) in (0, 1, 2) and int(h["pulse-position"]) >= 0
    missing = [h for h in heads if h["pulse-reason"] == "missing_field"]
    assert missing and all(h["pulse-field"] for h in missing)


def test_the_position_is_committed_for_monitoring(live, kafka_broker):
    checker = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": live["group"]})
    try:
        committed = checker.committed([TopicPartition(live["topic"], p) for p in range(3)], timeout=10)
    finally:
        checker.close()
    assert sum(tp.offset for tp in committed) == len(live["lines"])


def test_max_events_stops_exactly_there(live, redis_url, kafka_broker):
    s = run_live(kafka_broker.bootstrap, live["topic"], Settings(), redis_url, max_events=1000, idle_exit_s=30)
    assert s["events_in"] == 1000 and s["stopped_by"] == "max_events"
    assert s["events_ok"] + s["events_dlq"] == 1000
    assert s["lag_at_exit"] == len(live["lines"]) - 1000


def test_an_idle_topic_ends_after_idle_exit(kafka_broker, redis_url):
    topic = kafka_broker.create_topic(unique("empty"))
    t0 = time.monotonic()
    s = run_live(kafka_broker.bootstrap, topic, Settings(), redis_url, idle_exit_s=1.0)
    assert s["stopped_by"] == "idle_exit" and s["events_in"] == 0
    assert time.monotonic() - t0 < 15


def test_record_then_replay_equals_the_live_run(kafka_broker, redis_server, tmp_path):
    """Produce → record → replay the recording into one db; run live into another: the
    same models (every key but the users' lists). Both are driven by event time, and the
    model step applies each partition's records in order (seq) whatever the batching;
    with one partition that is the replay's canonical order too."""
    lines, _ = generate(users=150, items=150, events=3000, seed=5, malformed=0.02, days=1)
    log = tmp_path / "events.jsonl"
    write_log(str(log), lines)
    topic = kafka_broker.create_topic(unique("equiv"), partitions=1)
    out = cli("produce", str(log), "--brokers", kafka_broker.bootstrap, "--topic", topic)
    assert out.returncode == 0, out.stderr
    assert last_json(out)["events"] == len(lines) and last_json(out)["failed"] == 0

    recorded = tmp_path / "recorded.jsonl.gz"
    out = cli("record", "--brokers", kafka_broker.bootstrap, "--topic", topic, "--out", str(recorded))
    assert out.returncode == 0, out.stderr
    assert last_json(out)["events"] == len(lines) and last_json(out)["skipped"] == 0
    import gzip

    assert gzip.decompress(recorded.read_bytes()) == log.read_bytes()

    url_replay, url_live = redis_server.url(41), redis_server.url(42)
    for url in (url_replay, url_live):
        redis.Redis.from_url(url).flushdb()
    a = replay(recorded, "native", Settings(), url_replay)
    b = run_live(kafka_broker.bootstrap, topic, Settings(), url_live, max_events=len(lines), idle_exit_s=30)
    for k in ("events_in", "events_ok", "events_dlq", "dlq_by_reason", "events_late", "users"):
        assert a[k] == b[k], k
    first, second = dump_redis(url_replay), dump_redis(url_live)
    assert len(first) > 100
    # The models are the same; users' lists may differ by how far the models had got
    # when they were blended, which depends on the batching (Kafka's, or a file's), and
    # so may their announcements on pulse:updates: both announce every user's list.
    def lists(dump: dict) -> dict:
        return {k: v for k, v in dump.items() if not k.endswith("}:recs") and k != "pulse:updates"}

    assert lists(first) == lists(second)
    assert first.keys() == second.keys()
    for dump in (first, second):
        users = {k.split("{")[1].split("}")[0].encode() for k in dump if k.endswith("}:recs")}
        assert {f[b"user_id"] for _, f in dump["pulse:updates"][1]} == users


def test_record_stops_after_max_events_and_writes_one_file_per_partition(live, kafka_broker, tmp_path):
    s = record(kafka_broker.bootstrap, live["topic"], tmp_path / "one.jsonl", max_events=100)
    assert s["events"] + s["skipped"] == 100
    outdir = tmp_path / "parts"
    outdir.mkdir()
    s = record(kafka_broker.bootstrap, live["topic"], outdir)
    files = sorted(outdir.iterdir())
    assert len(files) == 3
    assert sum(len(f.read_bytes().splitlines()) for f in files) == s["events"] == len(live["lines"]) - s["skipped"]


def test_an_unreachable_broker_is_a_clear_error(redis_url):
    port = free_port()
    t0 = time.monotonic()
    out = cli("run", "--brokers", f"127.0.0.1:{port}", "--topic", "events", "--redis", redis_url, "--connect-timeout", "2")
    assert out.returncode == 2, out.stderr
    said = " ".join(out.stderr.split())
    assert f"cannot reach the Kafka broker at 127.0.0.1:{port}" in said
    assert "--brokers" in said
    assert "error" in last_json(out)
    assert time.monotonic() - t0 < 20


def test_a_missing_topic_is_a_clear_error(kafka_broker, redis_url):
    for args in (["run", "--redis", redis_url], ["record", "--out", "/tmp/never.jsonl"]):
        out = cli(*args, "--brokers", kafka_broker.bootstrap, "--topic", "no-such-topic")
        assert out.returncode == 2, out.stderr
        assert f"topic 'no-such-topic' does not exist on {kafka_broker.bootstrap}" in " ".join(out.stderr.split())
        assert "error" in last_json(out)


def test_a_two_process_cluster_resumes_from_process_0s_recovery_store(kafka_broker, redis_server, tmp_path):
    """The Kubernetes layout (docker/k8s/40-statefulset.yaml): each process has its own
    recovery directory, process 0's holds every partition, process 1's stays empty. A
    second run of the cluster resumes: it reads only what was produced since."""
    lines, _ = generate(users=100, items=100, events=2000, seed=3, days=1)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_log(str(first), lines[:1200])
    write_log(str(second), lines[1200:])
    topic = kafka_broker.create_topic(unique("cluster"), partitions=3)
    url = redis_server.url(43)
    redis.Redis.from_url(url).flushdb()
    dirs = [tmp_path / "pod-0", tmp_path / "pod-1"]

    def cluster() -> list[dict]:
        addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in dirs)
        procs = [
            subprocess.Popen([sys.executable, "-m", "pulse", "run", "--brokers", kafka_broker.bootstrap, "--topic", topic,
                              "--redis", url, "--recovery", str(d), "--idle-exit", "5",
                              "--process-id", str(i), "--addresses", addresses],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i, d in enumerate(dirs)
        ]
        try:
            outs = [p.communicate(timeout=120) for p in procs]
        finally:
            for p in procs:  # a process that failed leaves its peer waiting for it
                if p.poll() is None:
                    p.kill()
        for p, (_out, err) in zip(procs, outs):
            assert p.returncode == 0, err
        return [orjson.loads(out.strip().splitlines()[-1]) for out, _err in outs]

    assert produce(first, "native", kafka_broker.bootstrap, topic)["failed"] == 0
    assert sum(s["events_in"] for s in cluster()) == 1200
    assert len(list(dirs[0].glob("part-*.sqlite3"))) == 2 and not list(dirs[1].glob("part-*"))
    assert produce(second, "native", kafka_broker.bootstrap, topic)["failed"] == 0
    again = cluster()
    assert sum(s["events_in"] for s in again) == 800
    assert all(s["lag_at_exit"] == 0 for s in again)


def run_one_event_users(kafka_broker, redis_server, tmp_path, users: int, name: str, db: int, settings: Settings):
    """A live run of ``users`` users of one event each, on a fresh topic; (summary, Redis URL)."""
    now = int(time.time() * 1000)
    log = tmp_path / "users.jsonl"
    log.write_bytes(b"".join(orjson.dumps({"user_id": f"idle-{n}", "type": "view", "item_id": f"i{n % 50}", "ts": now + n})
                             + b"\n" for n in range(users)))
    topic = kafka_broker.create_topic(unique(name), partitions=2)
    assert produce(log, "native", kafka_broker.bootstrap, topic)["failed"] == 0
    url = redis_server.url(db)
    redis.Redis.from_url(url).flushdb()
    return run_live(kafka_broker.bootstrap, topic, settings, url, idle_exit_s=5), url


def test_a_live_run_frees_the_state_of_users_idle_for_live_idle_s(kafka_broker, redis_server, tmp_path):
    users = 400
    s, url = run_one_event_users(kafka_broker, redis_server, tmp_path, users, "idle", 30, Settings(live_idle_s=1))
    assert s["events_ok"] == s["users"] == users
    assert s["users_held"] == 0 and s["lists_held"] == 0  # all idle for over 1 s when the run ended
    # a user's last windows, sent on when the user is freed, count no user again
    assert int(redis.Redis.from_url(url).hget("pulse:meta", "users")) == users
    # the state is freed, not what was written: every profile is in Redis, with its TTL
    r = redis.Redis.from_url(url)
    profiles = list(r.scan_iter(match="pulse:user:*:profile", count=1000))
    assert len(profiles) == users and all(r.ttl(k) > 0 for k in profiles)


def test_without_idle_eviction_a_live_run_holds_every_users_state(kafka_broker, redis_server, tmp_path):
    users = 400
    s, _ = run_one_event_users(kafka_broker, redis_server, tmp_path, users, "held", 31, Settings())  # live_idle_s: 30 min
    assert s["users"] == users and s["users_held"] == users and s["lists_held"] == users


def test_an_idle_partition_is_fetched_less_often_until_records_come(kafka_broker):
    from datetime import datetime, timezone

    from confluent_kafka import Producer

    from pulse.flows.live import IDLE_FETCH_MS, StopControl, _LivePartition

    topic = f"idle-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=1)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    producer.produce(topic, b"{}")
    producer.flush(10)
    part = _LivePartition({"bootstrap.servers": kafka_broker.bootstrap, "group.id": "idle-test", "enable.auto.commit": False},
                          "in", "p0", topic, 0, StopControl(), batch_size=100)
    try:
        deadline = time.monotonic() + 20
        while not part.next_batch():  # the record already there
            assert time.monotonic() < deadline
        assert part.next_awake() is None
        waits = []
        for _ in range(5):
            assert part.next_batch() == []
            awake = part.next_awake()
            waits.append(None if awake is None else (awake - datetime.now(timezone.utc)).total_seconds() * 1000)
        assert waits[0] is None  # the first empty fetch: Bytewax's own 1 ms pause
        assert 0 < waits[1] <= 2 and 0 < waits[-1] <= IDLE_FETCH_MS and waits[-1] > 2
        producer.produce(topic, b"{}")
        producer.flush(10)
        time.sleep(0.5)
        while not part.next_batch():
            assert time.monotonic() < deadline
        assert part.next_awake() is None  # records again: no pause
    finally:
        part.close()
