"""Memory of the user step's per-user state (:class:`pulse.state.user.UserState`); prints
one JSON line.

    .venv/bin/python benchmarks/user_memory.py [--users 1000] [--heavy-users 100]

Two populations, each generated like ``../shared/checks/lib/users.py`` does (types
view/view/click/dwell, one category per event, an ``event_id``, ``dwell_ms`` 5000, users'
events interleaved 20 ms apart, Pareto item popularity over 20,000 items):

* light: ``--users`` users × 5 events, the typical user (and the memory check's);
* heavy: ``--heavy-users`` users × 200 events over 50 items each.

Each record is parsed from its JSON bytes and run through the user step's calls in the
step's order (``learn_one``, then ``profile_doc`` when the step would send one), so the
state holds exactly what it would in the flow, strings included. Figures per user:

* ``bytes``: what ``tracemalloc`` still finds allocated once every event is gone
  (windows still open, as in a running flow), the table holding the states left out;
* ``pickled``: ``len(pickle.dumps(state))``, what a snapshot of the user costs;
* ``us_per_event``: the user step's time per event, parsing left out (measured apart,
  without tracing; the best of three runs).
"""

from __future__ import annotations

import argparse
import gc
import pickle
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pulse.operators.events import Raw, parse  # noqa: E402
from pulse.state.user import UserConfig, UserState  # noqa: E402

T0 = 1_767_571_200_000
TYPES = ["view", "view", "click", "dwell"]


def light_log(users: int, per_user: int = 5, items: int = 20_000, seed: int = 1) -> list[bytes]:
    """``users.py``'s log: every user once, then the rest of the events to random users."""
    rnd = random.Random(seed)
    lines = []
    for i in range(users * per_user):
        u = i if i < users else rnd.randrange(users)
        it = int(rnd.paretovariate(1.2)) % items
        lines.append(_line(u, rnd.choice(TYPES), i, it))
    return lines


def heavy_log(users: int, per_user: int = 200, distinct: int = 50, items: int = 20_000, seed: int = 2) -> list[bytes]:
    """Each user picks ``distinct`` items by popularity and spreads ``per_user`` events over them."""
    rnd = random.Random(seed)
    own = [[int(rnd.paretovariate(1.2)) % items for _ in range(distinct)] for _ in range(users)]
    order = [u for u in range(users) for _ in range(per_user)]
    rnd.shuffle(order)
    return [_line(u, rnd.choice(TYPES), i, rnd.choice(own[u])) for i, u in enumerate(order)]


def _line(user: int, kind: str, i: int, item: int) -> bytes:
    return orjson.dumps({"user_id": f"user-{user:07d}", "type": kind, "ts": T0 + i * 20, "item_id": f"item-{item}",
                         "category": f"c{item % 40}", "event_id": f"e{i}", "dwell_ms": 5000})


def run(records: list, states: dict, names: dict, config: UserConfig) -> None:
    """The user step's calls (operators/steps.py), one record (JSON bytes, parsed here,
    or an already parsed event) at a time."""
    for n, record in enumerate(records):
        ev = parse(Raw("log", n, record)) if isinstance(record, bytes) else record
        st = states.get(ev.user_id)
        if st is None:
            st = states[names[ev.user_id]] = UserState(config)
        learned = st.learn_one(ev)
        if not learned.duplicate and (learned.closed or st.profile_due(ev.ts)):
            st.profile_doc(ev.ts)


def measure(lines: list[bytes], users: int) -> dict:
    config = UserConfig()
    # the keys of the table of states exist before tracing: Bytewax keeps its keys itself
    names = {u: u for u in (orjson.loads(line)["user_id"] for line in lines)}
    states: dict = {}
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    run(lines, states, names, config)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - start - sys.getsizeof(states)
    tracemalloc.stop()
    pickled = statistics.mean(len(pickle.dumps(st)) for st in states.values())
    events = [parse(Raw("log", n, line)) for n, line in enumerate(lines)]
    times = []
    for _ in range(3):
        t = time.perf_counter()
        run(events, {}, names, config)
        times.append(time.perf_counter() - t)
    return {"users": users, "events_per_user": len(lines) // users, "bytes": round(held / users),
            "pickled": round(pickled), "us_per_event": round(min(times) / len(lines) * 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000, help="light users (5 events each)")
    parser.add_argument("--heavy-users", type=int, default=100, help="heavy users (200 events over 50 items each)")
    args = parser.parse_args()
    light = measure(light_log(args.users), args.users)
    heavy = measure(heavy_log(args.heavy_users), args.heavy_users)
    print(orjson.dumps({"light": light, "heavy": heavy}).decode())


if __name__ == "__main__":
    main()
