"""Replaying recorded logs into a real Redis: every line accounted for, the documented
keys written, and the same contents on every replay."""

import gzip
import subprocess
import sys

import orjson
import pytest
import redis

from conftest import dump_redis, free_port
from pulse.client import PulseClient
from pulse.flows.config import Settings
from pulse.flows.generate import CRAWLER_AGENT, generate, write_log
from pulse.flows.replay import replay
from pulse.state.keys import SCHEMA_VERSION, KeySchema


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    """A generated log of 20,000 events with 5% malformed lines of every kind."""
    lines, truth = generate(users=300, items=300, events=20_000, seed=3, malformed=0.05, days=2)
    path = tmp_path_factory.mktemp("log") / "events.jsonl"
    write_log(str(path), lines)
    return path, lines, truth


def run(path, url, tmp_path, fmt="native", **kw):
    return replay(path, fmt, Settings(), url, dlq_path=str(tmp_path / "dlq.jsonl"), **kw)


def test_every_line_is_either_processed_or_dead_lettered(log, redis_url, tmp_path):
    path, lines, _ = log
    s = run(path, redis_url, tmp_path)
    assert s["events_in"] == len(lines)
    assert s["events_ok"] + s["events_dlq"] == s["events_in"]
    dlq = (tmp_path / "dlq.jsonl").read_bytes().splitlines()
    assert len(dlq) == s["events_dlq"]


def test_each_malformed_line_is_in_the_dlq_with_its_reason(log, redis_url, tmp_path):
    path, lines, truth = log
    s = run(path, redis_url, tmp_path)
    crawler_events = sum(1 for line in lines if CRAWLER_AGENT.encode() in line)
    expected = {**truth["malformed"], "bot_user_agent": crawler_events}
    assert s["dlq_by_reason"] == expected
    for line in (tmp_path / "dlq.jsonl").read_bytes().splitlines():
        doc = orjson.loads(line)
        assert doc["reason"] in expected and doc["detail"] and doc["payload"]


def test_the_documented_keys_are_written(log, redis_url, tmp_path):
    path, _, _ = log
    s = run(path, redis_url, tmp_path)
    r = redis.Redis.from_url(redis_url)
    keys = KeySchema()
    user = sorted(r.scan_iter(match="pulse:user:*:recs"))[0].decode().split("{")[1].split("}")[0]
    recs = orjson.loads(r.get(keys.recs(user)))
    assert set(recs) == {"recomm_id", "generated_at", "segment", "items"}
    assert recs["items"] and set(recs["items"][0]) == {"item_id", "score", "reason"}
    profile = orjson.loads(r.get(keys.profile(user)))
    assert set(profile) == {"counts", "first_seen", "last_seen", "engagement", "dwell_mean_ms", "categories", "items", "rule_segments"}
    verdict = orjson.loads(r.get(keys.verdict(user)))
    assert set(verdict) == {"segment", "anomaly"}
    assert set(verdict["anomaly"]) >= {"score", "flagged"}
    assert r.zcard(keys.trending) > 0
    meta = {k.decode(): v.decode() for k, v in r.hgetall(keys.meta).items()}
    assert meta["schema_version"] == str(SCHEMA_VERSION)
    assert int(meta["events_processed"]) == s["events_ok"]
    assert r.ttl(keys.recs(user)) > 0
    assert s["users"] == len(list(r.scan_iter(match="pulse:user:*:profile")))


def test_replaying_the_same_log_twice_gives_identical_contents(log, redis_server, tmp_path):
    path, _, _ = log
    urls = [redis_server.url(61), redis_server.url(62)]
    for url in urls:
        redis.Redis.from_url(url).flushdb()
        run(path, url, tmp_path)
    first, second = (dump_redis(u) for u in urls)
    assert len(first) > 100
    assert first == second


def test_a_gzip_log_replays_like_the_plain_one(log, redis_server, tmp_path):
    path, _, _ = log
    gz = tmp_path / "events.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    urls = [redis_server.url(59), redis_server.url(60)]
    for url, p in zip(urls, [path, gz]):
        redis.Redis.from_url(url).flushdb()
        run(p, url, tmp_path)
    assert dump_redis(urls[0]) == dump_redis(urls[1])


def test_a_directory_is_one_partition_per_file(log, redis_url, tmp_path):
    path, lines, _ = log
    logs = tmp_path / "logs"
    logs.mkdir()
    half = len(lines) // 2
    write_log(str(logs / "a.jsonl"), lines[:half])
    write_log(str(logs / "b.jsonl.gz"), lines[half:])
    s = run(logs, redis_url, tmp_path, workers=2)
    assert s["events_in"] == len(lines)
    assert s["events_ok"] + s["events_dlq"] == len(lines)


def test_the_cli_ends_with_a_json_summary(log, redis_url, tmp_path):
    path, lines, _ = log
    out = subprocess.run([sys.executable, "-m", "pulse", "replay", str(path), "--redis", redis_url], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = orjson.loads(out.stdout.strip().splitlines()[-1])
    assert summary["events_in"] == len(lines)
    assert {"events_ok", "events_dlq", "dlq_by_reason", "users", "keys_written", "seconds", "events_per_s"} <= set(summary)


def test_a_missing_log_is_a_clear_error(redis_url, tmp_path):
    out = subprocess.run([sys.executable, "-m", "pulse", "replay", str(tmp_path / "nope.jsonl"), "--redis", redis_url], capture_output=True, text=True)
    assert out.returncode == 2
    assert "does not exist" in out.stderr
    assert "error" in orjson.loads(out.stdout.strip().splitlines()[-1])


def test_an_unreachable_redis_is_a_clear_error(log, tmp_path):
    from conftest import free_port

    path, _, _ = log
    out = subprocess.run([sys.executable, "-m", "pulse", "replay", str(path), "--redis", f"redis://127.0.0.1:{free_port()}/0"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "cannot reach Redis" in out.stderr


def test_keys_of_an_older_schema_version_are_refused_by_replay_serve_and_the_client(log, redis_url):
    # What a run of key schema 2 left: its meta and a list with the user id inside.
    r = redis.Redis.from_url(redis_url)
    r.hset(KeySchema().meta, mapping={"schema_version": "2", "events_processed": "7"})
    old_list = b'{"user_id":"u1","recomm_id":"5463f92e-529b-c6b9-900d-b112d0979851","generated_at":"2026-01-05T00:00:00.000Z"}'
    r.set(KeySchema().recs("u1"), old_list)
    path, _, _ = log
    for command in (["replay", str(path)], ["serve", "--port", str(free_port())]):
        out = subprocess.run([sys.executable, "-m", "pulse", *command, "--redis", redis_url], capture_output=True, text=True, timeout=120)
        assert out.returncode != 0, command
        assert "key schema version 2" in out.stderr and f"version {SCHEMA_VERSION}" in out.stderr, out.stderr
    with pytest.raises(ValueError, match="key schema version 2"):
        PulseClient(redis_url)
    assert r.get(KeySchema().recs("u1")) == old_list and r.hget(KeySchema().meta, "events_processed") == b"7"


def test_keys_under_another_prefix_do_not_stop_a_replay(log, redis_url, tmp_path):
    redis.Redis.from_url(redis_url).hset(KeySchema("old").meta, "schema_version", "2")
    path, _, _ = log
    s = run(path, redis_url, tmp_path)
    assert s["events_ok"] > 0
    assert redis.Redis.from_url(redis_url).hget(KeySchema().meta, "schema_version") == str(SCHEMA_VERSION).encode()
