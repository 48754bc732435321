"""The user step's state: compact, and exactly as it was.

``data/user_state_expected.jsonl.gz`` was recorded from the dict-and-set implementation
that the compact one replaced: a generated log (with duplicates, late and out-of-order
events, rated and item-less events added) run through :class:`UserState` under two
configurations, one line per event with everything the flow reads back (the duplicate
and late flags, the weight, every closed window's features and accessors, the profile
document). The compact state must reproduce every line byte for byte, key order and
floating-point digits included, also when it is snapshotted (pickled or deep-copied) and
resumed along the way."""

from __future__ import annotations

import copy
import gc
import gzip
import pickle
import random
import tracemalloc
from pathlib import Path

import orjson
import pytest

from pulse.flows.generate import DAY_MS, START_MS, generate
from pulse.operators.events import Event, Raw, Validation, parse
from pulse.operators.windows import UserWindows
from pulse.state.profile import ProfileConfig
from pulse.state.rules import RuleConfig
from pulse.state.user import UserConfig, UserState

EXPECTED = Path(__file__).parent / "data" / "user_state_expected.jsonl.gz"

CONFIGS = {
    "default": UserConfig(),
    # small caps, a short half-life (scores rebase within the log's seven days), a small
    # dedup ring, and windows that close often
    "tight": UserConfig(
        profile=ProfileConfig(half_life_s=1800, max_categories=1, max_items=3),
        rules=RuleConfig(min_items=2, window_s=1800, max_categories=2, event_types=("view", "click")),
        dedup_capacity=16, tumbling_s=(60, 600), session_gap_s=300, allowed_lateness_s=30, profile_interval_s=0.0,
    ),
}


def stream() -> list[Event]:
    """A generated log with what real input also holds: repeats, stragglers, ratings."""
    lines, _ = generate(users=50, items=100, events=2000, seed=5, bot_share=0.1, days=2)
    limits = Validation(now_ms=START_MS + 2 * DAY_MS)  # the same events whatever the wall clock says
    parsed = [parse(Raw("gen", n, line), limits) for n, line in enumerate(lines)]
    rng = random.Random(11)
    out: list[Event] = []
    history: dict[str, list[Event]] = {}
    for ev in parsed:
        if not isinstance(ev, Event):
            continue  # crawlers
        out.append(ev)
        mine = history.setdefault(ev.user_id, [])
        mine.append(ev)
        r = rng.random()
        if r < 0.05:  # the same event again
            out.append(ev)
        elif r < 0.06 and len(mine) > 30:  # an old event again: a small ring has forgotten it
            out.append(mine[-30])
        elif r < 0.11:  # a straggler: within the allowed lateness, or past it
            out.append(ev.model_copy(update={"ts": ev.ts - rng.randrange(0, 120_000), "event_id": f"{ev.event_id}-s"}))
        elif r < 0.13:
            out.append(ev.model_copy(update={"type": "rate", "rating": rng.randrange(0, 11) / 2, "event_id": None,
                                             "ts": ev.ts + 1}))
        elif r < 0.14:
            out.append(ev.model_copy(update={"type": "search", "item_id": None, "category": (), "event_id": f"{ev.event_id}-q"}))
    return out


def window_record(w) -> list:
    return [w.kind, w.start_ms, w.end_ms, w.events, w.views, w.ctr, w.cart_rate, w.purchase_rate, w.dwell_mean_ms,
            w.scroll_mean, w.length_s, len(w.items), len(w.categories), w.counts.get("click", 0), w.features()]


def trace(config: UserConfig, events: list[Event], snapshot_every: int = 0):
    """One JSON line per event, then one per user at the end of the input: what the user
    step (operators/steps.py) and the evaluation (flows/evaluate.py) read from the state.
    With ``snapshot_every``, the states are pickled or deep-copied and resumed that often."""
    users: dict[str, UserState] = {}
    for n, ev in enumerate(events):
        if snapshot_every and n % snapshot_every == 0:
            restore = pickle.loads if n // snapshot_every % 2 else copy.deepcopy
            users = {u: restore(pickle.dumps(st)) if restore is pickle.loads else restore(st) for u, st in users.items()}
        st = users.get(ev.user_id)
        if st is None:
            st = users[ev.user_id] = UserState(config)
        known = ev.event_id is not None and ev.event_id in st.event_ids
        prior = sum(st.profile.counts.values())
        learned = st.learn_one(ev)
        doc = None
        if not learned.duplicate and (learned.closed or st.profile_due(ev.ts)):
            doc = st.profile_doc(ev.ts)
        yield orjson.dumps([ev.user_id, known, prior, learned.duplicate, learned.weight, learned.late,
                            [window_record(w) for w in learned.closed], doc, st.profile.last_seen, st.profile_dirty])
    for user, st in sorted(users.items()):
        closed = st.windows.close_all()
        doc = st.profile_doc(st.profile.last_seen or 0) if st.profile_dirty or closed else None
        yield orjson.dumps([st.user_id, [window_record(w) for w in closed], doc])


def expected() -> dict[str, list[bytes]]:
    """The recorded lines by configuration (each stored as ``<name> <line>``)."""
    out: dict[str, list[bytes]] = {name: [] for name in CONFIGS}
    with gzip.open(EXPECTED, "rb") as f:
        for row in f.read().splitlines():
            name, line = row.split(b" ", 1)
            out[name.decode()].append(line)
    return out


@pytest.fixture(scope="module")
def recorded() -> dict[str, list[bytes]]:
    return expected()


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return stream()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_output_is_the_recorded_one(name, recorded, events):
    lines = list(trace(CONFIGS[name], events))
    assert len(lines) == len(recorded[name])
    for n, (line, want) in enumerate(zip(lines, recorded[name])):
        assert line == want, f"line {n}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_snapshots_taken_along_the_way_change_nothing(name, recorded, events):
    assert list(trace(CONFIGS[name], events, snapshot_every=97)) == recorded[name]
