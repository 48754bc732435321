"""Bot detection on generated logs: bots mixed into people, replayed through the whole
flow; prints one JSON document with the recall over bots and the share of people
flagged, and exits 1 when a target is missed (recall >= 0.9, people flagged <= 2%).

    .venv/bin/python benchmarks/bots.py --redis redis://127.0.0.1:6379/11 [--seeds 21,22,23]
        [--users 3000] [--items 1500] [--events 200000] [--scrapers 0.04] [--bots 0.04]
        [--model-only]

The logs come from ``pulse generate`` (:func:`pulse.flows.generate.generate`): people
following funnels, click floods with a browser's user agent (``bots``; a quarter of
them declare a crawler and are dead-lettered by the validator, so they never reach the
detectors and are left out), and scrapers with a browser's user agent (``scrapers``:
sessions of 80-300 views of random items, 0.2-1.2 s apart, near-zero dwell or none, no
scroll). A user counts as flagged when ``pulse:anomalies`` has an entry for them.
``--model-only`` replays each log a second time with the bot rules off, for the River
model's figures alone. The database of ``--redis`` is flushed and used.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import redis

from pulse.flows.config import Settings
from pulse.flows.generate import generate, write_log
from pulse.flows.replay import replay
from pulse.state.keys import KeySchema

DETECTED_KINDS = ("flood", "scraper")  # (crawlers declare themselves: the validator refuses them)


def flagged_users(client: redis.Redis) -> dict[str, str]:
    """Every user with a ``pulse:anomalies`` entry, with the first entry's reason."""
    out: dict[str, str] = {}
    for _, entry in client.xrange(KeySchema().anomalies):
        out.setdefault(entry[b"user_id"].decode(), entry[b"reason"].decode())
    return out


def measure(path: Path, truth: dict, present: Counter, url: str, settings: Settings) -> dict:
    client = redis.Redis.from_url(url)
    client.flushdb()
    started = time.perf_counter()
    summary = replay(path, "native", settings, url)
    seconds = time.perf_counter() - started
    flagged = flagged_users(client)
    bots = {u: kind for u, kind in truth["bots"].items() if kind in DETECTED_KINDS and present[u]}
    humans = {u for u in truth["personas"] if present[u]}
    by_kind = {}
    for kind in DETECTED_KINDS:
        of_kind = {u for u, k in bots.items() if k == kind}
        caught = of_kind & set(flagged)
        by_kind[kind] = {"users": len(of_kind), "flagged": len(caught),
                         "by_rules": sum(1 for u in caught if flagged[u].startswith("rules: "))}
    caught = set(bots) & set(flagged)
    false = humans & set(flagged)
    return {
        "bots": len(bots),
        "bots_flagged": len(caught),
        "recall": round(len(caught) / max(len(bots), 1), 4),
        "humans": len(humans),
        "humans_flagged": len(false),
        "human_false_positive_rate": round(len(false) / max(len(humans), 1), 4),
        "false_positives_by_rules": sum(1 for u in false if flagged[u].startswith("rules: ")),
        "by_kind": by_kind,
        "events": summary["events_in"],
        "replay_s": round(seconds, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis", required=True, help="a Redis database that may be flushed")
    ap.add_argument("--seeds", default="21,22,23")
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--items", type=int, default=1500)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--days", type=float, default=3.0)
    ap.add_argument("--scrapers", type=float, default=0.04, help="share of users that are scrapers")
    ap.add_argument("--bots", type=float, default=0.04, help="share of users that are floods or crawlers")
    ap.add_argument("--model-only", action="store_true", help="also replay with the bot rules off")
    args = ap.parse_args()
    url = args.redis
    runs = []
    totals: dict[str, int] = defaultdict(int)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            lines, truth = generate(users=args.users, items=args.items, events=args.events, seed=seed,
                                    bot_share=args.bots, scraper_share=args.scrapers, days=args.days)
            path = Path(tmp) / f"events-{seed}.jsonl"
            write_log(str(path), lines)
            present = Counter(orjson.loads(line)["user_id"] for line in lines)
            run = {"seed": seed, **measure(path, truth, present, url, Settings())}
            if args.model_only:
                run["model_only"] = measure(path, truth, present, url, Settings(bot_rules=False))
            runs.append(run)
            for name in ("bots", "bots_flagged", "humans", "humans_flagged"):
                totals[name] += run[name]
    recall = totals["bots_flagged"] / max(totals["bots"], 1)
    false_rate = totals["humans_flagged"] / max(totals["humans"], 1)
    ok = recall >= 0.9 and false_rate <= 0.02
    print(json.dumps({
        "recall": round(recall, 4),
        "human_false_positive_rate": round(false_rate, 4),
        "targets": {"recall_min": 0.9, "human_false_positive_rate_max": 0.02},
        "ok": ok,
        **totals,
        "config": {k: v for k, v in vars(args).items() if k != "redis"},
        "runs": runs,
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
