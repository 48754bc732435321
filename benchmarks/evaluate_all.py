"""Prequential evaluation figures for issue 3, in one JSON line:

* MovieLens 100K (``../shared/data/ml-100k/u.data``, when present: never copied here);
* a generated clickstream (native format);
* the same clickstream written in Taobao UserBehavior format (``user,item,category,
  behavior,seconds``; views, carts, bookmarks and purchases only), replayed through the
  ``taobao`` adapter. No real Taobao data is used: the public file is not reachable here.

    .venv/bin/python benchmarks/evaluate_all.py [--events 100000] [--skip-movielens]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import orjson

from pulse.flows.config import Settings
from pulse.flows.evaluate import evaluate
from pulse.flows.generate import generate, write_log

ML = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ml-100k" / "u.data"
TAOBAO = {"view": "pv", "add_to_cart": "cart", "bookmark": "fav", "purchase": "buy"}


def brief(report: dict) -> dict:
    out = {"events": report["events"], "pulse_events_per_s": report["pulse_events_per_s"],
           "pulse_events_per_cpu_s": report["pulse_events_per_cpu_s"]}
    for name in ("pulse", "random", "popularity", "decayed_popularity"):
        r = report[name]
        out[name] = {"hr": r["hr"], "ndcg": r["ndcg"], "by_prior_events": {b: v["hr"] for b, v in r["by_prior_events"].items()}}
        if "by_item" in r:
            out[name]["by_item"] = {b: {"events": v["events"], "hr": v["hr"]} for b, v in r["by_item"].items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--skip-movielens", action="store_true")
    args = parser.parse_args()
    settings = Settings()
    result = {}
    if ML.exists() and not args.skip_movielens:
        result["movielens_100k"] = brief(evaluate(ML, "movielens", settings))
    with tempfile.TemporaryDirectory() as tmp:
        lines, _ = generate(users=2000, items=1000, events=args.events, seed=9, bot_share=0.0)
        native = Path(tmp) / "events.jsonl"
        write_log(str(native), lines)
        result["generated_native"] = brief(evaluate(native, "native", settings))
        rows = []
        for line in lines:
            ev = orjson.loads(line)
            if ev["type"] in TAOBAO:
                rows.append(f"{ev['user_id'][1:]},{ev['item_id'][1:]},{ev['category']},{TAOBAO[ev['type']]},{ev['ts'] // 1000}".encode())
        taobao = Path(tmp) / "UserBehavior.csv"
        write_log(str(taobao), rows)
        result["generated_taobao_format"] = brief(evaluate(taobao, "taobao", settings))
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
