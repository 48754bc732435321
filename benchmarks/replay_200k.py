"""Issue 2's acceptance run: a generated 200,000-event log with 5% malformed lines of
varied kinds, replayed twice into two empty Redis databases; prints one JSON line.

    .venv/bin/python benchmarks/replay_200k.py --redis redis://127.0.0.1:6379 [--events 200000]

Checks: events_ok + events_dlq == events_in, every malformed line in the DLQ with its
reason, the documented keys present, and identical contents key for key.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import dump_redis  # noqa: E402

from pulse.flows.config import Settings  # noqa: E402
from pulse.flows.generate import CRAWLER_AGENT, generate, write_log  # noqa: E402
from pulse.flows.replay import replay  # noqa: E402
from pulse.state.keys import KeySchema  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", required=True, help="redis://host:port (databases 14 and 15 are flushed and used)")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--malformed", type=float, default=0.05)
    args = parser.parse_args()
    base = args.redis.rstrip("/")
    urls = [f"{base}/14", f"{base}/15"]
    with tempfile.TemporaryDirectory() as tmp:
        lines, truth = generate(users=3000, items=1500, events=args.events, seed=2, malformed=args.malformed)
        path = Path(tmp) / "events.jsonl"
        write_log(str(path), lines)
        runs = []
        for n, url in enumerate(urls):
            redis.Redis.from_url(url).flushdb()
            runs.append(replay(path, "native", Settings(), url, dlq_path=str(Path(tmp) / f"dlq{n}.jsonl")))
        first, second = dump_redis(urls[0]), dump_redis(urls[1])
        crawler = sum(1 for line in lines if CRAWLER_AGENT.encode() in line)
        expected = {**truth["malformed"], "bot_user_agent": crawler}
        dlq_lines = (Path(tmp) / "dlq0.jsonl").read_bytes().splitlines()
        keys = KeySchema()
        documented = {keys.trending, keys.meta, keys.segments} <= set(first) and any(k.endswith(":recs") for k in first)
        s = runs[0]
        print(orjson.dumps({
            "events_in": s["events_in"], "events_ok": s["events_ok"], "events_dlq": s["events_dlq"],
            "accounted": s["events_ok"] + s["events_dlq"] == s["events_in"],
            "dlq_reasons_match_planted": s["dlq_by_reason"] == expected,
            "dlq_lines": len(dlq_lines), "documented_keys_present": documented,
            "keys": len(first), "identical_replays": first == second,
            "seconds": [r["seconds"] for r in runs], "events_per_s": [r["events_per_s"] for r in runs],
        }).decode())


if __name__ == "__main__":
    main()
