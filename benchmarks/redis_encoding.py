"""The store's hand-written RESP encoding against redis-py's pipeline, on one realistic
flush; prints one JSON line.

    .venv/bin/python benchmarks/redis_encoding.py [--redis redis://127.0.0.1:6379/0] [--rounds 200]

Without ``--redis`` it starts a redis-server of its own on a free loopback port. A flush
is 1,000 ``SET ... EX`` of 600-byte JSON values, 50 sorted sets of 100 members replaced
atomically (``MULTI DEL ZADD EXEC``) and 10 ``HSET`` of 10 fields, the same commands both
ways: through :func:`pulse.state.store.send_pipelines` (encoded by
:func:`~pulse.state.store.encode_commands`, sent with ``send_packed_command``) and through
``redis.Redis.pipeline(transaction=False)`` (hiredis parses the replies of both).

``cpu_us_per_command`` is the client's CPU (what the dataflow's thread pays);
``wall_us_per_command`` adds the server's work, which is the same both ways. Medians.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pulse.state.store import HashSet, Put, Write, ZReplace, route, send_pipelines  # noqa: E402


def realistic_flush() -> list[Write]:
    recs = orjson.dumps({"user_id": "u", "items": [{"item_id": f"i{n}", "score": 0.5, "reason": "co_visit:i1"} for n in range(12)]})
    value = (recs + b" " * 600)[:600]
    puts = [Put(f"pulse:user:{{u{n}}}:recs", value, 2_592_000) for n in range(1000)]
    sets = [ZReplace(f"pulse:trending:category:{{c{n}}}", tuple((f"i{m}", m * 0.25) for m in range(100))) for n in range(50)]
    hashes = [HashSet(f"pulse:meta:{n}", tuple((f"field{f}", str(f)) for f in range(10))) for n in range(10)]
    return [*puts, *sets, *hashes]


def commands_in(writes: list[Write]) -> int:
    return sum(4 if type(w) is ZReplace else 1 for w in writes)


def through_redis_py(client: redis.Redis, writes: list[Write]) -> None:
    pipe = client.pipeline(transaction=False)
    for w in writes:
        if type(w) is Put:
            pipe.set(w.key, w.value, ex=w.ttl_s)
        elif type(w) is ZReplace:
            pipe.execute_command("MULTI")
            pipe.delete(w.key)
            pipe.zadd(w.key, dict(w.members))
            pipe.execute_command("EXEC")
        else:
            pipe.hset(w.key, mapping=dict(w.fields))
    pipe.execute()


def measure(flush: Callable[[], None], rounds: int, commands: int) -> dict:
    for _ in range(10):
        flush()
    cpu, wall = [], []
    for _ in range(rounds):
        c, w = time.process_time(), time.perf_counter()
        flush()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return {
        "cpu_us_per_command": round(statistics.median(cpu) * 1e6 / commands, 2),
        "wall_us_per_command": round(statistics.median(wall) * 1e6 / commands, 2),
    }


def start_redis(workdir: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: pass --redis URL")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.terminate()
    sys.exit(f"redis-server did not start on port {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", help="a Redis to write to (its keys pulse:* are overwritten); default: start one")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = (None, args.redis) if args.redis else start_redis(tmp)
        try:
            client = redis.Redis.from_url(url)
            writes = realistic_flush()
            commands = commands_in(writes)
            resp = measure(lambda: send_pipelines(route(client, writes)), args.rounds, commands)
            redis_py = measure(lambda: through_redis_py(client, writes), args.rounds, commands)
            print(orjson.dumps({
                "commands_per_flush": commands, "rounds": args.rounds, "hand_written_resp": resp, "redis_py_pipeline": redis_py,
                "cpu_ratio": round(redis_py["cpu_us_per_command"] / resp["cpu_us_per_command"], 2),
                "wall_ratio": round(redis_py["wall_us_per_command"] / resp["wall_us_per_command"], 2),
                "redis_py": redis.__version__,
            }).decode())
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
