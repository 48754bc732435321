#!/usr/bin/env python3
"""What recovery costs: the same log replayed with and without ``--recovery``, into a
redis-server of its own; prints one JSON line.

The log is the memory check's (``../shared/checks/lib/users.py``, generated the same way
by ``benchmarks/user_memory.py``): ``--users`` distinct users × 5 events. Figures:

* ``seconds`` of each replay, and ``epochs`` (snapshots taken: the run's seconds over
  ``--snapshot-s``, at least one, at the end);
* ``snapshot_s_per_epoch``: what snapshotting added to the run, per epoch (the replay's
  extra seconds with recovery on over the epochs it took);
* ``store_mb``: the recovery store on disk at the end, and ``snapshot_mb`` per step: the
  bytes of the last snapshot of every key of the step, read from the store's ``snaps``
  table (so a step keyed by user shows the sum over its users, a step on one key that
  key's whole state), with the keys it holds.

    .venv/bin/python benchmarks/snapshots.py --users 100000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from services import redis_server
from user_memory import light_log

ROOT = Path(__file__).resolve().parents[1]


def replay(log: Path, url: str, recovery: Path | None, snapshot_s: float) -> float:
    redis.Redis.from_url(url).flushdb()
    cmd = [sys.executable, "-m", "pulse", "replay", str(log), "--redis", url, "--snapshot-s", str(snapshot_s)]
    if recovery is not None:
        cmd += ["--recovery", str(recovery)]
    started = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"pulse replay failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
    return seconds


def snapshot_sizes(store: Path) -> dict:
    """Per step: bytes of the last snapshot of each of its keys, and how many keys."""
    sizes: dict = {}
    for part in sorted(store.glob("*.sqlite3")):
        with sqlite3.connect(part) as db:
            rows = db.execute("SELECT step_id, COUNT(*), SUM(LENGTH(ser_change)) FROM snaps GROUP BY step_id").fetchall()
        for step, keys, size in rows:
            name = step.split(".", 1)[-1]
            got = sizes.setdefault(name, {"keys": 0, "snapshot_mb": 0.0})
            got["keys"] += keys
            got["snapshot_mb"] += (size or 0) / 2**20
    return {k: {"keys": v["keys"], "snapshot_mb": round(v["snapshot_mb"], 2)} for k, v in sorted(sizes.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=100_000, help="distinct users, 5 events each (default 100,000)")
    ap.add_argument("--snapshot-s", type=float, default=10.0, help="seconds between snapshots (the replay's default)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pulse-snapshots-"))
    try:
        with redis_server(tmp) as url:
            log = tmp / "users.jsonl"
            log.write_bytes(b"".join(line + b"\n" for line in light_log(args.users)))
            print(f"replaying {args.users:,} users without recovery", file=sys.stderr)
            plain = replay(log, url, None, args.snapshot_s)
            store = tmp / "recovery"
            print("... and with --recovery", file=sys.stderr)
            recovered = replay(log, url, store, args.snapshot_s)
        epochs = max(1, int(recovered // args.snapshot_s) + 1)
        result = {
            "users": args.users,
            "events": 5 * args.users,
            "snapshot_s": args.snapshot_s,
            "seconds": round(plain, 1),
            "seconds_with_recovery": round(recovered, 1),
            "epochs": epochs,
            "snapshot_s_per_epoch": round((recovered - plain) / epochs, 2),
            "store_mb": round(sum(f.stat().st_size for f in store.iterdir()) / 2**20, 1),
            "steps": snapshot_sizes(store),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
