"""Privacy: consent: false and forget events delete what Pulse holds of a user (flow state,
keys, stream entries), pulse forget does in Redis, pseudonymous ids, retention per key
kind. Against a real redis-server and real replays."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
import redis

from pulse.client import PulseClient
from pulse.flows.config import Settings
from pulse.state.keys import KeySchema
from pulse.state.privacy import pseudonym

T0 = 1_767_571_200_000
KEYS = KeySchema()


def people(n_events: int = 3000, users: int = 50) -> list[dict]:
    return [{"user_id": f"u{i % users}", "type": "view", "item_id": f"i{i % 97}", "category": f"c{i % 7}",
             "ts": T0 + i * 1000, "event_id": f"e{i}", "session_id": f"s{i % users}"} for i in range(n_events)]


def flood(user: str, t0: int, n: int = 200) -> list[dict]:
    """Views at 0.2 s: the bot rules flag the user (a pulse:anomalies entry)."""
    return [{"user_id": user, "type": "view", "item_id": f"i{k % 97}", "category": f"c{k % 7}", "ts": t0 + k * 200,
             "event_id": f"{user}-f{k}", "session_id": f"{user}-flood"} for k in range(n)]


def write(path, events: list[dict]) -> None:
    events = sorted(events, key=lambda e: e["ts"])
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))


def replay(path, url: str, workers: int = 1, **settings) -> dict:
    from pulse.flows.replay import replay as run

    return run(path, "native", Settings(recent_events=5, **settings), url, workers=workers)


def keys_of(client: redis.Redis, user: str) -> list[bytes]:
    return [k for k in client.scan_iter(count=1000) if f"{{{user}}}".encode() in k]


def stream_users(client: redis.Redis, stream: str) -> set[str]:
    return {fields[b"user_id"].decode() for _, fields in client.xrange(stream)}


@pytest.mark.parametrize("workers", [1, 2])
def test_consent_false_deletes_the_users_keys_and_stream_entries(tmp_path, redis_url, workers):
    events = people() + flood("u7", T0 + 100_000)
    events.append({"user_id": "u7", "type": "view", "item_id": "i1", "ts": T0 + 4_000_000, "consent": False})
    write(tmp_path / "log.jsonl", events)
    summary = replay(tmp_path / "log.jsonl", redis_url, workers)
    client = redis.Redis.from_url(redis_url)
    assert keys_of(client, "u7") == []
    assert "u7" not in stream_users(client, KEYS.anomalies) | stream_users(client, KEYS.updates)
    assert keys_of(client, "u8") and "u8" in stream_users(client, KEYS.updates)
    assert summary["dlq_by_reason"] == {"no_consent": 1}
    assert summary["events_ok"] + summary["events_dlq"] == summary["events_in"]


def test_without_the_opt_out_the_same_user_is_flagged_and_kept(tmp_path, redis_url):
    write(tmp_path / "log.jsonl", people() + flood("u7", T0 + 100_000))
    replay(tmp_path / "log.jsonl", redis_url)
    client = redis.Redis.from_url(redis_url)
    assert len(keys_of(client, "u7")) == 4 and "u7" in stream_users(client, KEYS.anomalies)


def test_a_user_who_comes_back_after_a_forget_event_starts_afresh(tmp_path, redis_url):
    events = people()
    events.append({"user_id": "u7", "type": "forget", "ts": T0 + 4_000_000})
    events.append({"user_id": "u7", "type": "view", "item_id": "i5", "category": "c5", "ts": T0 + 4_001_000, "event_id": "e7"})
    write(tmp_path / "log.jsonl", events)
    summary = replay(tmp_path / "log.jsonl", redis_url)
    client = redis.Redis.from_url(redis_url)
    profile = orjson.loads(client.get(KEYS.profile("u7")))
    # one event since the forget (its event id was seen before it, and is new again)
    assert profile["counts"] == {"view": 1}
    assert len(client.zrange(KEYS.recent_events("u7"), 0, -1)) == 1
    assert summary["events_ok"] == summary["events_in"]


def test_forgetting_leaves_the_replay_deterministic(tmp_path, redis_url, redis_server):
    from conftest import dump_redis

    events = people() + flood("u7", T0 + 100_000)
    events.append({"user_id": "u7", "type": "view", "ts": T0 + 200_000, "consent": False})
    events.append({"user_id": "u9", "type": "forget", "ts": T0 + 300_000})
    write(tmp_path / "log.jsonl", events)
    replay(tmp_path / "log.jsonl", redis_url)
    other = redis_server.url(0)
    redis.Redis.from_url(other).flushdb()
    replay(tmp_path / "log.jsonl", other)
    assert dump_redis(redis_url) == dump_redis(other)


def pulse_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pulse", *args], capture_output=True, text=True, timeout=120, env=env)


def test_pulse_forget_deletes_a_users_keys_and_is_idempotent(tmp_path, redis_url):
    write(tmp_path / "log.jsonl", people() + flood("u3", T0 + 100_000))
    replay(tmp_path / "log.jsonl", redis_url)
    first = pulse_cli("forget", "u3", "--redis", redis_url)
    again = pulse_cli("forget", "u3", "--redis", redis_url)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert orjson.loads(first.stdout)["keys_deleted"] == 4 and orjson.loads(first.stdout)["stream_entries_deleted"] >= 2
    assert orjson.loads(again.stdout) == {"users": 1, "keys_deleted": 0, "stream_entries_deleted": 0}
    client = redis.Redis.from_url(redis_url)
    assert keys_of(client, "u3") == [] and "u3" not in stream_users(client, KEYS.anomalies)
    assert keys_of(client, "u4")


def test_pulse_forget_refuses_an_id_that_cannot_be_stored(redis_url):
    out = pulse_cli("forget", "a{b", "--redis", redis_url)
    assert out.returncode == 2 and "braces" in out.stderr


def test_pseudonymized_ids_are_all_redis_holds_and_the_client_finds_them(tmp_path, redis_url, monkeypatch):
    write(tmp_path / "log.jsonl", people())
    replay(tmp_path / "log.jsonl", redis_url, pseudonymize_key="k3y")
    client = redis.Redis.from_url(redis_url)
    dump = b" ".join([*client.scan_iter(count=1000), *(client.get(k) or b"" for k in client.scan_iter("pulse:user:*:recs"))])
    assert b"u7" not in dump and pseudonym("u7", "k3y").encode() in dump
    assert PulseClient(redis_url, pseudonymize_key="k3y").recs("u7")["items"]
    env = {**__import__("os").environ, "PULSE_PSEUDONYMIZE_KEY": "k3y"}
    out = pulse_cli("forget", "u7", "--redis", redis_url, env=env)
    assert orjson.loads(out.stdout)["keys_deleted"] == 4
    assert PulseClient(redis_url, pseudonymize_key="k3y").recs("u7") is None


def test_with_pseudonyms_the_dead_letter_file_holds_no_raw_user_id(tmp_path, redis_url):
    bad = [
        {"user_id": "alice", "type": "teleport", "ts": T0 + 10},  # an object: its id is replaced
        {"user_id": " bob ", "anonymous_id": "anon-bob", "type": "view", "ts": T0 // 1000},
        {"user_id": 4242, "type": "view", "ts": T0 + 20, "item_id": "i1", "event_id": "d1"},
        {"user_id": 4242, "type": "view", "ts": T0 + 21, "item_id": "i1", "event_id": "d1"},  # a duplicate
    ]
    lines = [orjson.dumps(e) for e in sorted(people(200) + bad, key=lambda e: e["ts"])]
    lines += [b'{"user_id": "carol", "type": ', b'["dave", "view"]']  # cannot be attributed: not objects
    (tmp_path / "log.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    dlq = tmp_path / "dlq.jsonl"
    from pulse.flows.replay import replay as run

    run(tmp_path / "log.jsonl", "native", Settings(pseudonymize_key="k3y"), redis_url, dlq_path=str(dlq))
    text = dlq.read_text()
    letters = [orjson.loads(line) for line in text.splitlines()]
    assert sorted(d["reason"] for d in letters) == ["duplicate_event", "invalid_json", "not_an_object",
                                                    "ts_out_of_range", "unknown_event_type"]
    for raw in ("alice", "bob", "4242", "anon-bob", "carol", "dave"):
        assert raw not in text
    payloads = {d["reason"]: orjson.loads(d["payload"]) for d in letters if not d.get("payload_withheld")}
    assert payloads["unknown_event_type"]["user_id"] == pseudonym("alice", "k3y")
    assert payloads["ts_out_of_range"]["user_id"] == pseudonym("bob", "k3y")  # trimmed, as the flow does
    assert payloads["ts_out_of_range"]["anonymous_id"] == pseudonym("anon-bob", "k3y")
    assert payloads["duplicate_event"]["user_id"] == pseudonym("4242", "k3y")


def test_with_pseudonyms_a_payload_that_is_not_an_object_is_withheld_keeping_reason_and_position(tmp_path, redis_url):
    (tmp_path / "log.jsonl").write_bytes(b'{"user_id": "carol", "type": \n' + orjson.dumps(people(1)[0]) + b"\n")
    dlq = tmp_path / "dlq.jsonl"
    from pulse.flows.replay import replay as run

    summary = run(tmp_path / "log.jsonl", "native", Settings(pseudonymize_key="k3y"), redis_url, dlq_path=str(dlq))
    [letter] = [orjson.loads(line) for line in dlq.read_text().splitlines()]
    assert summary["dlq_by_reason"] == {"invalid_json": 1}
    assert letter["payload"] == "" and letter["payload_withheld"] is True
    assert letter["reason"] == "invalid_json" and letter["position"] == 1 and letter["source"].endswith("log.jsonl")


def test_without_pseudonyms_dead_letters_keep_the_payload_as_it_came(tmp_path, redis_url):
    (tmp_path / "log.jsonl").write_bytes(b'{"user_id": "carol", "type": \n')
    dlq = tmp_path / "dlq.jsonl"
    from pulse.flows.replay import replay as run

    run(tmp_path / "log.jsonl", "native", Settings(), redis_url, dlq_path=str(dlq))
    [letter] = [orjson.loads(line) for line in dlq.read_text().splitlines()]
    assert letter["payload"] == '{"user_id": "carol", "type": ' and "payload_withheld" not in letter


def test_retention_is_set_per_key_kind(tmp_path, redis_url):
    write(tmp_path / "log.jsonl", people(300))
    replay(tmp_path / "log.jsonl", redis_url, ttl_profile_s=600, ttl_events_s=60)
    client = redis.Redis.from_url(redis_url)
    assert 0 < client.ttl(KEYS.profile("u1")) <= 600
    assert 0 < client.ttl(KEYS.recent_events("u1")) <= 60
    assert client.ttl(KEYS.recs("u1")) > 600  # (user_ttl_s: 30 days)
