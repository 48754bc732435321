#!/usr/bin/env python3
"""Floods: does state stay bounded? Replays three generated floods with ``pulse replay``
(a subprocess) into a redis-server of its own, each at two sizes (``--n`` and half of
it), and prints one JSON line with, per flood and size: the replay's peak RSS (wait4's
ru_maxrss), events/s, Redis's used_memory, the per-user keys and how many of them have
no TTL (Redis TTL == -1).

* ``users``: ``--n`` users with one view each.
* ``one_user``: one user sending ``--n`` views of 1,000 items, a session of 1,000 events
  every 2 hours of event time.
* ``one_session``: one user sending ``--session-n`` views 100 ms apart (one session).

State bounded = the peak RSS of ``one_user`` and ``one_session`` does not grow with the
size (``rss_growth_mb``, the larger size's minus the smaller's); ``users`` grows with the
number of users by design (per-user state, evicted in live runs after ``live_idle_s``).

    .venv/bin/python benchmarks/floods.py --n 200000 --session-n 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import redis

from services import redis_server

ROOT = Path(__file__).resolve().parents[1]
BASE_MS = 1_767_225_600_000  # 2026-01-01


def write(path: Path, events) -> None:
    with open(path, "wb") as f:
        for e in events:
            f.write(orjson.dumps(e) + b"\n")


def users_flood(n: int):
    for i in range(n):
        yield {"user_id": f"f{i:07d}", "type": "view", "item_id": f"i{i % 1000:04d}", "ts": BASE_MS + i}


def one_user(n: int):
    for i in range(n):
        session, k = divmod(i, 1000)
        yield {"user_id": "flood", "type": "view", "item_id": f"i{i % 1000:04d}",
               "ts": BASE_MS + session * 7_200_000 + k * 1000}


def one_session(n: int):
    for i in range(n):
        yield {"user_id": "session", "type": "view", "item_id": f"i{i % 1000:04d}", "ts": BASE_MS + i * 100}


def replay(path: Path, url: str) -> dict:
    redis.Redis.from_url(url).flushdb()
    proc = subprocess.Popen([sys.executable, "-m", "pulse", "replay", str(path), "--redis", url],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"pulse replay failed ({proc.returncode})")
    summary = json.loads(out.decode().strip().splitlines()[-1])
    r = redis.Redis.from_url(url)
    keys = list(r.scan_iter(match="pulse:user:*", count=10_000))
    no_ttl = 0
    for at in range(0, len(keys), 10_000):
        pipe = r.pipeline(transaction=False)
        for k in keys[at:at + 10_000]:
            pipe.ttl(k)
        no_ttl += sum(1 for t in pipe.execute() if t == -1)
    return {"events": summary["events_in"], "events_per_s": summary["events_per_s"],
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "redis_used_mb": round(r.info("memory")["used_memory"] / 2**20, 1),
            "user_keys": len(keys), "user_keys_without_ttl": no_ttl}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--session-n", type=int, default=100_000)
    ap.add_argument("--floods", default="users,one_user,one_session")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pulse-floods-"))
    gens = {"users": (users_flood, args.n), "one_user": (one_user, args.n), "one_session": (one_session, args.session_n)}
    result: dict = {}
    try:
        with redis_server(tmp) as url:
            for name in args.floods.split(","):
                gen, n = gens[name]
                runs = {}
                for size in (n // 2, n):
                    path = tmp / f"{name}-{size}.jsonl"
                    write(path, gen(size))
                    runs[size] = replay(path, url)
                    path.unlink()
                small, large = runs[n // 2], runs[n]
                result[name] = {"sizes": runs, "rss_growth_mb": round(large["peak_rss_mb"] - small["peak_rss_mb"], 1)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
