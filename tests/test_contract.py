"""The frontend's contract: every value a real replay writes validates against the JSON
Schema of its key (``pulse schema``), every list written is announced on
``pulse:updates`` (stream and Pub/Sub), and the read client returns what Redis holds."""

import re
import subprocess
import sys
import threading
from pathlib import Path

import jsonschema
import orjson
import pytest
import redis

from pulse.client import PulseClient
from pulse.flows.config import Settings
from pulse.flows.generate import generate, write_log
from pulse.flows.replay import replay
from pulse.state.keys import KeySchema
from pulse.state.schema import contract

ROOT = Path(__file__).resolve().parent.parent


def pattern_regex(pattern: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"<[a-z_]+>", "[^{}]+", re.escape(pattern).replace(r"\<", "<").replace(r"\>", ">")) + "$")


@pytest.fixture(scope="module")
def written(tmp_path_factory, redis_server):
    """A 6,000-event replay with 3% malformed lines, and every Pub/Sub message it sent."""
    lines, _ = generate(users=200, items=150, events=6_000, seed=5, malformed=0.03, days=1)
    path = tmp_path_factory.mktemp("contract") / "events.jsonl"
    write_log(str(path), lines)
    url = redis_server.url(40)
    client = redis.Redis.from_url(url)
    client.flushdb()
    pubsub = client.pubsub()
    pubsub.subscribe("pulse:updates")
    pubsub.get_message(timeout=5)  # the subscription's confirmation
    messages: list = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            m = pubsub.get_message(timeout=0.2)
            if m and m["type"] == "message":
                messages.append(orjson.loads(m["data"]))

    thread = threading.Thread(target=listen)
    thread.start()
    summary = replay(path, "native", Settings(recent_events=5, replay_stats=True), url)
    stop.set()
    thread.join()
    return url, client, summary, messages, lines


def test_every_json_value_a_replay_writes_validates_against_its_key_schema(written):
    _, client, _, _, _ = written
    patterns = [(pattern_regex(k["pattern"]), k) for k in contract()["keys"]]
    checked = 0
    for key in client.scan_iter(count=1000):
        entry = next(k for rx, k in patterns if rx.match(key.decode()))
        if entry["redis_type"] == "string":
            jsonschema.validate(orjson.loads(client.get(key)), entry["schema"])
            checked += 1
    assert checked > 500


def test_every_key_a_replay_writes_has_its_pattern_and_type_in_the_contract(written):
    _, client, _, _, _ = written
    patterns = [(pattern_regex(k["pattern"]), k["redis_type"]) for k in contract()["keys"]]
    seen_types = set()
    for key in client.scan_iter(count=1000):
        types = [t for rx, t in patterns if rx.match(key.decode())]
        assert types, f"{key!r} matches no pattern of the contract"
        assert types[0] == client.type(key).decode(), key
        seen_types.add(types[0])
    assert seen_types == {"string", "zset", "stream", "hash"}


def test_a_value_outside_the_contract_fails_validation():
    recs = next(k for k in contract()["keys"] if k["pattern"].endswith(":recs"))["schema"]
    with pytest.raises(jsonschema.ValidationError, match="reason"):
        jsonschema.validate({"recomm_id": "NHm-5r0aFowEMaJK", "generated_at": "2026-01-01T00:00:00.000Z", "segment": None,
                             "items": [{"item_id": "a", "score": 1.0, "reason": "magic"}]}, recs)


def test_the_readme_key_table_lists_exactly_the_contract_patterns_and_types():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Redis keys"):]
    table = table[: table.index("\n\n", table.index("| key |"))]
    rows = re.findall(r"^\| `([^`]+)` \| ([a-z ]+)", table, flags=re.M)
    names = {"string": "string", "sorted set": "zset", "stream": "stream", "hash": "hash"}
    assert {(p, names[t.strip()]) for p, t in rows} == {(k["pattern"], k["redis_type"]) for k in contract()["keys"]}


def test_pulse_schema_prints_the_contract_with_the_prefix_given():
    out = subprocess.run([sys.executable, "-m", "pulse", "schema", "--prefix", "shop1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = orjson.loads(out.stdout.strip().splitlines()[-1])
    assert doc == contract("shop1")
    assert all(k["pattern"].startswith("shop1:") for k in doc["keys"])


def test_every_user_with_a_list_has_its_latest_list_announced_on_the_stream(written):
    _, client, _, _, _ = written
    latest = {}
    for _, fields in client.xrange("pulse:updates"):
        latest[fields[b"user_id"].decode()] = fields[b"recomm_id"].decode()
    lists = {KeySchema().user_of(k.decode()): orjson.loads(client.get(k))["recomm_id"]
             for k in client.scan_iter(match="pulse:user:*:recs", count=1000)}
    assert lists and latest == lists


def test_stream_ids_follow_event_time_and_never_decrease(written):
    _, client, _, _, _ = written
    entries = client.xrange("pulse:updates")
    ids = [tuple(map(int, i.split(b"-"))) for i, _ in entries]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    from datetime import datetime

    first_ms, _ = ids[0]
    assert first_ms == int(datetime.fromisoformat(entries[0][1][b"generated_at"].decode()).timestamp() * 1000)


def test_every_stream_entry_was_also_published_on_the_channel(written):
    _, client, _, messages, _ = written
    stream = [{k.decode(): v.decode() for k, v in f.items()} for _, f in client.xrange("pulse:updates")]
    assert messages == stream


def test_the_client_reads_what_redis_holds_without_the_key_schema(written):
    url, client, _, _, _ = written
    key = next(client.scan_iter(match="pulse:user:*:recs"))
    user = key.decode().split("{")[1].split("}")[0]
    pulse = PulseClient(url)
    assert pulse.recs(user) == orjson.loads(client.get(key))
    assert pulse.profile(user) == orjson.loads(client.get(f"pulse:user:{{{user}}}:profile"))
    assert pulse.verdict(user) == orjson.loads(client.get(f"pulse:user:{{{user}}}:segment"))
    assert pulse.recs("nobody") is None
    name, described = sorted(orjson.loads(client.get("pulse:segments"))["segments"].items())[0]
    assert pulse.traits(name) == described["traits"] and pulse.traits("no-such-segment") == []
    item = pulse.recs(user)["items"][0]["item_id"]
    assert pulse.similar(item) == orjson.loads(client.get(f"pulse:item:{{{item}}}:similar"))
    top = pulse.trending(k=5)
    assert [m for m, _ in top] == [m.decode() for m in client.zrevrange("pulse:trending", 0, 4)]
    category = pulse.categories()[0]
    assert pulse.trending(category=category, k=3)
    assert pulse.meta()["events_processed"] == client.hget("pulse:meta", "events_processed").decode()
    assert [u["user_id"] for u in pulse.recent_updates(3)] == [f[b"user_id"].decode() for _, f in client.xrevrange("pulse:updates", count=3)]


def test_the_client_follows_updates_from_a_stream_id(written):
    url, client, _, _, _ = written
    entries = client.xrange("pulse:updates")
    pulse = PulseClient(url)
    after = entries[-4][0].decode()
    got = list(pulse.updates(last_id=after, block_ms=100))
    assert [u["id"] for u in got] == [i.decode() for i, _ in entries[-3:]]


def test_a_replay_writes_no_stats_hash_unless_asked(tmp_path, redis_server):
    # (its wall-clock rates would make a replay's Redis contents differ run to run)
    lines, _ = generate(users=20, items=30, events=300, seed=5, days=1)
    path = tmp_path / "events.jsonl"
    write_log(str(path), lines)
    url = redis_server.url(57)
    redis.Redis.from_url(url).flushdb()
    replay(path, "native", Settings(), url)
    keys = redis.Redis.from_url(url).keys("*")
    assert keys and not [k for k in keys if k.startswith(b"pulse:stats:")]


def test_the_stats_hash_has_the_runs_final_counters(written):
    url, _, summary, _, _ = written
    (stats,) = PulseClient(url).stats()
    assert stats["running"] == "0" and stats["mode"] == "replay"
    assert int(stats["events_in"]) == summary["events_in"]
    assert int(stats["events_ok"]) == summary["events_ok"]
    assert stats["dlq_by_reason"] == summary["dlq_by_reason"]
    assert stats["history"][-1]["events_in"] == summary["events_in"]


def test_a_users_recent_events_are_its_latest_accepted_events_newest_first(written):
    url, client, _, _, lines = written
    from pulse.operators.events import Event, Raw
    from pulse.operators.formats import Format

    parse = Format.native().parse
    by_user: dict = {}
    for n, line in enumerate(lines):
        ev = parse(Raw("log", n, line, n))
        if isinstance(ev, Event):  # what the parser accepts (the flow's own parser)
            by_user.setdefault(ev.user_id, []).append({"ts": ev.ts, "type": ev.type})
    kept = {k.decode().split("{")[1].split("}")[0] for k in client.scan_iter(match="pulse:user:*:events")}
    user = max(kept, key=lambda u: len(by_user.get(u, ())))  # the busiest user: more events than are kept
    assert len(by_user[user]) > 5
    got = PulseClient(url).recent_events(user, 10)
    assert len(got) == 5
    assert [e["ts"] for e in got] == sorted((d["ts"] for d in by_user[user]), reverse=True)[:5]
    assert {e["type"] for e in got} <= {d["type"] for d in by_user[user]}


def test_adding_the_same_recent_events_again_leaves_the_same_set(written, redis_url):
    from pulse.state.store import RedisStore, ZAddCapped

    writes = [ZAddCapped("pulse:user:{u}:events", ((f"e{i}", float(i)),), cap=3, ttl_s=60) for i in range(6)]
    store = RedisStore(redis_url)
    store.add(writes)
    store.flush()
    once = redis.Redis.from_url(redis_url).zrange("pulse:user:{u}:events", 0, -1)
    store.add(writes[::-1])
    store.close()
    assert once == redis.Redis.from_url(redis_url).zrange("pulse:user:{u}:events", 0, -1) == [b"e3", b"e4", b"e5"]
