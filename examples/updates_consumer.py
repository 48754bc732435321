"""Follow the users whose recommendations changed, as Pulse writes them, and fetch each
new list: what a site's backend does to push fresh lists to open pages instead of
polling (a WebSocket per user, a cache to refresh, ...).

    python examples/updates_consumer.py --redis redis://127.0.0.1:6379/0 [--from 0] [--count N] [--block-ms MS]

It reads the capped stream ``pulse:updates`` from ``--from`` (``$``, the default: what
comes from now on; ``0``: what the stream still holds) with :class:`pulse.client.PulseClient`,
and prints one JSON line per update with the user's new top items. Pub/Sub (``SUBSCRIBE
pulse:updates``) carries the same messages without replay; the stream lets a consumer
that restarts go on from the last id it handled.
"""

import argparse
import json
import sys

from pulse.client import PulseClient


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the Redis Pulse writes to")
    ap.add_argument("--prefix", default="pulse", help="Pulse's key prefix")
    ap.add_argument("--from", dest="start", default="$", help="stream id to read after ($: from now; 0: from the oldest)")
    ap.add_argument("--count", type=int, default=0, help="stop after this many updates (0: never)")
    ap.add_argument("--block-ms", type=int, default=0, help="stop after waiting this long for an update (0: wait forever)")
    args = ap.parse_args()
    pulse = PulseClient(args.redis, args.prefix)
    seen = 0
    for update in pulse.updates(last_id=args.start, block_ms=args.block_ms):
        recs = pulse.recs(update["user_id"]) or {"items": []}
        print(json.dumps({"id": update["id"], "user_id": update["user_id"], "recomm_id": update["recomm_id"],
                          "top": [item["item_id"] for item in recs["items"][:5]]}), flush=True)
        seen += 1
        if args.count and seen >= args.count:
            break
    pulse.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
