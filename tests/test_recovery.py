"""Fault tolerance and determinism: kill -9 and resume, cluster shapes, rescaling, and a
Redis outage — each compared key for key with an uninterrupted run (in a cluster, every
key but the users' lists)."""

import os
import random
import signal
import subprocess
import sys
import time
import zlib

import orjson
import pytest
import redis

from conftest import RedisServer, dump_redis
from pulse.flows.generate import generate, write_log

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """One generated log, as one file and as a directory of two files split by user
    (as a Kafka topic keyed by user would be)."""
    lines, _ = generate(users=300, items=200, events=12_000, seed=11, malformed=0.02, days=1)
    base = tmp_path_factory.mktemp("logs")
    single = base / "events.jsonl"
    write_log(str(single), lines)
    parts = base / "parts"
    parts.mkdir()
    halves: list[list[bytes]] = [[], []]
    for line in lines:
        try:
            user = str(orjson.loads(line).get("user_id", ""))
        except (orjson.JSONDecodeError, AttributeError):
            user = ""
        halves[zlib.crc32(user.encode()) % 2].append(line)
    write_log(str(parts / "a.jsonl"), halves[0])
    write_log(str(parts / "b.jsonl"), halves[1])
    return single, parts


def pulse(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "pulse", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, **kw)


def finish(proc, timeout=300) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]
    return orjson.loads(out.decode().strip().splitlines()[-1])


def kill_group(proc) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def model_state(dump: dict) -> dict:
    """Everything but the users' lists, which in a cluster may differ by when a process's
    view of the models was refreshed (see pulse.state.view), and their announcements
    (numbered by the server when several processes write them)."""
    return {k: v for k, v in dump.items() if not k.endswith("}:recs") and k != "pulse:updates"}


def but_updates(dump: dict) -> dict:
    return {k: v for k, v in dump.items() if k != "pulse:updates"}


def announced(dump: dict, since: bytes = b"0-0") -> set:
    """The (user, recomm_id) pairs on pulse:updates from entry id ``since`` on."""
    def key(entry_id: bytes) -> tuple:
        return tuple(map(int, entry_id.split(b"-")))

    return {(f[b"user_id"], f[b"recomm_id"]) for i, f in dump["pulse:updates"][1] if key(i) >= key(since)}


def fresh(url: str) -> str:
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def reference(logs, redis_server):
    """Uninterrupted single-process replays of the single file and of the directory."""
    single, parts = logs
    urls = {"single": fresh(redis_server.url(50)), "parts": fresh(redis_server.url(51))}
    finish(pulse("replay", single, "--redis", urls["single"]))
    finish(pulse("replay", parts, "--redis", urls["parts"]))
    return {name: dump_redis(url) for name, url in urls.items()}


def test_kill_9_at_random_points_then_resume_equals_an_uninterrupted_run(logs, reference, redis_server, tmp_path):
    single, _ = logs
    url = fresh(redis_server.url(52))
    rng = random.Random(7)
    store = tmp_path / "recovery"
    for _ in range(3):
        proc = pulse("replay", single, "--redis", url, "--recovery", store, "--snapshot-s", "0.3")
        time.sleep(rng.uniform(2.5, 5.0))
        if proc.poll() is not None:
            break
        kill_group(proc)
    finish(pulse("replay", single, "--redis", url, "--recovery", store, "--snapshot-s", "0.3"))
    dump = dump_redis(url)
    assert but_updates(dump) == but_updates(reference["single"])
    # Lists written after the last snapshot are written and announced again on the
    # resume: announcements are at least once, and none is missing.
    # (The stream is capped: the resumed run's, which took more entries, may start later.)
    first = dump["pulse:updates"][1][0][0]
    assert announced(dump) >= announced(reference["single"], since=first)


def test_a_two_process_cluster_writes_what_one_process_writes(logs, reference, redis_server):
    _, parts = logs
    url = fresh(redis_server.url(53))
    summary = finish(pulse("replay", parts, "--redis", url, "--processes", "2"))
    assert summary["processes"] == 2
    assert summary["events_ok"] + summary["events_dlq"] == summary["events_in"]
    dump = dump_redis(url)
    assert model_state(dump) == model_state(reference["parts"])
    assert dump.keys() == reference["parts"].keys()  # every user has a list


def test_rescaling_2_then_1_then_2_processes_from_one_recovery_store(logs, reference, redis_server, tmp_path):
    _, parts = logs
    url = fresh(redis_server.url(54))
    store = tmp_path / "recovery"
    for processes, seconds in ((2, 4.0), (1, 3.0)):
        proc = pulse("replay", parts, "--redis", url, "--recovery", store, "--snapshot-s", "0.3", "--processes", processes)
        time.sleep(seconds)
        if proc.poll() is None:
            kill_group(proc)
    finish(pulse("replay", parts, "--redis", url, "--recovery", store, "--snapshot-s", "0.3", "--processes", "2"))
    dump = dump_redis(url)
    assert model_state(dump) == model_state(reference["parts"])
    assert dump.keys() == reference["parts"].keys()


def test_a_30_second_redis_outage_mid_stream_loses_nothing(logs, reference, tmp_path):
    single, _ = logs
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    try:
        proc = pulse("-v", "replay", single, "--redis", server.url(0))
        # the outage begins once the flow is writing (start-up takes longer on a busy machine)
        client = redis.Redis.from_url(server.url(0))
        deadline = time.monotonic() + 60
        while not client.dbsize() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        client.close()
        assert proc.poll() is None, "the replay ended before the outage began: make the log longer"
        server.stop()
        time.sleep(30)
        assert proc.poll() is None, "the flow must wait for Redis, not give up"
        server.start()
        summary = finish(proc)
        assert summary["events_in"] > 0
        assert dump_redis(server.url(0)) == reference["single"]
    finally:
        server.stop()


def test_a_recovery_store_of_another_layout_is_refused_clearly(logs, redis_server, tmp_path):
    from bytewax.recovery import init_db_dir

    single, _ = logs
    store = tmp_path / "old"
    store.mkdir()
    init_db_dir(store, 1)  # a store as an older Pulse left it: no layout stamp
    proc = pulse("replay", single, "--redis", fresh(redis_server.url(55)), "--recovery", store)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "another dataflow layout" in err.decode() and "start a new --recovery directory" in err.decode()


def test_a_run_on_a_used_recovery_store_counts_as_resumed(tmp_path):
    from pulse.flows.replay import prepare_recovery

    store = tmp_path / "store"
    assert prepare_recovery(store, 2).resumed is False
    assert prepare_recovery(store, 2).resumed is True
    assert prepare_recovery(store, 2, create=False).resumed is True  # (a cluster's other processes)


def test_a_resumed_run_announces_on_server_numbered_ids(logs, reference, redis_server, tmp_path):
    # A resume numbers its lists afresh: event-time ids could fall on ids the crashed run
    # already gave other lists, and Redis would refuse them (lists never announced).
    single, _ = logs
    url = fresh(redis_server.url(56))
    r = redis.Redis.from_url(url)
    store = tmp_path / "recovery"
    proc = pulse("replay", single, "--redis", url, "--recovery", store, "--snapshot-s", "0.3")
    deadline = time.monotonic() + 120
    while r.xlen("pulse:updates") < 50 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the replay ended before it could be killed"
    kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    before = {i for i, _ in r.xrange("pulse:updates")}
    assert all(int(i.split(b"-")[0]) < 1_780_000_000_000 for i in before)  # event time (January 2026)
    finish(pulse("replay", single, "--redis", url, "--recovery", store, "--snapshot-s", "0.3"))
    after = [i for i, _ in r.xrange("pulse:updates") if i not in before]
    assert after and all(int(i.split(b"-")[0]) >= 1_780_000_000_000 for i in after)  # the server's clock
    assert announced(dump_redis(url)) >= announced(reference["single"], since=min(before))
