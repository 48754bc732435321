"""The examples a frontend starts from run against a real replay: the Node.js reader of
a user's list (examples/read_recs.mjs) and the consumer of change notifications
(examples/updates_consumer.py)."""

import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from pulse.flows.config import Settings
from pulse.flows.generate import generate, write_log
from pulse.flows.replay import replay
from pulse.state.keys import KeySchema

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def replayed(tmp_path_factory, redis_server):
    lines, _ = generate(users=60, items=60, events=1_500, seed=13, days=1)
    path = tmp_path_factory.mktemp("examples") / "events.jsonl"
    write_log(str(path), lines)
    url = redis_server.url(44)
    client = redis.Redis.from_url(url)
    client.flushdb()
    replay(path, "native", Settings(), url)
    return url, client


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is needed for examples/read_recs.mjs (Node.js 18 or newer)")
    return found


def test_the_node_example_prints_a_users_list_as_redis_holds_it(replayed):
    url, client = replayed
    key = next(client.scan_iter(match="pulse:user:*:recs"))
    doc = orjson.loads(client.get(key))
    user = KeySchema().user_of(key.decode())
    out = subprocess.run([node(), str(EXAMPLES / "read_recs.mjs"), user, url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert [(r[0], float(r[1]), r[2]) for r in rows] == [(i["item_id"], i["score"], i["reason"]) for i in doc["items"]]


def test_the_node_example_says_when_a_user_has_no_list(replayed):
    out = subprocess.run([node(), str(EXAMPLES / "read_recs.mjs"), "nobody", replayed[0]], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no recommendations for user nobody" in out.stderr


def test_the_updates_consumer_follows_the_stream_and_fetches_each_new_list(replayed):
    url, client = replayed
    out = subprocess.run([sys.executable, str(EXAMPLES / "updates_consumer.py"), "--redis", url, "--from", "0", "--count", "5"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = [orjson.loads(line) for line in out.stdout.splitlines()]
    first = client.xrange("pulse:updates", count=5)
    assert [g["id"] for g in got] == [i.decode() for i, _ in first]
    user = got[0]["user_id"]
    assert got[0]["top"] == [i["item_id"] for i in orjson.loads(client.get(f"pulse:user:{{{user}}}:recs"))["items"][:5]]
