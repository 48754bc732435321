"""The Redis store against real servers: a plain redis-server and a 3-node Redis
Cluster (tests/conftest.py). Readers never see a replaced value missing or half-written;
writes through any cluster node land on every node; credentials never reach a message."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time

import pytest
import redis
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, cluster_main, run_main
from conftest import free_port
from redis.cluster import RedisCluster

import bytewax.operators as op
from pulse.state.store import HashSet, Put, RedisStore, StreamAdd, WorkerStores, ZReplace, connect, ping


class Poller(threading.Thread):
    """Reads a key in a tight loop until stopped; keeps what it saw go wrong."""

    def __init__(self, url: str, read) -> None:
        super().__init__(daemon=True)
        self.client = connect(url)
        self.read = read
        self.stop = threading.Event()
        self.appeared = threading.Event()
        self.reads = 0
        self.bad: list = []

    def run(self) -> None:
        while not self.stop.is_set():
            problem = self.read(self.client)
            self.reads += 1
            if problem == "absent":
                if self.appeared.is_set():
                    self.bad.append(problem)
            elif problem is not None:
                self.bad.append(problem)
            else:
                self.appeared.set()


def replace_many(url: str, writes_of_round, poller: Poller, rounds: int = 150) -> None:
    store = RedisStore(url, flush_interval_s=60, flush_on_add=False)  # flushed here, once per round
    poller.start()
    try:
        for r in range(rounds):
            store.add(writes_of_round(r))
            store.flush()
            if r == 0:
                assert poller.appeared.wait(5)
    finally:
        poller.stop.set()
        poller.join(5)
        store.close()


@pytest.mark.parametrize("server", ["redis_url", "redis_cluster_url"])
def test_a_reader_never_finds_a_replaced_sorted_set_missing_or_half_written(server, request):
    url = request.getfixturevalue(server)

    # Round r: 1,500 + r % 7 members, every score r. A ZADD that long (37 kB) takes Redis
    # several reads of the socket, and other clients are served in between.
    def version(r: int) -> ZReplace:
        return ZReplace("pulse:trending", tuple((f"item{m}", float(r)) for m in range(1500 + r % 7)))

    def read(client):
        members = client.zrange("pulse:trending", 0, -1, withscores=True)
        if not members:
            return "absent"
        scores = {score for _, score in members}
        if len(scores) != 1 or len(members) != 1500 + int(scores.pop()) % 7:
            return f"mixed: {len(members)} members"
        return None

    poller = Poller(url, read)
    replace_many(url, lambda r: [version(r)], poller)
    assert poller.reads > 100
    assert poller.bad == []


def test_a_reader_never_finds_a_replaced_hash_missing_or_half_written(redis_url):
    def version(r: int) -> HashSet:
        return HashSet("pulse:meta", tuple((f"field{f}", str(r)) for f in range(1500)))

    def read(client):
        fields = client.hgetall("pulse:meta")
        if not fields:
            return "absent"
        if len(fields) != 1500 or len(set(fields.values())) != 1:
            return f"mixed: {sorted(set(fields.values()))}"
        return None

    poller = Poller(redis_url, read)
    replace_many(redis_url, lambda r: [version(r)], poller)
    assert poller.reads > 100
    assert poller.bad == []


def some_writes(users: int = 300) -> list:
    puts = [Put(f"pulse:user:{{u{n}}}:recs", b'{"user_id": "u%d"}' % n, 3600) for n in range(users)]
    return [
        *puts,
        ZReplace("pulse:trending", (("i1", 2.0), ("i2", 1.0))),
        ZReplace("pulse:trending:category:{shoes}", (("i1", 1.0),)),
        HashSet("pulse:meta", (("schema_version", "1"), ("users", str(users)))),
        StreamAdd("pulse:anomalies", "1700000000000-0", (("user_id", "u1"),)),
    ]


def keys_per_node(cluster) -> dict[int, int]:
    return {port: redis.Redis(port=port).dbsize() for port in cluster.ports}


def test_the_store_pointed_at_one_cluster_node_writes_to_every_node(redis_cluster, redis_cluster_url):
    store = RedisStore(redis_cluster_url)
    store.add(some_writes())
    store.close()
    assert min(keys_per_node(redis_cluster).values()) > 0
    rc = RedisCluster.from_url(redis_cluster.url(2))
    assert all(rc.get(f"pulse:user:{{u{n}}}:recs") == b'{"user_id": "u%d"}' % n for n in range(300))
    assert rc.zrange("pulse:trending", 0, -1, withscores=True) == [(b"i2", 1.0), (b"i1", 2.0)]
    assert rc.hget("pulse:meta", "users") == b"300"
    assert len(rc.xrange("pulse:anomalies")) == 1
    assert store.stats.keys_written == 304


def test_replaying_a_stream_entry_into_the_cluster_is_no_error(redis_cluster_url):
    entry = StreamAdd("pulse:anomalies", "1700000000000-0", (("user_id", "u1"),))
    for _ in range(2):
        store = RedisStore(redis_cluster_url)
        store.add([entry])
        store.close()
    assert len(RedisCluster.from_url(redis_cluster_url).xrange("pulse:anomalies")) == 1


def write_in_flow(url: str, writes: list, workers: int = 1) -> list[RedisStore]:
    """Run a flow whose step writes each item through the store of the worker it runs
    on, as the dataflow's steps do."""
    stores: list[RedisStore] = []
    writers = WorkerStores(url, on_store=stores.append)
    flow = Dataflow("store_test")
    keyed = op.key_on("key", op.input("inp", flow, TestingSource(writes, batch_size=50)), lambda w: w.key)

    def write(_state, w):  # (a stateful step runs on the worker its key is routed to)
        writers.current().add([w])
        return None, None

    op.inspect("written", op.stateful_map("write", keyed, write), lambda _step, _x: None)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    writers.close()
    return stores


def test_steps_on_one_worker_share_its_store(redis_url):
    writes = some_writes()
    stores = write_in_flow(redis_url, writes)
    assert len(stores) == 1
    client = redis.Redis.from_url(redis_url)
    assert {k.decode() for k in client.scan_iter(count=1000)} == {w.key for w in writes}
    assert client.get("pulse:user:{u7}:recs") == b'{"user_id": "u7"}'


def test_each_worker_writes_over_its_own_store(redis_url):
    writes = some_writes()
    stores = write_in_flow(redis_url, writes, workers=2)
    assert len(stores) == 2
    assert all(s.stats.keys_written > 0 for s in stores)
    assert sum(s.stats.keys_written for s in stores) == len(writes)
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() == len(writes)


def test_credentials_never_appear_in_messages(tmp_path, caplog):
    port = free_port()
    url = f"redis://user:s3cret@127.0.0.1:{port}/0"
    problem = ping(url, timeout_s=0.5)
    assert problem is not None and f"127.0.0.1:{port}/0" in problem and "s3cret" not in problem

    caplog.set_level(logging.WARNING, logger="pulse.store")
    store = RedisStore(url, flush_interval_s=0.01, retry_max_s=0.2)
    store.add([Put("pulse:user:{u1}:recs", b"{}")])
    deadline = time.monotonic() + 5
    while not any("unavailable" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
        time.sleep(0.05)
    messages = [r.getMessage() for r in caplog.records]
    assert any("unavailable" in m and f"127.0.0.1:{port}/0" in m for m in messages)
    assert not any("s3cret" in m for m in messages)

    # The same URL once Redis is there (with that user): the waiting write goes through.
    server = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), "--user", "user", "on", ">s3cret", "~*", "&*", "+@all"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        store.close()
        assert redis.Redis.from_url(url).get("pulse:user:{u1}:recs") == b"{}"
        wrong = ping(f"redis://user:n0tit@127.0.0.1:{port}/0")
        assert wrong is not None and "n0tit" not in wrong
    finally:
        server.terminate()
        server.wait(10)
    assert not any("s3cret" in r.getMessage() or "s3cret" in (r.exc_text or "") for r in caplog.records)


def test_a_cluster_url_with_a_database_other_than_0_is_refused(redis_cluster_url):
    problem = ping(redis_cluster_url.rsplit("/", 1)[0] + "/3")
    assert problem is not None and "SELECT is not allowed in cluster mode" in problem




def test_a_notification_is_one_xadd_and_one_publish_in_the_wire_protocol():
    from pulse.state.store import Publish, _command, encode_commands

    note = Publish("pulse:updates", "5-0", (("user_id", "u{1}"), ("recomm_id", "r"), ("generated_at", "2026-01-05T00:00:00.000Z")),
                   "pulse:updates", b'{"user_id":"u{1}"}', 100)
    xadd = _command([b"XADD", b"pulse:updates", b"MAXLEN", b"~", b"100", b"5-0", b"user_id", b"u{1}", b"recomm_id", b"r",
                     b"generated_at", b"2026-01-05T00:00:00.000Z"])
    assert encode_commands([note]) == (xadd + _command((b"PUBLISH", b"pulse:updates", b'{"user_id":"u{1}"}')), 2)
